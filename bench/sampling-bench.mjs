#!/usr/bin/env node
// Sampling speed, native vs JavaScript, on the same rows: the reference Sampler.sample
// (lib/sampling.ts, one row at a time on the main thread) against addon.sampleRows (the native
// port, native/model/sampler.cc, rows spread over the default pool), per sampled token.
//
//   node bench/sampling-bench.mjs [--vocab 32000,152064] [--rows 1,32] [--threads 1,2]
//        [--temperature 0.8] [--top-p 0.95] [--ms 1500]
//
// Rows: gaussian logits (sigma 3, a fixed seed), a 64-token history, no penalties; each cell runs
// for about --ms milliseconds after a warm-up and reports the median of 5 slices. The native time
// includes the N-API call (options, histories and states read, results written) but not the
// logits' trip through N-API: the rows stay in JS memory, as a forward step's stay in native memory.
// Needs the built addon and dist/ (npm run build).
//
//   node bench/sampling-bench.mjs --step [--seqs 32] [--steps 40]
//
// Decode steps of --seqs sequences on a narrow synthetic model (dim 64, 2 layers, the 32000-token
// Llama 2 vocabulary from test/data/models/llama2-vocab.gguf), each step sampling every sequence:
// in the step (forward with `sample`, native) or from the returned rows (Sampler.sample in JS),
// greedy and top-p; ms per step, tokens/s, and top-p's rate as a fraction of greedy's.
import { createRequire } from 'node:module';
import * as os from 'node:os';

const require = createRequire(import.meta.url);
const { Sampler, Rng, validateSamplingOptions } = require('../dist/sampling.js');
const { addon, nativeSamplingOptions } = require('../dist/native.js');

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : def;
};
const list = (s) => s.split(',').map(Number);
const vocabs = list(opt('vocab', '32000,152064'));
const rowCounts = list(opt('rows', '1,32'));
const threadCounts = list(opt('threads', '1,2'));
const temperature = Number(opt('temperature', '0.8'));
const topP = Number(opt('top-p', '0.95'));
const budgetMs = Number(opt('ms', '1500'));

const a = addon();
const threadsBefore = a.info().threads;
if (args.includes('--step')) {
  await stepBench();
  process.exit(0);
}

function mulberry32(seed) {
  let x = seed >>> 0;
  return () => {
    x = (x + 0x6d2b79f5) >>> 0;
    let t = x;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Median over 5 slices of the time per call of fn, in ms. */
function time(fn) {
  for (let i = 0; i < 3; i++) fn();
  const slices = [];
  for (let s = 0; s < 5; s++) {
    let calls = 0;
    const t0 = performance.now();
    let t;
    do {
      fn();
      calls++;
      t = performance.now();
    } while (t - t0 < budgetMs / 5);
    slices.push((t - t0) / calls);
  }
  return slices.sort((x, y) => x - y)[2];
}

const options = { temperature, topP };
console.log(`# sampling per token: temperature ${temperature}, topP ${topP}; ${os.cpus()[0].model}, ${os.cpus().length} CPUs, load ${os.loadavg()[0].toFixed(1)}, node ${process.version}`);
console.log('| vocab | rows | JS Sampler (us/token) | native, threads | native (us/token) | JS / native |');
console.log('|---|---|---|---|---|---|');
for (const V of vocabs) {
  for (const rows of rowCounts) {
    const rnd = mulberry32(V + rows);
    const logits = new Float32Array(V * rows);
    for (let i = 0; i < logits.length; i++) logits[i] = Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd()) * 3;
    const histories = Array.from({ length: rows }, () => Int32Array.from({ length: 64 }, () => (rnd() * V) | 0));
    const samplers = Array.from({ length: rows }, (_, i) => new Sampler({ ...options, seed: i }, V));
    const jsMs = time(() => {
      for (let i = 0; i < rows; i++) samplers[i].sample(logits.subarray(i * V, (i + 1) * V), histories[i]);
    });
    const req = {
      logits,
      vocab: V,
      options: Array(rows).fill(nativeSamplingOptions(validateSamplingOptions(options))),
      histories,
      rngStates: new Uint32Array(4 * rows),
    };
    for (let i = 0; i < rows; i++) req.rngStates.set(new Rng(i).getState(), 4 * i);
    for (const threads of threadCounts) {
      a.setThreads(threads);
      const nativeMs = time(() => {
        req.rngStates = a.sampleRows(req).rngStates;
      });
      const js = (jsMs * 1000) / rows;
      const nat = (nativeMs * 1000) / rows;
      console.log(`| ${V} | ${rows} | ${js.toFixed(1)} | ${threads} | ${nat.toFixed(1)} | ${(js / nat).toFixed(2)}x |`);
    }
  }
}
a.setThreads(threadsBefore);

async function stepBench() {
  const fs = await import('node:fs');
  const path = await import('node:path');
  const { writeSyntheticModel } = require('../dist/synth.js');
  const seqs = Number(opt('seqs', '32'));
  const steps = Number(opt('steps', '40'));
  const threads = Number(opt('threads', '2').split(',')[0]);
  const root = path.join(path.dirname(new URL(import.meta.url).pathname), '..');
  const file = path.join(os.tmpdir(), `tessera-sampling-bench-${process.pid}.gguf`);
  await writeSyntheticModel(file, { dim: 64, layers: 2, heads: 2, kvHeads: 2, ff: 172, context: 512, dtype: 'f32', weightStd: 0.3, vocabFrom: path.join(root, 'test', 'data', 'models', 'llama2-vocab.gguf') });
  const model = new a.NativeModel(file, { device: 'cpu', threads, contextSize: 512, kvPages: 4096, pageSize: 16, kvDtype: 'f16' });
  await model.repack();
  const V = model.info().vocabSize;
  const i32 = (x) => Int32Array.from(x);
  console.log(`# decode steps, ${seqs} sequences, narrow synthetic model (dim 64, 2 layers, vocab ${V}), ${threads} threads; ${os.cpus()[0].model}, load ${os.loadavg()[0].toFixed(1)}`);
  console.log('| sampling | where | ms / step | tokens/s | vs greedy (same path) |');
  console.log('|---|---|---|---|---|');
  const greedyRate = {};
  for (const [label, o] of [['greedy', { temperature: 0 }], ['top-p 0.95, T 0.8', { temperature, topP }]]) {
    for (const where of ['native (in the step)', 'JS (rows to Sampler)']) {
      const ids = Array.from({ length: seqs }, () => model.createSequence());
      const hist = ids.map((_, i) => [1, 100 + i, 200 + i, 300 + i]);
      // prompt
      await model.forward({ tokens: i32(hist.flat()), seqIds: i32(ids), seqTokens: i32(hist.map((h) => h.length)), logitRows: i32([]) });
      let last = hist.map((h) => h[h.length - 1]);
      const resolved = validateSamplingOptions(o);
      const nopt = Array(seqs).fill(nativeSamplingOptions(resolved));
      let states = new Uint32Array(4 * seqs);
      ids.forEach((_, i) => states.set(new Rng(i).getState(), 4 * i));
      const samplers = ids.map((_, i) => new Sampler({ ...o, seed: i }, V));
      const rows = i32([...Array(seqs).keys()]);
      const step = async () => {
        const base = { tokens: i32(last), seqIds: i32(ids), seqTokens: i32(Array(seqs).fill(1)), logitRows: rows };
        if (where.startsWith('native')) {
          const out = await model.forward({ ...base, sample: { rows, options: nopt, histories: hist.map((h) => i32(h)), rngStates: states, logprobs: new Int32Array(seqs).fill(-1) } });
          states = out.rngStates;
          last = Array.from(out.tokens);
        } else {
          const L = await model.forward(base);
          last = samplers.map((s, i) => s.sample(L.subarray(i * V, (i + 1) * V), hist[i], { logprob: false }).token);
        }
        last.forEach((t, i) => hist[i].push(t));
      };
      for (let i = 0; i < 3; i++) await step();
      const t0 = performance.now();
      for (let i = 0; i < steps; i++) await step();
      const ms = (performance.now() - t0) / steps;
      ids.forEach((s) => model.releaseSequence(s));
      const rate = (seqs * 1000) / ms;
      if (label === 'greedy') greedyRate[where] = rate;
      const ratio = label === 'greedy' ? '1' : `${(rate / greedyRate[where]).toFixed(2)}x`;
      console.log(`| ${label} | ${where} | ${ms.toFixed(2)} | ${Math.round(rate)} | ${ratio} |`);
    }
  }
  model.dispose();
  fs.rmSync(file, { force: true });
}
