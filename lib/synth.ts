// Synthetic models: a Llama GGUF of any shape with seeded random weights and a real vocabulary
// taken from another GGUF, for benchmarks (no machine here can download a big model).
import { DTYPES } from './dtype';
import { checkInteger, checkNumber, typeError } from './errors';
import { addon } from './native';

export interface SyntheticModelOptions {
  /** 'llama' (default) or 'qwen2' (Q/K/V biases, NeoX rope). */
  arch?: 'llama' | 'qwen2';
  /** Standard deviation of the random weights (default 0.02; larger gives peakier logits). */
  weightStd?: number;
  /** A named shape, or the numbers themselves. */
  preset?: keyof typeof SYNTHETIC_PRESETS;
  dim?: number;
  layers?: number;
  heads?: number;
  kvHeads?: number;
  ff?: number;
  context?: number;
  /**
   * 2-D weight type. Default 'f16'. k-quants (q4_k, q6_k) need rows that are multiples of 256;
   * a tensor whose rows are not is written in f16, as llama.cpp's quantizer does.
   */
  dtype?: 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0' | 'q4_k' | 'q6_k';
  /** GGUF whose tokenizer (tokenizer.* keys) the model uses; its token count is the vocabulary size. */
  vocabFrom: string;
  seed?: number;
  tiedOutput?: boolean;
  name?: string;
}

/** Real checkpoint shapes (vocabulary comes from vocabFrom). */
export const SYNTHETIC_PRESETS = {
  /** A ~110M Llama (dim 768, 12 layers, 12 heads, FFN 2048). */
  '110m': { dim: 768, layers: 12, heads: 12, kvHeads: 12, ff: 2048, context: 2048 },
  /** TinyLlama-1.1B (dim 2048, 22 layers, 32 heads / 4 KV heads, FFN 5632). */
  'tinyllama-1.1b': { dim: 2048, layers: 22, heads: 32, kvHeads: 4, ff: 5632, context: 2048 },
  /** A small model for tests (dim 128, 2 layers, GQA 4/2). */
  tiny: { dim: 128, layers: 2, heads: 4, kvHeads: 2, ff: 352, context: 512 },
} as const;

/** Writes a synthetic Llama model to `path`; resolves with the bytes written. */
export async function writeSyntheticModel(path: string, options: SyntheticModelOptions): Promise<number> {
  const where = 'writeSyntheticModel';
  if (typeof path !== 'string' || path === '') throw typeError(where, 'path', 'a file path', path);
  if (typeof options?.vocabFrom !== 'string') throw typeError(where, 'vocabFrom', 'the path of a GGUF with a vocabulary', options?.vocabFrom);
  const base = options.preset ? SYNTHETIC_PRESETS[options.preset] : undefined;
  if (options.preset && !base) throw typeError(where, 'preset', Object.keys(SYNTHETIC_PRESETS).join(', '), options.preset);
  const pick = (k: 'dim' | 'layers' | 'heads' | 'kvHeads' | 'ff' | 'context', def?: number) =>
    checkInteger(where, k, options[k] ?? base?.[k] ?? def, 1, 1 << 20);
  const dtype = options.dtype ?? 'f16';
  if (!['f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_k', 'q6_k'].includes(dtype))
    throw typeError(where, 'dtype', 'f32, f16, bf16, q8_0, q4_0, q4_k or q6_k', dtype);
  const dim = pick('dim');
  const heads = pick('heads');
  const arch = options.arch ?? 'llama';
  if (arch !== 'llama' && arch !== 'qwen2') throw typeError(where, 'arch', "'llama' or 'qwen2'", arch);
  return addon().writeSyntheticModel(path, {
    arch,
    weightStd: checkNumber(where, 'weightStd', options.weightStd ?? 0.02, { positive: true }),
    name: options.name ?? `tessera-synthetic-${options.preset ?? `${dim}d`}-${dtype}`,
    dim,
    layers: pick('layers'),
    heads,
    kvHeads: pick('kvHeads', heads),
    ff: pick('ff'),
    vocab: 0,
    context: pick('context', 2048),
    ropeBase: 10000,
    rmsEps: 1e-5,
    dtype: DTYPES[dtype].code,
    tiedOutput: Boolean(options.tiedOutput),
    seed: checkNumber(where, 'seed', options.seed ?? 1),
    vocabPath: options.vocabFrom,
  });
}
