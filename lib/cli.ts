#!/usr/bin/env node
// The tessera command line: generate, serve (an OpenAI-compatible HTTP server), bench (throughput
// and latency on this machine), inspect, tokenize, demo (the embedded model, no download, no GPU)
// and doctor (which binary loaded, CPU features, CUDA devices and why).
//
// Exit codes: 0 success, 1 failure (missing or unreadable model file, not a GGUF, a native error),
// 2 usage error (unknown command or option, a missing or invalid argument); usage errors print
// the command's usage on stderr. Messages name options as they were typed (-n or --max-tokens).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { formatBench, runBench } from './bench';
import { runDemo } from './demo';
import { chatPromptTokens, NoChatTemplateError } from './chat';
import { createServer } from './server';
import { readGguf } from './gguf';
import { loadModel, type GenerateOptions, type LoadModelOptions, type Model } from './model';
import { backends, demoModelPath, nativeInfo } from './native';
import { ops } from './ops';
import { ProgressBar } from './progress';
import { validateSamplingOptions } from './sampling';
import { Tokenizer, TokenAttr } from './tokenizer';
import { version } from './version';

// -------------------------------------------------------------------------------------------
// Options and commands

interface OptionSpec {
  /** Spellings; the first is the one usage and messages use when the option was not typed. */
  flags: string[];
  /** Takes a value (-n 5, -n5, -n=5, --max-tokens=5) rather than being a switch. */
  value: boolean;
}

const OPTIONS = {
  model: { flags: ['-m', '--model'], value: true },
  prompt: { flags: ['-p', '--prompt'], value: true },
  maxTokens: { flags: ['-n', '--max-tokens'], value: true },
  temperature: { flags: ['--temperature'], value: true },
  topK: { flags: ['--top-k'], value: true },
  topP: { flags: ['--top-p'], value: true },
  seed: { flags: ['--seed'], value: true },
  threads: { flags: ['--threads'], value: true },
  context: { flags: ['--context', '--ctx'], value: true },
  chat: { flags: ['--chat'], value: false },
  chatTemplate: { flags: ['--chat-template'], value: true },
  host: { flags: ['--host'], value: true },
  port: { flags: ['--port'], value: true },
  apiKey: { flags: ['--api-key'], value: true },
  maxQueue: { flags: ['--max-queue'], value: true },
  kvPages: { flags: ['--kv-pages'], value: true },
  promptTokens: { flags: ['--prompt-tokens'], value: true },
  concurrency: { flags: ['--concurrency'], value: true },
  json: { flags: ['--json'], value: false },
  ops: { flags: ['--ops'], value: false },
  help: { flags: ['-h', '--help'], value: false },
} satisfies Record<string, OptionSpec>;

type OptionName = keyof typeof OPTIONS;

const FLAG_TO_OPTION = new Map<string, OptionName>();
for (const [name, spec] of Object.entries(OPTIONS) as [OptionName, OptionSpec][]) for (const f of spec.flags) FLAG_TO_OPTION.set(f, name);

interface CommandSpec {
  /** Synopsis and what it does (the overall usage lists these). */
  usage: string;
  /** Its options, shown by `tessera COMMAND --help` and with its usage errors. */
  details?: string;
  options: OptionName[];
  /** Names of the positional arguments it takes (more is a usage error). */
  positionals: string[];
  run(args: Args): Promise<void> | void;
}

const COMMANDS: Record<string, CommandSpec> = {
  generate: {
    usage: `  tessera generate -m FILE -p TEXT [-n N] [--temperature T] [--top-k K] [--top-p P] [--seed S]
                   [--threads N] [--context N] [--chat [--chat-template FILE]] [--json]
      Generate a continuation of TEXT (streamed to stdout; --json prints one JSON object).
      --chat: TEXT is a user message, put through the model's chat template; prints the reply.`,
    details: `      -m, --model FILE      the GGUF model
      -p, --prompt TEXT     the text to continue
      -n, --max-tokens N    most tokens to generate (default 128)
      --temperature T       0 picks the most likely token every time (default 0.8)
      --top-k K, --top-p P  sample among the K most likely tokens / the smallest set with
                            probability P (defaults 40 and 0.95; --top-k 0 keeps them all)
      --seed S              the same seed gives the same text
      --threads N           CPU threads (default: all cores)
      --context N           longest prompt + generated tokens (default: the model's, at most 4096)
      --chat                TEXT is a user message: apply the chat template, print only the reply
      --chat-template FILE  a Jinja chat template instead of the model's tokenizer.chat_template`,
    options: ['model', 'prompt', 'maxTokens', 'temperature', 'topK', 'topP', 'seed', 'threads', 'context', 'chat', 'chatTemplate', 'json'],
    positionals: [],
    run: generate,
  },
  serve: {
    usage: `  tessera serve [-m FILE] [--host H] [--port P] [--api-key KEY] [--max-queue N] [--context N]
                [--threads N] [--kv-pages N] [--chat-template FILE]
      An OpenAI-compatible HTTP server (/v1/chat/completions, /v1/completions, /v1/models,
      /health, /metrics). Without -m it serves the embedded stories260K model.`,
    details: `      -m, --model FILE      the GGUF model (default: the embedded stories260K, with a plain chat template)
      --host H              address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)
      --port P              port (default 8080; 0 picks a free one)
      --api-key KEY         require Authorization: Bearer KEY on /v1 routes (or set TESSERA_API_KEY)
      --max-queue N         most requests held at once, running or waiting; more get 429 (default 256)
      --context N, --ctx N  longest prompt + generated tokens per request (default: the model's, at most 4096)
      --threads N           CPU threads (default: all cores)
      --kv-pages N          KV cache pages of 16 tokens shared by all requests (default: one full context)
      --chat-template FILE  a Jinja chat template instead of the model's tokenizer.chat_template
      SIGINT/SIGTERM stop accepting, let running requests finish (10 s at most), and exit 0.`,
    options: ['model', 'host', 'port', 'apiKey', 'maxQueue', 'context', 'threads', 'kvPages', 'chatTemplate'],
    positionals: [],
    run: serve,
  },
  bench: {
    usage: `  tessera bench [-m FILE] [--prompt-tokens N] [-n N] [--concurrency 1,4,16] [--threads N] [--json]
      Throughput and latency on this machine: prefill tokens/s, then decode tokens/s and time to
      first token with 1..N sequences at once. Without -m it measures the embedded model.`,
    details: `      -m, --model FILE      the GGUF model (default: the embedded stories260K)
      --prompt-tokens N     prompt length of the prefill case (default 512, or the context less one)
      -n, --max-tokens N    tokens each sequence generates in the decode cases (default 64)
      --concurrency LIST    comma-separated counts of concurrent sequences (default 1,4,16)
      --threads N           CPU threads (default: all cores)
      --json                one JSON object with every row instead of the table`,
    options: ['model', 'promptTokens', 'maxTokens', 'concurrency', 'threads', 'json'],
    positionals: [],
    run: bench,
  },
  inspect: {
    usage: `  tessera inspect FILE [--json]
      Metadata, tensors, and the memory the model needs.`,
    options: ['json'],
    positionals: ['FILE'],
    run: inspect,
  },
  tokenize: {
    usage: `  tessera tokenize -m FILE TEXT [--json]
      Token ids and pieces of TEXT (special tokens by name, e.g. <s>); --json prints the ids.
      TEXT may also be given as -p TEXT.`,
    options: ['model', 'prompt', 'json'],
    positionals: ['TEXT'],
    run: tokenize,
  },
  demo: {
    usage: `  tessera demo [--threads N] [--ops]
      Generate stories with the embedded stories260K model, alone and as a batch of concurrent
      requests (continuous batching). --ops runs the op-level demo (packed prefill + paged decode).`,
    options: ['threads', 'ops'],
    positionals: [],
    run: demo,
  },
  doctor: {
    usage: `  tessera doctor [--json]
      Which native binary loaded, the CPU kernels in use, CUDA devices and why CUDA is or is not used.`,
    options: ['json'],
    positionals: [],
    run: doctor,
  },
};

const USAGE = `tessera ${version}: LLM inference for Node.js

Usage:
${Object.values(COMMANDS)
  .map((c) => c.usage)
  .join('\n')}
  tessera help [COMMAND], tessera COMMAND --help
      Usage of one command (with its options).
  tessera --version

Environment: TESSERA_DEVICE=cpu|cuda|auto picks the backend; TESSERA_CPU_ISA=scalar|avx2|avx512|neon
forces a CPU kernel set.`;

function commandUsage(name: string): string {
  const c = COMMANDS[name];
  return `Usage:\n${c.usage}${c.details ? `\n${c.details}` : ''}`;
}

/** A mistake in the command line: exit code 2, with the usage of `command` (or all of it). */
class UsageError extends Error {
  constructor(
    message: string,
    readonly command?: string,
  ) {
    super(message);
  }
}

// -------------------------------------------------------------------------------------------
// Parsing. By hand rather than node:util parseArgs: parseArgs refuses `-n -5` ("argument is
// ambiguous") before our validation can say what is wrong, reads `-n=5` as "=5", and does not say
// which spelling of an option was typed. Here an option that takes a value takes the next argument
// whatever it looks like (as getopt does), unless it is another option of the command.

class Args {
  readonly values = new Map<OptionName, string | true>();
  /** The spelling typed, per option (the last one, as the last value wins). */
  readonly typed = new Map<OptionName, string>();
  readonly positionals: string[] = [];

  constructor(readonly command: string) {}

  /** The option as the user typed it, or its first spelling. */
  flag(name: OptionName): string {
    return this.typed.get(name) ?? OPTIONS[name].flags[0];
  }

  string(name: OptionName): string | undefined {
    const v = this.values.get(name);
    return typeof v === 'string' ? v : undefined;
  }

  bool(name: OptionName): boolean {
    return this.values.get(name) === true;
  }

  /** An integer option in [min, max]; undefined when absent. */
  int(name: OptionName, min: number, max: number): number | undefined {
    const raw = this.string(name);
    if (raw === undefined) return undefined;
    const n = /^[+-]?\d+$/.test(raw.trim()) ? Number(raw) : NaN;
    if (!Number.isSafeInteger(n) || n < min) throw this.#invalid(name, `an integer >= ${min}`);
    if (n > max) throw this.#invalid(name, `an integer <= ${max}`);
    return n;
  }

  /** A decimal number option; undefined when absent. */
  number(name: OptionName): number | undefined {
    const raw = this.string(name);
    if (raw === undefined) return undefined;
    if (!/^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i.test(raw.trim())) throw this.#invalid(name, 'a number');
    return Number(raw);
  }

  #invalid(name: OptionName, expected: string): UsageError {
    return new UsageError(`${this.flag(name)} must be ${expected}, got ${JSON.stringify(this.string(name))}`, this.command);
  }
}

function parse(command: string, argv: string[]): Args {
  const spec = COMMANDS[command];
  const args = new Args(command);
  const allowed = new Set<OptionName>([...spec.options, 'help']);
  const isOptionOfCommand = (a: string) => {
    const name = FLAG_TO_OPTION.get(a.startsWith('--') ? a.split('=')[0] : a); // -p "-nice" is a prompt
    return name !== undefined && allowed.has(name);
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') {
      args.positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!a.startsWith('-') || a === '-') {
      args.positionals.push(a);
      continue;
    }
    // --name, --name=value, -x, -xVALUE, -x=VALUE
    const long = a.startsWith('--');
    const eq = long ? a.indexOf('=') : -1;
    const flag = long ? (eq < 0 ? a : a.slice(0, eq)) : a.slice(0, 2);
    let inline: string | undefined = long ? (eq < 0 ? undefined : a.slice(eq + 1)) : a.length > 2 ? a.slice(2) : undefined;
    const name = FLAG_TO_OPTION.get(flag);
    if (name === undefined || !allowed.has(name)) {
      const shown = long ? flag : a;
      const why = name === undefined ? `unknown option ${shown}` : `${flag} is not an option of tessera ${command}`;
      const hint = /^-\d/.test(a) && spec.positionals.length > 0 ? ` (to pass ${JSON.stringify(a)} as ${spec.positionals[0]}, put it after --)` : '';
      throw new UsageError(`${why}${hint}`, command);
    }
    if (!OPTIONS[name].value) {
      if (inline !== undefined) {
        if (long) throw new UsageError(`${flag} takes no value`, command);
        throw new UsageError(`unknown option ${a}`, command);
      }
      args.values.set(name, true);
      args.typed.set(name, flag);
      continue;
    }
    if (inline !== undefined && !long && inline.startsWith('=')) inline = inline.slice(1); // -n=5
    if (inline === undefined) {
      const next = argv[i + 1];
      if (next === undefined || next === '--' || isOptionOfCommand(next)) throw new UsageError(`${flag} needs a value`, command);
      inline = next;
      i++;
    }
    args.values.set(name, inline);
    args.typed.set(name, flag);
  }
  if (args.positionals.length > spec.positionals.length) {
    const extra = args.positionals[spec.positionals.length];
    const hint = command === 'generate' ? ' (the prompt goes after -p)' : '';
    throw new UsageError(`unexpected argument ${JSON.stringify(extra)}${hint}`, command);
  }
  return args;
}

// -------------------------------------------------------------------------------------------
// Commands

const out = (s: string) => process.stdout.write(s);

/** A model file the user named: missing or a directory is a plain error (exit 1), not a usage error. */
function checkModelFile(file: string): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Error(code === 'ENOENT' ? `no such file: ${file}` : `cannot read ${file}: ${(e as Error).message}`);
  }
  if (st.isDirectory()) throw new Error(`${file} is a directory, not a GGUF model file`);
}

function required(args: Args, name: OptionName, what: string): string {
  const v = args.string(name);
  if (v === undefined) throw new UsageError(`${args.command} needs ${OPTIONS[name].flags[0]} ${what}`, args.command);
  return v;
}

/** Loads a model with a progress bar on stderr (only when stderr is a terminal; erased when done). */
async function load(file: string, options: LoadModelOptions): Promise<Model> {
  checkModelFile(file);
  const bar = new ProgressBar(`loading ${path.basename(file)}`);
  try {
    return await loadModel(file, { ...options, onProgress: bar.enabled ? (p) => bar.update(p.fraction, p.phase) : undefined });
  } finally {
    bar.done();
  }
}

/** Sampling options checked here, so a bad value is a usage error naming the option as typed. */
function samplingOption(args: Args, name: 'temperature' | 'topK' | 'topP' | 'seed', fallback: number | undefined): number | undefined {
  const value = args.number(name) ?? fallback;
  if (value === undefined) return undefined;
  try {
    validateSamplingOptions({ [name]: value }, args.flag(name));
  } catch (e) {
    const expected = /expected (.+?) for /.exec((e as Error).message)?.[1];
    const raw = args.string(name) ?? String(value);
    throw new UsageError(expected ? `${args.flag(name)} must be ${expected}, got ${JSON.stringify(raw)}` : (e as Error).message, args.command);
  }
  return value;
}

async function generate(args: Args): Promise<void> {
  const file = required(args, 'model', 'FILE');
  const prompt = required(args, 'prompt', 'TEXT');
  const json = args.bool('json');
  const maxTokens = args.int('maxTokens', 0, 1 << 24) ?? 128;
  const options: GenerateOptions = {
    maxTokens,
    temperature: samplingOption(args, 'temperature', 0.8),
    topK: samplingOption(args, 'topK', 40),
    topP: samplingOption(args, 'topP', 0.95),
    seed: samplingOption(args, 'seed', undefined),
  };
  const threads = args.int('threads', 0, 1024);
  const contextSize = args.int('context', 1, 1 << 24);
  const chat = args.bool('chat');
  const template = chatTemplateFile(args);
  if (template !== undefined && !chat) throw new UsageError(`${args.flag('chatTemplate')} goes with --chat`, 'generate');
  const model = await load(file, { threads, contextSize });
  try {
    let g;
    try {
      if (chat) {
        const text = model.applyChatTemplate([{ role: 'user', content: prompt }], template !== undefined ? { template } : {});
        g = model.generate(chatPromptTokens(model, text), options);
      } else g = model.generate(prompt, options);
    } catch (e) {
      // The options were checked above; what is left is the prompt against the context size.
      if (e instanceof NoChatTemplateError) throw new UsageError(`${e.message.replace(/\(applyChatTemplate.*line\)/, '(--chat-template FILE)')}`, 'generate');
      if (e instanceof RangeError) throw new UsageError(`${args.flag('prompt')}: ${e.message.replace(/^generate: /, '')} (--context sets the context size)`, 'generate');
      throw e;
    }
    // Progress of the generation, on a terminal's stderr, only when the text is not itself
    // streaming to that terminal (--json, or stdout redirected): a bar would overwrite it.
    const bar = json || !process.stdout.isTTY ? new ProgressBar('generating') : undefined;
    let n = 0;
    let first = 0;
    try {
      if (!json && !chat) out(prompt);
      for await (const chunk of g) {
        if (!json) out(chunk.text);
        if (bar?.enabled) {
          if (n++ === 0) first = performance.now();
          const rate = n > 1 ? ((n - 1) * 1000) / (performance.now() - first) : 0;
          bar.update(maxTokens ? n / maxTokens : 1, `${n}/${maxTokens} tokens, ${rate.toFixed(1)} tok/s`);
        }
      }
    } finally {
      bar?.done();
    }
    const r = await g.result;
    if (json) {
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

/** The text of --chat-template FILE (an unreadable file is an error, exit 1), or undefined. */
function chatTemplateFile(args: Args): string | undefined {
  const file = args.string('chatTemplate');
  if (file === undefined) return undefined;
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`${args.flag('chatTemplate')} ${file}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (e as Error).message}`);
  }
}

/** The embedded model has no chat template; serve gives it this one so chat requests work out of the box. */
const PLAIN_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}";

async function serve(args: Args): Promise<void> {
  const file = args.string('model');
  const host = args.string('host') ?? '127.0.0.1';
  const port = args.int('port', 0, 65535) ?? 8080;
  const apiKey = args.string('apiKey') ?? (process.env.TESSERA_API_KEY || undefined);
  if (apiKey === '') throw new UsageError(`${args.flag('apiKey')} must not be empty`, 'serve');
  const maxQueue = args.int('maxQueue', 1, 1 << 20);
  const threads = args.int('threads', 0, 1024);
  const contextSize = args.int('context', 1, 1 << 24);
  const kvPages = args.int('kvPages', 1, 1 << 26);
  const chatTemplate = chatTemplateFile(args) ?? (file === undefined ? PLAIN_TEMPLATE : undefined);
  const model = await load(file ?? demoModelPath, { threads, contextSize, kvPages });
  const server = createServer(model, { apiKey, maxQueue, chatTemplate });
  let url: string;
  try {
    url = (await server.listen(port, host)).url;
  } catch (e) {
    await model.dispose();
    throw new Error(`cannot listen on ${host}:${port}: ${(e as Error).message}`);
  }
  const info = model.info;
  process.stderr.write(
    `tessera serve: ${path.basename(info.path)} (context ${info.contextSize}, ${info.kvPages} KV pages) on ${url}/v1` +
      `${apiKey ? ', API key required' : ''}; /health, /metrics; Ctrl-C stops\n`,
  );
  const signal = await new Promise<string>((resolve) => {
    process.once('SIGINT', () => resolve('SIGINT'));
    process.once('SIGTERM', () => resolve('SIGTERM'));
  });
  process.stderr.write(`tessera serve: ${signal}: finishing running requests (10 s at most; again to quit now)\n`);
  const quit = () => process.exit(1);
  process.once('SIGINT', quit);
  process.once('SIGTERM', quit);
  await server.close({ timeoutMs: 10_000 });
  await model.dispose();
  process.stderr.write('tessera serve: stopped\n');
}

function inspect(args: Args): void {
  const file = args.positionals[0];
  if (file === undefined) throw new UsageError('inspect needs a FILE', 'inspect');
  const json = args.bool('json');
  checkModelFile(file);
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
    architecture: arch,
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
  out(`${file}: GGUF v${g.version}, ${mib(g.fileSize)}, ${g.tensors.length} tensors, architecture ${arch}\n`);
  for (const [k, v] of Object.entries(metadata)) out(`  ${k} = ${typeof v === 'string' ? JSON.stringify(v) : String(v)}\n`);
  out('tensor types:\n');
  for (const [t, s] of Object.entries(byType)) out(`  ${t}: ${s.count} tensors, ${mib(s.bytes)}\n`);
  out(`memory: weights ${mib(g.fileSize)} (memory-mapped) + f16 KV cache for ${ctx} tokens ${mib(kvBytes)} = ${mib(report.memory.total)}\n`);
}

/**
 * How tokenize shows a token: special tokens (BOS, EOS, <unk>, <|im_end|>...) by their name in the
 * vocabulary, unquoted (their piece is empty); byte tokens that are not a character on their own
 * by name (<0xE2>); every other token as its quoted piece.
 */
function showToken(tok: Tokenizer, id: number): string {
  if (tok.isSpecial(id)) {
    // Some vocabularies wrap the name in newlines (llama2.c exports have "\n<s>\n").
    const name = tok.tokenText(id).trim();
    return name === '' || /[\s\p{Cc}]/u.test(name) ? JSON.stringify(tok.tokenText(id)) : name;
  }
  const piece = tok.tokenToPiece(id);
  if (tok.tokenAttributes(id) & TokenAttr.BYTE && piece === '\ufffd') return tok.tokenText(id);
  return JSON.stringify(piece);
}

function tokenize(args: Args): void {
  const file = required(args, 'model', 'FILE');
  const fromFlag = args.string('prompt');
  if (fromFlag !== undefined && args.positionals.length > 0) throw new UsageError(`give TEXT once: as an argument or after ${args.flag('prompt')}, not both`, 'tokenize');
  const text = fromFlag ?? args.positionals[0];
  if (text === undefined) throw new UsageError('tokenize needs TEXT', 'tokenize');
  checkModelFile(file);
  // The tokenizer lives in the GGUF metadata: no need to map or repack the weights.
  const tok = Tokenizer.fromGgufFile(file);
  const ids = Array.from(tok.encode(text));
  if (args.bool('json')) out(`${JSON.stringify(ids)}\n`);
  else for (const id of ids) out(`${id}\t${showToken(tok, id)}\n`);
}

async function demo(args: Args): Promise<void> {
  const threads = args.int('threads', 0, 1024);
  if (args.bool('ops')) {
    if (threads !== undefined) ops.setThreads(threads);
    runDemo({ log: (line) => out(`${line}\n`) });
    return;
  }
  const info = nativeInfo();
  out(`tessera ${version} demo: embedded stories260K (Q8_0), ${info.device} backend, ${info.isa} kernels\n\n`);
  // The embedded model loads in milliseconds: no progress bar.
  // Default threads: each loop of this tiny model sizes itself to its work, so it runs as fast as on one thread.
  const model = await loadModel(demoModelPath, { threads, contextSize: 512, kvPages: 256 });
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

async function bench(args: Args): Promise<void> {
  const file = args.string('model') ?? demoModelPath;
  const genTokens = args.int('maxTokens', 1, 1 << 16) ?? 64;
  const rawList = args.string('concurrency') ?? '1,4,16';
  const concurrency = rawList.split(',').map((x) => (/^\s*\d+\s*$/.test(x) ? Number(x) : NaN));
  if (!concurrency.every((c) => Number.isSafeInteger(c) && c >= 1 && c <= 4096)) {
    throw new UsageError(`${args.flag('concurrency')} must be a comma-separated list of integers in [1, 4096], got ${JSON.stringify(rawList)}`, args.command);
  }
  const decodePrompt = 32;
  checkModelFile(file);
  const gguf = readGguf(file);
  const arch = String(gguf.metadata['general.architecture'] ?? '');
  const trained = Number(gguf.metadata[`${arch}.context_length`] ?? 0) || 4096;
  const promptTokens = args.int('promptTokens', 1, 1 << 20) ?? Math.min(512, trained - 1);
  const contextSize = Math.min(trained, Math.max(promptTokens + 1, decodePrompt + genTokens));
  if (promptTokens + 1 > trained) throw new UsageError(`${args.flag('promptTokens')} must be below the model's context (${trained}), got ${promptTokens}`, args.command);
  if (decodePrompt + genTokens > trained) throw new UsageError(`${args.flag('maxTokens')} must be at most ${trained - decodePrompt} for this model, got ${genTokens}`, args.command);
  // Pages for every decode sequence at once, so the figures measure batching, not preemption.
  const kvPages = Math.max(Math.ceil(contextSize / 16), Math.max(...concurrency) * Math.ceil((decodePrompt + genTokens) / 16));
  const model = await load(file, { threads: args.int('threads', 0, 1024), contextSize, kvPages, maxSequences: Math.max(...concurrency) });
  const bar = new ProgressBar('bench');
  try {
    const rows = await runBench(model, { promptTokens, genTokens, decodePromptTokens: decodePrompt, concurrency, onProgress: (f, label) => bar.update(f, label) });
    bar.done();
    const info = nativeInfo();
    if (args.bool('json')) {
      out(`${JSON.stringify({ model: file, device: model.info.device, isa: info.isa, threads: model.info.threads, rows })}\n`);
    } else {
      out(`${path.basename(file)}: ${model.info.device}, ${info.isa} kernels, ${model.info.threads} thread${model.info.threads === 1 ? "" : "s"}\n${formatBench(rows)}\n`);
    }
  } finally {
    bar.done();
    await model.dispose();
  }
}

function doctor(args: Args): void {
  const info = nativeInfo();
  const report = { version, node: process.version, platform: `${process.platform}-${process.arch}`, ...info, backends: backends() };
  if (args.bool('json')) {
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

// -------------------------------------------------------------------------------------------

async function main(argv: string[]): Promise<void> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h') {
    out(`${USAGE}\n`);
    return;
  }
  if (command === '--version' || command === '-v') {
    out(`${version}\n`);
    return;
  }
  if (command === 'help') {
    const topic = rest[0];
    if (topic === undefined) out(`${USAGE}\n`);
    else if (Object.hasOwn(COMMANDS, topic)) out(`${commandUsage(topic)}\n`);
    else throw new UsageError(`unknown command ${JSON.stringify(topic)}`);
    return;
  }
  if (!Object.hasOwn(COMMANDS, command)) {
    throw new UsageError(command.startsWith('-') ? `${command} before a command: options go after it` : `unknown command ${JSON.stringify(command)}`);
  }
  // --help anywhere before `--` wins over everything else on the line.
  const end = rest.indexOf('--');
  if ((end < 0 ? rest : rest.slice(0, end)).some((a) => a === '-h' || a === '--help')) {
    out(`${commandUsage(command)}\n`);
    return;
  }
  await COMMANDS[command].run(parse(command, rest));
}

if (require.main === module) {
  // `tessera generate ... | head` closes stdout early: stop quietly.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code === 'EPIPE') process.exit(0);
    throw err;
  });
  main(process.argv.slice(2)).catch((err: Error) => {
    if (err instanceof UsageError) {
      process.stderr.write(`tessera: ${err.message}\n\n${err.command ? commandUsage(err.command) : USAGE}\n`);
      process.exit(2);
    }
    process.stderr.write(`tessera: ${err.message}\n`);
    process.exit(1);
  });
}
