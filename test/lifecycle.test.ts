// Request lifecycle: no request is ever lost. Hand-written cases for the bugs found by trying the
// API as a new user (a request submitted right after another one ends; dispose during a
// generation; a KV pool smaller than one context), then a randomized test: hundreds of seeded
// interleavings of submit / await / break / abort / stop / logits / dispose over a small page
// pool, where every request must end with its solo-run tokens or a typed error, no promise may
// stay pending, and the pages in use must return to zero.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DisposedError, loadModel, type Completion, type GenerateOptions, type LoadProgress, type Model } from '../lib';
import { addon, demoModelPath, nativeInfo } from '../lib/native';
import { mulberry32 as rng } from './reference';

const ROOT = path.resolve(__dirname, '..');
const MODEL = demoModelPath; // stories260K Q8_0, in the repo
const CTX = 64;

/** Rejects when `p` has not settled after `ms`: a pending promise fails the test instead of hanging it. */
function settleWithin<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`still pending after ${ms} ms: ${what}`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

let ref: Model; // generous pool, one request at a time: the solo runs
beforeAll(async () => {
  ref = await loadModel(MODEL, { threads: 1, contextSize: CTX, kvPages: 64, pageSize: 4 });
});
afterAll(async () => {
  await ref?.dispose();
});

const soloCache = new Map<string, Completion>();
async function solo(prompt: string, opts: GenerateOptions): Promise<Completion> {
  const key = JSON.stringify([prompt, opts]);
  let r = soloCache.get(key);
  if (!r) {
    r = await ref.complete(prompt, opts);
    soloCache.set(key, r);
  }
  return r;
}

describe('a request submitted right after another one ends is scheduled', () => {
  let m: Model;
  beforeAll(async () => {
    m = await loadModel(MODEL, { threads: 1, contextSize: CTX });
  });
  afterAll(async () => {
    await m?.dispose();
  });
  const next = () => settleWithin(m.complete('The cat', { temperature: 0, maxTokens: 8 }), 5000, 'the second request');

  it('after awaiting result', async () => {
    await m.generate('Once upon a time', { maxTokens: 20, temperature: 0 }).result;
    expect((await next()).tokens).toEqual((await solo('The cat', { temperature: 0, maxTokens: 8 })).tokens);
  });
  it('after breaking out of for await', async () => {
    const g = m.generate('Once upon a time', { maxTokens: 20, temperature: 0 });
    for await (const _ of g) break;
    expect((await settleWithin(g.result, 5000, 'the broken generation')).finishReason).toBe('abort');
    expect((await next()).tokens.length).toBe(8);
  });
  it('after an abort', async () => {
    const ac = new AbortController();
    const g = m.generate('Once upon a time', { maxTokens: 20, temperature: 0, signal: ac.signal });
    for await (const _ of g) ac.abort();
    expect((await g.result).finishReason).toBe('abort');
    expect((await next()).tokens.length).toBe(8);
  });
  it('after a stop-string finish', async () => {
    const r = await m.complete('Once upon a time', { maxTokens: 40, temperature: 0, stop: ['girl'] });
    expect(r.finishReason).toBe('stop');
    expect((await next()).tokens.length).toBe(8);
  });
  it('from inside the previous result callback', async () => {
    const second = await m.generate('Once upon a time', { maxTokens: 5, temperature: 0 }).result.then(() => next());
    expect(second.tokens.length).toBe(8);
  });
  it('in CommonJS, the process prints the second output before it exits', () => {
    const script = `
      const { loadModel, demoModelPath } = require(${JSON.stringify(path.join(ROOT, 'dist'))});
      (async () => {
        const model = await loadModel(demoModelPath, { threads: 1 });
        await model.generate('Once upon a time', { maxTokens: 20 }).result;
        const r = await model.complete('The cat', { maxTokens: 10, temperature: 0 });
        console.log('second:' + r.tokens.length);
        await model.dispose();
      })();`;
    const res = spawnSync(process.execPath, ['-e', script], { encoding: 'utf8', timeout: 30000 });
    expect(res.stderr).toBe('');
    expect(res.stdout.trim()).toBe('second:10');
  });
});

describe('dispose', () => {
  it('during a generation ends the stream with DisposedError, waits for the step and resolves', async () => {
    const m = await loadModel(MODEL, { threads: 1, contextSize: CTX });
    const g = m.generate('Once upon a time', { maxTokens: 50, temperature: 0 });
    let n = 0;
    let disposed: Promise<void> | undefined;
    let caught: unknown;
    try {
      for await (const _ of g) if (++n === 3) disposed = m.dispose();
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(DisposedError);
    await expect(settleWithin(g.result, 5000, 'result')).rejects.toBeInstanceOf(DisposedError);
    await settleWithin(disposed as Promise<void>, 5000, 'dispose()');
    expect(() => m.generate('x')).toThrow(DisposedError);
    expect(() => m.tokenize('x')).toThrow(DisposedError);
    expect(() => m.stats()).toThrow(DisposedError);
    await expect(m.complete('x')).rejects.toBeInstanceOf(DisposedError);
    await expect(m.logits([1, 2])).rejects.toBeInstanceOf(DisposedError);
    await m.dispose(); // twice is fine
  });

  it('during logits() rejects it with DisposedError', async () => {
    const m = await loadModel(MODEL, { threads: 1, contextSize: 512, maxBatchTokens: 64 });
    const l = m.logits(Array.from({ length: 500 }, (_, i) => 1 + (i % 500)));
    while (m.stats().running === 0) await new Promise((r) => setImmediate(r)); // its steps are running
    const d = m.dispose();
    await expect(settleWithin(l, 5000, 'logits')).rejects.toBeInstanceOf(DisposedError);
    await settleWithin(d, 5000, 'dispose()');
  });

  it('in the same tick as complete() rejects it; dispose() is not rejected', async () => {
    const m = await loadModel(MODEL, { threads: 1, contextSize: CTX });
    const c = m.complete('The cat', { maxTokens: 10 });
    const d = m.dispose();
    await expect(settleWithin(c, 5000, 'complete')).rejects.toBeInstanceOf(DisposedError);
    await expect(settleWithin(d, 5000, 'dispose()')).resolves.toBeUndefined();
  });
});

describe('a small KV page pool', () => {
  it('smaller than one full context is refused at load, naming the minimum', async () => {
    await expect(loadModel(MODEL, { contextSize: 512, kvPages: 2, pageSize: 4 })).rejects.toThrow(/kvPages = 2 is too small.*needs 128 pages/);
    await expect(loadModel(MODEL, { contextSize: 64, kvPages: 3 })).rejects.toThrow(/kvPages >= 4/);
  });

  it('preempts and resumes when pages run out mid-generation: nothing fails, tokens equal the solo runs', async () => {
    // 16 pages of 4 tokens = one full context of 64; four requests of up to ~50 tokens need far more.
    const m = await loadModel(MODEL, { threads: 1, contextSize: CTX, kvPages: 16, pageSize: 4 });
    try {
      const prompts = ['Once upon a time', 'The cat', 'Lily and Ben', 'One day'];
      const opts = { temperature: 0, maxTokens: 40 };
      const got = await settleWithin(Promise.all(prompts.map((p) => m.complete(p, opts))), 20000, 'four requests');
      for (let i = 0; i < prompts.length; i++) expect(got[i].tokens).toEqual((await solo(prompts[i], opts)).tokens);
      const s = m.stats();
      expect(s.preemptions).toBeGreaterThan(0);
      expect(s.kvPagesInUse).toBe(0);
      expect(s.running + s.waiting).toBe(0);
    } finally {
      await m.dispose();
    }
  });
});

describe('completeBatch', () => {
  it('completes prompts together, in order, with the same tokens as one at a time', async () => {
    const m = await loadModel(MODEL, { threads: 1, contextSize: CTX, maxBatchTokens: 16 });
    try {
      const prompts = ['Once upon a time', 'The cat', 'Lily and Ben', 'One day', 'The sun was hot and'];
      const opts = prompts.map((_, i) => ({ temperature: i % 2 ? 0.8 : 0, seed: i, maxTokens: 10 + i }));
      const got = await settleWithin(m.completeBatch(prompts, opts), 20000, 'completeBatch');
      for (let i = 0; i < prompts.length; i++) expect(got[i].tokens).toEqual((await solo(prompts[i], opts[i])).tokens);
      const st = m.stats();
      expect(st.paddingAvoided).toBeGreaterThan(0);
      expect(st.promptTokens).toBeGreaterThan(0);
      expect(st.decodeTokens).toBeGreaterThan(0);
      expect(st.kvPagesInUse).toBe(0);
    } finally {
      await m.dispose();
    }
  });

  it('checks every prompt first: a bad one rejects naming it and leaves nothing running', async () => {
    const m = await loadModel(MODEL, { threads: 1, contextSize: CTX });
    try {
      await expect(m.completeBatch(['Once', [1, 99999], 'The cat'])).rejects.toThrow(/completeBatch: prompts\[1\]: generate: ids\[1\] = 99999/);
      await expect(m.completeBatch(['a', 'b'], [{}])).rejects.toThrow(/options has 1 entries for 2 prompts/);
      await new Promise((r) => setTimeout(r, 50));
      expect(m.stats().running + m.stats().waiting).toBe(0);
      expect(m.stats().kvPagesInUse).toBe(0);
    } finally {
      await m.dispose();
    }
  });

  it('maxSequences must be a positive integer', async () => {
    await expect(loadModel(MODEL, { maxSequences: 0 })).rejects.toThrow(/maxSequences must be in \[1, 65536\], got 0/);
  });
});

describe('sampling in the step', () => {
  it('the same seed gives the same tokens on every run and at 1 and 2 threads', async () => {
    const opts = { temperature: 0.8, topP: 0.9, topK: 40, repeatPenalty: 1.1, seed: 3, maxTokens: 40, logprobs: 3 };
    const runs: Completion[] = [];
    for (const threads of [1, 2, 1]) {
      const m = await loadModel(MODEL, { threads, contextSize: CTX });
      try {
        runs.push(await m.complete('Once upon a time', opts));
      } finally {
        await m.dispose();
      }
    }
    expect(runs[1].tokens).toEqual(runs[0].tokens);
    expect(runs[2].tokens).toEqual(runs[0].tokens);
    expect(runs[0].tokens).not.toEqual((await solo('Once upon a time', { ...opts, seed: 4 })).tokens);
  });

  it('a row that cannot be sampled fails its own request only; the others in the step go on', async () => {
    const m = await loadModel(MODEL, { threads: 1, contextSize: CTX });
    try {
      const opts = { temperature: 0, maxTokens: 12 };
      const good = m.complete('The cat', opts);
      const bad = m.complete('Once upon a time', { temperature: 0, maxTokens: 12, logitBias: { 5: 1e39 } }); // overflows float32
      const good2 = m.complete('One day', opts);
      await expect(settleWithin(bad, 5000, 'the bad request')).rejects.toThrow(/Infinity/);
      expect((await settleWithin(good, 5000, 'good')).tokens).toEqual((await solo('The cat', opts)).tokens);
      expect((await settleWithin(good2, 5000, 'good2')).tokens).toEqual((await solo('One day', opts)).tokens);
      expect(m.stats().kvPagesInUse).toBe(0);
    } finally {
      await m.dispose();
    }
  });

  it('a logit bias that bans every token is refused up front', async () => {
    const logitBias = Object.fromEntries(Array.from({ length: ref.info.vocabSize }, (_, i) => [i, -Infinity]));
    expect(() => ref.generate('Once', { logitBias })).toThrow(/logitBias bans every token/);
  });
});

describe('loading', () => {
  it('reports progress: mapping, then repacking per layer, then ready; fractions only grow', async () => {
    const seen: LoadProgress[] = [];
    const m = await loadModel(MODEL, { threads: 1, contextSize: CTX, onProgress: (p) => seen.push(p) });
    await m.dispose();
    expect(seen[0]).toEqual({ phase: 'mapping', fraction: 0 });
    expect(seen.at(-1)).toEqual({ phase: 'ready', fraction: 1 });
    const fractions = seen.map((p) => p.fraction);
    expect(fractions).toEqual([...fractions].sort((a, b) => a - b));
    const repacking = seen.filter((p) => p.phase === 'repacking');
    // With the int8 path the 5 layers and the output matrix are repacked one report at a time.
    expect(repacking.length).toBeGreaterThanOrEqual(nativeInfo().int8Path === 'none' ? 1 : 6);
    expect(repacking.every((p) => p.fraction > 0 && p.fraction < 1)).toBe(true);
  });

  it('an onProgress that throws makes loadModel reject with its error (nothing leaks)', async () => {
    const boom = new Error('progress callback failed');
    await expect(
      loadModel(MODEL, {
        onProgress: (p) => {
          if (p.phase === 'repacking' && p.fraction > 0.05) throw boom;
        },
      }),
    ).rejects.toBe(boom);
  });

  it('native forward: a getter that disposes the model or starts another step is refused, not a crash', async () => {
    const native = new (addon().NativeModel)(MODEL, { device: 'cpu', threads: 1, contextSize: CTX, kvPages: 0, pageSize: 16, kvDtype: 'f16' });
    await native.repack();
    const seq = native.createSequence();
    const step = (extra: object) => ({ seqIds: Int32Array.of(seq), seqTokens: Int32Array.of(1), logitRows: Int32Array.of(0), ...extra });
    let inner: Promise<unknown> | undefined;
    expect(() =>
      native.forward(
        step({
          get tokens() {
            inner = native.forward(step({ tokens: Int32Array.of(1) }));
            return Int32Array.of(1);
          },
        }) as never,
      ),
    ).toThrow(/running a forward step/);
    await inner;
    expect(() =>
      native.forward(
        step({
          get tokens() {
            native.dispose();
            return Int32Array.of(1);
          },
        }) as never,
      ),
    ).toThrow(/disposed/);
  });

  it('rejects an onProgress that is not a function', async () => {
    await expect(loadModel(MODEL, { onProgress: 3 as never })).rejects.toThrow(/expected a function for onProgress/);
  });
});

const PROMPTS = ['Once upon a time', 'The cat', 'Lily and Ben', 'One day', 'The sun was hot and', 'Tom had a big red ball'];
const LOGIT_IDS = [1, 403, 407, 261, 461, 2, 1, 9, 286];

type Action = 'await' | 'stream' | 'break' | 'abort' | 'abortEarly' | 'logits';

describe('randomized lifecycle', () => {
  const SCENARIOS = 300;
  it(`${SCENARIOS} seeded interleavings: every request ends with its solo tokens or a typed error, none stays pending, pages return to zero`, async () => {
    const refLogits = new Map<number, Float32Array>();
    for (let len = 1; len <= LOGIT_IDS.length; len++) refLogits.set(len, (await ref.logits(LOGIT_IDS.slice(0, len))).data as Float32Array);
    const counts: Record<string, number> = {};
    const count = (k: string) => (counts[k] = (counts[k] ?? 0) + 1);
    let preemptions = 0;

    for (let seed = 1; seed <= SCENARIOS; seed++) {
      const r = rng(seed);
      const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
      const pageSize = pick([2, 4, 8]);
      const minPages = CTX / pageSize;
      const m = await loadModel(MODEL, {
        threads: 1,
        contextSize: CTX,
        pageSize,
        kvPages: minPages + Math.floor((r() * minPages) / 2), // one to 1.5 contexts: preemption is common
        maxBatchTokens: pick([4, 16, 64, 512]),
      });
      const willDispose = r() < 0.25;
      let disposed = false;
      let disposeP: Promise<void> | undefined;
      let chunksSeen = 0;
      const disposeAfter = Math.floor(r() * 40);
      const maybeDispose = () => {
        if (willDispose && !disposed && chunksSeen >= disposeAfter) {
          disposed = true;
          disposeP = m.dispose();
        }
      };
      const nReq = 1 + Math.floor(r() * 6);
      const tasks: Promise<void>[] = [];
      const ctxt = `seed ${seed}`;
      let prev: Promise<unknown> = Promise.resolve();

      for (let i = 0; i < nReq; i++) {
        const action = pick<Action>(['await', 'await', 'stream', 'break', 'abort', 'abortEarly', 'logits']);
        count(action);
        const prompt = pick(PROMPTS);
        const opts: GenerateOptions = { maxTokens: 1 + Math.floor(r() * 48) };
        if (r() < 0.5) opts.temperature = 0;
        else Object.assign(opts, { temperature: 0.9, seed: Math.floor(r() * 1000) });
        if (r() < 0.3) opts.stop = [pick([' the', 'a', '.', 'girl'])];
        const k = Math.floor(r() * 8); // chunks before break/abort
        const after = pick(['now', 'tick', 'previous'] as const); // when it is submitted
        const where = `${ctxt} request ${i} (${action}, ${JSON.stringify(prompt)}, ${JSON.stringify(opts)})`;

        const run = async (): Promise<void> => {
          if (after === 'tick') await new Promise((res) => setImmediate(res));
          if (after === 'previous') await prev.catch(() => {});
          if (disposed) {
            // Use after dispose: a typed error, synchronously or as a rejection.
            if (action === 'logits') await expect(m.logits([1])).rejects.toBeInstanceOf(DisposedError);
            else expect(() => m.generate(prompt, opts)).toThrow(DisposedError);
            count('usedAfterDispose');
            return;
          }
          try {
            if (action === 'logits') {
              const ids = LOGIT_IDS.slice(0, 1 + (k % LOGIT_IDS.length));
              const t = await m.logits(ids);
              expect(t.data, where).toEqual(refLogits.get(ids.length));
              count('logitsOk');
              return;
            }
            const ac = new AbortController();
            if (action === 'abortEarly') ac.abort();
            const g = m.generate(prompt, { ...opts, signal: ac.signal });
            const streamed: number[] = [];
            if (action !== 'await') {
              let n = 0;
              for await (const c of g) {
                if (c.token >= 0) streamed.push(c.token);
                chunksSeen++;
                maybeDispose();
                if (++n > k && action === 'break') break;
                if (n > k && action === 'abort') ac.abort();
              }
            }
            const res = await g.result;
            const want = (await solo(prompt, opts)).tokens;
            if (res.finishReason === 'abort') {
              expect(action === 'break' || action === 'abort' || action === 'abortEarly', where).toBe(true);
              expect(want.slice(0, res.tokens.length), where).toEqual(res.tokens);
              count('aborted');
            } else {
              expect(res.tokens, where).toEqual(want);
              expect(res.finishReason, where).toBe((await solo(prompt, opts)).finishReason);
              count('finished');
            }
            if (action === 'stream') expect(streamed, where).toEqual(res.tokens);
          } catch (e) {
            // The only error a request may end with here: the model was disposed under it.
            expect(e, `${where}: ${(e as Error)?.stack}`).toBeInstanceOf(DisposedError);
            expect(disposed, where).toBe(true);
            count('disposedError');
          }
        };
        const t = run();
        tasks.push(t);
        prev = t;
        if (willDispose && r() < 0.15) {
          chunksSeen = disposeAfter; // dispose right after submitting, in the same tick
          maybeDispose();
        }
      }
      await settleWithin(Promise.all(tasks), 20000, `${ctxt}: a request`);
      if (disposeP) {
        await settleWithin(disposeP, 5000, `${ctxt}: dispose()`);
      } else {
        const s = m.stats();
        preemptions += s.preemptions;
        expect(s.kvPagesInUse, `${ctxt}: pages in use at the end`).toBe(0);
        expect(s.running + s.waiting, `${ctxt}: requests left`).toBe(0);
        await settleWithin(m.dispose(), 5000, `${ctxt}: dispose()`);
      }
    }
    console.log(`randomized lifecycle: ${SCENARIOS} scenarios, ${preemptions} preemptions`, counts);
    expect(preemptions).toBeGreaterThan(0);
    expect(counts.disposedError ?? 0).toBeGreaterThan(0);
    expect(counts.finished ?? 0).toBeGreaterThan(0);
    expect(counts.aborted ?? 0).toBeGreaterThan(0);
  }, 240_000);
});
