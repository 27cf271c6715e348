// Requests: the state machines the scheduler drives. A request proposes tokens to feed, names the
// rows of the step it wants back, and turns those rows into the tokens it accepts (to feed next)
// or null when it is finished. GenerationRequest is a streamed generation (sampling, stop strings
// and tokens, maxTokens, the context limit, finish reasons, streaming detokenisation, timings);
// LogitsRequest is teacher forcing (every row back, nothing sampled). The scheduler knows only
// this contract, so a request that proposes and verifies several tokens per step (speculation) is
// the same kind of thing to it.
import { nativeSamplingOptions, type NativeSamplingOptions } from '../native';
import type { Sampler } from '../sampling';
import type { StreamingDecoder } from '../tokenizer';

/** How to sample a request's row natively, inside the step (see NativeModel.forward's `sample`). */
export interface StepSample {
  options: NativeSamplingOptions;
  /** The tokens the penalties read (their last penaltyLastN), or undefined when no penalty is on. */
  history: Int32Array | undefined;
  /** The request's generator state (4 words). */
  rngState: Uint32Array;
  /** -1: no logprob wanted; 0: the chosen token's; n > 0: and the top n. */
  logprobs: number;
}

/** A token sampled in the step, with what was asked of it. */
export interface SampledToken {
  token: number;
  logprob: number;
  top?: { token: number; logprob: number }[];
  /** The generator state after the draw. */
  rngState: Uint32Array;
}

/** One request's side of the scheduler: proposal -> rows -> accepted tokens. */
export interface SchedulerRequest {
  /** Tokens to feed before the next rows are needed (the prompt, then the accepted tokens). */
  pending: number[];
  /** Most tokens this request can ever hold in the KV cache (prompt + generated). */
  readonly maxLength: number;
  /**
   * The rows wanted of a chunk of `n` tokens fed this step (indices into the chunk). `last` is true
   * when the chunk ends `pending`.
   */
  rowsWanted(n: number, last: boolean): number[];
  /**
   * The rows asked for (rows.length / vocab of them, in rowsWanted order) of the chunk `fed`,
   * which starts at token `start` of everything this request has fed. Returns the tokens accepted
   * to feed next ([] to go on with `pending`), or null when the request is finished. Called after
   * every step that fed the request, also when no row was wanted.
   */
  onRows(rows: Float32Array, fed: readonly number[], start: number, last: boolean, sampled?: SampledToken): number[] | null;
  /**
   * When present, the last row wanted of a chunk that ends `pending` is sampled in the step with
   * this (natively, on the worker thread) and reaches onRows as `sampled` instead of as a row.
   */
  sampleSpec?(): StepSample;
  /** Called exactly once when the request leaves the scheduler (finished, failed or aborted). */
  onDone(error?: Error): void;
  /** Checked between steps: true when the consumer aborted. */
  aborted(): boolean;
}

export interface GenerateChunk {
  /** Text completed by this token (may be '' while a multi-byte character is incomplete). */
  text: string;
  token: number;
  logprob?: number;
  top?: { token: number; logprob: number }[];
}

export type FinishReason = 'stop' | 'length' | 'abort' | 'context';

export interface Completion {
  text: string;
  tokens: number[];
  promptTokens: number;
  finishReason: FinishReason;
  timings: { promptMs: number; generateMs: number; tokensPerSecond: number };
}

/** The result of a generate() call: an async iterator of chunks, plus the final state. */
export interface Generation extends AsyncIterable<GenerateChunk> {
  /** Resolves when the generation ends. */
  readonly result: Promise<Completion>;
}

/** A queue between the scheduler (push/end) and one async iterator (next). */
class Channel<T> {
  #items: T[] = [];
  #waiters: ((r: IteratorResult<T>) => void)[] = [];
  #done = false;
  #error: Error | undefined;
  push(item: T): void {
    const w = this.#waiters.shift();
    if (w) w({ value: item, done: false });
    else this.#items.push(item);
  }
  end(error?: Error): void {
    this.#done = true;
    this.#error = error;
    for (const w of this.#waiters.splice(0)) w({ value: undefined as never, done: true });
  }
  async next(): Promise<IteratorResult<T>> {
    if (this.#items.length) return { value: this.#items.shift() as T, done: false };
    if (this.#done) return this.#settled();
    return new Promise<IteratorResult<T>>((resolve) => this.#waiters.push(resolve)).then((r) => (r.done ? this.#settled() : r));
  }
  /** done, or the error once (then done). */
  #settled(): IteratorResult<T> {
    if (this.#error) {
      const e = this.#error;
      this.#error = undefined;
      throw e;
    }
    return { value: undefined as never, done: true };
  }
}

export interface GenerationSpec {
  promptIds: number[];
  sampler: Sampler;
  decoder: StreamingDecoder;
  /** End-of-generation tokens of the vocabulary, and the caller's stop tokens. */
  eog: ReadonlySet<number>;
  stopTokens: ReadonlySet<number>;
  stop: string[];
  maxTokens: number;
  contextSize: number;
  logprobs: boolean | number;
  signal?: AbortSignal;
}

/** A streamed generation: the SchedulerRequest side and the user's Generation side. */
export class GenerationRequest implements SchedulerRequest {
  pending: number[];
  readonly maxLength: number;
  readonly generation: Generation;
  #spec: GenerationSpec;
  #native: NativeSamplingOptions;
  #rngState: Uint32Array;
  #penaltyWindow: number; // tokens of history the penalties read; 0 when none is on
  #channel = new Channel<GenerateChunk>();
  #generated: number[] = [];
  #history: number[];
  #text = '';
  #emitted = 0; // chars of #text already sent (stop strings may hold some back)
  #holdBack: number;
  #finish: FinishReason = 'length';
  #stoppedByString = false;
  #cancelled = false; // the consumer left its for-await loop early
  #t0 = performance.now();
  #tFirst = 0;
  #resolve!: (c: Completion) => void;
  #reject!: (e: Error) => void;

  constructor(spec: GenerationSpec) {
    this.#spec = spec;
    this.pending = [...spec.promptIds];
    this.#history = [...spec.promptIds];
    this.maxLength = Math.min(spec.contextSize, spec.promptIds.length + spec.maxTokens);
    this.#holdBack = spec.stop.reduce((m, s) => Math.max(m, s.length - 1), 0);
    const o = spec.sampler.options;
    this.#native = nativeSamplingOptions(o);
    this.#rngState = spec.sampler.rng.getState();
    const penalties = o.repeatPenalty !== 1 || o.presencePenalty !== 0 || o.frequencyPenalty !== 0;
    this.#penaltyWindow = !penalties || o.penaltyLastN === 0 ? 0 : o.penaltyLastN < 0 ? Infinity : o.penaltyLastN;
    const result = new Promise<Completion>((res, rej) => {
      this.#resolve = res;
      this.#reject = rej;
    });
    result.catch(() => {}); // the iterator reports errors too; avoid unhandled rejections
    const channel = this.#channel;
    this.generation = {
      result,
      [Symbol.asyncIterator]: () => ({
        next: () => channel.next(),
        return: async () => {
          this.#cancelled = true; // leaving a for-await early stops the generation
          return { value: undefined as never, done: true };
        },
      }),
    };
  }

  /** Ends at once with no tokens (maxTokens 0). */
  finishEmpty(): void {
    this.#channel.end();
    this.#resolve(this.#completion());
  }

  aborted(): boolean {
    if (this.#spec.signal?.aborted || this.#cancelled) this.#finish = 'abort';
    return this.#finish === 'abort';
  }

  rowsWanted(n: number, last: boolean): number[] {
    return last ? [n - 1] : [];
  }

  sampleSpec(): StepSample {
    const w = this.#penaltyWindow;
    const lp = this.#spec.logprobs;
    return {
      options: this.#native,
      history: w > 0 ? Int32Array.from(w === Infinity ? this.#history : this.#history.slice(-w)) : undefined,
      rngState: this.#rngState,
      logprobs: lp === false ? -1 : lp === true ? 0 : lp,
    };
  }

  onRows(_rows: Float32Array, _fed: readonly number[], _start: number, last: boolean, r?: SampledToken): number[] | null {
    if (!last) return []; // a prompt chunk: go on feeding
    if (!r) throw new Error('GenerationRequest: the step did not sample this request');
    const s = this.#spec;
    if (!this.#tFirst) this.#tFirst = performance.now();
    const top = typeof s.logprobs === 'number' && s.logprobs > 0 ? s.logprobs : 0;
    this.#rngState = r.rngState;
    this.#generated.push(r.token);
    this.#history.push(r.token);
    const isEnd = s.eog.has(r.token) || s.stopTokens.has(r.token);
    if (!isEnd) this.#text += s.decoder.push(r.token);
    const stopped = isEnd || this.#cutAtStop();
    if (stopped) this.#finish = 'stop';
    const chunk: GenerateChunk = { text: this.#flushText(stopped), token: r.token };
    if (s.logprobs !== false) chunk.logprob = r.logprob;
    if (top && r.top) chunk.top = r.top;
    this.#channel.push(chunk);
    if (stopped) return null;
    if (this.#generated.length >= s.maxTokens) {
      this.#finish = 'length';
      return null;
    }
    if (this.#history.length >= s.contextSize) {
      this.#finish = 'context';
      return null;
    }
    return [r.token];
  }

  onDone(error?: Error): void {
    if (error) {
      this.#channel.end(error);
      this.#reject(error);
      return;
    }
    // After a stop string the text was cut there: what the decoder still holds came after it.
    const rest = this.#spec.decoder.flush();
    if (!this.#stoppedByString) this.#text += rest;
    const tail = this.#flushText(true);
    if (tail) this.#channel.push({ text: tail, token: -1 });
    this.#channel.end();
    this.#resolve(this.#completion());
  }

  /** Cuts #text at the first stop string that appeared; true when one did. */
  #cutAtStop(): boolean {
    const stop = this.#spec.stop;
    if (!stop.length) return false;
    const from = Math.max(0, this.#emitted - this.#holdBack);
    let cut = -1;
    for (const st of stop) {
      const i = this.#text.indexOf(st, from);
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut < 0) return false;
    this.#text = this.#text.slice(0, cut);
    this.#stoppedByString = true;
    return true;
  }

  #flushText(final: boolean): string {
    const upto = final ? this.#text.length : Math.max(this.#emitted, this.#text.length - this.#holdBack);
    const out = this.#text.slice(this.#emitted, upto);
    this.#emitted = upto;
    return out;
  }

  #completion(): Completion {
    const now = performance.now();
    const n = this.#generated.length;
    const genMs = this.#tFirst ? now - this.#tFirst : 0;
    return {
      text: this.#text.slice(0, this.#emitted),
      tokens: this.#generated,
      promptTokens: this.#spec.promptIds.length,
      finishReason: this.#finish,
      timings: { promptMs: (this.#tFirst || now) - this.#t0, generateMs: genMs, tokensPerSecond: n > 1 && genMs > 0 ? ((n - 1) * 1000) / genMs : 0 },
    };
  }
}

/** Teacher forcing: the logits of every position of `ids`, (ids.length x vocab) row-major. */
export class LogitsRequest implements SchedulerRequest {
  pending: number[];
  readonly maxLength: number;
  readonly done: Promise<Float32Array>;
  #out: Float32Array;
  #vocab: number;
  #resolve!: (rows: Float32Array) => void;
  #reject!: (e: Error) => void;

  constructor(ids: ArrayLike<number>, vocab: number) {
    this.pending = Array.from(ids);
    this.maxLength = ids.length;
    this.#vocab = vocab;
    this.#out = new Float32Array(ids.length * vocab);
    this.done = new Promise<Float32Array>((res, rej) => {
      this.#resolve = res;
      this.#reject = rej;
    });
  }

  aborted(): boolean {
    return false;
  }

  rowsWanted(n: number): number[] {
    return Array.from({ length: n }, (_, i) => i);
  }

  onRows(rows: Float32Array, _fed: readonly number[], start: number, last: boolean): number[] | null {
    this.#out.set(rows, start * this.#vocab); // a recomputation after preemption writes the same rows again
    return last ? null : [];
  }

  onDone(error?: Error): void {
    if (error) this.#reject(error);
    else this.#resolve(this.#out);
  }
}
