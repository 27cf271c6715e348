// An independent float64 reference of every op, in plain TypeScript (no native code), plus the
// seeded random inputs and comparison helpers the tests share. Written from the op semantics in
// native/include/tessera/ops.h and layouts.h, not from native/ref: it is a second oracle.

// ---------------------------------------------------------------------------------------------
// Random numbers

/** mulberry32: a tiny seeded PRNG returning floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class Rng {
  readonly next: () => number;
  constructor(seed: number) {
    this.next = mulberry32(seed);
  }
  /** Uniform in [lo, hi). */
  uniform(lo = -1, hi = 1): number {
    return lo + (hi - lo) * this.next();
  }
  /** Integer in [lo, hi] (inclusive). */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  /** A shuffled copy. */
  shuffle<T>(xs: readonly T[]): T[] {
    const a = [...xs];
    for (let i = a.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1));
      [a[i], a[j]] = [a[j], a[i]];
    }
    return a;
  }
}

/**
 * A Float32Array of n values uniform in [lo, hi] (default [-1, 1]), never exactly zero: a zero
 * input would hide a kernel that ignores it.
 */
export function randomF32(rng: Rng, n: number, lo = -1, hi = 1): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    let v = 0;
    while (v === 0) v = Math.fround(rng.uniform(lo, hi));
    out[i] = v;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Element types

const f32buf = new Float32Array(1);
const u32buf = new Uint32Array(f32buf.buffer);

/** Round half to even. */
function rne(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/** IEEE binary16 bits -> value (exact, including subnormals, inf and nan). */
export function f16ToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 31) return mant === 0 ? sign * Infinity : NaN;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** Value -> IEEE binary16 bits, round to nearest even (the value is first rounded to float32). */
export function f32ToF16(x: number): number {
  x = Math.fround(x);
  if (Number.isNaN(x)) return 0x7e00;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  if (a === Infinity) return sign | 0x7c00;
  if (a < 2 ** -14) {
    // Subnormal (or zero): units of 2^-24; a result of 1024 is the smallest normal, same bits.
    return sign | rne(a / 2 ** -24);
  }
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;
  if (2 ** (e + 1) <= a) e++;
  let m = rne((a / 2 ** e - 1) * 1024);
  if (m === 1024) {
    m = 0;
    e++;
  }
  if (e + 15 >= 31) return sign | 0x7c00;
  return sign | ((e + 15) << 10) | m;
}

/** bfloat16 bits -> value. */
export function bf16ToF32(h: number): number {
  u32buf[0] = (h & 0xffff) << 16;
  return f32buf[0];
}

/** Value -> bfloat16 bits, round to nearest even. */
export function f32ToBf16(x: number): number {
  f32buf[0] = x;
  const bits = u32buf[0];
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x40) & 0xffff;
  const lower = bits & 0xffff;
  let upper = bits >>> 16;
  if (lower > 0x8000 || (lower === 0x8000 && (upper & 1) === 1)) upper++;
  return upper & 0xffff;
}

export type RefDType = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0';

function bytesOf(storage: ArrayBufferView): Uint8Array {
  return new Uint8Array(storage.buffer, storage.byteOffset, storage.byteLength);
}

/** Decodes n elements stored as `dtype` into float64. */
export function dequantize(storage: ArrayBufferView, dtype: RefDType, n: number): Float64Array {
  const out = new Float64Array(n);
  switch (dtype) {
    case 'f32': {
      const f = new Float32Array(storage.buffer, storage.byteOffset, n);
      for (let i = 0; i < n; i++) out[i] = f[i];
      return out;
    }
    case 'f16':
    case 'bf16': {
      const h = new Uint16Array(storage.buffer, storage.byteOffset, n);
      for (let i = 0; i < n; i++) out[i] = dtype === 'f16' ? f16ToF32(h[i]) : bf16ToF32(h[i]);
      return out;
    }
    case 'q8_0': {
      const b = bytesOf(storage);
      if (n % 32 !== 0) throw new Error('q8_0: n must be a multiple of 32');
      for (let blk = 0; blk < n / 32; blk++) {
        const o = blk * 34;
        const d = f16ToF32(b[o] | (b[o + 1] << 8)); // little-endian f16 scale
        for (let j = 0; j < 32; j++) {
          const q = b[o + 2 + j];
          out[blk * 32 + j] = d * (q >= 128 ? q - 256 : q); // int8
        }
      }
      return out;
    }
    case 'q4_0': {
      const b = bytesOf(storage);
      if (n % 32 !== 0) throw new Error('q4_0: n must be a multiple of 32');
      for (let blk = 0; blk < n / 32; blk++) {
        const o = blk * 18;
        const d = f16ToF32(b[o] | (b[o + 1] << 8));
        for (let j = 0; j < 16; j++) {
          const byte = b[o + 2 + j];
          out[blk * 32 + j] = ((byte & 15) - 8) * d;
          out[blk * 32 + j + 16] = ((byte >> 4) - 8) * d;
        }
      }
      return out;
    }
  }
}

/** C roundf: half away from zero. */
function roundAway(x: number): number {
  return x < 0 ? -Math.floor(-x + 0.5) : Math.floor(x + 0.5);
}

/** ggml's quantize_row_q8_0_ref in float32 arithmetic: n % 32 == 0. */
export function quantizeQ8_0(x: Float32Array): Uint8Array {
  const out = new Uint8Array((x.length / 32) * 34);
  for (let blk = 0; blk < x.length / 32; blk++) {
    let amax = 0;
    for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[blk * 32 + j]));
    const d = Math.fround(amax / 127);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    const h = f32ToF16(d);
    out[blk * 34] = h & 0xff;
    out[blk * 34 + 1] = h >> 8;
    for (let j = 0; j < 32; j++) out[blk * 34 + 2 + j] = roundAway(Math.fround(x[blk * 32 + j] * id)) & 0xff;
  }
  return out;
}

/** ggml's quantize_row_q4_0_ref in float32 arithmetic: n % 32 == 0. */
export function quantizeQ4_0(x: Float32Array): Uint8Array {
  const out = new Uint8Array((x.length / 32) * 18);
  for (let blk = 0; blk < x.length / 32; blk++) {
    let amax = 0;
    let max = 0;
    for (let j = 0; j < 32; j++) {
      const v = x[blk * 32 + j];
      if (amax < Math.abs(v)) {
        amax = Math.abs(v);
        max = v;
      }
    }
    const d = Math.fround(max / -8);
    const id = d !== 0 ? Math.fround(1 / d) : 0;
    const h = f32ToF16(d);
    out[blk * 18] = h & 0xff;
    out[blk * 18 + 1] = h >> 8;
    for (let j = 0; j < 16; j++) {
      const q0 = Math.min(15, Math.trunc(Math.fround(Math.fround(x[blk * 32 + j] * id) + 8.5)));
      const q1 = Math.min(15, Math.trunc(Math.fround(Math.fround(x[blk * 32 + 16 + j] * id) + 8.5)));
      out[blk * 18 + 2 + j] = (q0 | (q1 << 4)) & 0xff;
    }
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Ops

/** y (m, n) = x (m, k) · dequant(w (n, k))ᵀ. */
export function matmulRef(x: ArrayLike<number>, m: number, k: number, w: ArrayBufferView, wDtype: RefDType, n: number): Float64Array {
  const wf = dequantize(w, wDtype, n * k);
  const y = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let acc = 0;
      for (let l = 0; l < k; l++) acc += x[i * k + l] * wf[j * k + l];
      y[i * n + j] = acc;
    }
  }
  return y;
}

/** y = x / sqrt(mean(x²) + eps) * weight, per row of n. */
export function rmsnormRef(x: ArrayLike<number>, weight: ArrayLike<number>, rows: number, n: number, eps: number): Float64Array {
  const y = new Float64Array(rows * n);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let i = 0; i < n; i++) ss += x[r * n + i] ** 2;
    const inv = 1 / Math.sqrt(ss / n + Math.fround(eps));
    for (let i = 0; i < n; i++) y[r * n + i] = x[r * n + i] * inv * weight[i];
  }
  return y;
}

export interface RopeRefOptions {
  nRot: number;
  thetaBase?: number;
  freqScale?: number;
  mode?: 'normal' | 'neox';
}

/** Rotary embedding of x (tokens, heads, headDim); the first nRot dims of each head rotate. */
export function ropeRef(
  x: ArrayLike<number>, positions: ArrayLike<number>, tokens: number, heads: number, headDim: number, opts: RopeRefOptions,
): Float64Array {
  const { nRot, thetaBase = 10000, freqScale = 1, mode = 'normal' } = opts;
  const y = Float64Array.from(x as ArrayLike<number>);
  for (let t = 0; t < tokens; t++) {
    for (let h = 0; h < heads; h++) {
      const base = (t * heads + h) * headDim;
      for (let i = 0; i < nRot / 2; i++) {
        const theta = positions[t] * freqScale * thetaBase ** ((-2 * i) / nRot);
        const c = Math.cos(theta);
        const s = Math.sin(theta);
        const ia = mode === 'neox' ? i : 2 * i;
        const ib = mode === 'neox' ? i + nRot / 2 : 2 * i + 1;
        const a = x[base + ia];
        const b = x[base + ib];
        y[base + ia] = a * c - b * s;
        y[base + ib] = a * s + b * c;
      }
    }
  }
  return y;
}

/** silu(gate) * up. */
export function swigluRef(gate: ArrayLike<number>, up: ArrayLike<number>): Float64Array {
  const y = new Float64Array(gate.length);
  for (let i = 0; i < gate.length; i++) y[i] = (gate[i] / (1 + Math.exp(-gate[i]))) * up[i];
  return y;
}

/** Softmax over rows of n. */
export function softmaxRef(x: ArrayLike<number>, rows: number, n: number): Float64Array {
  const y = new Float64Array(rows * n);
  for (let r = 0; r < rows; r++) {
    let mx = -Infinity;
    for (let i = 0; i < n; i++) mx = Math.max(mx, x[r * n + i]);
    let sum = 0;
    for (let i = 0; i < n; i++) sum += Math.exp(x[r * n + i] - mx);
    for (let i = 0; i < n; i++) y[r * n + i] = Math.exp(x[r * n + i] - mx) / sum;
  }
  return y;
}

/**
 * softmax(scale · q·kⱼ) weighted sum of vⱼ over the visible keys; getK/getV return the D-vector
 * of key j. Zeros when nothing is visible.
 */
function attendOne(
  q: ArrayLike<number>, qOff: number, D: number, scale: number, keys: readonly number[],
  getK: (key: number, d: number) => number, getV: (key: number, d: number) => number, o: Float64Array, oOff: number,
): void {
  if (keys.length === 0) return;
  const s = keys.map((key) => {
    let acc = 0;
    for (let d = 0; d < D; d++) acc += q[qOff + d] * getK(key, d);
    return acc * scale;
  });
  const mx = Math.max(...s);
  const p = s.map((v) => Math.exp(v - mx));
  const sum = p.reduce((a, b) => a + b, 0);
  for (let d = 0; d < D; d++) {
    let acc = 0;
    for (let j = 0; j < keys.length; j++) acc += p[j] * getV(keys[j], d);
    o[oOff + d] = acc / sum;
  }
}

export interface AttnRefShape {
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  scale?: number;
}

/**
 * Causal attention per packed sequence: q (T, Hq, D), k/v (T, Hkv, D), cuSeqlens (B+1,).
 * `causal: false` gives the unmasked (bidirectional) variant, for mutation checks.
 */
export function varlenAttentionRef(
  q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, cuSeqlens: ArrayLike<number>, shape: AttnRefShape,
  opts: { causal?: boolean } = {},
): Float64Array {
  const { nHeads: Hq, nKvHeads: Hkv, headDim: D } = shape;
  const scale = shape.scale ?? 1 / Math.sqrt(D);
  const causal = opts.causal ?? true;
  const T = cuSeqlens[cuSeqlens.length - 1];
  const o = new Float64Array(T * Hq * D);
  const group = Hq / Hkv;
  for (let b = 0; b + 1 < cuSeqlens.length; b++) {
    const begin = cuSeqlens[b];
    const end = cuSeqlens[b + 1];
    for (let t = begin; t < end; t++) {
      const keys: number[] = [];
      for (let j = begin; j < (causal ? t + 1 : end); j++) keys.push(j);
      for (let h = 0; h < Hq; h++) {
        const kh = Math.floor(h / group);
        attendOne(
          q, (t * Hq + h) * D, D, scale, keys,
          (j, d) => k[(j * Hkv + kh) * D + d],
          (j, d) => v[(j * Hkv + kh) * D + d],
          o, (t * Hq + h) * D,
        );
      }
    }
  }
  return o;
}

export interface PageGeometry {
  numPages: number;
  pageSize: number;
  nKvHeads: number;
  headDim: number;
}

export interface PageTableRef {
  indptr: ArrayLike<number>;
  indices: ArrayLike<number>;
  lastPageLen: ArrayLike<number>;
}

/** Tokens of sequence b under the page table. */
export function seqLenRef(table: PageTableRef, pageSize: number, b: number): number {
  const pages = table.indptr[b + 1] - table.indptr[b];
  return pages === 0 ? 0 : (pages - 1) * pageSize + table.lastPageLen[b];
}

/** Element offset of (sequence b, token pos, kv head h) in a (numPages, pageSize, Hkv, D) pool. */
export function pageOffset(table: PageTableRef, g: PageGeometry, b: number, pos: number, h: number): number {
  const page = table.indices[table.indptr[b] + Math.floor(pos / g.pageSize)];
  return ((page * g.pageSize + (pos % g.pageSize)) * g.nKvHeads + h) * g.headDim;
}

/**
 * Paged attention: q (Tq, Hq, D) split by qoIndptr; kPages/vPages decoded values of the pools.
 * Query i of nq in sequence b (length L) is at absolute position L - nq + i. Without a mask it sees
 * [0, L-nq+i]; with one it sees [0, L-nq) plus node j iff mask[maskIndptr[b] + i*nq + j].
 */
export function pagedAttentionRef(
  q: ArrayLike<number>, qoIndptr: ArrayLike<number>, kPages: ArrayLike<number>, vPages: ArrayLike<number>,
  g: PageGeometry, table: PageTableRef, shape: AttnRefShape,
  tree?: { mask: ArrayLike<number>; maskIndptr?: ArrayLike<number> },
): Float64Array {
  const Hq = shape.nHeads;
  const D = g.headDim;
  const scale = shape.scale ?? 1 / Math.sqrt(D);
  const group = Hq / g.nKvHeads;
  const batch = qoIndptr.length - 1;
  const Tq = qoIndptr[batch];
  const o = new Float64Array(Tq * Hq * D);
  let maskIndptr = tree?.maskIndptr;
  if (tree && !maskIndptr) {
    const mi = [0];
    for (let b = 0; b < batch; b++) mi.push(mi[b] + (qoIndptr[b + 1] - qoIndptr[b]) ** 2);
    maskIndptr = mi;
  }
  for (let b = 0; b < batch; b++) {
    const nq = qoIndptr[b + 1] - qoIndptr[b];
    const L = seqLenRef(table, g.pageSize, b);
    const prefix = L - nq;
    for (let i = 0; i < nq; i++) {
      const keys: number[] = [];
      for (let p = 0; p < prefix; p++) keys.push(p);
      for (let j = 0; j < nq; j++) {
        const sees = tree ? tree.mask[maskIndptr![b] + i * nq + j] !== 0 : j <= i;
        if (sees) keys.push(prefix + j);
      }
      const t = qoIndptr[b] + i;
      for (let h = 0; h < Hq; h++) {
        const kh = Math.floor(h / group);
        attendOne(
          q, (t * Hq + h) * D, D, scale, keys,
          (p, d) => kPages[pageOffset(table, g, b, p, kh) + d],
          (p, d) => vPages[pageOffset(table, g, b, p, kh) + d],
          o, (t * Hq + h) * D,
        );
      }
    }
  }
  return o;
}

/** Writes k/v (T, Hkv, D) into decoded page arrays at (batchIndices[t], positions[t]). */
export function kvAppendRef(
  k: ArrayLike<number>, v: ArrayLike<number>, kPages: Float64Array | Float32Array, vPages: Float64Array | Float32Array,
  g: PageGeometry, table: PageTableRef, batchIndices: ArrayLike<number>, positions: ArrayLike<number>,
): void {
  for (let t = 0; t < batchIndices.length; t++) {
    for (let h = 0; h < g.nKvHeads; h++) {
      const off = pageOffset(table, g, batchIndices[t], positions[t], h);
      for (let d = 0; d < g.headDim; d++) {
        kPages[off + d] = k[(t * g.nKvHeads + h) * g.headDim + d];
        vPages[off + d] = v[(t * g.nKvHeads + h) * g.headDim + d];
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Comparison

export interface CloseReport {
  ok: boolean;
  maxErr: number;
  worst: number;
  message: string;
}

/**
 * Element-wise |actual - expected| <= rtol * (|expected| + max|expected|): a relative tolerance
 * that does not blow up on outputs near zero (cancellation in long dot products).
 */
export function compareClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rtol = 1e-4): CloseReport {
  if (actual.length !== expected.length) {
    return { ok: false, maxErr: Infinity, worst: -1, message: `length ${actual.length} != expected ${expected.length}` };
  }
  let scale = 0;
  for (let i = 0; i < expected.length; i++) scale = Math.max(scale, Math.abs(expected[i]));
  let maxErr = 0;
  let worst = -1;
  for (let i = 0; i < expected.length; i++) {
    const err = Math.abs(actual[i] - expected[i]) / (Math.abs(expected[i]) + scale + 1e-30);
    if (!(err <= maxErr)) {
      maxErr = Number.isNaN(err) ? Infinity : err;
      worst = i;
      if (maxErr === Infinity) break;
    }
  }
  const ok = maxErr <= rtol;
  const message = ok
    ? `max relative error ${maxErr.toExponential(2)}`
    : `max relative error ${maxErr.toExponential(2)} > ${rtol} at [${worst}]: got ${actual[worst]}, expected ${expected[worst]}` +
      ` (scale ${scale.toExponential(2)}, ${expected.length} elements)`;
  return { ok, maxErr, worst, message };
}

/** Throws with a readable message unless actual ≈ expected (see compareClose). */
export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, rtol = 1e-4, label = ''): void {
  const r = compareClose(actual, expected, rtol);
  if (!r.ok) throw new Error(`${label ? label + ': ' : ''}${r.message}`);
}
