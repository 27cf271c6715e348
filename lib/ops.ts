// tessera.ops: the op set on tensors, for tests, benchmarks and advanced users. Every op checks
// its arguments here (TypeError/RangeError naming the argument), allocates its output and makes
// one synchronous native call. `ops.reference` runs the plain float64 implementations instead.
// These are building blocks; model inference runs whole forward steps off the main thread.
import { DTYPES } from './dtype';
import { checkIndptr, checkInteger, checkNumber, rangeError, typeError } from './errors';
import { addon } from './native';
import { Tensor, expectTensor, int32Arg } from './tensor';

export type WeightDType = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0' | 'q4_k' | 'q6_k';
export const WEIGHT_DTYPES: readonly WeightDType[] = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_k', 'q6_k'];
/** The dtypes convert can produce (f32 to any of them, any of them to f32; k-quants in whole blocks of 256). */
export type ConvertDType = 'f32' | 'f16' | 'bf16' | 'q8_0' | 'q4_0' | 'q4_k' | 'q6_k';
export const CONVERT_DTYPES: readonly ConvertDType[] = ['f32', 'f16', 'bf16', 'q8_0', 'q4_0', 'q4_k', 'q6_k'];
export type RopeMode = 'normal' | 'neox';

export interface RopeOptions {
  /** Rotated dimensions per head (even, <= head_dim). Default: head_dim. */
  nRot?: number;
  /** Default 10000. */
  thetaBase?: number;
  /** Linear position scaling (angle = pos * freqScale * freq). Default 1. */
  freqScale?: number;
  /** 'normal' (llama.cpp, interleaved pairs) or 'neox' (split halves). Default 'normal'. */
  mode?: RopeMode;
}

export interface AttentionOptions {
  /** Softmax scale. Default 1/sqrt(head_dim). */
  scale?: number;
}

/** One layer's K and V page pool: (numPages, pageSize, nKvHeads, headDim) in f32 or f16. */
export interface PagePool {
  kPages: Tensor;
  vPages: Tensor;
}

/** CSR page tables of a batch (FlashInfer layout). */
export interface PageTable {
  /** (batch + 1,) offsets into indices. */
  indptr: Int32Array | Tensor | number[];
  /** Page ids of every sequence, concatenated. */
  indices: Int32Array | Tensor | number[];
  /** (batch,) tokens in each sequence's last page (1..pageSize). */
  lastPageLen: Int32Array | Tensor | number[];
}

export interface PagedAttentionOptions extends AttentionOptions {
  /** Tree mask (u8, 0/1): for each sequence, nq x nq entries, row = query, column = tree node. */
  mask?: Uint8Array | Tensor;
  /** (batch + 1,) offsets of each sequence's nq*nq block in mask. Default: cumulative nq². */
  maskIndptr?: Int32Array | Tensor | number[];
}

export interface Ops {
  /** y (..., n) = x (..., k) · wᵀ, with w (n, k) in f32/f16/bf16/q8_0/q4_0/q4_k/q6_k. */
  matmul(x: Tensor, w: Tensor): Tensor;
  /** x / sqrt(mean(x²) + eps) * weight over the last axis. */
  rmsnorm(x: Tensor, weight: Tensor, eps?: number): Tensor;
  /** Rotary embedding of x (tokens, heads, headDim) at positions (tokens,); returns a new tensor. */
  rope(x: Tensor, positions: Int32Array | Tensor | number[], options?: RopeOptions): Tensor;
  /** silu(gate) * up. */
  swiglu(gate: Tensor, up: Tensor): Tensor;
  /** Softmax over the last axis. */
  softmax(x: Tensor): Tensor;
  /** Causal attention over sequences packed along the token axis (cuSeqlens: (B+1,)). */
  varlenAttention(q: Tensor, k: Tensor, v: Tensor, cuSeqlens: Int32Array | Tensor | number[], options?: AttentionOptions): Tensor;
  /** Attention of q (Tq, Hq, D), split by qoIndptr, against paged K/V. */
  pagedAttention(q: Tensor, qoIndptr: Int32Array | Tensor | number[], pool: PagePool, table: PageTable, options?: PagedAttentionOptions): Tensor;
  /** Writes k, v (T, Hkv, D) into the pages of sequence batchIndices[t] at positions[t] (in place). */
  kvAppend(k: Tensor, v: Tensor, pool: PagePool, table: PageTable, batchIndices: Int32Array | Tensor | number[], positions: Int32Array | Tensor | number[]): void;
  /** Any weight dtype (k-quants included) to f32, or f32 to f16/bf16/q8_0/q4_0 (ggml's quantisers). */
  convert(x: Tensor, dtype: ConvertDType): Tensor;
}

function makeOps(reference: boolean): Ops {
  // Each op has a native function of the same name taking one argument object.
  const call = (name: keyof Ops, args: Record<string, unknown>): void => {
    addon()[name]({ ...args, reference });
  };

  function matmul(x: Tensor, w: Tensor): Tensor {
    const where = 'matmul';
    expectTensor(where, 'x', x, ['f32']);
    expectTensor(where, 'w', w, WEIGHT_DTYPES, 2);
    if (x.shape.length < 1) throw rangeError(where, 'x', 'must have at least 1 dimension');
    const [n, k] = w.shape;
    const kx = x.shape[x.shape.length - 1];
    if (kx !== k) throw rangeError(where, 'x', `last dimension (${kx}) must equal w's inner dimension (${k})`);
    if (k === 0) throw rangeError(where, 'w', 'must have a non-empty inner dimension');
    const m = x.size / k;
    const y = Tensor.zeros([...x.shape.slice(0, -1), n]);
    call('matmul', { x: x.data, w: w.data, wDtype: DTYPES[w.dtype].code, y: y.data, m, n, k });
    return y;
  }

  function rmsnorm(x: Tensor, weight: Tensor, eps = 1e-5): Tensor {
    const where = 'rmsnorm';
    expectTensor(where, 'x', x, ['f32']);
    expectTensor(where, 'weight', weight, ['f32'], 1);
    checkNumber(where, 'eps', eps);
    if (x.shape.length < 1 || x.shape[x.shape.length - 1] === 0) throw rangeError(where, 'x', 'must have a non-empty last axis');
    const n = x.shape[x.shape.length - 1];
    if (n !== weight.shape[0]) {
      throw rangeError(where, 'weight', `length ${weight.shape[0]} must equal x's last dimension (${n})`);
    }
    const y = Tensor.zeros(x.shape);
    call('rmsnorm', { x: x.data, weight: weight.data, y: y.data, rows: x.size / n, n, eps });
    return y;
  }

  function rope(x: Tensor, positions: Int32Array | Tensor | number[], options: RopeOptions = {}): Tensor {
    const where = 'rope';
    expectTensor(where, 'x', x, ['f32'], 3);
    const pos = int32Arg(where, 'positions', positions);
    const [tokens, heads, headDim] = x.shape;
    if (pos.length !== tokens) throw rangeError(where, 'positions', `has ${pos.length} entries, x has ${tokens} tokens`);
    const nRot = checkInteger(where, 'nRot', options.nRot ?? headDim, 2, headDim);
    if (nRot % 2 !== 0) throw rangeError(where, 'nRot', `must be even, got ${nRot}`);
    const thetaBase = checkNumber(where, 'thetaBase', options.thetaBase ?? 10000, { positive: true });
    const freqScale = checkNumber(where, 'freqScale', options.freqScale ?? 1, { positive: true });
    const mode = options.mode ?? 'normal';
    if (mode !== 'normal' && mode !== 'neox') throw typeError(where, 'mode', '"normal" or "neox"', mode);
    const y = Tensor.from(Float32Array.from(x.data as Float32Array), x.shape);
    call('rope', { x: y.data, positions: pos, tokens, heads, headDim, nRot, thetaBase, freqScale, mode: mode === 'neox' ? 2 : 0 });
    return y;
  }

  function swiglu(gate: Tensor, up: Tensor): Tensor {
    const where = 'swiglu';
    expectTensor(where, 'gate', gate, ['f32']);
    expectTensor(where, 'up', up, ['f32']);
    if (gate.shape.join() !== up.shape.join()) {
      throw rangeError(where, 'up', `shape [${up.shape.join(', ')}] must equal gate's [${gate.shape.join(', ')}]`);
    }
    const y = Tensor.zeros(gate.shape);
    call('swiglu', { gate: gate.data, up: up.data, y: y.data, n: gate.size });
    return y;
  }

  function softmax(x: Tensor): Tensor {
    const where = 'softmax';
    expectTensor(where, 'x', x, ['f32']);
    if (x.shape.length < 1 || x.shape[x.shape.length - 1] === 0) throw rangeError(where, 'x', 'must have a non-empty last axis');
    const n = x.shape[x.shape.length - 1];
    const y = Tensor.zeros(x.shape);
    call('softmax', { x: x.data, y: y.data, rows: x.size / n, n });
    return y;
  }

  function headShape(where: string, q: Tensor, nameKv: string, kv: readonly number[], opts: AttentionOptions) {
    const [, nHeads, headDim] = q.shape;
    const nKvHeads = kv[kv.length - 2];
    if (kv[kv.length - 1] !== headDim) throw rangeError(where, nameKv, `head_dim ${kv[kv.length - 1]} must equal q's head_dim ${headDim}`);
    if (nKvHeads < 1 || nHeads % nKvHeads !== 0) {
      throw rangeError(where, nameKv, `has ${nKvHeads} KV heads; q's ${nHeads} heads must be a multiple of it (GQA)`);
    }
    const scale = checkNumber(where, 'scale', opts.scale ?? 1 / Math.sqrt(headDim), { positive: true });
    return { nHeads, nKvHeads, headDim, scale };
  }

  function varlenAttention(q: Tensor, k: Tensor, v: Tensor, cuSeqlens: Int32Array | Tensor | number[], options: AttentionOptions = {}): Tensor {
    const where = 'varlenAttention';
    expectTensor(where, 'q', q, ['f32'], 3);
    expectTensor(where, 'k', k, ['f32'], 3);
    expectTensor(where, 'v', v, ['f32'], 3);
    const tokens = q.shape[0];
    if (k.shape.join() !== v.shape.join()) throw rangeError(where, 'v', `shape [${v.shape.join(', ')}] must equal k's [${k.shape.join(', ')}]`);
    if (k.shape[0] !== tokens) throw rangeError(where, 'k', `has ${k.shape[0]} tokens, q has ${tokens}`);
    const shape = headShape(where, q, 'k', k.shape, options);
    const cu = int32Arg(where, 'cuSeqlens', cuSeqlens);
    checkIndptr(where, 'cuSeqlens', cu, tokens);
    const o = Tensor.zeros(q.shape);
    call('varlenAttention', { q: q.data, k: k.data, v: v.data, o: o.data, cuSeqlens: cu, tokens, ...shape });
    return o;
  }

  function poolArgs(where: string, pool: PagePool, table: PageTable) {
    if (typeof pool !== 'object' || pool === null) throw typeError(where, 'pool', 'an object { kPages, vPages }', pool);
    const kPages = expectTensor(where, 'pool.kPages', pool.kPages, ['f32', 'f16'], 4);
    const vPages = expectTensor(where, 'pool.vPages', pool.vPages, ['f32', 'f16'], 4);
    if (kPages.shape.join() !== vPages.shape.join() || kPages.dtype !== vPages.dtype) {
      throw rangeError(where, 'pool.vPages', 'must have the same shape and dtype as pool.kPages');
    }
    if (typeof table !== 'object' || table === null) throw typeError(where, 'table', 'an object { indptr, indices, lastPageLen }', table);
    const kvIndptr = int32Arg(where, 'table.indptr', table.indptr);
    const kvIndices = int32Arg(where, 'table.indices', table.indices);
    const kvLastPageLen = int32Arg(where, 'table.lastPageLen', table.lastPageLen);
    const [numPages, pageSize, nKvHeads, headDim] = kPages.shape;
    checkIndptr(where, 'table.indptr', kvIndptr, kvIndices.length);
    const batch = kvIndptr.length - 1;
    if (kvLastPageLen.length !== batch) throw rangeError(where, 'table.lastPageLen', `has ${kvLastPageLen.length} entries, the batch has ${batch} sequences`);
    for (let i = 0; i < kvIndices.length; i++) {
      if (kvIndices[i] < 0 || kvIndices[i] >= numPages) {
        throw rangeError(where, 'table.indices', `[${i}] = ${kvIndices[i]} is out of range [0, ${numPages})`);
      }
    }
    for (let b = 0; b < batch; b++) {
      if (kvIndptr[b + 1] > kvIndptr[b] && (kvLastPageLen[b] < 1 || kvLastPageLen[b] > pageSize)) {
        throw rangeError(where, 'table.lastPageLen', `[${b}] = ${kvLastPageLen[b]} must be in [1, pageSize = ${pageSize}]`);
      }
    }
    const seqLen = (b: number) => {
      const pages = kvIndptr[b + 1] - kvIndptr[b];
      return pages === 0 ? 0 : (pages - 1) * pageSize + kvLastPageLen[b];
    };
    return {
      args: {
        kPages: kPages.data, vPages: vPages.data, kvDtype: DTYPES[kPages.dtype].code, numPages, pageSize, nKvHeads, headDim,
        kvIndptr, kvIndices, kvLastPageLen,
      },
      batch,
      seqLen,
    };
  }

  function pagedAttention(
    q: Tensor, qoIndptr: Int32Array | Tensor | number[], pool: PagePool, table: PageTable, options: PagedAttentionOptions = {},
  ): Tensor {
    const where = 'pagedAttention';
    expectTensor(where, 'q', q, ['f32'], 3);
    const p = poolArgs(where, pool, table);
    const shape = headShape(where, q, 'pool.kPages', (pool.kPages as Tensor).shape, options);
    const tokens = q.shape[0];
    const qo = int32Arg(where, 'qoIndptr', qoIndptr);
    checkIndptr(where, 'qoIndptr', qo, tokens);
    if (qo.length !== p.batch + 1) throw rangeError(where, 'qoIndptr', `has ${qo.length} entries, table.indptr has ${p.batch + 1}`);
    for (let b = 0; b < p.batch; b++) {
      if (qo[b + 1] - qo[b] > p.seqLen(b)) {
        throw rangeError(where, 'qoIndptr', `gives sequence ${b} ${qo[b + 1] - qo[b]} queries but it has only ${p.seqLen(b)} KV entries`);
      }
    }
    let extra: Record<string, unknown> = {};
    if (options.mask !== undefined) {
      const mask = options.mask instanceof Tensor ? expectTensor(where, 'mask', options.mask, ['u8']).data : options.mask;
      if (!(mask instanceof Uint8Array)) throw typeError(where, 'mask', 'a Uint8Array or a u8 Tensor', options.mask);
      let maskIndptr: Int32Array;
      if (options.maskIndptr !== undefined) {
        maskIndptr = int32Arg(where, 'maskIndptr', options.maskIndptr);
      } else {
        maskIndptr = new Int32Array(p.batch + 1);
        for (let b = 0; b < p.batch; b++) maskIndptr[b + 1] = maskIndptr[b] + (qo[b + 1] - qo[b]) ** 2;
      }
      checkIndptr(where, 'maskIndptr', maskIndptr, mask.length);
      for (let b = 0; b < p.batch; b++) {
        const nq = qo[b + 1] - qo[b];
        if (maskIndptr[b + 1] - maskIndptr[b] !== nq * nq) {
          throw rangeError(where, 'mask', `block of sequence ${b} has ${maskIndptr[b + 1] - maskIndptr[b]} entries, expected ${nq} x ${nq}`);
        }
      }
      extra = { mask, maskIndptr };
    }
    const o = Tensor.zeros(q.shape);
    call('pagedAttention', { q: q.data, qoIndptr: qo, o: o.data, tokens, ...p.args, ...shape, ...extra });
    return o;
  }

  function kvAppend(
    k: Tensor, v: Tensor, pool: PagePool, table: PageTable, batchIndices: Int32Array | Tensor | number[], positions: Int32Array | Tensor | number[],
  ): void {
    const where = 'kvAppend';
    expectTensor(where, 'k', k, ['f32'], 3);
    expectTensor(where, 'v', v, ['f32'], 3);
    const p = poolArgs(where, pool, table);
    if (k.shape.join() !== v.shape.join()) throw rangeError(where, 'v', `shape [${v.shape.join(', ')}] must equal k's [${k.shape.join(', ')}]`);
    if (k.shape[1] !== p.args.nKvHeads || k.shape[2] !== p.args.headDim) {
      throw rangeError(where, 'k', `shape [${k.shape.join(', ')}] must be (tokens, ${p.args.nKvHeads}, ${p.args.headDim}) to match the page pool`);
    }
    const tokens = k.shape[0];
    const bi = int32Arg(where, 'batchIndices', batchIndices);
    const pos = int32Arg(where, 'positions', positions);
    if (bi.length !== tokens) throw rangeError(where, 'batchIndices', `has ${bi.length} entries, k has ${tokens} tokens`);
    if (pos.length !== tokens) throw rangeError(where, 'positions', `has ${pos.length} entries, k has ${tokens} tokens`);
    for (let t = 0; t < tokens; t++) {
      if (bi[t] < 0 || bi[t] >= p.batch) throw rangeError(where, 'batchIndices', `[${t}] = ${bi[t]} is out of range [0, ${p.batch})`);
      if (pos[t] < 0 || pos[t] >= p.seqLen(bi[t])) {
        throw rangeError(where, 'positions', `[${t}] = ${pos[t]} is outside sequence ${bi[t]}'s page table (length ${p.seqLen(bi[t])})`);
      }
    }
    call('kvAppend', { k: k.data, v: v.data, batchIndices: bi, positions: pos, tokens, ...p.args });
  }

  function convert(x: Tensor, dtype: ConvertDType): Tensor {
    const where = 'convert';
    expectTensor(where, 'x', x, WEIGHT_DTYPES);
    if (!CONVERT_DTYPES.includes(dtype)) throw typeError(where, 'dtype', CONVERT_DTYPES.join(', '), dtype);
    if (x.dtype !== 'f32' && dtype !== 'f32') {
      throw new TypeError(`convert: ${x.dtype} -> ${dtype} is not supported; convert to f32 first`);
    }
    const y = Tensor.zeros(x.shape, dtype);
    call('convert', { src: x.data, srcDtype: DTYPES[x.dtype].code, dst: y.data, dstDtype: DTYPES[dtype].code, n: x.size });
    return y;
  }

  return { matmul, rmsnorm, rope, swiglu, softmax, varlenAttention, pagedAttention, kvAppend, convert };
}

/** The op set on the CPU kernels (threaded, SIMD chosen for this CPU). */
export const ops: Ops & {
  /** The same ops as plain float64 reference implementations (slow; the oracle of the tests). */
  reference: Ops;
  /** Threads used by ops (0 = all cores this process may use). Returns the resulting count. */
  setThreads(n: number): number;
  /** Kernel set: 'scalar' | 'avx2' | 'avx512' | 'neon'. Returns false if this CPU lacks it. */
  setIsa(isa: string): boolean;
} = Object.assign(makeOps(false), {
  reference: makeOps(true),
  setThreads: (n: number) => addon().setThreads(checkInteger('ops.setThreads', 'n', n, 0, 1024)),
  setIsa: (isa: string) => addon().setIsa(isa),
});

