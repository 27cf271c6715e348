// The native step contract (NativeModel.forward): explicit positions, token-tree masks, FFN skip
// masks and many logit rows per sequence, through N-API on stories260K; and KV path commits.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { addon, type NativeModel } from '../lib/native';
import { STORIES } from './data';

const TOL = 1e-3; // the same row in a different batch: GEMM vs GEMV summation order

let native: NativeModel;
let V = 0;
let L = 0;

beforeAll(async () => {
  native = new (addon().NativeModel)(STORIES, { device: 'cpu', threads: 1, contextSize: 256, kvPages: 64, pageSize: 4, kvDtype: 'f32' });
  await native.repack();
  V = native.info().vocabSize;
  L = native.info().layers;
});
afterAll(() => native.dispose());

const i32 = (a: number[]) => Int32Array.from(a);
const rowsOf = (n: number) => i32([...Array(n).keys()]);

/** Runs one sequence's tokens as a fresh sequence; returns every row's logits. */
async function linear(tokens: number[]): Promise<Float32Array> {
  const s = native.createSequence();
  try {
    return await native.forward({ tokens: i32(tokens), seqIds: i32([s]), seqTokens: i32([tokens.length]), logitRows: rowsOf(tokens.length) });
  } finally {
    native.releaseSequence(s);
  }
}

function maxDiff(a: Float32Array, ai: number, b: Float32Array, bi: number): number {
  let d = 0;
  for (let v = 0; v < V; v++) d = Math.max(d, Math.abs(a[ai * V + v] - b[bi * V + v]));
  return d;
}

const prefix = [1, 403, 407, 261];
// nodes 0..4: 0 root; 1, 2 children of 0; 3 child of 1; 4 child of 2
const nodeTok = [378, 300, 432, 290, 296];
const parent = [-1, 0, 0, 1, 2];
const depth = parent.map(function d(p: number): number {
  return p < 0 ? 0 : d(parent[p]) + 1;
});
function ancestorMask(): Uint8Array {
  const n = nodeTok.length;
  const m = new Uint8Array(n * n);
  for (let i = 0; i < n; i++) for (let a = i; a >= 0; a = parent[a]) m[i * n + a] = 1;
  return m;
}
const pathTo = (leaf: number) => {
  const p: number[] = [];
  for (let a = leaf; a >= 0; a = parent[a]) p.unshift(a);
  return p;
};

/** A sequence holding the prefix, then the tree in one step; returns [seq, tree logits]. */
async function treeStep(): Promise<[number, Float32Array]> {
  const s = native.createSequence();
  await native.forward({ tokens: i32(prefix), seqIds: i32([s]), seqTokens: i32([prefix.length]), logitRows: i32([]) });
  const out = await native.forward({
    tokens: i32(nodeTok),
    seqIds: i32([s]),
    seqTokens: i32([nodeTok.length]),
    logitRows: rowsOf(nodeTok.length),
    positions: i32(depth.map((d) => prefix.length + d)),
    treeMask: ancestorMask(),
  });
  return [s, out];
}

describe('forward: the wider step', () => {
  it('the old call shape (four arrays) still works; positions equal to the default give identical logits', async () => {
    const toks = [1, 403, 407, 261, 378];
    const plain = await linear(toks);
    const s = native.createSequence();
    try {
      const explicit = await native.forward({ tokens: i32(toks), seqIds: i32([s]), seqTokens: i32([5]), logitRows: rowsOf(5), positions: rowsOf(5) });
      expect(explicit).toEqual(plain);
    } finally {
      native.releaseSequence(s);
    }
  });

  it(`a token tree in one step gives each node the logits of its root-to-leaf branch run alone (max |diff| < ${TOL})`, async () => {
    const [s, tree] = await treeStep();
    try {
      expect(tree.length).toBe(nodeTok.length * V);
      let worst = 0;
      for (const leaf of [3, 4]) {
        const path = pathTo(leaf);
        const alone = await linear([...prefix, ...path.map((a) => nodeTok[a])]);
        path.forEach((node, i) => (worst = Math.max(worst, maxDiff(tree, node, alone, prefix.length + i))));
      }
      expect(worst).toBeLessThan(TOL);
    } finally {
      native.releaseSequence(s);
    }
  });

  it('a skip mask: skipping every FFN of row A changes A, and leaves row B as it is without a mask', async () => {
    const run = async (skip?: Uint8Array) => {
      const a = native.createSequence();
      const b = native.createSequence();
      try {
        return await native.forward({ tokens: i32([1, 403, 1, 320]), seqIds: i32([a, b]), seqTokens: i32([2, 2]), logitRows: i32([1, 3]), skipMask: skip });
      } finally {
        native.releaseSequence(a);
        native.releaseSequence(b);
      }
    };
    const none = await run();
    const mask = new Uint8Array(L * 4);
    for (let l = 0; l < L; l++) mask[l * 4 + 0] = mask[l * 4 + 1] = 1; // row A's two tokens skip every FFN
    const skipped = await run(mask);
    expect(maxDiff(skipped, 0, none, 0)).toBeGreaterThan(0.1);
    expect(maxDiff(skipped, 1, none, 1)).toBeLessThan(TOL);
    expect(await run(new Uint8Array(L * 4))).toEqual(none); // an all-zero mask is no mask
  });

  it('bad positions and masks reject with RangeError / TypeError naming the field; the sequence keeps its length', async () => {
    const s = native.createSequence();
    try {
      await native.forward({ tokens: i32([1, 403]), seqIds: i32([s]), seqTokens: i32([2]), logitRows: i32([]) });
      const step = { tokens: i32([300, 432]), seqIds: i32([s]), seqTokens: i32([2]), logitRows: i32([1]) };
      // shapes are checked before the step starts (synchronously), contents on the worker
      expect(() => native.forward({ ...step, positions: i32([2]) })).toThrow(RangeError);
      expect(() => native.forward({ ...step, positions: i32([2]) })).toThrow(/positions has 1 entries/);
      expect(() => native.forward({ ...step, skipMask: new Int32Array(2 * L) as unknown as Uint8Array })).toThrow(TypeError);
      expect(() => native.forward({ ...step, treeMask: [1] as unknown as Uint8Array })).toThrow(/treeMask must be a Uint8Array/);
      await expect(native.forward({ ...step, positions: i32([2, 4]) })).rejects.toThrow(/positions\[1\] = 4/);
      await expect(native.forward({ ...step, treeMask: Uint8Array.from([1, 0, 1]) })).rejects.toThrow(/treeMask has 3 entries/);
      await expect(native.forward({ ...step, treeMask: Uint8Array.from([1, 1, 1, 1]) })).rejects.toThrow(/treeMask of sequence .*sees the later token/);
      await expect(native.forward({ ...step, positions: i32([-1, 3]) })).rejects.toThrow(RangeError);
      await expect(native.forward({ ...step, skipMask: new Uint8Array(3) })).rejects.toThrow(/skipMask has 3 entries/);
      expect(native.sequenceLength(s)).toBe(2);
    } finally {
      native.releaseSequence(s);
    }
  });
});

describe('commitPath: KV compaction of an accepted tree path', () => {
  it(`after a tree step and a commit of one branch, the next step equals a run of the accepted tokens alone (max |diff| < ${TOL}); pages are freed`, async () => {
    for (const leaf of [4, 3]) {
      const [s, tree] = await treeStep();
      try {
        const path = pathTo(leaf);
        const keep = i32(path.map((node) => prefix.length + node));
        const free = native.freePages();
        const before = native.sequenceLength(s);
        const freed = native.commitPath(s, keep);
        expect(native.sequenceLength(s)).toBe(prefix.length + path.length);
        const pageSize = native.info().pageSize;
        expect(freed).toBe(Math.ceil(before / pageSize) - Math.ceil((prefix.length + path.length) / pageSize));
        expect(native.freePages()).toBe(free + freed);
        // the tree's own rows are the accepted ones too
        const next = [290, 300];
        const after = await native.forward({ tokens: i32(next), seqIds: i32([s]), seqTokens: i32([2]), logitRows: i32([0, 1]) });
        const alone = await linear([...prefix, ...path.map((a) => nodeTok[a]), ...next]);
        const at = prefix.length + path.length;
        expect(Math.max(maxDiff(after, 0, alone, at), maxDiff(after, 1, alone, at + 1))).toBeLessThan(TOL);
        expect(maxDiff(tree, path[path.length - 1], alone, at - 1)).toBeLessThan(TOL);
      } finally {
        native.releaseSequence(s);
      }
    }
  });

  it('bad keep lists throw RangeError naming keepPositions and change nothing', async () => {
    const [s] = await treeStep();
    try {
      const len = native.sequenceLength(s);
      expect(() => native.commitPath(s, i32([5, 4]))).toThrow(RangeError);
      expect(() => native.commitPath(s, i32([5, 4]))).toThrow(/keepPositions must be strictly increasing/);
      expect(() => native.commitPath(s, i32([len]))).toThrow(/keepPositions\[0\]/);
      expect(() => native.commitPath(s, i32([]))).toThrow(/keepPositions/);
      expect(() => native.commitPath(s, [4] as unknown as Int32Array)).toThrow(TypeError);
      expect(native.sequenceLength(s)).toBe(len);
    } finally {
      native.releaseSequence(s);
    }
  });
});
