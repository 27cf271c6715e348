// The TypeScript layer on the GPU (run by bench/gpu/check.sh on the device machine): loads the
// package from <pkg>/dist with its CUDA addon at <pkg>/build-cuda/Release, then
//   1. stories260K (f32, f16, q8_0): loadModel({ device: 'cuda' }) vs { device: 'cpu' }, greedy
//      completions of a few prompts compared token by token (the first difference is reported);
//   2. a synthetic TinyLlama-1.1B-shaped model (written here): prefill and decode tokens/s through
//      the public API (one N-API crossing per step), batch 1 and 8 concurrent requests.
// Prints "RESULT node ..." lines for report.py; exits non-zero when a greedy comparison fails on
// a decisive token (CPU top-2 margin above 0.1; near-ties are counted, not failed).
// Usage: node bench/gpu/node-check.mjs <pkg-dir> <repo-dir>   (models: the repo's test/data/models and
// models/; a missing one is an error)
// (NODE_CHECK_DEVICE=cpu runs the same script with 'cpu' in place of 'cuda': a self-test of the
// script on a machine without a GPU.)
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

const [pkg, repo] = process.argv.slice(2);
/** A model of the repository's test data (test/data/README.md); the demo model lives in models/. */
function modelFile(name) {
  const p = name === 'stories260K-q8_0.gguf' ? path.join(repo, 'models', name) : path.join(repo, 'test', 'data', 'models', name);
  if (!fs.existsSync(p)) throw new Error(`test data file not found: ${p}`);
  return p;
}
const DEV = process.env.NODE_CHECK_DEVICE === 'cpu' ? 'cpu' : 'cuda';
process.env.TESSERA_DEVICE = DEV;
const t = await import(path.resolve(pkg, 'dist', 'index.js'));
const info = t.nativeInfo();
console.log(`# device ${info.device}; binary ${info.binary}; cuda ${JSON.stringify(info.cuda.devices?.[0] ?? info.cuda.reason)}`);
if (info.device !== DEV) {
  console.log('RESULT node skipped reason=no_cuda_addon');
  process.exit(1);
}

let failed = 0;
const prompts = ['Once upon a time', 'The little dog', 'Lily and Ben went to the park. They'];
for (const file of ['stories260K.gguf', 'stories260K-f16.gguf', 'stories260K-q8_0.gguf']) {
  const p = modelFile(file);
  const gpu = await t.loadModel(p, { device: DEV, contextSize: 256 });
  const cpu = await t.loadModel(p, { device: 'cpu', threads: 4, contextSize: 256 });
  let same = 0, total = 0, ties = 0;
  for (const prompt of prompts) {
    // greedy on both; at the first difference, ask whether the CPU saw a near-tie there
    const ids = cpu.tokenize(prompt, { bos: true });
    const ref = await cpu.complete(ids, { maxTokens: 48, temperature: 0, logitBias: { 2: -Infinity } });
    const got = await gpu.complete(ids, { maxTokens: 48, temperature: 0, logitBias: { 2: -Infinity } });
    total += ref.tokens.length;
    let i = 0;
    while (i < ref.tokens.length && ref.tokens[i] === got.tokens[i]) i++;
    same += i;
    if (i < ref.tokens.length) {
      // is the first difference a near-tie on the CPU?
      const ctx = ids.concat(ref.tokens.slice(0, i));
      const logits = await cpu.logits(ctx);
      const row = logits.data.subarray((ctx.length - 1) * info_vocab(cpu), ctx.length * info_vocab(cpu));
      const sorted = Array.from(row).sort((a, b) => b - a);
      const margin = sorted[0] - sorted[1];
      if (margin < 0.1) ties++;
      else failed++;
      console.log(`# ${file} "${prompt}": first difference at token ${i} (cpu ${ref.tokens[i]}, gpu ${got.tokens[i]}, cpu margin ${margin.toFixed(3)})`);
    }
  }
  console.log(`RESULT node greedy model=${file} same_prefix_tokens=${same} of=${total} near_ties=${ties} gpu=${gpu.info.gpu}`);
  await gpu.dispose();
  await cpu.dispose();
}

function info_vocab(m) {
  return m.info.vocabSize;
}

// End to end on a synthetic TinyLlama-1.1B shape.
if (process.env.NODE_CHECK_SKIP_E2E !== '1') {
  const vocab = modelFile('llama2-vocab.gguf');
  const small = process.env.NODE_CHECK_SMALL === '1'; // self-test size
  // the same file as native/bench/cuda_bench.cu's model line (written once per machine)
  const file = small ? path.join(os.tmpdir(), 'tessera-node-small-f16.gguf') : '/tmp/tessera-bench-f16-2048.gguf';
  if (!fs.existsSync(file)) {
    const shape = small ? { dim: 256, layers: 2, heads: 4, kvHeads: 2, ff: 512 } : { dim: 2048, layers: 22, heads: 32, kvHeads: 4, ff: 5632 };
    await t.writeSyntheticModel(file, { ...shape, context: 4096, dtype: 'f16', vocabFrom: vocab });
  }
  const m = await t.loadModel(file, { device: DEV, contextSize: 1024, kvPages: 8 * 64, maxBatchTokens: 4096 });
  const prompt = Array.from({ length: 500 }, (_, i) => 100 + ((i * 37) % 20000));
  const opts = { maxTokens: 64, temperature: 0, logitBias: { 2: -Infinity } };
  await m.complete(prompt, { ...opts, maxTokens: 4 }); // warm-up
  let t0 = performance.now();
  const one = await m.complete(prompt, opts);
  let ms = performance.now() - t0;
  console.log(`RESULT node generate batch=1 prompt=${prompt.length} new=${one.tokens.length} prompt_ms=${one.timings.promptMs.toFixed(1)} ` +
    `decode_tok_per_s=${one.timings.tokensPerSecond.toFixed(1)} wall_ms=${ms.toFixed(0)}`);
  t0 = performance.now();
  const many = await Promise.all(Array.from({ length: 8 }, (_, j) => m.complete(prompt.map((x) => x + j), opts)));
  ms = performance.now() - t0;
  const toks = many.reduce((a, r) => a + r.tokens.length, 0);
  console.log(`RESULT node generate batch=8 prompt=${prompt.length} new=${toks} wall_ms=${ms.toFixed(0)} ` +
    `tok_per_s=${((toks + 8 * prompt.length) / (ms / 1e3)).toFixed(0)} decode_tok_per_s_est=${(toks / (ms / 1e3)).toFixed(1)}`);
  await m.dispose();
}
process.exit(failed === 0 ? 0 : 1);
