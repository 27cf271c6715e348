// The model API on the real stories260K GGUFs (test/data/models, models/) against llama2.c and
// llama.cpp reference outputs (test/data/golden): tokenization, greedy generation, streaming, abort,
// concurrent requests (continuous batching, preemption), seeds, stop strings, logits, bad input.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadModel, nativeInfo, writeSyntheticModel, type Model } from '../dist/index.js';
import { addon } from '../dist/native.js';
import { DATA, LLAMA2_VOCAB, ROOT, STORIES, goldenFile, modelFile } from './data';

interface Case { prompt: string; prompt_ids: number[]; greedy_ids: number[]; text: string }
const golden = (file: string) => (JSON.parse(fs.readFileSync(goldenFile(file), 'utf8')) as { cases: Case[] }).cases;

let model: Model;
beforeAll(async () => {
  model = await loadModel(STORIES, { threads: 1, contextSize: 512, kvPages: 256, kvDtype: 'f32' });
});
afterAll(async () => {
  await model?.dispose();
});

describe('tokenization and greedy generation against llama2.c (F32)', () => {
  const cases = golden('stories260K.greedy.json');

  it('tokenizes the prompts as llama2.c did (BOS first)', () => {
    for (const c of cases) expect(model.tokenize(c.prompt)).toEqual(c.prompt_ids);
  });

  it('the first 100 greedy tokens of every prompt equal llama2.c', async () => {
    for (const c of cases) {
      const r = await model.complete(c.prompt, { temperature: 0, maxTokens: 100 });
      expect(r.tokens).toEqual(c.greedy_ids.slice(0, 100));
      expect(r.promptTokens).toBe(c.prompt_ids.length);
      expect(r.finishReason).toBe('length');
    }
  });

  it('the generated text continues the prompt as in llama2.c', async () => {
    const c = cases[0];
    const r = await model.complete(c.prompt, { temperature: 0, maxTokens: 60 });
    expect(c.text.startsWith(c.prompt + r.text)).toBe(true);
  });

  it('logits of every position match llama2.c within 1e-3', async () => {
    const meta = JSON.parse(fs.readFileSync(goldenFile('stories260K.logits.json'), 'utf8')) as { input_ids: number[] };
    const raw = fs.readFileSync(goldenFile('stories260K.logits.f32'));
    const ref = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
    const t = await model.logits(meta.input_ids);
    expect(t.shape).toEqual([meta.input_ids.length, 512]);
    const got = t.data as Float32Array;
    let max = 0;
    for (let i = 0; i < ref.length; i++) max = Math.max(max, Math.abs(got[i] - ref[i]));
    expect(max).toBeLessThan(1e-3);
  });
});

describe('llama.cpp greedy outputs on the F16 and Q8_0 files', () => {
  for (const variant of ['-f16', '-q8_0']) {
    it(`stories260K${variant}: free-running greedy agrees with llama.cpp at the start`, async () => {
      const m = await loadModel(modelFile(`stories260K${variant}.gguf`), { threads: 1, contextSize: 512 });
      try {
        // Summation order and activation rounding (llama.cpp rounds activations to f16 for f16
        // weights; both engines quantise them to q8_0 in q8_0 decode steps) move near-ties, so
        // most, not all, prompts agree on their first 10 tokens; the native model test compares
        // every position teacher-forced with a tie margin.
        let same = 0;
        const cases = golden(`stories260K${variant}.llamacpp.greedy.json`);
        for (const c of cases) {
          expect(m.tokenize(c.prompt)).toEqual(c.prompt_ids);
          const r = await m.complete(c.prompt_ids, { temperature: 0, maxTokens: 20 });
          if (r.tokens.slice(0, 10).join() === c.greedy_ids.slice(0, 10).join()) same++;
        }
        expect(same).toBeGreaterThanOrEqual(cases.length - 1);
      } finally {
        await m.dispose();
      }
    });
  }
});

describe('generate: streaming, abort, seeds, stops', () => {
  it('streams chunks whose text and tokens make up the result', async () => {
    const g = model.generate('Once upon a time', { temperature: 0, maxTokens: 40, logprobs: 3 });
    let text = '';
    const tokens: number[] = [];
    for await (const chunk of g) {
      text += chunk.text;
      if (chunk.token >= 0) {
        tokens.push(chunk.token);
        expect(chunk.logprob).toBeLessThanOrEqual(0);
        expect(chunk.top).toHaveLength(3);
      }
    }
    const r = await g.result;
    expect(text).toBe(r.text);
    expect(tokens).toEqual(r.tokens);
    expect(r.timings.tokensPerSecond).toBeGreaterThan(0);
  });

  it('honours an AbortSignal', async () => {
    const ac = new AbortController();
    const g = model.generate('Once upon a time', { temperature: 0, maxTokens: 200, signal: ac.signal });
    let n = 0;
    for await (const chunk of g) {
      if (chunk.token >= 0 && ++n === 5) ac.abort();
    }
    const r = await g.result;
    expect(r.finishReason).toBe('abort');
    expect(r.tokens.length).toBeLessThan(20);
  });

  it('stops when the consumer leaves the loop', async () => {
    const g = model.generate('Once upon a time', { temperature: 0, maxTokens: 200 });
    let n = 0;
    for await (const _ of g) if (++n === 3) break;
    const r = await g.result;
    expect(r.finishReason).toBe('abort');
  });

  it('same seed, same text; the seed matters', async () => {
    const a = await model.complete('The dog', { temperature: 1, seed: 7, maxTokens: 40 });
    const b = await model.complete('The dog', { temperature: 1, seed: 7, maxTokens: 40 });
    const c = await model.complete('The dog', { temperature: 1, seed: 8, maxTokens: 40 });
    expect(a.tokens).toEqual(b.tokens);
    expect(c.tokens).not.toEqual(a.tokens);
  });

  it('stop strings end the text before the stop string', async () => {
    const r = await model.complete('Once upon a time', { temperature: 0, maxTokens: 100, stop: ['Lily'] });
    expect(r.finishReason).toBe('stop');
    expect(r.text).toBe(', there was a little girl named ');
  });

  it('stop tokens end the generation', async () => {
    const r = await model.complete('Once upon a time', { temperature: 0, maxTokens: 100, stopTokens: [376] });
    expect(r.finishReason).toBe('stop');
    expect(r.tokens.at(-1)).toBe(376);
  });

  it('maxTokens 0 generates nothing', async () => {
    const r = await model.complete('Once', { maxTokens: 0 });
    expect(r.tokens).toEqual([]);
    expect(r.text).toBe('');
  });
});

describe('continuous batching', () => {
  it('concurrent requests give the same tokens as one at a time', async () => {
    const prompts = golden('stories260K.greedy.json').map((c) => c.prompt);
    const alone = [];
    for (const p of prompts) alone.push((await model.complete(p, { temperature: 0, maxTokens: 30 })).tokens);
    const together = await Promise.all(prompts.map((p) => model.complete(p, { temperature: 0, maxTokens: 30 })));
    expect(together.map((r) => r.tokens)).toEqual(alone);
  });

  it('preempts and recomputes when the KV pages run out, without changing results', async () => {
    // 12 pages of 16 tokens: not enough for four 60-token sequences at once.
    const small = await loadModel(STORIES, { threads: 1, contextSize: 128, kvPages: 12, kvDtype: 'f32' });
    try {
      const prompts = ['Once upon a time', 'The cat', 'Lily and Ben', 'One day'];
      const expected = [];
      for (const p of prompts) expected.push((await model.complete(p, { temperature: 0, maxTokens: 50 })).tokens);
      const got = await Promise.all(prompts.map((p) => small.complete(p, { temperature: 0, maxTokens: 50 })));
      expect(got.map((r) => r.tokens)).toEqual(expected);
    } finally {
      await small.dispose();
    }
  });

  it('the event loop keeps ticking while a forward step runs', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-model-'));
    const file = path.join(dir, 'synthetic.gguf');
    try {
      await writeSyntheticModel(file, { dim: 512, layers: 4, heads: 8, kvHeads: 8, ff: 1376, context: 1024, dtype: 'f16', vocabFrom: LLAMA2_VOCAB });
      const m = await loadModel(file, { threads: 1, contextSize: 1024 });
      try {
        let ticks = 0;
        const timer = setInterval(() => ticks++, 1);
        const t0 = performance.now();
        await m.logits(Array.from({ length: 768 }, (_, i) => 100 + (i % 1000)));
        const ms = performance.now() - t0;
        clearInterval(timer);
        expect(ms).toBeGreaterThan(20);
        expect(ticks).toBeGreaterThan(ms / 20); // a blocked loop would tick once or never
      } finally {
        await m.dispose();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('weights are repacked on a worker thread: the native constructor packs nothing, repack() does', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-model-'));
    const file = path.join(dir, 'synthetic-q8_0.gguf');
    try {
      await writeSyntheticModel(file, { dim: 512, layers: 4, heads: 8, kvHeads: 8, ff: 1376, context: 512, dtype: 'q8_0', vocabFrom: LLAMA2_VOCAB });
      const native = new (addon().NativeModel)(file, { threads: 1, contextSize: 512, kvPages: 0, pageSize: 16, kvDtype: 'f16' });
      try {
        expect(native.info().packedBytes).toBe(0);
        const done = native.repack();
        expect(done).toBeInstanceOf(Promise);
        expect(() => native.createSequence()).toThrow(/repacking/); // busy while it runs
        await done;
        const int8 = nativeInfo().int8Path !== 'none';
        expect(native.info().packedBytes > 0).toBe(int8);
        await native.repack(); // a second call is a no-op
        expect(native.info().packedBytes > 0).toBe(int8);
      } finally {
        native.dispose();
      }
      const m = await loadModel(file, { threads: 1, contextSize: 512 });
      try {
        expect(m.info.packedBytes > 0).toBe(nativeInfo().int8Path !== 'none');
        expect((await m.complete('Once', { maxTokens: 4, temperature: 0, logitBias: { 2: -Infinity } })).tokens).toHaveLength(4);
      } finally {
        await m.dispose();
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('bad input', () => {
  it('rejects a prompt longer than the context', () => {
    expect(() => model.generate(Array.from({ length: 600 }, () => 5))).toThrow(RangeError);
    expect(() => model.generate(Array.from({ length: 600 }, () => 5))).toThrow(/context size/);
  });
  it('rejects negative maxTokens, unknown options, bad token ids, empty prompts', () => {
    expect(() => model.generate('x', { maxTokens: -1 })).toThrow(RangeError);
    expect(() => model.generate('x', { temprature: 0 } as never)).toThrow(/temprature/);
    expect(() => model.generate([1, 99999])).toThrow(/token id/);
    expect(() => model.generate([])).toThrow(/empty/);
    expect(() => model.generate('x', { stop: [''] })).toThrow(TypeError);
  });
  it('rejects missing, truncated and non-GGUF files, and unknown load options', async () => {
    await expect(loadModel(path.join(DATA, 'models', 'nope.gguf'))).rejects.toThrow(/no such file/);
    await expect(loadModel(path.join(ROOT, 'package.json'))).rejects.toThrow(/bad magic/);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-bad-'));
    try {
      const bytes = fs.readFileSync(STORIES);
      for (const cut of [10, 1000, bytes.length - 100]) {
        const f = path.join(dir, `cut${cut}.gguf`);
        fs.writeFileSync(f, bytes.subarray(0, cut));
        await expect(loadModel(f)).rejects.toThrow(/cut/);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    await expect(loadModel(LLAMA2_VOCAB)).rejects.toThrow(/token_embd/);
    await expect(loadModel(STORIES, { treads: 2 } as never)).rejects.toThrow(/unknown option "treads"/);
    await expect(loadModel(STORIES, { device: 'gpu' } as never)).rejects.toThrow(/'cpu', 'cuda' or 'auto'/);
  });
  it("device 'cuda' runs on the GPU where the CUDA addon is usable, and says why not elsewhere", async () => {
    const file = STORIES;
    if (nativeInfo().device !== 'cuda') {
      await expect(loadModel(file, { device: 'cuda' })).rejects.toThrow(/device 'cuda': .*(CUDA|cuda)/);
      // the binding refuses too when the binary has no CUDA backend
      if (!nativeInfo().cuda.compiled) {
        expect(() => new (addon().NativeModel)(file, { device: 'cuda', threads: 1, contextSize: 64, kvPages: 0, pageSize: 16, kvDtype: 'f16' })).toThrow(
          /built without the CUDA backend/,
        );
      }
      const m = await loadModel(file, { threads: 1, device: 'auto' });
      expect(m.info.device).toBe('cpu');
      await m.dispose();
      return;
    }
    // On a GPU: greedy on the GPU equals greedy on the CPU for this f32 model (no tensor cores).
    const gpu = await loadModel(file, { device: 'cuda', contextSize: 256 });
    const cpu = await loadModel(file, { device: 'cpu', threads: 1, contextSize: 256 });
    try {
      expect(gpu.info.device).toBe('cuda');
      const opts = { maxTokens: 32, temperature: 0, logitBias: { 2: -Infinity } };
      expect((await gpu.complete('Once upon a time', opts)).tokens).toEqual((await cpu.complete('Once upon a time', opts)).tokens);
    } finally {
      await gpu.dispose();
      await cpu.dispose();
    }
  });
  it('a disposed model refuses work; dispose twice is fine', async () => {
    const m = await loadModel(STORIES, { threads: 1 });
    expect(m.info.architecture).toBe('llama');
    expect(m.info.vocabSize).toBe(512);
    await m[Symbol.asyncDispose]();
    await m.dispose();
    expect(() => m.tokenize('x')).toThrow(/disposed/);
    expect(() => m.generate('x')).toThrow(/disposed/);
  });
});
