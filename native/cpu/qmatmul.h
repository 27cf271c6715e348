// Integer matmul of quantised weights with int8-quantised activations (AVX512-VNNI), the path
// llama.cpp takes for quantised files, on weights repacked once at load time.
//
// Why repack: a GGUF row stores 32 weights of one output next to each other, so a dot product per
// row ends in a horizontal sum per block. The packed layout interleaves 16 output rows ("a tile")
// four k-values at a time, which is what VPDPBUSD consumes: one 64-byte load holds 4 consecutive
// weights of each of 16 rows, the matching 4 activation bytes are broadcast, and each of the 16
// int32 lanes accumulates one output. No horizontal sums, one instruction per 64 multiply-adds,
// and each weight tile is reused by every activation row of a prefill batch.
//
// Every supported type is written as   w = s_g * (u - off) - mn_g   with u an unsigned code (VNNI
// multiplies unsigned bytes by signed bytes, so weights are the unsigned operand):
//   q8_0: u = q + 128 (8 bits),  off = 128, s = d,             groups of 32
//   q4_0: u = nibble,            off = 8,   s = d,             groups of 32
//   q4_k: u = nibble,            off = 0,   s = d*sc, mn = dmin*m, groups of 32
//   q6_k: u = 6-bit code,        off = 32,  s = d*sc,          groups of 16
// The offset is removed exactly in integers (off * sum of the activation codes of the group); s and
// mn are stored as f16 (exact for q8_0/q4_0, the products d*sc and dmin*m rounded for k-quants:
// relative error 2^-12, far below the activation rounding every int8 path already has).
//
// Tile layout (16 rows j0..j0+15, all of k), 64-byte aligned:
//   codes: per block of 32 k-values b:
//     8-bit types: 512 bytes, byte [g][r][i] = u[j0 + r][32 b + 4 g + i], g = 0..7
//     4-bit types: 256 bytes, byte [g][r][i] = u[..][32 b + 4 g + i] | u[..][32 b + 4 (g + 4) + i] << 4
//   scales: f16 s[group][r]; then for q4_k f16 mn[group][r]
// Rows past n in the last tile are zero (their outputs are not written).
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "tessera/dtype.h"

namespace tessera {
class ThreadPool;
}

namespace tessera::cpu {

constexpr int kTileRows = 16;

struct PackedWeight {
  DType dtype = DType::F32;  // the source type
  int64_t n = 0, k = 0;
  int64_t n_tiles = 0;
  int64_t tile_bytes = 0;  // multiple of 64
  int64_t code_bytes = 0;  // per tile, before the scales
  uint8_t* data = nullptr;  // n_tiles * tile_bytes, 64-byte aligned
  ~PackedWeight();
  PackedWeight() = default;
  PackedWeight(const PackedWeight&) = delete;
  PackedWeight& operator=(const PackedWeight&) = delete;
  int64_t bytes() const { return n_tiles * tile_bytes; }
};

// Whether this CPU has the instructions of the packed path (AVX512 F/BW/VL + VNNI).
bool int8_path_supported();
// AMX-INT8 for prefill (16+ activation rows): the CPU has it and the OS granted the tile state
// (Linux arch_prctl). Used while enabled (TESSERA_AMX=0 turns it off; tests switch it).
bool amx_supported();
bool amx_enabled();
void set_amx_enabled(bool on);
// Whether matmul_multi uses packed weights right now: supported and the active kernel set is
// AVX-512 (TESSERA_CPU_ISA=avx2 or set_active_isa turn it off, and the original rows are used).
bool int8_path_active();
bool packable(DType t);
// Repacks w (n, k) of a packable type (k a multiple of the type's block). Returns null when the
// type is not packable or a derived f16 scale would overflow (the caller keeps the original
// rows). Parallel over tiles when a pool is given.
std::unique_ptr<PackedWeight> pack_weight(const void* w, DType t, int64_t n, int64_t k, ThreadPool* pool = nullptr);

// Activations quantised per 32 values exactly as ggml's quantize_row_q8_0 (x ≈ d * q, d rounded
// to f16), plus the sums the kernels need. Rows are k apart in q.
struct QuantRows {
  int64_t m = 0, k = 0;
  // With 16+ rows each array holds a multiple of 16 rows, rows past m zeros (AMX works on 16-row
  // blocks); with fewer, exactly m rows.
  std::vector<int8_t> q;     // m * k
  std::vector<float> d;      // m * k/32
  std::vector<int32_t> s32;  // m * k/32: sum of q per 32
  std::vector<int32_t> s16;  // m * k/16: sum of q per 16
  std::vector<float> ds;     // m * k/32: d * s32 (the weight mins multiply it)
  // q again as AMX A tiles, when the AMX kernel will run (else empty): for 16-row block rb and
  // k-block b, 512 contiguous bytes qa[(rb * k/32 + b) * 512 + 32 r + j] = q[(16 rb + r) * k + 32 b + j].
  std::vector<int8_t> qa;
  void resize(int64_t m_, int64_t k_);
  void build_tiles();
};
// Scalar quantiser (the reference) and the dispatching one (AVX-512 when active); both give
// identical bytes. k % 32 == 0.
void quantize_rows_ref(const float* x, int64_t m, int64_t k, QuantRows& out);
void quantize_rows(ThreadPool* pool, const float* x, int64_t m, int64_t k, QuantRows& out);

// y (m, n, row stride ldy) = x · wᵀ for tiles [t0, t1) of a packed weight. Requires
// int8_path_supported().
void packed_matmul_tiles(const PackedWeight& w, const QuantRows& x, float* y, int64_t ldy, int64_t t0, int64_t t1);

// The float64 reference of the packed path for tests: dequantised activations times the
// weight values the packed layout encodes (read back from the packed bytes, f16 scales included).
void packed_matmul_ref(const PackedWeight& w, const QuantRows& x, float* y, int64_t ldy);

#if defined(__x86_64__) || defined(_M_X64)
void packed_matmul_tiles_amx(const PackedWeight& w, const QuantRows& x, float* y, int64_t ldy, int64_t t0, int64_t t1);
// Test hook (needs amx_supported()): runs the AMX kernel on a thread holding another tile
// configuration, then on one holding none; true when each was left as it was.
bool amx_thread_state_kept(const PackedWeight& w, const QuantRows& x, float* y);
void quantize_rows_avx512(const float* x, int64_t k, QuantRows& out, int64_t r0, int64_t r1);
void packed_matmul_tiles_vnni(const PackedWeight& w, const QuantRows& x, float* y, int64_t ldy, int64_t t0, int64_t t1);
#endif

}  // namespace tessera::cpu
