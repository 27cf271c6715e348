#!/usr/bin/env bash
# Synthesises the benchmark models (random weights, real Llama 2 vocabulary) with tessera's own
# GGUF writer, and makes a Q4_K_M copy with llama.cpp's llama-quantize when one is given.
#
#   bench/prepare-models.sh [DIR]                       # DIR defaults to /tmp/tessera-bench/models
#   LLAMA_QUANTIZE=/tmp/tessera-bench/llama.cpp/build/bin/llama-quantize bench/prepare-models.sh
#
# Environment: PRESET (default 110m; or tinyllama-1.1b), TYPES (default "f16 q8_0 q4_0"),
# FORCE=1 rewrites files that exist, VOCAB (default test/data/models/llama2-vocab.gguf).
# Files: DIR/synthetic-<preset>-<type>.gguf, and DIR/synthetic-<preset>-q4_k_m.gguf from the F16 one.
# Models are big (110m: 257 MiB in F16); keep DIR out of the repository.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-/tmp/tessera-bench/models}"
PRESET="${PRESET:-110m}"
TYPES="${TYPES:-f16 q8_0 q4_0}"
VOCAB="${VOCAB:-$ROOT/test/data/models/llama2-vocab.gguf}"
mkdir -p "$DIR"

for type in $TYPES; do
  out="$DIR/synthetic-$PRESET-$type.gguf"
  if [[ -f "$out" && -z "${FORCE:-}" ]]; then echo "have  $out"; continue; fi
  echo "write $out"
  TESSERA_ROOT="$ROOT" OUT="$out" PRESET="$PRESET" TYPE="$type" VOCAB="$VOCAB" node -e '
    const t = require(process.env.TESSERA_ROOT);
    t.writeSyntheticModel(process.env.OUT, { preset: process.env.PRESET, dtype: process.env.TYPE, vocabFrom: process.env.VOCAB, seed: 1 })
      .then((n) => console.log(`      ${(n / 2 ** 20).toFixed(1)} MiB`))
      .catch((e) => { console.error(e); process.exit(1); });'
done

if [[ -n "${LLAMA_QUANTIZE:-}" ]]; then
  src="$DIR/synthetic-$PRESET-f16.gguf"
  out="$DIR/synthetic-$PRESET-q4_k_m.gguf"
  if [[ ! -f "$src" ]]; then echo "need $src for Q4_K_M (put f16 in TYPES)" >&2; exit 1; fi
  if [[ -f "$out" && -z "${FORCE:-}" ]]; then echo "have  $out"
  else
    echo "quantize $out"
    "$LLAMA_QUANTIZE" "$src" "$out" Q4_K_M "${QUANT_THREADS:-2}" > "$DIR/quantize-q4_k_m.log" 2>&1 \
      || { tail -20 "$DIR/quantize-q4_k_m.log" >&2; exit 1; }
    grep -E 'model size|quant size' "$DIR/quantize-q4_k_m.log" | sed 's/^/      /' || true
  fi
else
  echo "(LLAMA_QUANTIZE not set: no Q4_K_M file; see bench/README.md to build llama-quantize)"
fi
ls -l "$DIR"/synthetic-"$PRESET"-*.gguf
