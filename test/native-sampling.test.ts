// The native sampler (native/model/sampler.cc through addon.sampleRows) against the reference,
// lib/sampling.ts's Sampler: greedy identical to argmax; for every option combination on random
// rows the same token for the same seed, history and options, with logprobs and top-n within
// 1e-5; generator states carried over exactly; the same tokens on every run and thread count;
// a chi-square test of native draws against the reference distribution; the same errors; and
// sampling inside a forward step (NativeModel.forward with `sample`) on stories260K.
import { afterAll, describe, expect, it } from 'vitest';
import { Rng, Sampler, argmax, validateSamplingOptions, type SamplingOptions } from '../dist/sampling.js';
import { addon, nativeSamplingOptions, type NativeModel, type NativeSampled } from '../dist/native.js';
import { STORIES } from './data';
import { mulberry32 } from './reference';

const native = addon();
const threadsBefore = native.info().threads;
afterAll(() => {
  native.setThreads(threadsBefore);
});

/** rows x V gaussian logits (sigma), rounded to `quantum` when given (ties), with some -Infinity. */
function randomRows(seed: number, rows: number, V: number, sigma: number, quantum = 0, banned = 0): Float32Array {
  const rnd = mulberry32(seed);
  const out = new Float32Array(rows * V);
  for (let i = 0; i < out.length; i++) {
    const g = Math.sqrt(-2 * Math.log(1 - rnd())) * Math.cos(2 * Math.PI * rnd()) * sigma;
    out[i] = quantum > 0 ? Math.round(g / quantum) * quantum : g;
    if (rnd() < banned) out[i] = -Infinity;
  }
  return out;
}

function randomHistories(seed: number, rows: number, V: number, len: number): Int32Array[] {
  const rnd = mulberry32(seed);
  // Draw from a few hot tokens too, so counts above 1 occur.
  return Array.from({ length: rows }, () => Int32Array.from({ length: len }, () => (rnd() < 0.3 ? (rnd() * 8) | 0 : (rnd() * V) | 0)));
}

interface Run {
  out: NativeSampled;
  ref: { token: number; logprob: number; top?: { token: number; logprob: number }[] }[];
  refStates: Uint32Array[];
}

/** Samples rows natively and with Sampler (row i seeded with seeds[i]), logprobs = topN. */
function both(logits: Float32Array, V: number, o: SamplingOptions, histories: Int32Array[] | undefined, seeds: number[], topN: number): Run {
  const rows = seeds.length;
  const resolved = validateSamplingOptions(o);
  const rngStates = new Uint32Array(4 * rows);
  seeds.forEach((s, i) => rngStates.set(new Rng(s).getState(), 4 * i));
  const out = native.sampleRows({
    logits,
    vocab: V,
    options: Array(rows).fill(nativeSamplingOptions(resolved)),
    histories,
    rngStates,
    logprobs: new Int32Array(rows).fill(topN),
  });
  const ref = [];
  const refStates = [];
  for (let i = 0; i < rows; i++) {
    const s = new Sampler({ ...o, seed: seeds[i] }, V);
    ref.push(s.sample(logits.subarray(i * V, (i + 1) * V), histories?.[i] ?? [], { logprobs: topN }));
    refStates.push(s.rng.getState());
  }
  return { out, ref, refStates };
}

/** Compares a run; returns the rows whose token differs (logprobs checked on the agreeing rows). */
function compare(run: Run): number {
  let differ = 0;
  const { out, ref, refStates } = run;
  ref.forEach((r, i) => {
    expect(Array.from(out.rngStates.subarray(4 * i, 4 * i + 4))).toEqual(Array.from(refStates[i]));
    if (out.tokens[i] !== r.token) {
      differ++;
      return;
    }
    expect(Math.abs(out.logprobs[i] - r.logprob)).toBeLessThan(1e-5);
    const top = r.top ?? [];
    expect(out.topOffsets[i + 1] - out.topOffsets[i]).toBe(top.length);
    top.forEach((t, k) => {
      expect(out.topTokens[out.topOffsets[i] + k]).toBe(t.token);
      expect(Math.abs(out.topLogprobs[out.topOffsets[i] + k] - t.logprob)).toBeLessThan(1e-5);
    });
  });
  return differ;
}

describe('native sampler: generator', () => {
  it('Rng.getState / fromState round-trip and continue the same stream', () => {
    const a = new Rng(42);
    a.nextUint32();
    const b = Rng.fromState(a.getState());
    for (let i = 0; i < 100; i++) expect(b.nextUint32()).toBe(a.nextUint32());
    expect(() => Rng.fromState([0, 0, 0, 0])).toThrow(RangeError);
  });

  it('a draw advances the native state exactly as Rng.nextFloat does (seeds incl. negative and 0)', () => {
    const seeds = [0, 1, -1, 42, 2 ** 53 - 1, -(2 ** 53 - 1), 123456789];
    const V = 1;
    const run = both(new Float32Array(seeds.length * V), V, { temperature: 1 }, undefined, seeds, 0);
    expect(compare(run)).toBe(0);
    seeds.forEach((s, i) => {
      const r = new Rng(s);
      r.nextFloat();
      expect(Array.from(run.out.rngStates.subarray(4 * i, 4 * i + 4))).toEqual(Array.from(r.getState()));
    });
  });
});

describe('native sampler: greedy', () => {
  it('picks argmax (ties to the lowest id, -Infinity, bias to -Infinity) with the reference logprob and top-n', () => {
    for (const V of [32000, 37]) {
      for (const [quantum, banned] of [
        [0, 0],
        [0.5, 0],
        [1, 0.3],
      ]) {
        const rows = V > 1000 ? 16 : 200;
        const logits = randomRows(V + quantum * 10 + banned * 100, rows, V, 2, quantum, banned);
        // Ban the row argmax of every row through logitBias -Infinity: the next best must win.
        const first = argmax(logits.subarray(0, V));
        for (const o of [{ temperature: 0 }, { temperature: 0, logitBias: { [first]: -Infinity, 3: 0.5 } }] as SamplingOptions[]) {
          for (const topN of [-1, 0, 5]) {
            const seeds = Array.from({ length: rows }, (_, i) => i);
            const run = both(logits, V, o, undefined, seeds, topN === -1 ? 0 : topN);
            expect(compare(run)).toBe(0);
            if (topN === -1) {
              const fast = native.sampleRows({
                logits,
                vocab: V,
                options: Array(rows).fill(nativeSamplingOptions(validateSamplingOptions(o))),
                rngStates: run.out.rngStates,
                logprobs: new Int32Array(rows).fill(-1),
              });
              expect(Array.from(fast.tokens)).toEqual(Array.from(run.out.tokens));
              expect(fast.logprobs.every(Number.isNaN)).toBe(true);
            }
            if (o.logitBias === undefined) {
              for (let i = 0; i < rows; i++) expect(run.out.tokens[i]).toBe(argmax(logits.subarray(i * V, (i + 1) * V)));
            }
            // greedy leaves the generator alone
            seeds.forEach((s, i) => expect(Array.from(run.out.rngStates.subarray(4 * i, 4 * i + 4))).toEqual(Array.from(new Rng(s).getState())));
          }
        }
      }
    }
  });

  it('throws the reference errors: NaN, +Infinity, nothing left, a history id out of range', () => {
    const V = 16;
    const nat = (row: Float32Array, o: SamplingOptions, history?: Int32Array) => () =>
      native.sampleRows({
        logits: row,
        vocab: V,
        options: [nativeSamplingOptions(validateSamplingOptions(o))],
        histories: [history],
        rngStates: new Rng(1).getState(),
      });
    const js = (row: Float32Array, o: SamplingOptions, history?: Int32Array) => () => new Sampler(o, V).sample(row, history ?? []);
    const message = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        expect(e).toBeInstanceOf(RangeError);
        return (e as Error).message;
      }
      throw new Error('no error');
    };
    for (const o of [{ temperature: 0 }, { temperature: 1 }, { temperature: 0.7, topK: 3 }, { temperature: 1, topP: 0.5 }] as SamplingOptions[]) {
      const nan = new Float32Array(V);
      nan[5] = NaN;
      expect(message(nat(nan, o))).toBe(message(js(nan, o)));
      const inf = new Float32Array(V);
      inf[7] = Infinity;
      expect(message(nat(inf, o))).toBe(message(js(inf, o)));
      const dead = new Float32Array(V).fill(-Infinity);
      dead[2] = 1;
      const ban = { ...o, logitBias: { 2: -Infinity } };
      expect(message(nat(dead, ban))).toBe(message(js(dead, ban)));
      const pen = { ...o, repeatPenalty: 1.1 };
      expect(message(nat(new Float32Array(V), pen, Int32Array.of(1, 99)))).toBe(message(js(new Float32Array(V), pen, Int32Array.of(1, 99))));
    }
  });

  it('rejects bad requests naming the field', () => {
    const o = nativeSamplingOptions(validateSamplingOptions({}));
    const base = { logits: new Float32Array(8), vocab: 8, options: [o], rngStates: new Rng(1).getState() };
    expect(() => native.sampleRows({ ...base, rngStates: new Uint32Array(4) })).toThrow(/all zero/);
    expect(() => native.sampleRows({ ...base, rngStates: new Uint32Array(3) })).toThrow(/rngStates/);
    expect(() => native.sampleRows({ ...base, logits: new Float32Array(7) })).toThrow(/logits/);
    expect(() => native.sampleRows({ ...base, options: [{ ...o, topP: 0 }] })).toThrow(/topP/);
    expect(() => native.sampleRows({ ...base, options: [{ ...o, biasIds: Int32Array.of(8), biasValues: Float64Array.of(1) }] })).toThrow(
      /logitBias/,
    );
  });
});

describe('native sampler: stochastic agreement with the reference', () => {
  const temperatures = [0.6, 1, 1.5];
  const topKs = [0, 1, 40, 1000];
  const topPs = [1, 0.95, 0.5];
  const minPs = [0, 0.1];
  const penalties: SamplingOptions[] = [
    {},
    { repeatPenalty: 1.3, presencePenalty: 0.4, frequencyPenalty: 0.25 },
    { repeatPenalty: 0.8, penaltyLastN: -1 },
  ];
  const biases: SamplingOptions[] = [{}, { logitBias: { 0: -Infinity, 1: 3, 5: -2.5 } }];
  const combos: SamplingOptions[] = [];
  for (const temperature of temperatures)
    for (const topK of topKs)
      for (const topP of topPs)
        for (const minP of minPs)
          for (const p of penalties) for (const b of biases) combos.push({ temperature, topK, topP, minP, ...p, ...b });

  for (const [V, rows, quantum] of [
    [32000, 8, 0],
    [51, 40, 0.25], // not a multiple of 8 or 16: the vector loops' tails too
  ]) {
    it(`every option combination (${combos.length}) at vocab ${V}: the same token on >= 99.9% of draws`, () => {
      let draws = 0;
      let differ = 0;
      combos.forEach((o, c) => {
        const logits = randomRows(1000 + c, rows, V, 2.5, quantum, 0.02);
        const histories = randomHistories(2000 + c, rows, V, 96);
        const seeds = Array.from({ length: rows }, (_, i) => c * 1000 + i);
        differ += compare(both(logits, V, o, histories, seeds, 4));
        draws += rows;
      });
      console.log(`native sampling vs reference, vocab ${V}: ${draws - differ}/${draws} draws agree`);
      expect((draws - differ) / draws).toBeGreaterThanOrEqual(0.999);
    }, 120000);
  }
});

describe('native sampler: determinism and distribution', () => {
  it('the same seeds give the same tokens on every run and at 1 and 2 threads', () => {
    const V = 32000;
    const rows = 32;
    const logits = randomRows(7, rows, V, 2.5);
    const histories = randomHistories(8, rows, V, 64);
    const options = Array(rows).fill(nativeSamplingOptions(validateSamplingOptions({ temperature: 0.8, topP: 0.95, repeatPenalty: 1.1 })));
    const rngStates = new Uint32Array(4 * rows);
    for (let i = 0; i < rows; i++) rngStates.set(new Rng(i).getState(), 4 * i);
    const runs = [1, 2, 1, 2].map((t) => {
      native.setThreads(t);
      return native.sampleRows({ logits, vocab: V, options, histories, rngStates, logprobs: new Int32Array(rows).fill(2) });
    });
    for (const r of runs.slice(1)) {
      expect(Array.from(r.tokens)).toEqual(Array.from(runs[0].tokens));
      expect(Array.from(r.logprobs)).toEqual(Array.from(runs[0].logprobs));
      expect(Array.from(r.rngStates)).toEqual(Array.from(runs[0].rngStates));
    }
  });

  // Pearson's chi-square against the reference's own distribution (Sampler's logprobs over every
  // surviving token); bins with fewer than 5 expected draws pooled. Tolerance: fail above the
  // 0.999 quantile of chi-square(df) (Wilson-Hilferty), i.e. a correct sampler fails 1 time in 1000.
  it('draws follow the reference distribution (chi-square, p > 0.001) on a small vocabulary', () => {
    const V = 12;
    const logits = Float32Array.from({ length: V }, (_, i) => Math.sin(i * 1.7) * 2 + (i === 3 ? 1 : 0));
    const draws = 20000;
    for (const o of [{ temperature: 1 }, { temperature: 0.8, topP: 0.9 }, { temperature: 1.3, topK: 6, minP: 0.05 }] as SamplingOptions[]) {
      const ref = new Sampler({ ...o, seed: 1 }, V).sample(logits, [], { logprobs: V });
      const p = new Map(ref.top!.map((t) => [t.token, Math.exp(t.logprob)]));
      const rngStates = new Uint32Array(4 * draws);
      for (let i = 0; i < draws; i++) rngStates.set(new Rng(10000 + i).getState(), 4 * i);
      const rows = new Float32Array(V * draws);
      for (let i = 0; i < draws; i++) rows.set(logits, i * V);
      const out = native.sampleRows({
        logits: rows,
        vocab: V,
        options: Array(draws).fill(nativeSamplingOptions(validateSamplingOptions(o))),
        rngStates,
        logprobs: new Int32Array(draws).fill(-1),
      });
      const counts = new Map<number, number>();
      for (const t of out.tokens) {
        expect(p.has(t)).toBe(true); // never a truncated token
        counts.set(t, (counts.get(t) ?? 0) + 1);
      }
      let chi2 = 0;
      let bins = 0;
      let poolE = 0;
      let poolO = 0;
      for (const [t, pt] of p) {
        const e = pt * draws;
        const obs = counts.get(t) ?? 0;
        if (e < 5) {
          poolE += e;
          poolO += obs;
          continue;
        }
        chi2 += (obs - e) ** 2 / e;
        bins++;
      }
      if (poolE > 0) {
        chi2 += (poolO - poolE) ** 2 / poolE;
        bins++;
      }
      const df = Math.max(1, bins - 1);
      const z = 3.0902; // the 0.999 normal quantile
      const critical = df * (1 - 2 / (9 * df) + z * Math.sqrt(2 / (9 * df))) ** 3;
      console.log(`chi-square ${JSON.stringify(o)}: ${chi2.toFixed(2)} on ${df} df (critical ${critical.toFixed(2)})`);
      expect(chi2).toBeLessThan(critical);
    }
  });
});

describe('native sampling in the forward step (stories260K)', () => {
  let model: NativeModel;
  const i32 = (a: number[]) => Int32Array.from(a);
  const prompt = [1, 403, 407, 261, 378, 300];

  /** A fresh sequence holding `tokens`, run as one step with every row wanted. */
  async function rowsOf(tokens: number[]): Promise<Float32Array> {
    const s = model.createSequence();
    try {
      return await model.forward({ tokens: i32(tokens), seqIds: i32([s]), seqTokens: i32([tokens.length]), logitRows: i32([...tokens.keys()]) });
    } finally {
      model.releaseSequence(s);
    }
  }

  it('samples the asked rows on the worker thread as Sampler.sample would, and returns the other rows', async () => {
    model = new native.NativeModel(STORIES, { device: 'cpu', threads: 2, contextSize: 128, kvPages: 64, pageSize: 4, kvDtype: 'f32' });
    await model.repack();
    const V = model.info().vocabSize;
    try {
      const all = await rowsOf(prompt);
      const cases: SamplingOptions[] = [
        { temperature: 0 },
        { temperature: 0.8, topP: 0.95 },
        { temperature: 1.2, topK: 20, minP: 0.02, repeatPenalty: 1.3, presencePenalty: 0.2, logitBias: { 13: -Infinity } },
      ];
      for (const [c, o] of cases.entries()) {
        const history = i32(prompt);
        const seed = 77 + c;
        // rows: the last two positions; sample the last one (position 1 of logitRows) only
        const s = model.createSequence();
        let out;
        try {
          out = await model.forward({
            tokens: i32(prompt),
            seqIds: i32([s]),
            seqTokens: i32([prompt.length]),
            logitRows: i32([prompt.length - 2, prompt.length - 1]),
            sample: {
              rows: i32([1]),
              options: [nativeSamplingOptions(validateSamplingOptions(o))],
              histories: [history],
              rngStates: new Rng(seed).getState(),
              logprobs: i32([3]),
            },
          });
        } finally {
          model.releaseSequence(s);
        }
        const last = all.subarray((prompt.length - 1) * V, prompt.length * V);
        const sampler = new Sampler({ ...o, seed }, V);
        const ref = sampler.sample(Float32Array.from(last), history, { logprobs: 3 });
        expect(out.tokens[0]).toBe(ref.token);
        expect(Math.abs(out.logprobs[0] - ref.logprob)).toBeLessThan(1e-3); // rows of different batches round differently
        expect(Array.from(out.topTokens)).toEqual(ref.top!.map((t) => t.token));
        expect(Array.from(out.rngStates)).toEqual(Array.from(sampler.rng.getState()));
        // the unsampled row comes back as logits
        expect(out.logits.length).toBe(V);
        const second = all.subarray((prompt.length - 2) * V, (prompt.length - 1) * V);
        let d = 0;
        for (let v = 0; v < V; v++) d = Math.max(d, Math.abs(out.logits[v] - second[v]));
        expect(d).toBeLessThan(1e-3);
      }
    } finally {
      model.dispose();
    }
  });

  it('two sequences in one step, each with its own options and generator; the plain call still returns rows', async () => {
    model = new native.NativeModel(STORIES, { device: 'cpu', threads: 1, contextSize: 128, kvPages: 64, pageSize: 4, kvDtype: 'f32' });
    await model.repack();
    const V = model.info().vocabSize;
    try {
      const a = model.createSequence();
      const b = model.createSequence();
      const pa = prompt.slice(0, 4);
      const pb = prompt.slice(2);
      const opts = [{ temperature: 0.7 }, { temperature: 0 }].map((o) => nativeSamplingOptions(validateSamplingOptions(o)));
      const states = new Uint32Array(8);
      states.set(new Rng(5).getState(), 0);
      states.set(new Rng(6).getState(), 4);
      const out = await model.forward({
        tokens: i32([...pa, ...pb]),
        seqIds: i32([a, b]),
        seqTokens: i32([pa.length, pb.length]),
        logitRows: i32([pa.length - 1, pa.length + pb.length - 1]),
        sample: { rows: i32([1, 0]), options: [opts[1], opts[0]], rngStates: Uint32Array.from([...states.subarray(4), ...states.subarray(0, 4)]) },
      });
      expect(out.logits.length).toBe(0);
      const ra = await rowsOf(pa);
      const rb = await rowsOf(pb);
      const refA = new Sampler({ temperature: 0.7, seed: 5 }, V).sample(Float32Array.from(ra.subarray((pa.length - 1) * V)));
      expect(out.tokens[1]).toBe(refA.token);
      expect(out.tokens[0]).toBe(argmax(rb.subarray((pb.length - 1) * V)));
      // the step continued both sequences; a plain step on them still resolves with rows
      const next = await model.forward({ tokens: i32([out.tokens[1], out.tokens[0]]), seqIds: i32([a, b]), seqTokens: i32([1, 1]), logitRows: i32([0, 1]) });
      expect(next).toBeInstanceOf(Float32Array);
      expect(next.length).toBe(2 * V);
      expect(model.sequenceLength(a)).toBe(pa.length + 1);
    } finally {
      model.dispose();
    }
  });

  it('refuses bad sampling requests before running, and rejects a row with nothing left to sample', async () => {
    model = new native.NativeModel(STORIES, { device: 'cpu', threads: 1, contextSize: 128, kvPages: 64, pageSize: 4, kvDtype: 'f32' });
    await model.repack();
    const V = model.info().vocabSize;
    try {
      const s = model.createSequence();
      const step = { tokens: i32([1, 403]), seqIds: i32([s]), seqTokens: i32([2]), logitRows: i32([1]) };
      const o = nativeSamplingOptions(validateSamplingOptions({}));
      const st = new Rng(1).getState();
      expect(() => model.forward({ ...step, sample: { rows: i32([1]), options: [o], rngStates: st } })).toThrow(RangeError);
      expect(() => model.forward({ ...step, sample: { rows: i32([0]), options: [o, o], rngStates: st } })).toThrow(/rows|rngStates/);
      expect(() => model.forward({ ...step, sample: { rows: i32([0]), options: [{ ...o, topP: 2 }], rngStates: st } })).toThrow(/topP/);
      // A history id the penalties would read is refused before the step, naming its request.
      const pen = { ...o, repeatPenalty: 1.2 };
      const histories = [i32([1, V + 5, 2])];
      expect(() => model.forward({ ...step, sample: { rows: i32([0]), options: [pen], histories, rngStates: st } })).toThrow(
        /histories\[0\]: sample: expected a token id in \[0, 512\) for history\[1\]/,
      );
      try {
        model.forward({ ...step, sample: { rows: i32([0]), options: [pen], histories, rngStates: st } });
      } catch (e) {
        expect((e as { sampleIndex?: number }).sampleIndex).toBe(0);
      }
      // Outside the penalty window (the last penaltyLastN ids) it is not read, as in the reference.
      await model.forward({ ...step, sample: { rows: i32([0]), options: [{ ...pen, penaltyLastN: 1 }], histories, rngStates: st } });
      model.truncateSequence(s, 0);
      expect(model.sequenceLength(s)).toBe(0);
      const banAll = { ...o, biasIds: i32([...Array(V).keys()]), biasValues: new Float64Array(V).fill(-Infinity) };
      await expect(model.forward({ ...step, sample: { rows: i32([0]), options: [banAll], rngStates: st } })).rejects.toThrow(/no token left/);
    } finally {
      model.dispose();
    }
  });
});
