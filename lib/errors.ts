// Error helpers: one message shape for every bad argument, naming the argument and what it got.

/** Thrown when a disposed tensor or model is used. */
export class DisposedError extends TypeError {
  override name = 'DisposedError';
}

/** Thrown (code TESSERA_OUT_OF_PAGES) when a request cannot fit in the KV page pool even alone. */
export class OutOfPagesError extends RangeError {
  override name = 'OutOfPagesError';
  readonly code = 'TESSERA_OUT_OF_PAGES';
}

/** Describes a received value for an error message: `-1 of type number`, `Float32Array(12)`. */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (ArrayBuffer.isView(value)) {
    const len = 'length' in value ? (value as unknown as { length: number }).length : value.byteLength;
    return `${value.constructor.name}(${len})`;
  }
  if (Array.isArray(value)) return `array of length ${value.length}`;
  if (typeof value === 'object') return `${(value as object).constructor?.name ?? 'object'}`;
  const shown = typeof value === 'string' ? JSON.stringify(value) : String(value);
  return `${shown} of type ${typeof value}`;
}

export function typeError(where: string, name: string, expected: string, got: unknown): TypeError {
  return new TypeError(`${where}: expected ${expected} for ${name} but received ${describe(got)}`);
}

export function rangeError(where: string, name: string, message: string): RangeError {
  return new RangeError(`${where}: ${name} ${message}`);
}

export function checkInteger(where: string, name: string, value: unknown, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  if (typeof value !== 'number' || !Number.isInteger(value)) throw typeError(where, name, 'an integer', value);
  if (value < min || value > max) throw rangeError(where, name, `must be in [${min}, ${max}], got ${value}`);
  return value;
}

export function checkNumber(where: string, name: string, value: unknown, opts: { positive?: boolean } = {}): number {
  if (typeof value !== 'number' || !Number.isFinite(value)) throw typeError(where, name, 'a finite number', value);
  if (opts.positive && !(value > 0)) throw rangeError(where, name, `must be > 0, got ${value}`);
  return value;
}

/** Checks a CSR offset array: indptr[0] == 0, non-decreasing, and (when given) indptr[n] == total. */
export function checkIndptr(where: string, name: string, indptr: Int32Array, total?: number): void {
  if (indptr.length < 1) throw rangeError(where, name, 'must have at least one element (batch + 1)');
  if (indptr[0] !== 0) throw rangeError(where, name, `[0] must be 0, got ${indptr[0]}`);
  for (let i = 1; i < indptr.length; i++) {
    if (indptr[i] < indptr[i - 1]) {
      throw rangeError(where, name, `must be non-decreasing: ${name}[${i}] = ${indptr[i]} < ${name}[${i - 1}] = ${indptr[i - 1]}`);
    }
  }
  const last = indptr[indptr.length - 1];
  if (total !== undefined && last !== total) {
    throw rangeError(where, name, `[${indptr.length - 1}] = ${last} must equal the number of rows (${total})`);
  }
}
