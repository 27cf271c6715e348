// Portable kernel set: plain C++ with several accumulators (the baseline every CPU runs, and the
// reference the SIMD sets are tested against).
#include <algorithm>
#include <cmath>

#include "kernels.h"

namespace tessera::cpu {
namespace {

float dot_f32(const float* x, const float* w, int64_t n) {
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int j = 0; j < 8; j++) acc[j] += x[i + j] * w[i + j];
  float s = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
  for (; i < n; i++) s += x[i] * w[i];
  return s;
}

float dot_f16(const float* x, const uint16_t* w, int64_t n) {
  float acc[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int j = 0; j < 4; j++) acc[j] += x[i + j] * f16_to_f32(w[i + j]);
  float s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  for (; i < n; i++) s += x[i] * f16_to_f32(w[i]);
  return s;
}

float dot_bf16(const float* x, const uint16_t* w, int64_t n) {
  float acc[4] = {0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 4 <= n; i += 4)
    for (int j = 0; j < 4; j++) acc[j] += x[i + j] * bf16_to_f32(w[i + j]);
  float s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
  for (; i < n; i++) s += x[i] * bf16_to_f32(w[i]);
  return s;
}

float dot_q8_0(const float* x, const BlockQ8_0* w, int64_t n) {
  float s = 0;
  for (int64_t b = 0; b < n / 32; b++, x += 32) {
    float acc[4] = {0, 0, 0, 0};
    for (int j = 0; j < 32; j += 4)
      for (int t = 0; t < 4; t++) acc[t] += x[j + t] * (float)w[b].qs[j + t];
    s += f16_to_f32(w[b].d) * ((acc[0] + acc[1]) + (acc[2] + acc[3]));
  }
  return s;
}

float dot_q4_0(const float* x, const BlockQ4_0* w, int64_t n) {
  float s = 0;
  for (int64_t b = 0; b < n / 32; b++, x += 32) {
    float lo = 0, hi = 0;
    for (int j = 0; j < 16; j++) {
      lo += x[j] * (float)((w[b].qs[j] & 0x0f) - 8);
      hi += x[j + 16] * (float)((w[b].qs[j] >> 4) - 8);
    }
    s += f16_to_f32(w[b].d) * (lo + hi);
  }
  return s;
}

void axpy_f32(float* y, float a, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
}

void axpy_f16(float* y, float a, const uint16_t* x, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] += a * f16_to_f32(x[i]);
}

void f16_to_f32_row(const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = f16_to_f32(x[i]);
}

void bf16_to_f32_row(const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = bf16_to_f32(x[i]);
}

void q8_0_to_f32_row(const BlockQ8_0* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / 32; b++) {
    const float d = f16_to_f32(x[b].d);
    for (int j = 0; j < 32; j++) y[b * 32 + j] = d * (float)x[b].qs[j];
  }
}

void q4_0_to_f32_row(const BlockQ4_0* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / 32; b++) {
    const float d = f16_to_f32(x[b].d);
    for (int j = 0; j < 16; j++) {
      y[b * 32 + j] = d * (float)((x[b].qs[j] & 0x0f) - 8);
      y[b * 32 + j + 16] = d * (float)((x[b].qs[j] >> 4) - 8);
    }
  }
}

// 4 rows x 8 panel columns per block, plain loops the compiler can vectorise.
constexpr int kNr = 8;
void gemm_panel(const float* x, int64_t ldx, const float* panel, float* y, int64_t ldy, int64_t m,
                int32_t nr, int64_t k) {
  for (int64_t i0 = 0; i0 < m; i0 += 4) {
    const int64_t mr = std::min<int64_t>(4, m - i0);
    float acc[4][kNr] = {};
    for (int64_t p = 0; p < k; p++)
      for (int64_t r = 0; r < mr; r++) {
        const float xv = x[(i0 + r) * ldx + p];
        for (int j = 0; j < kNr; j++) acc[r][j] += xv * panel[p * kNr + j];
      }
    for (int64_t r = 0; r < mr; r++)
      for (int j = 0; j < nr; j++) y[(i0 + r) * ldy + j] = acc[r][j];
  }
}

}  // namespace

const Kernels kScalarKernels = {
    dot_f32,         dot_f16,         dot_bf16,        dot_q8_0,        dot_q4_0, axpy_f32,
    axpy_f16,        f16_to_f32_row,  bf16_to_f32_row, q8_0_to_f32_row, q4_0_to_f32_row,
    kNr,             gemm_panel,
};

}  // namespace tessera::cpu
