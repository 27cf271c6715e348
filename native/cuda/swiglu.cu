// swiglu: y = silu(gate) * up, one thread per element (grid-stride, vectorised by 4 when aligned).
#include "common.cuh"
#include "cuda_ops.h"

namespace tessera::cuda {
namespace {

__device__ __forceinline__ float silu_mul(float g, float u) { return g / (1.f + expf(-g)) * u; }

__global__ void __launch_bounds__(256) swiglu_kernel(const float* __restrict__ gate,
                                                     const float* __restrict__ up,
                                                     float* __restrict__ y, int64_t n) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    y[i] = silu_mul(gate[i], up[i]);
  }
}

__global__ void __launch_bounds__(256) swiglu_kernel4(const float4* __restrict__ gate,
                                                      const float4* __restrict__ up,
                                                      float4* __restrict__ y, int64_t n4) {
  const int64_t stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n4; i += stride) {
    const float4 g = gate[i], u = up[i];
    y[i] = make_float4(silu_mul(g.x, u.x), silu_mul(g.y, u.y), silu_mul(g.z, u.z),
                       silu_mul(g.w, u.w));
  }
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

}  // namespace

void swiglu(cudaStream_t stream, const float* gate, const float* up, float* y, int64_t n) {
  if (n <= 0) return;
  constexpr int kThreads = 256;
  if (n % 4 == 0 && aligned16(gate) && aligned16(up) && aligned16(y)) {
    const int64_t n4 = n / 4;
    swiglu_kernel4<<<grid_for(n4, kThreads), kThreads, 0, stream>>>(
        reinterpret_cast<const float4*>(gate), reinterpret_cast<const float4*>(up),
        reinterpret_cast<float4*>(y), n4);
  } else {
    swiglu_kernel<<<grid_for(n, kThreads), kThreads, 0, stream>>>(gate, up, y, n);
  }
  check_launch("swiglu");
}

}  // namespace tessera::cuda
