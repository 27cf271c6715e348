#!/usr/bin/env bash
# CUDA compile check (CI has nvcc but no GPU): builds native/cuda for every target architecture,
# the CUDA parity test, and the CUDA-enabled addon with cmake-js, then runs the parity test
# (which reports "skipped" without a usable GPU) and loads the addon to show it falls back.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvcc >/dev/null 2>&1; then
  if [ -x /usr/local/cuda/bin/nvcc ]; then export PATH="/usr/local/cuda/bin:$PATH"; else
    echo "check-cuda: nvcc not found; skipping the CUDA compile check"; exit 0; fi
fi
export CUDACXX="$(command -v nvcc)"
cmake -S . -B build-cuda-test -DTESSERA_CUDA=ON -DTESSERA_NATIVE_TESTS=ON -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build-cuda-test -j 2 --target tessera_cuda_parity_test
./build-cuda-test/tessera_cuda_parity_test
npm run build:cuda
node -e "
const t = require('./build-cuda/Release/tessera_cuda.node');
const c = t.info().cuda;
if (!c.compiled) { console.error('check-cuda: the cmake-js addon was built without CUDA'); process.exit(1); }
console.log('check-cuda: CUDA addon loads; cuda usable =', c.usable, c.usable ? '' : '(' + c.reason + ')');
"
