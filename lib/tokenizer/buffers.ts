// Growable typed buffers.

export class IntBuffer {
  data: Int32Array;
  length = 0;
  constructor(capacity = 256) {
    this.data = new Int32Array(capacity);
  }
  push(v: number): void {
    if (this.length === this.data.length) this.reserve(this.length + 1);
    this.data[this.length++] = v;
  }
  pushAll(v: Int32Array): void {
    if (this.length + v.length > this.data.length) this.reserve(this.length + v.length);
    this.data.set(v, this.length);
    this.length += v.length;
  }
  reserve(n: number): void {
    if (n <= this.data.length) return;
    const d = new Int32Array(Math.max(n, this.data.length * 2));
    d.set(this.data.subarray(0, this.length));
    this.data = d;
  }
  /** A copy of the contents. */
  toInt32Array(): Int32Array {
    return this.data.slice(0, this.length);
  }
}

export class ByteBuffer {
  data: Uint8Array;
  length = 0;
  constructor(capacity = 256) {
    this.data = new Uint8Array(capacity);
  }
  pushAll(v: Uint8Array): void {
    const n = this.length + v.length;
    if (n > this.data.length) {
      const d = new Uint8Array(Math.max(n, this.data.length * 2));
      d.set(this.data.subarray(0, this.length));
      this.data = d;
    }
    if (v.length === 1) this.data[this.length] = v[0];
    else this.data.set(v, this.length);
    this.length = n;
  }
  view(): Uint8Array {
    return this.data.subarray(0, this.length);
  }
}

/** A set of code point pairs (open addressing over two Int32Arrays; a dense table for ASCII pairs). */
export class PairSet {
  private readonly ascii = new Uint8Array(128 * 128);
  private ka: Int32Array;
  private kb: Int32Array;
  private bits: number;
  private count = 0;

  constructor(expected: number) {
    this.bits = Math.max(4, Math.ceil(Math.log2(Math.max(16, expected * 2))));
    this.ka = new Int32Array(1 << this.bits).fill(-1);
    this.kb = new Int32Array(1 << this.bits);
  }

  private slot(a: number, b: number): number {
    return (Math.imul(a, 0x9e3779b1) ^ Math.imul(b + 0x7f4a7c15, 0x85ebca77)) >>> (32 - this.bits);
  }

  add(a: number, b: number): void {
    if ((a | b) < 128) {
      this.ascii[(a << 7) | b] = 1;
      return;
    }
    if ((this.count + 1) * 2 > this.ka.length) this.rehash();
    const mask = this.ka.length - 1;
    let i = this.slot(a, b);
    for (;;) {
      const x = this.ka[i];
      if (x === -1) break;
      if (x === a && this.kb[i] === b) return;
      i = (i + 1) & mask;
    }
    this.ka[i] = a;
    this.kb[i] = b;
    this.count++;
  }

  has(a: number, b: number): boolean {
    if ((a | b) < 128) return this.ascii[(a << 7) | b] === 1;
    const mask = this.ka.length - 1;
    let i = this.slot(a, b);
    for (;;) {
      const x = this.ka[i];
      if (x === -1) return false;
      if (x === a && this.kb[i] === b) return true;
      i = (i + 1) & mask;
    }
  }

  private rehash(): void {
    const oa = this.ka;
    const ob = this.kb;
    this.bits++;
    this.ka = new Int32Array(1 << this.bits).fill(-1);
    this.kb = new Int32Array(1 << this.bits);
    this.count = 0;
    for (let i = 0; i < oa.length; i++) if (oa[i] !== -1) this.add(oa[i], ob[i]);
  }
}
