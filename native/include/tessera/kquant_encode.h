// Encoders of one Q4_K / Q6_K super-block (256 values), shared by ref::convert and cpu::convert.
// Not ggml's encoders (those search scales iteratively, make_qkx2_quants): a direct min/max fit,
// written so that the decoded range always covers the block (scales are rounded up, codes
// clamped), which gives valid files llama.cpp reads, with at most half a step of error.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "tessera/dtype.h"

namespace tessera {

inline void quantize_q4_k_block(const float* x, BlockQ4_K* y) {
  float lo[8], hi[8], mn[8], need[8];
  float mn_max = 0.f;
  for (int j = 0; j < 8; j++) {
    lo[j] = hi[j] = x[32 * j];
    for (int l = 0; l < 32; l++) {
      lo[j] = std::min(lo[j], x[32 * j + l]);
      hi[j] = std::max(hi[j], x[32 * j + l]);
    }
    mn[j] = std::max(0.f, -lo[j]);  // w = d*sc*q - dmin*m with m >= 0
    mn_max = std::max(mn_max, mn[j]);
  }
  y->dmin = f32_to_f16(mn_max / 63.f);
  const float dmin = f16_to_f32(y->dmin);
  uint8_t sc[8], m[8];
  float need_max = 0.f;
  for (int j = 0; j < 8; j++) {
    m[j] = dmin > 0.f ? (uint8_t)std::min(63.f, std::ceil(mn[j] / dmin)) : 0;
    need[j] = std::max(0.f, (hi[j] + dmin * m[j]) / 15.f);
    need_max = std::max(need_max, need[j]);
  }
  y->d = f32_to_f16(need_max / 63.f);
  const float d = f16_to_f32(y->d);
  for (int j = 0; j < 8; j++) sc[j] = d > 0.f ? (uint8_t)std::min(63.f, std::ceil(need[j] / d)) : 0;
  for (int j = 0; j < 4; j++) {
    y->scales[j] = (uint8_t)((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
    y->scales[j + 4] = (uint8_t)((m[j] & 63) | ((m[j + 4] >> 4) << 6));
    y->scales[j + 8] = (uint8_t)((sc[j + 4] & 15) | ((m[j + 4] & 15) << 4));
  }
  uint8_t q[256];
  for (int j = 0; j < 8; j++) {
    const float step = d * sc[j], off = dmin * m[j];
    for (int l = 0; l < 32; l++) {
      const float v = step > 0.f ? std::round((x[32 * j + l] + off) / step) : 0.f;
      q[32 * j + l] = (uint8_t)std::clamp(v, 0.f, 15.f);
    }
  }
  for (int c = 0; c < 4; c++)
    for (int l = 0; l < 32; l++) y->qs[32 * c + l] = (uint8_t)(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
}

inline void quantize_q6_k_block(const float* x, BlockQ6_K* y) {
  float s[16], s_max = 0.f;
  for (int j = 0; j < 16; j++) {
    float amax = 0.f;
    for (int l = 0; l < 16; l++) amax = std::max(amax, std::fabs(x[16 * j + l]));
    s[j] = amax / 31.f;  // codes q - 32 in [-31, 31]
    s_max = std::max(s_max, s[j]);
  }
  y->d = f32_to_f16(s_max / 127.f);
  const float d = f16_to_f32(y->d);
  uint8_t q[256];
  for (int j = 0; j < 16; j++) {
    const int sc = d > 0.f ? (int)std::min(127.f, std::ceil(s[j] / d)) : 0;
    y->scales[j] = (int8_t)sc;
    const float step = d * sc;
    for (int l = 0; l < 16; l++) {
      const float v = step > 0.f ? std::round(x[16 * j + l] / step) + 32.f : 32.f;
      q[16 * j + l] = (uint8_t)std::clamp(v, 0.f, 63.f);
    }
  }
  for (int h = 0; h < 2; h++) {
    const uint8_t* qq = q + 128 * h;
    for (int l = 0; l < 32; l++) {
      y->ql[64 * h + l] = (uint8_t)((qq[l] & 15) | ((qq[l + 64] & 15) << 4));
      y->ql[64 * h + l + 32] = (uint8_t)((qq[l + 32] & 15) | ((qq[l + 96] & 15) << 4));
      y->qh[32 * h + l] =
          (uint8_t)((qq[l] >> 4) | ((qq[l + 32] >> 4) << 2) | ((qq[l + 64] >> 4) << 4) | ((qq[l + 96] >> 4) << 6));
    }
  }
}

}  // namespace tessera
