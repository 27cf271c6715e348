// Tensor: a dtype, a shape and a device over one storage array. On the CPU the storage is a
// plain TypedArray shared with the caller (zero copy); block types (q8_0, q4_0, q4_k, q6_k)
// are opaque bytes whose shape counts elements.
import { DTYPES, type DType, type Storage, allocStorage, isDType, storageLength, storageMatches } from './dtype';
import { DisposedError, rangeError, typeError } from './errors';

// Symbol.dispose / Symbol.asyncDispose exist at run time on Node 20; declare them (as @types/node
// and TypeScript's esnext.disposable lib do) so consumers compile without either.
declare global {
  interface SymbolConstructor {
    readonly dispose: unique symbol;
    readonly asyncDispose: unique symbol;
  }
}

export type Device = 'cpu';
export type Shape = readonly number[];

export function numel(shape: Shape): number {
  return shape.reduce((a, b) => a * b, 1);
}

function checkShape(where: string, shape: unknown): number[] {
  if (!Array.isArray(shape)) throw typeError(where, 'shape', 'an array of non-negative integers', shape);
  for (const d of shape) {
    if (typeof d !== 'number' || !Number.isInteger(d) || d < 0) {
      throw typeError(where, 'shape', 'an array of non-negative integers', shape.length ? d : shape);
    }
  }
  return [...shape];
}

function inferDType(data: Storage): DType {
  if (data instanceof Float32Array) return 'f32';
  if (data instanceof Int32Array) return 'i32';
  if (data instanceof Uint8Array) return 'u8';
  throw new TypeError('Tensor.from: a Uint16Array holds f16 or bf16 values: pass dtype "f16" or "bf16"');
}

export class Tensor {
  readonly dtype: DType;
  readonly shape: Shape;
  readonly device: Device = 'cpu';
  #data: Storage | null;

  private constructor(data: Storage, shape: number[], dtype: DType) {
    this.#data = data;
    this.shape = Object.freeze(shape);
    this.dtype = dtype;
  }

  /**
   * Wraps a TypedArray without copying (a number[] is copied into a Float32Array or, for
   * dtype 'i32', an Int32Array). The shape defaults to 1-D; its product must match the data.
   */
  static from(data: Storage | readonly number[], shape?: Shape, dtype?: DType): Tensor {
    const where = 'Tensor.from';
    if (dtype !== undefined && !isDType(dtype)) throw typeError(where, 'dtype', `one of ${Object.keys(DTYPES).join(', ')}`, dtype);
    let storage: Storage;
    if (Array.isArray(data)) {
      if (dtype === 'i32') storage = Int32Array.from(data as number[]);
      else if (dtype === undefined || dtype === 'f32') storage = Float32Array.from(data as number[]);
      else throw typeError(where, 'data', `a TypedArray for dtype ${dtype}`, data);
    } else if (data instanceof Float32Array || data instanceof Int32Array || data instanceof Uint16Array || data instanceof Uint8Array) {
      storage = data;
    } else {
      throw typeError(where, 'data', 'a Float32Array, Int32Array, Uint16Array, Uint8Array or number[]', data);
    }
    const dt = dtype ?? inferDType(storage);
    if (!storageMatches(dt, storage)) {
      throw typeError(where, 'data', `the storage of dtype ${dt} (${DTYPES[dt].storage} array)`, storage);
    }
    const info = DTYPES[dt];
    const blocks = storage.byteLength / info.blockBytes;
    if (shape === undefined && !Number.isInteger(blocks)) {
      throw rangeError(where, 'data', `has ${storage.byteLength} bytes, not a whole number of ${dt} blocks (${info.blockBytes} bytes each)`);
    }
    const sh = shape === undefined ? [blocks * info.blockElems] : checkShape(where, shape);
    Tensor.checkBlocks(where, sh, dt);
    const need = storageLength(dt, numel(sh));
    if (storage.length !== need) {
      throw rangeError(where, 'data', `has ${storage.length} elements but shape [${sh.join(', ')}] of ${dt} needs ${need}`);
    }
    return new Tensor(storage, sh, dt);
  }

  /** A new tensor of zeros. */
  static zeros(shape: Shape, dtype: DType = 'f32'): Tensor {
    const where = 'Tensor.zeros';
    if (!isDType(dtype)) throw typeError(where, 'dtype', `one of ${Object.keys(DTYPES).join(', ')}`, dtype);
    const sh = checkShape(where, shape);
    Tensor.checkBlocks(where, sh, dtype);
    return new Tensor(allocStorage(dtype, numel(sh)), sh, dtype);
  }

  private static checkBlocks(where: string, shape: number[], dtype: DType): void {
    const blk = DTYPES[dtype].blockElems;
    const last = shape.length ? shape[shape.length - 1] : 1;
    if (blk > 1 && last % blk !== 0) {
      throw rangeError(where, 'shape', `last dimension (${last}) must be a multiple of ${blk} for ${dtype}`);
    }
  }

  /** The storage array (shared, not a copy). Throws DisposedError after dispose(). */
  get data(): Storage {
    if (this.#data === null) throw new DisposedError(`Tensor(${this.dtype} [${this.shape.join(', ')}]) was disposed`);
    return this.#data;
  }

  get disposed(): boolean {
    return this.#data === null;
  }

  /** Number of elements. */
  get size(): number {
    return numel(this.shape);
  }

  get byteLength(): number {
    return this.data.byteLength;
  }

  /** A view with another shape over the same storage. */
  reshape(shape: Shape): Tensor {
    const sh = checkShape('Tensor.reshape', shape);
    if (numel(sh) !== this.size) {
      throw rangeError('Tensor.reshape', 'shape', `[${sh.join(', ')}] has ${numel(sh)} elements, the tensor has ${this.size}`);
    }
    Tensor.checkBlocks('Tensor.reshape', sh, this.dtype);
    return new Tensor(this.data, sh, this.dtype);
  }

  /** Plain numbers (f32 and i32 tensors; convert others with ops.convert first). */
  toArray(): number[] {
    if (this.dtype !== 'f32' && this.dtype !== 'i32') {
      throw new TypeError(`Tensor.toArray: ${this.dtype} values are encoded; use ops.convert(t, 'f32') first`);
    }
    return Array.from(this.data);
  }

  /** Releases the storage; any later use throws DisposedError. Safe to call twice. */
  dispose(): void {
    this.#data = null;
  }

  /** `using t = ...` support (explicit resource management). */
  [Symbol.dispose](): void {
    this.dispose();
  }

  toString(): string {
    return `Tensor(${this.dtype} [${this.shape.join(', ')}] on ${this.device}${this.disposed ? ', disposed' : ''})`;
  }
}

/** Argument check used by every op: a live Tensor of one of `dtypes` with `rank` dimensions. */
export function expectTensor(where: string, name: string, t: unknown, dtypes: readonly DType[], rank?: number | readonly number[]): Tensor {
  if (!(t instanceof Tensor)) throw typeError(where, name, 'a Tensor', t);
  if (t.disposed) throw new DisposedError(`${where}: ${name} was disposed`);
  if (!dtypes.includes(t.dtype)) {
    throw new TypeError(`${where}: expected dtype ${dtypes.join(' or ')} for ${name} but received ${t.dtype}`);
  }
  if (rank !== undefined) {
    const ranks = typeof rank === 'number' ? [rank] : rank;
    if (!ranks.includes(t.shape.length)) {
      throw rangeError(where, name, `must have ${ranks.join(' or ')} dimensions, got shape [${t.shape.join(', ')}]`);
    }
  }
  return t;
}

/** An Int32Array from an Int32Array, an i32 Tensor or a number[] of integers. */
export function int32Arg(where: string, name: string, v: unknown): Int32Array {
  if (v instanceof Int32Array) return v;
  if (v instanceof Tensor) return expectTensor(where, name, v, ['i32']).data as Int32Array;
  if (Array.isArray(v) && v.every((x) => Number.isInteger(x) && x >= -2147483648 && x <= 2147483647)) return Int32Array.from(v);
  throw typeError(where, name, 'an Int32Array, an i32 Tensor or an array of integers', v);
}

