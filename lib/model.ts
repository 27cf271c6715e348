// Models: loadModel() maps a GGUF file natively, and a Model tokenizes, generates (streaming,
// with an AbortSignal), completes and scores text. Every generate/complete call becomes a
// request of the model's continuous-batching scheduler, so concurrent calls share forward steps.
import * as fs from 'node:fs';
import { checkMessages, chosenTemplate, renderChatTemplate, type ChatTemplateOptions } from './chat';
import { GenerationRequest, LogitsRequest, type Completion, type Generation } from './engine/request';
import { Scheduler, type SchedulerStats } from './engine/scheduler';
import { checkInteger, describe, DisposedError, rangeError, typeError } from './errors';
import { readGguf, type GgufInfo } from './gguf';
import { addon, nativeInfo, type NativeModel, type NativeModelInfo } from './native';
import { Sampler, validateSamplingOptions, type SamplingOptions } from './sampling';
import { Tensor } from './tensor';
import { Tokenizer } from './tokenizer';

export interface LoadModelOptions {
  /**
   * Where forward steps run. 'cpu' (and 'auto', the default, for now) runs on the CPU. 'cuda' runs
   * on the GPU through the CUDA addon (prebuilds/<platform>-cuda or `npm run build:cuda`); it fails
   * with the reason when that addon is not loaded or no usable GPU exists. The GPU path is new:
   * 'auto' will choose it once it has been validated on GPUs (see README, "Backends").
   */
  device?: 'cpu' | 'cuda' | 'auto';
  /** CPU threads for this model (default: the cores this process may use). */
  threads?: number;
  /** Longest sequence (prompt + generated tokens). Default: min(training context, 4096). */
  contextSize?: number;
  /**
   * KV pages in the pool (each holds pageSize tokens of every layer). Default and minimum: enough
   * for one full-context sequence (ceil(contextSize / pageSize)); concurrent requests beyond what
   * fits are preempted and recomputed, never failed.
   */
  kvPages?: number;
  /** Tokens per KV page. Default 16. */
  pageSize?: number;
  /** KV cache precision. Default 'f16'. */
  kvDtype?: 'f16' | 'f32';
  /** Most tokens one forward step packs (prefill chunks are cut to fit). Default 512. */
  maxBatchTokens?: number;
  /** Most requests running at once (holding a KV sequence); more wait for admission. Default 256. */
  maxSequences?: number;
  /** Called as loading goes on (synchronously, from the main thread); see LoadProgress. */
  onProgress?: (progress: LoadProgress) => void;
}

/**
 * Where loading is: 'mapping' (reading the header and mapping the weights), 'repacking' (the CPU's
 * int8 weight layout, on a worker thread), 'uploading' (copying the weights to the GPU), 'ready'.
 * `fraction` is the share of the whole load done, from 0 to 1 (1 only with 'ready').
 */
export interface LoadProgress {
  phase: 'mapping' | 'repacking' | 'uploading' | 'ready';
  fraction: number;
}

/** What a model is doing right now (see Model.stats()). */
export type ModelStats = SchedulerStats;

export interface ModelInfo extends NativeModelInfo {
  path: string;
  /** bos/eos are -1 when the vocabulary has none. */
  vocabulary: { size: number; type: string; bos: number; eos: number };
}

export interface GenerateOptions extends SamplingOptions {
  /** Most new tokens (default 256; 0 generates nothing). */
  maxTokens?: number;
  /** Stop when the generated text contains one of these (it is not included in the output). */
  stop?: string[];
  /** Stop on these token ids (end-of-generation tokens always stop). */
  stopTokens?: number[];
  /** Abort the generation (the iterator ends with finishReason 'abort'). */
  signal?: AbortSignal;
  /** Return the chosen token's log-probability; a number n > 0 also returns the top n alternatives. */
  logprobs?: boolean | number;
  /** Prepend BOS to a string prompt (default: as the vocabulary says). */
  bos?: boolean;
  /** Parse special-token text (like <s>) in a string prompt. Default false. */
  special?: boolean;
}

export type { Completion, FinishReason, GenerateChunk, Generation } from './engine/request';

const GENERATE_KEYS = new Set(['maxTokens', 'stop', 'stopTokens', 'signal', 'logprobs', 'bos', 'special']);
const LOAD_KEYS = new Set(['device', 'threads', 'contextSize', 'kvPages', 'pageSize', 'kvDtype', 'maxBatchTokens', 'maxSequences', 'onProgress']);

/** Loads a GGUF model (llama / qwen2 architectures). Weights stay memory-mapped. */
export async function loadModel(path: string, options: LoadModelOptions = {}): Promise<Model> {
  const where = 'loadModel';
  if (typeof path !== 'string' || path === '') throw typeError(where, 'path', 'a file path', path);
  if (typeof options !== 'object' || options === null) throw typeError(where, 'options', 'an object', options);
  for (const k of Object.keys(options)) if (!LOAD_KEYS.has(k)) throw new TypeError(`${where}: unknown option ${JSON.stringify(k)}`);
  if (!fs.existsSync(path)) throw new Error(`${where}: no such file: ${path}`);
  const device = options.device ?? 'auto';
  if (device !== 'cpu' && device !== 'cuda' && device !== 'auto') throw typeError(where, 'device', "'cpu', 'cuda' or 'auto'", device);
  if (device === 'cuda') {
    const info = nativeInfo();
    if (info.device !== 'cuda') {
      const why = info.cuda.compiled ? `CUDA is not usable here: ${info.cuda.reason}` : `the loaded binary (${info.binary}) has no CUDA backend; install the CUDA prebuild or run npm run build:cuda (and TESSERA_DEVICE=cuda|auto)`;
      throw new Error(`${where}: device 'cuda': ${why}`);
    }
  }
  const threads = checkInteger(where, 'threads', options.threads ?? 0, 0, 1024);
  const contextSize = checkInteger(where, 'contextSize', options.contextSize ?? 0, 0, 1 << 24);
  const pageSize = checkInteger(where, 'pageSize', options.pageSize ?? 16, 1, 4096);
  const kvPages = checkInteger(where, 'kvPages', options.kvPages ?? 0, 0, 1 << 26);
  const maxBatchTokens = checkInteger(where, 'maxBatchTokens', options.maxBatchTokens ?? 512, 1, 1 << 20);
  const maxSequences = checkInteger(where, 'maxSequences', options.maxSequences ?? 256, 1, 1 << 16);
  const kvDtype = options.kvDtype ?? 'f16';
  if (kvDtype !== 'f16' && kvDtype !== 'f32') throw typeError(where, 'kvDtype', "'f16' or 'f32'", kvDtype);
  const onProgress = options.onProgress;
  if (onProgress !== undefined && typeof onProgress !== 'function') throw typeError(where, 'onProgress', 'a function', onProgress);
  const progress = (phase: LoadProgress['phase'], fraction: number) => onProgress?.({ phase, fraction });

  progress('mapping', 0);
  const gguf = readGguf(path); // metadata only; validates the container
  const tokenizer = Tokenizer.fromGguf(gguf.metadata);
  if (kvPages !== 0) {
    // One sequence of the full context must fit, or requests would fail mid-generation.
    const arch = String(gguf.metadata['general.architecture'] ?? '');
    const trained = Number(gguf.metadata[`${arch}.context_length`] ?? 0);
    const ctx = contextSize || Math.min(trained || 4096, 4096);
    const min = Math.ceil(ctx / pageSize);
    if (kvPages < min) {
      throw rangeError(
        where,
        'kvPages',
        `= ${kvPages} is too small: one sequence of the full context (${ctx} tokens) needs ${min} pages of ${pageSize} tokens; ` +
          `pass kvPages >= ${min}, or a smaller contextSize`,
      );
    }
  }
  const native = new (addon().NativeModel)(path, { device: device === 'cuda' ? 'cuda' : 'cpu', threads, contextSize, kvPages, pageSize, kvDtype });
  try {
    const phase = device === 'cuda' ? 'uploading' : 'repacking';
    progress(phase, 0.05);
    // int8 weight layout (or the GPU copy), on a worker thread; per-layer progress
    await native.repack(onProgress ? (f) => progress(phase, 0.05 + 0.95 * Math.min(f, 0.999)) : undefined);
  } catch (e) {
    native.dispose();
    throw e;
  }
  const model = Model._create(path, gguf, native, tokenizer, { maxBatchTokens, maxSequences });
  progress('ready', 1);
  return model;
}

/** A loaded model; made by loadModel(). */
export class Model {
  readonly info: ModelInfo;
  readonly tokenizer: Tokenizer;
  #native: NativeModel | null;
  #scheduler: Scheduler;
  #gguf: GgufInfo;
  #disposing: Promise<void> | null = null;

  /** @internal use loadModel() */
  static _create(path: string, gguf: GgufInfo, native: NativeModel, tokenizer: Tokenizer, caps: { maxBatchTokens: number; maxSequences: number }): Model {
    return new Model(path, gguf, native, tokenizer, caps);
  }

  private constructor(path: string, gguf: GgufInfo, native: NativeModel, tokenizer: Tokenizer, caps: { maxBatchTokens: number; maxSequences: number }) {
    this.#native = native;
    this.#gguf = gguf;
    this.tokenizer = tokenizer;
    const n = native.info();
    this.info = {
      ...n,
      path,
      vocabulary: { size: tokenizer.vocabSize, type: String(gguf.metadata['tokenizer.ggml.model'] ?? 'unknown'), bos: tokenizer.bos, eos: tokenizer.eos },
    };
    this.#scheduler = new Scheduler(native, { ...caps, vocabSize: n.vocabSize, kvPages: n.kvPages, pageSize: n.pageSize });
  }

  /** Requests running and waiting, KV pages in use, preemptions and steps so far. */
  stats(): ModelStats {
    this.#live('stats');
    return this.#scheduler.stats();
  }

  /** GGUF metadata of the file. */
  get metadata(): GgufInfo['metadata'] {
    return this.#gguf.metadata;
  }

  #live(where: string): NativeModel {
    if (!this.#native || this.#disposing) throw new DisposedError(`${where}: the model was disposed`);
    return this.#native;
  }

  tokenize(text: string, options: { bos?: boolean; special?: boolean } = {}): number[] {
    this.#live('tokenize');
    if (typeof text !== 'string') throw typeError('tokenize', 'text', 'a string', text);
    return Array.from(this.tokenizer.encode(text, { bos: options.bos, special: options.special }));
  }

  detokenize(ids: ArrayLike<number>): string {
    this.#live('detokenize');
    this.#checkIds('detokenize', ids);
    return this.tokenizer.decode(ids);
  }

  #checkIds(where: string, ids: ArrayLike<number>): void {
    if (!ids || typeof ids !== 'object' || typeof (ids as { length?: unknown }).length !== 'number') {
      throw typeError(where, 'ids', 'an array of token ids', ids);
    }
    for (let i = 0; i < ids.length; i++) {
      const t = ids[i];
      if (!Number.isInteger(t) || t < 0 || t >= this.info.vocabSize) {
        throw rangeError(where, `ids[${i}]`, `= ${describe(t)} is not a token id of this model (vocabulary of ${this.info.vocabSize})`);
      }
    }
  }

  /**
   * Renders chat messages into a prompt with the model's chat template (tokenizer.chat_template)
   * or options.template; throws NoChatTemplateError when there is neither. Generate from the
   * result with { special: true }, so the template's control tokens are parsed as such.
   */
  applyChatTemplate(messages: { role: string; content: string }[], options: ChatTemplateOptions = {}): string {
    const where = 'applyChatTemplate';
    this.#live(where);
    if (typeof options !== 'object' || options === null) throw typeError(where, 'options', 'an object', options);
    const source = chosenTemplate(this.#gguf.metadata['tokenizer.chat_template'], options.template, String(this.#gguf.metadata['general.name'] ?? this.info.path));
    const text = (id: number) => (id >= 0 ? this.tokenizer.tokenText(id) : '');
    return renderChatTemplate(source, checkMessages(where, messages), { bosToken: text(this.tokenizer.bos), eosToken: text(this.tokenizer.eos) }, options);
  }

  /** Streams generated tokens. Iterate with for await; `result` resolves with the completion. */
  generate(prompt: string | ArrayLike<number>, options: GenerateOptions = {}): Generation {
    const where = 'generate';
    this.#live(where);
    if (typeof options !== 'object' || options === null) throw typeError(where, 'options', 'an object', options);
    const samplingOnly: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(options)) if (!GENERATE_KEYS.has(k)) samplingOnly[k] = v;
    const sampling = validateSamplingOptions(samplingOnly, where);
    const maxTokens = checkInteger(where, 'maxTokens', options.maxTokens ?? 256, 0, 1 << 24);
    const stop = options.stop ?? [];
    if (!Array.isArray(stop) || !stop.every((s) => typeof s === 'string' && s.length > 0)) {
      throw typeError(where, 'stop', 'an array of non-empty strings', options.stop);
    }
    const stopTokens = new Set<number>(options.stopTokens ?? []);
    for (const t of stopTokens) if (!Number.isInteger(t)) throw typeError(where, 'stopTokens', 'an array of token ids', options.stopTokens);
    const logprobs = options.logprobs ?? false;
    if (typeof logprobs !== 'boolean' && !(Number.isInteger(logprobs) && logprobs >= 0 && logprobs <= 100)) {
      throw typeError(where, 'logprobs', 'a boolean or an integer in [0, 100]', logprobs);
    }
    const signal = options.signal;
    if (signal !== undefined && !(signal instanceof AbortSignal)) throw typeError(where, 'signal', 'an AbortSignal', signal);

    let promptIds: number[];
    if (typeof prompt === 'string') {
      promptIds = this.tokenize(prompt, { bos: options.bos, special: options.special });
    } else {
      this.#checkIds(where, prompt);
      promptIds = Array.from(prompt);
    }
    if (promptIds.length === 0) throw rangeError(where, 'prompt', 'is empty (no tokens to start from)');
    const ctx = this.info.contextSize;
    if (promptIds.length > ctx) {
      throw rangeError(where, 'prompt', `has ${promptIds.length} tokens, more than the context size (${ctx})`);
    }

    const sampler = new Sampler(sampling, this.info.vocabSize, where); // also checks logitBias ids against the vocabulary
    let banned = 0;
    for (const b of sampling.logitBias.values()) if (b === -Infinity) banned++;
    if (banned === this.info.vocabSize) throw rangeError(where, 'logitBias', 'bans every token of the vocabulary (-Infinity for all of them)');
    const request = new GenerationRequest({
      promptIds,
      sampler,
      decoder: this.tokenizer.createDecoder({ stripLeadingSpace: false }), // a continuation keeps its first space
      eog: this.tokenizer.eogIds,
      stopTokens,
      stop,
      maxTokens,
      contextSize: ctx,
      logprobs,
      signal,
    });
    if (maxTokens === 0) request.finishEmpty();
    else this.#scheduler.submit(request);
    return request.generation;
  }

  /** Generates to the end and returns the whole completion. */
  async complete(prompt: string | ArrayLike<number>, options: GenerateOptions = {}): Promise<Completion> {
    const g = this.generate(prompt, options);
    for await (const _ of g) {
      // drain
    }
    return g.result;
  }

  /**
   * Completes many prompts together (they share forward steps; waiting prompts are packed by
   * best-fit-decreasing) and resolves with their completions in order. `options` is one set for
   * all, or one per prompt. Every prompt is checked before any runs: a bad one rejects the call.
   */
  async completeBatch(prompts: readonly (string | ArrayLike<number>)[], options: GenerateOptions | readonly GenerateOptions[] = {}): Promise<Completion[]> {
    const where = 'completeBatch';
    this.#live(where);
    if (!Array.isArray(prompts)) throw typeError(where, 'prompts', 'an array of prompts', prompts);
    const per = Array.isArray(options);
    if (per && options.length !== prompts.length) throw rangeError(where, 'options', `has ${options.length} entries for ${prompts.length} prompts`);
    const gens: Generation[] = [];
    try {
      for (let i = 0; i < prompts.length; i++) gens.push(this.generate(prompts[i], per ? (options as GenerateOptions[])[i] : (options as GenerateOptions)));
    } catch (e) {
      for (const g of gens) void g[Symbol.asyncIterator]().return?.(); // stop the ones already queued
      if (e instanceof Error) e.message = `${where}: prompts[${gens.length}]: ${e.message}`;
      throw e;
    }
    return Promise.all(gens.map((g) => g.result));
  }

  /** Logits of every position of `ids` (teacher forcing, perplexity): a Tensor (ids.length, vocab). */
  async logits(ids: ArrayLike<number>): Promise<Tensor> {
    this.#live('logits');
    this.#checkIds('logits', ids);
    if (ids.length === 0) throw rangeError('logits', 'ids', 'is empty');
    if (ids.length > this.info.contextSize) throw rangeError('logits', 'ids', `has ${ids.length} tokens, more than the context size (${this.info.contextSize})`);
    const request = new LogitsRequest(ids, this.info.vocabSize);
    this.#scheduler.submit(request);
    return Tensor.from(await request.done, [ids.length, this.info.vocabSize]);
  }

  /**
   * Ends every running and waiting request with DisposedError (streams throw it, `result` and
   * complete() reject with it), waits for the step in flight, frees the KV pool and unmaps the
   * weights. Resolves when all of that is done; calling it again returns the same promise.
   */
  dispose(): Promise<void> {
    if (this.#disposing) return this.#disposing;
    const native = this.#native;
    if (!native) return Promise.resolve();
    this.#disposing = this.#scheduler.close(new DisposedError('the model was disposed while this request ran')).then(() => {
      native.dispose();
      this.#native = null;
    });
    return this.#disposing;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}
