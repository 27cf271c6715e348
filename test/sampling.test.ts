// Token sampling (lib/sampling.ts): greedy, seeded draws, the truncation samplers against a
// brute-force reference that sorts the whole vocabulary, penalties against hand-computed values,
// logit bias, logprobs, option validation and a speed sanity check.
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_SAMPLING_OPTIONS,
  Rng,
  Sampler,
  argmax,
  logSoftmax,
  validateSamplingOptions,
  type SamplingOptions,
} from '../dist/sampling.js';
import { mulberry32 } from './reference';

// -------------------------------------------------------------------------------------------
// Test data: its own generator (mulberry32, from reference.ts), independent of the library's Rng.

function gaussianRow(seed: number, V: number, sigma: number, quantum = 0): Float32Array {
  const rnd = mulberry32(seed);
  const out = new Float32Array(V);
  for (let i = 0; i < V; i++) {
    const g = Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd()) * sigma;
    out[i] = quantum > 0 ? Math.round(g / quantum) * quantum : g;
  }
  return out;
}

// -------------------------------------------------------------------------------------------
// Reference: the same chain, written the obvious way (float64, full sort of the vocabulary).
// Bias and penalties are rounded to float32 as the sampler (and llama.cpp) stores them.

interface RefResult {
  /** Penalised logits. */
  logits: number[];
  /** Final distribution: token -> log-probability, for the tokens that survive truncation. */
  logprobs: Map<number, number>;
}

function penalise(logits: ArrayLike<number>, o: SamplingOptions, history: number[]): number[] {
  const L = Array.from(logits);
  const bias = o.logitBias instanceof Map ? [...o.logitBias] : Object.entries(o.logitBias ?? {}).map(([k, v]) => [Number(k), v]);
  for (const [id, b] of bias) L[id] = Math.fround(L[id] + b);
  const lastN = o.penaltyLastN ?? 64;
  const rp = o.repeatPenalty ?? 1;
  const pres = o.presencePenalty ?? 0;
  const freq = o.frequencyPenalty ?? 0;
  if (lastN === 0) return L;
  const window = lastN < 0 ? history : history.slice(Math.max(0, history.length - lastN));
  const counts = new Map<number, number>();
  for (const t of window) counts.set(t, (counts.get(t) ?? 0) + 1);
  for (const [t, c] of counts) {
    let l = L[t];
    if (rp !== 1) l = l > 0 ? l / rp : l * rp;
    L[t] = Math.fround(l - (c * freq + pres));
  }
  return L;
}

function reference(logits: ArrayLike<number>, o: SamplingOptions, history: number[] = []): RefResult {
  const L = penalise(logits, o, history);
  const T = o.temperature ?? 1;
  const logprobs = new Map<number, number>();
  if (T === 0) {
    const ls = logSoftmax(L);
    L.forEach((_, i) => {
      if (ls[i] > -Infinity) logprobs.set(i, ls[i]);
    });
    return { logits: L, logprobs };
  }
  let cands = L.map((_, i) => i).filter((i) => L[i] > -Infinity);
  cands.sort((a, b) => L[b] - L[a] || a - b);
  const max = L[cands[0]];
  const topK = o.topK ?? 0;
  if (topK > 0) cands = cands.slice(0, topK);
  const topP = o.topP ?? 1;
  if (topP < 1) {
    const w = cands.map((i) => Math.exp(L[i] - max));
    const z = w.reduce((a, b) => a + b, 0);
    let acc = 0;
    let keep = cands.length;
    for (let j = 0; j < w.length; j++) {
      acc += w[j];
      if (acc >= topP * z) {
        keep = j + 1;
        break;
      }
    }
    cands = cands.slice(0, keep);
  }
  const minP = o.minP ?? 0;
  if (minP > 0) {
    // p_i >= minP * p_max with p_i ∝ exp(l_i - max): exp(l_i - max) >= minP.
    cands = cands.filter((i) => Math.exp(L[i] - max) >= minP);
  }
  const w = cands.map((i) => Math.exp((L[i] - max) / T));
  const logZ = Math.log(w.reduce((a, b) => a + b, 0));
  cands.forEach((i) => logprobs.set(i, (L[i] - max) / T - logZ));
  return { logits: L, logprobs };
}

/** The sampler's full final distribution (logprobs = vocabulary size) against the reference. */
function expectMatchesReference(logits: Float32Array, o: SamplingOptions, history: number[] = [], label = ''): void {
  const V = logits.length;
  const s = new Sampler({ seed: 1, ...o }, V);
  const ref = reference(logits, o, history);
  const r = s.sample(logits, history, { logprobs: V });
  const top = r.top!;
  const what = `${label} ${JSON.stringify(o)}`;
  expect(top.length, `${what}: support size`).toBe(ref.logprobs.size);
  // Checked in plain code, one expect each: the vocabulary can have 152000 entries.
  const missing = top.filter((t) => !ref.logprobs.has(t.token)).map((t) => t.token);
  expect(missing.slice(0, 10), `${what}: tokens outside the reference support`).toEqual([]);
  let worst = 0;
  for (const t of top) {
    const want = ref.logprobs.get(t.token)!;
    worst = Math.max(worst, Math.abs(t.logprob - want) / Math.max(1, Math.abs(want)));
  }
  expect(worst, `${what}: largest logprob error (relative beyond 1)`).toBeLessThan(1e-9);
  const unsorted = top.findIndex((t, j) => j > 0 && t.logprob > top[j - 1].logprob);
  expect(unsorted, `${what}: top sorted by logprob`).toBe(-1);
  expect(ref.logprobs.has(r.token), `${what}: drawn token in the support`).toBe(true);
  const want = ref.logprobs.get(r.token)!;
  expect(Math.abs(r.logprob - want) / Math.max(1, Math.abs(want))).toBeLessThan(1e-9);
}

/** Counts of n draws. */
function drawCounts(s: Sampler, logits: Float32Array, n: number, history: number[] = []): Map<number, number> {
  const counts = new Map<number, number>();
  for (let i = 0; i < n; i++) {
    const t = s.sample(logits, history).token;
    counts.set(t, (counts.get(t) ?? 0) + 1);
  }
  return counts;
}

/** Chi-square statistic of observed counts against expected probabilities (every token of probs). */
function chiSquare(counts: Map<number, number>, probs: Map<number, number>, n: number): number {
  let chi = 0;
  for (const [t, p] of probs) {
    const e = n * p;
    const o = counts.get(t) ?? 0;
    chi += ((o - e) * (o - e)) / e;
  }
  return chi;
}

/** Upper critical value of chi-square with df degrees of freedom at p ≈ 1e-4 (Wilson–Hilferty). */
function chiCritical(df: number): number {
  const z = 3.72;
  const a = 2 / (9 * df);
  return df * Math.pow(1 - a + z * Math.sqrt(a), 3);
}

const softmaxMap = (logits: number[], T = 1): Map<number, number> => {
  const ls = logSoftmax(logits.map((l) => l / T));
  return new Map(Array.from(ls, (l, i) => [i, Math.exp(l)] as [number, number]));
};

// -------------------------------------------------------------------------------------------

describe('greedy (temperature 0)', () => {
  it('is argmax, ties to the lowest id; logprob is the log-softmax at temperature 1', () => {
    const logits = new Float32Array([1, 3, -2, 3, 2.5]);
    const s = new Sampler({ temperature: 0 }, 5);
    const r = s.sample(logits, [], { logprobs: 3 });
    expect(r.token).toBe(1);
    expect(argmax(logits)).toBe(1);
    const ls = logSoftmax(logits);
    expect(r.logprob).toBeCloseTo(ls[1], 12);
    expect(r.top!.map((t) => t.token)).toEqual([1, 3, 4]);
    r.top!.forEach((t) => expect(t.logprob).toBeCloseTo(ls[t.token], 12));
    for (let seed = 0; seed < 20; seed++) {
      const row = gaussianRow(seed, 3000, 2, seed % 2 ? 0.5 : 0);
      expect(new Sampler({ temperature: 0 }, 3000).sample(row).token).toBe(argmax(row));
    }
  });

  it('ignores top-k, top-p, min-p and never advances the generator', () => {
    const row = gaussianRow(3, 1000, 2);
    const ls = logSoftmax(row);
    const best = argmax(row);
    const s = new Sampler({ temperature: 0, topK: 1, topP: 0.01, minP: 1, seed: 5 }, 1000);
    const r = s.sample(row);
    expect(r.token).toBe(best);
    // Not 0, as it would be under the truncated (one-token) distribution.
    expect(r.logprob).toBeCloseTo(ls[best], 10);
    expect(r.logprob).toBeLessThan(-1e-3);
    expect(s.sample(row, [], { logprobs: 4 }).top).toHaveLength(4);
    expect(s.rng.nextUint32()).toBe(new Rng(5).nextUint32());
  });

  it('logprob: false skips the normaliser: same token, NaN logprob, same errors', () => {
    const s = new Sampler({ temperature: 0, logitBias: { 7: -Infinity } }, 3000);
    for (let seed = 0; seed < 20; seed++) {
      const row = gaussianRow(seed, 3000, 2, seed % 2 ? 0.5 : 0);
      if (seed === 3) row[7] = 1e9; // banned by the bias
      if (seed === 4) row.fill(-Infinity, 0, 2999); // one finite token, the last
      const want = s.sample(row);
      const got = s.sample(row, [], { logprob: false });
      expect(got.token).toBe(want.token);
      expect(got.logprob).toBeNaN();
    }
    const ties = new Float32Array([1, 3, -2, 3, 2.5]);
    expect(new Sampler({ temperature: 0 }, 5).sample(ties, [], { logprob: false }).token).toBe(1);
    const nan = new Float32Array([0, NaN, 1]);
    const inf = new Float32Array([0, 1, Infinity]);
    const none = new Float32Array([-Infinity, -Infinity, -Infinity]);
    const g = new Sampler({ temperature: 0 }, 3);
    expect(() => g.sample(nan, [], { logprob: false })).toThrow(RangeError);
    expect(() => g.sample(inf, [], { logprob: false })).toThrow(RangeError);
    expect(() => g.sample(none, [], { logprob: false })).toThrow(RangeError);
    expect(() => g.sample(ties.subarray(0, 3), [], { logprob: 'no' as never })).toThrow(TypeError);
    // logprobs (top-N) wins over logprob: false
    expect(g.sample(new Float32Array([0, 2, 1]), [], { logprob: false, logprobs: 2 }).logprob).toBeLessThan(0);
  });
});

describe('seeded draws', () => {
  const V = 500;
  const rows = [gaussianRow(11, V, 1.5), gaussianRow(12, V, 1.5), gaussianRow(13, V, 1.5)];
  const run = (o: SamplingOptions, n = 200): number[] => {
    const s = new Sampler(o, V);
    return Array.from({ length: n }, (_, i) => s.sample(rows[i % 3], []).token);
  };

  it('same seed, same logits and history: the same tokens; another seed: others', () => {
    for (const o of [{}, { topK: 40 }, { topP: 0.9 }, { topK: 300, topP: 0.95, minP: 0.02, temperature: 0.7 }]) {
      const a = run({ ...o, seed: 7 });
      expect(run({ ...o, seed: 7 })).toEqual(a);
      expect(run({ ...o, seed: 8 })).not.toEqual(a);
    }
    expect(run({ seed: -3 })).toEqual(run({ seed: -3 }));
    expect(run({ seed: -3 })).not.toEqual(run({ seed: 3 }));
    expect(run({ seed: Number.MAX_SAFE_INTEGER })).toEqual(run({ seed: Number.MAX_SAFE_INTEGER }));
  });

  it('without a seed, two samplers draw different streams', () => {
    expect(run({})).not.toEqual(run({}));
    expect(new Sampler({}, V).options.seed).toBeUndefined();
  });

  it('Rng: reproducible, [0, 1), clone continues the same stream', () => {
    const a = new Rng(123);
    const b = new Rng(123);
    const xs = Array.from({ length: 1000 }, () => a.nextFloat());
    expect(xs).toEqual(Array.from({ length: 1000 }, () => b.nextFloat()));
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...xs)).toBeLessThan(1);
    expect(Math.abs(xs.reduce((s, x) => s + x, 0) / xs.length - 0.5)).toBeLessThan(0.05);
    const c = a.clone();
    expect(Array.from({ length: 10 }, () => c.nextUint32())).toEqual(Array.from({ length: 10 }, () => a.nextUint32()));
    expect(new Rng(1).nextUint32()).not.toBe(new Rng(2).nextUint32());
    const u = new Rng(9).nextUint32();
    expect(Number.isInteger(u) && u >= 0 && u < 2 ** 32).toBe(true);
    expect(() => new Rng(0.5)).toThrow(RangeError);
  });
});

describe('distribution', () => {
  const logits = [1, 0.5, -0.3, 2, 0, -1, 1.5, 0.2];
  const row = new Float32Array(logits);
  const N = 20000;

  for (const T of [1, 0.6, 1.8]) {
    it(`temperature ${T}, no truncation: ${N} draws match softmax(l / T) (chi-square)`, () => {
      const s = new Sampler({ temperature: T, seed: 2024 }, logits.length);
      const counts = drawCounts(s, row, N);
      const chi = chiSquare(counts, softmaxMap(logits, T), N);
      expect(chi).toBeLessThan(chiCritical(logits.length - 1));
    });
  }

  it('truncated chains: draws match the reference distribution (chi-square)', () => {
    const V = 40;
    const r = gaussianRow(77, V, 1.2);
    const history = [3, 5, 5, 9, 30];
    const cases: SamplingOptions[] = [
      { topK: 10, temperature: 0.8 },
      { topP: 0.8 },
      { minP: 0.15, temperature: 1.3 },
      { topK: 20, topP: 0.9, minP: 0.05, temperature: 0.7, repeatPenalty: 1.3, presencePenalty: 0.2, frequencyPenalty: 0.1 },
    ];
    for (const [k, o] of cases.entries()) {
      const ref = reference(r, o, history);
      const probs = new Map([...ref.logprobs].map(([t, l]) => [t, Math.exp(l)] as [number, number]));
      const counts = drawCounts(new Sampler({ ...o, seed: 100 + k }, V), r, N, history);
      for (const t of counts.keys()) expect(probs.has(t), `${JSON.stringify(o)}: token ${t} outside the support`).toBe(true);
      expect(chiSquare(counts, probs, N), JSON.stringify(o)).toBeLessThan(chiCritical(probs.size - 1));
    }
  });
});

describe('truncation against the brute-force reference', () => {
  it('top-k keeps exactly k tokens (empirical support and full logprobs)', () => {
    const V = 50;
    const r = gaussianRow(5, V, 1);
    const ref = reference(r, { topK: 5 });
    const counts = drawCounts(new Sampler({ topK: 5, seed: 1 }, V), r, 5000);
    expect(new Set(counts.keys())).toEqual(new Set(ref.logprobs.keys()));
    expect(ref.logprobs.size).toBe(5);
    expectMatchesReference(r, { topK: 5 });
  });

  it('top-p keeps the smallest prefix with mass >= p; min-p keeps p >= minP * pmax', () => {
    const V = 20;
    const r = gaussianRow(8, V, 1);
    for (const o of [{ topP: 0.7 }, { minP: 0.3 }]) {
      const ref = reference(r, o);
      const counts = drawCounts(new Sampler({ ...o, seed: 3 }, V), r, 8000);
      expect(new Set(counts.keys()), JSON.stringify(o)).toEqual(new Set(ref.logprobs.keys()));
      expectMatchesReference(r, o);
    }
    // The prefix is the smallest: without its last token the mass is below p.
    const full = logSoftmax(r);
    const kept = [...reference(r, { topP: 0.7 }).logprobs.keys()];
    const mass = (ids: number[]) => ids.reduce((s, i) => s + Math.exp(full[i]), 0);
    expect(mass(kept)).toBeGreaterThanOrEqual(0.7);
    expect(mass(kept.slice(0, -1))).toBeLessThan(0.7);
  });

  it('every path (heap, buckets, refinement levels, ties, -Infinity) on a 5000-token vocabulary', () => {
    const V = 5000;
    const rows = {
      gauss: gaussianRow(21, V, 2.5),
      ties: gaussianRow(22, V, 2, 0.5), // many equal logits: order by id decides
      banned: (() => {
        const a = gaussianRow(23, V, 3);
        for (let i = 0; i < V; i += 3) a[i] = -Infinity;
        return a;
      })(),
    };
    const options: SamplingOptions[] = [
      { topK: 1 },
      { topK: 7 },
      { topK: 128 },
      { topK: 129 },
      { topK: 700 },
      { topK: 4999 },
      { topK: 9000 },
      { topP: 1e-9 },
      { topP: 0.3 },
      { topP: 0.9 },
      { topP: 0.999 },
      { minP: 0.2 },
      { minP: 1 },
      { topK: 40, topP: 0.5 },
      { topK: 600, topP: 0.7, temperature: 0.5 },
      { topK: 1000, minP: 0.05 },
      { topP: 0.95, minP: 0.1, temperature: 1.7 },
      { topK: 60, topP: 0.9, minP: 0.05, temperature: 0.8 },
      { temperature: 2.5 },
    ];
    for (const [name, row] of Object.entries(rows)) for (const o of options) expectMatchesReference(row, o, [], name);
  });

  it('logits spread over 21 orders of magnitude (nested bucket refinements, then the sort fallback)', () => {
    const V = 5000;
    const row = new Float32Array(V);
    for (let i = 0; i < V; i++) row[(i * 7919) % V] = -Math.pow(1.01, i);
    for (const o of [{ topK: 300 }, { topK: 2500 }, { topK: 4000, temperature: 2 }]) expectMatchesReference(row, o, [], 'exponential');
    const top = new Sampler({ temperature: 0 }, V).sample(row, [], { logprobs: 1000 }).top!;
    expect(top.map((t) => t.token)).toEqual(Array.from({ length: 1000 }, (_, i) => (i * 7919) % V));
  });

  it('a 152000-token vocabulary (Qwen-sized) matches too', () => {
    const V = 152000;
    const row = gaussianRow(31, V, 3);
    for (let j = 0; j < 30; j++) row[(j * 7919) % V] += 9; // a few likely tokens
    for (const o of [{ topK: 40 }, { topK: 2000 }, { topP: 0.95 }, { topP: 0.5, minP: 0.01 }, { temperature: 0.7 }]) {
      expectMatchesReference(row, o, [], 'V=152000');
    }
    expectMatchesReference(row, { temperature: 0 }, [], 'V=152000');
  });

  it('degenerate rows: all logits equal, top-k larger than the vocabulary, tiny top-p, min-p = 1', () => {
    const flat = new Float32Array(1000);
    expectMatchesReference(flat, { topP: 0.5 }, [], 'flat');
    const top = new Sampler({ topP: 0.5, seed: 1 }, 1000).sample(flat, [], { logprobs: 1000 }).top!;
    expect(top.map((t) => t.token)).toEqual(Array.from({ length: 500 }, (_, i) => i)); // ties by id
    expectMatchesReference(flat, { topK: 10 }, [], 'flat');

    const r = gaussianRow(41, 300, 2);
    const plain = new Sampler({ seed: 1 }, 300).sample(r, [], { logprobs: 300 }).top;
    expect(new Sampler({ topK: 100000, seed: 1 }, 300).sample(r, [], { logprobs: 300 }).top).toEqual(plain);

    const tiny = new Sampler({ topP: 1e-12, seed: 1 }, 300).sample(r, [], { logprobs: 5 });
    expect(tiny.token).toBe(argmax(r));
    expect(tiny.logprob).toBe(0);
    expect(tiny.top).toEqual([{ token: argmax(r), logprob: 0 }]);

    const twoMax = new Float32Array([0, 2, 1, 2, -1]);
    for (const o of [{ minP: 1 }, { minP: 1, topK: 3 }, { minP: 1, topP: 0.99 }]) {
      const res = new Sampler({ ...o, seed: 1 }, 5).sample(twoMax, [], { logprobs: 5 });
      expect(res.top!.map((t) => t.token), JSON.stringify(o)).toEqual([1, 3]);
      res.top!.forEach((t) => expect(t.logprob).toBeCloseTo(Math.log(0.5), 12));
    }
  });
});

describe('penalties', () => {
  const logits = new Float32Array([2, -1, 0.5, 3, 0, -2]);
  const history = [2, 0, 1, 1, 3, 1, 5];
  const base = { repeatPenalty: 2, presencePenalty: 0.5, frequencyPenalty: 0.25 };

  /** The penalised logits, read back through greedy logprobs (log-softmax differences). */
  const penalised = (o: SamplingOptions, h: number[] = history): number[] => {
    const r = new Sampler({ ...o, temperature: 0 }, 6).sample(logits, h, { logprobs: 6 });
    const lp = new Map(r.top!.map((t) => [t.token, t.logprob]));
    // Shift so token 4 (never penalised here, logit 0) reads 0.
    return [0, 1, 2, 3, 4, 5].map((i) => lp.get(i)! - lp.get(4)!);
  };
  const close = (a: number[], b: number[]) => a.forEach((x, i) => expect(x).toBeCloseTo(b[i], 6));

  it('llama.cpp repeat penalty + OpenAI presence/frequency over the last penaltyLastN tokens', () => {
    // Window (last 5): [1, 1, 3, 1, 5]; counts 1:3, 3:1, 5:1.
    //   token 1: -1 * 2 = -2, - (3 * 0.25 + 0.5) = -3.25
    //   token 3:  3 / 2 = 1.5, - (0.25 + 0.5)    = 0.75
    //   token 5: -2 * 2 = -4, - 0.75              = -4.75
    close(penalised({ ...base, penaltyLastN: 5 }), [2, -3.25, 0.5, 0.75, 0, -4.75]);
    expect(new Sampler({ ...base, penaltyLastN: 5, temperature: 0 }, 6).sample(logits, history).token).toBe(0);
    // Whole history: also 0 (2 / 2 - 0.75 = 0.25) and 2 (0.5 / 2 - 0.75 = -0.5); argmax moves to 3.
    close(penalised({ ...base, penaltyLastN: -1 }), [0.25, -3.25, -0.5, 0.75, 0, -4.75]);
    expect(new Sampler({ ...base, penaltyLastN: -1, temperature: 0 }, 6).sample(logits, history).token).toBe(3);
    // Default window (64) covers the whole 7-token history.
    close(penalised(base), [0.25, -3.25, -0.5, 0.75, 0, -4.75]);
  });

  it('the repeat penalty applies once per token, however often it occurs; 0 stays 0', () => {
    close(penalised({ repeatPenalty: 2, penaltyLastN: 5 }), [2, -2, 0.5, 1.5, 0, -4]);
    const r = new Sampler({ repeatPenalty: 3, temperature: 0 }, 6).sample(logits, [4, 4], { logprobs: 6 }).top!;
    const lp = new Map(r.map((t) => [t.token, t.logprob]));
    expect(lp.get(4)! - lp.get(2)!).toBeCloseTo(0 - 0.5, 6);
  });

  it('frequency/presence alone; penaltyLastN 0 and neutral values disable them', () => {
    close(penalised({ presencePenalty: 1, frequencyPenalty: 0.5, penaltyLastN: 5 }), [2, -1 - 2.5, 0.5, 3 - 1.5, 0, -2 - 1.5]);
    close(penalised({ presencePenalty: -0.5, penaltyLastN: 5 }), [2, -0.5, 0.5, 3.5, 0, -1.5]);
    close(penalised({ ...base, penaltyLastN: 0 }), [2, -1, 0.5, 3, 0, -2]);
    close(penalised({}), [2, -1, 0.5, 3, 0, -2]);
  });

  it('come after the logit bias (llama.cpp chain order)', () => {
    // Token 3: (3 + 1) / 2 - 0.75 = 1.25 (penalising first would give 0.75 + 1 = 1.75).
    close(penalised({ ...base, penaltyLastN: 5, logitBias: { 3: 1 } }), [2, -3.25, 0.5, 1.25, 0, -4.75]);
  });

  it('match the reference on a larger vocabulary, in every sampling path', () => {
    const V = 3000;
    const row = gaussianRow(51, V, 2);
    const rnd = mulberry32(52);
    const h = Array.from({ length: 300 }, () => Math.floor(rnd() * 200));
    for (const o of [{ topK: 50 }, { topK: 500 }, { topP: 0.9 }, { minP: 0.1 }, {}, { temperature: 0 }]) {
      expectMatchesReference(row, { ...o, ...base, penaltyLastN: 100 }, h, 'penalties');
      expectMatchesReference(row, { ...o, repeatPenalty: 1.3, penaltyLastN: -1 }, h, 'penalties');
    }
    // The history can be any array-like of ids.
    const a = new Sampler({ ...base, seed: 4 }, V).sample(row, h, { logprobs: 10 });
    const b = new Sampler({ ...base, seed: 4 }, V).sample(row, Int32Array.from(h), { logprobs: 10 });
    expect(b).toEqual(a);
  });
});

describe('logit bias, bans and logprobs', () => {
  const row = new Float32Array([0.5, 2, 1, -0.5, 1.5]);

  it('adds to the logits (object or Map); -Infinity bans', () => {
    expect(new Sampler({ temperature: 0, logitBias: { 3: 3 } }, 5).sample(row).token).toBe(3);
    expect(new Sampler({ temperature: 0, logitBias: new Map([[3, 3]]) }, 5).sample(row).token).toBe(3);
    expect(new Sampler({ temperature: 0, logitBias: { 1: -Infinity } }, 5).sample(row).token).toBe(4);
    for (const o of [{}, { topK: 2 }, { topP: 0.9 }, { minP: 0.01 }, { topK: 300 }]) {
      const s = new Sampler({ ...o, seed: 6, logitBias: { 1: -Infinity, 4: -Infinity } }, 5);
      const counts = drawCounts(s, row, 2000);
      expect(counts.has(1) || counts.has(4), JSON.stringify(o)).toBe(false);
      expectMatchesReference(row, { ...o, logitBias: { 1: -Infinity, 4: -Infinity, 0: 0.75 } });
    }
  });

  it('a row with a single finite logit always gives that token, logprob 0', () => {
    const V = 1000;
    const only = new Float32Array(V).fill(-Infinity);
    only[637] = -3;
    for (const o of [{}, { temperature: 0 }, { topK: 5 }, { topK: 500 }, { topP: 0.5 }, { minP: 0.5 }, { temperature: 0.3, topP: 0.9 }]) {
      const s = new Sampler({ ...o, seed: 2 }, V);
      for (let i = 0; i < 5; i++) {
        const r = s.sample(only, [], { logprobs: 3 });
        expect(r.token, JSON.stringify(o)).toBe(637);
        expect(r.logprob).toBe(0);
        expect(r.top).toEqual([{ token: 637, logprob: 0 }]);
      }
    }
  });

  it('banning every token is a RangeError: no token left to sample', () => {
    const ban = Object.fromEntries([0, 1, 2, 3, 4].map((i) => [i, -Infinity]));
    for (const o of [{}, { temperature: 0 }, { topK: 2 }, { topK: 300 }, { topP: 0.5 }]) {
      expect(() => new Sampler({ ...o, logitBias: ban }, 5).sample(row), JSON.stringify(o)).toThrow(/no token left to sample/);
    }
    expect(() => new Sampler({}, 3).sample(new Float32Array(3).fill(-Infinity))).toThrow(RangeError);
  });

  it('logprobs: the N most likely, sorted; their mass <= 1; the drawn token matches the reference', () => {
    const V = 2000;
    const r = gaussianRow(61, V, 2);
    for (const o of [{}, { topK: 40 }, { topK: 400 }, { topP: 0.9 }, { minP: 0.05 }, { temperature: 0 }, { temperature: 0.5, topP: 0.8 }]) {
      const s = new Sampler({ ...o, seed: 9 }, V);
      const ref = reference(r, o);
      for (const N of [1, 5, 100, 300]) {
        const res = s.sample(r, [], { logprobs: N });
        const top = res.top!;
        expect(top.length).toBe(Math.min(N, ref.logprobs.size));
        expect(top.reduce((a, t) => a + Math.exp(t.logprob), 0)).toBeLessThanOrEqual(1 + 1e-12);
        const best = [...ref.logprobs].sort((a, b) => b[1] - a[1] || a[0] - b[0]).slice(0, N);
        expect(top.map((t) => t.token)).toEqual(best.map(([t]) => t));
        top.forEach((t, j) => expect(t.logprob).toBeCloseTo(best[j][1], 9));
        expect(res.logprob).toBeCloseTo(ref.logprobs.get(res.token)!, 9);
      }
      expect(s.sample(r).top).toBeUndefined();
      expect(s.sample(r, [], { logprobs: 0 }).top).toBeUndefined();
    }
  });

  it("never modifies the caller's logits", () => {
    const V = 4000;
    const r = gaussianRow(71, V, 2);
    r[5] = -Infinity;
    const copy = r.slice();
    const h = [1, 2, 3, 3, 7];
    const extra = { logitBias: { 1: 5, 9: -Infinity }, repeatPenalty: 1.5, presencePenalty: 0.3, frequencyPenalty: 0.2 };
    for (const o of [{ temperature: 0 }, { topK: 40 }, { topK: 900 }, { topP: 0.9 }, { minP: 0.1 }, {}]) {
      new Sampler({ ...o, ...extra, seed: 1 }, V).sample(r, h, { logprobs: 20 });
      expect(Buffer.from(r.buffer).equals(Buffer.from(copy.buffer)), JSON.stringify(o)).toBe(true);
    }
  });
});

describe('validation', () => {
  it('fills in the defaults', () => {
    const o = validateSamplingOptions({});
    expect(o).toEqual({ ...DEFAULT_SAMPLING_OPTIONS, logitBias: new Map() });
    expect(o).toMatchObject({ temperature: 1, topK: 0, topP: 1, minP: 0, repeatPenalty: 1, penaltyLastN: 64, seed: undefined });
    expect(validateSamplingOptions(undefined).temperature).toBe(1);
    expect(validateSamplingOptions({ logitBias: { 7: -1 } }).logitBias).toEqual(new Map([[7, -1]]));
    expect(validateSamplingOptions({ temperature: undefined, seed: 0 })).toMatchObject({ temperature: 1, seed: 0 });
  });

  it('rejects unknown option keys with a TypeError naming the key', () => {
    expect(() => validateSamplingOptions({ topk: 5 })).toThrow(TypeError);
    expect(() => validateSamplingOptions({ topk: 5 })).toThrow(/"topk".*did you mean topK/);
    expect(() => validateSamplingOptions({ temperature: 1, foo: 1 })).toThrow(/unknown option "foo"/);
    expect(() => new Sampler({ top_p: 0.9 } as SamplingOptions, 10)).toThrow(/"top_p"/);
    expect(() => new Sampler({}, 10).sample(new Float32Array(10), [], { logprbs: 3 } as never)).toThrow(/"logprbs"/);
  });

  it('rejects bad values, naming the option (TypeError for a wrong type, RangeError out of range)', () => {
    expect(() => validateSamplingOptions({ temperature: -1 })).toThrow(
      new RangeError('sample: expected a finite number >= 0 for temperature but received -1 of type number'),
    );
    expect(() => validateSamplingOptions({ temperature: -1 }, 'session.generate')).toThrow(/^session\.generate: /);
    const bad: [Record<string, unknown>, RegExp, typeof TypeError | typeof RangeError][] = [
      [{ temperature: '1' }, /temperature/, TypeError],
      [{ temperature: NaN }, /temperature/, RangeError],
      [{ temperature: Infinity }, /temperature/, RangeError],
      [{ topK: -1 }, /topK/, RangeError],
      [{ topK: 1.5 }, /topK/, RangeError],
      [{ topK: null }, /topK/, TypeError],
      [{ topP: 0 }, /topP/, RangeError],
      [{ topP: 1.01 }, /topP/, RangeError],
      [{ topP: NaN }, /topP/, RangeError],
      [{ minP: -0.1 }, /minP/, RangeError],
      [{ minP: 1.5 }, /minP/, RangeError],
      [{ repeatPenalty: 0 }, /repeatPenalty/, RangeError],
      [{ repeatPenalty: -1 }, /repeatPenalty/, RangeError],
      [{ presencePenalty: Infinity }, /presencePenalty/, RangeError],
      [{ frequencyPenalty: '0.1' }, /frequencyPenalty/, TypeError],
      [{ penaltyLastN: -2 }, /penaltyLastN/, RangeError],
      [{ penaltyLastN: 2.5 }, /penaltyLastN/, RangeError],
      [{ seed: 1.5 }, /seed/, RangeError],
      [{ seed: 2 ** 53 }, /seed/, RangeError],
      [{ seed: '42' }, /seed/, TypeError],
      [{ logitBias: [1, 2] }, /logitBias/, TypeError],
      [{ logitBias: 'x' }, /logitBias/, TypeError],
      [{ logitBias: { abc: 1 } }, /logitBias key/, RangeError],
      [{ logitBias: { '-1': 1 } }, /logitBias key/, RangeError],
      [{ logitBias: { 5: NaN } }, /logitBias\[5\]/, RangeError],
      [{ logitBias: { 5: Infinity } }, /logitBias\[5\]/, RangeError],
      [{ logitBias: { 5: '1' } }, /logitBias\[5\]/, TypeError],
      [{ logitBias: new Map([[-1, 1]]) }, /logitBias key/, RangeError],
      [{ logitBias: new Map([['1', 1]]) }, /logitBias key/, TypeError],
    ];
    for (const [o, re, type] of bad) {
      expect(() => validateSamplingOptions(o), JSON.stringify(o)).toThrow(type);
      expect(() => validateSamplingOptions(o), JSON.stringify(o)).toThrow(re);
    }
    expect(() => validateSamplingOptions(5)).toThrow(TypeError);
    expect(() => validateSamplingOptions([])).toThrow(/options/);
    expect(() => validateSamplingOptions(null)).toThrow(TypeError);
  });

  it('Sampler checks vocabSize, bias ids, logits, history and per-call options', () => {
    expect(() => new Sampler({}, 0)).toThrow(/vocabSize/);
    expect(() => new Sampler({}, 2.5)).toThrow(/vocabSize/);
    expect(() => new Sampler({}, '10' as never)).toThrow(TypeError);
    expect(() => new Sampler({ logitBias: { 10: 1 } }, 10)).toThrow(/logitBias/);
    expect(() => new Sampler({ temperature: -0.5 }, 10)).toThrow(/^Sampler: .*temperature/);
    expect(() => new Sampler({ logitBias: { 12: 1 } }, 10, 'model.generate')).toThrow(/^model\.generate: .*logitBias/);

    const s = new Sampler({ repeatPenalty: 1.1 }, 10);
    expect(() => s.sample(new Float64Array(10) as never)).toThrow(TypeError);
    expect(() => s.sample([1, 2] as never)).toThrow(/logits/);
    expect(() => s.sample(new Float32Array(9))).toThrow(new RangeError('sample: expected a Float32Array of length 10 (vocabSize) for logits but received Float32Array(9)'));
    expect(() => s.sample(new Float32Array(10), [1, 10])).toThrow(/history\[1\]/);
    expect(() => s.sample(new Float32Array(10), [1, 0.5])).toThrow(RangeError);
    expect(() => s.sample(new Float32Array(10), 5 as never)).toThrow(/history/);
    expect(() => s.sample(new Float32Array(10), [], { logprobs: -1 })).toThrow(/logprobs/);
    expect(() => s.sample(new Float32Array(10), [], { logprobs: 1.5 })).toThrow(RangeError);

    for (const o of [{}, { temperature: 0 }, { topK: 3 }, { topK: 300 }, { topP: 0.9 }]) {
      for (const badValue of [NaN, Infinity]) {
        const row = new Float32Array(1000);
        row[700] = badValue;
        const t = new Sampler(o, 1000);
        expect(() => t.sample(row), `${JSON.stringify(o)} ${badValue}`).toThrow(RangeError);
        expect(() => t.sample(row), `${JSON.stringify(o)} ${badValue}`).toThrow(/logits\[700\]/);
        row[700] = 0;
        row[3] = badValue; // also while a heap is still filling
        expect(() => t.sample(row)).toThrow(/logits\[3\]/);
      }
    }
    const big = new Float32Array(4).fill(3e38);
    expect(() => new Sampler({ logitBias: { 2: 1e39 } }, 4).sample(big)).toThrow(/token 2.*logitBias/);
    expect(() => argmax([0, NaN])).toThrow(/logits\[1\]/);
    expect(() => logSoftmax([-Infinity])).toThrow(RangeError);
  });
});

describe('speed (a sanity check, not a benchmark)', () => {
  it('top-k 40 on a 32000-token vocabulary averages < 1 ms a sample', () => {
    const V = 32000;
    const rows = [gaussianRow(81, V, 3), gaussianRow(82, V, 3)];
    const s = new Sampler({ topK: 40, topP: 0.95, temperature: 0.8, repeatPenalty: 1.1, seed: 1 }, V);
    const history = Array.from({ length: 64 }, (_, i) => (i * 31) % V);
    for (let i = 0; i < 50; i++) s.sample(rows[i & 1], history);
    const t0 = performance.now();
    for (let i = 0; i < 200; i++) s.sample(rows[i & 1], history);
    const perSample = (performance.now() - t0) / 200;
    expect(perSample).toBeLessThan(1);
  });
});
