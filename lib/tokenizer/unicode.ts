// Unicode helpers for the tokenizers: llama.cpp's code point classes (from its own table, so the
// pre-tokenizers agree with llama.cpp whatever Unicode version this Node's ICU implements), the
// GPT-2 byte <-> unicode mapping, and small UTF-8 utilities.
import { TextDecoder } from 'node:util';
import { CATEGORY_RANGES, WHITESPACE } from './unicode-data';

/** llama.cpp's unicode_cpt_flags bits. */
export const F_UNDEFINED = 0x0001;
export const F_NUMBER = 0x0002; // \p{N}
export const F_LETTER = 0x0004; // \p{L}
export const F_SEPARATOR = 0x0008; // \p{Z}
export const F_MARK = 0x0010; // \p{M}
export const F_PUNCTUATION = 0x0020; // \p{P}
export const F_SYMBOL = 0x0040; // \p{S}
export const F_CONTROL = 0x0080; // \p{C}
export const F_WHITESPACE = 0x0100; // \s

const MAX_CODEPOINTS = 0x110000;
let flagTable: Uint16Array | undefined;

/** Flags of every code point (0x110000 entries), built on first use (~2 ms). */
export function codepointFlags(): Uint16Array {
  if (flagTable) return flagTable;
  const t = new Uint16Array(MAX_CODEPOINTS);
  let start = 0;
  let flags = -1;
  for (const part of CATEGORY_RANGES.split(',')) {
    const dot = part.indexOf('.');
    const next = start + parseInt(part.slice(0, dot), 36);
    if (flags >= 0) t.fill(flags, start, Math.min(next, MAX_CODEPOINTS));
    start = next;
    flags = parseInt(part.slice(dot + 1), 36);
  }
  for (const cp of WHITESPACE) t[cp] |= F_WHITESPACE;
  flagTable = t;
  return t;
}

// ---------------------------------------------------------------------------------------------
// GPT-2 byte-level mapping: every byte maps to a printable code point (< 0x144).

/** BYTE_TO_CHAR[b]: the one-character string standing for byte b in byte-level BPE vocabularies. */
export const BYTE_TO_CHAR: readonly string[] = (() => {
  const map: string[] = new Array(256);
  const printable = (b: number) => (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
  let n = 0;
  for (let b = 0; b < 256; b++) map[b] = String.fromCharCode(printable(b) ? b : 256 + n++);
  return map;
})();

/** CHAR_TO_BYTE[code unit] = byte, or -1 (indexed by UTF-16 code unit; all mapped chars are < 0x144). */
export const CHAR_TO_BYTE: Int16Array = (() => {
  const t = new Int16Array(0x144).fill(-1);
  for (let b = 0; b < 256; b++) t[BYTE_TO_CHAR[b].charCodeAt(0)] = b;
  return t;
})();

// ---------------------------------------------------------------------------------------------
// UTF-8

/** Appends the UTF-8 bytes of code point cp to out (a plain array). */
export function pushUtf8(out: number[], cp: number): void {
  if (cp < 0x80) out.push(cp);
  else if (cp < 0x800) out.push(0xc0 | (cp >> 6), 0x80 | (cp & 0x3f));
  else if (cp < 0x10000) out.push(0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
  else out.push(0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 0x3f), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f));
}

const encoder = new TextEncoder();
export function utf8(s: string): Uint8Array {
  return encoder.encode(s);
}

/** Number of UTF-8 bytes of a (well-formed) string. */
export function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
      n += 4;
      i++;
    } else n += 3;
  }
  return n;
}

const hasToWellFormed = typeof (String.prototype as { toWellFormed?: unknown }).toWellFormed === 'function';
/** Replaces lone surrogates by U+FFFD (what a UTF-8 conversion of the string does). */
export function wellFormed(s: string): string {
  if (hasToWellFormed) return (s as string & { toWellFormed(): string }).toWellFormed();
  return s.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd');
}

/**
 * A UTF-8 decoder that keeps a leading U+FEFF. A plain `new TextDecoder()` drops a byte-order mark
 * at the start of what it decodes (ignoreBOM: false), so text beginning with U+FEFF would not come
 * back from decode. Invalid sequences still become U+FFFD (the WHATWG rules, one per maximal subpart).
 */
export function utf8Decoder(): TextDecoder {
  return new TextDecoder('utf-8', { ignoreBOM: true });
}

const decoder = utf8Decoder();
/** The text of UTF-8 bytes, in one piece (a leading U+FEFF kept). */
export function fromUtf8(bytes: Uint8Array): string {
  return decoder.decode(bytes);
}
