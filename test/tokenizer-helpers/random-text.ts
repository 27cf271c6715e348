// Seeded random strings for the tokenizer property tests (test/tokenizer-roundtrip.test.ts) and the
// tokenizer benchmark (bench/tokenizer-bench.mjs): runs of characters drawn from the classes a user
// can paste, mixed within one string. Self-contained (no imports) so the benchmark can load it too.

/** A seeded PRNG (mulberry32; the same as corpus.ts's rng). */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Rand = () => number;
const pick = <T>(r: Rand, a: readonly T[]): T => a[Math.floor(r() * a.length)];
const between = (r: Rand, lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1)); // inclusive
const cp = (c: number) => String.fromCodePoint(c);
const fromRanges = (r: Rand, ranges: readonly (readonly [number, number])[]) => {
  const [lo, hi] = pick(r, ranges);
  return cp(between(r, lo, hi));
};

const WORDS = ['the', 'and', 'Hello', 'world', 'token', 'llama', 'x', 'I', "don't", "it's", 'ok', 'A', 'ZZZ', 'camelCase', 'snake_case'];
const PUNCT = '.,;:!?\'"()[]{}<>/\\|@#$%^&*-_+=~`';
const LATIN: readonly (readonly [number, number])[] = [
  [0xc0, 0xd6],
  [0xd8, 0xf6],
  [0xf8, 0x17f], // Latin-1 letters and Latin Extended-A (includes Ġ U+0120, GPT-2's space)
  [0x180, 0x24f],
  [0x1e00, 0x1eff],
];
const CJK: readonly (readonly [number, number])[] = [
  [0x4e00, 0x9fff], // CJK unified ideographs
  [0x3040, 0x309f], // hiragana
  [0x30a0, 0x30ff], // katakana
  [0xac00, 0xd7a3], // hangul syllables
  [0x3000, 0x303f], // CJK punctuation (U+3000 ideographic space)
  [0xff01, 0xff5e], // fullwidth forms
  [0x20000, 0x2a6df], // CJK extension B (astral)
];
const EMOJI: readonly (readonly [number, number])[] = [
  [0x1f300, 0x1f5ff],
  [0x1f600, 0x1f64f],
  [0x1f680, 0x1f6ff],
  [0x1f900, 0x1f9ff],
  [0x1fa70, 0x1faff],
  [0x2600, 0x27bf], // BMP symbols / dingbats (often with U+FE0F)
];
const ZWJ = '\u200d';
const VS16 = '\ufe0f';
const SKIN = [0x1f3fb, 0x1f3fc, 0x1f3fd, 0x1f3fe, 0x1f3ff].map(cp);
const PEOPLE = ['👩', '👨', '🧑', '👧', '👦', '👋', '👍', '🤝', '🙋', '🏃'];
const ZWJ_PARTS = ['💻', '🔬', '🚀', '❤️', '🔥', '👩', '👨', '👧', '👦', '🌈', '⚧️', '🦰', '🍳'];
const SPACES = [' ', ' ', ' ', '  ', '\t', '\n', '\n\n', '\r\n', '\r', '\u00a0', '\u3000', '\u2028', '\u0085', '\u2003'];
const ZERO_WIDTH = ['\u200b', '\ufeff', '\u200c', '\u200d', '\u2060', '\u00ad'];

function emoji(r: Rand): string {
  const x = r();
  if (x < 0.35) return fromRanges(r, EMOJI) + (r() < 0.2 ? VS16 : '');
  if (x < 0.55) return pick(r, PEOPLE) + pick(r, SKIN); // skin tone
  if (x < 0.8) {
    // ZWJ sequence, sometimes with a skin tone: 👩🏽‍💻, 👨‍👩‍👧‍👦
    let s = pick(r, PEOPLE) + (r() < 0.3 ? pick(r, SKIN) : '');
    const k = between(r, 1, 3);
    for (let i = 0; i < k; i++) s += ZWJ + pick(r, ZWJ_PARTS);
    return s;
  }
  if (x < 0.9) return cp(between(r, 0x1f1e6, 0x1f1ff)) + cp(between(r, 0x1f1e6, 0x1f1ff)); // flag (regional indicators)
  return String(between(r, 0, 9)) + VS16 + '\u20e3'; // keycap
}

function control(r: Rand): string {
  const x = r();
  if (x < 0.6) return cp(between(r, 0x00, 0x1f)); // C0, NUL included
  if (x < 0.7) return '\u007f';
  return cp(between(r, 0x80, 0x9f)); // C1
}

/** A lone surrogate, or a low-high pair in the wrong order (two lone surrogates). */
function loneSurrogate(r: Rand): string {
  const x = r();
  if (x < 0.45) return cp(between(r, 0xd800, 0xdbff));
  if (x < 0.9) return cp(between(r, 0xdc00, 0xdfff));
  return cp(between(r, 0xdc00, 0xdfff)) + cp(between(r, 0xd800, 0xdbff));
}

/** Any Unicode scalar value (no surrogates), weighted towards the BMP. */
function anyScalar(r: Rand): string {
  for (;;) {
    const c = r() < 0.7 ? between(r, 0x80, 0xffff) : between(r, 0x10000, 0x10ffff);
    if (c < 0xd800 || c > 0xdfff) return cp(c);
  }
}

export type CharClass =
  | 'ascii'
  | 'digits'
  | 'space'
  | 'latin'
  | 'combining'
  | 'cjk'
  | 'cyrillic'
  | 'arabic'
  | 'emoji'
  | 'control'
  | 'zero-width'
  | 'lone-surrogate'
  | 'spm-space-mark'
  | 'any';

/** Relative weights of the classes a run is drawn from. */
const CLASSES: readonly [CharClass, number][] = [
  ['ascii', 18],
  ['digits', 4],
  ['space', 10],
  ['latin', 8],
  ['combining', 4],
  ['cjk', 8],
  ['cyrillic', 6],
  ['arabic', 6],
  ['emoji', 8],
  ['control', 4],
  ['zero-width', 5],
  ['lone-surrogate', 2],
  ['spm-space-mark', 1],
  ['any', 4],
];
const TOTAL = CLASSES.reduce((a, [, w]) => a + w, 0);

function oneOf(r: Rand, c: CharClass): string {
  switch (c) {
    case 'ascii': {
      const x = r();
      if (x < 0.4) return pick(r, WORDS);
      if (x < 0.6) return PUNCT[Math.floor(r() * PUNCT.length)];
      return cp(between(r, 0x21, 0x7e));
    }
    case 'digits':
      return String(between(r, 0, 10 ** between(r, 1, 7)));
    case 'space':
      return pick(r, SPACES);
    case 'latin':
      return fromRanges(r, LATIN);
    case 'combining': // a base letter and 1-3 combining marks (e + U+0301: NFD é)
      return cp(between(r, 0x61, 0x7a)) + cp(between(r, 0x300, 0x36f)) + (r() < 0.3 ? cp(between(r, 0x300, 0x36f)) : '');
    case 'cjk':
      return fromRanges(r, CJK);
    case 'cyrillic':
      return cp(between(r, 0x400, 0x4ff));
    case 'arabic':
      return cp(between(r, 0x600, 0x6ff));
    case 'emoji':
      return emoji(r);
    case 'control':
      return control(r);
    case 'zero-width':
      return pick(r, ZERO_WIDTH);
    case 'lone-surrogate':
      return loneSurrogate(r);
    case 'spm-space-mark':
      return '\u2581';
    case 'any':
      return anyScalar(r);
  }
}

function drawClass(r: Rand, allowed: (c: CharClass) => boolean): CharClass {
  for (;;) {
    let x = r() * TOTAL;
    for (const [c, w] of CLASSES) {
      if ((x -= w) < 0) {
        if (allowed(c)) return c;
        break;
      }
    }
  }
}

export interface RandomTextOptions {
  /** Include lone surrogates (default true). */
  loneSurrogates?: boolean;
  /** Include U+2581, which SentencePiece vocabularies give back as a space (default true). */
  spaceMark?: boolean;
  /** Longest string, in runs of one class (default 12). */
  maxRuns?: number;
}

/**
 * count seeded random strings: 1..maxRuns runs of 1..6 characters (or words, emoji sequences) of
 * one class each; one in eight starts with U+FEFF, one in ten with a space.
 */
export function randomTexts(count: number, seed: number, opts: RandomTextOptions = {}): string[] {
  const r = rng(seed);
  const lone = opts.loneSurrogates ?? true;
  const mark = opts.spaceMark ?? true;
  const allowed = (c: CharClass) => (lone || c !== 'lone-surrogate') && (mark || c !== 'spm-space-mark');
  const maxRuns = opts.maxRuns ?? 12;
  const out: string[] = [];
  for (let i = 0; i < count; i++) {
    let s = '';
    const x = r();
    if (x < 0.125) s += '\ufeff';
    else if (x < 0.225) s += ' ';
    const runs = between(r, 1, maxRuns);
    for (let k = 0; k < runs; k++) {
      const c = drawClass(r, allowed);
      const n = between(r, 1, 6);
      for (let j = 0; j < n; j++) s += oneOf(r, c);
    }
    out.push(s);
  }
  return out;
}

/** Random text of about `bytes` UTF-8 bytes (randomTexts joined by spaces, no lone surrogates). */
export function randomTextOfBytes(bytes: number, seed: number): string {
  const parts: string[] = [];
  let n = 0;
  for (let s = seed; n < bytes; s++) {
    for (const t of randomTexts(256, s, { loneSurrogates: false })) {
      parts.push(t);
      n += Buffer.byteLength(t) + 1;
      if (n >= bytes) break;
    }
  }
  return parts.join(' ');
}

/** The classes a string contains (for the test's report). */
export function classesOf(s: string): Set<string> {
  const out = new Set<string>();
  if (s.startsWith('\ufeff')) out.add('leading U+FEFF');
  if (/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/.test(s)) out.add('lone surrogate');
  if (/\u200d/.test(s) && /\p{Extended_Pictographic}/u.test(s)) out.add('ZWJ emoji');
  if (/[\u{1f3fb}-\u{1f3ff}]/u.test(s)) out.add('skin tone');
  if (/[\u0000-\u001f\u007f-\u009f]/.test(s)) out.add('control');
  if (/\p{Script=Han}/u.test(s)) out.add('CJK');
  if (/\p{Script=Cyrillic}/u.test(s)) out.add('Cyrillic');
  if (/\p{Script=Arabic}/u.test(s)) out.add('Arabic');
  if (/\u200b/.test(s)) out.add('U+200B');
  return out;
}
