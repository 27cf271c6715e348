// Continuous batching: every step packs the pending tokens of all active requests into one
// forward call (decode tokens first, then prefill chunks up to maxBatchTokens), within the free
// KV pages. When the pool is full, the newest request is preempted (its sequence released and
// its tokens recomputed later), as vLLM does; a request that cannot fit even alone fails before
// it produces a token.
//
// Lifecycle: the step loop runs while any request is active or waiting and decides to stop in
// the same synchronous turn in which it clears its running flag, so a request submitted at any
// moment either joins the running loop or starts a new one. close() waits for the step in flight
// (native sequences cannot be released while a step runs), then ends every request with the
// given error.
import { DisposedError, OutOfPagesError } from '../errors';
import type { NativeModel } from '../native';
import type { SchedulerRequest } from './request';

export type { SchedulerRequest } from './request';

interface Active {
  req: SchedulerRequest;
  seq: number;
  /** Every token fed so far (for recomputation after preemption). */
  fed: number[];
  arrival: number;
}

export interface SchedulerOptions {
  maxBatchTokens: number;
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
    this.#waiting.push({ req, seq: -1, fed: [], arrival: this.#arrivals++ });
    if (!this.#looping) {
      this.#looping = true;
      this.#loopDone = this.#loop();
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
      for (const a of [...this.#active, ...this.#waiting]) this.#finish(a, e);
    }
  }

  async #step(): Promise<void> {
    for (const a of [...this.#active, ...this.#waiting]) if (a.req.aborted()) this.#finish(a);
    // Admit waiting requests in arrival order (preempted ones were put back at the front).
    while (this.#waiting.length > 0) {
      const a = this.#waiting.shift() as Active;
      a.seq = this.#native.createSequence();
      this.#active.push(a);
    }
    if (this.#active.length === 0) return;
    const step = this.#plan();
    if (step.length === 0) return; // everything was preempted or failed; re-plan
    const tokens: number[] = [];
    const rows: number[] = [];
    const wanted: number[] = []; // rows per entry of the step
    for (const s of step) {
      const want = s.a.req.rowsWanted(s.tokens.length, s.last);
      for (const i of want) rows.push(tokens.length + i);
      wanted.push(want.length);
      tokens.push(...s.tokens);
    }
    let logits: Float32Array;
    try {
      logits = await this.#native.forward({
        tokens: Int32Array.from(tokens),
        seqIds: Int32Array.from(step.map((s) => s.a.seq)),
        seqTokens: Int32Array.from(step.map((s) => s.tokens.length)),
        logitRows: Int32Array.from(rows),
      });
    } catch (err) {
      for (const s of step) this.#finish(s.a, err as Error);
      return;
    } finally {
      this.#steps++;
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
        next = s.a.req.onRows(slice, s.tokens, start, s.last);
      } catch (err) {
        this.#finish(s.a, err as Error);
        return;
      }
      if (next === null) this.#finish(s.a);
      else if (next.length === 0 && s.a.req.pending.length === 0) this.#finish(s.a, new Error('scheduler: a request proposed no tokens and did not finish'));
      else s.a.req.pending.push(...next);
    });
  }

  /** Chooses this step's tokens per request, preempting requests when the pages run out. */
  #plan(): { a: Active; tokens: number[]; last: boolean }[] {
    for (;;) {
      const step: { a: Active; tokens: number[]; last: boolean }[] = [];
      let budget = this.#opts.maxBatchTokens;
      // Decoding requests (one pending token) first: they keep latency low.
      const order = [...this.#active].sort((x, y) => (x.req.pending.length === 1 ? 0 : 1) - (y.req.pending.length === 1 ? 0 : 1) || x.arrival - y.arrival);
      for (const a of order) {
        if (budget <= 0 || a.req.pending.length === 0) continue;
        const n = Math.min(a.req.pending.length, budget);
        step.push({ a, tokens: a.req.pending.slice(0, n), last: n === a.req.pending.length });
        budget -= n;
      }
      const need = this.#native.pagesNeeded(
        Int32Array.from(step.map((s) => s.a.seq)),
        Int32Array.from(step.map((s) => s.tokens.length)),
      );
      if (need <= this.#native.freePages()) return step;
      // Not enough pages: preempt the newest request (recompute it later). submit() refused any
      // request that cannot fit alone, so the oldest one always makes progress.
      const victim = [...this.#active].sort((x, y) => y.arrival - x.arrival)[0];
      if (this.#active.length === 1) {
        // Unreachable while submit() checks maxLength; kept so a wrong bound fails loudly, not silently.
        this.#finish(victim, new OutOfPagesError(`out of KV pages: the step needs ${need} pages but only ${this.#native.freePages()} are free`));
        return [];
      }
      this.#native.releaseSequence(victim.seq);
      this.#preemptions++;
      victim.seq = -1;
      victim.req.pending.unshift(...victim.fed);
      victim.fed = [];
      this.#active = this.#active.filter((x) => x !== victim);
      this.#waiting.unshift(victim);
      this.#freePages = this.#native.freePages();
    }
  }
}
