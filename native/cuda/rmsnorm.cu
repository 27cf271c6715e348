// rmsnorm: y = x / sqrt(mean(x²) + eps) * weight. One block (256 threads) per row, grid-stride
// over rows; fp32 sum of squares reduced across the block, then one scaling pass.
#include "common.cuh"
#include "cuda_ops.h"

namespace tessera::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads) rmsnorm_kernel(const float* __restrict__ x,
                                                           const float* __restrict__ weight,
                                                           float* __restrict__ y, int64_t rows,
                                                           int64_t n, float eps) {
  __shared__ float scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * n;
    float* yr = y + r * n;
    float ss = 0.f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      const float v = xr[i];
      ss = fmaf(v, v, ss);
    }
    ss = block_sum(ss, scratch);
    const float inv = 1.f / sqrtf(ss / (float)n + eps);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) yr[i] = xr[i] * inv * weight[i];
  }
}

}  // namespace

void rmsnorm(cudaStream_t stream, const float* x, const float* weight, float* y, int64_t rows,
             int64_t n, float eps) {
  if (rows <= 0 || n <= 0) return;
  const unsigned grid = (unsigned)(rows < 65535 * 16 ? rows : 65535 * 16);
  rmsnorm_kernel<<<grid, kThreads, 0, stream>>>(x, weight, y, rows, n, eps);
  check_launch("rmsnorm");
}

}  // namespace tessera::cuda
