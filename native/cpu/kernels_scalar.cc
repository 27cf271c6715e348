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

// Per sub-block of 32: d*sc * sum(x q) - dmin*m * sum(x), with q the raw nibble.
float dot_q4_k(const float* x, const BlockQ4_K* w, int64_t n) {
  float s = 0;
  for (int64_t b = 0; b < n / 256; b++) {
    uint8_t sc[8], m[8];
    q4_k_scales(w[b].scales, sc, m);
    float sq = 0, sm = 0;
    for (int c = 0; c < 4; c++, x += 64) {
      const uint8_t* q = w[b].qs + 32 * c;
      float lo[4] = {0, 0, 0, 0}, hi[4] = {0, 0, 0, 0}, xl[4] = {0, 0, 0, 0}, xh[4] = {0, 0, 0, 0};
      for (int l = 0; l < 32; l += 4)
        for (int t = 0; t < 4; t++) {
          lo[t] += x[l + t] * (float)(q[l + t] & 0x0f);
          hi[t] += x[32 + l + t] * (float)(q[l + t] >> 4);
          xl[t] += x[l + t];
          xh[t] += x[32 + l + t];
        }
      sq += (float)sc[2 * c] * ((lo[0] + lo[1]) + (lo[2] + lo[3])) +
            (float)sc[2 * c + 1] * ((hi[0] + hi[1]) + (hi[2] + hi[3]));
      sm += (float)m[2 * c] * ((xl[0] + xl[1]) + (xl[2] + xl[3])) +
            (float)m[2 * c + 1] * ((xh[0] + xh[1]) + (xh[2] + xh[3]));
    }
    s += f16_to_f32(w[b].d) * sq - f16_to_f32(w[b].dmin) * sm;
  }
  return s;
}

// Per sub-block of 16: d * scale * sum(x (q - 32)).
float dot_q6_k(const float* x, const BlockQ6_K* w, int64_t n) {
  float s = 0;
  for (int64_t b = 0; b < n / 256; b++) {
    float acc = 0;
    for (int h = 0; h < 2; h++, x += 128) {
      const uint8_t* ql = w[b].ql + 64 * h;
      const uint8_t* qh = w[b].qh + 32 * h;
      const int8_t* sc = w[b].scales + 8 * h;
      float g[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // the half's 8 sub-blocks of 16
      for (int l = 0; l < 32; l++) {
        const int i = l / 16;
        g[i + 0] += x[l] * (float)((int)((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) - 32);
        g[i + 2] += x[l + 32] * (float)((int)((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32);
        g[i + 4] += x[l + 64] * (float)((int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
        g[i + 6] += x[l + 96] * (float)((int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
      }
      for (int i = 0; i < 8; i++) acc += (float)sc[i] * g[i];
    }
    s += f16_to_f32(w[b].d) * acc;
  }
  return s;
}

// ggml's dequantize_row_q4_K. d*sc, dmin*m and d*sc*q are exact in float, so the only rounding
// is the final subtraction (fused or not, every kernel set gives the same bits).
void q4_k_to_f32_row(const BlockQ4_K* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / 256; b++) {
    uint8_t sc[8], m[8];
    q4_k_scales(x[b].scales, sc, m);
    const float d = f16_to_f32(x[b].d), dmin = f16_to_f32(x[b].dmin);
    for (int c = 0; c < 4; c++, y += 64) {
      const uint8_t* q = x[b].qs + 32 * c;
      const float d1 = d * sc[2 * c], m1 = dmin * m[2 * c];
      const float d2 = d * sc[2 * c + 1], m2 = dmin * m[2 * c + 1];
      for (int l = 0; l < 32; l++) y[l] = d1 * (float)(q[l] & 0x0f) - m1;
      for (int l = 0; l < 32; l++) y[32 + l] = d2 * (float)(q[l] >> 4) - m2;
    }
  }
}

// ggml's dequantize_row_q6_K (d * scale * q is exact in float).
void q6_k_to_f32_row(const BlockQ6_K* x, float* y, int64_t n) {
  for (int64_t b = 0; b < n / 256; b++) {
    const float d = f16_to_f32(x[b].d);
    for (int h = 0; h < 2; h++, y += 128) {
      const uint8_t* ql = x[b].ql + 64 * h;
      const uint8_t* qh = x[b].qh + 32 * h;
      const int8_t* sc = x[b].scales + 8 * h;
      for (int l = 0; l < 32; l++) {
        const int i = l / 16;
        y[l] = d * sc[i + 0] * (float)((int)((ql[l] & 0x0f) | ((qh[l] & 3) << 4)) - 32);
        y[l + 32] = d * sc[i + 2] * (float)((int)((ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4)) - 32);
        y[l + 64] = d * sc[i + 4] * (float)((int)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
        y[l + 96] = d * sc[i + 6] * (float)((int)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
      }
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

float exp_sum(float* x, int64_t n, float max) {
  float sum = 0.f;
  for (int64_t i = 0; i < n; i++) {
    x[i] = std::exp(x[i] - max);
    sum += x[i];
  }
  return sum;
}

void f32_to_f16_row(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = f32_to_f16(x[i]);
}

void swiglu_row(const float* g, const float* u, float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) y[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

}  // namespace

float dot_q8_0_q8_0_scalar(const BlockQ8_0* x, const BlockQ8_0* w, int64_t n) {
  float s = 0.f;
  for (int64_t b = 0; b < n / 32; b++) {
    int32_t acc = 0;
    for (int j = 0; j < 32; j++) acc += (int32_t)x[b].qs[j] * w[b].qs[j];
    s += f16_to_f32(x[b].d) * f16_to_f32(w[b].d) * (float)acc;
  }
  return s;
}

float dot_q4_0_q8_0_scalar(const BlockQ8_0* x, const BlockQ4_0* w, int64_t n) {
  float s = 0.f;
  for (int64_t b = 0; b < n / 32; b++) {
    int32_t acc = 0;
    for (int j = 0; j < 16; j++) {
      acc += (int32_t)x[b].qs[j] * ((w[b].qs[j] & 0x0f) - 8);
      acc += (int32_t)x[b].qs[j + 16] * ((w[b].qs[j] >> 4) - 8);
    }
    s += f16_to_f32(x[b].d) * f16_to_f32(w[b].d) * (float)acc;
  }
  return s;
}

const Kernels kScalarKernels = {
    dot_f32,         dot_f16,         dot_bf16,        dot_q8_0,        dot_q4_0, axpy_f32,
    axpy_f16,        f16_to_f32_row,  bf16_to_f32_row, q8_0_to_f32_row, q4_0_to_f32_row,
    kNr,             gemm_panel,      dot_q4_k,        dot_q6_k,        q4_k_to_f32_row,
    q6_k_to_f32_row,
    exp_sum,         f32_to_f16_row,  swiglu_row,
};

}  // namespace tessera::cpu
