// softmax over the last axis. One block (256 threads) per row, grid-stride over rows: each thread
// keeps an online (max, sum of exp) over its strided elements, the block merges them, then a
// second pass writes exp(x - max) / sum.
#include "common.cuh"
#include "cuda_ops.h"

namespace tessera::cuda {
namespace {

constexpr int kThreads = 256;

// Merge (m, s) with (m2, s2): the sum of exp(x - max) over the union.
__device__ __forceinline__ void merge(float& m, float& s, float m2, float s2) {
  const float mn = fmaxf(m, m2);
  if (mn == -INFINITY) return;  // both empty (or all -inf)
  s = s * expf(m - mn) + s2 * expf(m2 - mn);
  m = mn;
}

__global__ void __launch_bounds__(kThreads) softmax_kernel(const float* __restrict__ x,
                                                           float* __restrict__ y, int64_t rows,
                                                           int64_t n) {
  __shared__ float sm[32], ss[32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    float m = -INFINITY, s = 0.f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      const float v = xr[i];
      if (v > m) {
        s = s * expf(m - v) + 1.f;
        m = v;
      } else {
        s += expf(v - m);
      }
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float m2 = __shfl_xor_sync(kFullMask, m, o);
      const float s2 = __shfl_xor_sync(kFullMask, s, o);
      merge(m, s, m2, s2);
    }
    __syncthreads();  // previous row's readers are done with sm / ss
    if (lane == 0) sm[warp] = m, ss[warp] = s;
    __syncthreads();
    m = lane < nwarps ? sm[lane] : -INFINITY;
    s = lane < nwarps ? ss[lane] : 0.f;
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float m2 = __shfl_xor_sync(kFullMask, m, o);
      const float s2 = __shfl_xor_sync(kFullMask, s, o);
      merge(m, s, m2, s2);
    }
    const float inv = 1.f / s;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] = expf(xr[i] - m) * inv;
  }
}

}  // namespace

void softmax(cudaStream_t stream, const float* x, float* y, int64_t rows, int64_t n) {
  if (rows <= 0 || n <= 0) return;
  const unsigned grid = (unsigned)(rows < 65535 * 16 ? rows : 65535 * 16);
  softmax_kernel<<<grid, kThreads, 0, stream>>>(x, y, rows, n);
  check_launch("softmax");
}

}  // namespace tessera::cuda
