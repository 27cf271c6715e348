#!/usr/bin/env node
// Server load test on loopback: `tessera serve` in its own process, a fixed count of streaming
// completion requests from C concurrent clients (keep-alive connections), greedy, with prompts and
// lengths drawn from a seeded generator.
//
//   node bench/server-bench.mjs [--model FILE] [--requests 512] [--concurrency 64] [--threads 1]
//        [--ctx 512] [--kv-pages 640] [--max-tokens 32,128 | --lengths 16,32,48] [--max-queue 256]
//        [--rounds 1] [--json FILE]
//
// Default model: the embedded stories260K. Checks, each a failure (exit 1) when it does not hold:
// every request ends 200 or 429 (nothing lost: every one settles within a deadline); each 200's
// text equals its solo greedy run (model.generate in this process, one at a time: nothing mixed
// up), or follows it exactly up to a token where the solo run's two best candidates were within
// TIE nats (batched steps round differently from single-row ones, so near-ties may flip; counted
// and reported apart); the server's KV pages in use and running requests are back to 0 afterwards.
// Reports requests/s, generated tokens/s (the server's usage counts over the wall time), time to
// first token (request sent -> first token event, p50/p99), and the server's RSS (/proc, Linux)
// after loading, after a warm-up round of C requests, and after the run (plus the peak sampled).
// Needs dist/ (npm run build:ts).
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tessera = createRequire(import.meta.url)(path.join(ROOT, 'dist', 'index.js'));

const argv = process.argv.slice(2);
const opt = (name, def) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : def;
};
const MODEL = opt('model', tessera.demoModelPath);
const TIE = 0.15; // nats; solo vs 4-row batches on stories260K differ by up to 0.056 in a token's logprob
const REQUESTS = Number(opt('requests', 512));
const C = Number(opt('concurrency', 64));
const THREADS = Number(opt('threads', 1));
const CTX = Number(opt('ctx', 512));
const KV_PAGES = Number(opt('kv-pages', 640));
const [MIN_TOK, MAX_TOK] = opt('max-tokens', '32,128').split(',').map(Number);
// --lengths 16,32,48: max_tokens drawn from this list instead (fewer solo references to compute on big models)
const LENGTHS = opt('lengths', undefined)?.split(',').map(Number);
const MAX_QUEUE = Number(opt('max-queue', 256));
const JSON_OUT = opt('json', undefined);
const ROUNDS = Number(opt('rounds', 1)); // the measured round repeats; RSS after each shows whether it grows

const PROMPTS = [
  'Once upon a time',
  'The little dog',
  'Lily went to the park',
  'Tom and Sam were friends',
  'One day, a bird',
  'The sun was hot and',
  'Mom said',
  'There was a big red ball',
  'The cat sat on the',
  'Ben liked to',
  'In the forest, a bear',
  'Sue had a new toy',
];

let seed = 2026;
const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
const jobs = Array.from({ length: REQUESTS }, () => ({
  prompt: PROMPTS[Math.floor(rand() * PROMPTS.length)],
  maxTokens: LENGTHS ? LENGTHS[Math.floor(rand() * LENGTHS.length)] : MIN_TOK + Math.floor(rand() * (MAX_TOK - MIN_TOK + 1)),
}));

const rssOf = (pid) => {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) * 1024 : NaN;
};
const mib = (b) => `${(b / 2 ** 20).toFixed(1)} MiB`;
const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] : NaN;
};

// Solo greedy references, one at a time, in this process: text per token and the top-2 margin.
const ref = await tessera.loadModel(MODEL, { threads: THREADS, contextSize: CTX });
const solo = new Map();
for (const j of jobs) {
  const key = `${j.prompt}\u0000${j.maxTokens}`;
  if (solo.has(key)) continue;
  const chunks = [];
  for await (const c of ref.generate(j.prompt, { maxTokens: j.maxTokens, temperature: 0, logprobs: 2 })) chunks.push(c);
  solo.set(key, { text: chunks.map((c) => c.text).join(''), chunks });
}
await ref.dispose();

/** 'same', 'tie' (equal up to a token whose solo margin was < TIE), or 'mixed'. */
function compare(text, want) {
  if (text === want.text) return 'same';
  let k = 0;
  while (k < text.length && text[k] === want.text[k]) k++;
  let at = 0;
  for (const c of want.chunks) {
    at += c.text.length;
    if (at > k || (at === k && c.text === '')) {
      const margin = c.top && c.top.length > 1 ? c.top[0].logprob - c.top[1].logprob : Infinity;
      return margin < TIE ? 'tie' : 'mixed';
    }
  }
  return 'mixed';
}

// The server, as a user starts it.
const server = spawn(
  process.execPath,
  [path.join(ROOT, 'dist', 'cli.js'), 'serve', '-m', MODEL, '--port', '0', '--threads', String(THREADS), '--ctx', String(CTX), '--kv-pages', String(KV_PAGES), '--max-queue', String(MAX_QUEUE)],
  { stdio: ['ignore', 'ignore', 'pipe'] },
);
let serverErr = '';
server.stderr.on('data', (d) => (serverErr += d));
const base = await new Promise((resolve, reject) => {
  const t = setTimeout(() => reject(new Error(`server did not start: ${serverErr}`)), 60_000);
  server.stderr.on('data', () => {
    const m = /(http:\/\/[\d.:]+)\/v1/.exec(serverErr);
    if (m) {
      clearTimeout(t);
      resolve(m[1]);
    }
  });
  server.on('exit', (code) => reject(new Error(`server exited ${code}: ${serverErr}`)));
});
const { port } = new URL(base);
const agent = new http.Agent({ keepAlive: true, maxSockets: C });

/** One streaming request; resolves with status, text, ttft (ms) and the completion tokens from usage. */
function request(job) {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const body = JSON.stringify({ prompt: job.prompt, max_tokens: job.maxTokens, temperature: 0, stream: true, stream_options: { include_usage: true } });
    const req = http.request({ host: '127.0.0.1', port, path: '/v1/completions', method: 'POST', agent, headers: { 'content-type': 'application/json' } }, (res) => {
      let buf = '';
      let text = '';
      let ttft = NaN;
      let tokens = 0;
      res.setEncoding('utf8');
      res.on('data', (d) => {
        buf += d;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          const ev = buf.slice(0, i);
          buf = buf.slice(i + 2);
          if (!ev.startsWith('data: ')) continue;
          const data = ev.slice(6);
          if (data === '[DONE]') continue;
          const j = JSON.parse(data);
          if (j.error) return reject(new Error(JSON.stringify(j.error)));
          if (j.usage) tokens = j.usage.completion_tokens;
          const c = j.choices?.[0];
          if (c && c.finish_reason === null && Number.isNaN(ttft)) ttft = performance.now() - t0;
          if (c) text += c.text;
        }
      });
      res.on('end', () => resolve({ status: res.statusCode, text, ttft, tokens }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** Runs `list` with C clients; each client takes the next job when its request ends. */
async function round(list) {
  let next = 0;
  const results = new Array(list.length);
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: Math.min(C, list.length) }, async () => {
      while (next < list.length) {
        const i = next++;
        results[i] = await request(list[i]);
      }
    }),
  );
  return { results, ms: performance.now() - t0 };
}

const metric = async (name) => {
  const text = await (await fetch(`${base}/metrics`)).text();
  return Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
};

const failures = [];
const rssLoaded = rssOf(server.pid);
let rssPeak = rssLoaded;
const sampler = setInterval(() => (rssPeak = Math.max(rssPeak, rssOf(server.pid))), 200);
let timer;
const deadline = new Promise((_, reject) => (timer = setTimeout(() => reject(new Error('requests still pending after 600 s (lost)')), 600_000)));
try {
  await Promise.race([round(jobs.slice(0, C)), deadline]); // warm-up: first connections, JIT, pool pages
  const rssWarm = rssOf(server.pid);
  const rssRounds = [];
  let last;
  for (let r = 0; r < ROUNDS; r++) {
    last = await Promise.race([round(jobs), deadline]);
    rssRounds.push(rssOf(server.pid));
    if (r + 1 < ROUNDS) await Promise.race([new Promise((res) => setTimeout(res, 1)), deadline]);
  }
  const { results, ms } = last;
  clearTimeout(timer);
  clearInterval(sampler);
  const rssAfter = rssOf(server.pid);

  const ok = results.filter((r) => r.status === 200);
  const busy = results.filter((r) => r.status === 429).length;
  const other = results.filter((r) => r.status !== 200 && r.status !== 429);
  if (other.length) failures.push(`${other.length} requests ended with ${[...new Set(other.map((r) => r.status))].join(', ')}`);
  const verdicts = { same: 0, tie: 0, mixed: 0 };
  results.forEach((r, i) => {
    if (r.status !== 200) return;
    const want = solo.get(`${jobs[i].prompt}\u0000${jobs[i].maxTokens}`);
    const v = compare(r.text, want);
    verdicts[v]++;
    if (v === 'mixed' && verdicts.mixed <= 3) {
      let k = 0;
      while (k < want.text.length && want.text[k] === r.text[k]) k++;
      console.error(`request ${i} (${JSON.stringify(jobs[i].prompt)}, max_tokens ${jobs[i].maxTokens}) differs at char ${k}:\n  solo:   ${JSON.stringify(want.text.slice(Math.max(0, k - 20), k + 40))}\n  server: ${JSON.stringify(r.text.slice(Math.max(0, k - 20), k + 40))}`);
    }
  });
  if (verdicts.mixed) failures.push(`${verdicts.mixed} outputs differ from their solo greedy run (not at a near-tie)`);
  await new Promise((r) => setTimeout(r, 100));
  const pagesInUse = await metric('tessera_kv_pages_in_use');
  const running = await metric('tessera_requests_running');
  if (pagesInUse !== 0 || running !== 0) failures.push(`after the run: ${pagesInUse} KV pages in use, ${running} running`);
  const preemptions = await metric('tessera_preemptions_total');

  const tokens = ok.reduce((s, r) => s + r.tokens, 0);
  const ttfts = ok.map((r) => r.ttft).filter(Number.isFinite);
  const report = {
    date: new Date().toISOString().slice(0, 16).replace('T', ' ') + ' UTC',
    machine: `${os.cpus()[0]?.model ?? '?'} (${os.cpus().length} logical CPUs, shared), node ${process.version}`,
    model: path.basename(MODEL),
    command: `node bench/server-bench.mjs ${argv.join(' ')}`.trim(),
    requests: REQUESTS,
    concurrency: C,
    threads: THREADS,
    ok: ok.length,
    rejected429: busy,
    wallSeconds: ms / 1000,
    requestsPerSecond: ok.length / (ms / 1000),
    tokensPerSecond: tokens / (ms / 1000),
    generatedTokens: tokens,
    ttftMs: { p50: pct(ttfts, 50), p99: pct(ttfts, 99), max: Math.max(...ttfts) },
    rss: { loaded: rssLoaded, afterWarmup: rssWarm, afterEachRound: rssRounds, after: rssAfter, peak: rssPeak },
    preemptions,
    outputs: verdicts,
    checks: failures.length ? failures : ['all ended 200/429', `outputs: ${verdicts.same} equal their solo greedy run, ${verdicts.tie} equal it up to a near-tie (< ${TIE} nats), 0 otherwise`, 'pages in use 0'],
  };
  console.log(
    `${report.model}, ${ROUNDS > 1 ? `${ROUNDS} rounds of ` : ''}${REQUESTS} streaming requests (max_tokens ${LENGTHS ? LENGTHS.join('/') : `${MIN_TOK}-${MAX_TOK}`}), ${C} clients, server --threads ${THREADS}\n` +
      `  last round: ${ok.length} ok, ${busy} x 429 in ${report.wallSeconds.toFixed(2)} s: ${report.requestsPerSecond.toFixed(1)} req/s, ${report.tokensPerSecond.toFixed(0)} generated tokens/s\n` +
      `  time to first token: p50 ${report.ttftMs.p50.toFixed(1)} ms, p99 ${report.ttftMs.p99.toFixed(1)} ms, max ${report.ttftMs.max.toFixed(1)} ms\n` +
      `  server RSS: loaded ${mib(rssLoaded)}, after warm-up ${mib(rssWarm)}, after each round ${rssRounds.map(mib).join(', ')}, peak ${mib(rssPeak)}; preemptions ${preemptions}\n` +
      `  checks: ${report.checks.join('; ')}`,
  );
  if (JSON_OUT) fs.writeFileSync(JSON_OUT, JSON.stringify(report, null, 2));
} catch (e) {
  failures.push(e.message);
  console.error(e.message);
} finally {
  clearInterval(sampler);
  agent.destroy();
  server.kill('SIGTERM');
  const code = await new Promise((r) => server.on('exit', (c) => r(c)));
  if (code !== 0) failures.push(`server exited ${code} on SIGTERM`);
}
if (failures.length) {
  console.error(`FAILED: ${failures.join('; ')}`);
  process.exit(1);
}
