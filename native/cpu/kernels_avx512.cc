// AVX-512 (F/BW/VL) kernel set: 16 lanes, masked tails. Compiled for a baseline x86-64 target
// like kernels_avx2.cc and used only when cpu_features() found AVX-512 (see that file's notes).
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>

#include "kernels.h"

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma,f16c"))), \
                             apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx2,fma,f16c")
// GCC 12's AVX-512 headers trip these on _mm512_undefined_*() (a known false positive).
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace tessera::cpu {
namespace {

inline __mmask16 tail_mask(int64_t left) { return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1); }

inline __m512 load_f32(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
inline __m512 load_f16(const uint16_t* p, __mmask16 m) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}
inline __m512 load_bf16(const uint16_t* p, __mmask16 m) {
  const __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
}
inline __m512 load_i8(const int8_t* p) {  // 16 int8 -> 16 floats
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)p)));
}
inline float scalar_f16(uint16_t h) { return _cvtsh_ss(h); }

float dot_f32(const float* x, const float* w, int64_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), _mm512_loadu_ps(w + i), a0);
    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(w + i + 16), a1);
  }
  for (; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    a0 = _mm512_fmadd_ps(load_f32(x + i, m), load_f32(w + i, m), a0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

float dot_f16(const float* x, const uint16_t* w, int64_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), load_f16(w + i, 0xffff), a0);
    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), load_f16(w + i + 16, 0xffff), a1);
  }
  for (; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    a0 = _mm512_fmadd_ps(load_f32(x + i, m), load_f16(w + i, m), a0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

float dot_bf16(const float* x, const uint16_t* w, int64_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i), load_bf16(w + i, 0xffff), a0);
    a1 = _mm512_fmadd_ps(_mm512_loadu_ps(x + i + 16), load_bf16(w + i + 16, 0xffff), a1);
  }
  for (; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    a0 = _mm512_fmadd_ps(load_f32(x + i, m), load_bf16(w + i, m), a0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
}

float dot_q8_0(const float* x, const BlockQ8_0* w, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t b = 0; b < n / 32; b++, x += 32) {
    __m512 p = _mm512_mul_ps(_mm512_loadu_ps(x), load_i8(w[b].qs));
    p = _mm512_fmadd_ps(_mm512_loadu_ps(x + 16), load_i8(w[b].qs + 16), p);
    acc = _mm512_fmadd_ps(_mm512_set1_ps(scalar_f16(w[b].d)), p, acc);
  }
  return _mm512_reduce_add_ps(acc);
}

// Elements 0..15 (low nibbles) and 16..31 (high nibbles) of a q4_0 block as floats.
inline void unpack_q4_0(const BlockQ4_0& blk, __m512* lo, __m512* hi) {
  const __m128i v = _mm_loadu_si128((const __m128i*)blk.qs);
  const __m128i mask = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
  const __m128i l = _mm_sub_epi8(_mm_and_si128(v, mask), eight);
  const __m128i h = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(v, 4), mask), eight);
  *lo = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(l));
  *hi = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(h));
}

float dot_q4_0(const float* x, const BlockQ4_0* w, int64_t n) {
  __m512 acc = _mm512_setzero_ps();
  for (int64_t b = 0; b < n / 32; b++, x += 32) {
    __m512 lo, hi;
    unpack_q4_0(w[b], &lo, &hi);
    const __m512 p = _mm512_fmadd_ps(_mm512_loadu_ps(x + 16), hi, _mm512_mul_ps(_mm512_loadu_ps(x), lo));
    acc = _mm512_fmadd_ps(_mm512_set1_ps(scalar_f16(w[b].d)), p, acc);
  }
  return _mm512_reduce_add_ps(acc);
}

void axpy_f32(float* y, float a, const float* x, int64_t n) {
  const __m512 va = _mm512_set1_ps(a);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(va, load_f32(x + i, m), load_f32(y + i, m)));
  }
}

void axpy_f16(float* y, float a, const uint16_t* x, int64_t n) {
  const __m512 va = _mm512_set1_ps(a);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(va, load_f16(x + i, m), load_f32(y + i, m)));
  }
}

void f16_to_f32_row(const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m, load_f16(x + i, m));
  }
}

void bf16_to_f32_row(const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    _mm512_mask_storeu_ps(y + i, m, load_bf16(x + i, m));
  }
}

void q8_0_to_f32_row(const BlockQ8_0* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / 32; b++, y += 32) {
    const __m512 d = _mm512_set1_ps(scalar_f16(x[b].d));
    _mm512_storeu_ps(y, _mm512_mul_ps(d, load_i8(x[b].qs)));
    _mm512_storeu_ps(y + 16, _mm512_mul_ps(d, load_i8(x[b].qs + 16)));
  }
}

void q4_0_to_f32_row(const BlockQ4_0* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / 32; b++, y += 32) {
    const __m512 d = _mm512_set1_ps(scalar_f16(x[b].d));
    __m512 lo, hi;
    unpack_q4_0(x[b], &lo, &hi);
    _mm512_storeu_ps(y, _mm512_mul_ps(d, lo));
    _mm512_storeu_ps(y + 16, _mm512_mul_ps(d, hi));
  }
}

// Panel GEMM: MR rows of x x 32 panel columns (2 zmm) = 24 accumulators (+2 panel +1 broadcast
// of the 32 registers); each step is 2 panel loads and MR broadcasts for 2*MR FMAs.
constexpr int kNr = 32;
template <int MR>
void gemm_block(const float* x, int64_t ldx, const float* panel, float* y, int64_t ldy, int32_t nr,
                int64_t k) {
  __m512 acc[MR][2];
  for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < k; p++) {
    const __m512 w0 = _mm512_loadu_ps(panel + p * kNr), w1 = _mm512_loadu_ps(panel + p * kNr + 16);
    for (int r = 0; r < MR; r++) {
      const __m512 xb = _mm512_set1_ps(x[r * ldx + p]);
      acc[r][0] = _mm512_fmadd_ps(xb, w0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(xb, w1, acc[r][1]);
    }
  }
  const __mmask16 m0 = tail_mask(nr), m1 = tail_mask(nr > 16 ? nr - 16 : 0);
  for (int r = 0; r < MR; r++) {
    _mm512_mask_storeu_ps(y + r * ldy, m0, acc[r][0]);
    _mm512_mask_storeu_ps(y + r * ldy + 16, m1, acc[r][1]);
  }
}

template <int MR>
void gemm_tail(const float* x, int64_t ldx, const float* panel, float* y, int64_t ldy, int32_t nr,
               int64_t k, int64_t rows) {
  if constexpr (MR > 0) {
    if (rows == MR) gemm_block<MR>(x, ldx, panel, y, ldy, nr, k);
    else gemm_tail<MR - 1>(x, ldx, panel, y, ldy, nr, k, rows);
  }
}

void gemm_panel(const float* x, int64_t ldx, const float* panel, float* y, int64_t ldy, int64_t m,
                int32_t nr, int64_t k) {
  int64_t i = 0;
  for (; i + 12 <= m; i += 12) gemm_block<12>(x + i * ldx, ldx, panel, y + i * ldy, ldy, nr, k);
  if (i < m) gemm_tail<11>(x + i * ldx, ldx, panel, y + i * ldy, ldy, nr, k, m - i);
}

}  // namespace

const Kernels kAvx512Kernels = {
    dot_f32,         dot_f16,         dot_bf16,        dot_q8_0,        dot_q4_0, axpy_f32,
    axpy_f16,        f16_to_f32_row,  bf16_to_f32_row, q8_0_to_f32_row, q4_0_to_f32_row,
    kNr,             gemm_panel,
};

}  // namespace tessera::cpu

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

#endif  // x86-64
