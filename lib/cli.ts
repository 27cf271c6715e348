#!/usr/bin/env node
// The tessera command line: `tessera demo` (the built-in demo, no model or GPU needed) and
// `tessera doctor` (which binary loaded, CPU features in use, CUDA devices and why).
import { parseArgs } from 'node:util';
import { runDemo } from './demo';
import { backends, nativeInfo } from './native';
import { ops } from './ops';
import { version } from './version';

const USAGE = `tessera ${version}: LLM inference for Node.js

Usage:
  tessera demo [--threads N] [--prompts N] [--seed S] [--json]
      Packed varlen prefill + paged decode over one attention layer with random weights,
      checked against the varlen path. Needs no model file and no GPU.
  tessera doctor [--json]
      Which native binary loaded, the CPU kernels in use, CUDA devices and why CUDA is or is not used.
  tessera help

Environment: TESSERA_DEVICE=cpu|cuda|auto picks the backend; TESSERA_CPU_ISA=scalar|avx2|avx512|neon
forces a CPU kernel set.`;

function fail(message: string): never {
  process.stderr.write(`tessera: ${message}\n\n${USAGE}\n`);
  process.exit(2);
}

function intOption(name: string, raw: string | undefined, min: number): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) fail(`--${name} must be an integer >= ${min}, got ${JSON.stringify(raw)}`);
  return n;
}

function main(argv: string[]): void {
  const [command, ...rest] = argv;
  if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      options: {
        json: { type: 'boolean' },
        threads: { type: 'string' },
        prompts: { type: 'string' },
        seed: { type: 'string' },
      },
      strict: true,
      allowPositionals: false,
    });
  } catch (err) {
    fail((err as Error).message);
  }
  const v = parsed.values;
  switch (command) {
    case 'demo': {
      const threads = intOption('threads', v.threads, 0);
      if (threads !== undefined) ops.setThreads(threads);
      const log = v.json ? undefined : (line: string) => process.stdout.write(`${line}\n`);
      const result = runDemo({ prompts: intOption('prompts', v.prompts, 1), seed: intOption('seed', v.seed, 0), log });
      if (v.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
      return;
    }
    case 'doctor': {
      const info = nativeInfo();
      const report = { version, node: process.version, platform: `${process.platform}-${process.arch}`, ...info, backends: backends() };
      if (v.json) {
        process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
        return;
      }
      const lines = [
        `tessera ${version} on node ${process.version} (${process.platform}-${process.arch})`,
        `binary:        ${info.binary}`,
        `device in use: ${info.device}`,
        `cpu kernels:   ${info.isa} (supported: ${info.isas.join(', ')}; features: ${info.cpuFeatures || 'none detected'})`,
        `threads:       ${info.threads} of ${info.cores} cores`,
        `cuda:          ${info.cuda.compiled ? 'compiled in' : 'not compiled in'}; ${info.cuda.usable ? 'usable' : `not used: ${info.cuda.reason}`}`,
        ...info.cuda.devices.map((d) => `  gpu ${d.index}: ${d.name} (sm ${d.computeCapability}, ${(d.totalMemory / 2 ** 30).toFixed(1)} GiB)`),
        ...backends()
          .filter((b) => !b.available)
          .map((b) => `${b.name} backend unavailable: ${b.reason}`),
      ];
      process.stdout.write(`${lines.join('\n')}\n`);
      return;
    }
    default:
      fail(`unknown command ${JSON.stringify(command)}`);
  }
}

try {
  main(process.argv.slice(2));
} catch (err) {
  process.stderr.write(`tessera: ${(err as Error).message}\n`);
  process.exit(1);
}
