// The CPU backend's inner loops, one table per instruction set (scalar, AVX2, AVX-512, NEON).
// The ops in native/cpu/*.cc call these through kernels(), which the dispatcher points at the
// best set the running CPU supports; every set is tested against the scalar one.
#pragma once

#include <cstdint>

#include "tessera/cpu_features.h"
#include "tessera/dtype.h"

namespace tessera::cpu {

struct Kernels {
  // Dot products of an f32 vector x (n) with one weight row of n elements in each storage type.
  float (*dot_f32)(const float* x, const float* w, int64_t n);
  float (*dot_f16)(const float* x, const uint16_t* w, int64_t n);
  float (*dot_bf16)(const float* x, const uint16_t* w, int64_t n);
  float (*dot_q8_0)(const float* x, const BlockQ8_0* w, int64_t n);  // n % 32 == 0
  float (*dot_q4_0)(const float* x, const BlockQ4_0* w, int64_t n);  // n % 32 == 0
  // y (n) += a * x (n), x in f32 or f16 (the value pass of attention).
  void (*axpy_f32)(float* y, float a, const float* x, int64_t n);
  void (*axpy_f16)(float* y, float a, const uint16_t* x, int64_t n);
  // Row conversions to f32 (dequantisation), n elements.
  void (*f16_to_f32)(const uint16_t* x, float* y, int64_t n);
  void (*bf16_to_f32)(const uint16_t* x, float* y, int64_t n);
  void (*q8_0_to_f32)(const BlockQ8_0* x, float* y, int64_t n);
  void (*q4_0_to_f32)(const BlockQ4_0* x, float* y, int64_t n);
  // Prefill GEMM on a packed weight panel: y (m, nr) = x (m, k, row stride ldx) · panelᵀ, where
  // panel is (k, gemm_nr) with panel[p * gemm_nr + j] = w[j][p] (columns past nr are zero).
  // Writes the first nr columns of each y row (row stride ldy). Register-blocked: broadcast x,
  // FMA against the panel, so each panel load feeds every row of the block.
  int gemm_nr;
  void (*gemm_panel)(const float* x, int64_t ldx, const float* panel, float* y, int64_t ldy,
                     int64_t m, int32_t nr, int64_t k);
  // k-quants (super-blocks of 256, n % 256 == 0): dot with an f32 vector, and row dequantisation.
  // Kept last: the tables are aggregate-initialised positionally.
  float (*dot_q4_k)(const float* x, const BlockQ4_K* w, int64_t n);
  float (*dot_q6_k)(const float* x, const BlockQ6_K* w, int64_t n);
  void (*q4_k_to_f32)(const BlockQ4_K* x, float* y, int64_t n);
  void (*q6_k_to_f32)(const BlockQ6_K* x, float* y, int64_t n);
  // x[i] = exp(x[i] - max) in place (exactly 0 where x[i] is -inf); returns the sum (softmax).
  float (*exp_sum)(float* x, int64_t n, float max);
  // f32 -> f16 rows (round to nearest even; KV cache writes) and y = silu(g) * u (the FFN).
  void (*f32_to_f16)(const float* x, uint16_t* y, int64_t n);
  void (*swiglu)(const float* g, const float* u, float* y, int64_t n);
};

// Integer dot products of q8_0-quantised activations with q8_0 / q4_0 weight rows (n % 32 == 0),
// as llama.cpp computes decode matmuls. AVX2 versions (AVX-512 CPUs use them too).
float dot_q8_0_q8_0_scalar(const BlockQ8_0* x, const BlockQ8_0* w, int64_t n);
float dot_q4_0_q8_0_scalar(const BlockQ8_0* x, const BlockQ4_0* w, int64_t n);
#if defined(__x86_64__) || defined(_M_X64)
float dot_q8_0_q8_0_avx2(const BlockQ8_0* x, const BlockQ8_0* w, int64_t n);
float dot_q4_0_q8_0_avx2(const BlockQ8_0* x, const BlockQ4_0* w, int64_t n);
#endif

extern const Kernels kScalarKernels;
#if defined(__x86_64__) || defined(_M_X64)
extern const Kernels kAvx2Kernels;
extern const Kernels kAvx512Kernels;
#endif
#if defined(__aarch64__)
extern const Kernels kNeonKernels;
#endif

// The active table (see set_active_isa in tessera/cpu_features.h).
const Kernels& kernels();
const Kernels& kernels_for(CpuIsa isa);

}  // namespace tessera::cpu
