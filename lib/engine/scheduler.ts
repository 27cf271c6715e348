// Continuous batching: every step packs the pending tokens of all active requests into one
// forward call (decode tokens first, then prefill chunks up to maxBatchTokens), within the free
// KV pages. When the pool is full, the newest request is preempted (its sequence released and
// its tokens recomputed later), as vLLM does; a request that cannot fit even alone fails.
import type { NativeModel } from '../native';

/** One request's side of the scheduler: the tokens it still has to feed, and what to do with logits. */
export interface SchedulerRequest {
  /** Tokens to feed before the next logits are needed (the prompt, then one token per step). */
  pending: number[];
  /**
   * Called with the logits row after the last pending token was fed; returns the next token to
   * feed, or null when the request is finished.
   */
  onLogits(logits: Float32Array): number | null;
  /** Called once when the request leaves the scheduler (finished, failed or aborted). */
  onDone(error?: Error): void;
  /** Checked between steps: true when the consumer aborted. */
  aborted(): boolean;
  /** Return the logits of every fed token (teacher forcing), through onRows, not only the last. */
  allLogits?: boolean;
  /** rows: (tokens fed this step) x vocab, for the tokens starting at index `start` of the request. */
  onRows?(rows: Float32Array, start: number): void;
}

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
}

export class Scheduler {
  #native: NativeModel;
  #opts: SchedulerOptions;
  #active: Active[] = [];
  #waiting: Active[] = [];
  #running: Promise<void> | null = null;
  #arrivals = 0;
  #closed = false;

  constructor(native: NativeModel, opts: SchedulerOptions) {
    this.#native = native;
    this.#opts = opts;
  }

  /** Adds a request; the step loop starts if it is idle. */
  submit(req: SchedulerRequest): void {
    if (this.#closed) throw new Error('the model was disposed');
    this.#waiting.push({ req, seq: -1, fed: [], arrival: this.#arrivals++ });
    if (!this.#running) {
      this.#running = this.#loop().finally(() => {
        this.#running = null;
      });
    }
  }

  /** Resolves when no step is running (used by dispose). */
  async idle(): Promise<void> {
    while (this.#running) await this.#running;
  }

  close(): void {
    this.#closed = true;
    for (const a of [...this.#active, ...this.#waiting]) this.#finish(a, new Error('the model was disposed'));
  }

  #finish(a: Active, error?: Error): void {
    if (a.seq >= 0) {
      this.#native.releaseSequence(a.seq);
      a.seq = -1;
    }
    this.#active = this.#active.filter((x) => x !== a);
    this.#waiting = this.#waiting.filter((x) => x !== a);
    a.req.onDone(error);
  }

  async #loop(): Promise<void> {
    while (!this.#closed && (this.#active.length > 0 || this.#waiting.length > 0)) {
      for (const a of [...this.#active, ...this.#waiting]) if (a.req.aborted()) this.#finish(a);
      // Admit waiting requests in arrival order.
      while (this.#waiting.length > 0) {
        const a = this.#waiting.shift() as Active;
        a.seq = this.#native.createSequence();
        this.#active.push(a);
      }
      if (this.#active.length === 0) break;
      const step = this.#plan();
      if (step.length === 0) continue; // everything was preempted or failed; re-plan
      const tokens: number[] = [];
      for (const s of step) tokens.push(...s.tokens);
      const rows: number[] = [];
      let offset = 0;
      for (const s of step) {
        if (s.a.req.allLogits) for (let i = 0; i < s.tokens.length; i++) rows.push(offset + i);
        else if (s.last) rows.push(offset + s.tokens.length - 1);
        offset += s.tokens.length;
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
        continue;
      }
      const V = this.#opts.vocabSize;
      let row = 0;
      for (const s of step) {
        const start = s.a.fed.length;
        s.a.fed.push(...s.tokens);
        s.a.req.pending.splice(0, s.tokens.length);
        if (s.a.req.allLogits) {
          s.a.req.onRows?.(logits.subarray(row * V, (row + s.tokens.length) * V), start);
          row += s.tokens.length - 1;
        } else if (!s.last) {
          continue;
        }
        if (!s.last) {
          row++;
          continue;
        }
        const slice = logits.subarray(row * V, (row + 1) * V);
        row++;
        let next: number | null;
        try {
          next = s.a.req.onLogits(slice);
        } catch (err) {
          this.#finish(s.a, err as Error);
          continue;
        }
        if (next === null) this.#finish(s.a);
        else s.a.req.pending.push(next);
      }
    }
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
      // Not enough pages: preempt the newest request (recompute it later) or fail a lone one.
      const victim = [...this.#active].sort((x, y) => y.arrival - x.arrival)[0];
      if (this.#active.length === 1) {
        const err = new Error(
          `out of KV pages: this request needs ${need} more pages but only ${this.#native.freePages()} are free ` +
            '(raise kvPages or contextSize when loading the model)',
        );
        (err as Error & { code?: string }).code = 'TESSERA_OUT_OF_PAGES';
        this.#finish(victim, err);
        return [];
      }
      this.#native.releaseSequence(victim.seq);
      victim.seq = -1;
      victim.req.pending.unshift(...victim.fed);
      victim.fed = [];
      this.#active = this.#active.filter((x) => x !== victim);
      this.#waiting.unshift(victim);
    }
  }
}
