#!/usr/bin/env node
// The tessera command line: generate, inspect, tokenize, demo (the embedded model, no download,
// no GPU) and doctor (which binary loaded, CPU features, CUDA devices and why).
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { runDemo } from './demo';
import { readGguf } from './gguf';
import { loadModel, type GenerateOptions } from './model';
import { backends, nativeInfo } from './native';
import { ops } from './ops';
import { version } from './version';

export const EMBEDDED_MODEL = path.join(__dirname, '..', 'models', 'stories260K-q8_0.gguf');

const USAGE = `tessera ${version}: LLM inference for Node.js

Usage:
  tessera generate -m FILE -p TEXT [-n N] [--temperature T] [--top-k K] [--top-p P] [--seed S]
                   [--threads N] [--context N] [--json]
      Generate a continuation of TEXT (streamed to stdout; --json prints one JSON object).
  tessera inspect FILE [--json]
      Metadata, tensors, and the memory the model needs.
  tessera tokenize -m FILE TEXT [--json]
      Token ids (and pieces) of TEXT.
  tessera demo [--threads N] [--ops]
      Generate stories with the embedded stories260K model, alone and as a batch of concurrent
      requests (continuous batching). --ops runs the op-level demo (packed prefill + paged decode).
  tessera doctor [--json]
      Which native binary loaded, the CPU kernels in use, CUDA devices and why CUDA is or is not used.

Environment: TESSERA_DEVICE=cpu|cuda|auto picks the backend; TESSERA_CPU_ISA=scalar|avx2|avx512|neon
forces a CPU kernel set.`;

class UsageError extends Error {}

function intOption(name: string, raw: string | undefined, min: number): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}`);
  return n;
}

function numOption(name: string, raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n)) throw new UsageError(`--${name} must be a number, got ${JSON.stringify(raw)}`);
  return n;
}

const out = (s: string) => process.stdout.write(s);

async function generate(v: Record<string, string | boolean | undefined>): Promise<void> {
  if (typeof v.model !== 'string') throw new UsageError('generate needs -m FILE');
  if (typeof v.prompt !== 'string') throw new UsageError('generate needs -p TEXT');
  const model = await loadModel(v.model, { threads: intOption('threads', v.threads as string, 0), contextSize: intOption('context', v.context as string, 1) });
  try {
    const options: GenerateOptions = {
      maxTokens: intOption('n', v.n as string, 0) ?? 128,
      temperature: numOption('temperature', v.temperature as string) ?? 0.8,
      topK: intOption('top-k', v['top-k'] as string, 0) ?? 40,
      topP: numOption('top-p', v['top-p'] as string) ?? 0.95,
      seed: intOption('seed', v.seed as string, 0),
    };
    const g = model.generate(v.prompt, options);
    if (!v.json) out(v.prompt);
    for await (const chunk of g) if (!v.json) out(chunk.text);
    const r = await g.result;
    if (v.json) {
      out(`${JSON.stringify({ prompt_tokens: r.promptTokens, tokens: r.tokens, text: r.text, finish_reason: r.finishReason, timings: r.timings })}\n`);
    } else {
      out('\n');
      process.stderr.write(
        `[${r.promptTokens} prompt tokens, ${r.tokens.length} generated (${r.finishReason}); ` +
          `prompt ${r.timings.promptMs.toFixed(1)} ms, ${r.timings.tokensPerSecond.toFixed(1)} tokens/s]\n`,
      );
    }
  } finally {
    await model.dispose();
  }
}

function inspect(file: string | undefined, json: boolean): void {
  if (!file) throw new UsageError('inspect needs a FILE');
  const g = readGguf(file);
  const arch = String(g.metadata['general.architecture'] ?? '?');
  const num = (k: string) => Number(g.metadata[`${arch}.${k}`] ?? 0);
  const layers = num('block_count'), heads = num('attention.head_count'), kvHeads = num('attention.head_count_kv') || heads;
  const headDim = num('attention.key_length') || (heads ? num('embedding_length') / heads : 0);
  const ctx = Math.min(num('context_length') || 2048, 4096);
  const kvBytes = 2 * layers * ctx * kvHeads * headDim * 2; // f16 K and V for one full context
  const byType: Record<string, { count: number; bytes: number }> = {};
  for (const t of g.tensors) {
    byType[t.type] ??= { count: 0, bytes: 0 };
    byType[t.type].count++;
    byType[t.type].bytes += t.byteSize;
  }
  const summary = (v: unknown): unknown => {
    if (Array.isArray(v) || ArrayBuffer.isView(v)) return `[${(v as { length: number }).length} items]`;
    return typeof v === 'bigint' ? v.toString() : v;
  };
  const metadata = Object.fromEntries(Object.entries(g.metadata).map(([k, v]) => [k, summary(v)]));
  const report = {
    file,
    version: g.version,
    fileSize: g.fileSize,
    metadata,
    tensors: g.tensors.length,
    tensorTypes: byType,
    memory: { weights: g.fileSize, kvCacheF16ForContext: kvBytes, context: ctx, total: g.fileSize + kvBytes },
  };
  if (json) {
    out(`${JSON.stringify(report, null, 2)}\n`);
    return;
  }
  const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
  out(`${file}: GGUF v${g.version}, ${mib(g.fileSize)}, ${g.tensors.length} tensors\n`);
  for (const [k, v] of Object.entries(metadata)) out(`  ${k} = ${typeof v === 'string' ? JSON.stringify(v) : String(v)}\n`);
  out('tensor types:\n');
  for (const [t, s] of Object.entries(byType)) out(`  ${t}: ${s.count} tensors, ${mib(s.bytes)}\n`);
  out(`memory: weights ${mib(g.fileSize)} (memory-mapped) + f16 KV cache for ${ctx} tokens ${mib(kvBytes)} = ${mib(report.memory.total)}\n`);
}

async function tokenize(v: Record<string, string | boolean | undefined>, text: string | undefined): Promise<void> {
  if (typeof v.model !== 'string') throw new UsageError('tokenize needs -m FILE');
  if (text === undefined) throw new UsageError('tokenize needs TEXT');
  const model = await loadModel(v.model, { kvPages: 1, contextSize: 16 });
  try {
    const ids = model.tokenize(text);
    if (v.json) out(`${JSON.stringify(ids)}\n`);
    else for (const id of ids) out(`${id}\t${JSON.stringify(model.tokenizer.tokenToPiece(id))}\n`);
  } finally {
    await model.dispose();
  }
}

async function demo(v: Record<string, string | boolean | undefined>): Promise<void> {
  const threads = intOption('threads', v.threads as string, 0);
  if (v.ops) {
    if (threads !== undefined) ops.setThreads(threads);
    runDemo({ log: (line) => out(`${line}\n`) });
    return;
  }
  const info = nativeInfo();
  out(`tessera ${version} demo: embedded stories260K (Q8_0), ${info.device} backend, ${info.isa} kernels\n\n`);
  const model = await loadModel(EMBEDDED_MODEL, { threads: threads ?? 1, contextSize: 512, kvPages: 256 });
  try {
    const story = model.generate('Once upon a time', { maxTokens: 200, temperature: 0.8, topK: 40, seed: 42 });
    out('Once upon a time');
    for await (const c of story) out(c.text);
    const r = await story.result;
    out(`\n\n[${r.tokens.length} tokens at ${r.timings.tokensPerSecond.toFixed(0)} tokens/s, finish: ${r.finishReason}]\n\n`);

    const prompts = ['The little dog', 'Tom and Sue went to', 'One day, a bird', 'The sun was hot and'];
    out(`Now ${prompts.length} prompts at once: one forward step serves all of them (continuous batching).\n`);
    const t0 = performance.now();
    const results = await Promise.all(prompts.map((p, i) => model.complete(p, { maxTokens: 60, temperature: 0.8, seed: i })));
    const ms = performance.now() - t0;
    const total = results.reduce((a, x) => a + x.tokens.length, 0);
    results.forEach((x, i) => out(`\n- ${prompts[i]}${x.text}\n`));
    out(`\n[${prompts.length} requests, ${total} tokens in ${ms.toFixed(0)} ms: ${((total * 1000) / ms).toFixed(0)} tokens/s together]\n`);
  } finally {
    await model.dispose();
  }
}

function doctor(json: boolean): void {
  const info = nativeInfo();
  const report = { version, node: process.version, platform: `${process.platform}-${process.arch}`, ...info, backends: backends() };
  if (json) {
    out(`${JSON.stringify(report, null, 2)}\n`);
    return;
  }
  const lines = [
    `tessera ${version} on node ${process.version} (${process.platform}-${process.arch})`,
    `binary:        ${info.binary}`,
    `device in use: ${info.device}`,
    `cpu kernels:   ${info.isa} (supported: ${info.isas.join(', ')}; features: ${info.cpuFeatures || 'none detected'})`,
    `int8 matmuls:  ${info.int8Path === 'none' ? "not packed (needs AVX512-VNNI and the avx512 kernels)" : `packed tiles, ${info.int8Path}`}`,
    `threads:       ${info.threads} of ${info.cores} cores`,
    `cuda:          ${info.cuda.compiled ? 'compiled in' : 'not compiled in'}; ${info.cuda.usable ? 'usable' : `not used: ${info.cuda.reason}`}`,
    ...info.cuda.devices.map((d) => `  gpu ${d.index}: ${d.name} (sm ${d.computeCapability}, ${(d.totalMemory / 2 ** 30).toFixed(1)} GiB)`),
    ...backends()
      .filter((b) => !b.available)
      .map((b) => `${b.name} backend unavailable: ${b.reason}`),
  ];
  out(`${lines.join('\n')}\n`);
}

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
    out(`${USAGE}\n`);
    return;
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      options: {
        json: { type: 'boolean' },
        ops: { type: 'boolean' },
        model: { type: 'string', short: 'm' },
        prompt: { type: 'string', short: 'p' },
        n: { type: 'string', short: 'n' },
        temperature: { type: 'string' },
        'top-k': { type: 'string' },
        'top-p': { type: 'string' },
        seed: { type: 'string' },
        threads: { type: 'string' },
        context: { type: 'string' },
      },
      strict: true,
      allowPositionals: true,
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const v = parsed.values as Record<string, string | boolean | undefined>;
  const pos = parsed.positionals;
  switch (command) {
    case 'generate':
      return generate(v);
    case 'inspect':
      return inspect(pos[0], Boolean(v.json));
    case 'tokenize':
      return tokenize(v, pos[0]);
    case 'demo':
      return demo(v);
    case 'doctor':
      return doctor(Boolean(v.json));
    default:
      throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  }
}

if (require.main === module) {
  main(process.argv.slice(2)).catch((err: Error) => {
    if (err instanceof UsageError) {
      process.stderr.write(`tessera: ${err.message}\n\n${USAGE}\n`);
      process.exit(2);
    }
    process.stderr.write(`tessera: ${err.message}\n`);
    process.exit(1);
  });
}
