#!/usr/bin/env node
// Op benchmarks on the CPU backend, side by side in one run (these machines are noisy: compare
// ratios within a run, not absolute figures across runs). Prints a markdown table.
//   node bench/ops-bench.js [--threads N] [--quick]
// Measures: memory copy bandwidth (the decode bound), decode GEMV GB/s per weight dtype, prefill
// GEMM GFLOP/s per weight dtype, packed vs padded varlen attention, paged decode attention GB/s.
'use strict';
const { ops, Tensor, nativeInfo } = require('..');

const args = process.argv.slice(2);
const quick = args.includes('--quick');
const ti = args.indexOf('--threads');
if (ti >= 0) ops.setThreads(Number(args[ti + 1]));

function rand(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const r = rand(1);
const randomTensor = (shape, scale = 1) => {
  const n = shape.reduce((a, b) => a * b, 1);
  const d = new Float32Array(n);
  for (let i = 0; i < n; i++) d[i] = (r() * 2 - 1) * scale;
  return Tensor.from(d, shape);
};

/** Median wall time (ms) of fn over enough runs to last ~minMs. */
function time(fn, minMs = quick ? 150 : 600) {
  fn();
  const times = [];
  const start = performance.now();
  while (performance.now() - start < minMs || times.length < 5) {
    const t0 = performance.now();
    fn();
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  return times[times.length >> 1];
}

const rows = [];
const row = (what, shape, ms, figure) => rows.push(`| ${what} | ${shape} | ${ms.toFixed(3)} | ${figure} |`);

// --- memory copy bandwidth: the bound for decode ---------------------------------------------
{
  const n = 64 * 1024 * 1024 / 4;
  const src = new Float32Array(n).fill(1), dst = new Float32Array(n);
  const ms = time(() => dst.set(src));
  row('memcpy (TypedArray.set)', '64 MiB', ms, `${((2 * n * 4) / ms / 1e6).toFixed(1)} GB/s (read+write)`);
}

// --- matmul: decode GEMV (weights streamed once) and prefill GEMM ------------------------------
const N = 2048, K = 768;
const wf32 = randomTensor([N, K], 0.05);
const weights = Object.fromEntries(['f32', 'f16', 'bf16', 'q8_0', 'q4_0'].map((dt) => [dt, dt === 'f32' ? wf32 : ops.convert(wf32, dt)]));
const x1 = randomTensor([1, K]);
for (const [dt, w] of Object.entries(weights)) {
  const ms = time(() => ops.matmul(x1, w));
  row(`matmul decode ${dt}`, `1x${K} · ${N}x${K}ᵀ`, ms, `${(w.byteLength / ms / 1e6).toFixed(1)} GB/s of weights`);
}
const M = quick ? 128 : 512;
const xm = randomTensor([M, K]);
for (const [dt, w] of Object.entries(weights)) {
  const ms = time(() => ops.matmul(xm, w));
  row(`matmul prefill ${dt}`, `${M}x${K} · ${N}x${K}ᵀ`, ms, `${((2 * M * N * K) / ms / 1e6).toFixed(1)} GFLOP/s`);
}

// --- varlen attention: packed vs padded (the Prepacking comparison) ---------------------------
{
  const H = 12, Hkv = 12, D = 64;
  // MMLU-like prompt lengths: mostly short, a long tail.
  const lengths = Array.from({ length: quick ? 16 : 32 }, () => 40 + Math.floor(r() ** 3 * 460));
  const maxLen = Math.max(...lengths);
  const packedT = lengths.reduce((a, b) => a + b, 0);
  const cu = [0];
  for (const l of lengths) cu.push(cu[cu.length - 1] + l);
  const q = randomTensor([packedT, H, D]), k = randomTensor([packedT, Hkv, D]), v = randomTensor([packedT, Hkv, D]);
  const packedMs = time(() => ops.varlenAttention(q, k, v, cu));
  // Padded: every prompt padded to the longest, as a padded batch computes it.
  const paddedT = maxLen * lengths.length;
  const qp = randomTensor([paddedT, H, D]), kp = randomTensor([paddedT, Hkv, D]), vp = randomTensor([paddedT, Hkv, D]);
  const cuP = lengths.map((_, i) => i * maxLen).concat([paddedT]);
  const paddedMs = time(() => ops.varlenAttention(qp, kp, vp, cuP));
  const flops = lengths.reduce((a, l) => a + 4 * H * D * (l * (l + 1)) / 2, 0);
  row('varlen attention packed', `${lengths.length} prompts, ${packedT} tokens, H ${H}, D ${D}`, packedMs, `${(flops / packedMs / 1e6).toFixed(1)} GFLOP/s`);
  row('attention padded to max', `${lengths.length} x ${maxLen} = ${paddedT} tokens`, paddedMs, `packed is ${(paddedMs / packedMs).toFixed(2)}x faster`);
}

// --- paged decode attention at long context ---------------------------------------------------
for (const kvDtype of ['f32', 'f16']) {
  const B = 4, ctx = quick ? 1024 : 4096, H = 32, Hkv = 4, D = 128, page = 16;
  const pagesPer = ctx / page, numPages = B * pagesPer;
  const pool = { kPages: Tensor.zeros([numPages, page, Hkv, D], kvDtype), vPages: Tensor.zeros([numPages, page, Hkv, D], kvDtype) };
  const filler = ops.convert(randomTensor([numPages * page * Hkv * D]), kvDtype === 'f16' ? 'f16' : 'f32');
  pool.kPages.data.set(filler.data);
  pool.vPages.data.set(filler.data);
  const table = {
    indptr: Int32Array.from({ length: B + 1 }, (_, b) => b * pagesPer),
    indices: Int32Array.from({ length: numPages }, (_, i) => (i * 7919) % numPages),
    lastPageLen: new Int32Array(B).fill(page),
  };
  const q = randomTensor([B, H, D]);
  const qo = Int32Array.from({ length: B + 1 }, (_, b) => b);
  const ms = time(() => ops.pagedAttention(q, qo, pool, table));
  const bytes = 2 * B * ctx * Hkv * D * (kvDtype === 'f16' ? 2 : 4);
  row(`paged decode attention ${kvDtype} KV`, `B ${B}, ctx ${ctx}, H ${H}/${Hkv}, D ${D}, page ${page}`, ms, `${(bytes / ms / 1e6).toFixed(1)} GB/s of KV`);
}

const info = nativeInfo();
console.log(`tessera ops bench: ${info.isa} kernels, ${info.threads} threads, node ${process.version}, ${new Date().toISOString().slice(0, 10)}`);
console.log('| op | shape | ms (median) | figure |');
console.log('| --- | --- | --- | --- |');
for (const l of rows) console.log(l);
