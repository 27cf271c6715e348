#!/usr/bin/env node
// Thread-count benchmark, A/B: decode and prefill tok/s of one or more builds of tessera (each a
// package root: a checkout with dist/ and its addon built) per model and thread count, every
// measurement in a fresh child process, the builds interleaved (their order alternates per round)
// so that the load of a shared machine falls on both alike. Prints the median per cell and the
// ratio of each build to the first. Runs during which other processes kept the machine busy
// (from /proc/stat, beyond the run's own CPU time) are repeated, so the figures are of a quiet
// machine where one can be had (--quiet-max, --retries).
//
//   node bench/threads-bench.mjs --roots before=/tmp/tessera-before,after=.[@VAR=VALUE] \
//        --models models/stories260K-q8_0.gguf,/tmp/tessera-bench/models/synthetic-110m-q8_0.gguf \
//        [--threads 1,2,0] [--rounds 5] [--decode 256,64] [--prompt 128] [--json FILE]
//        [--quiet-max 0.15] [--retries 6]
//
// --decode gives the decoded tokens per model (one value for all, or one per model); decode tok/s
// = timings.tokensPerSecond of a greedy completion after an 8-token prompt with EOS banned (best of
// 2 in the child). Prefill: a --prompt-token prompt, timings.promptMs (best of 2). threads 0 is
// the default (all cores this process may use).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

if (process.argv[2] === '--child') {
  // child: root file threads decodeN promptN
  const [root, file, threadsS, decodeS, promptS] = process.argv.slice(3);
  const t = await import(path.join(path.resolve(root), 'dist', 'index.js'));
  const { loadModel } = t.default ?? t;
  const threads = Number(threadsS), decodeN = Number(decodeS), promptN = Number(promptS);
  const m = await loadModel(file, { threads, contextSize: Math.max(512, promptN + 64), maxBatchTokens: Math.max(512, promptN) });
  const V = m.info.vocabSize;
  // Ordinary token ids (no BOS/EOS/control ids at the bottom of the vocabulary), `salt` varies them.
  const ids = (n, salt) => Array.from({ length: n }, (_, i) => Math.floor(V / 4) + ((i * 7919 + salt * 104729) % Math.floor(V / 2)));
  const noEos = { [m.info.vocabulary.eos]: -Infinity };
  try {
    await m.complete(ids(16, 99), { maxTokens: 4, temperature: 0 }); // warm-up
    const prefill = [], decode = [];
    for (let i = 0; i < 2; i++) {
      const r = await m.complete(ids(promptN, i + 1), { maxTokens: 1, temperature: 0 });
      prefill.push(promptN / (r.timings.promptMs / 1000));
    }
    for (let i = 0; i < 2; i++) {
      const r = await m.complete(ids(8, i + 1), { maxTokens: decodeN, temperature: 0, logitBias: noEos });
      if (r.tokens.length !== decodeN) throw new Error(`generated ${r.tokens.length} of ${decodeN}`);
      decode.push(r.timings.tokensPerSecond);
    }
    const cpu = process.cpuUsage(); // all threads of this process, its whole life (us)
    process.stdout.write(JSON.stringify({ threadsUsed: m.info.threads, prefill: Math.max(...prefill), decode: Math.max(...decode), cpuSec: (cpu.user + cpu.system) / 1e6 }));
  } finally {
    await m.dispose();
  }
  process.exit(0);
}

const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
};
// NAME=DIR[@VAR=VALUE...]: a build and environment variables for its runs (e.g. a tuning knob).
const roots = arg('roots', 'current=.').split(',').map((s) => {
  const [spec, ...vars] = s.split('@');
  const [name, dir] = spec.includes('=') ? spec.split('=') : [spec, spec];
  return { name, dir: path.resolve(dir), env: Object.fromEntries(vars.map((v) => v.split('='))) };
});
const models = arg('models', 'models/stories260K-q8_0.gguf').split(',');
const threadsList = arg('threads', '1,2,0').split(',').map(Number);
const rounds = Number(arg('rounds', '5'));
const decodeList = arg('decode', '256,64').split(',').map(Number);
const promptN = Number(arg('prompt', '128'));
const jsonFile = arg('json', undefined);
const quietMax = Number(arg('quiet-max', '0.15'));
const retries = Number(arg('retries', '6'));
const self = new URL(import.meta.url).pathname;

// CPU seconds the machine spent busy (user, nice, system, irq, softirq) and stolen by the host
// (steal), from /proc/stat; null where there is none.
function cpuTimes() {
  try {
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    const hz = 100; // USER_HZ
    return { busy: (f[0] + f[1] + f[2] + f[5] + f[6]) / hz, steal: (f[7] ?? 0) / hz };
  } catch {
    return null;
  }
}
// One measurement in a fresh process. `foreign`: cores' worth of CPU that others used (or the host
// stole) while it ran = (machine busy + steal - the child's own CPU) / wall time. A run with more
// than --quiet-max is repeated (up to --retries times, after a pause) and the quietest kept.
function measure(root, file, threads, decodeN) {
  let best;
  for (let a = 0; a <= retries; a++) {
    const c0 = cpuTimes(), w0 = performance.now();
    const p = spawnSync(process.execPath, [self, '--child', root.dir, file, String(threads), String(decodeN), String(promptN)], {
      encoding: 'utf8', env: { ...process.env, ...root.env },
    });
    const wall = (performance.now() - w0) / 1000, c1 = cpuTimes();
    if (p.status !== 0) throw new Error(`${root.name} ${file} t=${threads}: ${p.stderr}`);
    const o = JSON.parse(p.stdout);
    o.foreign = c0 ? Math.max(0, (c1.busy - c0.busy + c1.steal - c0.steal - o.cpuSec) / wall) : 0;
    if (!best || o.foreign < best.foreign) best = o;
    if (o.foreign <= quietMax) break;
    spawnSync('sleep', [String(1 + a)]);
  }
  if (best.foreign > quietMax) log(`    (noisy: ${root.name} ${path.basename(file)} t=${threads} ran beside ${best.foreign.toFixed(2)} cores of other work)`);
  return best;
}

const log = (s) => process.stderr.write(`${s}\n`);
const median = (a) => {
  const s = [...a].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

log(`threads-bench: ${os.cpus().length} cpus, load ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}, ${rounds} rounds`);
const results = {}; // model -> threads -> root -> { decode: [], prefill: [] }
const t0 = Date.now();
for (let r = 0; r < rounds; r++) {
  for (const [mi, file] of models.entries()) {
    const decodeN = decodeList[Math.min(mi, decodeList.length - 1)];
    for (const threads of threadsList) {
      const order = r % 2 === 0 ? roots : [...roots].reverse();
      for (const root of order) {
        const o = measure(root, file, threads, decodeN);
        const cell = (((results[file] ??= {})[threads] ??= {})[root.name] ??= { decode: [], prefill: [], foreign: [], threadsUsed: o.threadsUsed });
        cell.decode.push(o.decode);
        cell.prefill.push(o.prefill);
        cell.foreign.push(o.foreign);
      }
    }
  }
  log(`  round ${r + 1}/${rounds} done (${((Date.now() - t0) / 1000).toFixed(0)} s, load ${os.loadavg()[0].toFixed(2)})`);
}
log(`load at end ${os.loadavg().map((x) => x.toFixed(2)).join(' ')}`);

const base = roots[0].name;
const head = ['model', 'threads', ...roots.flatMap((r) => [`decode ${r.name}`]), ...roots.slice(1).map((r) => `ratio ${r.name}/${base}`),
  ...roots.flatMap((r) => [`prefill ${r.name}`]), ...roots.slice(1).map((r) => `ratio ${r.name}/${base}`)];
const lines = [`| ${head.join(' | ')} |`, `| ${head.map(() => '---').join(' | ')} |`];
for (const file of models) {
  for (const threads of threadsList) {
    const c = results[file][threads];
    const d = roots.map((r) => median(c[r.name].decode));
    const p = roots.map((r) => median(c[r.name].prefill));
    const label = threads === 0 ? `0 (${c[base].threadsUsed})` : String(threads);
    lines.push(`| ${path.basename(file)} | ${label} | ${d.map((x) => x.toFixed(1)).join(' | ')} | ${d.slice(1).map((x) => (x / d[0]).toFixed(2)).join(' | ')} | ` +
      `${p.map((x) => x.toFixed(0)).join(' | ')} | ${p.slice(1).map((x) => (x / p[0]).toFixed(2)).join(' | ')} |`);
  }
}
const allForeign = Object.values(results).flatMap((m) => Object.values(m).flatMap((t) => Object.values(t).flatMap((c) => c.foreign)));
console.log(`median of ${rounds} rounds (tok/s; each a best of 2 in its own process); other work beside the runs: ` +
  `median ${median(allForeign).toFixed(2)}, max ${Math.max(...allForeign).toFixed(2)} cores\n`);
console.log(lines.join('\n'));
if (jsonFile) fs.writeFileSync(jsonFile, JSON.stringify({ roots, models, threadsList, rounds, promptN, decodeList, results }, null, 1));
