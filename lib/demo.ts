// The built-in demo (`tessera demo`, `npm start`): one attention layer with seeded random weights
// run the way the engine runs a model: prompts of different lengths packed into one varlen
// prefill (positions restart per prompt), their K/V appended into a paged cache, then batched
// decode steps over the pages. It checks the paged path against the varlen path and reports
// the padding a padded batch would have computed. No model file, no GPU.
import { ops } from './ops';
import { Tensor } from './tensor';
import { nativeInfo } from './native';
import { Rng } from './sampling';

export interface DemoOptions {
  prompts?: number;
  maxLen?: number;
  dim?: number;
  heads?: number;
  kvHeads?: number;
  pageSize?: number;
  decodeSteps?: number;
  seed?: number;
  log?: (line: string) => void;
}

export interface DemoResult {
  promptLengths: number[];
  packedTokens: number;
  paddedTokens: number;
  prefillMs: number;
  decodeMsPerStep: number;
  pagesUsed: number;
  /** Max |paged - varlen| / max |varlen| over every decode step. */
  maxRelError: number;
}

function randomTensor(shape: number[], rand: () => number, scale = 1): Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = (rand() * 2 - 1) * scale;
  return Tensor.from(data, shape);
}

export function runDemo(options: DemoOptions = {}): DemoResult {
  const { prompts = 12, maxLen = 96, dim = 256, heads = 8, kvHeads = 2, pageSize = 16, decodeSteps = 8, seed = 7 } = options;
  const log = options.log ?? (() => {});
  const headDim = dim / heads;
  const gen = new Rng(seed);
  const rand = () => gen.nextFloat();
  const info = nativeInfo();
  log(`tessera demo: one attention layer (dim ${dim}, ${heads} heads, ${kvHeads} KV heads), ${info.device} backend, ${info.isa} kernels, ${info.threads} threads`);

  const wq = ops.convert(randomTensor([dim, dim], rand, 0.08), 'f16');
  const wk = ops.convert(randomTensor([kvHeads * headDim, dim], rand, 0.08), 'f16');
  const wv = ops.convert(randomTensor([kvHeads * headDim, dim], rand, 0.08), 'q8_0');
  const norm = randomTensor([dim], rand, 1);

  // --- packed prefill -------------------------------------------------------------------
  const lengths = Array.from({ length: prompts }, () => 1 + Math.floor(rand() * maxLen));
  const cu = new Int32Array(prompts + 1);
  lengths.forEach((l, i) => (cu[i + 1] = cu[i] + l));
  const T = cu[prompts];
  const positions = new Int32Array(T);
  lengths.forEach((l, b) => {
    for (let p = 0; p < l; p++) positions[cu[b] + p] = p;
  });
  const x = randomTensor([T, dim], rand);

  const project = (h: Tensor, pos: Int32Array) => {
    const n = ops.rmsnorm(h, norm);
    const q = ops.rope(ops.matmul(n, wq).reshape([pos.length, heads, headDim]), pos);
    const k = ops.rope(ops.matmul(n, wk).reshape([pos.length, kvHeads, headDim]), pos);
    const v = ops.matmul(n, wv).reshape([pos.length, kvHeads, headDim]);
    return { q, k, v };
  };

  const t0 = performance.now();
  const { q, k, v } = project(x, positions);
  const prefillOut = ops.varlenAttention(q, k, v, cu);
  const prefillMs = performance.now() - t0;
  const paddedTokens = prompts * Math.max(...lengths);
  log(`prefill: ${prompts} prompts of ${Math.min(...lengths)}..${Math.max(...lengths)} tokens packed into ${T} tokens ` +
    `(a padded batch computes ${paddedTokens}: ${(paddedTokens / T).toFixed(2)}x the rows, more in attention) in ${prefillMs.toFixed(1)} ms`);
  if (!(prefillOut.data as Float32Array).every(Number.isFinite)) throw new Error('demo: prefill produced non-finite values');

  // --- paged KV: every sequence gets pages for its prompt and the decode steps ------------
  const capacity = lengths.map((l) => Math.ceil((l + decodeSteps) / pageSize));
  const numPages = capacity.reduce((a, b) => a + b, 0);
  const pool = {
    kPages: Tensor.zeros([numPages, pageSize, kvHeads, headDim], 'f32'),
    vPages: Tensor.zeros([numPages, pageSize, kvHeads, headDim], 'f32'),
  };
  // Pages are handed out shuffled, as a pool would after some churn.
  const free = Array.from({ length: numPages }, (_, i) => i);
  for (let i = free.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [free[i], free[j]] = [free[j], free[i]];
  }
  const owned = capacity.map((c) => free.splice(0, c));
  const table = (lens: number[]) => {
    const indptr = new Int32Array(prompts + 1);
    const indices: number[] = [];
    const last = new Int32Array(prompts);
    lens.forEach((l, b) => {
      const pages = Math.ceil(l / pageSize);
      indices.push(...owned[b].slice(0, pages));
      indptr[b + 1] = indptr[b] + pages;
      last[b] = l - (pages - 1) * pageSize;
    });
    return { indptr, indices: Int32Array.from(indices), lastPageLen: last };
  };
  const seqOf = new Int32Array(T);
  lengths.forEach((l, b) => seqOf.fill(b, cu[b], cu[b] + l));
  ops.kvAppend(k, v, pool, table(lengths), seqOf, positions);

  // --- batched decode: one new token per sequence per step ------------------------------
  const lens = [...lengths];
  let maxRelError = 0;
  let decodeMs = 0;
  // Keep each sequence's K/V history to check paged attention against varlen attention.
  const histK = lengths.map((l, b) => (k.data as Float32Array).slice(cu[b] * kvHeads * headDim, (cu[b] + l) * kvHeads * headDim));
  const histV = lengths.map((l, b) => (v.data as Float32Array).slice(cu[b] * kvHeads * headDim, (cu[b] + l) * kvHeads * headDim));
  for (let step = 0; step < decodeSteps; step++) {
    const xs = randomTensor([prompts, dim], rand);
    const pos = Int32Array.from(lens);
    const s0 = performance.now();
    const d = project(xs, pos);
    lens.forEach((_, b) => lens[b]++);
    const tbl = table(lens);
    ops.kvAppend(d.k, d.v, pool, tbl, Int32Array.from(lens.map((_, b) => b)), pos);
    const qo = Int32Array.from({ length: prompts + 1 }, (_, b) => b);
    const out = ops.pagedAttention(d.q, qo, pool, tbl);
    decodeMs += performance.now() - s0;

    // The same step as varlen attention over each sequence's full history.
    const row = kvHeads * headDim;
    histK.forEach((h, b) => {
      const nk = new Float32Array(h.length + row);
      nk.set(h);
      nk.set((d.k.data as Float32Array).subarray(b * row, (b + 1) * row), h.length);
      histK[b] = nk;
      const nv = new Float32Array(histV[b].length + row);
      nv.set(histV[b]);
      nv.set((d.v.data as Float32Array).subarray(b * row, (b + 1) * row), histV[b].length);
      histV[b] = nv;
    });
    let maxAbs = 0;
    let maxDiff = 0;
    for (let b = 0; b < prompts; b++) {
      const L = lens[b];
      const qb = new Float32Array(L * heads * headDim);
      qb.set((d.q.data as Float32Array).subarray(b * heads * headDim, (b + 1) * heads * headDim), (L - 1) * heads * headDim);
      const ref = ops.varlenAttention(
        Tensor.from(qb, [L, heads, headDim]),
        Tensor.from(histK[b], [L, kvHeads, headDim]),
        Tensor.from(histV[b], [L, kvHeads, headDim]),
        [0, L],
      ).data as Float32Array;
      const got = (out.data as Float32Array).subarray(b * heads * headDim, (b + 1) * heads * headDim);
      for (let i = 0; i < got.length; i++) {
        const r = ref[(L - 1) * heads * headDim + i];
        maxAbs = Math.max(maxAbs, Math.abs(r));
        maxDiff = Math.max(maxDiff, Math.abs(r - got[i]));
      }
    }
    maxRelError = Math.max(maxRelError, maxDiff / Math.max(maxAbs, 1e-30));
  }
  const pagesUsed = lens.reduce((a, l) => a + Math.ceil(l / pageSize), 0);
  const decodeMsPerStep = decodeMs / decodeSteps;
  log(`decode: ${decodeSteps} steps x ${prompts} sequences over ${pagesUsed} pages of ${pageSize} tokens: ${decodeMsPerStep.toFixed(2)} ms/step`);
  log(`check: paged decode vs varlen attention over the same history: max relative error ${maxRelError.toExponential(2)}`);
  if (!(maxRelError < 1e-4)) throw new Error(`demo: paged attention disagrees with varlen attention (${maxRelError})`);
  return { promptLengths: lengths, packedTokens: T, paddedTokens, prefillMs, decodeMsPerStep, pagesUsed, maxRelError };
}
