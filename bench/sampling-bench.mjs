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
