// AVX512-VNNI kernels of the packed int8 path (layout and arithmetic in qmatmul.h): activation
// quantisation and the tile micro-kernel. Compiled for a baseline x86-64 target with a target
// pragma like kernels_avx512.cc, and called only when int8_path_supported().
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "qmatmul.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c"))), \
                             apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace tessera::cpu {
namespace {

// roundf (half away from zero), exactly: trunc, then add ±1 where the dropped part is >= 0.5.
inline __m512 round_half_away(__m512 v) {
  const __m512 t = _mm512_roundscale_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
  const __m512 frac = _mm512_sub_ps(v, t);
  const __m512 absf = _mm512_abs_ps(frac);
  const __mmask16 up = _mm512_cmp_ps_mask(absf, _mm512_set1_ps(0.5f), _CMP_GE_OQ);
  const __m512 one = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(_mm512_set1_ps(1.0f)),
                                                        _mm512_and_si512(_mm512_castps_si512(v),
                                                                         _mm512_set1_epi32((int)0x80000000u))));
  return _mm512_mask_add_ps(t, up, t, one);
}

inline int32_t load_i32(const int8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

enum Kind { kQ8_0, kQ4_0, kQ4_K, kQ6_K };

constexpr int64_t kPrefetch = 4096;  // bytes ahead of the block being read (a prefetch never faults)

// 16 output columns (one tile) x MR activation rows over all of k.
template <int KIND, int MR>
void tile_kernel(const uint8_t* tile, int64_t code_bytes, int64_t k, const QuantRows& X, int64_t r0, float* y,
                 int64_t ldy, __mmask16 mask) {
  constexpr bool four = KIND == kQ4_0 || KIND == kQ4_K;
  const int64_t nb = k / 32;
  const uint16_t* S = reinterpret_cast<const uint16_t*>(tile + code_bytes);
  const uint16_t* MN = S + nb * kTileRows;  // q4_k: groups of 32
  const int8_t* xq[MR];
  const float* xd[MR];
  const int32_t* xs32[MR];
  const int32_t* xs16[MR];
  const float* xds[MR];
  for (int r = 0; r < MR; r++) {
    xq[r] = X.q.data() + (r0 + r) * k;
    xd[r] = X.d.data() + (r0 + r) * nb;
    xs32[r] = X.s32.data() + (r0 + r) * nb;
    xs16[r] = X.s16.data() + (r0 + r) * 2 * nb;
    xds[r] = X.ds.data() + (r0 + r) * nb;
  }
  __m512 out[MR];
  for (int r = 0; r < MR; r++) out[r] = _mm512_setzero_ps();

  for (int64_t b = 0; b < nb; b++) {
    const uint8_t* cb = tile + b * (four ? 256 : 512);
    if constexpr (MR <= 4) {  // decode streams each weight once: fetch ~4 KB ahead (tiles are contiguous)
      for (int l = 0; l < (four ? 4 : 8); l++) _mm_prefetch(reinterpret_cast<const char*>(cb + kPrefetch + 64 * l), _MM_HINT_T0);
    }
    const int8_t* xb[MR];
    for (int r = 0; r < MR; r++) xb[r] = xq[r] + b * 32;
    if constexpr (KIND == kQ6_K) {
      for (int h = 0; h < 2; h++) {
        __m512i acc[MR];
        for (int r = 0; r < MR; r++) acc[r] = _mm512_set1_epi32(-32 * xs16[r][2 * b + h]);
        for (int g = 4 * h; g < 4 * h + 4; g++) {
          const __m512i w = _mm512_load_si512(cb + g * 64);
          for (int r = 0; r < MR; r++) acc[r] = _mm512_dpbusd_epi32(acc[r], w, _mm512_set1_epi32(load_i32(xb[r] + 4 * g)));
        }
        const __m512 s = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(S + (2 * b + h) * kTileRows)));
        for (int r = 0; r < MR; r++)
          out[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r]), _mm512_mul_ps(s, _mm512_set1_ps(xd[r][b])), out[r]);
      }
    } else {
      __m512i acc[MR];
      for (int r = 0; r < MR; r++) {
        if constexpr (KIND == kQ8_0) acc[r] = _mm512_set1_epi32(-128 * xs32[r][b]);
        else if constexpr (KIND == kQ4_0) acc[r] = _mm512_set1_epi32(-8 * xs32[r][b]);
        else acc[r] = _mm512_setzero_si512();
      }
      if constexpr (four) {
        const __m512i lo_mask = _mm512_set1_epi8(0x0f);
        for (int g = 0; g < 4; g++) {
          const __m512i raw = _mm512_load_si512(cb + g * 64);
          const __m512i lo = _mm512_and_si512(raw, lo_mask);
          const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(raw, 4), lo_mask);
          for (int r = 0; r < MR; r++) {
            acc[r] = _mm512_dpbusd_epi32(acc[r], lo, _mm512_set1_epi32(load_i32(xb[r] + 4 * g)));
            acc[r] = _mm512_dpbusd_epi32(acc[r], hi, _mm512_set1_epi32(load_i32(xb[r] + 4 * (g + 4))));
          }
        }
      } else {
        for (int g = 0; g < 8; g++) {
          const __m512i w = _mm512_load_si512(cb + g * 64);
          for (int r = 0; r < MR; r++) acc[r] = _mm512_dpbusd_epi32(acc[r], w, _mm512_set1_epi32(load_i32(xb[r] + 4 * g)));
        }
      }
      const __m512 s = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(S + b * kTileRows)));
      for (int r = 0; r < MR; r++)
        out[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r]), _mm512_mul_ps(s, _mm512_set1_ps(xd[r][b])), out[r]);
      if constexpr (KIND == kQ4_K) {
        const __m512 mn = _mm512_cvtph_ps(_mm256_load_si256(reinterpret_cast<const __m256i*>(MN + b * kTileRows)));
        for (int r = 0; r < MR; r++) out[r] = _mm512_fnmadd_ps(mn, _mm512_set1_ps(xds[r][b]), out[r]);
      }
    }
  }
  for (int r = 0; r < MR; r++) _mm512_mask_storeu_ps(y + (r0 + r) * ldy, mask, out[r]);
}

constexpr int kMr = 8;  // activation rows per micro-kernel call in prefill

template <int KIND>
void run_tiles(const PackedWeight& w, const QuantRows& X, float* y, int64_t ldy, int64_t t0, int64_t t1) {
  using Fn = void (*)(const uint8_t*, int64_t, int64_t, const QuantRows&, int64_t, float*, int64_t, __mmask16);
  static constexpr Fn fns[kMr + 1] = {nullptr,
                                      tile_kernel<KIND, 1>,
                                      tile_kernel<KIND, 2>,
                                      tile_kernel<KIND, 3>,
                                      tile_kernel<KIND, 4>,
                                      tile_kernel<KIND, 5>,
                                      tile_kernel<KIND, 6>,
                                      tile_kernel<KIND, 7>,
                                      tile_kernel<KIND, 8>};
  for (int64_t t = t0; t < t1; t++) {
    const uint8_t* tile = w.data + t * w.tile_bytes;
    const int64_t j0 = t * kTileRows;
    const int64_t left = std::min<int64_t>(kTileRows, w.n - j0);
    const __mmask16 mask = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
    for (int64_t r0 = 0; r0 < X.m; r0 += kMr) {
      const int rows = (int)std::min<int64_t>(kMr, X.m - r0);
      fns[rows](tile, w.code_bytes, w.k, X, r0, y + j0, ldy, mask);
    }
  }
}

}  // namespace

void quantize_rows_avx512(const float* x, int64_t k, QuantRows& out, int64_t r0, int64_t r1) {
  const int64_t nb = k / 32;
  for (int64_t i = r0; i < r1; i++) {
    const float* xr = x + i * k;
    for (int64_t b = 0; b < nb; b++) {
      const __m512 v0 = _mm512_loadu_ps(xr + b * 32), v1 = _mm512_loadu_ps(xr + b * 32 + 16);
      // fmax-like: a NaN element is ignored (max_ps returns the second operand on NaN)
      __m512 amax = _mm512_max_ps(_mm512_abs_ps(v0), _mm512_setzero_ps());
      amax = _mm512_max_ps(_mm512_abs_ps(v1), amax);
      const float d = _mm512_reduce_max_ps(amax) / 127.0f;
      const float id = d != 0.0f ? 1.0f / d : 0.0f;
      const __m512 vid = _mm512_set1_ps(id);
      const __m512i q0 = _mm512_cvtps_epi32(round_half_away(_mm512_mul_ps(v0, vid)));
      const __m512i q1 = _mm512_cvtps_epi32(round_half_away(_mm512_mul_ps(v1, vid)));
      int8_t* qo = out.q.data() + i * k + b * 32;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qo), _mm512_cvtsepi32_epi8(q0));
      _mm_storeu_si128(reinterpret_cast<__m128i*>(qo + 16), _mm512_cvtsepi32_epi8(q1));
      const int64_t gb = i * nb + b;
      const float dh = _cvtsh_ss(_cvtss_sh(d, _MM_FROUND_TO_NEAREST_INT));
      const int32_t s0 = _mm512_reduce_add_epi32(q0), s1 = _mm512_reduce_add_epi32(q1);
      out.d[gb] = dh;
      out.s16[2 * gb] = s0;
      out.s16[2 * gb + 1] = s1;
      out.s32[gb] = s0 + s1;
      out.ds[gb] = dh * (float)(s0 + s1);
    }
  }
}

void packed_matmul_tiles_vnni(const PackedWeight& w, const QuantRows& x, float* y, int64_t ldy, int64_t t0, int64_t t1) {
  switch (w.dtype) {
    case DType::Q8_0: run_tiles<kQ8_0>(w, x, y, ldy, t0, t1); break;
    case DType::Q4_0: run_tiles<kQ4_0>(w, x, y, ldy, t0, t1); break;
    case DType::Q4_K: run_tiles<kQ4_K>(w, x, y, ldy, t0, t1); break;
    case DType::Q6_K: run_tiles<kQ6_K>(w, x, y, ldy, t0, t1); break;
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
