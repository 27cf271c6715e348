// tessera: LLM inference for Node.js. Public entry point (CommonJS; dist/index.mjs re-exports it).
export { Tensor, numel, type Device, type Shape } from './tensor';
export { DTYPES, byteSize, isDType, type DType, type Storage } from './dtype';
export { DisposedError, OutOfPagesError } from './errors';
export {
  ops,
  WEIGHT_DTYPES,
  CONVERT_DTYPES,
  type ConvertDType,
  type Ops,
  type WeightDType,
  type RopeMode,
  type RopeOptions,
  type AttentionOptions,
  type PagePool,
  type PageTable,
  type PagedAttentionOptions,
} from './ops';
export { NoChatTemplateError, ChatTemplateError, type ChatMessage, type ChatTemplateOptions } from './chat';
export { createServer, type ServerOptions, type TesseraServer } from './server';
export { loadModel, Model, type LoadModelOptions, type LoadProgress, type ModelStats, type ModelInfo, type GenerateOptions, type GenerateChunk, type Generation, type Completion, type FinishReason } from './model';
export {
  Sampler,
  Rng,
  argmax,
  logSoftmax,
  validateSamplingOptions,
  DEFAULT_SAMPLING_OPTIONS,
  type SamplingOptions,
  type ResolvedSamplingOptions,
  type SampleOptions,
  type SampleResult,
  type TokenLogprob,
} from './sampling';
export { writeSyntheticModel, SYNTHETIC_PRESETS, type SyntheticModelOptions } from './synth';
export { Tokenizer, TokenType, TokenAttr, type EncodeOptions, type DecodeOptions, type DecoderOptions, type StreamingDecoder } from './tokenizer';
export { readGguf, writeGguf, type GgufInfo, type GgufTensorInfo, type GgufValue, type GgufWriteSpec } from './gguf';
export { backends, nativeInfo, activeDevice, demoModelPath, type Architecture, type BackendReport, type NativeInfo, type CudaDeviceInfo, type DeviceChoice } from './native';

import { version as pkgVersion } from './version';
import { addon } from './native';
export const version: string = pkgVersion;

// Load the native binary now, so a missing or unusable one fails at require/import time with the
// list of what was tried (TESSERA_DEVICE decides which binaries are candidates).
addon();
