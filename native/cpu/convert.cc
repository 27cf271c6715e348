// convert: dequantise any storage type (q4_k and q6_k included) to f32, and f32 to f16 / bf16 /
// q8_0 / q4_0 with ggml's reference quantisers (so files we write match what llama.cpp would
// write), and to q4_k / q6_k with the direct encoders of tessera/kquant_encode.h.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels.h"
#include "tessera/kquant_encode.h"
#include "tessera/ops.h"
#include "tessera/threadpool.h"

namespace tessera::cpu {
namespace {

void quantize_q8_0(const float* x, BlockQ8_0* y) {
  float amax = 0.f;
  for (int j = 0; j < 32; j++) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.f, id = d != 0.f ? 1.f / d : 0.f;
  y->d = f32_to_f16(d);
  for (int j = 0; j < 32; j++) y->qs[j] = (int8_t)std::roundf(x[j] * id);
}

void quantize_q4_0(const float* x, BlockQ4_0* y) {
  float amax = 0.f, max = 0.f;
  for (int j = 0; j < 32; j++)
    if (amax < std::fabs(x[j])) {
      amax = std::fabs(x[j]);
      max = x[j];
    }
  const float d = max / -8.f, id = d != 0.f ? 1.f / d : 0.f;
  y->d = f32_to_f16(d);
  for (int j = 0; j < 16; j++) {
    const uint8_t a = (uint8_t)std::min<int8_t>(15, (int8_t)(x[j] * id + 8.5f));
    const uint8_t b = (uint8_t)std::min<int8_t>(15, (int8_t)(x[j + 16] * id + 8.5f));
    y->qs[j] = (uint8_t)(a | (b << 4));
  }
}

}  // namespace

void convert(ThreadPool& pool, const void* src, DType st, void* dst, DType dt, int64_t n) {
  const Kernels& K = kernels();
  const int32_t blk = std::max(dtype_info(st).block_elems, dtype_info(dt).block_elems);
  // Work in chunks of whole blocks so every thread starts on a block boundary.
  const int64_t nblocks = n / blk;
  const auto* s8 = static_cast<const uint8_t*>(src);
  auto* d8 = static_cast<uint8_t*>(dst);
  // Cost units per element: the k-quant encoders search scales (hundreds of operations per value);
  // q8_0 / q4_0 take an absmax and a rounding; the rest are conversions.
  const Cost elem_cost = (dt == DType::Q4_K || dt == DType::Q6_K) ? 256 : (dt == DType::Q8_0 || dt == DType::Q4_0) ? 16 : 4;
  pool.parallel_for(nblocks, 4096 / blk + 1, elem_cost * blk, [&](int64_t b0, int64_t b1) {
    const int64_t e0 = b0 * blk, cnt = (b1 - b0) * blk;
    const void* s = s8 + dtype_bytes(st, e0);
    void* d = d8 + dtype_bytes(dt, e0);
    if (dt == DType::F32) {
      float* out = static_cast<float*>(d);
      switch (st) {
        case DType::F32: std::memcpy(out, s, sizeof(float) * cnt); break;
        case DType::F16: K.f16_to_f32(static_cast<const uint16_t*>(s), out, cnt); break;
        case DType::BF16: K.bf16_to_f32(static_cast<const uint16_t*>(s), out, cnt); break;
        case DType::Q8_0: K.q8_0_to_f32(static_cast<const BlockQ8_0*>(s), out, cnt); break;
        case DType::Q4_0: K.q4_0_to_f32(static_cast<const BlockQ4_0*>(s), out, cnt); break;
        case DType::Q4_K: K.q4_k_to_f32(static_cast<const BlockQ4_K*>(s), out, cnt); break;
        case DType::Q6_K: K.q6_k_to_f32(static_cast<const BlockQ6_K*>(s), out, cnt); break;
        default: break;  // rejected by check_convert
      }
      return;
    }
    const float* in = static_cast<const float*>(s);
    switch (dt) {
      case DType::F16:
        for (int64_t i = 0; i < cnt; i++) static_cast<uint16_t*>(d)[i] = f32_to_f16(in[i]);
        break;
      case DType::BF16:
        for (int64_t i = 0; i < cnt; i++) static_cast<uint16_t*>(d)[i] = f32_to_bf16(in[i]);
        break;
      case DType::Q8_0:
        for (int64_t i = 0; i < cnt / 32; i++) quantize_q8_0(in + i * 32, static_cast<BlockQ8_0*>(d) + i);
        break;
      case DType::Q4_0:
        for (int64_t i = 0; i < cnt / 32; i++) quantize_q4_0(in + i * 32, static_cast<BlockQ4_0*>(d) + i);
        break;
      case DType::Q4_K:
        for (int64_t i = 0; i < cnt / 256; i++) quantize_q4_k_block(in + i * 256, static_cast<BlockQ4_K*>(d) + i);
        break;
      case DType::Q6_K:
        for (int64_t i = 0; i < cnt / 256; i++) quantize_q6_k_block(in + i * 256, static_cast<BlockQ6_K*>(d) + i);
        break;
      default: break;
    }
  });
}

}  // namespace tessera::cpu
