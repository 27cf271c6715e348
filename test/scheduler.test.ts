// The scheduler alone, over a fake native model that keeps page accounting like the KV cache and
// records every step: prefill chunks respect maxBatchTokens, decode tokens ride first, preemption
// happens when the pool is full and recomputation gives the same tokens, aborted requests free
// their pages, and close() waits for the step in flight before ending requests.
import { describe, expect, it } from 'vitest';
import { GenerationRequest, type SchedulerRequest } from '../lib/engine/request';
import { Sampler } from '../lib/sampling';
import type { StreamingDecoder } from '../lib/tokenizer';
import { AGE_STEPS, Scheduler } from '../lib/engine/scheduler';
import { DisposedError, OutOfPagesError } from '../lib/errors';
import type { NativeModel } from '../lib/native';

const V = 8; // vocabulary of the fake model
const PAGE = 4;

interface Step {
  seqIds: number[];
  seqTokens: number[];
  tokens: number[];
}

/** Pages and sequence lengths as KvCache keeps them; logits: a one-hot of (sum of the sequence's tokens) % V. */
function fakeNative(pages: number, opts: { delayMs?: number } = {}) {
  const seqs = new Map<number, number[]>();
  let next = 0;
  let busy = false;
  const steps: Step[] = [];
  const used = () => [...seqs.values()].reduce((n, t) => n + Math.ceil(t.length / PAGE), 0);
  const live = () => {
    if (busy) throw new Error('the model is running a forward step');
  };
  const native = {
    createSequence: () => (live(), seqs.set(next, []), next++),
    releaseSequence: (s: number) => (live(), seqs.delete(s)),
    freePages: () => pages - used(),
    pagesNeeded: (ids: Int32Array, n: Int32Array) => {
      let need = 0;
      ids.forEach((s, i) => {
        const len = (seqs.get(s) as number[]).length;
        need += Math.ceil((len + n[i]) / PAGE) - Math.ceil(len / PAGE);
      });
      return need;
    },
    forward: async (step: { tokens: Int32Array; seqIds: Int32Array; seqTokens: Int32Array; logitRows: Int32Array }) => {
      live();
      busy = true;
      steps.push({ seqIds: [...step.seqIds], seqTokens: [...step.seqTokens], tokens: [...step.tokens] });
      const owner: number[] = [];
      const lenAt: number[] = []; // the sequence's length after each token of the step
      let t = 0;
      step.seqIds.forEach((s, i) => {
        const seq = seqs.get(s) as number[];
        for (let j = 0; j < step.seqTokens[i]; j++, t++) {
          seq.push(step.tokens[t]);
          owner.push(s);
          lenAt.push(seq.length);
        }
      });
      if (used() > pages) throw new Error('fake: out of pages');
      await new Promise((r) => setTimeout(r, opts.delayMs ?? 0));
      busy = false;
      const out = new Float32Array(step.logitRows.length * V);
      step.logitRows.forEach((row, r) => {
        const sum = (seqs.get(owner[row]) as number[]).slice(0, lenAt[row]).reduce((a, b) => a + b, 0);
        out[r * V + (sum % V)] = 1;
      });
      return out;
    },
  };
  return { native: native as unknown as NativeModel, steps, used };
}

/** Greedy generation of `n` tokens after `prompt` on the fake model (expected: running sums mod V). */
function expected(prompt: number[], n: number): number[] {
  const seq = [...prompt];
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const tok = seq.reduce((a, b) => a + b, 0) % V;
    out.push(tok);
    seq.push(tok);
  }
  return out;
}

function greedy(prompt: number[], n: number, opts: { aborted?: () => boolean } = {}) {
  const out: number[] = [];
  let resolve!: (e?: Error) => void;
  const done = new Promise<Error | undefined>((r) => (resolve = r));
  const req: SchedulerRequest = {
    pending: [...prompt],
    maxLength: prompt.length + n,
    rowsWanted: (k, last) => (last ? [k - 1] : []),
    onRows: (rows) => {
      if (rows.length === 0) return [];
      const tok = rows.indexOf(1);
      out.push(tok);
      return out.length >= n ? null : [tok];
    },
    onDone: (e) => resolve(e),
    aborted: opts.aborted ?? (() => false),
  };
  return { req, out, done };
}

describe('scheduler', () => {
  it('cuts prompts into chunks of at most maxBatchTokens and puts decode tokens first', async () => {
    const { native, steps } = fakeNative(64);
    const s = new Scheduler(native, { maxBatchTokens: 5, vocabSize: V, maxSequences: 64, kvPages: 64, pageSize: PAGE });
    const a = greedy(Array(40).fill(1), 3); // the older request: a long prompt, chunked
    const b = greedy([2, 3, 4], 8); // newer, short: it fits whole and then decodes while a still prefills
    s.submit(a.req);
    s.submit(b.req);
    await Promise.all([a.done, b.done]);
    expect(a.out).toEqual(expected(Array(40).fill(1), 3));
    expect(b.out).toEqual(expected([2, 3, 4], 8));
    expect(steps.every((st) => st.tokens.length <= 5)).toBe(true);
    // Step 0 (best fit): b whole, the 2 tokens left to a chunk of a.
    const bSeq = steps[0].seqIds[steps[0].seqTokens.indexOf(3)];
    const aSeq = steps[0].seqIds.find((x) => x !== bSeq) as number;
    expect(steps[0].seqTokens[steps[0].seqIds.indexOf(aSeq)]).toBe(2);
    // Then b's decode token rides first, before the older a's prompt chunks.
    const mixed = steps.slice(1).filter((st) => st.seqIds.includes(aSeq) && st.seqIds.includes(bSeq));
    expect(mixed.length).toBeGreaterThanOrEqual(5);
    for (const st of mixed) {
      expect(st.seqIds[0]).toBe(bSeq);
      expect(st.seqTokens[0]).toBe(1);
      expect(st.seqTokens[1]).toBe(4);
    }
  });

  it('preempts the newest request when pages run out; recomputation gives the same tokens', async () => {
    const { native, used } = fakeNative(6);
    const s = new Scheduler(native, { maxBatchTokens: 64, vocabSize: V, maxSequences: 64, kvPages: 6, pageSize: PAGE });
    const reqs = [greedy([1, 2], 14), greedy([3], 15), greedy([5, 5, 5], 12)];
    for (const r of reqs) s.submit(r.req);
    const errors = await Promise.all(reqs.map((r) => r.done));
    expect(errors).toEqual([undefined, undefined, undefined]);
    expect(reqs[0].out).toEqual(expected([1, 2], 14));
    expect(reqs[1].out).toEqual(expected([3], 15));
    expect(reqs[2].out).toEqual(expected([5, 5, 5], 12));
    expect(s.stats().preemptions).toBeGreaterThan(0);
    expect(used()).toBe(0);
    expect(s.stats().kvPagesInUse).toBe(0);
  });

  it('refuses a request that can never fit before it produces a token', () => {
    const { native } = fakeNative(2);
    const s = new Scheduler(native, { maxBatchTokens: 64, vocabSize: V, maxSequences: 64, kvPages: 2, pageSize: PAGE });
    expect(() => s.submit(greedy([1, 2, 3], 10).req)).toThrow(OutOfPagesError);
    expect(s.stats().running + s.stats().waiting).toBe(0);
  });

  it('an aborted request leaves at the next step and frees its pages', async () => {
    const { native, used } = fakeNative(64);
    const s = new Scheduler(native, { maxBatchTokens: 64, vocabSize: V, maxSequences: 64, kvPages: 64, pageSize: PAGE });
    let stop = false;
    const a = greedy([1, 2, 3], 100, { aborted: () => stop });
    const b = greedy([4], 20);
    s.submit(a.req);
    s.submit(b.req);
    while (a.out.length < 3) await new Promise((r) => setImmediate(r));
    stop = true;
    expect(await a.done).toBeUndefined();
    expect(a.out.length).toBeLessThan(10);
    await b.done;
    expect(b.out).toEqual(expected([4], 20));
    expect(used()).toBe(0);
  });

  it('close() waits for the step in flight, then ends every request with its error', async () => {
    const { native, used, steps } = fakeNative(64, { delayMs: 20 });
    const s = new Scheduler(native, { maxBatchTokens: 64, vocabSize: V, maxSequences: 64, kvPages: 64, pageSize: PAGE });
    const a = greedy([1, 2, 3], 100);
    s.submit(a.req);
    while (steps.length === 0) await new Promise((r) => setImmediate(r)); // its first step is in flight now
    const closed = s.close(new DisposedError('disposed'));
    expect(await a.done).toBeInstanceOf(DisposedError);
    await closed;
    expect(used()).toBe(0);
    expect(() => s.submit(greedy([1], 1).req)).toThrow(DisposedError);
  });

  it('a burst submitted in one turn shares the first step', async () => {
    const { native, steps } = fakeNative(64);
    const s = new Scheduler(native, { maxBatchTokens: 64, vocabSize: V, maxSequences: 64, kvPages: 64, pageSize: PAGE });
    const reqs = [[1, 2], [3], [4, 4, 4], [2, 2]].map((p) => greedy(p, 3));
    for (const r of reqs) s.submit(r.req);
    await Promise.all(reqs.map((r) => r.done));
    expect(steps[0].seqIds.length).toBe(4);
  });

  it('admits waiting prompts by best-fit-decreasing over the token budget left', async () => {
    const { native, steps } = fakeNative(64);
    const s = new Scheduler(native, { maxBatchTokens: 10, vocabSize: V, maxSequences: 64, kvPages: 64, pageSize: PAGE });
    const prompts = [[1, 1, 1], [2, 2, 2, 2, 2, 2, 2, 2], [3, 3, 3, 3, 3, 3], [4, 4]];
    const reqs = prompts.map((p) => greedy(p, 2));
    for (const r of reqs) s.submit(r.req);
    await Promise.all(reqs.map((r) => r.done));
    // 10 tokens: the 8-token prompt fits, then of 6, 3, 2 only the 2-token one: 8 + 2, whole.
    expect(steps[0].seqTokens).toEqual([8, 2]);
    expect(steps[0].tokens).toEqual([...prompts[1], ...prompts[3]]);
    reqs.forEach((r, i) => expect(r.out).toEqual(expected(prompts[i], 2)));
    expect(s.stats().paddingAvoided).toBeGreaterThan(0);
  });

  it(`a prompt passed over ${AGE_STEPS} times is admitted first (no request waits forever)`, async () => {
    const { native, steps } = fakeNative(64);
    const s = new Scheduler(native, { maxBatchTokens: 4, vocabSize: V, maxSequences: 64, kvPages: 64, pageSize: PAGE });
    const old = greedy([7, 7, 7], 1); // never the best fit while 4-token prompts wait
    s.submit(old.req);
    const others = Array.from({ length: 20 }, () => greedy([1, 1, 1, 1], 1));
    for (const r of others) s.submit(r.req);
    await Promise.all([old.done, ...others.map((r) => r.done)]);
    const first = steps.findIndex((st) => st.tokens.includes(7));
    expect(first).toBeGreaterThanOrEqual(1); // it was passed over...
    expect(first).toBeLessThanOrEqual(AGE_STEPS); // ...but not for long
  });

  it('never runs more than maxSequences at once', async () => {
    const { native, steps } = fakeNative(64);
    const s = new Scheduler(native, { maxBatchTokens: 64, vocabSize: V, maxSequences: 2, kvPages: 64, pageSize: PAGE });
    const prompts = [[1], [2, 3], [4], [5, 5], [6]];
    const reqs = prompts.map((p) => greedy(p, 4));
    for (const r of reqs) s.submit(r.req);
    await Promise.all(reqs.map((r) => r.done));
    expect(Math.max(...steps.map((st) => st.seqIds.length))).toBe(2);
    reqs.forEach((r, i) => expect(r.out).toEqual(expected(prompts[i], 4)));
  });
});

describe('GenerationRequest', () => {
  it('after a stop string, what the decoder still holds is not appended', async () => {
    // A decoder whose last piece leaves an incomplete character behind (byte-level BPE can).
    const decoder: StreamingDecoder = { push: () => 'abc', flush: () => '\uFFFD' };
    const r = new GenerationRequest({
      promptIds: [1],
      sampler: new Sampler({ temperature: 0 }, V),
      decoder,
      eog: new Set(),
      stopTokens: new Set(),
      stop: ['bc'],
      maxTokens: 10,
      contextSize: 64,
      logprobs: false,
    });
    expect(r.onRows(new Float32Array(0), [1], 0, true, { token: 5, logprob: 0, rngState: new Uint32Array(4) })).toBeNull();
    r.onDone();
    const c = await r.generation.result;
    expect(c.finishReason).toBe('stop');
    expect(c.text).toBe('a');
  });
});
