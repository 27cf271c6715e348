// The tessera command line, run as a user runs it (node dist/cli.js; build with npm run build:ts):
// generate (text and --json) against the library's own output, inspect, tokenize (special tokens
// by name), demo, --version, per-command --help, exit code 2 with the command's usage for every
// usage error (options named as typed), exit 1 for a missing or corrupt model file, and no
// progress bar or escape codes on a stderr that is not a terminal. Also the progress bar itself
// against a fake terminal.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { loadModel, readGguf, type Model } from '../dist/index.js';
import { ProgressBar } from '../dist/progress.js';
import { Tokenizer } from '../dist/tokenizer/index.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CLI = path.join(ROOT, 'dist', 'cli.js');
const MODEL = path.join(ROOT, 'models', 'stories260K-q8_0.gguf');
const VERSION = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const PROMPT = 'Once upon a time';

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Every run's stderr, checked at the end for escape codes and carriage returns. */
const stderrs: { args: string[]; stderr: string }[] = [];

function cli(...args: string[]): Run {
  const env: NodeJS.ProcessEnv = { ...process.env, TERM: 'xterm-256color' }; // a terminal type, but stderr is a pipe
  delete env.TESSERA_DEVICE;
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: ROOT, env, encoding: 'utf8', timeout: 60000 });
  stderrs.push({ args, stderr: r.stderr });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

let tmp: string;
let model: Model;

beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-cli-'));
  model = await loadModel(MODEL, { threads: 1, contextSize: 512, kvPages: 64 });
});

afterAll(async () => {
  await model?.dispose();
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('version and help', () => {
  it('--version and -v print the package version', () => {
    for (const flag of ['--version', '-v']) {
      const r = cli(flag);
      expect(r.status).toBe(0);
      expect(r.stdout).toBe(`${VERSION}\n`);
      expect(r.stderr).toBe('');
    }
  });

  it('COMMAND --help / -h / help COMMAND print that command usage and exit 0 without running it', () => {
    for (const command of ['generate', 'bench', 'inspect', 'tokenize', 'demo', 'doctor']) {
      const r = cli(command, '--help');
      expect(r.status, command).toBe(0);
      expect(r.stderr).toBe('');
      expect(r.stdout).toMatch(new RegExp(`^Usage:\\n  tessera ${command}`));
      // Only that command.
      for (const other of ['generate', 'bench', 'inspect', 'tokenize', 'demo', 'doctor']) {
        if (other !== command) expect(r.stdout).not.toContain(`tessera ${other}`);
      }
      expect(cli(command, '-h').stdout).toBe(r.stdout);
      expect(cli('help', command).stdout).toBe(r.stdout);
    }
    // generate's options are listed, in both spellings.
    const g = cli('generate', '-m', MODEL, '-p', PROMPT, '--help');
    expect(g.status).toBe(0);
    expect(g.stdout).toContain('-n, --max-tokens N');
    expect(g.stdout).toContain('-m, --model FILE');
    expect(g.stdout).not.toContain(PROMPT); // it did not generate
  });

  it('no command, help and --help print the overall usage', () => {
    const r = cli();
    expect(r.status).toBe(0);
    for (const command of ['generate', 'inspect', 'tokenize', 'demo', 'doctor']) expect(r.stdout).toContain(`tessera ${command}`);
    expect(cli('help').stdout).toBe(r.stdout);
    expect(cli('--help').stdout).toBe(r.stdout);
  });
});

describe('generate', () => {
  const args = ['generate', '-m', MODEL, '-p', PROMPT, '-n', '20', '--temperature', '0', '--threads', '1'];

  it('streams the prompt and then the same greedy continuation as the library', async () => {
    const r = cli(...args);
    expect(r.stderr).not.toMatch(/^tessera:/m);
    expect(r.status).toBe(0);
    const expected = await model.complete(PROMPT, { maxTokens: 20, temperature: 0 });
    expect(expected.text.length).toBeGreaterThan(0);
    expect(r.stdout).toBe(`${PROMPT}${expected.text}\n`);
    expect(r.stderr).toMatch(/^\[\d+ prompt tokens, \d+ generated \((length|stop)\); prompt [\d.]+ ms, [\d.]+ tokens\/s\]\n$/);
    // Deterministic: a second run prints the same text.
    expect(cli(...args).stdout).toBe(r.stdout);
  });

  it('--max-tokens and --model/--prompt are the long forms of -n, -m, -p', () => {
    const short = cli(...args);
    const long = cli('generate', '--model', MODEL, '--prompt', PROMPT, '--max-tokens', '20', '--temperature', '0', '--threads', '1');
    expect(long.status).toBe(0);
    expect(long.stdout).toBe(short.stdout);
    const inline = cli('generate', `--model=${MODEL}`, `-p${PROMPT}`, '-n=20', '--temperature=0', '--threads', '1');
    expect(inline.status).toBe(0);
    expect(inline.stdout).toBe(short.stdout);
  });

  it('a prompt may start with "-" (an option value is the next argument, whatever it looks like)', () => {
    const r = cli('generate', '-m', MODEL, '-p', '-nice', '-n', '3', '--temperature', '0', '--threads', '1');
    expect(r.status).toBe(0);
    expect(r.stdout.startsWith('-nice')).toBe(true);
    expect(r.stdout.length).toBeGreaterThan('-nice\n'.length);
  });

  it('--json prints one JSON object and nothing else on stdout', async () => {
    const r = cli(...args, '--json');
    expect(r.status).toBe(0);
    expect(r.stdout.endsWith('}\n')).toBe(true);
    expect(r.stdout.trim().split('\n')).toHaveLength(1);
    const j = JSON.parse(r.stdout) as { prompt_tokens: number; tokens: number[]; text: string; finish_reason: string; timings: Record<string, number> };
    expect(j.tokens.length).toBeGreaterThan(0);
    expect(j.tokens.length).toBeLessThanOrEqual(20);
    expect(['length', 'stop']).toContain(j.finish_reason);
    expect(j.prompt_tokens).toBe(model.tokenize(PROMPT).length);
    const expected = await model.complete(PROMPT, { maxTokens: 20, temperature: 0 });
    expect(j.tokens).toEqual(expected.tokens);
    expect(j.text).toBe(expected.text);
    expect(typeof j.timings.tokensPerSecond).toBe('number');
    expect(r.stderr).toBe('');
  });
});

describe('inspect', () => {
  it('prints the architecture and the tensors (text)', () => {
    const g = readGguf(MODEL);
    const r = cli('inspect', MODEL);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain(`${g.tensors.length} tensors, architecture llama`);
    expect(r.stdout).toContain('general.architecture = "llama"');
    expect(r.stdout).toMatch(/tensor types:\n {2}\w+: \d+ tensors/);
    expect(r.stdout).toMatch(/^memory: weights [\d.]+ MiB/m);
  });

  it('--json: architecture, tensor counts by type that add up, metadata', () => {
    const g = readGguf(MODEL);
    const r = cli('inspect', MODEL, '--json');
    expect(r.status).toBe(0);
    const j = JSON.parse(r.stdout) as {
      architecture: string;
      tensors: number;
      tensorTypes: Record<string, { count: number; bytes: number }>;
      metadata: Record<string, unknown>;
      fileSize: number;
    };
    expect(j.architecture).toBe('llama');
    expect(j.metadata['general.architecture']).toBe('llama');
    expect(j.tensors).toBe(g.tensors.length);
    expect(Object.values(j.tensorTypes).reduce((a, t) => a + t.count, 0)).toBe(g.tensors.length);
    expect(j.tensorTypes.q8_0?.count ?? j.tensorTypes.Q8_0?.count).toBeGreaterThan(0);
    expect(j.fileSize).toBe(fs.statSync(MODEL).size);
  });
});

describe('tokenize', () => {
  const text = 'Hello world';

  it('--json prints the ids the library gives', () => {
    const r = cli('tokenize', '-m', MODEL, text, '--json');
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual(model.tokenize(text));
    expect(cli('tokenize', '-m', MODEL, '-p', text, '--json').stdout).toBe(r.stdout);
  });

  it('shows one id and piece per line, BOS by its name rather than ""', () => {
    const ids = model.tokenize(text);
    const tok = Tokenizer.fromGgufFile(MODEL);
    expect(ids[0]).toBe(tok.bos);
    const r = cli('tokenize', '-m', MODEL, text);
    expect(r.status).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    expect(lines.map((l) => Number(l.split('\t')[0]))).toEqual(ids);
    expect(lines[0]).toBe(`${tok.bos}\t<s>`);
    expect(r.stdout).not.toContain('\t""');
    expect(lines.slice(1).map((l) => JSON.parse(l.split('\t')[1]) as string).join('')).toBe(` ${text}`);
  });
});

describe('demo', () => {
  it('tells stories with the embedded model, alone and batched', () => {
    const r = cli('demo', '--threads', '1');
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('demo: embedded stories260K');
    expect(r.stdout).toMatch(/\nOnce upon a time\S*\s+\S+/);
    expect(r.stdout).toMatch(/\[\d+ tokens at \d+ tokens\/s, finish: (length|stop)\]/);
    for (const p of ['The little dog', 'Tom and Sue went to', 'One day, a bird', 'The sun was hot and']) expect(r.stdout).toContain(`\n- ${p}`);
    expect(r.stdout).toMatch(/\[4 requests, \d+ tokens in \d+ ms/);
  });
});

describe('bench', () => {
  it('prints a table of prefill and decode rows for the embedded model', () => {
    const r = cli('bench', '--threads', '1', '--prompt-tokens', '64', '-n', '8', '--concurrency', '1,3');
    expect(r.status, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^stories260K-q8_0\.gguf: cpu, \w+ kernels, 1 thread$/);
    expect(lines[1]).toMatch(/^case\s+sequences\s+prompt\s+generated\s+tokens\/s\s+TTFT mean ms\s+TTFT max ms$/);
    expect(lines.slice(2).map((l) => l.split(/\s+/).slice(0, 4))).toEqual([
      ['prefill', '1', '64', '1'],
      ['decode', '1', '32', '8'],
      ['decode', '3', '32', '8'],
    ]);
  });

  it('--json gives every row with positive rates', () => {
    const r = cli('bench', '-m', MODEL, '--threads', '1', '--prompt-tokens', '32', '-n', '4', '--concurrency', '2', '--json');
    expect(r.status, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout) as { rows: { case: string; sequences: number; tokensPerSecond: number; ttftMeanMs: number }[] };
    expect(j.rows.map((x) => [x.case, x.sequences])).toEqual([['prefill', 1], ['decode', 2]]);
    for (const row of j.rows) {
      expect(row.tokensPerSecond).toBeGreaterThan(0);
      expect(row.ttftMeanMs).toBeGreaterThan(0);
    }
  });
});

describe('usage errors: exit 2, the message names the option as typed, then the command usage', () => {
  const gen = ['generate', '-m', MODEL, '-p', PROMPT];
  const cases: [string, string[], string, string][] = [
    ['-n -5', [...gen, '-n', '-5'], '-n must be an integer >= 0, got "-5"', 'generate'],
    ['--max-tokens -5', [...gen, '--max-tokens', '-5'], '--max-tokens must be an integer >= 0, got "-5"', 'generate'],
    ['-n abc', [...gen, '-n', 'abc'], '-n must be an integer >= 0, got "abc"', 'generate'],
    ['--top-p 2', [...gen, '--top-p', '2'], '--top-p must be a number in (0, 1], got "2"', 'generate'],
    ['--temperature -1', [...gen, '--temperature', '-1'], '--temperature must be a finite number >= 0, got "-1"', 'generate'],
    ['--top-k 1.5', [...gen, '--top-k', '1.5'], '--top-k must be an integer >= 0, got "1.5"', 'generate'],
    ['--threads abc', [...gen, '--threads', 'abc'], '--threads must be an integer >= 0, got "abc"', 'generate'],
    ['unknown option', [...gen, '--bogus'], 'unknown option --bogus', 'generate'],
    ['option of another command', [...gen, '--ops'], '--ops is not an option of tessera generate', 'generate'],
    ['missing -m', ['generate', '-p', PROMPT], 'generate needs -m FILE', 'generate'],
    ['missing -p', ['generate', '-m', MODEL], 'generate needs -p TEXT', 'generate'],
    ['-p without a value', ['generate', '-m', MODEL, '-p'], '-p needs a value', 'generate'],
    ['prompt without -p', ['generate', '-m', MODEL, PROMPT], `unexpected argument "${PROMPT}" (the prompt goes after -p)`, 'generate'],
    [
      'prompt longer than --context',
      [...gen, '--context', '2'],
      `-p: prompt has ${Tokenizer.fromGgufFile(MODEL).encode(PROMPT).length} tokens, more than the context size (2) (--context sets the context size)`,
      'generate',
    ],
    ['inspect without a file', ['inspect'], 'inspect needs a FILE', 'inspect'],
    ['tokenize without text', ['tokenize', '-m', MODEL], 'tokenize needs TEXT', 'tokenize'],
    ['tokenize without -m', ['tokenize', 'hi'], 'tokenize needs -m FILE', 'tokenize'],
    ['demo --threads -1', ['demo', '--threads', '-1'], '--threads must be an integer >= 0, got "-1"', 'demo'],
    ['doctor --json=1', ['doctor', '--json=1'], '--json takes no value', 'doctor'],
    ['bench --concurrency 0', ['bench', '--concurrency', '0'], '--concurrency must be a comma-separated list of integers in [1, 4096], got "0"', 'bench'],
    ['bench --prompt-tokens past the context', ['bench', '--prompt-tokens', '512'], "--prompt-tokens must be below the model's context (512), got 512", 'bench'],
  ];
  it.each(cases)('%s', (_, args, message, command) => {
    const r = cli(...args);
    expect(r.status).toBe(2);
    expect(r.stdout).toBe(''); // nothing ran
    const [first, usage] = r.stderr.split('\n\nUsage:\n');
    expect(first).toBe(`tessera: ${message}`);
    expect(usage).toMatch(new RegExp(`^  tessera ${command} `));
  });

  it('unknown command (and help for one): exit 2 with the overall usage', () => {
    for (const args of [['bogus'], ['help', 'bogus']]) {
      const r = cli(...args);
      expect(r.status).toBe(2);
      expect(r.stdout).toBe('');
      expect(r.stderr).toMatch(/^tessera: unknown command "bogus"\n\ntessera \S+: LLM inference for Node.js\n\nUsage:\n/);
      expect(r.stderr).toContain('tessera generate');
      expect(r.stderr).toContain('tessera doctor');
    }
  });
});

describe('model file errors are not usage errors: exit 1, a clear message, no usage', () => {
  it('a missing model file', () => {
    for (const args of [
      ['generate', '-m', 'missing.gguf', '-p', PROMPT],
      ['tokenize', '-m', 'missing.gguf', 'hi'],
      ['inspect', 'missing.gguf'],
    ]) {
      const r = cli(...args);
      expect(r.status, args.join(' ')).toBe(1);
      expect(r.stderr).toBe('tessera: no such file: missing.gguf\n');
      expect(r.stdout).toBe('');
    }
  });

  it('a directory, a file that is not GGUF, a truncated GGUF', () => {
    const dir = cli('generate', '-m', tmp, '-p', PROMPT);
    expect(dir.status).toBe(1);
    expect(dir.stderr).toBe(`tessera: ${tmp} is a directory, not a GGUF model file\n`);

    const notGguf = cli('inspect', path.join(ROOT, 'package.json'));
    expect(notGguf.status).toBe(1);
    expect(notGguf.stderr).toMatch(/^tessera: .*package\.json: bad magic .*not a GGUF file\n$/);

    const truncated = path.join(tmp, 'truncated.gguf');
    fs.writeFileSync(truncated, fs.readFileSync(MODEL).subarray(0, 200000));
    for (const args of [['generate', '-m', truncated, '-p', PROMPT], ['inspect', truncated]]) {
      const r = cli(...args);
      expect(r.status, args.join(' ')).toBe(1);
      expect(r.stderr).toMatch(/^tessera: .*truncated\.gguf: .*out of file bounds.*\n$/);
      expect(r.stderr).not.toContain('Usage:');
    }
  });
});

describe('progress', () => {
  it('nothing but plain text reached a stderr that is not a terminal (no bar, no \\r, no escapes)', () => {
    expect(stderrs.length).toBeGreaterThan(20);
    for (const { args, stderr } of stderrs) {
      expect(stderr, args.join(' ')).not.toMatch(/[\r\x1b]/);
      expect(stderr, args.join(' ')).not.toMatch(/loading|generating|\[#|#\.|\.\.\.\.\]/);
    }
  });

  describe('ProgressBar', () => {
    let term: string | undefined;
    beforeEach(() => {
      term = process.env.TERM;
      process.env.TERM = 'xterm-256color'; // CI may run with TERM=dumb, where the bar stays off
    });
    afterEach(() => {
      vi.useRealTimers();
      if (term === undefined) delete process.env.TERM;
      else process.env.TERM = term;
    });

    function fakeStream(isTTY: boolean) {
      const writes: string[] = [];
      return { writes, stream: { isTTY, columns: 100, write: (s: string) => writes.push(s) } };
    }

    it('on a terminal: appears after the delay, redraws in place, erases its line when done', () => {
      vi.useFakeTimers();
      const { writes, stream } = fakeStream(true);
      const bar = new ProgressBar('loading m.gguf', stream, { delayMs: 300, intervalMs: 100 });
      expect(bar.enabled).toBe(true);
      bar.update(0.25, 'repacking');
      vi.advanceTimersByTime(200);
      expect(writes).toEqual([]); // quick jobs show nothing
      vi.advanceTimersByTime(200);
      expect(writes.length).toBeGreaterThan(0);
      const last = writes[writes.length - 1];
      expect(last.startsWith('\r\x1b[2K')).toBe(true);
      expect(last).toContain('loading m.gguf [');
      expect(last).toContain('25% repacking');
      expect(last.length).toBeLessThan(100 + 5);
      bar.update(0.5, '10/20 tokens');
      vi.advanceTimersByTime(100);
      expect(writes[writes.length - 1]).toContain('50% 10/20 tokens');
      const n = writes.length;
      bar.done();
      expect(writes.slice(n)).toEqual(['\r\x1b[2K']);
      vi.advanceTimersByTime(1000);
      expect(writes.length).toBe(n + 1); // stopped
    });

    it('not a terminal: writes nothing at all', () => {
      vi.useFakeTimers();
      const { writes, stream } = fakeStream(false);
      const bar = new ProgressBar('loading m.gguf', stream, { delayMs: 0 });
      expect(bar.enabled).toBe(false);
      bar.update(0.5, 'repacking');
      vi.advanceTimersByTime(5000);
      bar.done();
      expect(writes).toEqual([]);
    });
  });
});
