// `tessera bench`: throughput and latency of a model on this machine, through the public API (so
// it measures what an application gets): prefill tokens/s of one long prompt, then aggregate
// decode tokens/s and time to first token at 1..N concurrent sequences sharing forward steps.
// Prompts are synthetic token ids (every id below the vocabulary's size works for the model) and
// end-of-generation tokens are banned, so every run generates exactly the tokens asked for.
import type { Model } from './model';

export interface BenchOptions {
  /** Tokens of the prompt in the prefill case (default 512). */
  promptTokens?: number;
  /** Tokens each sequence generates in the decode cases (default 64). */
  genTokens?: number;
  /** Tokens of each sequence's prompt in the decode cases (default 32). */
  decodePromptTokens?: number;
  /** Concurrent sequences of the decode cases (default [1, 4, 16]). */
  concurrency?: number[];
  /** Called after each case with the share of the whole bench done (0..1]. */
  onProgress?: (fraction: number, label: string) => void;
}

export interface BenchRow {
  case: 'prefill' | 'decode';
  sequences: number;
  promptTokens: number;
  genTokens: number;
  /** Prefill: prompt tokens/s; decode: generated tokens/s of all sequences together. */
  tokensPerSecond: number;
  /** Mean and worst time to first token over the sequences, ms. */
  ttftMeanMs: number;
  ttftMaxMs: number;
  wallMs: number;
}

/** Synthetic prompt ids: a BOS when the vocabulary has one, then a walk over ordinary ids. */
function syntheticPrompt(model: Model, n: number, salt: number): number[] {
  const V = model.info.vocabSize;
  const bos = model.tokenizer.bos;
  const ids: number[] = bos >= 0 ? [bos] : [];
  for (let i = 0; ids.length < n; i++) {
    const id = (259 + ((i * 7919 + salt * 104729) % Math.max(1, V - 259))) % V; // past the byte tokens
    if (!model.tokenizer.eogIds.has(id)) ids.push(id);
  }
  return ids;
}

/** Runs the cases one after another; each case runs alone on the model. */
export async function runBench(model: Model, options: BenchOptions = {}): Promise<BenchRow[]> {
  const P = options.promptTokens ?? 512;
  const G = options.genTokens ?? 64;
  const DP = options.decodePromptTokens ?? 32;
  const concurrency = options.concurrency ?? [1, 4, 16];
  const ban: Record<number, number> = {};
  for (const t of model.tokenizer.eogIds) ban[t] = -Infinity;
  const cases = 1 + concurrency.length;
  const rows: BenchRow[] = [];

  // Prefill: one prompt of P tokens, one token generated.
  {
    const t0 = performance.now();
    const r = await model.complete(syntheticPrompt(model, P, 0), { maxTokens: 1, temperature: 0, logitBias: ban });
    const wall = performance.now() - t0;
    rows.push({ case: 'prefill', sequences: 1, promptTokens: P, genTokens: 1, tokensPerSecond: (P * 1000) / r.timings.promptMs, ttftMeanMs: r.timings.promptMs, ttftMaxMs: r.timings.promptMs, wallMs: wall });
    options.onProgress?.(1 / cases, 'prefill');
  }
  // Decode: c sequences of DP prompt tokens and G generated tokens each, submitted together.
  for (const [i, c] of concurrency.entries()) {
    const prompts = Array.from({ length: c }, (_, s) => syntheticPrompt(model, DP, s + 1));
    const t0 = performance.now();
    const results = await model.completeBatch(prompts, { maxTokens: G, temperature: 0, logitBias: ban });
    const wall = performance.now() - t0;
    const generated = results.reduce((n, r) => n + r.tokens.length, 0);
    const ttft = results.map((r) => r.timings.promptMs);
    rows.push({
      case: 'decode',
      sequences: c,
      promptTokens: DP,
      genTokens: G,
      tokensPerSecond: (generated * 1000) / wall,
      ttftMeanMs: ttft.reduce((a, b) => a + b, 0) / c,
      ttftMaxMs: Math.max(...ttft),
      wallMs: wall,
    });
    options.onProgress?.((i + 2) / cases, `decode x${c}`);
  }
  return rows;
}

/** The rows as an aligned text table. */
export function formatBench(rows: BenchRow[]): string {
  const head = ['case', 'sequences', 'prompt', 'generated', 'tokens/s', 'TTFT mean ms', 'TTFT max ms'];
  const body = rows.map((r) => [
    r.case,
    String(r.sequences),
    String(r.promptTokens),
    String(r.genTokens),
    r.tokensPerSecond.toFixed(1),
    r.ttftMeanMs.toFixed(1),
    r.ttftMaxMs.toFixed(1),
  ]);
  const width = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 ? c.padEnd(width[i]) : c.padStart(width[i]))).join('  ');
  return [line(head), ...body.map(line)].join('\n');
}
