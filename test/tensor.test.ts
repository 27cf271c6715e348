// Tensor: zero-copy wrapping, shapes and byte sizes of plain and block dtypes, views, disposal.
import { describe, expect, it } from 'vitest';
import { DTYPES, Tensor, byteSize, isDType, numel, ops } from '../dist/index.js';

describe('Tensor.from', () => {
  it('wraps a Float32Array without copying; mutations are visible both ways', () => {
    const a = new Float32Array([1, 2, 3, 4, 5, 6]);
    const t = Tensor.from(a, [2, 3]);
    expect(t.data).toBe(a);
    a[0] = 42;
    expect(t.data[0]).toBe(42);
    (t.data as Float32Array)[5] = -1;
    expect(a[5]).toBe(-1);
    expect(t.toArray()).toEqual([42, 2, 3, 4, 5, -1]);
  });

  it('ops read the caller array in place (zero copy into native code)', () => {
    const x = new Float32Array(8).fill(1);
    const t = Tensor.from(x, [2, 4]);
    const before = ops.softmax(t).toArray();
    x.set([10, 0, 0, 0], 0);
    const after = ops.softmax(t).toArray();
    expect(before.slice(0, 4)).toEqual([0.25, 0.25, 0.25, 0.25]);
    expect(after[0]).toBeGreaterThan(0.99);
  });

  it('wraps subarray views (byteOffset) without copying', () => {
    const buf = new Float32Array(10).map((_, i) => i);
    const view = buf.subarray(4, 8);
    const t = Tensor.from(view, [2, 2]);
    expect(t.data).toBe(view);
    expect(t.toArray()).toEqual([4, 5, 6, 7]);
    // Native code sees the view's offset, not the start of the buffer.
    const y = ops.matmul(t, Tensor.from(new Float32Array([1, 0, 0, 1]), [2, 2]));
    expect(y.toArray()).toEqual([4, 5, 6, 7]);
  });

  it('infers dtypes and defaults to 1-D', () => {
    expect(Tensor.from(new Float32Array(3)).dtype).toBe('f32');
    expect(Tensor.from(new Float32Array(3)).shape).toEqual([3]);
    expect(Tensor.from(new Int32Array(2)).dtype).toBe('i32');
    expect(Tensor.from(new Uint8Array(5)).dtype).toBe('u8');
    expect(Tensor.from(new Uint16Array(4), [4], 'f16').dtype).toBe('f16');
    expect(Tensor.from(new Uint16Array(4), [2, 2], 'bf16').dtype).toBe('bf16');
    expect(Tensor.from(new Uint8Array(68), undefined, 'q8_0').shape).toEqual([64]);
    expect(Tensor.from(new Uint8Array(36), undefined, 'q4_0').shape).toEqual([64]);
  });

  it('copies number[] into a Float32Array or, for i32, an Int32Array', () => {
    const f = Tensor.from([1.5, 2.5], [2]);
    expect(f.data).toBeInstanceOf(Float32Array);
    expect(f.toArray()).toEqual([1.5, 2.5]);
    const i = Tensor.from([1, -2, 3], [3], 'i32');
    expect(i.data).toBeInstanceOf(Int32Array);
    expect(i.toArray()).toEqual([1, -2, 3]);
  });

  it('accepts a scalar shape and zero-size shapes', () => {
    const s = Tensor.from(new Float32Array([7]), []);
    expect(s.shape).toEqual([]);
    expect(s.size).toBe(1);
    const z = Tensor.from(new Float32Array(0), [0, 5]);
    expect(z.size).toBe(0);
    expect(z.byteLength).toBe(0);
  });
});

describe('shapes, dtypes and sizes', () => {
  const plain: [string, number, number[], number][] = [
    // dtype, bytes per element, shape, expected byteLength
    ['f32', 4, [2, 3], 24],
    ['f16', 2, [2, 3], 12],
    ['bf16', 2, [5], 10],
    ['i32', 4, [3, 1, 2], 24],
    ['u8', 1, [7], 7],
  ];
  it.each(plain)('%s: zeros, size and byteLength', (dtype, _bytes, shape, bytes) => {
    const t = Tensor.zeros(shape, dtype as 'f32');
    expect(t.dtype).toBe(dtype);
    expect(t.shape).toEqual(shape);
    expect(t.size).toBe(numel(shape));
    expect(t.byteLength).toBe(bytes);
    expect(byteSize(dtype as 'f32', t.size)).toBe(bytes);
    expect(t.device).toBe('cpu');
  });

  it('block dtypes: q8_0 [2, 64] is 2 * 2 * 34 bytes, q4_0 [2, 64] is 2 * 2 * 18', () => {
    const q8 = Tensor.zeros([2, 64], 'q8_0');
    expect(q8.size).toBe(128);
    expect(q8.byteLength).toBe(2 * 2 * 34);
    expect(q8.data).toBeInstanceOf(Uint8Array);
    expect(q8.data.length).toBe(136);
    const q4 = Tensor.zeros([2, 64], 'q4_0');
    expect(q4.byteLength).toBe(2 * 2 * 18);
    const k4 = Tensor.zeros([1, 256], 'q4_k');
    expect(k4.byteLength).toBe(144);
    const k6 = Tensor.zeros([2, 256], 'q6_k');
    expect(k6.byteLength).toBe(2 * 210);
    expect(Tensor.from(new Uint8Array(136), [2, 64], 'q8_0').byteLength).toBe(136);
  });

  it('DTYPES and helpers agree with the native codes and block sizes', () => {
    expect(Object.keys(DTYPES)).toEqual(['f32', 'f16', 'bf16', 'i32', 'u8', 'q8_0', 'q4_0', 'q4_k', 'q6_k']);
    expect(Object.values(DTYPES).map((d) => d.code)).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
    expect(DTYPES.q8_0).toMatchObject({ blockElems: 32, blockBytes: 34 });
    expect(DTYPES.q4_0).toMatchObject({ blockElems: 32, blockBytes: 18 });
    expect(isDType('q8_0')).toBe(true);
    expect(isDType('toString')).toBe(false);
    expect(isDType(5)).toBe(false);
  });

  it('shape is frozen', () => {
    const t = Tensor.zeros([2, 3]);
    expect(Object.isFrozen(t.shape)).toBe(true);
  });
});

describe('reshape', () => {
  it('is a view over the same storage', () => {
    const t = Tensor.from(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3]);
    const r = t.reshape([3, 2]);
    expect(r.shape).toEqual([3, 2]);
    expect(r.data).toBe(t.data);
    (r.data as Float32Array)[0] = 9;
    expect(t.toArray()[0]).toBe(9);
    expect(t.shape).toEqual([2, 3]);
  });

  it('works for block dtypes on block boundaries', () => {
    const q = Tensor.zeros([2, 64], 'q8_0');
    const r = q.reshape([4, 32]);
    expect(r.data).toBe(q.data);
    expect(r.byteLength).toBe(q.byteLength);
    expect(() => q.reshape([8, 16])).toThrow(RangeError);
    expect(() => q.reshape([3, 32])).toThrow(RangeError);
  });
});

describe('toArray', () => {
  it('f32 and i32 give plain numbers', () => {
    expect(Tensor.from([0.5, -1], [2]).toArray()).toEqual([0.5, -1]);
    expect(Tensor.from(new Int32Array([3, -4]), [2]).toArray()).toEqual([3, -4]);
    expect(Array.isArray(Tensor.zeros([2]).toArray())).toBe(true);
  });

  it('encoded dtypes need ops.convert first', () => {
    const h = ops.convert(Tensor.from([1, 2, 3, 4]), 'f16');
    expect(() => h.toArray()).toThrow(TypeError);
    expect(ops.convert(h, 'f32').toArray()).toEqual([1, 2, 3, 4]);
    expect(() => Tensor.zeros([2], 'u8').toArray()).toThrow(TypeError);
  });
});

describe('dispose', () => {
  it('twice is fine, and the tensor reports it', () => {
    const t = Tensor.zeros([4]);
    expect(t.disposed).toBe(false);
    t.dispose();
    t.dispose();
    expect(t.disposed).toBe(true);
    expect(t.size).toBe(4); // metadata stays readable
    expect(t.toString()).toMatch(/disposed/);
  });

  it('Symbol.dispose exists and disposes', () => {
    const t = Tensor.zeros([4]);
    const disposer = (t as unknown as Record<symbol, () => void>)[Symbol.dispose];
    expect(typeof disposer).toBe('function');
    disposer.call(t);
    expect(t.disposed).toBe(true);
    // Disposing releases the reference, not the caller's array.
    const a = new Float32Array(2);
    const u = Tensor.from(a);
    u.dispose();
    expect(a.length).toBe(2);
  });
});

describe('toString', () => {
  it('describes dtype, shape and device', () => {
    expect(String(Tensor.zeros([2, 3], 'f16'))).toBe('Tensor(f16 [2, 3] on cpu)');
  });
});
