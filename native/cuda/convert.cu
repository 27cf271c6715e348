// convert: any of f32/f16/bf16/q8_0/q4_0/q4_k/q6_k -> f32 (one thread per element, grid-stride) and
// f32 -> f16/bf16 (one thread per element) or q8_0/q4_0 (one warp per 32-element block, lane j
// owns element j) with ggml's reference quantisers:
//   q8_0: d = amax / 127, id = 1/d, q = roundf(x * id)
//   q4_0: max = the element of largest magnitude (first one on ties, sign kept), d = max / -8,
//         id = 1/d, q = min(15, (int8)(x * id + 8.5f)); element j in the low nibble of qs[j],
//         element j + 16 in the high nibble.
// f16 / bf16 rounding uses the same scalar routines as the CPU backend (tessera/dtype.h).
#include "common.cuh"
#include "cuda_ops.h"

namespace tessera::cuda {
namespace {

constexpr int kThreads = 256;

template <DType ST>
__global__ void __launch_bounds__(kThreads) to_f32_kernel(const void* __restrict__ src,
                                                          float* __restrict__ dst, int64_t n) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    float v;
    WeightLoader<ST, 1>::load(src, i, &v);
    dst[i] = v;
  }
}

__global__ void __launch_bounds__(kThreads) f32_to_f16_kernel(const float* __restrict__ src,
                                                              uint16_t* __restrict__ dst, int64_t n) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    dst[i] = f32_to_f16(src[i]);
}

__global__ void __launch_bounds__(kThreads) f32_to_bf16_kernel(const float* __restrict__ src,
                                                               uint16_t* __restrict__ dst, int64_t n) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    dst[i] = f32_to_bf16(src[i]);
}

__global__ void __launch_bounds__(kThreads) quantize_q8_0_kernel(const float* __restrict__ src,
                                                                 BlockQ8_0* __restrict__ dst,
                                                                 int64_t nblocks) {
  const int lane = threadIdx.x & 31;
  const int64_t wstride = (int64_t)gridDim.x * (blockDim.x >> 5);
  for (int64_t blk = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); blk < nblocks;
       blk += wstride) {
    const float x = src[blk * 32 + lane];
    const float amax = warp_max(fabsf(x));
    const float d = amax / 127.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    BlockQ8_0* y = dst + blk;
    if (lane == 0) y->d = f32_to_f16(d);
    y->qs[lane] = (int8_t)roundf(__fmul_rn(x, id));
  }
}

__global__ void __launch_bounds__(kThreads) quantize_q4_0_kernel(const float* __restrict__ src,
                                                                 BlockQ4_0* __restrict__ dst,
                                                                 int64_t nblocks) {
  const int lane = threadIdx.x & 31;
  const int64_t wstride = (int64_t)gridDim.x * (blockDim.x >> 5);
  for (int64_t blk = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); blk < nblocks;
       blk += wstride) {
    const float x = src[blk * 32 + lane];
    // argmax of |x|, lowest index on ties (ggml keeps the first strictly larger element)
    float best = fabsf(x);
    int best_lane = lane;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ob = __shfl_xor_sync(kFullMask, best, o);
      const int ol = __shfl_xor_sync(kFullMask, best_lane, o);
      if (ob > best || (ob == best && ol < best_lane)) best = ob, best_lane = ol;
    }
    const float max = __shfl_sync(kFullMask, x, best_lane);
    const float d = max / -8.f;
    const float id = d != 0.f ? 1.f / d : 0.f;
    // no fma contraction: ggml rounds x * id before adding 8.5
    const int q = min(15, (int)(int8_t)(__fmul_rn(x, id) + 8.5f));
    const int hi = __shfl_down_sync(kFullMask, q, 16);
    BlockQ4_0* y = dst + blk;
    if (lane == 0) y->d = f32_to_f16(d);
    if (lane < 16) y->qs[lane] = (uint8_t)(q | (hi << 4));
  }
}

}  // namespace

void convert(cudaStream_t stream, const void* src, DType st, void* dst, DType dt, int64_t n) {
  if (n <= 0) return;
  if (dt == DType::F32) {
    float* out = static_cast<float*>(dst);
    const unsigned grid = grid_for(n, kThreads);
    switch (st) {
      case DType::F32:
        TS_CUDA_CHECK(cudaMemcpyAsync(dst, src, sizeof(float) * n, cudaMemcpyDeviceToDevice, stream));
        return;
      case DType::F16: to_f32_kernel<DType::F16><<<grid, kThreads, 0, stream>>>(src, out, n); break;
      case DType::BF16: to_f32_kernel<DType::BF16><<<grid, kThreads, 0, stream>>>(src, out, n); break;
      case DType::Q8_0: to_f32_kernel<DType::Q8_0><<<grid, kThreads, 0, stream>>>(src, out, n); break;
      case DType::Q4_0: to_f32_kernel<DType::Q4_0><<<grid, kThreads, 0, stream>>>(src, out, n); break;
      case DType::Q4_K: to_f32_kernel<DType::Q4_K><<<grid, kThreads, 0, stream>>>(src, out, n); break;
      case DType::Q6_K: to_f32_kernel<DType::Q6_K><<<grid, kThreads, 0, stream>>>(src, out, n); break;
      default:
        throw std::invalid_argument(std::string("tessera::cuda::convert: unsupported source dtype ") +
                                    dtype_info(st).name);
    }
    check_launch("convert (to f32)");
    return;
  }
  if (st != DType::F32) {
    throw std::invalid_argument(std::string("tessera::cuda::convert: unsupported conversion ") +
                                dtype_info(st).name + " -> " + dtype_info(dt).name);
  }
  const float* in = static_cast<const float*>(src);
  switch (dt) {
    case DType::F16:
      f32_to_f16_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(in, static_cast<uint16_t*>(dst), n);
      break;
    case DType::BF16:
      f32_to_bf16_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(in, static_cast<uint16_t*>(dst), n);
      break;
    case DType::Q8_0:
      quantize_q8_0_kernel<<<grid_for(n / 32, kThreads / 32), kThreads, 0, stream>>>(
          in, static_cast<BlockQ8_0*>(dst), n / 32);
      break;
    case DType::Q4_0:
      quantize_q4_0_kernel<<<grid_for(n / 32, kThreads / 32), kThreads, 0, stream>>>(
          in, static_cast<BlockQ4_0*>(dst), n / 32);
      break;
    default:
      throw std::invalid_argument(std::string("tessera::cuda::convert: unsupported destination dtype ") +
                                  dtype_info(dt).name);
  }
  check_launch("convert (from f32)");
}

}  // namespace tessera::cuda
