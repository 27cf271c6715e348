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

/**
 * A cache from strings to token id lists that is probed with a slice of a larger string (start,
 * end, hash of its UTF-16 units), so hits allocate nothing. Ids live in one shared pool. When it
 * holds `limit` entries it is emptied.
 */
export class SliceCache {
  private keys: (string | undefined)[];
  private hashes: Int32Array;
  private offs: Int32Array;
  private lens: Int32Array;
  private count = 0;
  pool = new Int32Array(1 << 16);
  private poolLength = 0;

  constructor(private readonly limit = 1 << 18) {
    this.keys = new Array(1024).fill(undefined);
    this.hashes = new Int32Array(1024);
    this.offs = new Int32Array(1024);
    this.lens = new Int32Array(1024);
  }

  /** FNV-1a over UTF-16 units, one step. */
  static step(h: number, c: number): number {
    return Math.imul(h ^ c, 0x01000193);
  }
  static readonly SEED = 0x811c9dc5 | 0;

  static hash(s: string, a: number, b: number): number {
    let h = SliceCache.SEED;
    for (let i = a; i < b; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
    return h;
  }

  /** Slot of s[a, b) (hash h), or -1. */
  find(s: string, a: number, b: number, h: number): number {
    const keys = this.keys;
    const mask = keys.length - 1;
    const n = b - a;
    let i = (h ^ (h >>> 15)) & mask;
    for (;;) {
      const k = keys[i];
      if (k === undefined) return -1;
      if (this.hashes[i] === h && k.length === n) {
        let j = 0;
        while (j < n && k.charCodeAt(j) === s.charCodeAt(a + j)) j++;
        if (j === n) return i;
      }
      i = (i + 1) & mask;
    }
  }

  /** Appends the ids stored at slot to out. */
  emit(slot: number, out: IntBuffer): void {
    const o = this.offs[slot];
    const n = this.lens[slot];
    if (n === 1) out.push(this.pool[o]);
    else out.pushAll(this.pool.subarray(o, o + n));
  }

  insert(key: string, h: number, ids: ArrayLike<number>): void {
    if (this.count >= this.limit) this.clear();
    if ((this.count + 1) * 2 > this.keys.length) this.rehash(this.keys.length * 2);
    if (this.poolLength + ids.length > this.pool.length) {
      const p = new Int32Array(Math.max(this.pool.length * 2, this.poolLength + ids.length));
      p.set(this.pool.subarray(0, this.poolLength));
      this.pool = p;
    }
    const o = this.poolLength;
    for (let j = 0; j < ids.length; j++) this.pool[o + j] = ids[j];
    this.poolLength += ids.length;
    this.place(key, h, o, ids.length);
    this.count++;
  }

  private place(key: string, h: number, off: number, len: number): void {
    const mask = this.keys.length - 1;
    let i = (h ^ (h >>> 15)) & mask;
    while (this.keys[i] !== undefined) i = (i + 1) & mask;
    this.keys[i] = key;
    this.hashes[i] = h;
    this.offs[i] = off;
    this.lens[i] = len;
  }

  private rehash(size: number): void {
    const { keys, hashes, offs, lens } = this;
    this.keys = new Array(size).fill(undefined);
    this.hashes = new Int32Array(size);
    this.offs = new Int32Array(size);
    this.lens = new Int32Array(size);
    for (let i = 0; i < keys.length; i++) {
      const k = keys[i];
      if (k !== undefined) this.place(k, hashes[i], offs[i], lens[i]);
    }
  }

  clear(): void {
    this.keys.fill(undefined);
    this.count = 0;
    this.poolLength = 0;
  }
}

/** A map from pairs of non-negative int32 (token ids) to two int32 values; get returns the slot or -1. */
export class PairMap {
  private ka: Int32Array;
  private kb: Int32Array;
  v1: Int32Array;
  v2: Int32Array;
  private bits: number;
  private count = 0;

  constructor(expected: number) {
    this.bits = Math.max(4, Math.ceil(Math.log2(Math.max(16, expected * 2))));
    this.ka = new Int32Array(1 << this.bits).fill(-1);
    this.kb = new Int32Array(1 << this.bits);
    this.v1 = new Int32Array(1 << this.bits);
    this.v2 = new Int32Array(1 << this.bits);
  }

  get size(): number {
    return this.count;
  }

  private slot(a: number, b: number): number {
    return (Math.imul(a, 0x9e3779b1) ^ Math.imul(b + 0x7f4a7c15, 0x85ebca77)) >>> (32 - this.bits);
  }

  /** Slot holding (a, b), or -1. */
  find(a: number, b: number): number {
    const mask = this.ka.length - 1;
    let i = this.slot(a, b);
    for (;;) {
      const x = this.ka[i];
      if (x === -1) return -1;
      if (x === a && this.kb[i] === b) return i;
      i = (i + 1) & mask;
    }
  }

  /** Sets (a, b) -> (x, y) unless (a, b) is already present. */
  setIfAbsent(a: number, b: number, x: number, y: number): void {
    if ((this.count + 1) * 2 > this.ka.length) this.rehash();
    const mask = this.ka.length - 1;
    let i = this.slot(a, b);
    for (;;) {
      const k = this.ka[i];
      if (k === -1) break;
      if (k === a && this.kb[i] === b) return;
      i = (i + 1) & mask;
    }
    this.ka[i] = a;
    this.kb[i] = b;
    this.v1[i] = x;
    this.v2[i] = y;
    this.count++;
  }

  private rehash(): void {
    const { ka, kb, v1, v2 } = this;
    this.bits++;
    const n = 1 << this.bits;
    this.ka = new Int32Array(n).fill(-1);
    this.kb = new Int32Array(n);
    this.v1 = new Int32Array(n);
    this.v2 = new Int32Array(n);
    this.count = 0;
    for (let i = 0; i < ka.length; i++) if (ka[i] !== -1) this.setIfAbsent(ka[i], kb[i], v1[i], v2[i]);
  }
}
