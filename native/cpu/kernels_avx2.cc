// AVX2 + FMA + F16C kernel set. Compiled for a baseline x86-64 target: only the functions in
// this file use AVX2 (target pragma), and they run only after cpu_features() said the CPU has it.
#if defined(__x86_64__) || defined(_M_X64)

#include <immintrin.h>

#include <cmath>

#include <cstring>

#include "kernels.h"

// Everything below is compiled for AVX2; it is all internal linkage (anonymous namespace), so no
// AVX2 copy of an inline function can leak into code that runs on older CPUs.
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma,f16c"))), apply_to = function)
#elif defined(__GNUC__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
#endif

namespace tessera::cpu {
namespace {

#include "x86_kquant_helpers.h"  // NOLINT(build/include): internal-linkage copies for this target

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline __m256 load_f16(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p));
}

inline __m256 load_bf16(const uint16_t* p) {
  const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}

inline __m256 load_i8(const int8_t* p) {  // 8 int8 -> 8 floats
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i*)p)));
}

inline float scalar_f16(uint16_t h) { return _cvtsh_ss(h); }

float dot_f32(const float* x, const float* w, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  __m256 a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    // decode streams each weight row once: fetch 4 KB ahead (past the row end is harmless)
    _mm_prefetch(reinterpret_cast<const char*>(w + i + 1024), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(w + i + 1040), _MM_HINT_T0);
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(w + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), _mm256_loadu_ps(w + i + 8), a1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 16), _mm256_loadu_ps(w + i + 16), a2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 24), _mm256_loadu_ps(w + i + 24), a3);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(w + i), a0);
  float s = hsum(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  for (; i < n; i++) s += x[i] * w[i];
  return s;
}

float dot_f16(const float* x, const uint16_t* w, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    if ((i & 31) == 0) _mm_prefetch(reinterpret_cast<const char*>(w + i + 2048), _MM_HINT_T0);  // 4 KB ahead
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), load_f16(w + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), load_f16(w + i + 8), a1);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), load_f16(w + i), a0);
  float s = hsum(_mm256_add_ps(a0, a1));
  for (; i < n; i++) s += x[i] * scalar_f16(w[i]);
  return s;
}

float dot_bf16(const float* x, const uint16_t* w, int64_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    if ((i & 31) == 0) _mm_prefetch(reinterpret_cast<const char*>(w + i + 2048), _MM_HINT_T0);  // 4 KB ahead
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), load_bf16(w + i), a0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i + 8), load_bf16(w + i + 8), a1);
  }
  for (; i + 8 <= n; i += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + i), load_bf16(w + i), a0);
  float s = hsum(_mm256_add_ps(a0, a1));
  for (; i < n; i++) s += x[i] * bf16_to_f32(w[i]);
  return s;
}

float dot_q8_0(const float* x, const BlockQ8_0* w, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < n / 32; b++, x += 32) {
    const int8_t* q = w[b].qs;
    __m256 p = _mm256_mul_ps(_mm256_loadu_ps(x), load_i8(q));
    p = _mm256_fmadd_ps(_mm256_loadu_ps(x + 8), load_i8(q + 8), p);
    p = _mm256_fmadd_ps(_mm256_loadu_ps(x + 16), load_i8(q + 16), p);
    p = _mm256_fmadd_ps(_mm256_loadu_ps(x + 24), load_i8(q + 24), p);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(scalar_f16(w[b].d)), p, acc);
  }
  return hsum(acc);
}

// The 32 nibbles of a q4_0 block as two vectors of 16 signed bytes: elements 0..15 and 16..31.
inline void unpack_q4_0(const BlockQ4_0& blk, __m128i* lo, __m128i* hi) {
  const __m128i v = _mm_loadu_si128((const __m128i*)blk.qs);
  const __m128i mask = _mm_set1_epi8(0x0f), eight = _mm_set1_epi8(8);
  *lo = _mm_sub_epi8(_mm_and_si128(v, mask), eight);
  *hi = _mm_sub_epi8(_mm_and_si128(_mm_srli_epi16(v, 4), mask), eight);
}

inline __m256 i8x8_to_ps(__m128i v) { return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v)); }

float dot_q4_0(const float* x, const BlockQ4_0* w, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < n / 32; b++, x += 32) {
    __m128i lo, hi;
    unpack_q4_0(w[b], &lo, &hi);
    __m256 p = _mm256_mul_ps(_mm256_loadu_ps(x), i8x8_to_ps(lo));
    p = _mm256_fmadd_ps(_mm256_loadu_ps(x + 8), i8x8_to_ps(_mm_srli_si128(lo, 8)), p);
    p = _mm256_fmadd_ps(_mm256_loadu_ps(x + 16), i8x8_to_ps(hi), p);
    p = _mm256_fmadd_ps(_mm256_loadu_ps(x + 24), i8x8_to_ps(_mm_srli_si128(hi, 8)), p);
    acc = _mm256_fmadd_ps(_mm256_set1_ps(scalar_f16(w[b].d)), p, acc);
  }
  return hsum(acc);
}

void axpy_f32(float* y, float a, const float* x, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; i++) y[i] += a * x[i];
}

void axpy_f16(float* y, float a, const uint16_t* x, int64_t n) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(y + i, _mm256_fmadd_ps(va, load_f16(x + i), _mm256_loadu_ps(y + i)));
  for (; i < n; i++) y[i] += a * scalar_f16(x[i]);
}

void f16_to_f32_row(const uint16_t* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, load_f16(x + i));
  for (; i < n; i++) y[i] = scalar_f16(x[i]);
}

void bf16_to_f32_row(const uint16_t* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, load_bf16(x + i));
  for (; i < n; i++) y[i] = bf16_to_f32(x[i]);
}

void q8_0_to_f32_row(const BlockQ8_0* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / 32; b++, y += 32) {
    const __m256 d = _mm256_set1_ps(scalar_f16(x[b].d));
    for (int j = 0; j < 32; j += 8) _mm256_storeu_ps(y + j, _mm256_mul_ps(d, load_i8(x[b].qs + j)));
  }
}

void q4_0_to_f32_row(const BlockQ4_0* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / 32; b++, y += 32) {
    const __m256 d = _mm256_set1_ps(scalar_f16(x[b].d));
    __m128i lo, hi;
    unpack_q4_0(x[b], &lo, &hi);
    _mm256_storeu_ps(y, _mm256_mul_ps(d, i8x8_to_ps(lo)));
    _mm256_storeu_ps(y + 8, _mm256_mul_ps(d, i8x8_to_ps(_mm_srli_si128(lo, 8))));
    _mm256_storeu_ps(y + 16, _mm256_mul_ps(d, i8x8_to_ps(hi)));
    _mm256_storeu_ps(y + 24, _mm256_mul_ps(d, i8x8_to_ps(_mm_srli_si128(hi, 8))));
  }
}

// ---- k-quants ----

// (q4_k_scale_bytes and unpack_q6_k_half: x86_kquant_helpers.h)

// sm[0..7] = d * sc[j], sm[8..15] = dmin * m[j] (exact in float).
inline void q4_k_scales_f32(const BlockQ4_K& blk, float* sm) {
  const __m128i sb = q4_k_scale_bytes(blk.scales);
  _mm256_store_ps(sm, _mm256_mul_ps(_mm256_set1_ps(scalar_f16(blk.d)), _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(sb))));
  _mm256_store_ps(sm + 8, _mm256_mul_ps(_mm256_set1_ps(scalar_f16(blk.dmin)),
                                        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(sb, 8)))));
}

// q4_k: per sub-block of 32, d*sc * sum(x q) - dmin*m * sum(x). 8 bytes of qs at a time are
// widened to 8 int32 lanes; the low nibble belongs to x[l], the high one to x[32 + l].
float dot_q4_k(const float* x, const BlockQ4_K* w, int64_t n) {
  const __m256i mask = _mm256_set1_epi32(0x0f);
  __m256 q0 = _mm256_setzero_ps(), q1 = _mm256_setzero_ps();
  __m256 m0 = _mm256_setzero_ps(), m1 = _mm256_setzero_ps();
  alignas(32) float sm[16];
  for (int64_t b = 0; b < n / 256; b++) {
    q4_k_scales_f32(w[b], sm);
    for (int c = 0; c < 4; c++, x += 64) {
      const uint8_t* q = w[b].qs + 32 * c;
      __m256 pl = _mm256_setzero_ps(), ph = _mm256_setzero_ps();
      __m256 sl = _mm256_setzero_ps(), sh = _mm256_setzero_ps();
      for (int i = 0; i < 32; i += 8) {
        const __m256i r = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(q + i)));
        const __m256 xl = _mm256_loadu_ps(x + i), xh = _mm256_loadu_ps(x + 32 + i);
        pl = _mm256_fmadd_ps(xl, _mm256_cvtepi32_ps(_mm256_and_si256(r, mask)), pl);
        ph = _mm256_fmadd_ps(xh, _mm256_cvtepi32_ps(_mm256_srli_epi32(r, 4)), ph);
        sl = _mm256_add_ps(sl, xl);
        sh = _mm256_add_ps(sh, xh);
      }
      q0 = _mm256_fmadd_ps(_mm256_broadcast_ss(sm + 2 * c), pl, q0);
      q1 = _mm256_fmadd_ps(_mm256_broadcast_ss(sm + 2 * c + 1), ph, q1);
      m0 = _mm256_fmadd_ps(_mm256_broadcast_ss(sm + 8 + 2 * c), sl, m0);
      m1 = _mm256_fmadd_ps(_mm256_broadcast_ss(sm + 8 + 2 * c + 1), sh, m1);
    }
  }
  return hsum(_mm256_sub_ps(_mm256_add_ps(q0, q1), _mm256_add_ps(m0, m1)));
}

// sd[i] = d * scales[i] (exact in float).
inline void q6_k_scales_f32(const BlockQ6_K& blk, float* sd) {
  const __m256 d = _mm256_set1_ps(scalar_f16(blk.d));
  _mm256_store_ps(sd, _mm256_mul_ps(d, load_i8(blk.scales)));
  _mm256_store_ps(sd + 8, _mm256_mul_ps(d, load_i8(blk.scales + 8)));
}

// q6_k: per sub-block of 16, (d * scale) * sum(x (q - 32)). The unpacked bytes go through a
// stack buffer so that the widening loads take them straight from memory.
float dot_q6_k(const float* x, const BlockQ6_K* w, int64_t n) {
  __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
  alignas(32) float sd[16];
  alignas(32) int8_t qb[128];
  for (int64_t b = 0; b < n / 256; b++) {
    q6_k_scales_f32(w[b], sd);
    for (int h = 0; h < 2; h++, x += 128) {
      unpack_q6_k_half(w[b].ql + 64 * h, w[b].qh + 32 * h, qb);
      for (int s = 0; s < 8; s++) {
        __m256 p = _mm256_mul_ps(_mm256_loadu_ps(x + 16 * s), load_i8(qb + 16 * s));
        p = _mm256_fmadd_ps(_mm256_loadu_ps(x + 16 * s + 8), load_i8(qb + 16 * s + 8), p);
        acc[s & 3] = _mm256_fmadd_ps(_mm256_broadcast_ss(sd + 8 * h + s), p, acc[s & 3]);
      }
    }
  }
  return hsum(_mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3])));
}

// d*sc*q is exact in float, so the fused d*sc*q - dmin*m rounds once, like ggml's two-step form.
void q4_k_to_f32_row(const BlockQ4_K* x, float* y, int64_t n) {
  const __m256i mask = _mm256_set1_epi32(0x0f);
  alignas(32) float sm[16];
  for (int64_t b = 0; b < n / 256; b++) {
    q4_k_scales_f32(x[b], sm);
    for (int c = 0; c < 4; c++, y += 64) {
      const uint8_t* q = x[b].qs + 32 * c;
      const __m256 d1 = _mm256_broadcast_ss(sm + 2 * c), m1 = _mm256_broadcast_ss(sm + 8 + 2 * c);
      const __m256 d2 = _mm256_broadcast_ss(sm + 2 * c + 1), m2 = _mm256_broadcast_ss(sm + 8 + 2 * c + 1);
      for (int i = 0; i < 32; i += 8) {
        const __m256i r = _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i*)(q + i)));
        _mm256_storeu_ps(y + i, _mm256_fmsub_ps(d1, _mm256_cvtepi32_ps(_mm256_and_si256(r, mask)), m1));
        _mm256_storeu_ps(y + 32 + i, _mm256_fmsub_ps(d2, _mm256_cvtepi32_ps(_mm256_srli_epi32(r, 4)), m2));
      }
    }
  }
}

void q6_k_to_f32_row(const BlockQ6_K* x, float* y, int64_t n) {
  alignas(32) float sd[16];
  alignas(32) int8_t qb[128];
  for (int64_t b = 0; b < n / 256; b++) {
    q6_k_scales_f32(x[b], sd);
    for (int h = 0; h < 2; h++, y += 128) {
      unpack_q6_k_half(x[b].ql + 64 * h, x[b].qh + 32 * h, qb);
      for (int s = 0; s < 8; s++) {
        const __m256 sc = _mm256_broadcast_ss(sd + 8 * h + s);
        _mm256_storeu_ps(y + 16 * s, _mm256_mul_ps(sc, load_i8(qb + 16 * s)));
        _mm256_storeu_ps(y + 16 * s + 8, _mm256_mul_ps(sc, load_i8(qb + 16 * s + 8)));
      }
    }
  }
}

// Panel GEMM: MR rows of x x 16 panel columns (2 ymm) = 12 accumulators (+2 panel +1 broadcast).
constexpr int kNr = 16;
template <int MR>
void gemm_block(const float* x, int64_t ldx, const float* panel, float* y, int64_t ldy, int32_t nr,
                int64_t k) {
  __m256 acc[MR][2];
  for (int r = 0; r < MR; r++) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int64_t p = 0; p < k; p++) {
    const __m256 w0 = _mm256_loadu_ps(panel + p * kNr), w1 = _mm256_loadu_ps(panel + p * kNr + 8);
    for (int r = 0; r < MR; r++) {
      const __m256 xb = _mm256_broadcast_ss(x + r * ldx + p);
      acc[r][0] = _mm256_fmadd_ps(xb, w0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(xb, w1, acc[r][1]);
    }
  }
  for (int r = 0; r < MR; r++) {
    float* yr = y + r * ldy;
    if (nr == kNr) {
      _mm256_storeu_ps(yr, acc[r][0]);
      _mm256_storeu_ps(yr + 8, acc[r][1]);
    } else {
      alignas(32) float tmp[kNr];
      _mm256_store_ps(tmp, acc[r][0]);
      _mm256_store_ps(tmp + 8, acc[r][1]);
      for (int j = 0; j < nr; j++) yr[j] = tmp[j];
    }
  }
}

void gemm_panel(const float* x, int64_t ldx, const float* panel, float* y, int64_t ldy, int64_t m,
                int32_t nr, int64_t k) {
  int64_t i = 0;
  for (; i + 6 <= m; i += 6) gemm_block<6>(x + i * ldx, ldx, panel, y + i * ldy, ldy, nr, k);
  switch (m - i) {
    case 5: gemm_block<5>(x + i * ldx, ldx, panel, y + i * ldy, ldy, nr, k); break;
    case 4: gemm_block<4>(x + i * ldx, ldx, panel, y + i * ldy, ldy, nr, k); break;
    case 3: gemm_block<3>(x + i * ldx, ldx, panel, y + i * ldy, ldy, nr, k); break;
    case 2: gemm_block<2>(x + i * ldx, ldx, panel, y + i * ldy, ldy, nr, k); break;
    case 1: gemm_block<1>(x + i * ldx, ldx, panel, y + i * ldy, ldy, nr, k); break;
    default: break;
  }
}

// exp(x) for 8 floats (Cephes expf: range reduction by ln 2, degree-5 polynomial; ~1 ulp).
inline __m256 exp8(__m256 x) {
  x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.3762626647949f)), _mm256_set1_ps(-87.3365478515625f));
  __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500E-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

float exp_sum(float* x, int64_t n, float max) {
  const __m256 vmax = _mm256_set1_ps(max), ninf = _mm256_set1_ps(-INFINITY);
  __m256 acc = _mm256_setzero_ps();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 e = _mm256_andnot_ps(_mm256_cmp_ps(v, ninf, _CMP_EQ_OQ), exp8(_mm256_sub_ps(v, vmax)));
    _mm256_storeu_ps(x + i, e);
    acc = _mm256_add_ps(acc, e);
  }
  float sum = hsum(acc);
  for (; i < n; i++) {
    x[i] = std::exp(x[i] - max);
    sum += x[i];
  }
  return sum;
}

void f32_to_f16_row(const float* x, uint16_t* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128((__m128i*)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; i++) y[i] = f32_to_f16(x[i]);
}

void swiglu_row(const float* g, const float* u, float* y, int64_t n) {
  const __m256 one = _mm256_set1_ps(1.f);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 gv = _mm256_loadu_ps(g + i);
    const __m256 silu = _mm256_div_ps(gv, _mm256_add_ps(one, exp8(_mm256_sub_ps(_mm256_setzero_ps(), gv))));
    _mm256_storeu_ps(y + i, _mm256_mul_ps(silu, _mm256_loadu_ps(u + i)));
  }
  for (; i < n; i++) y[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}


// Sum of the 32 int8 products x·y of one block as 8 int32 lanes -> float (llama.cpp's trick:
// maddubs needs an unsigned operand, so multiply |x| by y carrying x's sign).
inline __m256 mul_sum_i8(__m256i x, __m256i y) {
  const __m256i ax = _mm256_sign_epi8(x, x);
  const __m256i sy = _mm256_sign_epi8(y, x);
  const __m256i dot16 = _mm256_maddubs_epi16(ax, sy);
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(dot16, _mm256_set1_epi16(1)));
}

}  // namespace

float dot_q8_0_q8_0_avx2(const BlockQ8_0* x, const BlockQ8_0* w, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < n / 32; b++) {
    const __m256 d = _mm256_set1_ps(scalar_f16(x[b].d) * scalar_f16(w[b].d));
    const __m256i qx = _mm256_loadu_si256((const __m256i*)x[b].qs);
    const __m256i qw = _mm256_loadu_si256((const __m256i*)w[b].qs);
    acc = _mm256_fmadd_ps(d, mul_sum_i8(qx, qw), acc);
  }
  return hsum(acc);
}

float dot_q4_0_q8_0_avx2(const BlockQ8_0* x, const BlockQ4_0* w, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < n / 32; b++) {
    const __m256 d = _mm256_set1_ps(scalar_f16(x[b].d) * scalar_f16(w[b].d));
    __m128i lo, hi;
    unpack_q4_0(w[b], &lo, &hi);
    const __m256i qw = _mm256_set_m128i(hi, lo);
    const __m256i qx = _mm256_loadu_si256((const __m256i*)x[b].qs);
    acc = _mm256_fmadd_ps(d, mul_sum_i8(qx, qw), acc);
  }
  return hsum(acc);
}

namespace {
}  // namespace

const Kernels kAvx2Kernels = {
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
