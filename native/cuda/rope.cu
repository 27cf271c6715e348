// rope: rotary position embedding in place, llama.cpp "normal" (interleaved pairs (2i, 2i+1))
// and NeoX (pairs (i, i + n_rot/2)) layouts; dims >= n_rot are left untouched.
// Launch: blockIdx.x = token (grid-stride), blockIdx.y = group of kHeadsPerBlock heads,
// threadIdx.x = pair index i (strided over n_rot/2). Each thread computes the angle of its
// (token, i) once, in double exactly like the CPU backend, and rotates that pair in every head of
// its group.
#include "common.cuh"
#include "cuda_ops.h"

namespace tessera::cuda {
namespace {

constexpr int kThreads = 64;
constexpr int kHeadsPerBlock = 8;

__global__ void __launch_bounds__(kThreads, 8)
    rope_kernel(float* __restrict__ x, const int32_t* __restrict__ positions, int64_t tokens,
                int32_t heads, int32_t head_dim, int32_t n_rot, double theta_base,
                double freq_scale, int32_t stride, int32_t step) {
  const int32_t half = n_rot / 2;
  const int32_t h0 = blockIdx.y * kHeadsPerBlock;
  const int32_t h1 = min(heads, h0 + kHeadsPerBlock);
  for (int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    const double pos = (double)positions[t];
    for (int32_t i = threadIdx.x; i < half; i += blockDim.x) {
      const double inv_freq = freq_scale * pow(theta_base, -2.0 * i / n_rot);
      double sd, cd;
      sincos(pos * inv_freq, &sd, &cd);
      const float c = (float)cd, s = (float)sd;
      for (int32_t h = h0; h < h1; ++h) {
        float* a = x + (t * heads + h) * (int64_t)head_dim + (int64_t)i * step;
        float* b = a + stride;
        const float x0 = *a, x1 = *b;
        *a = x0 * c - x1 * s;
        *b = x0 * s + x1 * c;
      }
    }
  }
}

}  // namespace

void rope(cudaStream_t stream, float* x, const int32_t* positions, int64_t tokens, int32_t heads,
          int32_t head_dim, const RopeParams& p) {
  if (tokens <= 0 || heads <= 0 || p.n_rot <= 0) return;
  const int32_t half = p.n_rot / 2;
  const int32_t stride = p.mode == RopeMode::NeoX ? half : 1;  // distance between pair members
  const int32_t step = p.mode == RopeMode::NeoX ? 1 : 2;       // distance between pairs
  const dim3 grid((unsigned)(tokens < 65535 * 32 ? tokens : 65535 * 32),
                  (unsigned)((heads + kHeadsPerBlock - 1) / kHeadsPerBlock));
  rope_kernel<<<grid, kThreads, 0, stream>>>(x, positions, tokens, heads, head_dim, p.n_rot,
                                             (double)p.theta_base, (double)p.freq_scale, stride,
                                             step);
  check_launch("rope");
}

}  // namespace tessera::cuda
