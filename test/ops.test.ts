// Every op of `ops` against the independent TypeScript float64 reference (test/reference.ts), on
// seeded random inputs, under every instruction set this CPU supports and several thread counts;
// plus a few cross-checks against ops.reference (the native float64 oracle) and mutation checks
// showing the comparisons catch a dropped causal mask or an off-by-one page table.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Tensor, backends, ops } from '../dist/index.js';
// The sweeps use the types with blocks of 32 (rows of any multiple of 32); k-quants (blocks of 256)
// have their own convert test below, and the native test checks their decoding against ggml.
const WEIGHT_DTYPES = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0'] as const;
type WeightDType = (typeof WEIGHT_DTYPES)[number];
import * as R from './reference';

const RTOL = 1e-4;

type PageDType = 'f32' | 'f16';

const f32 = (t: Tensor): Float32Array => t.data as Float32Array;

function expectClose(actual: ArrayLike<number>, expected: ArrayLike<number>, label: string, rtol = RTOL): void {
  const r = R.compareClose(actual, expected, rtol);
  expect(r.ok, `${label}: ${r.message}`).toBe(true);
}

function expectNotClose(actual: ArrayLike<number>, expected: ArrayLike<number>, label: string, rtol = RTOL): void {
  const r = R.compareClose(actual, expected, rtol);
  // Far outside the tolerance, not just barely: the mutation must be unmistakable.
  expect(r.maxErr, `${label}: a mutated input should not match the reference (${r.message})`).toBeGreaterThan(100 * rtol);
}

const range = (n: number) => Array.from({ length: n }, (_, i) => i);

// -------------------------------------------------------------------------------------------
// Case builders

function makeWeight(rng: R.Rng, n: number, k: number, dtype: WeightDType): Tensor {
  const w = Tensor.from(R.randomF32(rng, n * k), [n, k]);
  return dtype === 'f32' ? w : ops.convert(w, dtype);
}

function checkMatmul(rng: R.Rng, xShape: number[], n: number, dtype: WeightDType, o: typeof ops = ops): Float32Array {
  const k = xShape[xShape.length - 1];
  const m = xShape.slice(0, -1).reduce((a, b) => a * b, 1);
  const x = Tensor.from(R.randomF32(rng, m * k), xShape);
  const w = makeWeight(rng, n, k, dtype);
  const y = o.matmul(x, w);
  expect(y.dtype).toBe('f32');
  expect(y.shape).toEqual([...xShape.slice(0, -1), n]);
  const ref = R.matmulRef(f32(x), m, k, w.data, dtype, n);
  expectClose(f32(y), ref, `matmul ${dtype} x[${xShape}] n=${n}`);
  return f32(y);
}

function checkRmsnorm(rng: R.Rng, shape: number[], eps: number): Float32Array {
  const n = shape[shape.length - 1];
  const rows = shape.slice(0, -1).reduce((a, b) => a * b, 1);
  const x = Tensor.from(R.randomF32(rng, rows * n, -3, 3), shape);
  const w = Tensor.from(R.randomF32(rng, n, -2, 2), [n]);
  const y = ops.rmsnorm(x, w, eps);
  expect(y.shape).toEqual(shape);
  expectClose(f32(y), R.rmsnormRef(f32(x), f32(w), rows, n, eps), `rmsnorm [${shape}] eps=${eps}`);
  return f32(y);
}

function checkRope(
  rng: R.Rng, tokens: number, heads: number, headDim: number, opts: R.RopeRefOptions, maxPos = 4096,
): Float32Array {
  const x = Tensor.from(R.randomF32(rng, tokens * heads * headDim), [tokens, heads, headDim]);
  const before = Float32Array.from(f32(x));
  const positions = Int32Array.from(range(tokens), (i) => (i === 0 ? 0 : rng.int(0, maxPos)));
  const y = ops.rope(x, positions, opts);
  expect(y.shape).toEqual([tokens, heads, headDim]);
  expect(f32(x)).toEqual(before); // returns a new tensor, x untouched
  const label = `rope ${opts.mode ?? 'normal'} T=${tokens} H=${heads} D=${headDim} nRot=${opts.nRot}`;
  expectClose(f32(y), R.ropeRef(f32(x), positions, tokens, heads, headDim, opts), label);
  // Dimensions past nRot pass through untouched, bit for bit.
  for (let t = 0; t < tokens; t++) {
    for (let h = 0; h < heads; h++) {
      const base = (t * heads + h) * headDim;
      for (let d = opts.nRot; d < headDim; d++) {
        if (f32(y)[base + d] !== before[base + d]) expect.fail(`${label}: dim ${d} >= nRot changed`);
      }
    }
  }
  return f32(y);
}

function checkSwiglu(rng: R.Rng, shape: number[]): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const g = Tensor.from(R.randomF32(rng, n, -6, 6), shape);
  const u = Tensor.from(R.randomF32(rng, n, -2, 2), shape);
  const y = ops.swiglu(g, u);
  expect(y.shape).toEqual(shape);
  expectClose(f32(y), R.swigluRef(f32(g), f32(u)), `swiglu [${shape}]`);
  return f32(y);
}

function checkSoftmax(rng: R.Rng, shape: number[], amplitude: number): Float32Array {
  const n = shape[shape.length - 1];
  const rows = shape.slice(0, -1).reduce((a, b) => a * b, 1);
  const x = Tensor.from(R.randomF32(rng, rows * n, -amplitude, amplitude), shape);
  const y = ops.softmax(x);
  expect(y.shape).toEqual(shape);
  const ref = R.softmaxRef(f32(x), rows, n);
  expectClose(f32(y), ref, `softmax [${shape}] amplitude ${amplitude}`);
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += f32(y)[r * n + i];
    expect(Math.abs(s - 1)).toBeLessThan(1e-5);
  }
  return f32(y);
}

interface VarlenCase {
  q: Tensor;
  k: Tensor;
  v: Tensor;
  cu: Int32Array;
  shape: R.AttnRefShape;
}

function makeVarlen(rng: R.Rng, lens: number[], nHeads: number, nKvHeads: number, headDim: number): VarlenCase {
  const cu = new Int32Array(lens.length + 1);
  lens.forEach((l, i) => (cu[i + 1] = cu[i] + l));
  const T = cu[lens.length];
  return {
    q: Tensor.from(R.randomF32(rng, T * nHeads * headDim, -2, 2), [T, nHeads, headDim]),
    k: Tensor.from(R.randomF32(rng, T * nKvHeads * headDim, -2, 2), [T, nKvHeads, headDim]),
    v: Tensor.from(R.randomF32(rng, T * nKvHeads * headDim), [T, nKvHeads, headDim]),
    cu,
    shape: { nHeads, nKvHeads, headDim },
  };
}

/** Runs varlenAttention and compares it with the reference; returns the output. */
function checkVarlen(c: VarlenCase, label: string, scale?: number): Float32Array {
  const o = ops.varlenAttention(c.q, c.k, c.v, c.cu, scale === undefined ? {} : { scale });
  expect(o.shape).toEqual(c.q.shape);
  const ref = R.varlenAttentionRef(f32(c.q), f32(c.k), f32(c.v), c.cu, { ...c.shape, scale });
  expectClose(f32(o), ref, label);
  // The first token of every sequence sees only its own key: its output is exactly its v row.
  const { nHeads: Hq, nKvHeads: Hkv, headDim: D } = c.shape;
  for (let b = 0; b + 1 < c.cu.length; b++) {
    if (c.cu[b + 1] === c.cu[b]) continue;
    const t = c.cu[b];
    for (let h = 0; h < Hq; h++) {
      const kh = Math.floor(h / (Hq / Hkv));
      const got = f32(o).subarray((t * Hq + h) * D, (t * Hq + h + 1) * D);
      const want = f32(c.v).subarray((t * Hkv + kh) * D, (t * Hkv + kh + 1) * D);
      if (!got.every((x, d) => x === want[d])) {
        expect.fail(`${label}: token 0 of sequence ${b}, head ${h} must equal v exactly (kv head ${kh})`);
      }
    }
  }
  return f32(o);
}

interface PagedCase {
  q: Tensor;
  qo: Int32Array;
  pool: { kPages: Tensor; vPages: Tensor };
  table: { indptr: Int32Array; indices: Int32Array; lastPageLen: Int32Array };
  g: R.PageGeometry;
  shape: R.AttnRefShape;
  mask?: Uint8Array;
  seqLens: number[];
  nqs: number[];
  /** The K/V written by kvAppend, (T, Hkv, D), with the sequence and position of each row. */
  k: Tensor;
  v: Tensor;
  batchIndices: Int32Array;
  positions: Int32Array;
  /** Pool contents before the append (decoded). */
  kBefore: Float64Array;
  vBefore: Float64Array;
}

interface PagedSpec {
  seqLens: number[];
  nqs: number[];
  pageSize: number;
  nHeads: number;
  nKvHeads: number;
  headDim: number;
  dtype: PageDType;
  tree?: boolean;
  extraPages?: number;
}

function decodePages(t: Tensor): Float64Array {
  return R.dequantize(t.data, t.dtype as PageDType, t.size);
}

/** Builds a shuffled page pool full of loud garbage, appends every sequence's K/V with ops.kvAppend. */
function makePaged(rng: R.Rng, s: PagedSpec): PagedCase {
  const { pageSize: ps, nKvHeads: Hkv, headDim: D } = s;
  const pagesPer = s.seqLens.map((L) => Math.ceil(L / ps));
  const numPages = pagesPer.reduce((a, b) => a + b, 0) + (s.extraPages ?? 2);
  const ids = rng.shuffle(range(numPages));
  const indptr = new Int32Array(s.seqLens.length + 1);
  pagesPer.forEach((p, b) => (indptr[b + 1] = indptr[b] + p));
  const indices = Int32Array.from(ids.slice(0, indptr[s.seqLens.length]));
  // An empty sequence's lastPageLen is ignored: 0 there checks nobody reads it.
  const lastPageLen = Int32Array.from(s.seqLens, (L, b) => (pagesPer[b] === 0 ? 0 : L - (pagesPer[b] - 1) * ps));
  const g: R.PageGeometry = { numPages, pageSize: ps, nKvHeads: Hkv, headDim: D };

  // Garbage of large magnitude in every slot, so reading a wrong slot changes the result a lot.
  const poolShape = [numPages, ps, Hkv, D];
  const garbage = () => Tensor.from(R.randomF32(rng, numPages * ps * Hkv * D, -6, 6), poolShape);
  const kPages = s.dtype === 'f32' ? garbage() : ops.convert(garbage(), 'f16');
  const vPages = s.dtype === 'f32' ? garbage() : ops.convert(garbage(), 'f16');
  const kBefore = decodePages(kPages);
  const vBefore = decodePages(vPages);

  // Every token of every sequence, appended in shuffled order.
  const rows = rng.shuffle(s.seqLens.flatMap((L, b) => range(L).map((p) => [b, p] as const)));
  const T = rows.length;
  const k = Tensor.from(R.randomF32(rng, T * Hkv * D, -2, 2), [T, Hkv, D]);
  const v = Tensor.from(R.randomF32(rng, T * Hkv * D), [T, Hkv, D]);
  const batchIndices = Int32Array.from(rows, (r) => r[0]);
  const positions = Int32Array.from(rows, (r) => r[1]);
  const table = { indptr, indices, lastPageLen };
  ops.kvAppend(k, v, { kPages, vPages }, table, batchIndices, positions);

  const qo = new Int32Array(s.nqs.length + 1);
  s.nqs.forEach((n, b) => (qo[b + 1] = qo[b] + n));
  const Tq = qo[s.nqs.length];
  const q = Tensor.from(R.randomF32(rng, Tq * s.nHeads * D, -2, 2), [Tq, s.nHeads, D]);

  let mask: Uint8Array | undefined;
  if (s.tree) {
    const parts: number[] = [];
    for (const nq of s.nqs) {
      for (let i = 0; i < nq; i++) for (let j = 0; j < nq; j++) parts.push(i === j ? 1 : rng.next() < 0.5 ? 1 : 0);
    }
    mask = Uint8Array.from(parts);
  }
  return {
    q, qo, pool: { kPages, vPages }, table, g, shape: { nHeads: s.nHeads, nKvHeads: Hkv, headDim: D }, mask,
    seqLens: s.seqLens, nqs: s.nqs, k, v, batchIndices, positions, kBefore, vBefore,
  };
}

/** The f16 rounding kvAppend applies to f16 pages. */
function roundTo(dtype: PageDType, x: number): number {
  return dtype === 'f16' ? R.f16ToF32(R.f32ToF16(x)) : x;
}

/** The pool after kvAppend must be the garbage with exactly the appended rows replaced. */
function checkAppended(c: PagedCase, label: string): void {
  const dtype = c.pool.kPages.dtype as PageDType;
  const kWant = Float64Array.from(c.kBefore);
  const vWant = Float64Array.from(c.vBefore);
  const kSrc = Float64Array.from(f32(c.k), (x) => roundTo(dtype, x));
  const vSrc = Float64Array.from(f32(c.v), (x) => roundTo(dtype, x));
  R.kvAppendRef(kSrc, vSrc, kWant, vWant, c.g, c.table, c.batchIndices, c.positions);
  const kGot = decodePages(c.pool.kPages);
  const vGot = decodePages(c.pool.vPages);
  for (let i = 0; i < kWant.length; i++) {
    if (kGot[i] !== kWant[i] || vGot[i] !== vWant[i]) {
      expect.fail(`${label}: page element ${i}: got k=${kGot[i]} v=${vGot[i]}, expected k=${kWant[i]} v=${vWant[i]}`);
    }
  }
}

function runPaged(c: PagedCase, table = c.table, useMask = true, o: typeof ops = ops): Float32Array {
  const opts = useMask && c.mask ? { mask: c.mask } : {};
  const out = o.pagedAttention(c.q, c.qo, c.pool, table, opts);
  expect(out.shape).toEqual(c.q.shape);
  return f32(out);
}

function pagedRef(c: PagedCase, table: R.PageTableRef = c.table, useMask = true): Float64Array {
  return R.pagedAttentionRef(
    f32(c.q), c.qo, decodePages(c.pool.kPages), decodePages(c.pool.vPages), c.g, table, c.shape,
    useMask && c.mask ? { mask: c.mask } : undefined,
  );
}

function checkPaged(c: PagedCase, label: string): Float32Array {
  checkAppended(c, label);
  const out = runPaged(c);
  expectClose(out, pagedRef(c), label);
  return out;
}

// -------------------------------------------------------------------------------------------
// A compact run of every op, used per ISA and per thread count.

function compactSuite(seed: number): Float32Array[] {
  const rng = new R.Rng(seed);
  const outs: Float32Array[] = [];
  for (const dtype of WEIGHT_DTYPES) {
    outs.push(checkMatmul(rng, [1, 64], 19, dtype)); // gemv path
    outs.push(checkMatmul(rng, [2, 5, 96], 37, dtype)); // tiled path, leading batch dims
  }
  outs.push(checkRmsnorm(rng, [3, 67], 1e-5));
  outs.push(checkRope(rng, 5, 3, 64, { nRot: 32, mode: 'normal' }));
  outs.push(checkRope(rng, 5, 3, 64, { nRot: 48, mode: 'neox', thetaBase: 500000, freqScale: 0.25 }));
  outs.push(checkSwiglu(rng, [3, 71]));
  outs.push(checkSoftmax(rng, [4, 45], 8));
  outs.push(checkVarlen(makeVarlen(rng, [0, 1, 9, 4], 8, 2, 64), 'varlen compact'));
  outs.push(checkVarlen(makeVarlen(rng, [7, 3], 4, 4, 37), 'varlen compact odd D'));
  for (const dtype of ['f32', 'f16'] as const) {
    const c = makePaged(rng, {
      seqLens: [9, 0, 4, 1], nqs: [3, 0, 4, 1], pageSize: 3, nHeads: 4, nKvHeads: 2, headDim: 64, dtype, tree: false,
    });
    outs.push(checkPaged(c, `paged compact ${dtype}`));
    const t = makePaged(rng, {
      seqLens: [11, 5], nqs: [4, 2], pageSize: 4, nHeads: 8, nKvHeads: 1, headDim: 32, dtype, tree: true,
    });
    outs.push(checkPaged(t, `paged compact tree ${dtype}`));
    outs.push(decodePages(t.pool.kPages) as unknown as Float32Array);
  }
  for (const dtype of WEIGHT_DTYPES) {
    const x = Tensor.from(R.randomF32(rng, 3 * 64), [3, 64]);
    const y = ops.convert(x, dtype);
    outs.push(f32(ops.convert(y, 'f32')));
  }
  return outs;
}

// -------------------------------------------------------------------------------------------

const cpu = backends()[0];
const ISAS = cpu.isas ?? [];
const BEST_ISA = ISAS[ISAS.length - 1];

describe('reference.ts self-checks', () => {
  it('decodes and encodes f16 exactly', () => {
    expect(R.f16ToF32(0x3c00)).toBe(1);
    expect(R.f16ToF32(0xc000)).toBe(-2);
    expect(R.f16ToF32(0x0001)).toBe(2 ** -24);
    expect(R.f16ToF32(0x7bff)).toBe(65504);
    expect(R.f16ToF32(0x7c00)).toBe(Infinity);
    expect(R.f16ToF32(0x7e00)).toBeNaN();
    for (let h = 0; h < 0x7c00; h++) {
      if (R.f32ToF16(R.f16ToF32(h)) !== h || R.f32ToF16(-R.f16ToF32(h)) !== (h | 0x8000)) expect.fail(`f16 round trip of ${h}`);
    }
    expect(R.f32ToF16(1 + 2 ** -11)).toBe(0x3c00); // tie: to even
    expect(R.f32ToF16(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie: to even (up)
    expect(R.f32ToF16(65520)).toBe(0x7c00);
    expect(R.bf16ToF32(0x3f80)).toBe(1);
    expect(R.f32ToBf16(1)).toBe(0x3f80);
  });

  it('has a deterministic RNG and never-zero inputs', () => {
    const a = R.randomF32(new R.Rng(7), 1000);
    expect(a).toEqual(R.randomF32(new R.Rng(7), 1000));
    expect(a.every((x) => x !== 0 && x >= -1 && x <= 1)).toBe(true);
    expect(new Set(a).size).toBeGreaterThan(990);
  });
});

describe('convert', () => {
  const rng = new R.Rng(11);

  it('f32 -> f16/bf16 rounds to nearest even, and back is exact', () => {
    const x = R.randomF32(rng, 4 * 96, -70000, 70000);
    x.set([1e-8, -1e-7, 6e-5, 65519, 65520, -1 - 2 ** -11, 3.14159], 0);
    const t = Tensor.from(x, [4, 96]);
    const h = ops.convert(t, 'f16');
    const b = ops.convert(t, 'bf16');
    expect(h.dtype).toBe('f16');
    expect(h.shape).toEqual([4, 96]);
    expect(h.data).toBeInstanceOf(Uint16Array);
    expect(Array.from(h.data)).toEqual(Array.from(x, R.f32ToF16));
    expect(Array.from(b.data)).toEqual(Array.from(x, R.f32ToBf16));
    expect(Array.from(f32(ops.convert(h, 'f32')))).toEqual(Array.from(h.data as Uint16Array, R.f16ToF32));
    expect(Array.from(f32(ops.convert(b, 'f32')))).toEqual(Array.from(b.data as Uint16Array, R.bf16ToF32));
  });

  it.each(['q8_0', 'q4_0'] as const)('f32 -> %s matches ggml quantisers bit for bit; dequantisation is exact', (dtype) => {
    const x = R.randomF32(rng, 6 * 64, -3, 3);
    x.fill(0.25, 0, 32); // a constant block
    const t = Tensor.from(x, [6, 64]);
    const q = ops.convert(t, dtype);
    expect(q.dtype).toBe(dtype);
    expect(q.byteLength).toBe(6 * 2 * (dtype === 'q8_0' ? 34 : 18));
    const want = dtype === 'q8_0' ? R.quantizeQ8_0(x) : R.quantizeQ4_0(x);
    expect(Array.from(q.data)).toEqual(Array.from(want));
    const back = f32(ops.convert(q, 'f32'));
    expect(Array.from(back)).toEqual(Array.from(R.dequantize(q.data, dtype, x.length)));
    // Quantisation error bounded by half a step (q8_0) or one step (q4_0) of each block's scale.
    for (let blk = 0; blk < x.length / 32; blk++) {
      let amax = 0;
      for (let j = 0; j < 32; j++) amax = Math.max(amax, Math.abs(x[blk * 32 + j]));
      const step = dtype === 'q8_0' ? amax / 127 : amax / 8;
      for (let j = 0; j < 32; j++) expect(Math.abs(back[blk * 32 + j] - x[blk * 32 + j])).toBeLessThanOrEqual(step * 1.01);
    }
  });

  it.each(['q4_k', 'q6_k'] as const)('f32 -> %s: same bytes as the reference, error within half a step', (dtype) => {
    const x = R.randomF32(rng, 4 * 256, -2, 2);
    x.fill(0.5, 0, 256); // a constant super-block
    for (let i = 512; i < 768; i++) x[i] = -Math.abs(x[i]); // all negative: q4_k needs mins
    const t = Tensor.from(x, [4, 256]);
    const q = ops.convert(t, dtype);
    expect(q.byteLength).toBe(4 * (dtype === 'q4_k' ? 144 : 210));
    expect(Array.from(q.data)).toEqual(Array.from(ops.reference.convert(t, dtype).data));
    const back = f32(ops.convert(q, 'f32'));
    // (decoding itself is checked against ggml's decoder in the native test)
    expect(Array.from(back)).toEqual(Array.from(f32(ops.reference.convert(q, 'f32'))));
    // Steps: q4_k (max - min) / 15 per sub-block of 32, q6_k max|x| / 31 per 16; scales are rounded
    // up to whole multiples of the super-block scale, so allow a few percent on top of half a step.
    const group = dtype === 'q4_k' ? 32 : 16;
    for (let g = 0; g < x.length / group; g++) {
      const v = Array.from(x.subarray(g * group, (g + 1) * group));
      const lo = Math.min(...v, 0), hi = Math.max(...v);
      const step = dtype === 'q4_k' ? (hi - lo) / 15 : Math.max(...v.map(Math.abs)) / 31;
      for (let j = 0; j < group; j++) {
        const err = Math.abs(back[g * group + j] - x[g * group + j]);
        expect(err, `${dtype} element ${g * group + j}`).toBeLessThanOrEqual(0.5 * step * 1.2 + 1e-3 * step + 1e-7);
      }
    }
  });

  it('f32 -> f32 is a copy', () => {
    const x = Tensor.from(R.randomF32(rng, 40), [5, 8]);
    const y = ops.convert(x, 'f32');
    expect(y.data).not.toBe(x.data);
    expect(y.data).toEqual(x.data);
  });
});

describe('matmul', () => {
  const rng = new R.Rng(1);
  const shapes: [number[], number][] = [
    [[1, 32], 1],
    [[64], 17], // 1-D x
    [[2, 64], 16],
    [[3, 96], 33],
    [[4, 32], 5],
    [[2, 3, 64], 17], // leading batch dims
    [[2, 2, 5, 32], 3],
    [[70, 64], 20], // more rows than one x block
    [[5, 256], 40],
  ];
  for (const dtype of WEIGHT_DTYPES) {
    it.each(shapes)(`${dtype} weights: x %j, n = %i`, (xShape, n) => {
      checkMatmul(rng, xShape, n, dtype);
    });
  }

  it('zero rows gives an empty output', () => {
    const y = ops.matmul(Tensor.zeros([0, 32]), makeWeight(rng, 4, 32, 'q8_0'));
    expect(y.shape).toEqual([0, 4]);
  });
});

describe('rmsnorm', () => {
  const rng = new R.Rng(2);
  it.each([
    [[1, 1], 1e-5],
    [[3, 17], 1e-5],
    [[2, 3, 64], 1e-6],
    [[5, 128], 1e-2],
    [[2, 4096], 1e-5],
    [[40], 1e-5],
  ] as [number[], number][])('x %j, eps %f', (shape, eps) => {
    checkRmsnorm(rng, shape, eps);
  });

  it('uses eps', () => {
    const x = Tensor.from(Float32Array.from([0.01, -0.02, 0.03, 0.005]), [1, 4]);
    const w = Tensor.from(Float32Array.from([1, 1, 1, 1]), [4]);
    const a = f32(ops.rmsnorm(x, w, 1e-6));
    const b = f32(ops.rmsnorm(x, w, 1e-2));
    expectClose(b, R.rmsnormRef(f32(x), f32(w), 1, 4, 1e-2), 'rmsnorm eps 1e-2');
    expectNotClose(b, a, 'rmsnorm eps ignored');
  });
});

describe('rope', () => {
  const rng = new R.Rng(3);
  const cases: [number, number, number, number][] = [
    // tokens, heads, headDim, nRot
    [1, 1, 2, 2],
    [4, 2, 64, 64],
    [6, 3, 64, 32],
    [3, 2, 128, 128],
    [5, 2, 128, 64],
    [3, 4, 80, 20],
    [2, 3, 96, 2],
  ];
  for (const mode of ['normal', 'neox'] as const) {
    it.each(cases)(`${mode}: tokens %i, heads %i, headDim %i, nRot %i`, (tokens, heads, headDim, nRot) => {
      checkRope(rng, tokens, heads, headDim, { nRot, mode });
    });
    it(`${mode}: thetaBase and freqScale`, () => {
      checkRope(rng, 5, 2, 64, { nRot: 48, mode, thetaBase: 1e6, freqScale: 0.125 });
      checkRope(rng, 5, 2, 64, { nRot: 64, mode, thetaBase: 500, freqScale: 2 });
    });
  }

  it('large positions (up to 1e6) keep full precision', () => {
    for (const mode of ['normal', 'neox'] as const) checkRope(rng, 8, 2, 64, { nRot: 64, mode }, 1_000_000);
  });

  it('the two modes differ, and position 0 is the identity', () => {
    const x = Tensor.from(R.randomF32(rng, 2 * 1 * 16), [2, 1, 16]);
    const a = f32(ops.rope(x, [0, 5], { mode: 'normal' }));
    const b = f32(ops.rope(x, [0, 5], { mode: 'neox' }));
    expect(Array.from(a.subarray(0, 16))).toEqual(Array.from(f32(x).subarray(0, 16)));
    expectNotClose(a.subarray(16), b.subarray(16), 'rope modes');
  });

  it('default nRot is headDim', () => {
    const x = Tensor.from(R.randomF32(rng, 3 * 2 * 32), [3, 2, 32]);
    const pos = [1, 7, 300];
    expectClose(f32(ops.rope(x, pos)), R.ropeRef(f32(x), pos, 3, 2, 32, { nRot: 32 }), 'rope defaults');
  });
});

describe('swiglu', () => {
  const rng = new R.Rng(4);
  it.each([[[1]], [[7]], [[3, 65]], [[2, 2, 1024]]] as [number[]][])('shape %j', (shape) => {
    checkSwiglu(rng, shape);
  });
});

describe('softmax', () => {
  const rng = new R.Rng(5);
  it.each([
    [[1, 1], 1],
    [[3, 7], 1],
    [[4, 33], 10],
    [[2, 3, 100], 60], // large logits: must subtract the max
    [[1, 5000], 5],
  ] as [number[], number][])('shape %j, logits in ±%i', (shape, amp) => {
    checkSoftmax(rng, shape, amp);
  });
});

describe('varlenAttention', () => {
  const rng = new R.Rng(6);
  const gqa: [number, number][] = [
    [4, 4],
    [4, 2],
    [8, 2],
    [8, 1],
  ];
  for (const headDim of [64, 128, 37]) {
    for (const [hq, hkv] of gqa) {
      it(`D=${headDim}, Hq=${hq}, Hkv=${hkv} (GQA ${hq / hkv})`, () => {
        checkVarlen(makeVarlen(rng, [0, 1, 13, 0, 6], hq, hkv, headDim), `varlen D=${headDim} ${hq}/${hkv}`);
      });
    }
  }

  it('single long sequence, custom scale', () => {
    checkVarlen(makeVarlen(rng, [67], 2, 1, 64), 'varlen long', 0.3);
  });

  it('only empty sequences', () => {
    const c = makeVarlen(rng, [0, 0], 2, 1, 16);
    expect(c.q.shape).toEqual([0, 2, 16]);
    expect(ops.varlenAttention(c.q, c.k, c.v, c.cu).shape).toEqual([0, 2, 16]);
  });

  it('mutation: the causal mask and the sequence boundaries matter', () => {
    const c = makeVarlen(rng, [5, 9], 4, 2, 32);
    const o = checkVarlen(c, 'varlen mutation');
    // Dropping the causal mask changes every token but the last of each sequence.
    const bidir = R.varlenAttentionRef(f32(c.q), f32(c.k), f32(c.v), c.cu, { ...c.shape }, { causal: false });
    expectNotClose(o, bidir, 'non-causal reference');
    // Merging the sequences (ignoring cuSeqlens) changes the second one.
    const merged = R.varlenAttentionRef(f32(c.q), f32(c.k), f32(c.v), [0, 14], { ...c.shape });
    expectNotClose(o, merged, 'merged sequences');
    // Reading the wrong KV head for GQA changes the result.
    const swapped = R.varlenAttentionRef(f32(c.q), f32(c.k), f32(c.v), c.cu, { ...c.shape, nKvHeads: 4, nHeads: 4 });
    expect(R.compareClose(o, swapped).ok).toBe(false);
  });

  it('tokens of one sequence do not depend on later tokens or on other sequences', () => {
    const c = makeVarlen(rng, [6, 8], 2, 1, 16);
    const o = Float32Array.from(f32(ops.varlenAttention(c.q, c.k, c.v, c.cu)));
    // Perturb the last token of sequence 1 and everything of sequence 0's K/V beyond token 3.
    const k2 = Float32Array.from(f32(c.k));
    const v2 = Float32Array.from(f32(c.v));
    for (let d = 0; d < 16; d++) {
      k2[13 * 16 + d] += 5;
      v2[13 * 16 + d] -= 5;
      k2[4 * 16 + d] += 5;
      v2[5 * 16 + d] += 5;
    }
    const o2 = f32(ops.varlenAttention(c.q, Tensor.from(k2, c.k.shape), Tensor.from(v2, c.v.shape), c.cu));
    const row = 2 * 16;
    expect(o2.subarray(0, 4 * row)).toEqual(o.subarray(0, 4 * row)); // seq 0 tokens 0..3
    expect(o2.subarray(6 * row, 13 * row)).toEqual(o.subarray(6 * row, 13 * row)); // seq 1 tokens 0..6
    expect(R.compareClose(o2.subarray(13 * row), o.subarray(13 * row)).ok).toBe(false);
  });
});

describe('kvAppend + pagedAttention', () => {
  const rng = new R.Rng(8);
  for (const dtype of ['f32', 'f16'] as const) {
    for (const pageSize of [1, 3, 16]) {
      for (const tree of [false, true]) {
        it(`${dtype} pages, pageSize ${pageSize}, ${tree ? 'tree mask' : 'causal'}`, () => {
          const c = makePaged(rng, {
            // An empty sequence, a decode step, a chunk, a whole-sequence prefill, a sequence with KV but no query.
            seqLens: [0, 7, 20, 5, 3, 33],
            nqs: [0, 1, 4, 5, 0, 3],
            pageSize, nHeads: 8, nKvHeads: 2, headDim: 64, dtype, tree,
          });
          checkPaged(c, `paged ${dtype} ps=${pageSize} tree=${tree}`);
        });
      }
    }
  }

  it.each([
    [4, 4, 128],
    [4, 1, 128],
    [8, 8, 37],
    [2, 1, 1],
  ])('Hq %i, Hkv %i, D %i', (hq, hkv, d) => {
    const c = makePaged(rng, { seqLens: [9, 4], nqs: [2, 4], pageSize: 4, nHeads: hq, nKvHeads: hkv, headDim: d, dtype: 'f32' });
    checkPaged(c, `paged heads ${hq}/${hkv} D=${d}`);
  });

  it('custom scale and an explicit maskIndptr', () => {
    const c = makePaged(rng, {
      seqLens: [6, 10], nqs: [3, 4], pageSize: 2, nHeads: 4, nKvHeads: 2, headDim: 16, dtype: 'f16', tree: true,
    });
    const out = f32(ops.pagedAttention(c.q, c.qo, c.pool, c.table, { mask: c.mask, maskIndptr: [0, 9, 25], scale: 0.7 }));
    const ref = R.pagedAttentionRef(
      f32(c.q), c.qo, decodePages(c.pool.kPages), decodePages(c.pool.vPages), c.g, c.table, { ...c.shape, scale: 0.7 },
      { mask: c.mask!, maskIndptr: [0, 9, 25] },
    );
    expectClose(out, ref, 'paged scale + maskIndptr');
  });

  it('a query that sees nothing (empty mask row, no prefix) gives zeros', () => {
    const c = makePaged(rng, { seqLens: [2], nqs: [2], pageSize: 4, nHeads: 2, nKvHeads: 1, headDim: 8, dtype: 'f32' });
    const out = f32(ops.pagedAttention(c.q, c.qo, c.pool, c.table, { mask: Uint8Array.from([0, 0, 1, 1]) }));
    expect(Array.from(out.subarray(0, 16))).toEqual(new Array(16).fill(0));
    expectClose(out, R.pagedAttentionRef(f32(c.q), c.qo, decodePages(c.pool.kPages), decodePages(c.pool.vPages), c.g, c.table, c.shape, { mask: [0, 0, 1, 1] }), 'empty row');
  });

  it('mutation: first-token exactness, page table off-by-ones, causal vs tree', () => {
    // Prefill of the whole sequence: query 0 sees only KV entry 0, so its output is exactly v[0].
    const c = makePaged(rng, {
      seqLens: [10, 7], nqs: [10, 7], pageSize: 3, nHeads: 4, nKvHeads: 2, headDim: 32, dtype: 'f32', extraPages: 3,
    });
    const out = checkPaged(c, 'paged mutation base');
    const D = 32;
    for (let b = 0; b < 2; b++) {
      const t = c.qo[b];
      const vRow = c.table.indices[c.table.indptr[b]] * 3 * 2; // page id * pageSize * Hkv: slot 0
      for (let h = 0; h < 4; h++) {
        const got = out.subarray((t * 4 + h) * D, (t * 4 + h + 1) * D);
        const want = f32(c.pool.vPages).subarray((vRow + (h >> 1)) * D, (vRow + (h >> 1) + 1) * D);
        expect(Array.from(got), `sequence ${b} query 0 head ${h}`).toEqual(Array.from(want));
      }
    }
    const ref = pagedRef(c);
    // Shifting one page index (to the neighbouring page id) must break the match with the reference.
    for (const at of [0, 2, 4]) {
      const indices = Int32Array.from(c.table.indices);
      indices[at] = (indices[at] + 1) % c.g.numPages;
      const mutated = { ...c.table, indices };
      const got = runPaged(c, mutated);
      expectNotClose(got, ref, `page index ${at} shifted`);
      expectClose(got, pagedRef(c, mutated), `page index ${at} shifted, reference on the same table`);
    }
    // Off-by-one in the sequence layout: shifting the page table by one entry.
    const src = c.table.indices;
    const shifted = { ...c.table, indices: Int32Array.from(src, (_, i) => src[(i + 1) % src.length]) };
    expectNotClose(runPaged(c, shifted), ref, 'page table rotated by one');
    // Dropping the causal mask (every query sees the whole sequence) must not match.
    const all = new Uint8Array(100 + 49).fill(1);
    const bidirectional = runPaged({ ...c, mask: all });
    expectClose(bidirectional, pagedRef({ ...c, mask: all }), 'all-ones tree mask');
    expectNotClose(bidirectional, ref, 'all-ones tree mask vs causal');
  });

  it('mutation: decode with the last page partly filled (lastPageLen off by one)', () => {
    const c = makePaged(rng, { seqLens: [8, 5], nqs: [1, 1], pageSize: 3, nHeads: 2, nKvHeads: 1, headDim: 16, dtype: 'f32' });
    const ref = checkPaged(c, 'decode base');
    const longer = { ...c.table, lastPageLen: Int32Array.from(c.table.lastPageLen, (x) => x + 1) };
    // One more (garbage) KV entry, and the query moves to it: the result changes.
    expectNotClose(runPaged(c, longer), ref, 'lastPageLen + 1');
  });

  it('tree mask: each query sees the prefix plus its masked nodes', () => {
    const c = makePaged(rng, {
      seqLens: [12], nqs: [4], pageSize: 5, nHeads: 2, nKvHeads: 1, headDim: 16, dtype: 'f32', tree: true,
    });
    // A chain mask equals the plain causal result.
    const chain = Uint8Array.from([1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1]);
    const causal = runPaged(c, c.table, false);
    expectClose(f32(ops.pagedAttention(c.q, c.qo, c.pool, c.table, { mask: chain })), causal, 'chain mask == causal');
    // A branching tree differs from the chain.
    const branch = Uint8Array.from([1, 0, 0, 0, 1, 1, 0, 0, 1, 0, 1, 0, 1, 0, 0, 1]);
    const got = f32(ops.pagedAttention(c.q, c.qo, c.pool, c.table, { mask: branch }));
    expectClose(got, R.pagedAttentionRef(f32(c.q), c.qo, decodePages(c.pool.kPages), decodePages(c.pool.vPages), c.g, c.table, c.shape, { mask: branch }), 'branch');
    expectNotClose(got.subarray(2 * 32), causal.subarray(2 * 32), 'branch vs chain');
    // Query 0 equals causal query 0 (both see prefix + node 0).
    expect(Array.from(got.subarray(0, 32))).toEqual(Array.from(causal.subarray(0, 32)));
  });

  it('sequences sharing prefix pages (prefix cache) read the shared page', () => {
    for (const dtype of ['f32', 'f16'] as const) {
      // Sequence 0 owns 3 pages; sequences 1 and 2 share its first two pages and continue on their own.
      const c = makePaged(rng, { seqLens: [12, 4, 4], nqs: [2, 1, 3], pageSize: 4, nHeads: 4, nKvHeads: 2, headDim: 16, dtype, extraPages: 1 });
      const own = c.table.indices;
      const table = {
        indptr: Int32Array.from([0, 3, 6, 9]),
        indices: Int32Array.from([own[0], own[1], own[2], own[0], own[1], own[3], own[0], own[1], own[4]]),
        lastPageLen: Int32Array.from([4, 4, 4]),
      };
      const out = runPaged(c, table);
      expectClose(out, pagedRef(c, table), `shared prefix ${dtype}`);
      // Sequence 1's single query (position 11) sees the shared prefix, like sequence 0's query at 11.
      expectNotClose(out, pagedRef(c), `shared prefix ${dtype} vs private pages`);
    }
  });

  it('kvAppend writes one token at a time at the right slot (decode steps)', () => {
    for (const dtype of ['f32', 'f16'] as const) {
      const c = makePaged(rng, { seqLens: [4, 2], nqs: [1, 1], pageSize: 2, nHeads: 2, nKvHeads: 2, headDim: 8, dtype, extraPages: 3 });
      // Grow sequence 1 by one token on a fresh page.
      const free = range(c.g.numPages).filter((p) => !c.table.indices.includes(p));
      const table = {
        indptr: Int32Array.from([0, 2, 4]),
        indices: Int32Array.from([...c.table.indices, free[0]]),
        lastPageLen: Int32Array.from([2, 1]),
      };
      const k = Tensor.from(R.randomF32(rng, 16), [1, 2, 8]);
      const v = Tensor.from(R.randomF32(rng, 16), [1, 2, 8]);
      const beforeK = decodePages(c.pool.kPages);
      ops.kvAppend(k, v, c.pool, table, [1], [2]);
      const afterK = decodePages(c.pool.kPages);
      const afterV = decodePages(c.pool.vPages);
      const off = free[0] * 2 * 2 * 8; // slot 0 of the new page
      for (let i = 0; i < afterK.length; i++) {
        if (i >= off && i < off + 16) {
          expect(afterK[i]).toBe(roundTo(dtype, f32(k)[i - off]));
          expect(afterV[i]).toBe(roundTo(dtype, f32(v)[i - off]));
        } else if (afterK[i] !== beforeK[i]) {
          expect.fail(`kvAppend ${dtype} touched element ${i} outside the target slot`);
        }
      }
    }
  });
});

describe('ops vs ops.reference (native float64 oracle)', () => {
  const rng = new R.Rng(9);
  const close = (a: ArrayLike<number>, b: ArrayLike<number>, label: string) => expectClose(a, b, label);

  it('matmul, each weight dtype', () => {
    for (const dtype of WEIGHT_DTYPES) {
      const x = Tensor.from(R.randomF32(rng, 6 * 64), [2, 3, 64]);
      const w = makeWeight(rng, 21, 64, dtype);
      const a = f32(ops.matmul(x, w));
      const b = f32(ops.reference.matmul(x, w));
      close(a, b, `matmul ${dtype}`);
      // Both oracles agree to float32 rounding.
      expectClose(b, R.matmulRef(f32(x), 6, 64, w.data, dtype, 21), `ref matmul ${dtype}`, 1e-6);
    }
  });

  it('rmsnorm, rope, swiglu, softmax', () => {
    const x = Tensor.from(R.randomF32(rng, 4 * 48), [4, 48]);
    const w = Tensor.from(R.randomF32(rng, 48), [48]);
    close(f32(ops.rmsnorm(x, w)), f32(ops.reference.rmsnorm(x, w)), 'rmsnorm');
    const r = Tensor.from(R.randomF32(rng, 3 * 2 * 48), [3, 2, 48]);
    for (const mode of ['normal', 'neox'] as const) {
      const a = f32(ops.rope(r, [0, 9, 1000], { mode, nRot: 24 }));
      const b = f32(ops.reference.rope(r, [0, 9, 1000], { mode, nRot: 24 }));
      close(a, b, `rope ${mode}`);
      expectClose(b, R.ropeRef(f32(r), [0, 9, 1000], 3, 2, 48, { mode, nRot: 24 }), `ref rope ${mode}`, 1e-6);
    }
    const u = Tensor.from(R.randomF32(rng, 4 * 48), [4, 48]);
    close(f32(ops.swiglu(x, u)), f32(ops.reference.swiglu(x, u)), 'swiglu');
    close(f32(ops.softmax(x)), f32(ops.reference.softmax(x)), 'softmax');
  });

  it('varlenAttention', () => {
    const c = makeVarlen(rng, [3, 0, 11], 8, 2, 64);
    const a = f32(ops.varlenAttention(c.q, c.k, c.v, c.cu));
    const b = f32(ops.reference.varlenAttention(c.q, c.k, c.v, c.cu));
    close(a, b, 'varlen');
    expectClose(b, R.varlenAttentionRef(f32(c.q), f32(c.k), f32(c.v), c.cu, c.shape), 'ref varlen', 1e-6);
  });

  it('kvAppend and pagedAttention (f16 pages, tree mask)', () => {
    const c = makePaged(rng, { seqLens: [5, 9, 0], nqs: [2, 3, 0], pageSize: 4, nHeads: 4, nKvHeads: 2, headDim: 32, dtype: 'f16', tree: true });
    // ops.reference.kvAppend into a copy of the pre-append pool must produce the same pages.
    const kCopy = ops.convert(Tensor.from(Float32Array.from(c.kBefore), c.pool.kPages.shape), 'f16');
    const vCopy = ops.convert(Tensor.from(Float32Array.from(c.vBefore), c.pool.vPages.shape), 'f16');
    ops.reference.kvAppend(c.k, c.v, { kPages: kCopy, vPages: vCopy }, c.table, c.batchIndices, c.positions);
    expect(kCopy.data).toEqual(c.pool.kPages.data);
    expect(vCopy.data).toEqual(c.pool.vPages.data);
    const a = runPaged(c);
    const b = runPaged(c, c.table, true, ops.reference as typeof ops);
    close(a, b, 'paged');
    expectClose(b, pagedRef(c), 'ref paged', 1e-6);
  });

  it('convert, each dtype, bit for bit', () => {
    const x = Tensor.from(R.randomF32(rng, 4 * 64, -5, 5), [4, 64]);
    for (const dtype of WEIGHT_DTYPES) {
      const a = ops.convert(x, dtype);
      const b = ops.reference.convert(x, dtype);
      expect(a.data, dtype).toEqual(b.data);
      expect(ops.convert(a, 'f32').data).toEqual(ops.reference.convert(a, 'f32').data);
    }
  });
});

describe.each(ISAS)('ISA %s', (isa) => {
  beforeAll(() => {
    expect(ops.setIsa(isa)).toBe(true);
    expect(backends()[0].isa).toBe(isa);
  });
  afterAll(() => {
    ops.setIsa(BEST_ISA);
  });

  it('every op matches the reference', () => {
    compactSuite(100);
  });

  it('varlen attention, all GQA ratios and head dims', () => {
    const rng = new R.Rng(101);
    for (const [hq, hkv] of [[4, 4], [4, 2], [8, 2], [8, 1]]) {
      for (const d of [64, 128, 37]) checkVarlen(makeVarlen(rng, [1, 0, 6], hq, hkv, d), `${isa} varlen ${hq}/${hkv} D=${d}`);
    }
  });

  it('matmul, many shapes per dtype', () => {
    const rng = new R.Rng(102);
    for (const dtype of WEIGHT_DTYPES) {
      for (const [xs, n] of [[[3, 32], 7], [[17, 128], 33], [[1, 512], 5]] as [number[], number][]) checkMatmul(rng, xs, n, dtype);
    }
  });
});

describe('threads', () => {
  const initial = backends()[0].threads ?? 0;
  afterAll(() => {
    ops.setThreads(initial);
  });

  it('restores the best ISA after the ISA sweep', () => {
    ops.setIsa(BEST_ISA);
    expect(backends()[0].isa).toBe(BEST_ISA);
  });

  it('setThreads(1) and setThreads(3) give identical results', () => {
    expect(ops.setThreads(1)).toBe(1);
    expect(backends()[0].threads).toBe(1);
    const one = compactSuite(200);
    expect(ops.setThreads(3)).toBe(3);
    const three = compactSuite(200);
    expect(three.length).toBe(one.length);
    one.forEach((a, i) => expect(Array.from(three[i]), `output ${i}`).toEqual(Array.from(a)));
  });

  it('setThreads(0) means all cores', () => {
    expect(ops.setThreads(0)).toBeGreaterThanOrEqual(1);
  });
});
