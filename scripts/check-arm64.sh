#!/usr/bin/env bash
# arm64 check on an x86-64 machine: cross-compiles the native op test (NEON kernels included)
# and runs it under qemu-user, so the NEON kernel set is tested against the reference too.
# Installs the cross compiler and qemu from Debian's packages when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 || ! command -v qemu-aarch64 >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq >/dev/null && apt-get install -y -qq g++-aarch64-linux-gnu qemu-user >/dev/null
  else
    echo "check-arm64: no aarch64 cross compiler or qemu-aarch64; skipping"; exit 0
  fi
fi
srcs=$(node scripts/sources.js core test)
mkdir -p build-arm64
# shellcheck disable=SC2086
aarch64-linux-gnu-g++ -std=c++17 -O2 -pthread -static -Inative/include $srcs -o build-arm64/tessera_native_test
qemu-aarch64 build-arm64/tessera_native_test
