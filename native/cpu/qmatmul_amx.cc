// AMX-INT8 kernel of the packed int8 path for prefill (16 or more activation rows): the same packed
// weights (qmatmul.h) — their 64-byte rows of 16 columns x 4 k-bytes are exactly the layout AMX
// wants for the B operand — times q8_0-rounded activations, one 32-value block at a time:
//   C (16 rows x 16 columns, int32) = A (16 rows x 32 int8 activations) · B (32 x 16 unsigned codes)
// with TDPBSUD, then the per-block scales are applied in AVX-512 registers exactly as the VNNI
// kernel does (offset removed in integers, f32 multiply-add). q6_k runs two K = 16 products per
// block (one per scale group).
//
// Tile state is per thread and other libraries on the same thread may use AMX too (llama.cpp does,
// and caches its tile configuration per thread), so each call saves the thread's tile
// configuration and restores it (or releases the tiles) before returning.
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "qmatmul.h"

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"))), \
                             apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("amx-tile,amx-int8,avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace tessera::cpu {
namespace {

struct alignas(64) TileConfig {
  uint8_t palette_id = 0;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
};

// Tiles: 0 C (16 x 16 int32); 1 A (16 x 32 bytes); 2 B (8 x 64 bytes); 3 A for q6_k halves
// (16 x 16 bytes); 4 B for q6_k halves (4 x 64 bytes); 5, 6, 7 like 0, 1, 2.
TileConfig our_config() {
  TileConfig c;
  c.palette_id = 1;
  c.rows[0] = 16, c.colsb[0] = 64;
  c.rows[1] = 16, c.colsb[1] = 32;
  c.rows[2] = 8, c.colsb[2] = 64;
  c.rows[3] = 16, c.colsb[3] = 16;
  c.rows[4] = 4, c.colsb[4] = 64;
  c.rows[5] = 16, c.colsb[5] = 64;  // 5, 6, 7: a second C, A, B so two blocks are in flight
  c.rows[6] = 16, c.colsb[6] = 32;
  c.rows[7] = 8, c.colsb[7] = 64;
  return c;
}

class TileScope {
 public:
  // The compiler does not see ldtilecfg / sttilecfg touch memory (GCC 12 dropped the stores that
  // fill the configuration), hence the memory barriers.
  TileScope() {
    _tile_storeconfig(&saved_);
    __asm__ __volatile__("" : : "r"(&saved_) : "memory");
    config_ = our_config();
    __asm__ __volatile__("" : : "r"(&config_) : "memory");
    _tile_loadconfig(&config_);
  }
  ~TileScope() {
    __asm__ __volatile__("" : : "r"(&saved_) : "memory");
    if (saved_.palette_id != 0) _tile_loadconfig(&saved_);
    else _tile_release();
  }

 private:
  TileConfig saved_, config_;
};

enum Kind { kQ8_0, kQ4_0, kQ4_K, kQ6_K };

// Codes of one tile as 512 bytes per block (4-bit types unpacked; 8-bit types used in place).
const uint8_t* tile_codes(const PackedWeight& w, const uint8_t* tile, bool four, std::vector<uint8_t>& buf) {
  if (!four) return tile;
  const int64_t nb = w.k / 32;
  buf.resize((size_t)(nb * 512 + 64));
  uint8_t* out = reinterpret_cast<uint8_t*>(((uintptr_t)buf.data() + 63) & ~(uintptr_t)63);
  const __m512i lo_mask = _mm512_set1_epi8(0x0f);
  for (int64_t b = 0; b < nb; b++)
    for (int g = 0; g < 4; g++) {
      const __m512i raw = _mm512_load_si512(tile + b * 256 + g * 64);
      _mm512_store_si512(out + b * 512 + g * 64, _mm512_and_si512(raw, lo_mask));
      _mm512_store_si512(out + b * 512 + (g + 4) * 64, _mm512_and_si512(_mm512_srli_epi16(raw, 4), lo_mask));
    }
  return out;
}

// Applies one block's int32 products (c: 16 rows x 16 columns) to the 16 f32 accumulators.
template <int KIND>
inline void rescale(const int32_t* c, __m512 s, __m512 mn, int32_t off, const float* xd, const int32_t* xs,
                    const float* xds, int64_t stride, int64_t stride_s, __m512 (&out)[16]) {
  for (int r = 0; r < 16; r++) {
    __m512i acc = _mm512_load_si512(c + r * 16);
    if (off != 0) acc = _mm512_sub_epi32(acc, _mm512_set1_epi32(off * xs[r * stride_s]));
    out[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), _mm512_mul_ps(s, _mm512_set1_ps(xd[r * stride])), out[r]);
    if constexpr (KIND == kQ4_K) out[r] = _mm512_fnmadd_ps(mn, _mm512_set1_ps(xds[r * stride]), out[r]);
  }
}

template <int KIND>
void run_amx(const PackedWeight& w, const QuantRows& X, float* y, int64_t ldy, int64_t t0, int64_t t1) {
  constexpr bool four = KIND == kQ4_0 || KIND == kQ4_K;
  constexpr int32_t off = KIND == kQ8_0 ? 128 : KIND == kQ4_0 ? 8 : KIND == kQ6_K ? 32 : 0;
  const int64_t k = w.k, nb = k / 32, m = X.m;
  thread_local std::vector<uint8_t> unpacked;
  alignas(64) int32_t c0[16 * 16], c1[16 * 16];
  TileScope scope;
  for (int64_t t = t0; t < t1; t++) {
    const uint8_t* tile = w.data + t * w.tile_bytes;
    const uint16_t* S = reinterpret_cast<const uint16_t*>(tile + w.code_bytes);
    const uint16_t* MN = S + nb * kTileRows;
    const uint8_t* codes = tile_codes(w, tile, four, unpacked);
    const int64_t j0 = t * kTileRows;
    const int64_t left = std::min<int64_t>(kTileRows, w.n - j0);
    const __mmask16 mask = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
    for (int64_t r0 = 0; r0 < m; r0 += 16) {  // whole 16-row blocks: QuantRows pads with zero rows
      const int8_t* xa = X.qa.data() + r0 * k;  // this row block's A tiles, 512 bytes per k-block
      const float* xd = X.d.data() + r0 * nb;
      const int32_t* xs32 = X.s32.data() + r0 * nb;
      const int32_t* xs16 = X.s16.data() + r0 * 2 * nb;
      const float* xds = X.ds.data() + r0 * nb;
      __m512 out[16];
      for (int r = 0; r < 16; r++) out[r] = _mm512_setzero_ps();
      const __m512 zero = _mm512_setzero_ps();
      if constexpr (KIND == kQ6_K) {
        for (int64_t b = 0; b < nb; b++) {
          _tile_zero(0);
          _tile_zero(5);
          _tile_loadd(3, xa + b * 512, 32);
          _tile_loadd(4, codes + b * 512, 64);
          _tile_dpbsud(0, 3, 4);
          _tile_loadd(3, xa + b * 512 + 16, 32);
          _tile_loadd(4, codes + b * 512 + 256, 64);
          _tile_dpbsud(5, 3, 4);
          _tile_stored(0, c0, 64);
          _tile_stored(5, c1, 64);
          const __m512 s0 = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(S + 2 * b * kTileRows)));
          const __m512 s1 = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(S + (2 * b + 1) * kTileRows)));
          rescale<KIND>(c0, s0, zero, off, xd + b, xs16 + 2 * b, xds, nb, 2 * nb, out);
          rescale<KIND>(c1, s1, zero, off, xd + b, xs16 + 2 * b + 1, xds, nb, 2 * nb, out);
        }
      } else {
        auto scales = [&](int64_t b, __m512& s, __m512& mn) {
          s = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(S + b * kTileRows)));
          mn = KIND == kQ4_K ? _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(MN + b * kTileRows))) : zero;
        };
        int64_t b = 0;
        for (; b + 2 <= nb; b += 2) {  // two blocks in flight on tiles 0-2 and 5-7
          _tile_zero(0);
          _tile_zero(5);
          _tile_loadd(1, xa + b * 512, 32);
          _tile_loadd(2, codes + b * 512, 64);
          _tile_loadd(6, xa + (b + 1) * 512, 32);
          _tile_loadd(7, codes + (b + 1) * 512, 64);
          _tile_dpbsud(0, 1, 2);
          _tile_dpbsud(5, 6, 7);
          _tile_stored(0, c0, 64);
          _tile_stored(5, c1, 64);
          __m512 s, mn;
          scales(b, s, mn);
          rescale<KIND>(c0, s, mn, off, xd + b, xs32 + b, xds + b, nb, nb, out);
          scales(b + 1, s, mn);
          rescale<KIND>(c1, s, mn, off, xd + b + 1, xs32 + b + 1, xds + b + 1, nb, nb, out);
        }
        if (b < nb) {
          _tile_zero(0);
          _tile_loadd(1, xa + b * 512, 32);
          _tile_loadd(2, codes + b * 512, 64);
          _tile_dpbsud(0, 1, 2);
          _tile_stored(0, c0, 64);
          __m512 s, mn;
          scales(b, s, mn);
          rescale<KIND>(c0, s, mn, off, xd + b, xs32 + b, xds + b, nb, nb, out);
        }
      }
      const int rows = (int)std::min<int64_t>(16, m - r0);
      for (int r = 0; r < rows; r++) _mm512_mask_storeu_ps(y + (r0 + r) * ldy + j0, mask, out[r]);
    }
  }
}

bool request_amx() {
#if defined(__linux__)
  unsigned eax, ebx, ecx, edx;
  __asm__ volatile("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(7), "c"(0));
  const bool tile = (edx >> 24) & 1, int8 = (edx >> 25) & 1;
  if (!tile || !int8) return false;
  constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
#else
  return false;  // other systems need their own permission request; VNNI serves them
#endif
}

}  // namespace

bool amx_supported() {
  static const bool ok = request_amx();
  return ok;
}

bool amx_thread_state_kept(const PackedWeight& w, const QuantRows& x, float* y) {
  // 1. A thread with its own configuration keeps it.
  TileConfig foreign, after;
  foreign.palette_id = 1;
  foreign.rows[0] = 5, foreign.colsb[0] = 12;
  foreign.rows[6] = 3, foreign.colsb[6] = 40;
  __asm__ __volatile__("" : : "r"(&foreign) : "memory");
  _tile_loadconfig(&foreign);
  packed_matmul_tiles_amx(w, x, y, w.n, 0, w.n_tiles);
  _tile_storeconfig(&after);
  __asm__ __volatile__("" : : "r"(&after) : "memory");
  const bool kept = std::memcmp(&foreign, &after, sizeof(TileConfig)) == 0;
  _tile_release();
  // 2. A thread without one is left without one (tiles released).
  packed_matmul_tiles_amx(w, x, y, w.n, 0, w.n_tiles);
  _tile_storeconfig(&after);
  __asm__ __volatile__("" : : "r"(&after) : "memory");
  return kept && after.palette_id == 0;
}

void packed_matmul_tiles_amx(const PackedWeight& w, const QuantRows& x, float* y, int64_t ldy, int64_t t0, int64_t t1) {
  switch (w.dtype) {
    case DType::Q8_0: run_amx<kQ8_0>(w, x, y, ldy, t0, t1); break;
    case DType::Q4_0: run_amx<kQ4_0>(w, x, y, ldy, t0, t1); break;
    case DType::Q4_K: run_amx<kQ4_K>(w, x, y, ldy, t0, t1); break;
    case DType::Q6_K: run_amx<kQ6_K>(w, x, y, ldy, t0, t1); break;
    default: break;
  }
}

}  // namespace tessera::cpu

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

#endif  // x86-64
