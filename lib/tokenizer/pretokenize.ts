// Byte-level BPE pre-tokenizers: ports of llama.cpp's unicode_regex_split (its hand-written
// matchers for the GPT-2, Llama 3 and Qwen2 regexes, and the std::regex fallbacks used by the
// "default" chain), run over code points with llama.cpp's own category table. Each step refines a
// list of word ends; a word never crosses the end of the range it came from.
import { codepointFlags, F_LETTER, F_MARK, F_NUMBER, F_PUNCTUATION, F_WHITESPACE } from './unicode';

/** One pre-tokenizer step: splits cps[ini, end) and pushes the end of every piece to out. */
export type SplitStep = (cps: Int32Array, ini: number, end: number, out: number[]) => void;

const OUT_OF_RANGE = -1;
const APOS = 0x27;
const CR = 0x0d;
const LF = 0x0a;
const SPACE = 0x20;

const lowerAscii = (c: number) => (c >= 0x41 && c <= 0x5a ? c + 32 : c);

/** 's|'t|'re|'ve|'m|'ll|'d (optionally case-insensitive): the length of the contraction at pos, or 0. */
function contraction(cps: Int32Array, pos: number, end: number, ci: boolean): number {
  if (cps[pos] !== APOS || pos + 1 >= end) return 0;
  const n1 = ci ? lowerAscii(cps[pos + 1]) : cps[pos + 1];
  if (n1 === 0x73 || n1 === 0x74 || n1 === 0x6d || n1 === 0x64) return 2; // s t m d
  if (pos + 2 < end) {
    const n2 = ci ? lowerAscii(cps[pos + 2]) : cps[pos + 2];
    if ((n1 === 0x72 && n2 === 0x65) || (n1 === 0x76 && n2 === 0x65) || (n1 === 0x6c && n2 === 0x6c)) return 3; // re ve ll
  }
  return 0;
}

/** GPT-2: 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
export const splitGpt2: SplitStep = (cps, ini, end, out) => {
  const F = codepointFlags();
  const flagsAt = (p: number) => (p >= ini && p < end ? F[cps[p]] : 0);
  const cptAt = (p: number) => (p >= ini && p < end ? cps[p] : OUT_OF_RANGE);
  let prevEnd = ini;
  const add = (e: number) => {
    const len = e - prevEnd;
    if (len > 0) out.push(e);
    prevEnd = e;
    return len;
  };
  for (let pos = ini; pos < end; ) {
    const cpt = cps[pos];
    const flags = F[cpt];
    const c = contraction(cps, pos, end, false);
    if (c) {
      pos += add(pos + c);
      continue;
    }
    let flags2 = cpt === SPACE ? flagsAt(pos + 1) : flags;
    if (flags2 & F_LETTER) {
      if (cpt === SPACE) pos++;
      while (flags2 & F_LETTER) flags2 = flagsAt(++pos);
      add(pos);
      continue;
    }
    if (flags2 & F_NUMBER) {
      if (cpt === SPACE) pos++;
      while (flags2 & F_NUMBER) flags2 = flagsAt(++pos);
      add(pos);
      continue;
    }
    if (!(flags2 & (F_WHITESPACE | F_LETTER | F_NUMBER)) && flags2) {
      if (cpt === SPACE) pos++;
      while (!(flags2 & (F_WHITESPACE | F_LETTER | F_NUMBER)) && flags2) flags2 = flagsAt(++pos);
      add(pos);
      continue;
    }
    let nws = 0;
    while (flagsAt(pos + nws) & F_WHITESPACE) nws++;
    if (nws > 1 && cptAt(pos + nws) !== OUT_OF_RANGE) {
      pos += nws - 1;
      add(pos);
      continue;
    }
    if (nws > 0) {
      pos += nws;
      add(pos);
      continue;
    }
    add(++pos);
  }
};

/**
 * Llama 3 (digits = 3, marks = false), Qwen2 (1, false) and Qwen3.5 (1, true):
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
 */
function makeLlama3Like(digits: number, marks: boolean): SplitStep {
  const WORD = marks ? F_LETTER | F_MARK : F_LETTER;
  return (cps, ini, end, out) => {
    const F = codepointFlags();
    const flagsAt = (p: number) => (p >= ini && p < end ? F[cps[p]] : 0);
    const cptAt = (p: number) => (p >= ini && p < end ? cps[p] : OUT_OF_RANGE);
    let prevEnd = ini;
    const add = (e: number) => {
      const len = e - prevEnd;
      if (len > 0) out.push(e);
      prevEnd = e;
      return len;
    };
    for (let pos = ini; pos < end; ) {
      const cpt = cps[pos];
      const flags = F[cpt];
      const c = contraction(cps, pos, end, true);
      if (c) {
        pos += add(pos + c);
        continue;
      }
      // [^\r\n\p{L}\p{N}]?\p{L}+
      if (!(cpt === CR || cpt === LF || flags & F_NUMBER)) {
        if (flags & WORD || flagsAt(pos + 1) & WORD) {
          pos++;
          while (flagsAt(pos) & WORD) pos++;
          add(pos);
          continue;
        }
      }
      // \p{N}{1,digits}
      if (flags & F_NUMBER) {
        if (digits === 1) {
          add(++pos);
          continue;
        }
        let i0 = pos;
        while (flagsAt(pos) & F_NUMBER) {
          if (++pos - i0 >= digits) {
            add(pos);
            i0 = pos;
          }
        }
        add(pos);
        continue;
      }
      // <space>?[^\s\p{L}\p{N}]+[\r\n]*
      const STOP = F_WHITESPACE | WORD | F_NUMBER;
      let flags2 = cpt === SPACE ? flagsAt(pos + 1) : flags;
      if (!(flags2 & STOP) && flags) {
        if (cpt === SPACE) pos++;
        while (!(flags2 & STOP) && flags2) flags2 = flagsAt(++pos);
        let c2 = cptAt(pos);
        while (c2 === CR || c2 === LF) c2 = cptAt(++pos);
        add(pos);
        continue;
      }
      let nws = 0;
      let lastEndRN = 0;
      while (flagsAt(pos + nws) & F_WHITESPACE) {
        const c2 = cps[pos + nws];
        if (c2 === CR || c2 === LF) lastEndRN = pos + nws + 1;
        nws++;
      }
      // \s*[\r\n]+
      if (lastEndRN > 0) {
        pos = lastEndRN;
        add(pos);
        continue;
      }
      // \s+(?!\S)
      if (nws > 1 && cptAt(pos + nws) !== OUT_OF_RANGE) {
        pos += nws - 1;
        add(pos);
        continue;
      }
      // \s+
      if (nws > 0) {
        pos += nws;
        add(pos);
        continue;
      }
      add(++pos);
    }
  };
}

export const splitLlama3 = makeLlama3Like(3, false);
export const splitQwen2 = makeLlama3Like(1, false);
export const splitQwen35 = makeLlama3Like(1, true);

/**
 * A std::regex split over llama.cpp's "collapsed" text where the pattern is a run (plus = true) or
 * a single occurrence of one character class: matches and the text between them become pieces.
 */
function classSplit(inClass: (cp: number, flags: number) => boolean, plus: boolean): SplitStep {
  return (cps, ini, end, out) => {
    const F = codepointFlags();
    let pos = ini;
    while (pos < end) {
      const m = inClass(cps[pos], F[cps[pos]]);
      pos++;
      if (!m || plus) while (pos < end && inClass(cps[pos], F[cps[pos]]) === m) pos++;
      out.push(pos);
    }
  };
}

// [\p{P}\$\+<=>\^~\|]+ : ASCII punctuation/symbols except '`', or any non-ASCII \p{P} (not \s).
const ASCII_PUNCT = new Uint8Array(128);
for (const ch of '!"#%&\'()*,-./:;?@[\\]_{}$+<=>^~|') ASCII_PUNCT[ch.charCodeAt(0)] = 1;
const isPunct = (cp: number, f: number) => (cp < 128 ? ASCII_PUNCT[cp] === 1 : (f & (F_WHITESPACE | F_PUNCTUATION)) === F_PUNCTUATION);
const isNumber = (cp: number, f: number) => (cp < 128 ? cp >= 0x30 && cp <= 0x39 : (f & (F_WHITESPACE | F_NUMBER)) === F_NUMBER);

export const splitPunctRuns = classSplit(isPunct, true);
export const splitNumberRuns = classSplit(isNumber, true);
export const splitEachNumber = classSplit(isNumber, false);

/** [0-9][0-9][0-9]: left-to-right groups of three ASCII digits, the rest in between. */
export const splitAsciiDigits3: SplitStep = (cps, ini, end, out) => {
  const digit = (p: number) => cps[p] >= 0x30 && cps[p] <= 0x39;
  let last = ini;
  let pos = ini;
  while (pos + 3 <= end) {
    if (digit(pos) && digit(pos + 1) && digit(pos + 2)) {
      if (pos > last) out.push(pos);
      pos += 3;
      out.push(pos);
      last = pos;
    } else pos++;
  }
  if (last < end) out.push(end);
};

export interface PreTokenizer {
  steps: SplitStep[];
  /** llama.cpp's ignore_merges: a word that is itself a token is not merged. */
  ignoreMerges: boolean;
  /** llama.cpp's clean_spaces (clean_up_tokenization_spaces) for this pre-tokenizer type. */
  cleanSpaces: boolean;
  /** add_bos before tokenizer.ggml.add_bos_token is read. */
  addBos: boolean;
  /** The llama.cpp pre-tokenizer family this name was mapped to. */
  kind: string;
}

/** The pre-tokenizer llama.cpp uses for a tokenizer.ggml.pre value (unknown names get GPT-2's regex). */
export function preTokenizerFor(pre: string | undefined): PreTokenizer {
  const p = (kind: string, steps: SplitStep[], o: Partial<PreTokenizer> = {}): PreTokenizer => ({
    steps,
    ignoreMerges: false,
    cleanSpaces: true,
    addBos: false,
    kind,
    ...o,
  });
  switch (pre ?? '') {
    case '':
    case 'default':
      return p('default', [splitPunctRuns, splitGpt2, splitNumberRuns, splitAsciiDigits3]);
    case 'llama3':
    case 'llama-v3':
    case 'llama-bpe':
    case 'falcon3':
    case 'falcon-h1':
    case 'pixtral':
    case 'midm-2.0':
    case 'lfm2':
    case 'jina-v5-nano':
      return p('llama3', [splitLlama3], { ignoreMerges: true, addBos: true });
    case 'dbrx':
    case 'smaug-bpe':
      return p('llama3', [splitLlama3]);
    case 'glm4':
    case 'chatglm-bpe':
      return p('llama3', [splitLlama3]);
    case 'qwen2':
    case 'deepseek-r1-qwen':
    case 'kormo':
    case 'f2llmv2':
      return p('qwen2', [splitQwen2], { cleanSpaces: false });
    case 'stablelm2':
    case 'megrez':
      return p('qwen2', [splitQwen2]);
    case 'hunyuan':
    case 'solar-open':
      return p('qwen2', [splitQwen2], { cleanSpaces: false });
    case 'qwen35':
      return p('qwen35', [splitQwen35], { cleanSpaces: false });
    case 'starcoder':
    case 'refact':
    case 'codeshell':
    case 'exaone':
    case 'minerva-7b':
    case 'mellum2':
      return p('starcoder', [splitEachNumber, splitGpt2]);
    case 'command-r':
    case 'smollm':
      return p('starcoder', [splitEachNumber, splitGpt2], { cleanSpaces: false });
    case 'gpt-2':
    case 'phi-2':
    case 'jina-es':
    case 'jina-de':
    case 'gigachat':
    case 'jina-v2-es':
    case 'jina-v2-de':
    case 'a.x-4.0':
    case 'mellum':
    case 'modern-bert':
    case 'mpt':
    case 'olmo':
    case 'jais':
    case 'exaone4':
    case 'jina-v1-en':
    case 'jina-v2-code':
    case 'roberta-bpe':
      return p('gpt2', [splitGpt2]);
    case 'trillion':
    case 'granite-docling':
      return p('gpt2', [splitGpt2], { cleanSpaces: false });
    default:
      return p('gpt2', [splitGpt2]);
  }
}

/**
 * Splits text (as code points) into words: returns the word ends (code point indices), in order.
 */
export function splitWords(cps: Int32Array, n: number, steps: SplitStep[]): number[] {
  let ends: number[] = [n];
  for (const step of steps) {
    const next: number[] = [];
    let start = 0;
    for (const e of ends) {
      if (e > start) step(cps, start, e, next);
      start = e;
    }
    ends = next;
  }
  return ends;
}
