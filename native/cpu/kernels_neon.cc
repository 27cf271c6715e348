// NEON kernel set for arm64 (NEON is baseline there, so no run-time check is needed).
// The f32/f16 dot and axpy loops, which carry attention and f16 matmuls, are vectorised; the
// remaining entries (quantised dots, the panel GEMM) are the scalar set's.
#if defined(__aarch64__)

#include <arm_neon.h>

#include "kernels.h"

namespace tessera::cpu {
namespace {

float dot_f32(const float* x, const float* w, int64_t n) {
  float32x4_t a0 = vdupq_n_f32(0), a1 = vdupq_n_f32(0), a2 = vdupq_n_f32(0), a3 = vdupq_n_f32(0);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    a0 = vfmaq_f32(a0, vld1q_f32(x + i), vld1q_f32(w + i));
    a1 = vfmaq_f32(a1, vld1q_f32(x + i + 4), vld1q_f32(w + i + 4));
    a2 = vfmaq_f32(a2, vld1q_f32(x + i + 8), vld1q_f32(w + i + 8));
    a3 = vfmaq_f32(a3, vld1q_f32(x + i + 12), vld1q_f32(w + i + 12));
  }
  for (; i + 4 <= n; i += 4) a0 = vfmaq_f32(a0, vld1q_f32(x + i), vld1q_f32(w + i));
  float s = vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
  for (; i < n; i++) s += x[i] * w[i];
  return s;
}

inline float32x4_t load_f16(const uint16_t* p) {
  return vcvt_f32_f16(vreinterpret_f16_u16(vld1_u16(p)));
}

float dot_f16(const float* x, const uint16_t* w, int64_t n) {
  float32x4_t a0 = vdupq_n_f32(0), a1 = vdupq_n_f32(0);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    a0 = vfmaq_f32(a0, vld1q_f32(x + i), load_f16(w + i));
    a1 = vfmaq_f32(a1, vld1q_f32(x + i + 4), load_f16(w + i + 4));
  }
  float s = vaddvq_f32(vaddq_f32(a0, a1));
  for (; i < n; i++) s += x[i] * f16_to_f32(w[i]);
  return s;
}

void axpy_f32(float* y, float a, const float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), vld1q_f32(x + i), a));
  for (; i < n; i++) y[i] += a * x[i];
}

void axpy_f16(float* y, float a, const uint16_t* x, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(y + i, vfmaq_n_f32(vld1q_f32(y + i), load_f16(x + i), a));
  for (; i < n; i++) y[i] += a * f16_to_f32(x[i]);
}

void f16_to_f32_row(const uint16_t* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) vst1q_f32(y + i, load_f16(x + i));
  for (; i < n; i++) y[i] = f16_to_f32(x[i]);
}

Kernels make_neon() {
  Kernels k = kScalarKernels;  // constant-initialised, so safe to read during dynamic init
  k.dot_f32 = dot_f32;
  k.dot_f16 = dot_f16;
  k.axpy_f32 = axpy_f32;
  k.axpy_f16 = axpy_f16;
  k.f16_to_f32 = f16_to_f32_row;
  return k;
}

}  // namespace

const Kernels kNeonKernels = make_neon();

}  // namespace tessera::cpu

#endif  // __aarch64__
