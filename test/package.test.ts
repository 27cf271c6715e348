// Packaging: the one native source list matches the tree, the package loads as CommonJS and as an
// ES module, its types compile for consumers (nodenext and commonjs), backends() reports what is
// available, and TESSERA_DEVICE is honoured.
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { activeDevice, backends, nativeInfo } from '../dist/index.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const FIXTURES = path.join(ROOT, 'test', 'fixtures');

function run(cmd: string, args: string[], opts: { env?: Record<string, string | undefined>; cwd?: string } = {}): SpawnSyncReturns<string> {
  const env: Record<string, string | undefined> = { ...process.env };
  for (const [k, v] of Object.entries(opts.env ?? {})) {
    if (v === undefined) delete env[k];
    else env[k] = v;
  }
  return spawnSync(cmd, args, { cwd: opts.cwd ?? ROOT, env: env as NodeJS.ProcessEnv, encoding: 'utf8', timeout: 60000 });
}

/** Runs a CommonJS snippet in a fresh node (TESSERA_DEVICE unset unless given). */
function node(code: string, env: Record<string, string | undefined> = {}): SpawnSyncReturns<string> {
  return run(process.execPath, ['-e', code], { env: { TESSERA_DEVICE: undefined, ...env } });
}

/** Files under dir (recursive) ending in ext, as repo-relative POSIX paths, sorted. */
function filesUnder(dir: string, ext: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    if (!fs.existsSync(d)) return;
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile() && e.name.endsWith(ext)) out.push(path.relative(ROOT, p).split(path.sep).join('/'));
    }
  };
  walk(path.join(ROOT, dir));
  return out.sort();
}

describe('native/sources.json is the one source list', () => {
  const sources = JSON.parse(fs.readFileSync(path.join(ROOT, 'native', 'sources.json'), 'utf8')) as Record<string, unknown>;
  const group = (g: string): string[] => {
    expect(Array.isArray(sources[g]), `group ${g}`).toBe(true);
    return sources[g] as string[];
  };

  // Every translation unit under native/ belongs to exactly one group: .cc outside native/test to
  // core or napi (native/cpu, native/ops, native/ref, native/napi and any new directory), .cu
  // outside native/test and native/bench to cuda, native/test's own files to test / *_test (the
  // .cu ones to cuda_*_test groups), native/bench's to cuda_bench.
  const allOf = (ext: string) => filesUnder('native', ext);
  const isTest = (f: string) => f.startsWith('native/test/') || f.startsWith('native/bench/');

  it('core + napi list exactly the .cc files under native/ (cpu, ops, ref, napi, ...)', () => {
    const listed = [...group('core'), ...group('napi')];
    expect(new Set(listed).size, 'no duplicates').toBe(listed.length);
    const onDisk = allOf('.cc').filter((f) => !isTest(f));
    for (const d of ['native/cpu', 'native/ops', 'native/ref', 'native/napi']) {
      expect(onDisk.some((f) => f.startsWith(d + '/')), d).toBe(true);
    }
    expect([...listed].sort()).toEqual(onDisk);
    expect(group('napi')).toContain('native/napi/addon.cc');
    expect(group('napi').every((f) => f.startsWith('native/napi/'))).toBe(true);
  });

  it('cuda lists exactly the .cu files under native/cuda (and no other .cu outside native/test)', () => {
    const listed = group('cuda');
    expect(new Set(listed).size).toBe(listed.length);
    expect([...listed].sort()).toEqual(allOf('.cu').filter((f) => !isTest(f)));
    expect(listed.every((f) => f.startsWith('native/cuda/'))).toBe(true);
    // No CUDA source leaks into the CPU groups.
    expect([...group('core'), ...group('napi')].filter((f) => f.endsWith('.cu'))).toEqual([]);
  });

  it('the test groups list exactly the sources under native/test', () => {
    const testGroups = Object.keys(sources).filter((k) => k === 'test' || (k.endsWith('_test') && !k.startsWith('cuda_')));
    expect(testGroups.flatMap(group).sort()).toEqual(allOf('.cc').filter(isTest));
    const cudaGroups = Object.keys(sources).filter((k) => k.startsWith('cuda_'));
    expect(cudaGroups.flatMap(group).sort()).toEqual(allOf('.cu').filter(isTest));
    expect(group('cuda_bench').every((f) => f.startsWith('native/bench/'))).toBe(true);
  });

  it('every listed file of every group exists', () => {
    for (const [name, files] of Object.entries(sources)) {
      if (!Array.isArray(files)) continue;
      for (const f of files as string[]) expect(fs.existsSync(path.join(ROOT, f)), `${name}: ${f}`).toBe(true);
    }
  });

  it('`node scripts/sources.js core napi` prints the same list, and binding.gyp and CMakeLists.txt read it', () => {
    const r = run(process.execPath, ['scripts/sources.js', 'core', 'napi']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim().split(/\s+/)).toEqual([...group('core'), ...group('napi')]);
    const cuda = run(process.execPath, ['scripts/sources.js', 'cuda']);
    expect(cuda.stdout.trim().split(/\s+/).filter(Boolean)).toEqual(group('cuda'));
    const bad = run(process.execPath, ['scripts/sources.js', 'nope']);
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/nope/);

    const gyp = fs.readFileSync(path.join(ROOT, 'binding.gyp'), 'utf8');
    expect(gyp).toContain('node scripts/sources.js core napi');
    expect(gyp).not.toMatch(/native\/[\w/]+\.cc/); // no hand-written source list
    const cmake = fs.readFileSync(path.join(ROOT, 'CMakeLists.txt'), 'utf8');
    expect(cmake).toContain('native/sources.json');
    expect(cmake).not.toMatch(/native\/(cpu|ops|ref|napi|cuda)\/[\w/]+\.(cc|cu)/);
  });
});

describe('loading', () => {
  it("require('tessera-llm') (CommonJS) works", () => {
    const r = node(`
      const t = require(${JSON.stringify(ROOT)});
      const x = t.Tensor.from(new Float32Array([1, 2, 3, 4]), [1, 4]);
      const y = t.ops.softmax(x);
      console.log(JSON.stringify({ keys: Object.keys(t).sort(), sum: y.toArray().reduce((a, b) => a + b, 0), version: t.version }));
    `);
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as { keys: string[]; sum: number; version: string };
    expect(out.keys).toEqual(expect.arrayContaining(['Tensor', 'ops', 'backends', 'DisposedError', 'nativeInfo', 'version', 'DTYPES']));
    expect(out.sum).toBeCloseTo(1, 6);
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
    expect(out.version).toBe(pkg.version);
  });

  it("require('tessera-llm') by name resolves through the exports map (self-reference)", () => {
    const r = node(`const t = require('tessera-llm'); console.log(require.resolve('tessera-llm'), typeof t.ops.matmul);`);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain(path.join(ROOT, 'dist', 'index.js'));
    expect(r.stdout).toContain('function');
  });

  it("ESM: import t, { ops } from 'tessera-llm'", () => {
    const code = `
      import t, { ops, Tensor, backends, DisposedError } from 'tessera-llm';
      const y = ops.matmul(Tensor.from(new Float32Array([1, 2]), [1, 2]), Tensor.from(new Float32Array([3, 4]), [1, 2]));
      console.log(JSON.stringify({
        y: y.toArray(), sameOps: t.ops === ops, sameTensor: t.Tensor === Tensor,
        cpu: backends()[0].name, disposed: new DisposedError('x') instanceof TypeError,
        url: import.meta.resolve('tessera-llm'),
      }));
    `;
    const r = run(process.execPath, ['--input-type=module', '-e', code], { env: { TESSERA_DEVICE: undefined } });
    expect(r.status, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(out).toMatchObject({ y: [11], sameOps: true, sameTensor: true, cpu: 'cpu', disposed: true });
    expect(out.url).toMatch(/dist\/index\.mjs$/);
  });

  it('every CommonJS export is a named ES export', () => {
    const code = `
      import * as esm from 'tessera-llm';
      import { createRequire } from 'node:module';
      const cjs = createRequire(import.meta.url)('tessera-llm');
      const missing = Object.keys(cjs).filter((k) => k !== '__esModule' && !(k in esm));
      console.log(JSON.stringify(missing));
    `;
    const r = run(process.execPath, ['--input-type=module', '-e', code]);
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual([]);
  });
});

// -------------------------------------------------------------------------------------------
// Types: compile the fixtures as a separate consumer package that depends on tessera-llm.

interface TscError {
  file: string;
  line: number;
  code: string;
  text: string;
}

function tsc(dir: string, tsconfig: string): { status: number | null; errors: TscError[]; output: string } {
  const bin = path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc');
  const r = run(process.execPath, [bin, '-p', tsconfig, '--pretty', 'false'], { cwd: dir });
  const output = r.stdout + r.stderr;
  const errors: TscError[] = [];
  for (const m of output.matchAll(/^(.+?)\((\d+),\d+\): error (TS\d+): (.*)$/gm)) {
    errors.push({ file: path.basename(m[1]), line: Number(m[2]), code: m[3], text: m[4] });
  }
  return { status: r.status, errors, output };
}

/** Lines (1-based) after each `// @expect-error TSxxxx` marker, with the code. */
function expectedErrors(file: string): { line: number; code: string }[] {
  const lines = fs.readFileSync(file, 'utf8').split('\n');
  const out: { line: number; code: string }[] = [];
  lines.forEach((l, i) => {
    const m = /\/\/ @expect-error (TS\d+)/.exec(l);
    if (m) out.push({ line: i + 2, code: m[1] });
  });
  return out;
}

describe('types', () => {
  let dir: string;

  beforeAll(() => {
    // A throwaway consumer package inside the repo: node_modules/tessera-llm links to the repo root.
    dir = fs.mkdtempSync(path.join(FIXTURES, '.consumer-'));
    fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'tessera-consumer', private: true }));
    fs.mkdirSync(path.join(dir, 'node_modules'));
    fs.symlinkSync(ROOT, path.join(dir, 'node_modules', 'tessera-llm'), 'dir');
    for (const f of ['consumer.ts', 'consumer-esm.mts', 'consumer-bad.ts']) fs.copyFileSync(path.join(FIXTURES, f), path.join(dir, f));
    const common = {
      target: 'es2022', lib: ['es2022', 'esnext.disposable'], strict: true, noEmit: true, skipLibCheck: false,
      types: ['node'], typeRoots: [path.join(ROOT, 'node_modules', '@types')],
    };
    fs.writeFileSync(
      path.join(dir, 'tsconfig.nodenext.json'),
      JSON.stringify({ compilerOptions: { ...common, module: 'nodenext', moduleResolution: 'nodenext' }, files: ['consumer.ts', 'consumer-esm.mts', 'consumer-bad.ts'] }),
    );
    fs.writeFileSync(
      path.join(dir, 'tsconfig.commonjs.json'),
      JSON.stringify({ compilerOptions: { ...common, module: 'commonjs', moduleResolution: 'node10', esModuleInterop: true }, files: ['consumer.ts', 'consumer-bad.ts'] }),
    );
  });

  afterAll(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  for (const config of ['nodenext', 'commonjs']) {
    it(`consumers compile with module ${config}; wrong usages do not`, () => {
      const r = tsc(dir, `tsconfig.${config}.json`);
      const good = r.errors.filter((e) => e.file !== 'consumer-bad.ts');
      expect(good, r.output).toEqual([]);
      const want = expectedErrors(path.join(FIXTURES, 'consumer-bad.ts'));
      expect(want.length).toBeGreaterThanOrEqual(5);
      const bad = r.errors.filter((e) => e.file === 'consumer-bad.ts');
      for (const w of want) {
        expect(bad.some((e) => e.line === w.line && e.code === w.code), `expected ${w.code} at consumer-bad.ts:${w.line}\n${r.output}`).toBe(true);
      }
      expect(bad.every((e) => want.some((w) => w.line === e.line)), `unexpected errors:\n${r.output}`).toBe(true);
      expect(r.status).not.toBe(0);
    });
  }

  it('the published declarations resolve per condition', () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
      types: string; exports: { '.': { import: { types: string }; require: { types: string } } };
    };
    for (const f of [pkg.types, pkg.exports['.'].import.types, pkg.exports['.'].require.types]) {
      expect(fs.existsSync(path.join(ROOT, f)), f).toBe(true);
    }
  });
});

// -------------------------------------------------------------------------------------------

/** The device a fresh process picks with TESSERA_DEVICE unset (auto): 'cuda' only where a CUDA binary finds a usable GPU. */
let autoDevice: string | undefined;
function deviceWhenAuto(): string {
  if (autoDevice === undefined) {
    const r = node(`const t = require(${JSON.stringify(ROOT)}); console.log(t.activeDevice());`);
    expect(r.status, r.stderr).toBe(0);
    autoDevice = r.stdout.trim();
    expect(['cpu', 'cuda']).toContain(autoDevice);
  }
  return autoDevice;
}

describe('backends', () => {
  // These hold on a machine with or without a GPU: CUDA is used exactly when it is usable.
  it('reports the CPU with its ISA, and CUDA as usable with its devices or unavailable with a reason', () => {
    const list = backends();
    const cpu = list.find((b) => b.name === 'cpu');
    const cuda = list.find((b) => b.name === 'cuda');
    expect(list[0].name).toBe('cpu');
    expect(cpu).toBeDefined();
    expect(cpu!.available).toBe(true);
    expect(cpu!.binary).toMatch(/\.node$/);
    expect(typeof cpu!.isa).toBe('string');
    expect(cpu!.isas).toContain('scalar');
    expect(cpu!.isas).toContain(cpu!.isa);
    expect(cpu!.threads).toBeGreaterThanOrEqual(1);
    expect(cuda).toBeDefined();
    const info = nativeInfo();
    expect(info.isas).toEqual(cpu!.isas);
    expect(info.bestIsa).toBe(cpu!.isas!.at(-1));
    expect(cuda!.available).toBe(info.cuda.usable);
    if (info.cuda.usable) {
      // A CUDA binary (prebuilds/<platform>-<arch>-cuda or build-cuda/) and a usable GPU.
      expect(info.cuda.devices.length).toBeGreaterThan(0);
      expect(cuda!.devices!.length).toBeGreaterThan(0);
      expect(info.device).toBe('cuda');
      expect(activeDevice()).toBe('cuda');
      expect(info.binary).toMatch(/tessera_cuda\.node$/);
    } else {
      // No GPU, or no CUDA binary (`npm test` builds the CPU one only): why, and the CPU binary runs.
      expect(info.cuda.reason).toMatch(/\S/);
      expect(cuda!.reason).toMatch(/\S/);
      expect(info.device).toBe('cpu');
      expect(activeDevice()).toBe('cpu');
      expect(info.binary).toBe(cpu!.binary);
    }
  });

  it('TESSERA_DEVICE=cpu skips the CUDA probe and says so', () => {
    const r = node(`const t = require(${JSON.stringify(ROOT)}); console.log(JSON.stringify(t.backends()));`, { TESSERA_DEVICE: 'cpu' });
    expect(r.status, r.stderr).toBe(0);
    const list = JSON.parse(r.stdout) as { name: string; available: boolean; reason?: string }[];
    expect(list[0]).toMatchObject({ name: 'cpu', available: true });
    expect(list.find((b) => b.name === 'cuda')).toMatchObject({ available: false, reason: expect.stringMatching(/TESSERA_DEVICE=cpu/) });
  });

  it('TESSERA_DEVICE=cuda uses a usable CUDA backend, and without one fails saying what was tried', () => {
    // Loading is lazy: the error comes from require() or, at the latest, the first use.
    const r = node(
      `const t = require(${JSON.stringify(ROOT)}); t.backends(); const c = t.nativeInfo().cuda; console.log('LOADED', t.activeDevice(), c.usable, c.devices.length);`,
      { TESSERA_DEVICE: 'cuda' },
    );
    if (deviceWhenAuto() === 'cuda') {
      // a GPU machine with the CUDA binary: it loads, on a usable device
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toMatch(/^LOADED cuda true [1-9]/);
      return;
    }
    expect(r.status).not.toBe(0);
    expect(r.stdout).not.toContain('LOADED');
    expect(r.stderr).toMatch(/TESSERA_DEVICE=cuda/);
    expect(r.stderr).toMatch(/tessera_cuda\.node/);
    expect(r.stderr).toMatch(/not found|failed to load|loaded, but/);
    expect(r.stderr).toMatch(/prebuilds/);
  });

  it('TESSERA_DEVICE=bogus gives a RangeError', () => {
    const r = node(
      `try { const t = require(${JSON.stringify(ROOT)}); t.backends(); console.log('LOADED'); }
       catch (e) { console.log(e.constructor.name + ': ' + e.message); }`,
      { TESSERA_DEVICE: 'bogus' },
    );
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^RangeError: .*TESSERA_DEVICE.*bogus/);
  });

  it('TESSERA_CPU_ISA forces a kernel set; an unsupported one falls back to the best', () => {
    const isas = backends()[0].isas!;
    const best = isas[isas.length - 1];
    const unsupported = ['neon', 'avx512', 'avx2'].find((i) => !isas.includes(i));
    const cases: [string, string][] = [['scalar', 'scalar'], ...isas.map((i): [string, string] => [i, i])];
    if (unsupported) cases.push([unsupported, best]);
    for (const [want, got] of cases) {
      const r = node(
        `const t = require(${JSON.stringify(ROOT)});
         const y = t.ops.softmax(t.Tensor.from(new Float32Array([0, Math.log(3)]), [1, 2])).toArray();
         console.log(t.backends()[0].isa, y.map((v) => v.toFixed(5)).join(','));`,
        { TESSERA_CPU_ISA: want },
      );
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout.trim(), want).toBe(`${got} 0.25000,0.75000`);
    }
  });

  it('the int8 path follows the CPU, TESSERA_CPU_ISA and TESSERA_AMX', () => {
    const path8 = (env: Record<string, string>) => {
      const r = node(`const t = require(${JSON.stringify(ROOT)}); console.log(t.nativeInfo().int8Path);`, env);
      expect(r.status, r.stderr).toBe(0);
      return r.stdout.trim();
    };
    const feats = ` ${backends()[0].cpuFeatures ?? ''} `;
    const vnni = / avx512vnni /.test(feats) && backends()[0].isas!.includes('avx512');
    expect(path8({ TESSERA_CPU_ISA: 'scalar' })).toBe('none');
    expect(path8({ TESSERA_CPU_ISA: 'avx512', TESSERA_AMX: '0' })).toBe(vnni ? 'vnni' : 'none');
    expect(['none', 'vnni', 'amx+vnni']).toContain(path8({}));
    if (vnni) expect(path8({})).not.toBe('none');
  });

  it('TESSERA_DEVICE is case-insensitive and "auto" falls back to the CPU without a usable GPU', () => {
    // auto (and empty) picks what an unset TESSERA_DEVICE picks: the CPU unless CUDA is usable
    for (const [value, want] of [['AUTO', deviceWhenAuto()], [' cpu ', 'cpu'], ['', deviceWhenAuto()]]) {
      const r = node(`const t = require(${JSON.stringify(ROOT)}); console.log(t.activeDevice());`, { TESSERA_DEVICE: value });
      expect(r.status, `${JSON.stringify(value)}: ${r.stderr}`).toBe(0);
      expect(r.stdout.trim(), JSON.stringify(value)).toBe(want);
    }
    // and it is what this process chose where it chose automatically too (CUDA exactly when usable: above)
    if (['', 'auto'].includes((process.env.TESSERA_DEVICE ?? '').trim().toLowerCase())) expect(deviceWhenAuto()).toBe(activeDevice());
  });
});
