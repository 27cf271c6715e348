// Element types and their storage: the codes mirror native/include/tessera/dtype.h.

export type DType = 'f32' | 'f16' | 'bf16' | 'i32' | 'u8' | 'q8_0' | 'q4_0' | 'q4_k' | 'q6_k';

/** The JavaScript array a tensor of each dtype lives in (block types are opaque bytes). */
export type StorageFor<D extends DType> = D extends 'f32'
  ? Float32Array
  : D extends 'i32'
    ? Int32Array
    : D extends 'f16' | 'bf16'
      ? Uint16Array
      : Uint8Array;

export type Storage = Float32Array | Int32Array | Uint16Array | Uint8Array;

interface DTypeInfo {
  code: number;
  /** Elements per storage block (1 for plain types). */
  blockElems: number;
  /** Bytes per storage block. */
  blockBytes: number;
  storage: 'f32' | 'i32' | 'u16' | 'u8';
}

export const DTYPES: Readonly<Record<DType, DTypeInfo>> = {
  f32: { code: 0, blockElems: 1, blockBytes: 4, storage: 'f32' },
  f16: { code: 1, blockElems: 1, blockBytes: 2, storage: 'u16' },
  bf16: { code: 2, blockElems: 1, blockBytes: 2, storage: 'u16' },
  i32: { code: 3, blockElems: 1, blockBytes: 4, storage: 'i32' },
  u8: { code: 4, blockElems: 1, blockBytes: 1, storage: 'u8' },
  q8_0: { code: 5, blockElems: 32, blockBytes: 34, storage: 'u8' },
  q4_0: { code: 6, blockElems: 32, blockBytes: 18, storage: 'u8' },
  q4_k: { code: 7, blockElems: 256, blockBytes: 144, storage: 'u8' },
  q6_k: { code: 8, blockElems: 256, blockBytes: 210, storage: 'u8' },
};

export function isDType(x: unknown): x is DType {
  return typeof x === 'string' && Object.prototype.hasOwnProperty.call(DTYPES, x);
}

/** Bytes that `elements` values of `dtype` occupy (elements must be whole blocks). */
export function byteSize(dtype: DType, elements: number): number {
  const info = DTYPES[dtype];
  return (elements / info.blockElems) * info.blockBytes;
}

/** Length of the storage array holding `elements` values of `dtype`. */
export function storageLength(dtype: DType, elements: number): number {
  const info = DTYPES[dtype];
  const bytes = byteSize(dtype, elements);
  return info.storage === 'f32' || info.storage === 'i32' ? bytes / 4 : info.storage === 'u16' ? bytes / 2 : bytes;
}

export function allocStorage(dtype: DType, elements: number): Storage {
  const n = storageLength(dtype, elements);
  switch (DTYPES[dtype].storage) {
    case 'f32':
      return new Float32Array(n);
    case 'i32':
      return new Int32Array(n);
    case 'u16':
      return new Uint16Array(n);
    default:
      return new Uint8Array(n);
  }
}

/** Whether `array` is the storage kind `dtype` uses. */
export function storageMatches(dtype: DType, array: Storage): boolean {
  switch (DTYPES[dtype].storage) {
    case 'f32':
      return array instanceof Float32Array;
    case 'i32':
      return array instanceof Int32Array;
    case 'u16':
      return array instanceof Uint16Array;
    default:
      return array instanceof Uint8Array;
  }
}
