#!/usr/bin/env node
// Copies the CUDA-enabled addon built by cmake-js (build-cuda/Release/tessera_cuda.node) to
// prebuilds/<platform>-<arch>-cuda/, stripped. node-gyp-build never looks in that folder; the
// loader (lib/native.ts) loads it only when its CUDA probe passes.
'use strict';
const { execFileSync } = require('node:child_process');
const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const src = path.join(root, 'build-cuda', 'Release', 'tessera_cuda.node');
if (!fs.existsSync(src)) {
  console.log(`copy-cuda-prebuild: ${path.relative(root, src)} not built (no nvcc?); no CUDA prebuild`);
  process.exit(0);
}
const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}-cuda`);
fs.mkdirSync(dir, { recursive: true });
const dst = path.join(dir, 'tessera_cuda.node');
fs.copyFileSync(src, dst);
if (process.platform === 'linux') {
  try {
    execFileSync('strip', ['--strip-unneeded', dst]);
  } catch (err) {
    console.warn(`copy-cuda-prebuild: strip failed (${err.message}); shipping unstripped`);
  }
}
console.log(`copy-cuda-prebuild: ${path.relative(root, dst)} (${(fs.statSync(dst).size / 2 ** 20).toFixed(1)} MiB)`);
