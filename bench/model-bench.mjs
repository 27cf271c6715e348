#!/usr/bin/env node
// Model benchmark, side by side in one process: tessera vs llama.cpp (node-llama-cpp 3.21.1, its
// prebuilt CPU binaries) on the same GGUF files with the same thread counts.
//
//   node bench/model-bench.mjs --models DIR [--threads 1,2] [--engines tessera,llama.cpp]
//        [--types f16,q8_0,q4_0,q4_k_m] [--prompt 512] [--decode 128] [--reps 2] [--rounds 1]
//        [--preset 110m] [--json FILE]
//
// Models: DIR/synthetic-<preset>-<type>.gguf, made by bench/prepare-models.sh (types missing from
// DIR are skipped with a note). Per model, thread count and engine:
//  - prefill: a <prompt>-token prompt evaluated in one batch (batch >= prompt); best of --reps runs,
//    each with a different prompt (no prefix reuse). tessera: complete(ids, { maxTokens: 1 }) and
//    timings.promptMs (prompt forward + sampling of one token); llama.cpp:
//    sequence.evaluateWithoutGeneratingNewTokens(ids) (no logits at all), timed around the call.
//  - decode: an 8-token prompt, then <decode> greedy tokens with EOS banned in both engines (tessera
//    logitBias, llama.cpp tokenBias + yieldEogToken), best of --reps; tok/s = (n - 1) / (time from
//    the first generated token to the last), so the prompt is excluded.
//  - memory: process RSS before load, after load and after the runs (weights are mmapped, so
//    "after run" is the resident figure); both engines live in this one process.
// Also measured in the same run: memory copy bandwidth (Buffer.copy, 1 and 2 threads, 256 MiB and
// 32 MiB) and read bandwidth (Buffer.equals = memcmp, 2 x 256 MiB), the bound of decode (compare
// with the bytes of weights read per token x tok/s), and the FLOP rate of prefill (2 x matmul
// params x tokens / time). --rounds N repeats the whole sweep and keeps the best of each cell.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';

const require = createRequire(import.meta.url);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tessera = require(ROOT);

const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
};
const dir = arg('models', '/tmp/tessera-bench/models');
const preset = arg('preset', '110m');
const threadsList = arg('threads', '1,2').split(',').map(Number);
const engines = arg('engines', 'tessera,llama.cpp').split(',');
const types = arg('types', 'f16,q8_0,q4_0,q4_k_m').split(',');
const promptN = Number(arg('prompt', '512'));
const decodeN = Number(arg('decode', '128'));
const reps = Number(arg('reps', '2'));
const rounds = Number(arg('rounds', '1'));
const jsonFile = arg('json', undefined);
for (const e of engines) if (!['tessera', 'llama.cpp'].includes(e)) throw new Error(`unknown engine ${e}`);

const log = (s) => process.stderr.write(`${s}\n`);
const mib = (b) => b / 2 ** 20;
const rss = () => process.memoryUsage().rss;

// Deterministic prompt ids (no BOS/EOS/control ids); `salt` makes each repetition's prompt differ.
const promptIds = (n, salt = 0) => Array.from({ length: n }, (_, i) => 1000 + ((i * 7919 + salt * 104729) % 28000));

// ---- machine bounds ---------------------------------------------------------------------------
// Bandwidth in GB/s of bytes touched. Workers work on disjoint parts of one SharedArrayBuffer at once.
const copyWorker = `
const { parentPort, workerData } = require('node:worker_threads');
const { sab, off, len, iters, mode } = workerData;
const a = Buffer.from(sab, off, len / 2), b = Buffer.from(sab, off + len / 2, len / 2);
a.fill(1); a.copy(b);
const flag = new Int32Array(workerData.flag);
parentPort.postMessage('ready');
Atomics.wait(flag, 0, 0);
const t0 = performance.now();
if (mode === 'read') { for (let i = 0; i < iters; i++) if (!a.equals(b)) throw new Error('differ'); } // memcmp: reads both
else for (let i = 0; i < iters; i++) a.copy(b);
parentPort.postMessage(performance.now() - t0);`;
// mode 'copy': memcpy of `bytes` (counted as read + write = 2 x bytes); mode 'read': memcmp of two
// buffers of `bytes` (2 x bytes read). Per thread; nThreads run at once on disjoint memory.
async function copyBandwidth(bytes, nThreads, iters, mode = 'copy') {
  const sab = new SharedArrayBuffer(bytes * 2 * nThreads);
  const flag = new SharedArrayBuffer(4);
  const workers = Array.from({ length: nThreads }, (_, k) =>
    new Worker(copyWorker, { eval: true, workerData: { sab, off: k * bytes * 2, len: bytes * 2, iters, flag, mode } }));
  const msgs = workers.map((w) => {
    const q = [];
    let wake;
    w.on('message', (m) => { q.push(m); wake?.(); });
    return async () => { while (!q.length) await new Promise((r) => (wake = r)); return q.shift(); };
  });
  await Promise.all(msgs.map((m) => m()));
  const t0 = performance.now();
  Atomics.store(new Int32Array(flag), 0, 1);
  Atomics.notify(new Int32Array(flag), 0);
  await Promise.all(msgs.map((m) => m()));
  const ms = performance.now() - t0;
  await Promise.all(workers.map((w) => w.terminate()));
  return (nThreads * iters * 2 * bytes) / (ms / 1000) / 1e9;
}
async function machineBounds() {
  const out = {};
  for (const [mode, label, size, iters] of [['copy', '256MiB', 256 * 2 ** 20, 4], ['copy', '32MiB', 32 * 2 ** 20, 32], ['read', '256MiB', 256 * 2 ** 20, 4]]) {
    for (const t of [1, 2]) {
      let best = 0;
      for (let r = 0; r < 2; r++) best = Math.max(best, await copyBandwidth(size, t, iters, mode));
      out[`${mode}_${label}_t${t}`] = best;
    }
  }
  return out;
}

// ---- model facts ------------------------------------------------------------------------------
function modelFacts(file) {
  const g = tessera.readGguf(file);
  let streamBytes = 0, matmulParams = 0, totalParams = 0;
  const types = {};
  for (const t of g.tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    totalParams += n;
    types[t.type] = (types[t.type] ?? 0) + 1;
    if (t.name === 'token_embd.weight') continue; // one row per token is read, not the matrix
    streamBytes += t.byteSize; // every other weight is read once per forward step
    if (t.shape.length === 2) matmulParams += n;
  }
  const hasOutput = g.tensors.some((t) => t.name === 'output.weight');
  if (!hasOutput) { // tied output: the embedding matrix is the LM head and is streamed
    const e = g.tensors.find((t) => t.name === 'token_embd.weight');
    streamBytes += e.byteSize;
    matmulParams += e.shape[0] * e.shape[1];
  }
  return { fileBytes: g.fileSize, streamBytes, matmulParams, totalParams, tensorTypes: types, ftype: g.metadata['general.file_type'] };
}

// ---- engines ----------------------------------------------------------------------------------
async function benchTessera(file, threads) {
  globalThis.gc?.(); // with node --expose-gc: drop earlier buffers before reading RSS
  const r = { rssBefore: rss() };
  const t0 = performance.now();
  const m = await tessera.loadModel(file, { threads, contextSize: 1024, maxBatchTokens: Math.max(512, promptN) });
  r.loadMs = performance.now() - t0;
  r.rssLoaded = rss();
  try {
    const noEos = { [m.info.vocabulary.eos]: -Infinity };
    await m.complete(promptIds(16, 99), { maxTokens: 2, temperature: 0 }); // warm-up (pages in weights)
    r.prefillMs = [];
    for (let i = 0; i < reps; i++) {
      const res = await m.complete(promptIds(promptN, i + 1), { maxTokens: 1, temperature: 0 });
      r.prefillMs.push(res.timings.promptMs);
    }
    r.decodeTps = [];
    for (let i = 0; i < reps; i++) {
      const dec = await m.complete(promptIds(8, i + 1), { maxTokens: decodeN, temperature: 0, logitBias: noEos });
      if (dec.tokens.length !== decodeN) throw new Error(`tessera generated ${dec.tokens.length} of ${decodeN} tokens (${dec.finishReason})`);
      r.decodeTps.push(dec.timings.tokensPerSecond);
    }
    r.rssAfter = rss();
    r.kvBytes = m.info.kvBytes;
    r.threadsUsed = m.info.threads;
  } finally {
    await m.dispose();
  }
  r.prefill = promptN / (Math.min(...r.prefillMs) / 1000);
  r.decode = Math.max(...r.decodeTps);
  return r;
}

let llama, TokenBias;
async function benchLlamaCpp(file, threads) {
  if (!llama) {
    const nlc = await import('node-llama-cpp');
    TokenBias = nlc.TokenBias;
    llama = await nlc.getLlama({ gpu: false, build: 'never', logLevel: 'error' });
  }
  globalThis.gc?.(); // with node --expose-gc: drop earlier buffers before reading RSS
  const r = { rssBefore: rss() };
  const t0 = performance.now();
  const model = await llama.loadModel({ modelPath: file, gpuLayers: 0 });
  try {
    const ctx = await model.createContext({
      contextSize: 1024, batchSize: Math.max(512, promptN), sequences: 1, threads: { ideal: threads, min: threads },
    });
    r.loadMs = performance.now() - t0;
    r.rssLoaded = rss();
    r.flashAttention = ctx.flashAttention;
    r.threadsUsed = ctx.currentThreads;
    try {
      const seq = ctx.getSequence();
      await seq.evaluateWithoutGeneratingNewTokens(promptIds(16, 99)); // warm-up
      await seq.clearHistory();
      r.prefillMs = [];
      for (let i = 0; i < reps; i++) {
        const t = performance.now();
        await seq.evaluateWithoutGeneratingNewTokens(promptIds(promptN, i + 1));
        r.prefillMs.push(performance.now() - t);
        await seq.clearHistory();
      }
      const bias = new TokenBias(model.tokenizer);
      bias.set(model.tokens.eos, 'never');
      r.decodeTps = [];
      for (let i = 0; i < reps; i++) {
        let n = 0, tFirst = 0;
        for await (const token of seq.evaluate(promptIds(8, i + 1), { temperature: 0, tokenBias: bias, yieldEogToken: true })) {
          void token;
          if (++n === 1) tFirst = performance.now();
          if (n >= decodeN) break;
        }
        if (n !== decodeN) throw new Error(`llama.cpp generated ${n} of ${decodeN} tokens`);
        r.decodeTps.push(((n - 1) * 1000) / (performance.now() - tFirst));
        await seq.clearHistory();
      }
      r.rssAfter = rss();
    } finally {
      await ctx.dispose();
    }
  } finally {
    await model.dispose();
  }
  r.prefill = promptN / (Math.min(...r.prefillMs) / 1000);
  r.decode = Math.max(...r.decodeTps);
  return r;
}

// ---- run --------------------------------------------------------------------------------------
const tStart = performance.now();
const loadStart = os.loadavg();
if (loadStart[0] > 0.5) log(`warning: load average ${loadStart.map((x) => x.toFixed(2)).join(' ')} before the run (other work on this machine skews 2-thread figures most)`);
const info = tessera.nativeInfo();
const bounds = await machineBounds();
log(`bandwidth GB/s (copy: read+write; read: memcmp): ${Object.entries(bounds).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')}`);

const models = [];
for (const type of types) {
  const file = path.join(dir, `synthetic-${preset}-${type}.gguf`);
  if (!fs.existsSync(file)) { log(`skip ${type}: no ${file} (run bench/prepare-models.sh)`); continue; }
  models.push({ type, file, ...modelFacts(file) });
}

const results = []; // { type, threads, engine, round, ...metrics } or { error }
for (let round = 0; round < rounds; round++) {
  for (const m of models) {
    for (const threads of threadsList) {
      for (const engine of engines) {
        let r;
        try {
          r = engine === 'tessera' ? await benchTessera(m.file, threads) : await benchLlamaCpp(m.file, threads);
          log(`[${((performance.now() - tStart) / 1000).toFixed(0)}s] ${m.type} t${threads} ${engine}: prefill ${r.prefill.toFixed(0)} tok/s ` +
            `(${r.prefillMs.map((x) => x.toFixed(0)).join('/')} ms), decode ${r.decode.toFixed(1)} tok/s (${r.decodeTps.map((x) => x.toFixed(1)).join('/')})`);
        } catch (e) {
          r = { error: String(e?.message ?? e).split('\n')[0] };
          log(`${m.type} t${threads} ${engine}: ERROR ${r.error}`);
        }
        results.push({ type: m.type, threads, engine, round, ...r });
      }
    }
  }
}
const systemInfo = llama?.systemInfo;
await llama?.dispose?.();

// Best over rounds per (type, threads, engine).
const cell = (type, threads, engine) => {
  const rs = results.filter((r) => r.type === type && r.threads === threads && r.engine === engine);
  const ok = rs.filter((r) => !r.error);
  if (!ok.length) return rs.length ? { error: rs[0].error } : undefined;
  return {
    ...ok[0],
    prefill: Math.max(...ok.map((r) => r.prefill)),
    decode: Math.max(...ok.map((r) => r.decode)),
    rounds: ok.map((r) => ({ prefill: r.prefill, decode: r.decode })),
  };
};
const f0 = (x) => (x == null ? '–' : x.toFixed(0));
const f1 = (x) => (x == null ? '–' : x.toFixed(1));
const ratio = (a, b) => (a != null && b ? (a / b).toFixed(2) : '–');

const lines = [];
const out = (s = '') => lines.push(s);
out(`## Model bench ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC: synthetic ${preset}, prompt ${promptN}, decode ${decodeN}, best of ${reps} reps x ${rounds} round(s)`);
out();
out(`Host: ${os.cpus()[0]?.model} x${os.cpus().length}, node ${process.version}; tessera ${tessera.version} ${info.isa} kernels (${info.binary}); ` +
  `node-llama-cpp ${JSON.parse(fs.readFileSync(path.join(ROOT, 'node_modules/node-llama-cpp/package.json'), 'utf8')).version}${systemInfo ? ` (${systemInfo.trim()})` : ''}.`);
out(`Load average (1/5/15 min) at start ${loadStart.map((x) => x.toFixed(2)).join(' ')}, at end ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}.`);
out(`Copy bandwidth (read+write GB/s): 256 MiB: 1 thread ${bounds.copy_256MiB_t1.toFixed(1)}, 2 threads ${bounds.copy_256MiB_t2.toFixed(1)}; ` +
  `32 MiB: 1 thread ${bounds.copy_32MiB_t1.toFixed(1)}, 2 threads ${bounds.copy_32MiB_t2.toFixed(1)}. ` +
  `Read bandwidth (memcmp of 2 x 256 MiB, GB/s read): 1 thread ${bounds.read_256MiB_t1.toFixed(1)}, 2 threads ${bounds.read_256MiB_t2.toFixed(1)}.`);
out();
out('| model | type | threads | engine | prefill tok/s | decode tok/s | prefill ratio t/l | decode ratio t/l | decode weight GB/s | prefill GFLOP/s | RSS MiB before → loaded → after |');
out('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
for (const m of models) {
  for (const threads of threadsList) {
    const t = cell(m.type, threads, 'tessera'), l = cell(m.type, threads, 'llama.cpp');
    for (const engine of engines) {
      const c = engine === 'tessera' ? t : l;
      if (!c) continue;
      const name = `${preset} (${mib(m.fileBytes).toFixed(0)} MiB)`;
      if (c.error) { out(`| ${name} | ${m.type} | ${threads} | ${engine} | error: ${c.error} | | | | | | |`); continue; }
      const mem = `${mib(c.rssBefore).toFixed(0)} → ${mib(c.rssLoaded).toFixed(0)} → ${mib(c.rssAfter).toFixed(0)}`;
      const isT = engine === 'tessera';
      out(`| ${name} | ${m.type} | ${threads} | ${engine} | ${f0(c.prefill)} | ${f1(c.decode)} | ` +
        `${isT ? ratio(t.prefill, l?.prefill) : ''} | ${isT ? ratio(t.decode, l?.decode) : ''} | ` +
        `${((c.decode * m.streamBytes) / 1e9).toFixed(1)} | ${((2 * m.matmulParams * c.prefill) / 1e9).toFixed(0)} | ${mem} |`);
    }
  }
}
out();
out('Best thread count per engine (ratio = tessera best / llama.cpp best):');
out();
out('| type | prefill tessera (t) | prefill llama.cpp (t) | ratio | decode tessera (t) | decode llama.cpp (t) | ratio |');
out('| --- | --- | --- | --- | --- | --- | --- |');
const bestOf = (type, engine, key) => {
  let best;
  for (const th of threadsList) {
    const c = cell(type, th, engine);
    if (c && !c.error && (!best || c[key] > best.v)) best = { v: c[key], th };
  }
  return best;
};
const summary = [];
for (const m of models) {
  const s = { type: m.type };
  for (const key of ['prefill', 'decode']) {
    s[key] = { tessera: bestOf(m.type, 'tessera', key), llamacpp: bestOf(m.type, 'llama.cpp', key) };
  }
  summary.push(s);
  const fmt = (b, f) => (b ? `${f(b.v)} (${b.th})` : '–');
  out(`| ${m.type} | ${fmt(s.prefill.tessera, f0)} | ${fmt(s.prefill.llamacpp, f0)} | ${ratio(s.prefill.tessera?.v, s.prefill.llamacpp?.v)} | ` +
    `${fmt(s.decode.tessera, f1)} | ${fmt(s.decode.llamacpp, f1)} | ${ratio(s.decode.tessera?.v, s.decode.llamacpp?.v)} |`);
}
out();
out('Model facts (decode streams every weight but token_embd once per token; prefill FLOPs = 2 x matmul params x tokens, attention excluded):');
out();
out('| type | file MiB | streamed MiB/token | matmul params (M) | tensor types |');
out('| --- | --- | --- | --- | --- |');
for (const m of models) {
  out(`| ${m.type} | ${mib(m.fileBytes).toFixed(1)} | ${mib(m.streamBytes).toFixed(1)} | ${(m.matmulParams / 1e6).toFixed(1)} | ` +
    `${Object.entries(m.tensorTypes).map(([k, v]) => `${k}:${v}`).join(' ')} |`);
}
out();
out(`Total ${((performance.now() - tStart) / 1000).toFixed(0)} s.`);
console.log(lines.join('\n'));

if (jsonFile) {
  fs.writeFileSync(jsonFile, JSON.stringify({
    date: new Date().toISOString(), preset, promptN, decodeN, reps, rounds, threads: threadsList, engines,
    host: { cpu: os.cpus()[0]?.model, cpus: os.cpus().length, node: process.version, loadavg: os.loadavg() },
    tessera: { version: tessera.version, native: info }, llamaCpp: { systemInfo },
    bounds, models, results, summary, markdown: lines.join('\n'),
  }, null, 2));
  log(`wrote ${jsonFile}`);
}
