// Bad input raises TypeError / RangeError naming the argument, from the TypeScript layer and,
// when the TypeScript checks are bypassed, from the N-API layer itself; nothing crashes.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { DisposedError, Tensor, ops } from '../dist/index.js';
import * as R from './reference';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require_ = createRequire(import.meta.url);

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type ErrorClass = new (...args: any[]) => Error;

/** fn must throw an instance of `kind` whose message matches every pattern. */
function expectThrow(fn: () => unknown, kind: ErrorClass, ...patterns: RegExp[]): Error {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught, 'expected a throw').toBeDefined();
  expect(caught).toBeInstanceOf(kind);
  const message = (caught as Error).message;
  for (const p of patterns) expect(message).toMatch(p);
  return caught as Error;
}

const rng = new R.Rng(42);
const f32t = (shape: number[]) => Tensor.from(R.randomF32(rng, shape.reduce((a, b) => a * b, 1)), shape);

/** A valid paged setup: 2 sequences of 5 and 3 tokens, pageSize 4, 4 pages. */
function paged(dtype: 'f32' | 'f16' = 'f32') {
  const k = f32t([4, 4, 2, 8]);
  const pool = {
    kPages: dtype === 'f32' ? k : ops.convert(k, 'f16'),
    vPages: dtype === 'f32' ? f32t([4, 4, 2, 8]) : ops.convert(f32t([4, 4, 2, 8]), 'f16'),
  };
  const table = { indptr: [0, 2, 3], indices: [3, 0, 2], lastPageLen: [1, 3] };
  const q = f32t([3, 4, 8]);
  return { pool, table, q, qo: [0, 2, 3] };
}

describe('TypeScript layer: wrong dtypes', () => {
  it('matmul with an i32 x or an i32/u8 w', () => {
    expectThrow(() => ops.matmul(Tensor.zeros([2, 32], 'i32'), f32t([4, 32])), TypeError, /\bx\b/, /f32/, /i32/);
    expectThrow(() => ops.matmul(f32t([2, 32]), Tensor.zeros([4, 32], 'i32')), TypeError, /\bw\b/);
    expectThrow(() => ops.matmul(f32t([2, 32]), Tensor.zeros([4, 32], 'u8')), TypeError, /\bw\b/);
    expect(ops.matmul(f32t([2, 256]), Tensor.zeros([4, 256], 'q6_k')).shape).toEqual([2, 4]);
    // k-quants are convert targets, in whole super-blocks of 256; i32 is not a target.
    expect(ops.convert(f32t([2, 256]), 'q4_k').dtype).toBe('q4_k');
    expectThrow(() => ops.convert(f32t([2, 64]), 'q6_k'), RangeError, /256/);
    expectThrow(() => ops.convert(f32t([2, 256]), 'i32' as never), TypeError, /dtype/);
  });

  it('non-tensors', () => {
    expectThrow(() => ops.matmul(new Float32Array(4) as unknown as Tensor, f32t([1, 4])), TypeError, /\bx\b/, /Tensor/);
    expectThrow(() => ops.softmax(null as unknown as Tensor), TypeError, /\bx\b/);
    expectThrow(() => ops.rmsnorm(f32t([2, 4]), [1, 2, 3, 4] as unknown as Tensor), TypeError, /weight/);
  });

  it('f16 activations are rejected', () => {
    expectThrow(() => ops.softmax(ops.convert(f32t([2, 4]), 'f16')), TypeError, /\bx\b/, /f16/);
    expectThrow(() => ops.swiglu(f32t([4]), ops.convert(f32t([4]), 'bf16')), TypeError, /\bup\b/);
  });

  it('convert to an unsupported pair / dtype', () => {
    expectThrow(() => ops.convert(ops.convert(f32t([2, 32]), 'f16'), 'q8_0'), TypeError, /f16/, /q8_0/);
    expectThrow(() => ops.convert(f32t([2, 32]), 'i32' as 'f32'), TypeError, /dtype/);
    expectThrow(() => ops.convert(Tensor.zeros([2, 32], 'i32'), 'f32'), TypeError, /\bx\b/);
  });

  it('integer arguments', () => {
    expectThrow(() => ops.rope(f32t([2, 1, 4]), [0, 1.5]), TypeError, /positions/);
    expectThrow(() => ops.rope(f32t([2, 1, 4]), new Float32Array([0, 1]) as unknown as number[]), TypeError, /positions/);
    expectThrow(() => ops.varlenAttention(f32t([2, 1, 4]), f32t([2, 1, 4]), f32t([2, 1, 4]), ['0', 2] as unknown as number[]), TypeError, /cuSeqlens/);
    expectThrow(() => ops.varlenAttention(f32t([2, 1, 4]), f32t([2, 1, 4]), f32t([2, 1, 4]), Tensor.from([0, 2])), TypeError, /cuSeqlens/);
  });

  it('pool pages must be f32 or f16', () => {
    const p = paged();
    const bad = { kPages: ops.convert(p.pool.kPages, 'bf16'), vPages: ops.convert(p.pool.vPages, 'bf16') };
    expectThrow(() => ops.pagedAttention(p.q, p.qo, bad, p.table), TypeError, /pool\.kPages/);
    const mixed = { kPages: p.pool.kPages, vPages: ops.convert(p.pool.vPages, 'f16') };
    expectThrow(() => ops.pagedAttention(p.q, p.qo, mixed, p.table), RangeError, /pool\.vPages/);
    expectThrow(() => ops.pagedAttention(p.q, p.qo, null as never, p.table), TypeError, /pool/);
    expectThrow(() => ops.pagedAttention(p.q, p.qo, p.pool, undefined as never), TypeError, /table/);
  });
});

describe('TypeScript layer: shapes and options', () => {
  it('matmul inner dimensions differ', () => {
    expectThrow(() => ops.matmul(f32t([2, 32]), f32t([4, 64])), RangeError, /\bx\b/, /32/, /64/);
    expectThrow(() => ops.matmul(f32t([2, 32]), f32t([4, 2, 16])), RangeError, /\bw\b/, /2 dimensions/);
  });

  it('rmsnorm, swiglu, softmax shape mismatches', () => {
    expectThrow(() => ops.rmsnorm(f32t([2, 8]), f32t([7])), RangeError, /weight/);
    expectThrow(() => ops.rmsnorm(f32t([2, 8]), f32t([8]), Number.NaN), TypeError, /eps/);
    expectThrow(() => ops.swiglu(f32t([2, 8]), f32t([8, 2])), RangeError, /\bup\b/);
    expectThrow(() => ops.softmax(Tensor.zeros([3, 0])), RangeError, /\bx\b/);
  });

  it('rope options', () => {
    const x = f32t([2, 1, 8]);
    expectThrow(() => ops.rope(x, [0]), RangeError, /positions/);
    expectThrow(() => ops.rope(x, [0, 1], { nRot: 3 }), RangeError, /nRot/);
    expectThrow(() => ops.rope(x, [0, 1], { nRot: 10 }), RangeError, /nRot/);
    expectThrow(() => ops.rope(x, [0, 1], { thetaBase: -1 }), RangeError, /thetaBase/);
    expectThrow(() => ops.rope(x, [0, 1], { freqScale: 0 }), RangeError, /freqScale/);
    expectThrow(() => ops.rope(x, [0, 1], { mode: 'glm' as 'neox' }), TypeError, /mode/);
    expectThrow(() => ops.rope(f32t([2, 8]), [0, 1]), RangeError, /\bx\b/, /3 dimensions/);
  });

  it('varlenAttention shapes', () => {
    const q = f32t([8, 4, 16]);
    const kv = f32t([8, 2, 16]);
    expectThrow(() => ops.varlenAttention(q, f32t([7, 2, 16]), f32t([7, 2, 16]), [0, 7]), RangeError, /\bk\b/);
    expectThrow(() => ops.varlenAttention(q, kv, f32t([8, 1, 16]), [0, 8]), RangeError, /\bv\b/);
    expectThrow(() => ops.varlenAttention(q, f32t([8, 3, 16]), f32t([8, 3, 16]), [0, 8]), RangeError, /\bk\b/, /GQA|multiple/);
    expectThrow(() => ops.varlenAttention(q, f32t([8, 2, 8]), f32t([8, 2, 8]), [0, 8]), RangeError, /\bk\b/, /head_dim/);
    expectThrow(() => ops.varlenAttention(q, kv, kv, [0, 8], { scale: -1 }), RangeError, /scale/);
  });

  it('non-monotonic cuSeqlens, wrong start, wrong end', () => {
    const q = f32t([8, 2, 8]);
    const kv = f32t([8, 1, 8]);
    expectThrow(() => ops.varlenAttention(q, kv, kv, [0, 5, 3, 8]), RangeError, /cuSeqlens/, /non-decreasing/);
    expectThrow(() => ops.varlenAttention(q, kv, kv, Int32Array.from([0, 5, 7])), RangeError, /cuSeqlens/, /8/);
    expectThrow(() => ops.varlenAttention(q, kv, kv, [0, 5, 9]), RangeError, /cuSeqlens/);
    expectThrow(() => ops.varlenAttention(q, kv, kv, [1, 8]), RangeError, /cuSeqlens/);
    expectThrow(() => ops.varlenAttention(q, kv, kv, []), RangeError, /cuSeqlens/);
  });

  it('page index out of range', () => {
    const p = paged();
    for (const bad of [4, -1, 1000]) {
      const table = { ...p.table, indices: [3, bad, 2] };
      expectThrow(() => ops.pagedAttention(p.q, p.qo, p.pool, table), RangeError, /table\.indices/, new RegExp(`${bad}`));
    }
  });

  it('lastPageLen 0 or > pageSize, or of the wrong length', () => {
    const p = paged();
    for (const bad of [0, 5, -1]) {
      expectThrow(() => ops.pagedAttention(p.q, p.qo, p.pool, { ...p.table, lastPageLen: [bad, 3] }), RangeError, /lastPageLen/);
    }
    expectThrow(() => ops.pagedAttention(p.q, p.qo, p.pool, { ...p.table, lastPageLen: [1] }), RangeError, /lastPageLen/);
  });

  it('page table indptr', () => {
    const p = paged();
    expectThrow(() => ops.pagedAttention(p.q, p.qo, p.pool, { ...p.table, indptr: [0, 2, 1] }), RangeError, /table\.indptr/);
    expectThrow(() => ops.pagedAttention(p.q, p.qo, p.pool, { ...p.table, indptr: [0, 2, 4] }), RangeError, /table\.indptr/);
  });

  it('more queries than KV entries', () => {
    const p = paged();
    // Sequence 1 has 3 KV entries; give it 4 queries.
    expectThrow(() => ops.pagedAttention(f32t([6, 4, 8]), [0, 2, 6], p.pool, p.table), RangeError, /qoIndptr/, /3 KV entries/);
    expectThrow(() => ops.pagedAttention(p.q, [0, 3], p.pool, p.table), RangeError, /qoIndptr/);
    expectThrow(() => ops.pagedAttention(p.q, [0, 2, 4], p.pool, p.table), RangeError, /qoIndptr/);
  });

  it('q heads / head dim vs the pool', () => {
    const p = paged();
    expectThrow(() => ops.pagedAttention(f32t([3, 3, 8]), p.qo, p.pool, p.table), RangeError, /pool\.kPages/);
    expectThrow(() => ops.pagedAttention(f32t([3, 4, 16]), p.qo, p.pool, p.table), RangeError, /pool\.kPages/, /head_dim/);
  });

  it('a wrongly sized tree mask', () => {
    const p = paged();
    // nq = 2 and 1: the mask needs 4 + 1 entries.
    expectThrow(() => ops.pagedAttention(p.q, p.qo, p.pool, p.table, { mask: new Uint8Array(4).fill(1) }), RangeError, /mask/);
    expectThrow(() => ops.pagedAttention(p.q, p.qo, p.pool, p.table, { mask: new Uint8Array(9).fill(1) }), RangeError, /mask/);
    expectThrow(
      () => ops.pagedAttention(p.q, p.qo, p.pool, p.table, { mask: new Uint8Array(5).fill(1), maskIndptr: [0, 3, 5] }),
      RangeError, /mask/, /2 x 2/,
    );
    expectThrow(
      () => ops.pagedAttention(p.q, p.qo, p.pool, p.table, { mask: new Uint8Array(5).fill(1), maskIndptr: [0, 4, 6] }),
      RangeError, /maskIndptr/,
    );
    expectThrow(() => ops.pagedAttention(p.q, p.qo, p.pool, p.table, { mask: [1, 1, 1, 1, 1] as unknown as Uint8Array }), TypeError, /mask/);
    expectThrow(() => ops.pagedAttention(p.q, p.qo, p.pool, p.table, { mask: Tensor.zeros([5], 'i32') }), TypeError, /mask/);
    // The right size works.
    expect(ops.pagedAttention(p.q, p.qo, p.pool, p.table, { mask: new Uint8Array(5).fill(1) }).shape).toEqual([3, 4, 8]);
  });

  it('kvAppend: position beyond the page table, bad batch index, wrong shapes', () => {
    for (const dtype of ['f32', 'f16'] as const) {
      const p = paged(dtype);
      const k = f32t([2, 2, 8]);
      const v = f32t([2, 2, 8]);
      expectThrow(() => ops.kvAppend(k, v, p.pool, p.table, [0, 1], [4, 3]), RangeError, /positions/, /\[1\] = 3/);
      expectThrow(() => ops.kvAppend(k, v, p.pool, p.table, [0, 1], [5, 0]), RangeError, /positions/);
      expectThrow(() => ops.kvAppend(k, v, p.pool, p.table, [0, 1], [-1, 0]), RangeError, /positions/);
      expectThrow(() => ops.kvAppend(k, v, p.pool, p.table, [0, 2], [0, 0]), RangeError, /batchIndices/);
      expectThrow(() => ops.kvAppend(k, v, p.pool, p.table, [0], [0, 0]), RangeError, /batchIndices/);
      expectThrow(() => ops.kvAppend(k, v, p.pool, p.table, [0, 1], [0]), RangeError, /positions/);
      expectThrow(() => ops.kvAppend(f32t([2, 1, 8]), f32t([2, 1, 8]), p.pool, p.table, [0, 1], [0, 0]), RangeError, /\bk\b/);
      expectThrow(() => ops.kvAppend(k, f32t([2, 2, 4]), p.pool, p.table, [0, 1], [0, 0]), RangeError, /\bv\b/);
      ops.kvAppend(k, v, p.pool, p.table, [0, 1], [4, 2]); // the last valid slots
    }
  });

  it('q8_0 / q4_0 weights need k % 32 == 0', () => {
    for (const dtype of ['q8_0', 'q4_0'] as const) {
      expectThrow(() => Tensor.zeros([4, 40], dtype), RangeError, /shape/, /32/);
      expectThrow(() => ops.convert(f32t([4, 40]), dtype), RangeError, /shape/);
      expectThrow(() => Tensor.from(new Uint8Array(4 * 34), [4, 40], dtype), RangeError, /shape/);
      // Nor can a view split a block.
      const q = ops.convert(f32t([4, 64]), dtype);
      expect(q.reshape([2, 4, 32]).shape).toEqual([2, 4, 32]);
      expectThrow(() => q.reshape([16, 16]), RangeError, /shape/);
    }
  });

  it('degenerate (zero-size) shapes either work or throw a TypeError/RangeError', () => {
    const attempts: [string, () => unknown][] = [
      ['matmul k = 0', () => ops.matmul(Tensor.zeros([2, 0]), Tensor.zeros([3, 0]))],
      ['matmul n = 0', () => ops.matmul(f32t([2, 32]), Tensor.zeros([0, 32], 'q8_0'))],
      ['rmsnorm n = 0', () => ops.rmsnorm(Tensor.zeros([2, 0]), Tensor.zeros([0]))],
      ['rmsnorm 0-d x', () => ops.rmsnorm(Tensor.from(new Float32Array([1]), []), Tensor.zeros([1]))],
      ['rope 0 tokens', () => ops.rope(Tensor.zeros([0, 2, 8]), [])],
      ['swiglu empty', () => ops.swiglu(Tensor.zeros([0]), Tensor.zeros([0]))],
      ['softmax 0 rows', () => ops.softmax(Tensor.zeros([0, 4]))],
      ['convert empty', () => ops.convert(Tensor.zeros([0, 32]), 'q4_0')],
      ['rope headDim 1', () => ops.rope(Tensor.zeros([1, 1, 1]), [0])],
    ];
    for (const [label, fn] of attempts) {
      try {
        fn();
      } catch (err) {
        expect(err instanceof TypeError || err instanceof RangeError, `${label}: ${String(err)}`).toBe(true);
      }
    }
  });

  it('setThreads and setIsa arguments', () => {
    expectThrow(() => ops.setThreads(-1), RangeError, /\bn\b/);
    expectThrow(() => ops.setThreads(1.5), TypeError, /\bn\b/);
    expectThrow(() => ops.setIsa('bogus'), RangeError, /isa/);
    expectThrow(() => ops.setIsa(3 as unknown as string), TypeError, /isa/);
  });
});

describe('use after dispose', () => {
  it('Tensor.data throws DisposedError (a TypeError)', () => {
    const t = f32t([2, 3]);
    t.dispose();
    const err = expectThrow(() => t.data, TypeError, /disposed/);
    expect(err).toBeInstanceOf(DisposedError);
    expect(err.name).toBe('DisposedError');
    expect(() => t.toArray()).toThrow(DisposedError);
    expect(() => t.byteLength).toThrow(DisposedError);
    expect(() => t.reshape([3, 2])).toThrow(DisposedError);
    expect(t.disposed).toBe(true);
    expect(String(t)).toMatch(/disposed/);
  });

  it('ops name the disposed argument', () => {
    const x = f32t([2, 32]);
    const w = f32t([4, 32]);
    w.dispose();
    const e1 = expectThrow(() => ops.matmul(x, w), TypeError, /matmul/, /\bw\b/, /disposed/);
    expect(e1).toBeInstanceOf(DisposedError);
    x.dispose();
    expect(() => ops.softmax(x)).toThrow(DisposedError);
    expectThrow(() => ops.softmax(x), DisposedError, /softmax: x/);
    const p = paged();
    p.pool.vPages.dispose();
    expectThrow(() => ops.pagedAttention(p.q, p.qo, p.pool, p.table), DisposedError, /pool\.vPages/);
    const pos = Tensor.from([0, 1], [2], 'i32');
    pos.dispose();
    expectThrow(() => ops.rope(f32t([2, 1, 4]), pos), DisposedError, /positions/);
  });
});

describe('Tensor.from / zeros argument checks', () => {
  it('mismatched length', () => {
    expectThrow(() => Tensor.from(new Float32Array(5), [2, 2]), RangeError, /data/, /5/, /4/);
    expectThrow(() => Tensor.from([1, 2, 3], [2, 2]), RangeError, /data/);
    expectThrow(() => Tensor.from(new Uint8Array(35), undefined, 'q8_0'), RangeError, /data/);
    expectThrow(() => Tensor.from(new Uint8Array(34 * 3), [2, 32], 'q8_0'), RangeError, /data/);
  });

  it('wrong storage, dtype and shape types', () => {
    expectThrow(() => Tensor.from(new Uint16Array(4)), TypeError, /f16|bf16/);
    expectThrow(() => Tensor.from(new Float32Array(4), [4], 'i32'), TypeError, /data/);
    expectThrow(() => Tensor.from(new Float64Array(4) as unknown as Float32Array), TypeError, /data/);
    expectThrow(() => Tensor.from(new Float32Array(4), [4], 'f64' as 'f32'), TypeError, /dtype/);
    expectThrow(() => Tensor.from([1, 2], [2], 'f16'), TypeError, /data/);
    expectThrow(() => Tensor.zeros([2, -1]), TypeError, /shape/);
    expectThrow(() => Tensor.zeros([2, 1.5]), TypeError, /shape/);
    expectThrow(() => Tensor.zeros('2' as unknown as number[]), TypeError, /shape/);
    expectThrow(() => Tensor.zeros([2], 'f8' as 'f32'), TypeError, /dtype/);
    expectThrow(() => f32t([2, 3]).reshape([4, 2]), RangeError, /shape/);
    expectThrow(() => Tensor.zeros([2], 'q8_0').toArray(), RangeError, /shape/);
  });

  it('toArray of encoded dtypes', () => {
    expectThrow(() => ops.convert(f32t([2, 32]), 'f16').toArray(), TypeError, /convert/);
  });
});

// -------------------------------------------------------------------------------------------
// The N-API layer re-checks everything on its own: call the binding directly.

interface Binding {
  [op: string]: (args?: unknown) => unknown;
}
const native = require_('node-gyp-build')(ROOT) as Binding;

function baseMatmul() {
  return { x: new Float32Array(2 * 32), w: new Float32Array(4 * 32), wDtype: 0, y: new Float32Array(8), m: 2, n: 4, k: 32, reference: false };
}

function basePaged() {
  const H = 2;
  const D = 8;
  return {
    kPages: new Float32Array(4 * 4 * H * D).fill(0.5),
    vPages: new Float32Array(4 * 4 * H * D).fill(0.25),
    kvDtype: 0, numPages: 4, pageSize: 4, nKvHeads: H, headDim: D,
    kvIndptr: Int32Array.from([0, 2, 3]), kvIndices: Int32Array.from([3, 0, 2]), kvLastPageLen: Int32Array.from([1, 3]),
    q: new Float32Array(3 * 4 * D).fill(0.1), qoIndptr: Int32Array.from([0, 2, 3]), o: new Float32Array(3 * 4 * D),
    tokens: 3, nHeads: 4, scale: 0.35, reference: false,
  };
}

function baseVarlen() {
  return {
    q: new Float32Array(8 * 2 * 8), k: new Float32Array(8 * 8), v: new Float32Array(8 * 8), o: new Float32Array(8 * 2 * 8),
    cuSeqlens: Int32Array.from([0, 5, 8]), tokens: 8, nHeads: 2, nKvHeads: 1, headDim: 8, scale: 0.3, reference: false,
  };
}

function baseKvAppend() {
  const { kPages, vPages, kvDtype, numPages, pageSize, nKvHeads, headDim, kvIndptr, kvIndices, kvLastPageLen } = basePaged();
  return {
    kPages, vPages, kvDtype, numPages, pageSize, nKvHeads, headDim, kvIndptr, kvIndices, kvLastPageLen,
    k: new Float32Array(2 * 2 * 8), v: new Float32Array(2 * 2 * 8), batchIndices: Int32Array.from([0, 1]), positions: Int32Array.from([4, 2]),
    tokens: 2, reference: false,
  };
}

describe('N-API layer re-checks (TypeScript checks bypassed)', () => {
  for (const reference of [false, true]) {
    describe(reference ? 'reference ops' : 'cpu ops', () => {
      const call = (op: string, args: Record<string, unknown>) => () => native[op]({ ...args, reference });

      it('the valid base arguments work', () => {
        call('matmul', baseMatmul())();
        call('pagedAttention', basePaged())();
        call('varlenAttention', baseVarlen())();
        call('kvAppend', baseKvAppend())();
      });

      it('matmul: too-short x / w / y, bad dtype code, k not a multiple of the block', () => {
        expectThrow(call('matmul', { ...baseMatmul(), x: new Float32Array(63) }), RangeError, /\bx\b/, /63/);
        expectThrow(call('matmul', { ...baseMatmul(), y: new Float32Array(7) }), RangeError, /\by\b/);
        expectThrow(call('matmul', { ...baseMatmul(), w: new Float32Array(127) }), RangeError, /\bw\b/);
        expectThrow(call('matmul', { ...baseMatmul(), x: new Int32Array(64) }), TypeError, /\bx\b/, /Float32Array/);
        expectThrow(call('matmul', { ...baseMatmul(), x: [1, 2] }), TypeError, /\bx\b/);
        expectThrow(call('matmul', { ...baseMatmul(), w: 'abc' }), TypeError, /\bw\b/);
        expectThrow(call('matmul', { ...baseMatmul(), wDtype: 3 }), TypeError, /weight dtype/);
        expectThrow(call('matmul', { ...baseMatmul(), wDtype: 99 }), RangeError, /wDtype/);
        expectThrow(call('matmul', { ...baseMatmul(), wDtype: 5, k: 40, x: new Float32Array(80), w: new Uint8Array(4 * 68) }), RangeError, /\bk\b/, /32/);
        expectThrow(call('matmul', { ...baseMatmul(), m: -1 }), RangeError, /\bm\b/);
        expectThrow(call('matmul', { ...baseMatmul(), m: 1.5 }), RangeError, /\bm\b/);
        expectThrow(call('matmul', { ...baseMatmul(), n: 'four' }), TypeError, /\bn\b/);
        expectThrow(call('matmul', { ...baseMatmul(), k: 0 }), RangeError, /\bk\b/);
      });

      it('pagedAttention: page index out of range and other bad tables', () => {
        expectThrow(call('pagedAttention', { ...basePaged(), kvIndices: Int32Array.from([3, 4, 2]) }), RangeError, /kv_indices/, /4/);
        expectThrow(call('pagedAttention', { ...basePaged(), kvIndices: Int32Array.from([3, -7, 2]) }), RangeError, /kv_indices/);
        expectThrow(call('pagedAttention', { ...basePaged(), kvLastPageLen: Int32Array.from([0, 3]) }), RangeError, /last_page_len/);
        expectThrow(call('pagedAttention', { ...basePaged(), kvLastPageLen: Int32Array.from([5, 3]) }), RangeError, /last_page_len/);
        expectThrow(call('pagedAttention', { ...basePaged(), kvLastPageLen: Int32Array.from([1]) }), RangeError, /kvLastPageLen/);
        expectThrow(call('pagedAttention', { ...basePaged(), kvIndptr: Int32Array.from([0, 3, 2]) }), RangeError, /kv_indptr/);
        expectThrow(call('pagedAttention', { ...basePaged(), kvIndptr: Int32Array.from([0, 2, 4]) }), RangeError, /kv_indptr/);
        expectThrow(call('pagedAttention', { ...basePaged(), kvIndptr: new Int32Array(0) }), RangeError, /kvIndptr/);
        expectThrow(call('pagedAttention', { ...basePaged(), kPages: new Float32Array(10) }), RangeError, /kPages/);
        expectThrow(call('pagedAttention', { ...basePaged(), vPages: new Float32Array(255) }), RangeError, /vPages/);
        expectThrow(call('pagedAttention', { ...basePaged(), kvDtype: 2 }), TypeError, /kv dtype/);
        expectThrow(call('pagedAttention', { ...basePaged(), pageSize: 0 }), RangeError, /pageSize/);
        expectThrow(call('pagedAttention', { ...basePaged(), numPages: 5 }), RangeError, /kPages/);
      });

      it('pagedAttention: more queries than KV entries, bad qoIndptr, bad mask', () => {
        expectThrow(call('pagedAttention', { ...basePaged(), qoIndptr: Int32Array.from([0, 2, 6]), tokens: 6, q: new Float32Array(6 * 32), o: new Float32Array(6 * 32) }), RangeError, /queries/);
        expectThrow(call('pagedAttention', { ...basePaged(), qoIndptr: Int32Array.from([0, 2, 3, 3]) }), RangeError, /qoIndptr/);
        expectThrow(call('pagedAttention', { ...basePaged(), qoIndptr: Int32Array.from([0, 2]) }), RangeError, /qoIndptr/);
        expectThrow(call('pagedAttention', { ...basePaged(), qoIndptr: Int32Array.from([0, 3, 2]) }), RangeError, /qo_indptr/);
        expectThrow(call('pagedAttention', { ...basePaged(), tokens: 4 }), RangeError, /qo_indptr/);
        expectThrow(call('pagedAttention', { ...basePaged(), q: new Float32Array(95) }), RangeError, /\bq\b/);
        expectThrow(call('pagedAttention', { ...basePaged(), o: new Float32Array(95) }), RangeError, /\bo\b/);
        expectThrow(call('pagedAttention', { ...basePaged(), nHeads: 3 }), RangeError, /n_heads/);
        expectThrow(call('pagedAttention', { ...basePaged(), scale: 0 }), RangeError, /scale/);
        expectThrow(call('pagedAttention', { ...basePaged(), scale: Number.NaN }), RangeError, /scale/);
        const mask = new Uint8Array(5).fill(1);
        call('pagedAttention', { ...basePaged(), mask, maskIndptr: Int32Array.from([0, 4, 5]) })();
        expectThrow(call('pagedAttention', { ...basePaged(), mask }), TypeError, /maskIndptr/);
        expectThrow(call('pagedAttention', { ...basePaged(), mask: new Uint8Array(4), maskIndptr: Int32Array.from([0, 4, 5]) }), RangeError, /mask_indptr/);
        expectThrow(call('pagedAttention', { ...basePaged(), mask, maskIndptr: Int32Array.from([0, 3, 5]) }), RangeError, /tree mask/);
        expectThrow(call('pagedAttention', { ...basePaged(), mask, maskIndptr: Int32Array.from([0, 4]) }), RangeError, /maskIndptr/);
        expectThrow(call('pagedAttention', { ...basePaged(), mask: new Int32Array(5), maskIndptr: Int32Array.from([0, 4, 5]) }), TypeError, /mask/);
      });

      it('varlenAttention: non-monotonic cuSeqlens and friends', () => {
        expectThrow(call('varlenAttention', { ...baseVarlen(), cuSeqlens: Int32Array.from([0, 5, 3, 8]) }), RangeError, /cu_seqlens/, /non-decreasing/);
        expectThrow(call('varlenAttention', { ...baseVarlen(), cuSeqlens: Int32Array.from([0, 5, 7]) }), RangeError, /cu_seqlens/);
        expectThrow(call('varlenAttention', { ...baseVarlen(), cuSeqlens: Int32Array.from([0, 5, 100]), tokens: 8 }), RangeError, /cu_seqlens/);
        expectThrow(call('varlenAttention', { ...baseVarlen(), cuSeqlens: Int32Array.from([2, 5, 8]) }), RangeError, /cu_seqlens/);
        expectThrow(call('varlenAttention', { ...baseVarlen(), cuSeqlens: new Int32Array(0) }), RangeError, /cu_seqlens/);
        expectThrow(call('varlenAttention', { ...baseVarlen(), cuSeqlens: [0, 5, 8] }), TypeError, /cuSeqlens/);
        expectThrow(call('varlenAttention', { ...baseVarlen(), k: new Float32Array(63) }), RangeError, /\bk\b/);
        expectThrow(call('varlenAttention', { ...baseVarlen(), v: new Float32Array(63) }), RangeError, /\bv\b/);
        expectThrow(call('varlenAttention', { ...baseVarlen(), tokens: 9, cuSeqlens: Int32Array.from([0, 5, 9]) }), RangeError, /\bq\b/);
        expectThrow(call('varlenAttention', { ...baseVarlen(), nKvHeads: 0 }), RangeError, /nKvHeads/);
        expectThrow(call('varlenAttention', { ...baseVarlen(), nHeads: 3, nKvHeads: 2 }), RangeError, /n_heads/);
      });

      it('kvAppend: positions and batch indices beyond the table', () => {
        expectThrow(call('kvAppend', { ...baseKvAppend(), positions: Int32Array.from([5, 0]) }), RangeError, /positions/);
        expectThrow(call('kvAppend', { ...baseKvAppend(), positions: Int32Array.from([0, 3]) }), RangeError, /positions/);
        expectThrow(call('kvAppend', { ...baseKvAppend(), batchIndices: Int32Array.from([0, 2]) }), RangeError, /batch_indices/);
        expectThrow(call('kvAppend', { ...baseKvAppend(), batchIndices: Int32Array.from([0]) }), RangeError, /batchIndices/);
        expectThrow(call('kvAppend', { ...baseKvAppend(), k: new Float32Array(31) }), RangeError, /\bk\b/);
        expectThrow(call('kvAppend', { ...baseKvAppend(), kvIndices: Int32Array.from([3, 0, 9]) }), RangeError, /kv_indices/);
      });

      it('other ops: too-short buffers and bad parameters', () => {
        const x = new Float32Array(16);
        expectThrow(call('rmsnorm', { x, weight: new Float32Array(3), y: new Float32Array(16), rows: 4, n: 4, eps: 1e-5 }), RangeError, /weight/);
        expectThrow(call('rmsnorm', { x, weight: new Float32Array(4), y: new Float32Array(15), rows: 4, n: 4, eps: 1e-5 }), RangeError, /\by\b/);
        expectThrow(call('rmsnorm', { x, weight: new Float32Array(4), y: new Float32Array(16), rows: 4, n: 4 }), TypeError, /eps/);
        expectThrow(call('softmax', { x, y: new Float32Array(16), rows: 5, n: 4 }), RangeError, /\bx\b/);
        expectThrow(call('swiglu', { gate: x, up: new Float32Array(15), y: new Float32Array(16), n: 16 }), RangeError, /\bup\b/);
        const rope = { x, positions: Int32Array.from([0, 1]), tokens: 2, heads: 2, headDim: 4, nRot: 4, thetaBase: 1e4, freqScale: 1, mode: 0 };
        call('rope', rope)();
        expectThrow(call('rope', { ...rope, positions: Int32Array.from([0]) }), RangeError, /positions/);
        expectThrow(call('rope', { ...rope, nRot: 3 }), RangeError, /n_rot/);
        expectThrow(call('rope', { ...rope, nRot: 6 }), RangeError, /n_rot/);
        expectThrow(call('rope', { ...rope, mode: 1 }), RangeError, /mode/);
        expectThrow(call('rope', { ...rope, thetaBase: 0 }), RangeError, /theta_base/);
        expectThrow(call('rope', { ...rope, tokens: 3, positions: Int32Array.from([0, 1, 2]) }), RangeError, /\bx\b/);
        const conv = { src: new Float32Array(64), srcDtype: 0, dst: new Uint8Array(68), dstDtype: 5, n: 64 };
        call('convert', conv)();
        expectThrow(call('convert', { ...conv, dst: new Uint8Array(67) }), RangeError, /dst/);
        expectThrow(call('convert', { ...conv, src: new Float32Array(63) }), RangeError, /src/);
        expectThrow(call('convert', { ...conv, n: 40 }), RangeError, /multiple of 32/);
        expectThrow(call('convert', { ...conv, srcDtype: 1 }), TypeError, /f16/, /q8_0/);
        expectThrow(call('convert', { ...conv, dstDtype: 3 }), TypeError, /i32/);
      });

      it('missing or malformed argument objects', () => {
        for (const op of ['matmul', 'rmsnorm', 'rope', 'swiglu', 'softmax', 'varlenAttention', 'pagedAttention', 'kvAppend', 'convert']) {
          expect(() => native[op](), op).toThrow(TypeError);
          expect(() => native[op](42), op).toThrow(TypeError);
          expect(() => native[op]({ reference }), op).toThrow(/must be|expected/);
          try {
            native[op]({ reference });
          } catch (err) {
            expect(err instanceof TypeError || err instanceof RangeError, `${op}: ${String(err)}`).toBe(true);
          }
        }
        expect(() => native.setThreads('two')).toThrow(TypeError);
        expect(() => native.setThreads(4096)).toThrow(RangeError);
        expect(() => native.setIsa('sse9')).toThrow(RangeError);
      });
    });
  }
});

// Size checks must not overflow: products like m * k wrap around in 64-bit arithmetic, so huge
// dimensions with tiny buffers would pass the checks and the kernel would read far out of bounds.
// These run in a child process so a crash is reported instead of killing the test worker.
function runIsolated(body: string): { status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string } {
  const script = `
    const native = require('node-gyp-build')(${JSON.stringify(ROOT)});
    try { (${body})(native); console.log('RETURNED'); }
    catch (e) { console.log('THREW ' + e.constructor.name + ': ' + e.message); }
  `;
  const r = spawnSync(process.execPath, ['-e', script], { cwd: ROOT, encoding: 'utf8', timeout: 30000 });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

describe('N-API layer: overflowing sizes', () => {
  // Sizes whose product overflows int64 once passed every check and segfaulted in the kernel;
  // Args::product now rejects them. Each runs in a child process so a regression cannot kill vitest.
  it('matmul with m * k overflowing int64 throws RangeError', () => {
    const r = runIsolated(`(n) => n.matmul({ x: new Float32Array(0), w: new Float32Array(16), wDtype: 0, y: new Float32Array(0), m: 2 ** 62, n: 4, k: 4 })`);
    expect(r.signal).toBeNull();
    expect(r.stdout).toMatch(/THREW RangeError/);
  });

  it('rmsnorm with rows * n overflowing int64 throws RangeError', () => {
    const r = runIsolated(`(n) => n.rmsnorm({ x: new Float32Array(0), weight: new Float32Array(4), y: new Float32Array(0), rows: 2 ** 62, n: 4, eps: 1e-5 })`);
    expect(r.signal).toBeNull();
    expect(r.stdout).toMatch(/THREW RangeError/);
  });

  it('pagedAttention with a pool size overflowing int64 throws RangeError', () => {
    const r = runIsolated(`(n) => n.pagedAttention({
      kPages: new Float32Array(16), vPages: new Float32Array(16), kvDtype: 0, numPages: 2 ** 30, pageSize: 2 ** 30, nKvHeads: 1, headDim: 16,
      kvIndptr: Int32Array.from([0, 1]), kvIndices: Int32Array.from([2 ** 30 - 1]), kvLastPageLen: Int32Array.from([1]),
      q: new Float32Array(16), qoIndptr: Int32Array.from([0, 1]), o: new Float32Array(16), tokens: 1, nHeads: 1, scale: 0.25 })`);
    expect(r.signal).toBeNull();
    expect(r.stdout).toMatch(/THREW RangeError/);
  });

  it('a large but non-overflowing size is still rejected cleanly', () => {
    const r = runIsolated(`(n) => n.matmul({ x: new Float32Array(4), w: new Float32Array(16), wDtype: 0, y: new Float32Array(4), m: 2 ** 40, n: 4, k: 4 })`);
    expect(r.signal).toBeNull();
    expect(r.stdout).toMatch(/THREW RangeError: matmul: x/);
  });
});
