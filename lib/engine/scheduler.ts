// Continuous batching: every step packs the pending tokens of the running requests into one
// forward call (decode tokens first, then prompt chunks up to maxBatchTokens), within the free
// KV pages. Waiting prompts are admitted by best-fit-decreasing over the token budget left
// (Prepacking, arXiv 2404.09529): the longest prompts that fit whole go first, the rest of the
// budget goes to a chunk of the oldest one, and a prompt passed over AGE_STEPS times goes first,
// so none waits forever. At most maxSequences run at once. When the pool is full, the newest
// request is preempted (its sequence released and its tokens recomputed later), as vLLM does; a
// request that cannot fit even alone is refused before it produces a token.
//
// Lifecycle: the step loop runs while any request is active or waiting and decides to stop in
// the same synchronous turn in which it clears its running flag, so a request submitted at any
// moment either joins the running loop or starts a new one. close() waits for the step in flight
// (native sequences cannot be released while a step runs), then ends every request with the
// given error.
import { DisposedError, OutOfPagesError } from '../errors';
import type { NativeModel, NativeSampledStep, NativeSamplingOptions } from '../native';
import type { SampledToken, SchedulerRequest } from './request';

export type { SchedulerRequest } from './request';

interface Active {
  req: SchedulerRequest;
  seq: number;
  /** Every token fed so far (for recomputation after preemption). */
  fed: number[];
  arrival: number;
  /** Steps this request waited for admission while others were admitted (the aging rule). */
  passedOver: number;
  submittedAt: number;
  /** The step count when it was last preempted (-1: never). */
  preemptedAt: number;
}

interface StepEntry {
  a: Active;
  tokens: number[];
  last: boolean;
}

/** A waiting prompt passed over this many times is admitted before any other. */
export const AGE_STEPS = 8;

export interface SchedulerOptions {
  maxBatchTokens: number;
  /** Most requests holding a sequence at once. */
  maxSequences: number;
  vocabSize: number;
  /** KV pages in the pool and tokens per page (for the fit-alone check). */
  kvPages: number;
  pageSize: number;
}

/** What the scheduler holds right now. */
export interface SchedulerStats {
  /** Requests with a sequence in the KV cache. */
  running: number;
  /** Requests waiting for admission (new, or preempted and waiting to be recomputed). */
  waiting: number;
  /** KV pages held by sequences, as of the last step boundary. */
  kvPagesInUse: number;
  kvPages: number;
  /** Requests preempted (their KV released and recomputed later) since the model was loaded. */
  preemptions: number;
  /** Forward steps run since the model was loaded. */
  steps: number;
  /** Tokens fed since the model was loaded: prompt (and recomputed) tokens, and decode tokens. */
  promptTokens: number;
  decodeTokens: number;
  /**
   * Token slots a padded batch (every sequence of a step padded to its longest chunk) would have
   * computed on top of these, summed over the steps: the work packing avoided.
   */
  paddingAvoided: number;
  /** Mean time from submit to first admission, in ms, over the requests admitted so far. */
  meanQueueWaitMs: number;
}

export class Scheduler {
  #native: NativeModel;
  #opts: SchedulerOptions;
  #active: Active[] = [];
  #waiting: Active[] = [];
  /** True from the moment a loop starts until the turn in which it decides to stop. */
  #looping = false;
  #loopDone: Promise<void> = Promise.resolve();
  #arrivals = 0;
  #closed = false;
  #freePages: number;
  #preemptions = 0;
  #steps = 0;
  #promptTokens = 0;
  #decodeTokens = 0;
  #paddingAvoided = 0;
  #admitted = 0;
  #queueWaitMs = 0;

  constructor(native: NativeModel, opts: SchedulerOptions) {
    this.#native = native;
    this.#opts = opts;
    this.#freePages = native.freePages();
  }

  /** Adds a request; the step loop starts if it is idle. Throws DisposedError after close(). */
  submit(req: SchedulerRequest): void {
    if (this.#closed) throw new DisposedError('the model was disposed');
    const need = Math.ceil(req.maxLength / this.#opts.pageSize);
    if (need > this.#opts.kvPages) {
      // Checked before the request is queued: it fails at once, before any token is produced.
      throw new OutOfPagesError(
        `out of KV pages: a request of up to ${req.maxLength} tokens needs ${need} pages but the pool has ${this.#opts.kvPages} ` +
          `(raise kvPages when loading the model, or lower maxTokens)`,
      );
    }
    this.#waiting.push({ req, seq: -1, fed: [], arrival: this.#arrivals++, passedOver: 0, submittedAt: performance.now(), preemptedAt: -1 });
    if (!this.#looping) {
      this.#looping = true;
      // Start on the next microtask, so a burst submitted in one turn shares the first step.
      this.#loopDone = Promise.resolve()
        .then(() => this.#loop())
        .catch(() => {}); // #loop ends every request itself; never an unhandled rejection
    }
  }

  stats(): SchedulerStats {
    return {
      running: this.#active.length,
      waiting: this.#waiting.length,
      kvPagesInUse: this.#opts.kvPages - this.#freePages,
      kvPages: this.#opts.kvPages,
      preemptions: this.#preemptions,
      steps: this.#steps,
      promptTokens: this.#promptTokens,
      decodeTokens: this.#decodeTokens,
      paddingAvoided: this.#paddingAvoided,
      meanQueueWaitMs: this.#admitted ? this.#queueWaitMs / this.#admitted : 0,
    };
  }

  /**
   * Stops accepting requests, waits for the step in flight, then ends every request with `error`
   * (their KV pages are released). Resolves when nothing runs any more.
   */
  async close(error: Error): Promise<void> {
    this.#closed = true;
    while (this.#looping) await this.#loopDone;
    for (const a of [...this.#active, ...this.#waiting]) this.#finish(a, error);
  }

  #finish(a: Active, error?: Error): void {
    if (a.seq >= 0) {
      this.#native.releaseSequence(a.seq);
      a.seq = -1;
      this.#freePages = this.#native.freePages();
    }
    this.#active = this.#active.filter((x) => x !== a);
    this.#waiting = this.#waiting.filter((x) => x !== a);
    try {
      a.req.onDone(error);
    } catch {
      // onDone belongs to the model layer and does not throw; never let one request stop the loop
    }
  }

  async #loop(): Promise<void> {
    try {
      for (;;) {
        // Decide whether to stop in the same synchronous turn that clears #looping.
        if (this.#closed || (this.#active.length === 0 && this.#waiting.length === 0)) {
          this.#looping = false;
          return;
        }
        await this.#step();
      }
    } catch (err) {
      // A bug in the loop itself: fail every request rather than leave one pending forever.
      this.#looping = false;
      const e = err instanceof Error ? err : new Error(String(err));
      for (const a of [...this.#active, ...this.#waiting]) {
        try {
          this.#finish(a, e);
        } catch {
          // releasing its sequence failed too: still end the request
          this.#active = this.#active.filter((x) => x !== a);
          this.#waiting = this.#waiting.filter((x) => x !== a);
          a.req.onDone(e);
        }
      }
    }
  }

  async #step(): Promise<void> {
    for (const a of [...this.#active, ...this.#waiting]) if (a.req.aborted()) this.#finish(a);
    if (this.#active.length === 0 && this.#waiting.length === 0) return;
    const step = this.#plan();
    if (step.length === 0) return; // everything was preempted or failed; re-plan
    let longest = 0;
    for (const s of step) {
      longest = Math.max(longest, s.tokens.length);
      if (s.tokens.length === 1 && s.a.fed.length > 0 && s.last) this.#decodeTokens++;
      else this.#promptTokens += s.tokens.length;
    }
    const tokens: number[] = [];
    const rows: number[] = [];
    const wanted: number[] = []; // rows per entry of the step (sampled ones not counted)
    const sampledAt: number[] = []; // entry -> index among the sampled rows, or -1
    const sample = { rows: [] as number[], options: [] as NativeSamplingOptions[], histories: [] as (Int32Array | undefined)[], states: [] as Uint32Array[], logprobs: [] as number[] };
    for (const s of step) {
      const want = s.a.req.rowsWanted(s.tokens.length, s.last);
      const spec = s.last && want.length > 0 ? s.a.req.sampleSpec?.() : undefined;
      for (const i of want) rows.push(tokens.length + i);
      if (spec) {
        // The last wanted row is sampled in the step: it comes back as a token, not as a row.
        sampledAt.push(sample.rows.length);
        sample.rows.push(rows.length - 1);
        sample.options.push(spec.options);
        sample.histories.push(spec.history);
        sample.states.push(spec.rngState);
        sample.logprobs.push(spec.logprobs);
        wanted.push(want.length - 1);
      } else {
        sampledAt.push(-1);
        wanted.push(want.length);
      }
      tokens.push(...s.tokens);
    }
    const forward = {
      tokens: Int32Array.from(tokens),
      seqIds: Int32Array.from(step.map((s) => s.a.seq)),
      seqTokens: Int32Array.from(step.map((s) => s.tokens.length)),
      logitRows: Int32Array.from(rows),
    };
    let logits: Float32Array;
    let sampled: NativeSampledStep | undefined;
    try {
      if (sample.rows.length === 0) {
        logits = await this.#native.forward(forward);
      } else {
        const rngStates = new Uint32Array(4 * sample.states.length);
        sample.states.forEach((st, i) => rngStates.set(st, 4 * i));
        sampled = await this.#native.forward({
          ...forward,
          sample: { rows: Int32Array.from(sample.rows), options: sample.options, histories: sample.histories, rngStates, logprobs: Int32Array.from(sample.logprobs) },
        });
        logits = sampled.logits;
      }
    } catch (err) {
      const bad = (err as { sampleIndex?: unknown }).sampleIndex;
      if (typeof bad === 'number' && sampledAt.includes(bad)) {
        // One request's row could not be sampled (its options overflowed the logits): it fails
        // alone; the others forget this step (their KV is cut back) and run it again.
        step.forEach((s, i) => {
          if (sampledAt[i] === bad) this.#finish(s.a, err as Error);
          else this.#native.truncateSequence(s.a.seq, s.a.fed.length);
        });
      } else {
        for (const s of step) this.#finish(s.a, err as Error);
      }
      return;
    } finally {
      this.#steps++;
      this.#paddingAvoided += step.length * longest - tokens.length;
    }
    this.#freePages = this.#native.freePages();
    // Closed while the step ran: close() ends every request with its error; deliver nothing more.
    if (this.#closed) return;
    const V = this.#opts.vocabSize;
    let row = 0;
    step.forEach((s, i) => {
      const start = s.a.fed.length;
      s.a.fed.push(...s.tokens);
      s.a.req.pending.splice(0, s.tokens.length);
      const slice = logits.subarray(row * V, (row + wanted[i]) * V);
      row += wanted[i];
      let next: number[] | null;
      try {
        next = s.a.req.onRows(slice, s.tokens, start, s.last, sampled && sampledAt[i] >= 0 ? sampledToken(sampled, sampledAt[i]) : undefined);
      } catch (err) {
        this.#finish(s.a, err as Error);
        return;
      }
      if (next === null) this.#finish(s.a);
      else if (next.length === 0 && s.a.req.pending.length === 0) this.#finish(s.a, new Error('scheduler: a request proposed no tokens and did not finish'));
      else s.a.req.pending.push(...next);
    });
  }

  /**
   * Chooses this step's tokens: the running requests' (decode first), then admissions from the
   * waiting queue into the budget and pages left; preempts running requests when the pages run out.
   */
  #plan(): StepEntry[] {
    for (;;) {
      const step: StepEntry[] = [];
      let budget = this.#opts.maxBatchTokens;
      // Decoding requests (one pending token) first: they keep latency low.
      const order = [...this.#active].sort((x, y) => (x.req.pending.length === 1 ? 0 : 1) - (y.req.pending.length === 1 ? 0 : 1) || x.arrival - y.arrival);
      for (const a of order) {
        if (budget <= 0 || a.req.pending.length === 0) continue;
        const n = Math.min(a.req.pending.length, budget);
        step.push({ a, tokens: a.req.pending.slice(0, n), last: n === a.req.pending.length });
        budget -= n;
      }
      const need = step.length
        ? this.#native.pagesNeeded(Int32Array.from(step.map((s) => s.a.seq)), Int32Array.from(step.map((s) => s.tokens.length)))
        : 0;
      const free = this.#native.freePages();
      if (need <= free) {
        this.#admit(step, budget, free - need);
        return step;
      }
      // Not enough pages: preempt the newest request (recompute it later). submit() refused any
      // request that cannot fit alone, so the oldest one always makes progress.
      const victim = [...this.#active].sort((x, y) => y.arrival - x.arrival)[0];
      if (this.#active.length === 1) {
        // Unreachable while submit() checks maxLength; kept so a wrong bound fails loudly, not silently.
        this.#finish(victim, new OutOfPagesError(`out of KV pages: the step needs ${need} pages but only ${free} are free`));
        return [];
      }
      this.#native.releaseSequence(victim.seq);
      this.#preemptions++;
      victim.seq = -1;
      victim.req.pending.unshift(...victim.fed);
      victim.fed = [];
      victim.passedOver = AGE_STEPS; // back first once there is room...
      victim.preemptedAt = this.#steps; // ...but not in the step that preempted it
      this.#active = this.#active.filter((x) => x !== victim);
      this.#waiting.unshift(victim);
      this.#freePages = this.#native.freePages();
    }
  }

  /** Admits waiting prompts into `step` (best-fit-decreasing with aging) within `budget` tokens and `pages`. */
  #admit(step: StepEntry[], budget: number, pages: number): void {
    const P = this.#opts.pageSize;
    let slots = this.#opts.maxSequences - this.#active.length;
    // Preempted in this very plan: recomputing it now would only be preempted again.
    const chosen = new Set<Active>(this.#waiting.filter((a) => a.preemptedAt === this.#steps));
    const skipped = chosen.size;
    const take = (a: Active, n: number) => {
      a.seq = this.#native.createSequence();
      this.#active.push(a);
      const now = performance.now();
      if (a.fed.length === 0 && a.submittedAt >= 0) {
        this.#admitted++;
        this.#queueWaitMs += now - a.submittedAt;
        a.submittedAt = -1; // counted once, even if preempted later
      }
      step.push({ a, tokens: a.req.pending.slice(0, n), last: n === a.req.pending.length });
      chosen.add(a);
      budget -= n;
      pages -= Math.ceil(n / P);
      slots--;
    };
    const room = () => Math.min(budget, pages * P); // most tokens a new sequence can take now
    // Aged requests first, in arrival order, chunked if need be.
    for (const a of this.#waiting) {
      if (slots <= 0 || room() <= 0) break;
      if (a.passedOver >= AGE_STEPS && !chosen.has(a)) take(a, Math.min(a.req.pending.length, room()));
    }
    // Best fit decreasing: the longest prompts that fit whole.
    const byLength = this.#waiting.filter((a) => !chosen.has(a)).sort((x, y) => y.req.pending.length - x.req.pending.length || x.arrival - y.arrival);
    for (const a of byLength) {
      if (slots <= 0 || room() <= 0) break;
      if (a.req.pending.length <= room()) take(a, a.req.pending.length);
    }
    // What budget is left goes to a chunk of the oldest prompt still waiting (long prompts chunk).
    const oldest = this.#waiting.find((a) => !chosen.has(a));
    if (oldest && slots > 0 && room() > 0) take(oldest, Math.min(oldest.req.pending.length, room()));
    const admitted = new Set([...chosen].filter((a) => a.seq >= 0));
    this.#waiting = this.#waiting.filter((a) => !admitted.has(a));
    if (chosen.size > skipped) for (const a of this.#waiting) if (a.preemptedAt !== this.#steps) a.passedOver++;
  }
}

/** Row j of a sampled step as one token. */
function sampledToken(r: NativeSampledStep, j: number): SampledToken {
  const out: SampledToken = { token: r.tokens[j], logprob: r.logprobs[j], rngState: r.rngStates.slice(4 * j, 4 * j + 4) };
  const a = r.topOffsets[j], b = r.topOffsets[j + 1];
  if (b > a) out.top = Array.from({ length: b - a }, (_, k) => ({ token: r.topTokens[a + k], logprob: r.topLogprobs[a + k] }));
  return out;
}
