// Tokenizer from GGUF metadata: SentencePiece ("llama") and byte-level BPE ("gpt2") vocabularies,
// token for token the same as llama.cpp's llama_tokenize (llm_tokenizer_spm / llm_tokenizer_bpe,
// special-token partitioning, token attributes and end-of-generation detection included).
// Pure TypeScript, no native code.
import type { GgufValue } from '../gguf';
import { ByteBuffer, IntBuffer, PairMap, PairSet, SliceCache } from './buffers';
import { BigramHeap } from './heap';
import { preTokenizerFor, splitWords, type PreTokenizer } from './pretokenize';
import { BYTE_TO_CHAR, CHAR_TO_BYTE, fromUtf8, pushUtf8, utf8, utf8Decoder, utf8Length, wellFormed } from './unicode';

/** tokenizer.ggml.token_type values. */
export const TokenType = {
  UNDEFINED: 0,
  NORMAL: 1,
  UNKNOWN: 2,
  CONTROL: 3,
  USER_DEFINED: 4,
  UNUSED: 5,
  BYTE: 6,
} as const;

/** llama.cpp's llama_token_attr bits (what tokenAttributes returns). */
export const TokenAttr = {
  UNDEFINED: 0,
  UNKNOWN: 1 << 0,
  UNUSED: 1 << 1,
  NORMAL: 1 << 2,
  CONTROL: 1 << 3,
  USER_DEFINED: 1 << 4,
  BYTE: 1 << 5,
  NORMALIZED: 1 << 6,
  LSTRIP: 1 << 7,
  RSTRIP: 1 << 8,
  SINGLE_WORD: 1 << 9,
} as const;

const A_UNKNOWN = TokenAttr.UNKNOWN;
const A_UNUSED = TokenAttr.UNUSED;
const A_NORMAL = TokenAttr.NORMAL;
const A_CONTROL = TokenAttr.CONTROL;
const A_USER_DEFINED = TokenAttr.USER_DEFINED;
const A_BYTE = TokenAttr.BYTE;
const A_LSTRIP = TokenAttr.LSTRIP;
const A_RSTRIP = TokenAttr.RSTRIP;

export interface EncodeOptions {
  /** Prepend the BOS token (default: tokenizer.ggml.add_bos_token, else llama.cpp's default: true for SentencePiece and Llama 3 BPE). */
  bos?: boolean;
  /** Append the EOS token (default: tokenizer.ggml.add_eos_token, else false). */
  eos?: boolean;
  /** Parse control tokens written in the text ("<s>", "<|begin_of_text|>") as those tokens (default false). User-defined tokens are always parsed, as in llama.cpp. */
  special?: boolean;
}

export interface DecodeOptions {
  /** Render control/unknown tokens as "" (default true); false writes their text. */
  skipSpecial?: boolean;
  /**
   * SentencePiece vocabularies with add_space_prefix: drop the space that encoding put in front of
   * the text, i.e. the leading space of the first token after any leading control tokens (BOS)
   * (default true). Pass false when decoding a continuation (e.g. generated tokens on their own).
   */
  stripLeadingSpace?: boolean;
  /** Apply llama.cpp's clean_up_tokenization_spaces rules (" ." -> ".", " 's" -> "'s", ...) as its detokenize does when the vocabulary sets cleanSpaces (default false). */
  cleanSpaces?: boolean;
}

export interface DecoderOptions {
  skipSpecial?: boolean;
  stripLeadingSpace?: boolean;
}

/** A streaming detokenizer: push(id) returns the newly completed text. */
export interface StreamingDecoder {
  /**
   * Adds one token, or several in order; returns the text they complete (characters split over
   * tokens are held back until complete). How ids are grouped into calls never changes the text.
   */
  push(ids: number | ArrayLike<number>): string;
  /** Returns what is still held back (an incomplete character at the end becomes U+FFFD) and resets the decoder. */
  flush(): string;
}


// Token texts llama.cpp recognises (llama-vocab.cpp, llama_vocab::impl::load).
const EOT_TEXTS = ['<|eot_id|>', '<|im_end|>', '<|end|>', '<end_of_turn>', '<|endoftext|>', '<|end_of_text|>', '<EOT>', '_<EOT>', '[EOT]', '<｜end▁of▁sentence｜>', '<end_of_utterance>'];
const EOM_TEXTS = ['<|eom_id|>'];
const FIM_PRE_TEXTS = ['<|fim_prefix|>', '<fim-prefix>', '<fim_prefix>', '<｜fim▁begin｜>', '<PRE>', '▁<PRE>', '<|code_prefix|>', '<|prefix|>'];
const FIM_SUF_TEXTS = ['<|fim_suffix|>', '<fim-suffix>', '<fim_suffix>', '<｜fim▁hole｜>', '<SUF>', '▁<SUF>', '<|code_suffix|>', '<|suffix|>'];
const FIM_MID_TEXTS = ['<|fim_middle|>', '<fim-middle>', '<fim_middle>', '<｜fim▁end｜>', '<MID>', '▁<MID>', '<|code_middle|>', '<|middle|>'];
const FIM_PAD_TEXTS = ['<|fim_pad|>', '<fim-pad>', '<fim_pad>', '<PAD>', '[PAD]'];
const FIM_REP_TEXTS = ['<|fim_repo|>', '<|repo_name|>', '<fim-repo>', '<REPO>', '<reponame>'];
const FIM_SEP_TEXTS = ['<|file_sep|>'];
const EOG_TEXTS = [
  '<|eot_id|>', '<|im_end|>', '<|end|>', '<|return|>', '<|call|>', '<|flush|>', '<|calls|>', '<end_of_turn>', '<|endoftext|>',
  '</s>', '<|eom_id|>', '<EOT>', '_<EOT>', '[EOT]', '[EOS]', '<|end_of_text|>', '<end_of_utterance>', '<eos>', '<turn|>',
  '<|tool_response>', '<｜end▁of▁sentence｜>', '[e~[',
];

const SPACE_MARK = '\u2581'; // ▁

function num(v: GgufValue | undefined): number | undefined {
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  return undefined;
}

function isCSpace(c: number): boolean {
  return c === 0x20 || (c >= 0x09 && c <= 0x0d);
}

export class Tokenizer {
  /** tokenizer.ggml.model: "llama" (SentencePiece) or "gpt2" (byte-level BPE). */
  readonly model: 'llama' | 'gpt2';
  /** tokenizer.ggml.pre as given ("" when absent). */
  readonly pre: string;
  /** The llama.cpp pre-tokenizer family used for pre ("llama3", "qwen2", "gpt2", "default", ...; "" for SentencePiece). */
  readonly preTokenizer: string;
  readonly vocabSize: number;
  /** Special token ids; -1 when the vocabulary has none (llama.cpp's LLAMA_TOKEN_NULL). */
  readonly bos: number;
  readonly eos: number;
  /** End of turn (tokenizer.ggml.eot_token_id, else detected by text as llama.cpp does: <|eot_id|>, <|im_end|>, ...). */
  readonly eot: number;
  /** End of message (tokenizer.ggml.eom_token_id, else <|eom_id|>). */
  readonly eom: number;
  readonly unk: number;
  readonly pad: number;
  /** End-of-generation tokens (llama.cpp's special_eog_ids: EOS, EOT, EOM, the FIM pad/repo/sep tokens and tokens such as <|im_end|>, <|eot_id|>, <|endoftext|>). */
  readonly eogIds: ReadonlySet<number>;
  readonly addBos: boolean;
  readonly addEos: boolean;
  /** SentencePiece: a space is put in front of the text (and after each special token) before tokenizing. */
  readonly addSpacePrefix: boolean;
  /** Whether llama.cpp's detokenize applies clean_up_tokenization_spaces for this vocabulary. */
  readonly cleanSpaces: boolean;

  private readonly tokens: string[];
  private readonly textToId = new Map<string, number>();
  private readonly scores: Float32Array;
  private readonly types: Int32Array;
  private readonly attrs: Uint16Array;
  /** CONTROL | USER_DEFINED | UNKNOWN tokens, longest (in UTF-8 bytes) first. */
  private readonly specialIds: number[];
  private readonly cache = new SliceCache();
  private readonly heap = new BigramHeap();
  private readonly pieces: (Uint8Array | undefined)[];
  private readonly specialPieces: (Uint8Array | undefined)[];

  // SentencePiece
  private readonly spmPairs?: PairSet;
  private readonly spmByteIds?: Int32Array;
  /** (left id, right id) -> id of the token spelled left + right (v1). */
  private readonly spmMerges?: PairMap;
  /** Token id of each single-code-unit token (BMP), else -1; astral single code points in charIdAstral. */
  private readonly charId?: Int32Array;
  private readonly charIdAstral?: Map<number, number>;
  // BPE
  private readonly pretok?: PreTokenizer;
  private readonly mergeList?: string[];
  private ranks?: Map<string, Map<string, number>>;
  /** (left id, right id) -> rank (v1) and id of the merged token or -1 (v2). */
  private readonly bpeMerges?: PairMap;
  /** Token id of each byte's GPT-2 character, or -1. */
  private readonly byteCharIds?: Int32Array;
  private readonly ignoreMerges: boolean = false;

  // scratch
  private symStart = new Int32Array(256);
  private symLen = new Int32Array(256);
  private symPrev = new Int32Array(256);
  private symNext = new Int32Array(256);
  private symId = new Int32Array(256);
  private cps = new Int32Array(1024);
  private offs = new Int32Array(1025);

  /** Builds a tokenizer from GGUF metadata (readGguf(path).metadata). */
  static fromGguf(metadata: Record<string, GgufValue>): Tokenizer {
    return new Tokenizer(metadata);
  }

  /** Reads a GGUF file's metadata (through the native reader) and builds its tokenizer. */
  static fromGgufFile(path: string): Tokenizer {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const { readGguf } = require('../gguf') as typeof import('../gguf');
    return new Tokenizer(readGguf(path).metadata);
  }

  private constructor(md: Record<string, GgufValue>) {
    if (md === null || typeof md !== 'object') throw new TypeError('Tokenizer.fromGguf: expected a metadata object');
    const model = md['tokenizer.ggml.model'];
    if (model !== 'llama' && model !== 'gpt2') {
      throw new Error(`Tokenizer.fromGguf: unsupported tokenizer.ggml.model ${JSON.stringify(model)} (supported: "llama", "gpt2")`);
    }
    this.model = model;
    const spm = model === 'llama';
    const pre = md['tokenizer.ggml.pre'];
    this.pre = typeof pre === 'string' ? pre : '';
    this.preTokenizer = '';

    const list = md['tokenizer.ggml.tokens'];
    if (!Array.isArray(list) || list.length === 0 || typeof list[0] !== 'string') {
      throw new Error('Tokenizer.fromGguf: tokenizer.ggml.tokens is missing or not a string array');
    }
    const n = list.length;
    this.vocabSize = n;
    this.tokens = new Array(n);
    for (let i = 0; i < n; i++) {
      let t = list[i] as string;
      if (typeof t !== 'string') throw new Error(`Tokenizer.fromGguf: tokenizer.ggml.tokens[${i}] is not a string`);
      if (t.length === 0) t = `[EMPTY_${i}]`;
      this.tokens[i] = t;
      this.textToId.set(t, i);
    }

    const sc = md['tokenizer.ggml.scores'];
    this.scores = new Float32Array(n);
    if (sc !== undefined) {
      if (!(ArrayBuffer.isView(sc) || Array.isArray(sc)) || (sc as ArrayLike<unknown>).length < n) {
        throw new Error('Tokenizer.fromGguf: tokenizer.ggml.scores is shorter than the vocabulary');
      }
      for (let i = 0; i < n; i++) this.scores[i] = Number((sc as ArrayLike<number>)[i]);
    }
    const tt = md['tokenizer.ggml.token_type'];
    this.types = new Int32Array(n).fill(TokenType.NORMAL);
    this.attrs = new Uint16Array(n);
    if (tt !== undefined) {
      if (!(ArrayBuffer.isView(tt) || Array.isArray(tt)) || (tt as ArrayLike<unknown>).length < n) {
        throw new Error('Tokenizer.fromGguf: tokenizer.ggml.token_type is shorter than the vocabulary');
      }
      for (let i = 0; i < n; i++) this.types[i] = Number((tt as ArrayLike<number>)[i]);
    }
    const typeAttr = [0, A_NORMAL, A_UNKNOWN, A_CONTROL, A_USER_DEFINED, A_UNUSED, A_BYTE];
    for (let i = 0; i < n; i++) this.attrs[i] = typeAttr[this.types[i]] ?? 0;

    // Defaults as in llama.cpp, then the metadata.
    let pretok: PreTokenizer | undefined;
    let addBos: boolean;
    let addSpacePrefix: boolean;
    let bos: number | null;
    let eos: number | null;
    let unk: number | null;
    if (spm) {
      addBos = true;
      addSpacePrefix = true;
      this.cleanSpaces = false;
      bos = 1;
      eos = 2;
      unk = 0;
    } else {
      pretok = preTokenizerFor(typeof pre === 'string' ? pre : undefined);
      this.preTokenizer = pretok.kind;
      addBos = pretok.addBos;
      addSpacePrefix = false;
      this.cleanSpaces = pretok.cleanSpaces;
      bos = 11;
      eos = 11;
      unk = null;
    }
    const b = (k: string) => (typeof md[k] === 'boolean' ? (md[k] as boolean) : undefined);
    addSpacePrefix = b('tokenizer.ggml.add_space_prefix') ?? addSpacePrefix;
    this.addSpacePrefix = addSpacePrefix;
    const id = (key: string, dflt: number | null): number | null => {
      if (dflt !== null && dflt >= n) dflt = null;
      const v = num(md[key]);
      if (v === undefined) return dflt;
      return v >= 0 && v < n ? v : dflt;
    };
    const bosId = id('tokenizer.ggml.bos_token_id', bos);
    const eosId = id('tokenizer.ggml.eos_token_id', eos);
    let eot = id('tokenizer.ggml.eot_token_id', null);
    let eom = id('tokenizer.ggml.eom_token_id', null);
    this.bos = bosId ?? -1;
    this.eos = eosId ?? -1;
    this.unk = id('tokenizer.ggml.unknown_token_id', unk) ?? -1;
    this.pad = id('tokenizer.ggml.padding_token_id', null) ?? -1;
    let fimPre = id('tokenizer.ggml.fim_pre_token_id', null) ?? id('tokenizer.ggml.prefix_token_id', null);
    let fimSuf = id('tokenizer.ggml.fim_suf_token_id', null) ?? id('tokenizer.ggml.suffix_token_id', null);
    let fimMid = id('tokenizer.ggml.fim_mid_token_id', null) ?? id('tokenizer.ggml.middle_token_id', null);
    let fimPad = id('tokenizer.ggml.fim_pad_token_id', null);
    let fimRep = id('tokenizer.ggml.fim_rep_token_id', null);
    let fimSep = id('tokenizer.ggml.fim_sep_token_id', null);
    this.addBos = b('tokenizer.ggml.add_bos_token') ?? addBos;
    this.addEos = b('tokenizer.ggml.add_eos_token') ?? false;

    // Auto-detect special tokens by text (llama.cpp marks them CONTROL).
    const find = (texts: string[]): number | null => {
      for (const t of texts) {
        const i = this.textToId.get(t);
        if (i !== undefined) return i;
      }
      return null;
    };
    const mark = (i: number | null) => {
      if (i !== null) this.attrs[i] |= A_CONTROL;
    };
    if (eot === null) mark((eot = find(EOT_TEXTS)));
    if (eom === null) mark((eom = find(EOM_TEXTS)));
    if (fimPre === null) mark((fimPre = find(FIM_PRE_TEXTS)));
    if (fimSuf === null) mark((fimSuf = find(FIM_SUF_TEXTS)));
    if (fimMid === null) mark((fimMid = find(FIM_MID_TEXTS)));
    if (fimPad === null) mark((fimPad = find(FIM_PAD_TEXTS)));
    if (fimRep === null) mark((fimRep = find(FIM_REP_TEXTS)));
    if (fimSep === null) mark((fimSep = find(FIM_SEP_TEXTS)));
    this.eot = eot ?? -1;
    this.eom = eom ?? -1;
    for (const [t, i] of this.textToId) {
      if (this.attrs[i] & A_CONTROL && t.includes('unused')) this.attrs[i] |= A_UNUSED;
    }
    const eog = new Set<number>();
    for (const i of [fimPad, fimRep, fimSep]) if (i !== null) eog.add(i);
    for (const t of EOG_TEXTS) {
      const i = this.textToId.get(t);
      if (i !== undefined) {
        eog.add(i);
        this.attrs[i] |= A_CONTROL;
      }
    }
    for (const t of ['<|channel|>', '<|message|>', '<|start|>', '<|constrain|>']) {
      const i = this.textToId.get(t);
      if (i !== undefined) this.attrs[i] = A_USER_DEFINED; // gpt-oss: always rendered
    }
    for (const i of [eosId, eot, eom]) if (i !== null) eog.add(i);
    {
      // o200k_harmony / solar-open: "<|end|>" is not end-of-generation there.
      const has = (t: string) => [...eog].some((i) => this.tokens[i] === t);
      const hasCall = has('<|call|>') || has('<|calls|>');
      if ((has('<|return|>') && hasCall && has('<|end|>')) || (hasCall && has('<|flush|>') && has('<|end|>'))) {
        const i = [...eog].find((j) => this.tokens[j] === '<|end|>')!;
        eog.delete(i);
        this.attrs[i] = A_USER_DEFINED;
      }
      if (has('<|tool_response>') && has('</s>')) {
        const i = [...eog].find((j) => this.tokens[j] === '</s>')!;
        eog.delete(i);
        this.attrs[i] = A_NORMAL;
      }
    }
    this.eogIds = eog;

    const special: number[] = [];
    for (let i = 0; i < n; i++) if (this.attrs[i] & (A_CONTROL | A_USER_DEFINED | A_UNKNOWN)) special.push(i);
    const blen = new Map<number, number>(special.map((i) => [i, utf8Length(this.tokens[i])]));
    special.sort((x, y) => blen.get(y)! - blen.get(x)! || x - y);
    this.specialIds = special;

    // Per-token attributes llama.cpp sets by model name.
    const lower = (k: string) => (typeof md[k] === 'string' ? (md[k] as string).toLowerCase() : '');
    const name = lower('general.name');
    const arch = typeof md['general.architecture'] === 'string' ? (md['general.architecture'] as string) : '';
    const setAttr = (t: string, a: number, on: boolean) => {
      const i = this.textToId.get(t);
      if (i !== undefined) this.attrs[i] = on ? this.attrs[i] | a : this.attrs[i] & ~a;
    };
    if (['jina-v2-de', 'jina-v2-es', 'jina-v2-code'].some((s) => this.pre.includes(s)) || ['nomic-bert-moe', 'jina-bert-v3'].some((s) => arch.includes(s))) {
      setAttr('<mask>', A_LSTRIP, true);
    } else if (name.includes('phi-3') || name.includes('phi3')) {
      for (const i of special) this.attrs[i] |= A_RSTRIP;
      setAttr('</s>', A_RSTRIP, true);
      for (const t of ['<unk>', '<s>', '<|endoftext|>']) setAttr(t, A_RSTRIP, false);
    } else if (name.includes('modern-bert')) {
      setAttr('[MASK]', A_LSTRIP, true);
    }

    this.pieces = new Array(n);
    this.specialPieces = new Array(n);

    if (spm) {
      // Pairs of adjacent code points inside any token: a boundary between two code points that
      // never occur together in a token is never crossed by a merge, so the text can be cut there
      // (and the pieces cached) without changing the result. And every way of spelling a token as
      // two tokens, so merges can work on ids.
      const pairs = new PairSet(n * 8);
      const merges = new PairMap(n * 4);
      const charId = new Int32Array(0x10000).fill(-1);
      const astral = new Map<number, number>();
      for (let id = 0; id < n; id++) {
        const t = this.tokens[id];
        if (this.textToId.get(t) !== id) continue; // shadowed duplicate
        let prev = -1;
        for (let i = 0; i < t.length; i++) {
          const cp = t.codePointAt(i)!;
          if (cp > 0xffff) i++;
          if (prev >= 0) {
            pairs.add(prev, cp);
            const a = this.textToId.get(t.slice(0, cp > 0xffff ? i - 1 : i));
            if (a !== undefined) {
              const b = this.textToId.get(t.slice(cp > 0xffff ? i - 1 : i));
              if (b !== undefined) merges.setIfAbsent(a, b, id, 0);
            }
          }
          prev = cp;
        }
        if (t.length === 1) charId[t.charCodeAt(0)] = id;
        else if (t.length === 2 && t.codePointAt(0)! > 0xffff) astral.set(t.codePointAt(0)!, id);
      }
      this.spmPairs = pairs;
      this.spmMerges = merges;
      this.charId = charId;
      this.charIdAstral = astral;
      const hex = '0123456789ABCDEF';
      const ids = new Int32Array(256).fill(-1);
      for (let c = 0; c < 256; c++) {
        const i = this.textToId.get(`<0x${hex[c >> 4]}${hex[c & 15]}>`) ?? this.textToId.get(String.fromCharCode(c));
        if (i !== undefined) ids[c] = i;
      }
      this.spmByteIds = ids;
    } else {
      this.pretok = pretok!;
      this.ignoreMerges = pretok!.ignoreMerges;
      const list = md['tokenizer.ggml.merges'];
      if (!Array.isArray(list)) throw new Error('Tokenizer.fromGguf: tokenizer.ggml.merges is missing (required for a "gpt2" vocabulary)');
      const merges = new PairMap(list.length);
      for (let r = 0; r < list.length; r++) {
        const m = list[r];
        if (typeof m !== 'string') throw new Error(`Tokenizer.fromGguf: tokenizer.ggml.merges[${r}] is not a string`);
        const sp = m.indexOf(' ', 1);
        if (sp < 0) continue;
        const a = this.textToId.get(m.slice(0, sp));
        if (a === undefined) continue;
        const b = this.textToId.get(m.slice(sp + 1));
        if (b === undefined) continue;
        merges.setIfAbsent(a, b, r, this.textToId.get(m.slice(0, sp) + m.slice(sp + 1)) ?? -1);
      }
      this.mergeList = list as string[];
      this.bpeMerges = merges;
      const byteIds = new Int32Array(256).fill(-1);
      for (let c = 0; c < 256; c++) byteIds[c] = this.textToId.get(BYTE_TO_CHAR[c]) ?? -1;
      this.byteCharIds = byteIds;
    }
  }

  /** Merge ranks by strings (llama.cpp's bpe_ranks), built on first need by the string fallback. */
  private stringRanks(): Map<string, Map<string, number>> {
    if (this.ranks) return this.ranks;
    const ranks = new Map<string, Map<string, number>>();
    const list = this.mergeList!;
    for (let r = 0; r < list.length; r++) {
      const m = list[r];
      const sp = m.indexOf(' ', 1);
      const first = sp < 0 ? '' : m.slice(0, sp);
      const second = sp < 0 ? '' : m.slice(sp + 1);
      let inner = ranks.get(first);
      if (!inner) ranks.set(first, (inner = new Map()));
      if (!inner.has(second)) inner.set(second, r);
    }
    return (this.ranks = ranks);
  }

  // -------------------------------------------------------------------------------------------
  // Token properties

  private check(id: number, where: string): void {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw new RangeError(`Tokenizer.${where}: token id ${String(id)} is out of range [0, ${this.vocabSize})`);
    }
  }

  /** The token's text as stored in the vocabulary ("▁the", "Ġthe", "<0x0A>", "<|eot_id|>"). */
  tokenText(id: number): string {
    this.check(id, 'tokenText');
    return this.tokens[id];
  }

  /** The id of a vocabulary string, or undefined. */
  tokenId(text: string): number | undefined {
    return this.textToId.get(text);
  }

  /** tokenizer.ggml.token_type of the token (TokenType). */
  tokenType(id: number): number {
    this.check(id, 'tokenType');
    return this.types[id];
  }

  /** llama.cpp's attribute bits of the token (TokenAttr), after its auto-detection of control tokens. */
  tokenAttributes(id: number): number {
    this.check(id, 'tokenAttributes');
    return this.attrs[id];
  }

  /** Control or unknown tokens (BOS, EOS, <|im_end|>, <unk>...): decoded as "" unless skipSpecial is false. */
  isSpecial(id: number): boolean {
    this.check(id, 'isSpecial');
    return (this.attrs[id] & (A_CONTROL | A_UNKNOWN)) !== 0 || this.eogIds.has(id);
  }

  /** Whether generation stops at this token. */
  isEog(id: number): boolean {
    return this.eogIds.has(id);
  }

  /** The bytes this token decodes to (llama.cpp's token_to_piece; special: render control tokens' text). */
  tokenToBytes(id: number, opts: { special?: boolean } = {}): Uint8Array {
    this.check(id, 'tokenToBytes');
    return this.piece(id, opts.special === true).slice();
  }

  /**
   * The text of one token (llama.cpp's token_to_piece as a string). A token that is not valid UTF-8
   * on its own (a byte token, part of a character) gives U+FFFD: use createDecoder for streams.
   */
  tokenToPiece(id: number, opts: { special?: boolean } = {}): string {
    this.check(id, 'tokenToPiece');
    return fromUtf8(this.piece(id, opts.special === true));
  }

  private piece(id: number, special: boolean): Uint8Array {
    const cache = special ? this.specialPieces : this.pieces;
    let p = cache[id];
    if (p === undefined) cache[id] = p = this.computePiece(id, special);
    return p;
  }

  private computePiece(id: number, special: boolean): Uint8Array {
    const attr = this.attrs[id];
    const text = this.tokens[id];
    if (!special && attr & (A_UNKNOWN | A_CONTROL)) return new Uint8Array(0);
    if (attr & (A_UNKNOWN | A_CONTROL | A_USER_DEFINED)) return utf8(text);
    if (attr & A_NORMAL) {
      if (this.model === 'llama') return utf8(text.replaceAll(SPACE_MARK, ' '));
      const out: number[] = [];
      for (let i = 0; i < text.length; i++) {
        const c = text.charCodeAt(i);
        const byte = c < CHAR_TO_BYTE.length ? CHAR_TO_BYTE[c] : -1;
        if (byte >= 0) {
          out.push(byte);
          continue;
        }
        // llama.cpp's llama_decode_text for a character outside the byte map.
        const cp = text.codePointAt(i)!;
        if (cp > 0xffff) i++;
        const bytes: number[] = [];
        pushUtf8(bytes, cp);
        const s = '[UNK_BYTE_0x' + bytes.map((x) => x.toString(16).padStart(2, '0')).join('') + text + ']';
        for (const x of utf8(s)) out.push(x);
      }
      return Uint8Array.from(out);
    }
    if (attr & A_BYTE) return Uint8Array.of(parseInt(text.slice(3, 5), 16) & 0xff);
    return new Uint8Array(0);
  }

  // -------------------------------------------------------------------------------------------
  // Encoding

  /**
   * Token ids of text, as llama.cpp's llama_tokenize (add_special = bos/eos, parse_special = special).
   *
   * Round trip: decode(encode(text)) === text for every string, every character kept (control
   * characters, U+200B, a leading U+FEFF, emoji sequences...), with two exceptions:
   * - Lone surrogates (a JavaScript string can hold them, UTF-8 cannot): each becomes U+FFFD, as
   *   any UTF-8 conversion of the string does, and as llama.cpp sees the string through Node-API.
   *   So encode(text) equals encode(text with its lone surrogates replaced by U+FFFD)
   *   (String.prototype.toWellFormed), and decode gives that text back.
   * - SentencePiece vocabularies write a space as U+2581 ("▁"), so a U+2581 in the text comes back
   *   as a space (llama.cpp too). The space encode puts in front of the text (add_space_prefix) is
   *   dropped again by decode (stripLeadingSpace).
   */
  encode(text: string, opts: EncodeOptions = {}): Int32Array {
    if (typeof text !== 'string') throw new TypeError(`Tokenizer.encode: expected a string but received ${typeof text}`);
    const addBos = opts.bos ?? this.addBos;
    const addEos = opts.eos ?? this.addEos;
    const out = new IntBuffer(Math.min(1 << 20, (text.length >> 2) + 16));
    if (addBos) {
      if (this.bos < 0) throw new Error('Tokenizer.encode: this vocabulary has no BOS token');
      out.push(this.bos);
    }
    if (text.length > 0) {
      text = wellFormed(text);
      const frags = this.partition(text, opts.special === true);
      if (this.model === 'llama') {
        let prevSpecial = true;
        for (let f = 0; f < frags.length; f += 3) {
          const tok = frags[f + 2];
          if (tok >= 0) {
            out.push(tok);
            prevSpecial = true;
            continue;
          }
          let s = text.slice(frags[f], frags[f + 1]);
          if (this.addSpacePrefix && prevSpecial) s = ' ' + s;
          this.spmEncode(s.replaceAll(' ', SPACE_MARK), out);
          prevSpecial = false;
        }
      } else {
        for (let f = 0; f < frags.length; f += 3) {
          const tok = frags[f + 2];
          if (tok >= 0) out.push(tok);
          else this.bpeEncode(frags[f] === 0 && frags[f + 1] === text.length ? text : text.slice(frags[f], frags[f + 1]), out);
        }
      }
    }
    if (addEos) {
      if (this.eos < 0) throw new Error('Tokenizer.encode: this vocabulary has no EOS token');
      out.push(this.eos);
    }
    return out.toInt32Array();
  }

  /**
   * llama.cpp's tokenizer_st_partition: for each special token (longest first), cut it out of
   * every remaining text fragment. Returns flat [start, end, tokenId (-1 for text)] triples.
   */
  private partition(text: string, special: boolean): number[] {
    let frags = [0, text.length, -1];
    const seen = new Map<string, boolean>();
    for (const id of this.specialIds) {
      const attr = this.attrs[id];
      if (!special && attr & (A_CONTROL | A_UNKNOWN)) continue;
      const tok = this.tokens[id];
      const head = tok.slice(0, 2);
      let present = seen.get(head);
      if (present === undefined) seen.set(head, (present = text.includes(head)));
      if (!present) continue;
      let p = text.indexOf(tok);
      if (p < 0) continue;
      const occ: number[] = [];
      while (p >= 0) {
        occ.push(p);
        p = text.indexOf(tok, p + 1);
      }
      const len = tok.length;
      const next: number[] = [];
      let k = 0;
      for (let f = 0; f < frags.length; f += 3) {
        const s = frags[f];
        const e = frags[f + 1];
        if (frags[f + 2] >= 0) {
          next.push(s, e, frags[f + 2]);
          continue;
        }
        let cur = s;
        for (;;) {
          while (k < occ.length && occ[k] < cur) k++;
          if (k >= occ.length || occ[k] + len > e) break;
          const m = occ[k];
          let leftEnd = m;
          if (attr & A_LSTRIP) while (leftEnd > cur && isCSpace(text.charCodeAt(leftEnd - 1))) leftEnd--;
          if (leftEnd > cur) next.push(cur, leftEnd, -1);
          next.push(m, m + len, id);
          cur = m + len;
          if (attr & A_RSTRIP) while (cur < e && isCSpace(text.charCodeAt(cur))) cur++;
        }
        if (cur < e) next.push(cur, e, -1);
      }
      frags = next;
    }
    return frags;
  }

  private growSymbols(n: number): void {
    if (n <= this.symStart.length) return;
    const m = Math.max(n, this.symStart.length * 2);
    this.symStart = new Int32Array(m);
    this.symLen = new Int32Array(m);
    this.symPrev = new Int32Array(m);
    this.symNext = new Int32Array(m);
    this.symId = new Int32Array(m);
  }

  /** SentencePiece over an escaped fragment: cut where no merge can cross, tokenize (cached) pieces. */
  private spmEncode(s: string, out: IntBuffer): void {
    const pairs = this.spmPairs!;
    let segStart = 0;
    let prev = -1;
    let h = SliceCache.SEED;
    for (let i = 0; i < s.length; ) {
      let cp = s.charCodeAt(i);
      let units = 1;
      if (cp >= 0xd800 && cp <= 0xdbff && i + 1 < s.length) {
        const lo = s.charCodeAt(i + 1);
        if (lo >= 0xdc00 && lo <= 0xdfff) {
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
          units = 2;
        }
      }
      if (prev >= 0 && !pairs.has(prev, cp)) {
        this.spmSegment(s, segStart, i, h, out);
        segStart = i;
        h = SliceCache.SEED;
      }
      h = SliceCache.step(h, s.charCodeAt(i));
      if (units === 2) h = SliceCache.step(h, s.charCodeAt(i + 1));
      prev = cp;
      i += units;
    }
    if (s.length > segStart) this.spmSegment(s, segStart, s.length, h, out);
  }

  private spmSegment(s: string, a: number, b: number, h: number, out: IntBuffer): void {
    const slot = this.cache.find(s, a, b, h);
    if (slot >= 0) {
      this.cache.emit(slot, out);
      return;
    }
    const seg = s.slice(a, b);
    const ids = this.spmTokenize(seg);
    this.cache.insert(seg, h, ids);
    for (const id of ids) out.push(id);
  }

  /**
   * llm_tokenizer_spm_session::tokenize on one piece, on token ids: every symbol is a token and
   * a bigram exists exactly when left + right spells a token, so this makes the same merges as
   * the string version, which is used when some character is not a token by itself.
   */
  private spmTokenize(seg: string): number[] {
    this.growSymbols(seg.length);
    const start = this.symStart;
    const len = this.symLen;
    const prev = this.symPrev;
    const next = this.symNext;
    const sym = this.symId;
    const charId = this.charId!;
    let n = 0;
    for (let i = 0; i < seg.length; ) {
      const c = seg.charCodeAt(i);
      let id: number;
      let u = 1;
      if (c >= 0xd800 && c <= 0xdbff && i + 1 < seg.length) {
        u = 2;
        id = this.charIdAstral!.get(seg.codePointAt(i)!) ?? -1;
      } else id = charId[c];
      if (id < 0) return this.spmTokenizeStrings(seg);
      sym[n] = id;
      start[n] = i;
      len[n] = u;
      prev[n] = n - 1;
      next[n] = i + u === seg.length ? -1 : n + 1;
      n++;
      i += u;
    }
    const heap = this.heap;
    const merges = this.spmMerges!;
    const scores = this.scores;
    heap.clear();
    for (let i = 1; i < n; i++) {
      const slot = merges.find(sym[i - 1], sym[i]);
      if (slot >= 0) heap.push(-scores[merges.v1[slot]], i - 1, i, len[i - 1] + len[i]);
    }
    while (heap.length > 0) {
      heap.pop();
      const l = heap.topLeft;
      const r = heap.topRight;
      if (len[l] === 0 || len[r] === 0 || len[l] + len[r] !== heap.topSize) continue;
      sym[l] = merges.v1[merges.find(sym[l], sym[r])];
      len[l] += len[r];
      len[r] = 0;
      const nr = next[r];
      next[l] = nr;
      if (nr >= 0) prev[nr] = l;
      const pl = prev[l];
      if (pl >= 0) {
        const slot = merges.find(sym[pl], sym[l]);
        if (slot >= 0) heap.push(-scores[merges.v1[slot]], pl, l, len[pl] + len[l]);
      }
      if (nr >= 0) {
        const slot = merges.find(sym[l], sym[nr]);
        if (slot >= 0) heap.push(-scores[merges.v1[slot]], l, nr, len[l] + len[nr]);
      }
    }
    const ids: number[] = [];
    for (let i = 0; i !== -1 && n > 0; i = next[i]) ids.push(sym[i]);
    return ids;
  }

  /** llm_tokenizer_spm_session::tokenize on one piece, on strings (with byte fallback). */
  private spmTokenizeStrings(seg: string): number[] {
    this.growSymbols(seg.length);
    const start = this.symStart;
    const len = this.symLen;
    const prev = this.symPrev;
    const next = this.symNext;
    let n = 0;
    for (let i = 0; i < seg.length; ) {
      const u = seg.charCodeAt(i) >= 0xd800 && seg.charCodeAt(i) <= 0xdbff && i + 1 < seg.length ? 2 : 1;
      start[n] = i;
      len[n] = u;
      prev[n] = n - 1;
      next[n] = i + u === seg.length ? -1 : n + 1;
      n++;
      i += u;
    }
    const heap = this.heap;
    const map = this.textToId;
    const scores = this.scores;
    heap.clear();
    const tryAdd = (l: number, r: number) => {
      if (l < 0 || r < 0) return;
      const size = len[l] + len[r];
      const id = map.get(seg.slice(start[l], start[l] + size));
      if (id === undefined) return;
      heap.push(-scores[id], l, r, size);
    };
    for (let i = 1; i < n; i++) tryAdd(i - 1, i);
    while (heap.length > 0) {
      heap.pop();
      const l = heap.topLeft;
      const r = heap.topRight;
      if (len[l] === 0 || len[r] === 0 || len[l] + len[r] !== heap.topSize) continue;
      len[l] += len[r];
      len[r] = 0;
      next[l] = next[r];
      if (next[r] >= 0) prev[next[r]] = l;
      tryAdd(prev[l], l);
      tryAdd(l, next[l]);
    }
    const ids: number[] = [];
    for (let i = 0; i !== -1 && n > 0; i = next[i]) {
      const text = seg.slice(start[i], start[i] + len[i]);
      const id = map.get(text);
      if (id !== undefined) {
        ids.push(id);
        continue;
      }
      // Byte fallback: <0xXX> per UTF-8 byte.
      const bytes: number[] = [];
      for (let j = 0; j < text.length; j++) {
        const cp = text.codePointAt(j)!;
        if (cp > 0xffff) j++;
        pushUtf8(bytes, cp);
      }
      for (const x of bytes) {
        const bid = this.spmByteIds![x];
        if (bid < 0) throw new Error(`Tokenizer.encode: no byte token for 0x${x.toString(16).padStart(2, '0')} (needed for ${JSON.stringify(text)})`);
        ids.push(bid);
      }
    }
    return ids;
  }

  /** Byte-level BPE over a text fragment: pre-tokenize into words, BPE each word (cached). */
  private bpeEncode(text: string, out: IntBuffer): void {
    if (this.cps.length < text.length) {
      this.cps = new Int32Array(text.length * 2);
      this.offs = new Int32Array(text.length * 2 + 1);
    }
    const cps = this.cps;
    const offs = this.offs;
    let n = 0;
    for (let i = 0; i < text.length; ) {
      const cp = text.codePointAt(i)!;
      offs[n] = i;
      cps[n++] = cp;
      i += cp > 0xffff ? 2 : 1;
    }
    offs[n] = text.length;
    const ends = splitWords(cps, n, this.pretok!.steps);
    const cache = this.cache;
    let a = 0;
    for (let w = 0; w < ends.length; w++) {
      const b = ends[w];
      const s = offs[a];
      const e = offs[b];
      a = b;
      const h = SliceCache.hash(text, s, e);
      const slot = cache.find(text, s, e, h);
      if (slot >= 0) {
        cache.emit(slot, out);
        continue;
      }
      const word = text.slice(s, e);
      const ids = this.bpeWord(word);
      cache.insert(word, h, ids);
      for (const id of ids) out.push(id);
    }
  }

  /** llm_tokenizer_bpe_session::tokenize on one word. */
  private bpeWord(word: string): number[] {
    // UTF-8 of the word; its GPT-2 byte encoding is one character per byte.
    const bytes: number[] = [];
    for (let i = 0; i < word.length; i++) {
      const c = word.charCodeAt(i);
      if (c < 0x80) {
        bytes.push(c);
        continue;
      }
      const cp = word.codePointAt(i)!;
      if (cp > 0xffff) i++;
      pushUtf8(bytes, cp);
    }
    const enc = () => {
      let e = '';
      for (const x of bytes) e += BYTE_TO_CHAR[x];
      return e;
    };
    if (this.ignoreMerges) {
      const id = this.textToId.get(enc());
      if (id !== undefined) return [id];
    }
    // On ids while every symbol is a token; the string version otherwise.
    const n = bytes.length;
    this.growSymbols(n);
    const len = this.symLen;
    const prev = this.symPrev;
    const next = this.symNext;
    const sym = this.symId;
    const byteIds = this.byteCharIds!;
    for (let i = 0; i < n; i++) {
      const id = byteIds[bytes[i]];
      if (id < 0) return this.bpeWordStrings(enc());
      sym[i] = id;
      len[i] = 1;
      prev[i] = i - 1;
      next[i] = i + 1 === n ? -1 : i + 1;
    }
    const merges = this.bpeMerges!;
    const heap = this.heap;
    heap.clear();
    for (let i = 1; i < n; i++) {
      const slot = merges.find(sym[i - 1], sym[i]);
      if (slot >= 0) heap.push(merges.v1[slot], i - 1, i, 2);
    }
    while (heap.length > 0) {
      heap.pop();
      const l = heap.topLeft;
      const r = heap.topRight;
      if (len[l] === 0 || len[r] === 0 || len[l] + len[r] !== heap.topSize) continue;
      const merged = merges.v2[merges.find(sym[l], sym[r])];
      if (merged < 0) return this.bpeWordStrings(enc()); // a merge whose result is not a token
      sym[l] = merged;
      len[l] += len[r];
      len[r] = 0;
      const nr = next[r];
      next[l] = nr;
      if (nr >= 0) prev[nr] = l;
      const pl = prev[l];
      if (pl >= 0) {
        const slot = merges.find(sym[pl], sym[l]);
        if (slot >= 0) heap.push(merges.v1[slot], pl, l, len[pl] + len[l]);
      }
      if (nr >= 0) {
        const slot = merges.find(sym[l], sym[nr]);
        if (slot >= 0) heap.push(merges.v1[slot], l, nr, len[l] + len[nr]);
      }
    }
    const ids: number[] = [];
    for (let i = 0; i < n; i++) if (len[i] > 0) ids.push(sym[i]);
    return ids;
  }

  /** llm_tokenizer_bpe_session::tokenize on one byte-encoded word, on strings. */
  private bpeWordStrings(enc: string): number[] {
    const map = this.textToId;
    const n = enc.length;
    this.growSymbols(n);
    const len = this.symLen;
    const prev = this.symPrev;
    const next = this.symNext;
    const start = this.symStart;
    for (let i = 0; i < n; i++) {
      start[i] = i;
      len[i] = 1;
      prev[i] = i - 1;
      next[i] = i + 1 === n ? -1 : i + 1;
    }
    const ranks = this.stringRanks();
    const heap = this.heap;
    heap.clear();
    const tryAdd = (l: number, r: number) => {
      if (l < 0 || r < 0) return;
      const inner = ranks.get(enc.slice(start[l], start[l] + len[l]));
      if (inner === undefined) return;
      const rank = inner.get(enc.slice(start[r], start[r] + len[r]));
      if (rank === undefined) return;
      heap.push(rank, l, r, len[l] + len[r]);
    };
    for (let i = 1; i < n; i++) tryAdd(i - 1, i);
    while (heap.length > 0) {
      heap.pop();
      const l = heap.topLeft;
      const r = heap.topRight;
      if (len[l] === 0 || len[r] === 0 || len[l] + len[r] !== heap.topSize) continue;
      len[l] += len[r];
      len[r] = 0;
      next[l] = next[r];
      if (next[r] >= 0) prev[next[r]] = l;
      tryAdd(prev[l], l);
      tryAdd(l, next[l]);
    }
    const ids: number[] = [];
    for (let i = 0; i < n; i++) {
      if (len[i] === 0) continue;
      const s = enc.slice(start[i], start[i] + len[i]);
      const id = map.get(s);
      if (id !== undefined) {
        ids.push(id);
        continue;
      }
      // As llama.cpp: look up each UTF-8 byte of the symbol's text as a one-byte string (only
      // ASCII bytes can match a token).
      for (let j = 0; j < s.length; j++) {
        const c = s.charCodeAt(j);
        if (c >= 0x80) continue;
        const bid = map.get(s[j]);
        if (bid !== undefined) ids.push(bid);
      }
    }
    return ids;
  }

  // -------------------------------------------------------------------------------------------
  // Decoding

  /** The bytes of one token for a decode in progress (leading-space rule applied). */
  private decodeBytes(id: number, skipSpecial: boolean, state: { atStart: boolean }): Uint8Array {
    this.check(id, 'decode');
    let p = this.piece(id, !skipSpecial);
    if (state.atStart && !(this.attrs[id] & A_CONTROL)) {
      state.atStart = false;
      if (p.length > 0 && p[0] === 0x20) p = p.subarray(1);
    }
    return p;
  }

  /**
   * Text of a token sequence (byte tokens and byte-level pieces joined before UTF-8 decoding; a
   * leading U+FEFF is kept, invalid UTF-8 becomes U+FFFD). decode(encode(text)) gives the text back:
   * see encode for the two exceptions (lone surrogates, U+2581 in SentencePiece vocabularies).
   */
  decode(ids: ArrayLike<number>, opts: DecodeOptions = {}): string {
    if (ids === null || typeof ids !== 'object' || typeof ids.length !== 'number') {
      throw new TypeError('Tokenizer.decode: expected an array of token ids');
    }
    const skipSpecial = opts.skipSpecial ?? true;
    const state = { atStart: this.addSpacePrefix && (opts.stripLeadingSpace ?? true) };
    const buf = new ByteBuffer(ids.length * 4 + 16);
    for (let i = 0; i < ids.length; i++) {
      const p = this.decodeBytes(ids[i], skipSpecial, state);
      if (p.length > 0) buf.pushAll(p);
    }
    let bytes = buf.view();
    if (opts.cleanSpaces) bytes = bytes.subarray(0, cleanUpSpaces(bytes));
    return fromUtf8(bytes);
  }

  /**
   * A streaming detokenizer. push(id) returns the text completed by the token; UTF-8 characters
   * split over several tokens are held back until complete (never emitted as U+FFFD). The
   * leading-space rule is the one decode applies, so the concatenation of the pushes and flush()
   * equals decode() of the same ids with the same options, however the ids are grouped into push
   * calls (one id or an array of ids at a time), a leading U+FEFF and invalid UTF-8 included.
   */
  createDecoder(opts: DecoderOptions = {}): StreamingDecoder {
    const skipSpecial = opts.skipSpecial ?? true;
    const strip = this.addSpacePrefix && (opts.stripLeadingSpace ?? true);
    let state = { atStart: strip };
    let td = utf8Decoder();
    const buf = new ByteBuffer(64);
    return {
      push: (ids: number | ArrayLike<number>): string => {
        if (typeof ids === 'number') {
          const p = this.decodeBytes(ids, skipSpecial, state);
          return p.length === 0 ? '' : td.decode(p, { stream: true });
        }
        if (ids === null || typeof ids !== 'object' || typeof ids.length !== 'number') {
          throw new TypeError('StreamingDecoder.push: expected a token id or an array of token ids');
        }
        buf.length = 0;
        for (let i = 0; i < ids.length; i++) {
          const p = this.decodeBytes(ids[i], skipSpecial, state);
          if (p.length > 0) buf.pushAll(p);
        }
        return buf.length === 0 ? '' : td.decode(buf.view(), { stream: true });
      },
      flush: (): string => {
        const rest = td.decode();
        td = utf8Decoder();
        state = { atStart: strip };
        return rest;
      },
    };
  }
}

/** llama.cpp's clean_spaces passes over detokenized bytes, in place; returns the new length. */
function cleanUpSpaces(t: Uint8Array): number {
  const SP = 0x20;
  const Q = 0x27;
  let total = t.length;
  // " ?", " !", " .", " ,"
  let n = total;
  total = n ? 1 : 0;
  for (let i = 1; i < n; i++) {
    const x = t[i];
    if (t[i - 1] === SP && (x === 0x3f || x === 0x21 || x === 0x2e || x === 0x2c)) total--;
    t[total++] = x;
  }
  // " ' " -> "'"
  n = total;
  total = n ? 1 : 0;
  for (let i = 1; i < n; i++) {
    const x = t[i];
    if (x === Q && i + 1 < n && t[i - 1] === SP && t[i + 1] === SP) {
      total--;
      t[++i] = 0;
    }
    t[total++] = x;
  }
  // " 's", " 'm", " 're", " 've"
  n = total;
  total = n ? 1 : 0;
  for (let i = 1; i < n; i++) {
    const x = t[i];
    if (t[i - 1] === SP && x === Q && i + 1 < n) {
      const x1 = t[i + 1];
      if (x1 === 0x74 || x1 === 0x64) {
        // " 't", " 'd": kept
      } else if (x1 === 0x73 || x1 === 0x6d) {
        total--;
      } else if (i + 2 < n) {
        const x2 = t[i + 2];
        if ((x1 === 0x72 && x2 === 0x65) || (x1 === 0x76 && x2 === 0x65)) total--;
      }
    }
    t[total++] = x;
  }
  return total;
}
