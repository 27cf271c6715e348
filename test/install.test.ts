// Installing the packed tarball the way a user does, on a machine with no compiler: npm pack,
// then `npm install ./tessera-llm-x.y.z.tgz` in a temporary project whose PATH has node and npm but
// g++/gcc/cc/make/python replaced by `false` (and CC/CXX=false). The prebuilt CPU binary must be
// found at require time, ops must run, and the types must compile in a .ts consumer.
// Also checks what the tarball contains and that the source-build fallback works with a compiler.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { STORIES } from './data';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string };
const TAG = `${process.platform}-${process.arch}`;
const NPM_CLI = path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js');

let work: string;
let tarball: string;
let packFiles: string[];

/** A bin directory with node and npm, and every compiler/build tool replaced by `false`. */
function noCompilerBin(dir: string): string {
  const bin = path.join(dir, 'bin');
  fs.mkdirSync(bin, { recursive: true });
  fs.symlinkSync(process.execPath, path.join(bin, 'node'));
  fs.symlinkSync('/bin/sh', path.join(bin, 'sh')); // npm runs lifecycle scripts with sh
  fs.writeFileSync(path.join(bin, 'npm'), `#!/bin/sh\nexec "${process.execPath}" "${NPM_CLI}" "$@"\n`, { mode: 0o755 });
  for (const tool of ['g++', 'gcc', 'cc', 'c++', 'clang', 'clang++', 'make', 'cmake', 'python', 'python3', 'nvcc']) {
    fs.writeFileSync(path.join(bin, tool), '#!/bin/sh\necho "no compiler on this machine" >&2\nexit 1\n', { mode: 0o755 });
  }
  return bin;
}

function npm(args: string[], cwd: string, env: NodeJS.ProcessEnv) {
  return spawnSync(process.execPath, [NPM_CLI, ...args], { cwd, env, encoding: 'utf8', timeout: 300000 });
}

beforeAll(() => {
  if (!fs.existsSync(path.join(ROOT, 'prebuilds', TAG))) {
    throw new Error(`no prebuilds/${TAG}: run \`npm run build:native\` (prebuildify) first`);
  }
  work = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-install-'));
  // --ignore-scripts: dist/ is already built by `npm test`; don't rebuild it inside the test.
  const out = execFileSync(process.execPath, [NPM_CLI, 'pack', '--json', '--ignore-scripts', '--pack-destination', work], {
    cwd: ROOT,
    encoding: 'utf8',
  });
  const info = JSON.parse(out)[0] as { filename: string; size: number; unpackedSize: number; files: { path: string }[] };
  tarball = path.join(work, info.filename);
  packFiles = info.files.map((f) => f.path);
  console.log(`tarball: ${info.filename}, ${(info.size / 1024).toFixed(0)} KiB packed, ${(info.unpackedSize / 1024).toFixed(0)} KiB unpacked, ${packFiles.length} files`);
}, 120000);

afterAll(() => {
  if (work) fs.rmSync(work, { recursive: true, force: true });
});

describe('npm pack', () => {
  it('contains dist, the prebuilt binary, the native sources and build files, and nothing else', () => {
    expect(packFiles).toContain('package.json');
    expect(packFiles).toContain('dist/index.js');
    expect(packFiles).toContain('dist/index.mjs');
    expect(packFiles).toContain('dist/index.d.ts');
    expect(packFiles).toContain('dist/index.d.mts');
    expect(packFiles).toContain('dist/cli.js');
    expect(packFiles.some((f) => f.startsWith(`prebuilds/${TAG}/`) && f.endsWith('.node'))).toBe(true);
    expect(packFiles).toContain('binding.gyp');
    expect(packFiles).toContain('CMakeLists.txt');
    expect(packFiles).toContain('native/sources.json');
    expect(packFiles).toContain('scripts/sources.js');
    expect(packFiles).toContain('native/cpu/matmul.cc');
    expect(packFiles).toContain('native/include/tessera/ops.h');
    expect(packFiles).toContain('models/stories260K-q8_0.gguf'); // the demo's embedded model
    // Every source the fallback build needs is present.
    const sources = JSON.parse(fs.readFileSync(path.join(ROOT, 'native', 'sources.json'), 'utf8')) as Record<string, string[]>;
    for (const f of [...sources.core, ...sources.napi, ...sources.cuda]) expect(packFiles).toContain(f);
    const allowed = /^(package\.json|README\.md|LICENSE|binding\.gyp|CMakeLists\.txt|scripts\/sources\.js|dist\/.+|prebuilds\/.+|models\/.+|native\/(?!test\/).+)$/;
    expect(packFiles.filter((f) => !allowed.test(f))).toEqual([]);
    expect(packFiles.filter((f) => /^(build|build-[^/]+|test|node_modules)\//.test(f) || f.startsWith('native/test/'))).toEqual([]);
    expect(packFiles.filter((f) => f.endsWith('.map') || f.endsWith('.ts') && !f.endsWith('.d.ts') && !f.endsWith('.d.mts'))).toEqual([]);
  });
});

describe('npm install from the tarball without a compiler', () => {
  let project: string;
  let env: NodeJS.ProcessEnv;

  beforeAll(() => {
    project = path.join(work, 'consumer');
    fs.mkdirSync(project);
    fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'consumer', version: '1.0.0', private: true }));
    const bin = noCompilerBin(work);
    env = {
      HOME: process.env.HOME,
      PATH: bin,
      CC: 'false',
      CXX: 'false',
      npm_config_cache: path.join(work, 'npm-cache'),
      npm_config_update_notifier: 'false',
      npm_config_audit: 'false',
      npm_config_fund: 'false',
    };
    // The tools really are unavailable in this environment.
    expect(spawnSync('g++', ['--version'], { env }).status).not.toBe(0);
  });

  it('installs, loads the prebuilt CPU binary and runs the op set', () => {
    const t0 = performance.now();
    const r = npm(['install', tarball], project, env);
    const seconds = (performance.now() - t0) / 1000;
    expect(r.status, r.stderr).toBe(0);
    console.log(`npm install ./${path.basename(tarball)}: ${seconds.toFixed(1)} s`);
    expect(fs.existsSync(path.join(project, 'node_modules', 'tessera-llm', 'build'))).toBe(false); // nothing was compiled

    const script = `
      const t = require('tessera-llm');
      const info = t.nativeInfo();
      const x = t.Tensor.from(new Float32Array([1, 2, 3, 4]), [1, 4]);
      const w = t.ops.convert(t.Tensor.from(new Float32Array(32 * 4).fill(0.5), [4, 32]).reshape([4, 32]), 'f16');
      const y = t.ops.matmul(t.Tensor.from(new Float32Array(32).fill(1), [1, 32]), w);
      const version = require('tessera-llm/package.json').version;
      t.loadModel(${JSON.stringify(STORIES)}, { threads: 1 }).then(async (m) => {
        const r = await m.complete('Once upon a time', { temperature: 0, maxTokens: 10 });
        await m.dispose();
        console.log(JSON.stringify({ binary: info.binary, device: info.device, y: Array.from(y.data), version, text: r.text, tokens: r.tokens }));
      });
    `;
    const run = spawnSync(process.execPath, ['-e', script], { cwd: project, env, encoding: 'utf8' });
    expect(run.status, run.stderr).toBe(0);
    const out = JSON.parse(run.stdout.trim().split('\n').pop() as string);
    expect(out.binary).toContain(path.join('node_modules', 'tessera-llm', 'prebuilds', TAG));
    expect(out.device).toBe('cpu');
    expect(out.y).toEqual([16, 16, 16, 16]);
    expect(out.version).toBe(pkg.version);
    // A short greedy generation on the real stories260K model matches llama2.c's first tokens.
    expect(out.tokens).toEqual([432, 383, 286, 261, 376, 298, 315, 421, 395, 317]);
    expect(out.text).toBe(', there was a little girl named Lily');

    const esm = spawnSync(process.execPath, ['--input-type=module', '-e', "import { ops, Tensor } from 'tessera-llm'; console.log(typeof ops.varlenAttention, typeof Tensor.from)"], {
      cwd: project,
      env,
      encoding: 'utf8',
    });
    expect(esm.status, esm.stderr).toBe(0);
    expect(esm.stdout.trim()).toBe('function function');

    const cli = spawnSync(path.join(project, 'node_modules', '.bin', 'tessera'), ['doctor'], { cwd: project, env, encoding: 'utf8' });
    expect(cli.status, cli.stderr).toBe(0);
    expect(cli.stdout).toContain(`prebuilds/${TAG}`);
  });

  it('types resolve in a TypeScript consumer compiled with tsc', () => {
    fs.writeFileSync(
      path.join(project, 'main.ts'),
      [
        "import { Tensor, ops, backends, type BackendReport } from 'tessera-llm';",
        'const x: Tensor = Tensor.from(new Float32Array(8), [2, 4]);',
        'const y: Tensor = ops.softmax(x);',
        'const b: BackendReport[] = backends();',
        'export const shape: readonly number[] = y.shape.concat(b.length);',
        '',
      ].join('\n'),
    );
    fs.writeFileSync(
      path.join(project, 'tsconfig.json'),
      JSON.stringify({ compilerOptions: { strict: true, module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022', noEmit: true, skipLibCheck: false, types: [] }, files: ['main.ts'] }),
    );
    const tsc = spawnSync(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', project], { cwd: project, env, encoding: 'utf8' });
    expect(tsc.status, tsc.stdout + tsc.stderr).toBe(0);
  });
});

describe('source-build fallback', () => {
  it('npm rebuild tessera-llm --build-from-source compiles with node-gyp and loads the local build', () => {
    const project = path.join(work, 'from-source');
    fs.mkdirSync(project);
    fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'from-source', version: '1.0.0', private: true }));
    const env = { ...process.env, npm_config_cache: path.join(work, 'npm-cache') };
    expect(npm(['install', '--ignore-scripts', tarball], project, env).status).toBe(0);
    const r = npm(['rebuild', 'tessera-llm', '--build-from-source'], project, env);
    expect(r.status, r.stdout + r.stderr).toBe(0);
    const built = path.join(project, 'node_modules', 'tessera-llm', 'build', 'Release', 'tessera.node');
    expect(fs.existsSync(built)).toBe(true);
    const run = spawnSync(process.execPath, ['-e', "console.log(require('tessera-llm').nativeInfo().binary)"], { cwd: project, env, encoding: 'utf8' });
    expect(run.status, run.stderr).toBe(0);
    expect(run.stdout.trim()).toBe(built);
  }, 300000);
});
