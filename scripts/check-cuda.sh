#!/usr/bin/env bash
# CUDA compile check (CI has nvcc but no GPU): builds native/cuda for every target architecture,
# the CUDA parity test, the CUDA model test and the GPU benchmark, and the CUDA-enabled addon with
# cmake-js (one architecture; `npm run build:cuda` builds the prebuild for all). Then runs the two
# tests (they report "skipped" without a usable GPU) and loads the addon to show it falls back and
# that a model on device 'cuda' says why it cannot run.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvcc >/dev/null 2>&1; then
  if [ -x /usr/local/cuda/bin/nvcc ]; then export PATH="/usr/local/cuda/bin:$PATH"; else
    echo "check-cuda: nvcc not found; skipping the CUDA compile check"; exit 0; fi
fi
export CUDACXX="$(command -v nvcc)"
cmake -S . -B build-cuda-test -DTESSERA_CUDA=ON -DTESSERA_NATIVE_TESTS=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-cuda-test -j 2 --target tessera_cuda_parity_test tessera_cuda_model_test tessera_cuda_bench
./build-cuda-test/tessera_cuda_parity_test
./build-cuda-test/tessera_cuda_model_test
# The addon once more through cmake-js (the prebuild's build system), for one architecture only:
# every kernel was just compiled for all of them above.
npx cmake-js compile --out build-cuda-check --CDTESSERA_CUDA_ARCHS=75-real >/dev/null
node -e "
const t = require('./build-cuda-check/Release/tessera_cuda.node');
const c = t.info().cuda;
if (!c.compiled) { console.error('check-cuda: the cmake-js addon was built without CUDA'); process.exit(1); }
console.log('check-cuda: CUDA addon loads; cuda usable =', c.usable, c.usable ? '' : '(' + c.reason + ')');
// a model on device 'cuda' is refused with the probe's reason where no GPU is usable (by repack(),
// which copies the weights to the GPU on a worker thread)
const opts = { device: 'cuda', threads: 1, contextSize: 64, kvPages: 0, pageSize: 16, kvDtype: 'f16' };
(async () => {
  const m = new t.NativeModel('models/stories260K-q8_0.gguf', opts);
  try {
    await m.repack();
    if (!c.usable) { console.error('check-cuda: a cuda model was created without a usable GPU'); process.exit(1); }
    console.log('check-cuda: cuda model loads on', m.info().gpu);
  } catch (e) {
    if (c.usable) throw e;
    if (!/CUDA is not usable/.test(e.message)) { console.error('check-cuda: unexpected refusal: ' + e.message); process.exit(1); }
    console.log('check-cuda: device cuda refused as expected:', e.message);
  } finally {
    m.dispose();
  }
})().catch((e) => { console.error(e); process.exit(1); });
"
