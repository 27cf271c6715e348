#!/usr/bin/env bash
# The one GPU check of the CUDA backend, for a session lent a GPU (../shared/device/README.md).
#
# Here (no GPU needed), after npm ci:   bash bench/gpu/check.sh --prepare
#   builds build-gpu/ for sm_90 with this machine's nvcc and copies the three binaries (parity test,
#   model test, benchmark) into .device/bin/; builds the TypeScript layer and an sm_90 CUDA addon
#   into .device/pkg/ (dist/ + build-cuda/Release/tessera_cuda.node); packs node into .device/
#   (../shared/device/prepare.sh). The models and reference outputs are the repository's own
#   (test/data/, models/), which travel with the working tree. Then ONE call:
#     run  carry: [".device"]
#          command: "source .device/node-env.sh; bash bench/gpu/check.sh"   timeout_s: 600
#   (about 6 minutes; a rerun of some steps: bash bench/gpu/check.sh parity model node)
# On the device it runs, each step bounded by `timeout` so one hang cannot eat the lease:
#   1. the op parity test (every CUDA op vs the CPU op on random inputs)
#   2. the model test (CudaLlama vs the CPU model, teacher-forced greedy on stories260K and
#      synthetic bf16/q4_0/q4_k/q6_k/qwen2 models)
#   3. the TypeScript layer on the GPU (node-check.mjs: loadModel({ device: 'cuda' }) greedy vs the
#      CPU, and generate() tokens/s through the API on a TinyLlama-1.1B shape)
#   4. the benchmark plan (bench/gpu/plan.py) with tessera, then 5. with PyTorch (torch_ref.py)
#   6. the markdown report pairing them (report.py), printed last.
# Logs go to $OUT (the device tool brings that folder back).
set -uo pipefail
cd "$(dirname "$0")/../.."
root=$(pwd)

if [ "${1:-}" = "--prepare" ]; then
  set -e
  NVCC=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
  cmake -S . -B build-gpu -DTESSERA_CUDA=ON -DTESSERA_NATIVE_TESTS=ON -DCMAKE_BUILD_TYPE=Release \
    -DTESSERA_CUDA_ARCHS=90-real -DCMAKE_CUDA_COMPILER="$NVCC" >/dev/null
  cmake --build build-gpu -j 2 --target tessera_cuda_parity_test tessera_cuda_model_test tessera_cuda_bench
  mkdir -p .device/bin
  cp build-gpu/tessera_cuda_parity_test build-gpu/tessera_cuda_model_test build-gpu/tessera_cuda_bench .device/bin/
  grep -qx '/.device/' .git/info/exclude 2>/dev/null || echo '/.device/' >> .git/info/exclude
  npm run build:ts >/dev/null
  npx cmake-js compile --out build-gpu-addon --CDTESSERA_CUDA_ARCHS=90-real >/dev/null
  rm -rf .device/pkg && mkdir -p .device/pkg/build-cuda/Release
  cp build-gpu-addon/Release/tessera_cuda.node .device/pkg/build-cuda/Release/
  strip --strip-unneeded .device/pkg/build-cuda/Release/tessera_cuda.node 2>/dev/null || true
  cp -r dist .device/pkg/dist
  cp package.json .device/pkg/
  bash "$root/../shared/device/prepare.sh"
  du -sh .device
  echo "prepared: carry .device"
  exit 0
fi

OUT=${OUT:-/tmp/tessera-gpu}
mkdir -p "$OUT"
status=0
step() {  # step <name> <seconds> <log> <command...>
  local name=$1 secs=$2 log=$3
  shift 3
  echo "=== $name (limit ${secs}s)"
  local t0=$SECONDS
  timeout "$secs" "$@" >"$OUT/$log" 2>&1
  local rc=$?
  tail -n 25 "$OUT/$log"
  echo "=== $name: rc $rc in $((SECONDS - t0)) s"
  [ $rc -eq 0 ] || status=1
}

# Steps to run: all by default, or those named on the command line (e.g. a rerun after a fix:
# `bash bench/gpu/check.sh parity model`). Limits keep the whole run under the device tool's
# 600 s per call (about 6 minutes expected): parity 100, model 100, node 120, bench 180, torch 90.
want() { [ -z "$steps" ] || [[ " $steps " == *" $1 "* ]]; }
steps="$*"
nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
head -n 15 "$OUT/nvidia-smi.txt"
want parity && step "parity test" 100 parity.log ./.device/bin/tessera_cuda_parity_test
want model && step "model test" 100 model.log ./.device/bin/tessera_cuda_model_test "$root"
if want node; then
  if command -v node >/dev/null 2>&1; then
    step "node (loadModel on cuda)" 120 node.log node bench/gpu/node-check.mjs .device/pkg "$root"
  else
    echo "=== node: not found (source .device/node-env.sh first)"
    status=1
  fi
fi
python3 bench/gpu/plan.py bench/gpu/shapes.json "$root/test/data/models/llama2-vocab.gguf" >"$OUT/plan.txt"
want bench && step "tessera benchmark" 180 bench.log ./.device/bin/tessera_cuda_bench "$OUT/plan.txt"
want torch && step "torch benchmark" 90 torch.log env PYTHONUNBUFFERED=1 python3 bench/gpu/torch_ref.py "$OUT/plan.txt"
touch "$OUT/bench.log" "$OUT/torch.log" "$OUT/node.log" "$OUT/parity.log" "$OUT/model.log"
python3 bench/gpu/report.py "$OUT/bench.log" "$OUT/torch.log" "$OUT/node.log" >"$OUT/summary.md" 2>&1
echo "=== summary"
grep -hE "^cuda|passed|FAIL" "$OUT/parity.log" "$OUT/model.log" | tail -n 30
grep -h "^RESULT node\|^# .*first difference" "$OUT/node.log" 2>/dev/null
cat "$OUT/summary.md"
exit $status
