// AVX-512 (F/BW/VL) kernel set: 16 lanes, masked tails. Compiled for a baseline x86-64 target
// like kernels_avx2.cc and used only when cpu_features() found AVX-512 (see that file's notes).
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>

#include <cmath>

#include <cstring>

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

#include "x86_kquant_helpers.h"  // NOLINT(build/include): internal-linkage copies for this target

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
    _mm_prefetch(reinterpret_cast<const char*>(w + i + 1024), _MM_HINT_T0);  // 4 KB ahead
    _mm_prefetch(reinterpret_cast<const char*>(w + i + 1040), _MM_HINT_T0);
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
    // decode streams each weight row once: fetch 4 KB ahead (past the row end is harmless)
    _mm_prefetch(reinterpret_cast<const char*>(w + i + 2048), _MM_HINT_T0);
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
    _mm_prefetch(reinterpret_cast<const char*>(w + i + 2048), _MM_HINT_T0);  // 4 KB ahead
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

// ---- k-quants ----

// (q4_k_scale_bytes and unpack_q6_k_half: x86_kquant_helpers.h)

// sm[0..7] = d * sc[j], sm[8..15] = dmin * m[j] (exact in float).
inline void q4_k_scales_f32(const BlockQ4_K& blk, float* sm) {
  const __m512 dd = _mm512_mask_blend_ps((__mmask16)0xff00, _mm512_set1_ps(scalar_f16(blk.d)),
                                         _mm512_set1_ps(scalar_f16(blk.dmin)));
  _mm512_store_ps(sm, _mm512_mul_ps(dd, _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q4_k_scale_bytes(blk.scales)))));
}

// q4_k: per sub-block of 32, d*sc * sum(x q) - dmin*m * sum(x). 16 bytes of qs at a time are
// widened to 16 int32 lanes; the low nibble belongs to x[l], the high one to x[32 + l].
float dot_q4_k(const float* x, const BlockQ4_K* w, int64_t n) {
  const __m512i mask = _mm512_set1_epi32(0x0f);
  __m512 q0 = _mm512_setzero_ps(), q1 = _mm512_setzero_ps();
  __m512 m0 = _mm512_setzero_ps(), m1 = _mm512_setzero_ps();
  alignas(64) float sm[16];
  for (int64_t b = 0; b < n / 256; b++) {
    q4_k_scales_f32(w[b], sm);
    for (int c = 0; c < 4; c++, x += 64) {
      const uint8_t* q = w[b].qs + 32 * c;
      const __m512i r0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)q));
      const __m512i r1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(q + 16)));
      const __m512 xl0 = _mm512_loadu_ps(x), xl1 = _mm512_loadu_ps(x + 16);
      const __m512 xh0 = _mm512_loadu_ps(x + 32), xh1 = _mm512_loadu_ps(x + 48);
      __m512 pl = _mm512_mul_ps(xl0, _mm512_cvtepi32_ps(_mm512_and_si512(r0, mask)));
      pl = _mm512_fmadd_ps(xl1, _mm512_cvtepi32_ps(_mm512_and_si512(r1, mask)), pl);
      __m512 ph = _mm512_mul_ps(xh0, _mm512_cvtepi32_ps(_mm512_srli_epi32(r0, 4)));
      ph = _mm512_fmadd_ps(xh1, _mm512_cvtepi32_ps(_mm512_srli_epi32(r1, 4)), ph);
      q0 = _mm512_fmadd_ps(_mm512_set1_ps(sm[2 * c]), pl, q0);
      q1 = _mm512_fmadd_ps(_mm512_set1_ps(sm[2 * c + 1]), ph, q1);
      m0 = _mm512_fmadd_ps(_mm512_set1_ps(sm[8 + 2 * c]), _mm512_add_ps(xl0, xl1), m0);
      m1 = _mm512_fmadd_ps(_mm512_set1_ps(sm[8 + 2 * c + 1]), _mm512_add_ps(xh0, xh1), m1);
    }
  }
  return _mm512_reduce_add_ps(_mm512_sub_ps(_mm512_add_ps(q0, q1), _mm512_add_ps(m0, m1)));
}

// sd[i] = d * scales[i] (exact in float).
inline void q6_k_scales_f32(const BlockQ6_K& blk, float* sd) {
  _mm512_store_ps(sd, _mm512_mul_ps(_mm512_set1_ps(scalar_f16(blk.d)), load_i8(blk.scales)));
}

// q6_k: per sub-block of 16 (one zmm), (d * scale) * sum(x (q - 32)). The unpacked bytes go
// through a stack buffer so that the widening loads take them straight from memory.
float dot_q6_k(const float* x, const BlockQ6_K* w, int64_t n) {
  __m512 acc[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
  alignas(64) float sd[16];
  alignas(32) int8_t qb[128];
  for (int64_t b = 0; b < n / 256; b++) {
    q6_k_scales_f32(w[b], sd);
    for (int h = 0; h < 2; h++, x += 128) {
      unpack_q6_k_half(w[b].ql + 64 * h, w[b].qh + 32 * h, qb);
      for (int s = 0; s < 8; s++) {
        const __m512 p = _mm512_mul_ps(_mm512_loadu_ps(x + 16 * s), load_i8(qb + 16 * s));
        acc[s & 3] = _mm512_fmadd_ps(_mm512_set1_ps(sd[8 * h + s]), p, acc[s & 3]);
      }
    }
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3])));
}

// d*sc*q is exact in float, so the fused d*sc*q - dmin*m rounds once, like ggml's two-step form.
void q4_k_to_f32_row(const BlockQ4_K* x, float* y, int64_t n) {
  const __m512i mask = _mm512_set1_epi32(0x0f);
  alignas(64) float sm[16];
  for (int64_t b = 0; b < n / 256; b++) {
    q4_k_scales_f32(x[b], sm);
    for (int c = 0; c < 4; c++, y += 64) {
      const uint8_t* q = x[b].qs + 32 * c;
      const __m512 d1 = _mm512_set1_ps(sm[2 * c]), m1 = _mm512_set1_ps(sm[8 + 2 * c]);
      const __m512 d2 = _mm512_set1_ps(sm[2 * c + 1]), m2 = _mm512_set1_ps(sm[8 + 2 * c + 1]);
      for (int i = 0; i < 32; i += 16) {
        const __m512i r = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(q + i)));
        _mm512_storeu_ps(y + i, _mm512_fmsub_ps(d1, _mm512_cvtepi32_ps(_mm512_and_si512(r, mask)), m1));
        _mm512_storeu_ps(y + 32 + i, _mm512_fmsub_ps(d2, _mm512_cvtepi32_ps(_mm512_srli_epi32(r, 4)), m2));
      }
    }
  }
}

void q6_k_to_f32_row(const BlockQ6_K* x, float* y, int64_t n) {
  alignas(64) float sd[16];
  alignas(32) int8_t qb[128];
  for (int64_t b = 0; b < n / 256; b++) {
    q6_k_scales_f32(x[b], sd);
    for (int h = 0; h < 2; h++, y += 128) {
      unpack_q6_k_half(x[b].ql + 64 * h, x[b].qh + 32 * h, qb);
      for (int s = 0; s < 8; s++)
        _mm512_storeu_ps(y + 16 * s, _mm512_mul_ps(_mm512_set1_ps(sd[8 * h + s]), load_i8(qb + 16 * s)));
    }
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

// exp(x) for 16 floats (Cephes expf: range reduction by ln 2, degree-5 polynomial; ~1 ulp).
inline __m512 exp16(__m512 x) {
  x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.3762626647949f)), _mm512_set1_ps(-87.3365478515625f));
  __m512 fx = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(0.693359375f), x);
  x = _mm512_fnmadd_ps(fx, _mm512_set1_ps(-2.12194440e-4f), x);
  __m512 y = _mm512_set1_ps(1.9875691500E-4f);
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.3981999507E-3f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(8.3334519073E-3f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(4.1665795894E-2f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(1.6666665459E-1f));
  y = _mm512_fmadd_ps(y, x, _mm512_set1_ps(5.0000001201E-1f));
  y = _mm512_fmadd_ps(y, _mm512_mul_ps(x, x), _mm512_add_ps(x, _mm512_set1_ps(1.f)));
  const __m512i e = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(fx), _mm512_set1_epi32(127)), 23);
  return _mm512_mul_ps(y, _mm512_castsi512_ps(e));
}

float exp_sum(float* x, int64_t n, float max) {
  const __m512 vmax = _mm512_set1_ps(max), ninf = _mm512_set1_ps(-INFINITY);
  __m512 acc = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 v = _mm512_mask_loadu_ps(ninf, m, x + i);
    const __mmask16 finite = _mm512_cmp_ps_mask(v, ninf, _CMP_NEQ_UQ);
    const __m512 e = _mm512_maskz_mov_ps(finite, exp16(_mm512_sub_ps(v, vmax)));
    _mm512_mask_storeu_ps(x + i, m, e);
    acc = _mm512_add_ps(acc, e);
  }
  return _mm512_reduce_add_ps(acc);
}

void f32_to_f16_row(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    _mm256_mask_storeu_epi16(y + i, m, _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, x + i), _MM_FROUND_TO_NEAREST_INT));
  }
}

void swiglu_row(const float* g, const float* u, float* y, int64_t n) {
  const __m512 one = _mm512_set1_ps(1.f);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    const __m512 gv = _mm512_maskz_loadu_ps(m, g + i);
    const __m512 silu = _mm512_div_ps(gv, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), gv))));
    _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(silu, _mm512_maskz_loadu_ps(m, u + i)));
  }
}

}  // namespace

const Kernels kAvx512Kernels = {
    dot_f32,         dot_f16,         dot_bf16,        dot_q8_0,        dot_q4_0, axpy_f32,
    axpy_f16,        f16_to_f32_row,  bf16_to_f32_row, q8_0_to_f32_row, q4_0_to_f32_row,
    kNr,             gemm_panel,      dot_q4_k,        dot_q6_k,        q4_k_to_f32_row,
    q6_k_to_f32_row,
    exp_sum,         f32_to_f16_row,  swiglu_row,
};

}  // namespace tessera::cpu

#if defined(__clang__)
#pragma clang attribute pop
#elif defined(__GNUC__)
#pragma GCC pop_options
#endif

#endif  // x86-64
