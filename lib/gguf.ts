// GGUF files from TypeScript: read the metadata and tensor table (the native reader mmaps and
// bounds-checks; no tensor data enters the JS heap) and write files (synthetic models, tests).
import { addon } from './native';

export type GgufScalar = number | bigint | boolean | string;
export type GgufValue =
  | GgufScalar
  | string[]
  | Float32Array
  | Float64Array
  | Int8Array
  | Uint8Array
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | BigInt64Array
  | BigUint64Array
  | boolean[]
  | GgufValue[];

export interface GgufTensorInfo {
  name: string;
  /** tessera dtype name ('f32', 'q8_0', ...) or the lower-case ggml name of types tessera cannot run ('q5_k'). */
  type: string;
  ggmlType: number;
  /** GGUF order: shape[0] is the contiguous (innermost) dimension. */
  shape: number[];
  /** Byte offset from the start of the data section. */
  offset: number;
  byteSize: number;
}

export interface GgufInfo {
  version: number;
  alignment: number;
  dataOffset: number;
  fileSize: number;
  metadata: Record<string, GgufValue>;
  /** GGUF value type of each key ('u32', 'f32[]', 'string[]', ...), accepted back by writeGguf. */
  metadataTypes: Record<string, string>;
  tensors: GgufTensorInfo[];
}

export interface GgufWriteSpec {
  metadata: { key: string; type: string; value: GgufValue }[];
  tensors: { name: string; dtype?: string | number; ggmlType?: number; shape: number[]; data: ArrayBufferView }[];
}

/** Reads a GGUF (v2/v3) header, metadata and tensor table. Throws an Error naming the file and the problem. */
export function readGguf(path: string): GgufInfo {
  if (typeof path !== 'string' || path.length === 0) throw new TypeError(`readGguf: expected a file path but received ${String(path)}`);
  return addon().ggufRead(path) as GgufInfo;
}

/** Writes a GGUF v3 file (to path.partial, then renamed). Returns the bytes written. */
export function writeGguf(path: string, spec: GgufWriteSpec): number {
  if (typeof path !== 'string' || path.length === 0) throw new TypeError(`writeGguf: expected a file path but received ${String(path)}`);
  return addon().ggufWrite(path, spec) as number;
}
