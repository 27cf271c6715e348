#!/usr/bin/env node
// Model benchmark, side by side in one process: tessera vs llama.cpp (node-llama-cpp 3.21.1) on
// the same GGUF files, same thread counts. Prefill of a 512-token prompt and single-stream
// greedy decode. Also measures memory copy bandwidth (the bound of decode).
//   node bench/model-bench.mjs [--models DIR] [--threads 1,2] [--types f16,q8_0,q4_0] [--decode 64]
// Models are synthesised on first use (preset 110m: dim 768, 12 layers, FFN 2048, vocab 32000
// from ../shared/models/llama2-vocab.gguf) into DIR (default /tmp/tessera-bench/models).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tessera = require(ROOT);

const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
};
const dir = arg('models', '/tmp/tessera-bench/models');
const threadsList = arg('threads', '1,2').split(',').map(Number);
const types = arg('types', 'f16,q8_0,q4_0').split(',');
const decodeN = Number(arg('decode', '64'));
const vocab = path.join(ROOT, '..', 'shared', 'models', 'llama2-vocab.gguf');
fs.mkdirSync(dir, { recursive: true });

// Deterministic prompt ids (no BOS/EOS/control ids).
const promptIds = (n) => Array.from({ length: n }, (_, i) => 1000 + ((i * 7919) % 28000));

function copyBandwidth() {
  const a = Buffer.alloc(256 * 2 ** 20, 1), b = Buffer.alloc(256 * 2 ** 20);
  a.copy(b);
  const t0 = performance.now();
  for (let i = 0; i < 3; i++) a.copy(b);
  return (3 * 2 * a.length) / ((performance.now() - t0) / 1000) / 1e9; // read + write GB/s
}

async function benchTessera(file, threads) {
  const m = await tessera.loadModel(file, { threads, contextSize: 1024, kvPages: 128, maxBatchTokens: 512 });
  try {
    const noEos = { [m.info.vocabulary.eos]: -Infinity };
    await m.complete(promptIds(16), { maxTokens: 2, temperature: 0 }); // warm-up (page in weights)
    let best = Infinity;
    for (let r = 0; r < 2; r++) {
      const res = await m.complete(promptIds(512), { maxTokens: 1, temperature: 0 });
      best = Math.min(best, res.timings.promptMs);
    }
    const dec = await m.complete(promptIds(8), { maxTokens: decodeN, temperature: 0, logitBias: noEos });
    if (dec.tokens.length !== decodeN) throw new Error(`tessera generated ${dec.tokens.length} tokens`);
    return { prefill: 512 / (best / 1000), decode: dec.timings.tokensPerSecond };
  } finally {
    await m.dispose();
  }
}

let llama;
async function benchLlamaCpp(file, threads) {
  if (!llama) {
    const { getLlama } = await import('node-llama-cpp');
    llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' });
  }
  const model = await llama.loadModel({ modelPath: file });
  try {
    const ctx = await model.createContext({ contextSize: 1024, batchSize: 512, threads, sequences: 1 });
    try {
      const seq = ctx.getSequence();
      await seq.evaluateWithoutGeneratingNewTokens(promptIds(16)); // warm-up
      await seq.clearHistory();
      let best = Infinity;
      for (let r = 0; r < 2; r++) {
        const t0 = performance.now();
        await seq.evaluateWithoutGeneratingNewTokens(promptIds(512));
        best = Math.min(best, performance.now() - t0);
        await seq.clearHistory();
      }
      // Decode: time from the first generated token to the last, greedy (the evaluate generator
      // does not stop at EOS; we stop after decodeN tokens).
      let n = 0;
      let tFirst = 0;
      for await (const token of seq.evaluate(promptIds(8), { temperature: 0 })) {
        void token;
        if (++n === 1) tFirst = performance.now();
        if (n >= decodeN) break;
      }
      const decode = ((n - 1) * 1000) / (performance.now() - tFirst);
      return { prefill: 512 / (best / 1000), decode };
    } finally {
      await ctx.dispose();
    }
  } finally {
    await model.dispose();
  }
}

const rows = [];
const bw = copyBandwidth();
for (const type of types) {
  const file = path.join(dir, `synthetic-110m-${type}.gguf`);
  if (!fs.existsSync(file)) {
    process.stderr.write(`writing ${file}\n`);
    await tessera.writeSyntheticModel(file, { preset: '110m', dtype: type, vocabFrom: vocab, seed: 1 });
  }
  const bytes = fs.statSync(file).size;
  for (const threads of threadsList) {
    const t = await benchTessera(file, threads);
    const l = await benchLlamaCpp(file, threads);
    rows.push({ type, threads, bytes, tessera: t, llamacpp: l });
    process.stderr.write(`${type} t${threads}: tessera ${JSON.stringify(t)} llama.cpp ${JSON.stringify(l)}\n`);
  }
}
await llama?.dispose?.();

const info = tessera.nativeInfo();
console.log(`model bench ${new Date().toISOString().slice(0, 10)}: synthetic 110M (dim 768, 12 layers, FFN 2048, vocab 32000), ` +
  `${info.isa} kernels, node ${process.version}; copy bandwidth ${bw.toFixed(1)} GB/s (read+write)`);
console.log('| type | file | threads | prefill 512 tok/s: tessera | llama.cpp | ratio | decode tok/s: tessera | llama.cpp | ratio | decode GB/s of weights (tessera) |');
console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
for (const r of rows) {
  console.log(`| ${r.type} | ${(r.bytes / 2 ** 20).toFixed(0)} MiB | ${r.threads} | ${r.tessera.prefill.toFixed(0)} | ${r.llamacpp.prefill.toFixed(0)} | ` +
    `${(r.tessera.prefill / r.llamacpp.prefill).toFixed(2)} | ${r.tessera.decode.toFixed(1)} | ${r.llamacpp.decode.toFixed(1)} | ` +
    `${(r.tessera.decode / r.llamacpp.decode).toFixed(2)} | ${((r.tessera.decode * r.bytes) / 1e9).toFixed(1)} |`);
}
const best = (eng, key, type) => Math.max(...rows.filter((r) => r.type === type).map((r) => r[eng][key]));
console.log('\nBest thread count per engine:');
for (const type of types) {
  console.log(`- ${type}: prefill ${(best('tessera', 'prefill', type) / best('llamacpp', 'prefill', type)).toFixed(2)}x llama.cpp, ` +
    `decode ${(best('tessera', 'decode', type) / best('llamacpp', 'decode', type)).toFixed(2)}x llama.cpp`);
}
