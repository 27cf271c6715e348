// Finds and loads the native addon: a CUDA-enabled binary when a usable GPU is present, else the
// CPU binary that node-gyp-build finds (prebuilds/<platform>-<arch>/ or build/Release/).
// TESSERA_DEVICE=cpu|cuda|auto overrides the choice. Nothing is built or downloaded here.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ResolvedSamplingOptions } from './sampling';

/** Where the package lives (dist/.. when compiled). */
export const PACKAGE_ROOT = path.resolve(__dirname, '..');

/**
 * The embedded demo model (stories260K, Q8_0, 344 KB, MIT): a real tiny Llama trained on
 * TinyStories, shipped in the package so the API can be tried without a download.
 */
export const demoModelPath: string = path.join(PACKAGE_ROOT, 'models', 'stories260K-q8_0.gguf');

export type DeviceChoice = 'cpu' | 'cuda' | 'auto';

export interface CudaDeviceInfo {
  index: number;
  name: string;
  computeCapability: string;
  totalMemory: number;
}

export interface NativeInfo {
  isa: string;
  bestIsa: string;
  isas: string[];
  cpuFeatures: string;
  /** How quantised weights are multiplied: packed int8 tiles (AMX for prefill + AVX512-VNNI), VNNI only, or not packed. */
  int8Path: 'amx+vnni' | 'vnni' | 'none';
  threads: number;
  cores: number;
  cuda: {
    compiled: boolean;
    usable: boolean;
    reason: string;
    driverVersion: number;
    runtimeVersion: number;
    devices: CudaDeviceInfo[];
  };
}

type Args = Record<string, unknown>;

/**
 * ResolvedSamplingOptions (lib/sampling.ts) as the native sampler reads them: the logit bias as
 * two parallel arrays (see nativeSamplingOptions). Validated again natively (RangeError naming
 * the option).
 */
export interface NativeSamplingOptions extends Omit<ResolvedSamplingOptions, 'logitBias' | 'seed'> {
  biasIds?: Int32Array;
  biasValues?: Float64Array;
}

/** ResolvedSamplingOptions -> NativeSamplingOptions (the seed is not part of it: see rngStates). */
export function nativeSamplingOptions(o: ResolvedSamplingOptions): NativeSamplingOptions {
  return {
    temperature: o.temperature,
    topK: o.topK,
    topP: o.topP,
    minP: o.minP,
    repeatPenalty: o.repeatPenalty,
    presencePenalty: o.presencePenalty,
    frequencyPenalty: o.frequencyPenalty,
    penaltyLastN: o.penaltyLastN,
    biasIds: Int32Array.from(o.logitBias.keys()),
    biasValues: Float64Array.from(o.logitBias.values()),
  };
}

/**
 * What to sample natively from n rows of logits, each with its own options, history and
 * generator: the same algorithm as Sampler.sample, so the same row, options, history and
 * generator state give the same token.
 */
export interface NativeSampleRequests {
  /** One per row. */
  options: NativeSamplingOptions[];
  /** One per row (undefined: no history): the tokens so far, read by the penalties (their last penaltyLastN). */
  histories?: (Int32Array | undefined)[];
  /** 4 words per row: each row's xoshiro128** state (Rng.getState(); Rng.fromState continues it). */
  rngStates: Uint32Array;
  /**
   * Per row: -1 = the chosen token's logprob is not needed (NaN; greedy then skips the normaliser),
   * 0 = it is (default), n > 0 = it is, and so are the n most likely tokens of the distribution
   * sampled from (SampleOptions.logprobs).
   */
  logprobs?: Int32Array;
}

/** The rows of a forward step to sample natively (NativeModel.forward's `sample`). */
export interface NativeStepSampling extends NativeSampleRequests {
  /** (n,) positions in logitRows (not token indices), distinct: request i samples the logits of row logitRows[rows[i]]. */
  rows: Int32Array;
}

/** What forward resolves with when the step samples. */
export interface NativeSampledStep extends NativeSampled {
  /** ((logitRows.length - n) x vocab) the logits of the rows not sampled, in logitRows order (empty when every row was sampled). */
  logits: Float32Array;
}

/** The sampled rows, in request order. */
export interface NativeSampled {
  /** (n,) the chosen tokens. */
  tokens: Int32Array;
  /** (n,) their logprobs under the distribution drawn from (greedy: log-softmax at temperature 1); NaN where logprobs was -1. */
  logprobs: Float64Array;
  /** (n + 1,) row i's top tokens are topTokens[topOffsets[i] .. topOffsets[i + 1]), most likely first. */
  topOffsets: Int32Array;
  topTokens: Int32Array;
  topLogprobs: Float64Array;
  /** (4n,) each row's generator state after its draw (a new array; the input is not changed). */
  rngStates: Uint32Array;
}

/**
 * One packed forward step (native ForwardBatch). Sequence i contributes seqTokens[i] tokens (in
 * `tokens`, grouped by sequence), stored in its next KV slots. Bad values reject with a RangeError
 * naming the field.
 */
export interface NativeForwardStep {
  tokens: Int32Array;
  seqIds: Int32Array;
  seqTokens: Int32Array;
  /** Rows of `tokens` whose logits are wanted, any number per sequence. */
  logitRows: Int32Array;
  /** Rope position of each token (default: its KV slot, the sequence's length + i); each in [0, slot]. */
  positions?: Int32Array;
  /**
   * Token-tree ancestor masks, per sequence back to back: seqTokens[i]² bytes, row-major;
   * mask[a * n + b] != 0 lets token a see token b. A token sees itself and only earlier tokens;
   * every token sees the cached prefix. Default: causal.
   */
  treeMask?: Uint8Array;
  /** FFN skip mask, layers x tokens: nonzero skips that token's FFN in that layer. */
  skipMask?: Uint8Array;
}

/** A loaded model in native code (native/napi/model.cc): weights, KV pages, thread pool. */
export interface NativeModel {
  info(): NativeModelInfo;
  createSequence(): number;
  forkSequence(seq: number): number;
  releaseSequence(seq: number): void;
  truncateSequence(seq: number, length: number): void;
  /**
   * Commits an accepted token-tree path: the KV entries at `keepPositions` (strictly increasing
   * slots below the length; the entries before the first stay) move to consecutive slots from
   * keepPositions[0], and the sequence is truncated after them. Returns the pages freed.
   * RangeError naming the problem, before anything changes.
   */
  commitPath(seq: number, keepPositions: Int32Array): number;
  sequenceLength(seq: number): number;
  freePages(): number;
  pagesNeeded(seqIds: Int32Array, counts: Int32Array): number;
  /**
   * One forward step off the main thread, with native sampling: after the forward, on the same
   * worker thread (in parallel on the model's threads), logit row sample.rows[i] is sampled with
   * sample.options[i], sample.histories[i] and generator state i of sample.rngStates, exactly as
   * Sampler.sample would (same token for the same row, options, history and state). Resolves with
   * the tokens, their logprobs and top-n, the generator states after the draws (keep them for the
   * next step), and in `logits` the rows of logitRows that were not sampled. A row that cannot be
   * sampled (NaN, +Infinity, nothing left after bias and penalties, a history id out of range)
   * rejects the step with the reference's RangeError, whose `sampleIndex` names the request (i of
   * sample.rows); the KV cache has grown by then, as it has when JS sampling throws after forward().
   */
  forward(step: NativeForwardStep & { sample: NativeStepSampling }): Promise<NativeSampledStep>;
  /** One forward step off the main thread; resolves with logits (logitRows.length x vocab). */
  forward(step: NativeForwardStep): Promise<Float32Array>;
  /**
   * Repacks quantised weights for the int8 path off the main thread (a no-op where there is none),
   * or copies them to the GPU; onProgress gets the fraction done (per layer) on the main thread.
   */
  repack(onProgress?: (fraction: number) => void): Promise<void>;
  dispose(): void;
}

/** The model architectures Tessera runs (GGUF `general.architecture`). */
export type Architecture = 'llama' | 'qwen2';

export interface NativeModelInfo {
  architecture: Architecture;
  name: string;
  vocabSize: number;
  embeddingLength: number;
  layers: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  feedForwardLength: number;
  trainContextLength: number;
  contextSize: number;
  rmsEps: number;
  ropeBase: number;
  ropeDim: number;
  ropeFreqScale: number;
  ropeMode: 'normal' | 'neox';
  qkvBias: boolean;
  tiedOutput: boolean;
  fileSize: number;
  weightTypes: Record<string, number>;
  /** Bytes of weights repacked in memory for the int8 (AVX512-VNNI) path; 0 when none. */
  packedBytes: number;
  kvPages: number;
  pageSize: number;
  kvDtype: 'f16' | 'f32';
  kvBytes: number;
  threads: number;
  /** Where forward steps run. */
  device: 'cpu' | 'cuda';
  /** The GPU's name and the bytes of weights copied to it (device 'cuda' only). */
  gpu?: string;
  gpuWeightBytes?: number;
}

/** The typed contract of the native module (native/napi/addon.cc). */
export interface Addon {
  NativeModel: new (
    path: string,
    options: { device: 'cpu' | 'cuda'; threads: number; contextSize: number; kvPages: number; pageSize: number; kvDtype: 'f16' | 'f32' },
  ) => NativeModel;
  info(): NativeInfo;
  setThreads(n: number): number;
  setIsa(isa: string): boolean;
  matmul(a: Args): void;
  rmsnorm(a: Args): void;
  rope(a: Args): void;
  swiglu(a: Args): void;
  softmax(a: Args): void;
  varlenAttention(a: Args): void;
  pagedAttention(a: Args): void;
  kvAppend(a: Args): void;
  convert(a: Args): void;
  /**
   * Samples rows of logits natively (synchronously, on the threads set by setThreads): for tests
   * and benchmarks; a forward step samples on its worker thread. A row whose logits are bad (NaN,
   * +Infinity, all -Infinity after bias and penalties) or whose history holds an id outside the
   * vocabulary throws the reference's RangeError, with `row` set to its index.
   */
  sampleRows(a: NativeSampleRequests & { logits: Float32Array; vocab: number }): NativeSampled;
  ggufRead(path: string): unknown;
  writeSyntheticModel(path: string, spec: Record<string, unknown>): Promise<number>;
  ggufWrite(path: string, spec: unknown): number;
}

export interface BackendReport {
  name: 'cpu' | 'cuda';
  available: boolean;
  /** The binary that provides it (when one was found). */
  binary?: string;
  /** Why it is not available. */
  reason?: string;
  /** CPU: the kernel set in use and all the ones this CPU supports. */
  isa?: string;
  isas?: string[];
  cpuFeatures?: string;
  threads?: number;
  devices?: CudaDeviceInfo[];
}

interface Loaded {
  addon: Addon;
  binary: string;
  device: 'cpu' | 'cuda';
  reports: BackendReport[];
}

let loaded: Loaded | undefined;

function deviceChoice(): DeviceChoice {
  const raw = (process.env.TESSERA_DEVICE ?? 'auto').trim().toLowerCase();
  if (raw === '' || raw === 'auto') return 'auto';
  if (raw === 'cpu' || raw === 'cuda') return raw;
  throw new RangeError(`TESSERA_DEVICE must be cpu, cuda or auto, got ${JSON.stringify(process.env.TESSERA_DEVICE)}`);
}

/** Candidate CUDA binaries, in order: the prebuilt one, then a local cmake-js build. */
function cudaCandidates(): string[] {
  const tag = `${process.platform}-${process.arch}`;
  return [
    path.join(PACKAGE_ROOT, 'prebuilds', `${tag}-cuda`, 'tessera_cuda.node'),
    path.join(PACKAGE_ROOT, 'build-cuda', 'Release', 'tessera_cuda.node'),
  ];
}

function requireAddon(file: string): Addon {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  return require(file) as Addon;
}

function tryCuda(reports: BackendReport[]): Loaded | undefined {
  const tried: string[] = [];
  for (const file of cudaCandidates()) {
    if (!fs.existsSync(file)) {
      tried.push(`${file} (not found)`);
      continue;
    }
    try {
      const addon = requireAddon(file);
      const info = addon.info();
      if (info.cuda.usable) {
        const report: BackendReport = { name: 'cuda', available: true, binary: file, devices: info.cuda.devices };
        reports.push(report);
        return { addon, binary: file, device: 'cuda', reports };
      }
      tried.push(`${file} (loaded, but ${info.cuda.reason})`);
    } catch (err) {
      tried.push(`${file} (failed to load: ${(err as Error).message})`);
    }
  }
  reports.push({ name: 'cuda', available: false, reason: tried.join('; ') });
  return undefined;
}

function loadCpu(reports: BackendReport[]): Loaded {
  // node-gyp-build looks in prebuilds/<platform>-<arch>/ then build/Release and build/Debug.
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const nodeGypBuild = require('node-gyp-build') as { (dir: string): Addon; resolve(dir: string): string };
  let binary: string;
  try {
    binary = nodeGypBuild.resolve(PACKAGE_ROOT);
  } catch (err) {
    throw new Error(
      [
        `tessera: no native binary for ${process.platform}-${process.arch} (node ${process.version}).`,
        `Tried: ${path.join(PACKAGE_ROOT, 'prebuilds', `${process.platform}-${process.arch}`)}/*.node, ` +
          `${path.join(PACKAGE_ROOT, 'build', 'Release')}/tessera.node.`,
        `(${(err as Error).message.split('\n')[0]})`,
        'Possible solutions:',
        '  - reinstall tessera-llm so its prebuilt binaries are present (check that node_modules/tessera-llm/prebuilds exists);',
        '  - build from source (needs a C++17 compiler, python3 and make): npm rebuild tessera-llm --build-from-source',
        '    or, inside the repository: npm run build:native;',
        '  - set TESSERA_DEVICE=cpu if a CUDA binary was meant to be skipped.',
      ].join('\n'),
    );
  }
  const addon = requireAddon(binary);
  const info = addon.info();
  reports.unshift({
    name: 'cpu',
    available: true,
    binary,
    isa: info.isa,
    isas: info.isas,
    cpuFeatures: info.cpuFeatures,
    threads: info.threads,
  });
  return { addon, binary, device: 'cpu', reports };
}

function load(): Loaded {
  if (loaded) return loaded;
  const choice = deviceChoice();
  const reports: BackendReport[] = [];
  if (choice !== 'cpu') {
    const cuda = tryCuda(reports);
    if (cuda) {
      const info = cuda.addon.info();
      reports.unshift({
        name: 'cpu',
        available: true,
        binary: cuda.binary,
        isa: info.isa,
        isas: info.isas,
        cpuFeatures: info.cpuFeatures,
        threads: info.threads,
      });
      loaded = cuda;
      return cuda;
    }
    if (choice === 'cuda') {
      throw new Error(
        `tessera: TESSERA_DEVICE=cuda but no usable CUDA backend: ${reports[0].reason}.\n` +
          'Possible solutions: install an NVIDIA driver and a GPU of compute capability >= 7.5; build the CUDA ' +
          'binary with `npm run build:cuda` (needs nvcc); or unset TESSERA_DEVICE to run on the CPU.',
      );
    }
  } else {
    reports.push({ name: 'cuda', available: false, reason: 'skipped: TESSERA_DEVICE=cpu' });
  }
  loaded = loadCpu(reports);
  return loaded;
}

/** The loaded native module (loads it on first use). */
export function addon(): Addon {
  return load().addon;
}

/** Which device the loaded binary computes on. */
export function activeDevice(): 'cpu' | 'cuda' {
  return load().device;
}

/** What is available, which binary provides it, and why a backend is not available. */
export function backends(): BackendReport[] {
  const l = load();
  const info = l.addon.info();
  return l.reports.map((r) => (r.name === 'cpu' ? { ...r, isa: info.isa, threads: info.threads } : r));
}

/** Native build and CPU details: the kernel set in use, threads, the CUDA probe. */
export function nativeInfo(): NativeInfo & { binary: string; device: 'cpu' | 'cuda' } {
  const l = load();
  return { ...l.addon.info(), binary: l.binary, device: l.device };
}
