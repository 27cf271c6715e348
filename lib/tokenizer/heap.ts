// A binary min-heap of bigrams ordered by (key, left): the priority queues of llama.cpp's SPM
// (key = -score: highest score first) and BPE (key = merge rank: lowest first) tokenizers, both
// breaking ties by the left-most position. Parallel typed arrays, reused between words.
export class BigramHeap {
  key = new Float64Array(64);
  left = new Int32Array(64);
  right = new Int32Array(64);
  size = new Int32Array(64);
  length = 0;

  clear(): void {
    this.length = 0;
  }

  private grow(): void {
    const n = this.key.length * 2;
    const k = new Float64Array(n);
    k.set(this.key);
    this.key = k;
    const l = new Int32Array(n);
    l.set(this.left);
    this.left = l;
    const r = new Int32Array(n);
    r.set(this.right);
    this.right = r;
    const s = new Int32Array(n);
    s.set(this.size);
    this.size = s;
  }

  push(key: number, left: number, right: number, size: number): void {
    if (this.length === this.key.length) this.grow();
    const K = this.key;
    const L = this.left;
    const R = this.right;
    const S = this.size;
    let i = this.length++;
    while (i > 0) {
      const p = (i - 1) >> 1;
      const pk = K[p];
      if (pk < key || (pk === key && L[p] < left)) break;
      K[i] = pk;
      L[i] = L[p];
      R[i] = R[p];
      S[i] = S[p];
      i = p;
    }
    K[i] = key;
    L[i] = left;
    R[i] = right;
    S[i] = size;
  }

  /** Removes the top; its fields are left in top{Key,Left,Right,Size}. */
  topLeft = 0;
  topRight = 0;
  topSize = 0;
  pop(): void {
    const K = this.key;
    const L = this.left;
    const R = this.right;
    const S = this.size;
    this.topLeft = L[0];
    this.topRight = R[0];
    this.topSize = S[0];
    const n = --this.length;
    if (n === 0) return;
    const key = K[n];
    const left = L[n];
    const right = R[n];
    const size = S[n];
    let i = 0;
    for (;;) {
      let c = 2 * i + 1;
      if (c >= n) break;
      const c2 = c + 1;
      if (c2 < n && (K[c2] < K[c] || (K[c2] === K[c] && L[c2] < L[c]))) c = c2;
      if (key < K[c] || (key === K[c] && left < L[c])) break;
      K[i] = K[c];
      L[i] = L[c];
      R[i] = R[c];
      S[i] = S[c];
      i = c;
    }
    K[i] = key;
    L[i] = left;
    R[i] = right;
    S[i] = size;
  }
}
