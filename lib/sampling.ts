// Token sampling on one row of logits, in plain TypeScript: logit bias, repetition penalties
// (llama.cpp's repeat penalty, OpenAI's presence/frequency penalties), greedy, top-k, top-p, min-p,
// temperature and a draw from a seeded generator, in the order of llama.cpp's common sampler chain.
//
// Speed: the vocabulary (32k-152k tokens) is never sorted whole. Top-k takes a bounded heap (k <=
// 128, one pass over the logits) or a bucketed selection; top-p buckets the candidates by logit,
// keeps every bucket above the one where the cumulative mass crosses p and sorts only that bucket
// (refining it by buckets again while it is large). exp() is a table-driven polynomial (relative
// error < 1e-13), about twice as fast as Math.exp on V8.
import { getRandomValues } from 'node:crypto';
import { describe } from './errors';

// -------------------------------------------------------------------------------------------
// Options

export interface SamplingOptions {
  /** Softmax temperature, >= 0; 0 samples greedily (argmax, ties to the lowest id). Default 1. */
  temperature?: number;
  /** Keep only the k most likely tokens (ties to the lowest id); 0 = off (default). */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches topP, in (0, 1]; 1 = off (default). */
  topP?: number;
  /** Keep the tokens with p >= minP * pmax, in [0, 1]; 0 = off (default). */
  minP?: number;
  /** llama.cpp repeat penalty, > 0: a recent token's logit l becomes l > 0 ? l / p : l * p. 1 = off (default). */
  repeatPenalty?: number;
  /** OpenAI presence penalty: subtracted once from the logit of every recent token. 0 = off (default). */
  presencePenalty?: number;
  /** OpenAI frequency penalty: subtracted count times from the logit of a recent token. 0 = off (default). */
  frequencyPenalty?: number;
  /** How many of the last tokens of history the penalties look at: default 64, -1 = all, 0 = none. */
  penaltyLastN?: number;
  /** Added to the logits of the given token ids before anything else; -Infinity bans a token. */
  logitBias?: Readonly<Record<number, number>> | ReadonlyMap<number, number>;
  /** Seed of the random generator (a safe integer). Default: seeded once from crypto.getRandomValues. */
  seed?: number;
}

/** SamplingOptions after validation, with every default filled in. */
export interface ResolvedSamplingOptions {
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  repeatPenalty: number;
  presencePenalty: number;
  frequencyPenalty: number;
  penaltyLastN: number;
  logitBias: ReadonlyMap<number, number>;
  /** undefined: seeded from crypto.getRandomValues. */
  seed: number | undefined;
}

export const DEFAULT_SAMPLING_OPTIONS: Readonly<ResolvedSamplingOptions> = Object.freeze({
  temperature: 1,
  topK: 0,
  topP: 1,
  minP: 0,
  repeatPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
  penaltyLastN: 64,
  logitBias: new Map<number, number>(),
  seed: undefined,
});

const OPTION_KEYS: readonly (keyof SamplingOptions)[] = [
  'temperature',
  'topK',
  'topP',
  'minP',
  'repeatPenalty',
  'presencePenalty',
  'frequencyPenalty',
  'penaltyLastN',
  'logitBias',
  'seed',
];

function badType(where: string, name: string, expected: string, got: unknown): TypeError {
  return new TypeError(`${where}: expected ${expected} for ${name} but received ${describe(got)}`);
}

function badRange(where: string, name: string, expected: string, got: unknown): RangeError {
  return new RangeError(`${where}: expected ${expected} for ${name} but received ${describe(got)}`);
}

function isPlainObject(o: unknown): o is Record<string, unknown> {
  if (typeof o !== 'object' || o === null || Array.isArray(o)) return false;
  const proto = Object.getPrototypeOf(o);
  return proto === Object.prototype || proto === null;
}

function checkKeys(where: string, what: string, o: Record<string, unknown>, known: readonly string[]): void {
  for (const key of Object.keys(o)) {
    if (known.includes(key)) continue;
    const near = known.find((k) => k.toLowerCase() === key.toLowerCase());
    const hint = near ? ` (did you mean ${near}?)` : '';
    throw new TypeError(`${where}: unknown option ${JSON.stringify(key)} in ${what}${hint}; known options: ${known.join(', ')}`);
  }
}

/** Reads an optional number option: TypeError for a non-number, RangeError when `ok` rejects it. */
function numberOption(
  where: string,
  o: Record<string, unknown>,
  key: string,
  fallback: number,
  expected: string,
  ok: (v: number) => boolean,
): number {
  const v = o[key];
  if (v === undefined) return fallback;
  if (typeof v !== 'number') throw badType(where, key, expected, v);
  if (Number.isNaN(v) || !ok(v)) throw badRange(where, key, expected, v);
  return v;
}

const isTokenKey = (k: string): boolean => /^(0|[1-9][0-9]*)$/.test(k) && Number.isSafeInteger(Number(k));

function resolveLogitBias(where: string, bias: unknown): Map<number, number> {
  const out = new Map<number, number>();
  if (bias === undefined) return out;
  const expected = 'a Map or a plain object from token ids to numbers';
  let entries: [unknown, unknown][];
  if (bias instanceof Map) {
    entries = [...bias.entries()];
    for (const [k] of entries) {
      if (typeof k !== 'number') throw badType(where, 'a logitBias key', 'a token id (an integer >= 0)', k);
      if (!Number.isSafeInteger(k) || k < 0) throw badRange(where, 'a logitBias key', 'a token id (an integer >= 0)', k);
    }
  } else if (isPlainObject(bias)) {
    entries = Object.entries(bias);
    for (const [k] of entries) {
      if (!isTokenKey(k as string)) throw badRange(where, 'a logitBias key', 'a token id (an integer >= 0)', k);
    }
  } else {
    throw badType(where, 'logitBias', expected, bias);
  }
  for (const [k, v] of entries) {
    const id = Number(k);
    const name = `logitBias[${id}]`;
    if (typeof v !== 'number') throw badType(where, name, 'a finite number or -Infinity', v);
    if (Number.isNaN(v) || v === Infinity) throw badRange(where, name, 'a finite number or -Infinity', v);
    out.set(id, v);
  }
  return out;
}

/**
 * Checks sampling options and fills in the defaults. Unknown keys are a TypeError naming the key;
 * a value of the wrong type is a TypeError and one out of range a RangeError, both naming the
 * option. `where` prefixes the messages.
 */
export function validateSamplingOptions(o: unknown, where = 'sample'): ResolvedSamplingOptions {
  if (o === undefined) return { ...DEFAULT_SAMPLING_OPTIONS, logitBias: new Map() };
  if (!isPlainObject(o)) throw badType(where, 'options', 'a plain object of sampling options', o);
  checkKeys(where, 'sampling options', o, OPTION_KEYS);
  const d = DEFAULT_SAMPLING_OPTIONS;
  const finite = (v: number) => Number.isFinite(v);
  const seed = o.seed;
  if (seed !== undefined) {
    if (typeof seed !== 'number') throw badType(where, 'seed', 'a safe integer', seed);
    if (!Number.isSafeInteger(seed)) throw badRange(where, 'seed', 'a safe integer', seed);
  }
  return {
    temperature: numberOption(where, o, 'temperature', d.temperature, 'a finite number >= 0', (v) => finite(v) && v >= 0),
    topK: numberOption(where, o, 'topK', d.topK, 'an integer >= 0', (v) => Number.isSafeInteger(v) && v >= 0),
    topP: numberOption(where, o, 'topP', d.topP, 'a number in (0, 1]', (v) => v > 0 && v <= 1),
    minP: numberOption(where, o, 'minP', d.minP, 'a number in [0, 1]', (v) => v >= 0 && v <= 1),
    repeatPenalty: numberOption(where, o, 'repeatPenalty', d.repeatPenalty, 'a finite number > 0', (v) => finite(v) && v > 0),
    presencePenalty: numberOption(where, o, 'presencePenalty', d.presencePenalty, 'a finite number', finite),
    frequencyPenalty: numberOption(where, o, 'frequencyPenalty', d.frequencyPenalty, 'a finite number', finite),
    penaltyLastN: numberOption(where, o, 'penaltyLastN', d.penaltyLastN, 'an integer >= -1', (v) => Number.isSafeInteger(v) && v >= -1),
    logitBias: resolveLogitBias(where, o.logitBias),
    seed: seed as number | undefined,
  };
}

// -------------------------------------------------------------------------------------------
// Random numbers: xoshiro128** seeded through splitmix64.

/** A small, fast, seedable generator (xoshiro128**). Same seed, same stream. */
export class Rng {
  /** The seed given, or undefined when the state came from crypto.getRandomValues. */
  readonly seed: number | undefined;
  private s0 = 0;
  private s1 = 0;
  private s2 = 0;
  private s3 = 0;

  /** `seed`: a safe integer; without one the state comes from crypto.getRandomValues. */
  constructor(seed?: number) {
    if (seed !== undefined) {
      if (typeof seed !== 'number') throw badType('Rng', 'seed', 'a safe integer', seed);
      if (!Number.isSafeInteger(seed)) throw badRange('Rng', 'seed', 'a safe integer', seed);
    }
    this.seed = seed;
    const s = new Uint32Array(4);
    if (seed === undefined) {
      getRandomValues(s);
    } else {
      // splitmix64 over the 64-bit two's complement of the seed: two outputs, four words.
      const mask = (1n << 64n) - 1n;
      let x = BigInt.asUintN(64, BigInt(seed));
      for (let i = 0; i < 2; i++) {
        x = (x + 0x9e3779b97f4a7c15n) & mask;
        let z = x;
        z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & mask;
        z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & mask;
        z ^= z >> 31n;
        s[2 * i] = Number(z & 0xffffffffn);
        s[2 * i + 1] = Number(z >> 32n);
      }
    }
    if ((s[0] | s[1] | s[2] | s[3]) === 0) s[0] = 0x9e3779b9; // the one state xoshiro cannot leave
    [this.s0, this.s1, this.s2, this.s3] = [s[0] | 0, s[1] | 0, s[2] | 0, s[3] | 0];
  }

  /** A uniform integer in [0, 2^32). */
  nextUint32(): number {
    const s1 = this.s1;
    const x = Math.imul(s1, 5);
    const result = Math.imul((x << 7) | (x >>> 25), 9) >>> 0;
    const t = s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= s1;
    this.s1 = s1 ^ this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = (this.s3 << 11) | (this.s3 >>> 21);
    return result;
  }

  /** A uniform number in [0, 1) with 53 random bits. */
  nextFloat(): number {
    const hi = this.nextUint32() >>> 5; // 27 bits
    const lo = this.nextUint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** The state: four 32-bit words (the native sampler's rngStates take and return these). */
  getState(): Uint32Array {
    return Uint32Array.of(this.s0, this.s1, this.s2, this.s3);
  }

  /** A generator continuing from a state getState() returned (four 32-bit words, not all zero). */
  static fromState(state: ArrayLike<number>): Rng {
    if (state === null || typeof state !== 'object' || state.length !== 4) {
      throw badType('Rng.fromState', 'state', 'four 32-bit words', state);
    }
    const s = Uint32Array.from(state);
    if ((s[0] | s[1] | s[2] | s[3]) === 0) throw badRange('Rng.fromState', 'state', 'a state that is not all zero', state);
    const r = Object.create(Rng.prototype) as Rng;
    Object.assign(r, { seed: undefined, s0: s[0] | 0, s1: s[1] | 0, s2: s[2] | 0, s3: s[3] | 0 });
    return r;
  }

  /** An independent copy that continues with the same stream. */
  clone(): Rng {
    const r = Object.create(Rng.prototype) as Rng;
    Object.assign(r, this);
    return r;
  }
}

// -------------------------------------------------------------------------------------------
// Helpers

// exp(x) for x <= 0: x = (64k + j) ln2/64 + r with |r| <= ln2/128, so exp(x) = 2^k 2^(j/64) e^r,
// e^r by a degree-5 polynomial. Relative error < 1e-13; 0 below -708 (and for -Infinity).
const EXP_K = 64 / Math.LN2;
const EXP_C1 = 0.010830424696223417; // ln2/64 split in two for an exact-ish reduction
const EXP_C2 = Math.LN2 / 64 - EXP_C1;
const EXP_FRAC = new Float64Array(64).map((_, j) => Math.pow(2, j / 64));
const EXP_POW2_OFFSET = 1100;
const EXP_POW2 = new Float64Array(EXP_POW2_OFFSET + 1).map((_, k) => Math.pow(2, k - EXP_POW2_OFFSET));

function expNeg(x: number): number {
  if (!(x > -708)) return 0;
  const n = 0 - ((0.5 - x * EXP_K) | 0); // round(x * 64 / ln2); `0 -` keeps -0 out
  const r = x - n * EXP_C1 - n * EXP_C2;
  const p = 1 + r * (1 + r * (0.5 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120)))));
  return EXP_POW2[(n >> 6) + EXP_POW2_OFFSET] * EXP_FRAC[n & 63] * p;
}

function checkRow(where: string, logits: ArrayLike<number>): void {
  if (logits === null || typeof logits !== 'object' || typeof logits.length !== 'number') {
    throw badType(where, 'logits', 'an array or typed array of numbers', logits);
  }
  if (logits.length === 0) throw badRange(where, 'logits', 'a non-empty array', logits);
}

function nanError(where: string, i: number, v: unknown): RangeError {
  return new RangeError(`${where}: logits[${i}] is ${describe(v)}; expected finite numbers or -Infinity in logits`);
}

/**
 * Index of the largest logit; ties go to the lowest index. A row that is all -Infinity gives 0.
 * NaN or +Infinity in the row is a RangeError naming logits.
 */
export function argmax(logits: ArrayLike<number>): number {
  checkRow('argmax', logits);
  let best = 0;
  let bestValue = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i];
    if (!(v < Infinity)) throw nanError('argmax', i, v);
    if (v > bestValue) {
      bestValue = v;
      best = i;
    }
  }
  return best;
}

/** log(softmax(logits)) in float64 (-Infinity stays -Infinity). Needs one finite logit. */
export function logSoftmax(logits: ArrayLike<number>): Float64Array {
  checkRow('logSoftmax', logits);
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) {
    const v = logits[i];
    if (!(v < Infinity)) throw nanError('logSoftmax', i, v);
    if (v > max) max = v;
  }
  if (max === -Infinity) throw new RangeError('logSoftmax: every entry of logits is -Infinity');
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i] - max);
  const shift = max + Math.log(sum);
  const out = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) out[i] = logits[i] - shift;
  return out;
}

// -------------------------------------------------------------------------------------------
// Scratch space, shared by every Sampler: sample() is synchronous and never re-entered, so one
// set of buffers (grown to the largest vocabulary seen) serves them all.
//
// Every loop over the vocabulary or a candidate list lives in a small function of its own that
// returns right after the loop. V8 compiles a long-running loop on the fly (OSR) before the code
// after it has ever run; when that code does more than return, the compiled loop deoptimises at
// its exit on every later call. Extra results go through the module-level registers below.

const NBUCKETS = 2048;
const SORT_BELOW = 64; // candidate sets this small are sorted outright
const MAX_LEVELS = 6; // bucket refinements before giving up and sorting
const HEAP_MAX = 128; // top-k / top-N up to this size use a heap
const MASS_SPAN = 64; // top-p buckets cover at most [max - 64, max]; the last one takes the rest (e^-64 a token)

class Workspace {
  capacity = 0;
  logits = new Float32Array(0); // the working (biased, penalised) logits, by token id
  ex = new Float64Array(0); // exp((l - max) / T), by token id
  cand = new Int32Array(0); // candidate token ids
  spare = new Int32Array(0); // a second candidate list
  bucketOf = new Uint16Array(0); // bucket of each candidate (by list position, or by id over the vocabulary)
  counts = new Uint32Array(0); // history counts by token id; all zero between calls
  touched = new Int32Array(0); // distinct ids in the penalty window
  weight = new Float64Array(NBUCKETS + 1); // per bucket: count or mass (+ a slot for -Infinity)

  ensure(n: number): void {
    if (n <= this.capacity) return;
    this.capacity = n;
    this.logits = new Float32Array(n);
    this.ex = new Float64Array(n);
    this.cand = new Int32Array(n);
    this.spare = new Int32Array(n);
    this.bucketOf = new Uint16Array(n);
    this.counts = new Uint32Array(n);
    this.touched = new Int32Array(n);
  }
}

const ws = new Workspace();

// Result registers of the loop functions.
let regMax = 0;
let regMin = 0;
let regBad = -1; // index of a NaN / +Infinity logit, -1 if none
let regAcc = 0;
let regRest = 0;

const byLogitThenId = (L: Float32Array) => (a: number, b: number): number => L[b] - L[a] || a - b;

// ---- loops over the whole vocabulary

/** Argmax (ties to the lowest id) and an online sum of exp(l - max). Sets regMax; returns the token, -1 if none, -2 on a bad logit (regBad). */
function scanGreedy(L: Float32Array, V: number): number {
  let token = -1;
  let max = -Infinity;
  let z = 0;
  for (let i = 0; i < V; i++) {
    const v = L[i];
    if (v > max) {
      if (v === Infinity) {
        regBad = i;
        return -2;
      }
      z = z * expNeg(max - v) + 1;
      max = v;
      token = i;
    } else if (v === v) {
      z += expNeg(v - max);
    } else {
      regBad = i;
      return -2;
    }
  }
  regMax = max;
  regAcc = z;
  return token;
}

/** scanGreedy without the normaliser: the first index of the largest logit, -1 when every logit is
 * -Infinity, -2 on NaN or +Infinity (regBad). */
function scanArgmax(L: Float32Array, V: number): number {
  let token = -1;
  let max = -Infinity;
  for (let i = 0; i < V; i++) {
    const v = L[i];
    if (v > max) {
      if (v === Infinity) {
        regBad = i;
        return -2;
      }
      max = v;
      token = i;
    } else if (v !== v) {
      regBad = i;
      return -2;
    }
  }
  return token;
}

/** Checks every logit; sets regMax, regMin over the finite ones. Returns their count, -1 on a bad logit (regBad). */
function scanMaxMin(L: Float32Array, V: number): number {
  let n = 0;
  let max = -Infinity;
  let min = Infinity;
  for (let i = 0; i < V; i++) {
    const v = L[i];
    if (v === -Infinity) continue;
    if (!(v < Infinity)) {
      regBad = i;
      return -1;
    }
    n++;
    if (v > max) max = v;
    if (v < min) min = v;
  }
  regMax = max;
  regMin = min;
  return n;
}

/** The ids of the finite logits (already checked). */
function collectFinite(L: Float32Array, V: number, cand: Int32Array): number {
  let n = 0;
  for (let i = 0; i < V; i++) if (L[i] !== -Infinity) cand[n++] = i;
  return n;
}

/** Fills heap with the first k finite ids; returns the index to continue from (V: fewer than k), -1 on a bad logit (regBad). Sets regAcc = how many. */
function heapFill(L: Float32Array, V: number, k: number, heap: Int32Array): number {
  let size = 0;
  let i = 0;
  for (; i < V && size < k; i++) {
    const v = L[i];
    if (v === -Infinity) continue;
    if (!(v < Infinity)) {
      regBad = i;
      return -1;
    }
    heap[size++] = i;
  }
  regAcc = size;
  return i;
}

/** Runs ids start..V-1 through the size-k min-heap. Returns 0, or -1 on a bad logit (regBad). */
function heapScan(L: Float32Array, V: number, start: number, k: number, heap: Int32Array): number {
  let rootValue = L[heap[0]];
  for (let i = start; i < V; i++) {
    const v = L[i];
    // Ids come in increasing order, so a tie with the root loses: only a larger logit gets in
    // (NaN and +Infinity also fail the first test; -Infinity never passes it).
    if (v <= rootValue) continue;
    if (!(v < Infinity)) {
      regBad = i;
      return -1;
    }
    heap[0] = i;
    siftDown(L, heap, 0, k);
    rootValue = L[heap[0]];
  }
  return 0;
}

// ---- loops over candidate lists

function minMaxOf(L: Float32Array, src: Int32Array, n: number): void {
  let hi = -Infinity;
  let lo = Infinity;
  for (let j = 0; j < n; j++) {
    const v = L[src[j]];
    if (v > hi) hi = v;
    if (v < lo) lo = v;
  }
  regMax = hi;
  regMin = lo;
}

/** Buckets src[0..n) by (hi - l) * scale into ws.bucketOf / ws.weight (count, or mass from ex). */
function bucketize(L: Float32Array, src: Int32Array, n: number, hi: number, scale: number, mass: boolean): void {
  const { ex, bucketOf, weight } = ws;
  weight.fill(0);
  for (let j = 0; j < n; j++) {
    const id = src[j];
    const t = (hi - L[id]) * scale;
    const b = t < NBUCKETS ? t | 0 : NBUCKETS - 1;
    bucketOf[j] = b;
    weight[b] += mass ? ex[id] : 1;
  }
}

/** Top-p's fused pass: ex[id] = exp(l - max), buckets by mass. Returns the total mass. */
function bucketizeMass(L: Float32Array, src: Int32Array, n: number, max: number, scale: number): number {
  const { ex, bucketOf, weight } = ws;
  weight.fill(0);
  let z = 0;
  for (let j = 0; j < n; j++) {
    const id = src[j];
    const d = max - L[id];
    const e = expNeg(-d);
    ex[id] = e;
    z += e;
    const t = d * scale;
    const b = t < NBUCKETS ? t | 0 : NBUCKETS - 1;
    bucketOf[j] = b;
    weight[b] += e;
  }
  return z;
}

/** The first bucket where the cumulative weight reaches quota (-1 if none); regAcc = the weight before it. */
function findCut(quota: number): number {
  const weight = ws.weight;
  let acc = 0;
  for (let b = 0; b < NBUCKETS; b++) {
    const next = acc + weight[b];
    if (next >= quota) {
      regAcc = acc;
      return b;
    }
    acc = next;
  }
  regAcc = acc;
  return -1;
}

/** Appends the candidates of buckets above `cut` to dst from `out`; compacts the cut bucket to the front of src (regRest = its size). Returns the new end of dst. */
function emitBuckets(src: Int32Array, n: number, cut: number, dst: Int32Array, out: number): number {
  const bucketOf = ws.bucketOf;
  let m = 0;
  for (let j = 0; j < n; j++) {
    // Branch-free: write both ways, advance where it belongs (out <= j and m <= j, so no
    // unread entry of src is overwritten).
    const b = bucketOf[j];
    const id = src[j];
    dst[out] = id;
    out += (b - cut) >>> 31; // b < cut
    src[m] = id;
    m += ((b ^ cut) - 1) >>> 31; // b === cut
  }
  regRest = m;
  return out;
}

/** Top-p's fused pass over the whole vocabulary, by token id: ex[i] = exp(l - max), bucketOf[i], bucket masses; -Infinity goes to the extra bucket NBUCKETS. Returns the total mass. */
function bucketizeMassAll(L: Float32Array, V: number, max: number, scale: number): number {
  const { ex, bucketOf, weight } = ws;
  weight.fill(0);
  let z = 0;
  for (let i = 0; i < V; i++) {
    const v = L[i];
    const d = max - v;
    const e = expNeg(-d);
    ex[i] = e;
    z += e;
    const t = d * scale;
    const b = t < NBUCKETS ? t | 0 : v === -Infinity ? NBUCKETS : NBUCKETS - 1;
    bucketOf[i] = b;
    weight[b] += e;
  }
  return z;
}

/** emitBuckets over the whole vocabulary (bucketOf by token id); the cut bucket goes to rest. */
function emitBucketsAll(V: number, cut: number, dst: Int32Array, rest: Int32Array): number {
  const bucketOf = ws.bucketOf;
  let out = 0;
  let m = 0;
  for (let i = 0; i < V; i++) {
    const b = bucketOf[i];
    dst[out] = i;
    out += (b - cut) >>> 31;
    rest[m] = i;
    m += ((b ^ cut) - 1) >>> 31;
  }
  regRest = m;
  return out;
}

/** ex[i] = exp((l - max) * invT) over the whole vocabulary (0 for -Infinity); returns the sum. */
function softmaxAll(L: Float32Array, V: number, max: number, invT: number): number {
  const ex = ws.ex;
  let z = 0;
  for (let i = 0; i < V; i++) {
    const e = expNeg((L[i] - max) * invT);
    ex[i] = e;
    z += e;
  }
  return z;
}

/** drawIndex over the whole vocabulary. */
function drawAll(V: number, r: number): number {
  const ex = ws.ex;
  let acc = 0;
  for (let i = 0; i < V; i++) {
    acc += ex[i];
    if (acc > r) return i;
  }
  return -1;
}

/** The ids with l >= threshold (threshold > -Infinity), in order. */
function collectAtLeast(L: Float32Array, V: number, threshold: number, cand: Int32Array): number {
  let n = 0;
  for (let i = 0; i < V; i++) if (L[i] >= threshold) cand[n++] = i;
  return n;
}

/** Keeps the candidates with l >= threshold, in order. Returns how many. */
function filterAtLeast(L: Float32Array, cur: Int32Array, n: number, threshold: number): number {
  let m = 0;
  for (let j = 0; j < n; j++) if (L[cur[j]] >= threshold) cur[m++] = cur[j];
  return m;
}

/** ex[id] = exp((l - max) * invT) over the candidates; returns the sum. */
function softmaxWeights(L: Float32Array, cur: Int32Array, n: number, max: number, invT: number): number {
  const ex = ws.ex;
  let z = 0;
  for (let j = 0; j < n; j++) {
    const id = cur[j];
    const e = expNeg((L[id] - max) * invT);
    ex[id] = e;
    z += e;
  }
  return z;
}

function sumWeights(cur: Int32Array, n: number): number {
  const ex = ws.ex;
  let z = 0;
  for (let j = 0; j < n; j++) z += ex[cur[j]];
  return z;
}

/** The first candidate whose cumulative weight exceeds r; -1 if rounding left r beyond the total. */
function drawIndex(cur: Int32Array, n: number, r: number): number {
  const ex = ws.ex;
  let acc = 0;
  for (let j = 0; j < n; j++) {
    acc += ex[cur[j]];
    if (acc > r) return j;
  }
  return -1;
}

/** Length of the shortest prefix of cur whose weight reaches quota (n if none does). */
function prefixReaching(cur: Int32Array, n: number, quota: number): number {
  const ex = ws.ex;
  let acc = 0;
  for (let j = 0; j < n; j++) {
    acc += ex[cur[j]];
    if (acc >= quota) return j + 1;
  }
  return n;
}

// ---- selection

/**
 * Appends to dst (from index `out`) the best of src[0..n) in the order (logit desc, id asc): the
 * first `quota` of them (count mode), or the shortest best-first prefix whose mass ex[id] reaches
 * `quota` (mass mode; all of them when rounding leaves the total short). src is clobbered; the
 * output is grouped best bucket first but not sorted. Returns the new end of dst.
 */
function selectBest(L: Float32Array, src: Int32Array, n: number, dst: Int32Array, out: number, mass: boolean, quota: number): number {
  let sn = n;
  for (let level = 0; sn > SORT_BELOW && level < MAX_LEVELS; level++) {
    minMaxOf(L, src, sn);
    const hi = regMax;
    const span = hi - regMin;
    if (!(span > 0 && span < Infinity)) break;
    bucketize(L, src, sn, hi, NBUCKETS / span, mass);
    const cut = findCut(quota);
    if (cut < 0) {
      dst.set(src.subarray(0, sn), out);
      return out + sn;
    }
    // Buckets above the cut are kept whole; the cut bucket becomes the next candidate set.
    out = emitBuckets(src, sn, cut, dst, out);
    sn = regRest;
    quota -= regAcc;
  }
  const rest = src.subarray(0, sn);
  rest.sort(byLogitThenId(L));
  const take = mass ? prefixReaching(rest, sn, quota) : quota;
  dst.set(rest.subarray(0, take), out);
  return out + take;
}

/**
 * Top-p over src[0..n) (max, lo: their largest and smallest logits): sets ex[id] = exp(l - max)
 * and writes into dst the smallest best-first set with mass >= p of the total. One fused pass
 * computes the weights and the bucket masses; only the bucket where the mass crosses p is refined.
 * Clobbers src. Returns the count written.
 */
function topPSelect(L: Float32Array, src: Int32Array, n: number, dst: Int32Array, p: number, max: number, lo: number): number {
  const span = Math.min(max - lo, MASS_SPAN);
  const z = bucketizeMass(L, src, n, max, span > 0 ? NBUCKETS / span : 0);
  const target = p * z;
  const cut = findCut(target);
  if (cut < 0) {
    dst.set(src.subarray(0, n));
    return n;
  }
  const out = emitBuckets(src, n, cut, dst, 0);
  return selectBest(L, src, regRest, dst, out, true, target - regAcc);
}

/** topPSelect over every finite token (ids, not a list): the result goes to dst; rest is scratch. */
function topPAll(L: Float32Array, V: number, dst: Int32Array, rest: Int32Array, p: number, max: number, lo: number): number {
  const span = Math.min(max - lo, MASS_SPAN);
  const z = bucketizeMassAll(L, V, max, span > 0 ? NBUCKETS / span : 0);
  const target = p * z;
  const cut = findCut(target);
  if (cut < 0) return collectFinite(L, V, dst);
  const out = emitBucketsAll(V, cut, dst, rest);
  return selectBest(L, rest, regRest, dst, out, true, target - regAcc);
}

// A min-heap on "goodness" (logit desc, id asc): the root is the worst kept token.
function worse(L: Float32Array, a: number, b: number): boolean {
  return L[a] < L[b] || (L[a] === L[b] && a > b);
}

function siftDown(L: Float32Array, heap: Int32Array, i: number, size: number): void {
  const x = heap[i];
  for (;;) {
    let c = 2 * i + 1;
    if (c >= size) break;
    if (c + 1 < size && worse(L, heap[c + 1], heap[c])) c++;
    if (!worse(L, heap[c], x)) break;
    heap[i] = heap[c];
    i = c;
  }
  heap[i] = x;
}

function heapify(L: Float32Array, heap: Int32Array, size: number): void {
  for (let i = (size >> 1) - 1; i >= 0; i--) siftDown(L, heap, i, size);
}

/** Turns the heap into a best-first sorted list. */
function heapSort(L: Float32Array, heap: Int32Array, size: number): void {
  for (let end = size - 1; end > 0; end--) {
    const t = heap[0];
    heap[0] = heap[end];
    heap[end] = t;
    siftDown(L, heap, 0, end);
  }
}

/** Runs src[start..n) (any order) through the size-k heap. */
function heapScanList(L: Float32Array, src: Int32Array, start: number, n: number, k: number, heap: Int32Array): void {
  let root = heap[0];
  let rootValue = L[root];
  for (let j = start; j < n; j++) {
    const id = src[j];
    const v = L[id];
    if (v < rootValue || (v === rootValue && id > root)) continue;
    heap[0] = id;
    siftDown(L, heap, 0, k);
    root = heap[0];
    rootValue = L[root];
  }
}

/** Writes into dst[0..k) the best k of src[0..n) (k <= n), sorted by (logit desc, id asc). */
function heapBest(L: Float32Array, src: Int32Array, n: number, k: number, dst: Int32Array): void {
  dst.set(src.subarray(0, k));
  heapify(L, dst, k);
  heapScanList(L, src, k, n, k, dst);
  heapSort(L, dst, k);
}

/**
 * Top-k for small k straight over the vocabulary: writes the best k finite tokens, sorted, into
 * dst and returns how many there were (fewer than k when fewer are finite); -1 on a bad logit.
 */
function heapTopK(L: Float32Array, V: number, k: number, dst: Int32Array): number {
  const next = heapFill(L, V, k, dst);
  if (next < 0) return -1;
  const size = regAcc;
  if (size < k) {
    dst.subarray(0, size).sort(byLogitThenId(L));
    return size;
  }
  heapify(L, dst, k);
  if (heapScan(L, V, next, k, dst) < 0) return -1;
  heapSort(L, dst, k);
  return k;
}

// -------------------------------------------------------------------------------------------
// Sampler

export interface SampleOptions {
  /** Also return the N most likely tokens of the distribution sampled from (0 = none, default). */
  logprobs?: number;
  /**
   * false: the caller does not need `logprob` (it is NaN then), which lets greedy sampling skip the
   * normaliser over the whole vocabulary (~0.2 ms per token for 32k logits). Default true.
   */
  logprob?: boolean;
}

export interface TokenLogprob {
  token: number;
  logprob: number;
}

export interface SampleResult {
  token: number;
  /** Log-probability of token under the distribution it was drawn from (greedy: log-softmax at temperature 1). */
  logprob: number;
  /** With options.logprobs = N: up to N most likely tokens of that distribution, most likely first. */
  top?: TokenLogprob[];
}

/**
 * Samples tokens from rows of logits. The chain, as llama.cpp's common sampler: logit bias ->
 * penalties (repeat, presence, frequency, over the last penaltyLastN tokens of history) -> greedy
 * when temperature is 0 -> top-k -> top-p -> min-p -> temperature -> softmax -> a draw from the
 * seeded generator. The caller's logits are never modified; bias and penalties are applied in
 * float32 (as llama.cpp), the softmax in float64.
 */
export class Sampler {
  readonly options: Readonly<ResolvedSamplingOptions>;
  readonly vocabSize: number;
  readonly rng: Rng;
  private readonly biasIds: Int32Array;
  private readonly biasValues: Float64Array;

  /** `where` prefixes error messages (default 'Sampler'). */
  constructor(options: SamplingOptions, vocabSize: number, where = 'Sampler') {
    const o = validateSamplingOptions(options, where);
    if (typeof vocabSize !== 'number') throw badType(where, 'vocabSize', 'an integer in [1, 2^31)', vocabSize);
    if (!Number.isInteger(vocabSize) || vocabSize < 1 || vocabSize >= 2 ** 31) {
      throw badRange(where, 'vocabSize', 'an integer in [1, 2^31)', vocabSize);
    }
    for (const id of o.logitBias.keys()) {
      if (id >= vocabSize) throw badRange(where, 'a logitBias key', `a token id below vocabSize (${vocabSize})`, id);
    }
    this.options = Object.freeze(o);
    this.vocabSize = vocabSize;
    this.rng = new Rng(o.seed);
    this.biasIds = Int32Array.from(o.logitBias.keys());
    this.biasValues = Float64Array.from(o.logitBias.values());
  }

  /**
   * Samples one token from `logits` (a Float32Array of vocabSize entries; -Infinity bans a token,
   * NaN and +Infinity are a RangeError). `history`: the tokens so far, read by the penalties.
   * The generator advances once per call unless temperature is 0.
   */
  sample(logits: Float32Array, history: ArrayLike<number> = [], opts?: SampleOptions): SampleResult {
    const where = 'sample';
    const V = this.vocabSize;
    if (!(logits instanceof Float32Array)) throw badType(where, 'logits', `a Float32Array of length ${V} (vocabSize)`, logits);
    if (logits.length !== V) throw badRange(where, 'logits', `a Float32Array of length ${V} (vocabSize)`, logits);
    if (history === null || typeof history !== 'object' || typeof history.length !== 'number') {
      throw badType(where, 'history', 'an array or typed array of token ids', history);
    }
    let nTop = 0;
    if (opts !== undefined) {
      if (!isPlainObject(opts)) throw badType(where, 'options', 'a plain object', opts);
      checkKeys(where, 'sample options', opts, ['logprobs', 'logprob']);
      nTop = numberOption(where, opts, 'logprobs', 0, 'an integer >= 0', (v) => Number.isSafeInteger(v) && v >= 0);
      if (opts.logprob !== undefined && typeof opts.logprob !== 'boolean') throw badType(where, 'logprob', 'a boolean', opts.logprob);
    }
    const wantLogprob = opts?.logprob !== false || nTop > 0;
    const o = this.options;

    ws.ensure(V);
    const L = ws.logits;
    L.set(logits);
    const { biasIds, biasValues } = this;
    for (let j = 0; j < biasIds.length; j++) L[biasIds[j]] += biasValues[j];
    this.applyPenalties(L, history);
    // NaN / +Infinity are caught by whichever pass first reads every logit.

    if (o.temperature === 0 && !wantLogprob) {
      const token = scanArgmax(L, V);
      if (token === -2) throw badLogit(where, regBad, logits);
      if (token < 0) throw noTokenLeft(where, V);
      return { token, logprob: NaN };
    }
    if (o.temperature === 0) {
      const token = scanGreedy(L, V);
      if (token === -2) throw badLogit(where, regBad, logits);
      if (token < 0) throw noTokenLeft(where, V);
      const max = regMax;
      const logZ = Math.log(regAcc);
      const result: SampleResult = { token, logprob: 0 - logZ }; // not -logZ: -0 when z is 1
      if (nTop > 0) {
        const n = collectFinite(L, V, ws.cand);
        result.top = topTokens(L, ws.cand, n, false, ws.spare, nTop, max, 1, logZ);
      }
      return result;
    }

    let cur = ws.cand;
    let spare = ws.spare;
    let n: number;
    let max: number;
    let sorted = false; // cur[0..n) in (logit desc, id asc) order
    let haveWeights = false; // ex[id] = exp(l - max) for the candidates
    let all = false; // the candidates are every finite token (not listed in cur)
    const { topK, topP, minP } = o;
    if (topK > 0 && topK <= HEAP_MAX && topK < V) {
      n = heapTopK(L, V, topK, cur);
      if (n < 0) throw badLogit(where, regBad, logits);
      if (n === 0) throw noTokenLeft(where, V);
      max = L[cur[0]];
      sorted = true;
      if (topP < 1 && n > 1) {
        const z = softmaxWeights(L, cur, n, max, 1);
        n = prefixReaching(cur, n, topP * z);
        haveWeights = true;
      }
    } else {
      n = scanMaxMin(L, V);
      if (n < 0) throw badLogit(where, regBad, logits);
      if (n === 0) throw noTokenLeft(where, V);
      max = regMax;
      let lo = regMin;
      all = true;
      if (topK > 0 && topK < n) {
        collectFinite(L, V, spare);
        n = selectBest(L, spare, n, cur, 0, false, topK);
        all = false;
        minMaxOf(L, cur, n);
        lo = regMin;
      }
      if (topP < 1 && n > 1) {
        if (all) {
          n = topPAll(L, V, cur, spare, topP, max, lo);
          all = false;
        } else {
          n = topPSelect(L, cur, n, spare, topP, max, lo);
          [cur, spare] = [spare, cur];
        }
        haveWeights = true;
      }
    }
    if (minP > 0 && n > 1) {
      // p >= minP * pmax  <=>  l >= max + ln(minP)
      const threshold = max + Math.log(minP);
      if (all) n = collectAtLeast(L, V, threshold, cur);
      else n = filterAtLeast(L, cur, n, threshold);
      all = false;
    }

    // Temperature, softmax, draw. The max survives every truncation, so every weight is <= 1 and
    // z >= 1. At temperature 1 after top-p, ex already holds the weights. `all`: the candidates
    // are every finite token, not listed (ex is 0 for the others).
    const invT = 1 / o.temperature;
    const ex = ws.ex;
    const r = this.rng.nextFloat();
    let token: number;
    let z: number;
    if (all) {
      z = softmaxAll(L, V, max, invT);
      token = drawAll(V, r * z);
      if (token < 0) {
        token = V - 1;
        while (token > 0 && !(ex[token] > 0)) token--;
      }
      if (nTop > 0) n = collectFinite(L, V, cur);
    } else {
      z = invT === 1 && haveWeights ? sumWeights(cur, n) : softmaxWeights(L, cur, n, max, invT);
      let j = drawIndex(cur, n, r * z);
      if (j < 0) {
        // The draw rounded past the total: take the last candidate with any weight.
        j = n - 1;
        while (j > 0 && !(ex[cur[j]] > 0)) j--;
      }
      token = cur[j];
    }
    const logZ = Math.log(z);
    const result: SampleResult = { token, logprob: (L[token] - max) * invT - logZ };
    if (nTop > 0) result.top = topTokens(L, cur, n, sorted, spare, nTop, max, invT, logZ);
    return result;
  }

  private applyPenalties(L: Float32Array, history: ArrayLike<number>): void {
    const o = this.options;
    if (o.penaltyLastN === 0 || (o.repeatPenalty === 1 && o.presencePenalty === 0 && o.frequencyPenalty === 0)) return;
    const V = this.vocabSize;
    const len = history.length;
    const start = o.penaltyLastN < 0 ? 0 : Math.max(0, len - o.penaltyLastN);
    const badAt = firstBadToken(history, start, len, V);
    if (badAt >= 0) throw badRange('sample', `history[${badAt}]`, `a token id in [0, ${V})`, history[badAt]);
    const nTouched = countTokens(history, start, len);
    const { counts, touched } = ws;
    const { repeatPenalty, presencePenalty, frequencyPenalty } = o;
    for (let j = 0; j < nTouched; j++) {
      const t = touched[j];
      const c = counts[t];
      counts[t] = 0;
      let l = L[t];
      if (repeatPenalty !== 1) l = l > 0 ? l / repeatPenalty : l * repeatPenalty;
      L[t] = l - (c * frequencyPenalty + presencePenalty);
    }
  }
}

function firstBadToken(history: ArrayLike<number>, start: number, end: number, V: number): number {
  for (let i = start; i < end; i++) {
    const t = history[i];
    if (!Number.isInteger(t) || t < 0 || t >= V) return i;
  }
  return -1;
}

/** Counts history[start..end) into ws.counts; lists the distinct ids in ws.touched. Returns how many. */
function countTokens(history: ArrayLike<number>, start: number, end: number): number {
  const { counts, touched } = ws;
  let n = 0;
  for (let i = start; i < end; i++) {
    const t = history[i];
    if (counts[t]++ === 0) touched[n++] = t;
  }
  return n;
}

function badLogit(where: string, i: number, logits: Float32Array): RangeError {
  const original = logits[i];
  if (!(original < Infinity) && original !== -Infinity) return nanError(where, i, original);
  return new RangeError(
    `${where}: the logit of token ${i} (${original}) became ${describe(ws.logits[i])} after logitBias and penalties; logits must stay finite`,
  );
}

function noTokenLeft(where: string, V: number): RangeError {
  return new RangeError(`${where}: no token left to sample: all ${V} logits are -Infinity after logitBias and penalties`);
}

/** The best min(N, n) candidates, most likely first, with their log-probabilities. Clobbers cur. */
function topTokens(
  L: Float32Array,
  cur: Int32Array,
  n: number,
  sorted: boolean,
  spare: Int32Array,
  N: number,
  max: number,
  invT: number,
  logZ: number,
): TokenLogprob[] {
  const k = Math.min(N, n);
  let ids: Int32Array;
  if (sorted) {
    ids = cur;
  } else if (k <= HEAP_MAX) {
    heapBest(L, cur, n, k, spare);
    ids = spare;
  } else {
    let m = n;
    if (k < n) m = selectBest(L, cur, n, spare, 0, false, k);
    else spare.set(cur.subarray(0, n));
    ids = spare;
    ids.subarray(0, m).sort(byLogitThenId(L));
  }
  const top: TokenLogprob[] = new Array(k);
  for (let j = 0; j < k; j++) {
    const id = ids[j];
    top[j] = { token: id, logprob: (L[id] - max) * invT - logZ };
  }
  return top;
}
