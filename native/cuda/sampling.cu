// Sampling helpers on the device, so a step can return a few candidates per row instead of the
// whole vocabulary: top_k_rows (k passes of a block-wide arg-max, each taking the best element
// strictly after the previous one in the order (value descending, index ascending): exact, ties
// broken by the lower index as the CPU sampler does, NaN never selected) and argmax_rows (k = 1);
// greedy_rows, the native sampler's greedy path on the device (token and its logprob per row).
// Also scatter_add_rows, the inverse of gather_rows for FFN skip routing: only the rows that ran
// a block add their result back into the residual stream.
#include "common.cuh"
#include "cuda_ops.h"

namespace tessera::cuda {
namespace {

constexpr int kThreads = 256;

// (v, i) is better than (bv, bi): larger value, or equal value and lower index.
__device__ __forceinline__ bool better(float v, int32_t i, float bv, int32_t bi) {
  return v > bv || (v == bv && i < bi);
}

__global__ void __launch_bounds__(kThreads)
    top_k_kernel(const float* __restrict__ x, int64_t rows, int64_t n, int k, int32_t* __restrict__ idx,
                 float* __restrict__ val) {
  __shared__ float s_v[kThreads / 32];
  __shared__ int32_t s_i[kThreads / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * n;
    float pv = INFINITY;
    int32_t pi = -1;  // the previous pick; the first pass admits every non-NaN element
    for (int p = 0; p < k; ++p) {
      float bv = -INFINITY;
      int32_t bi = INT32_MAX;
      for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
        const float v = xr[i];
        const bool after = v < pv || (v == pv && (int32_t)i > pi);  // false for NaN
        if (after && better(v, (int32_t)i, bv, bi)) bv = v, bi = (int32_t)i;
      }
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) {
        const float ov = __shfl_xor_sync(kFullMask, bv, o);
        const int32_t oi = __shfl_xor_sync(kFullMask, bi, o);
        if (better(ov, oi, bv, bi)) bv = ov, bi = oi;
      }
      if (lane == 0) s_v[warp] = bv, s_i[warp] = bi;
      __syncthreads();
      bv = s_v[0], bi = s_i[0];
      for (int w = 1; w < kThreads / 32; ++w)
        if (better(s_v[w], s_i[w], bv, bi)) bv = s_v[w], bi = s_i[w];
      __syncthreads();  // s_v / s_i are rewritten by the next pass
      const bool found = bi != INT32_MAX;  // fewer than k non-NaN elements: -1 / -inf
      if (threadIdx.x == 0) {
        idx[r * k + p] = found ? bi : -1;
        val[r * k + p] = found ? bv : -INFINITY;
      }
      pv = bv, pi = bi;
      if (!found) pv = -INFINITY, pi = INT32_MAX;  // nothing comes after: the rest stay empty
    }
  }
}

// Greedy sampling of a row with its logprob, as the native sampler's greedy path
// (native/model/sampler.cc, scan_greedy): the first index of the largest value, and
// -log(sum exp(x - max)) accumulated in double. idx = -1 when every value is -inf, -2 when one is
// NaN or +inf (the host then samples that row itself, to raise the sampler's error).
__global__ void __launch_bounds__(kThreads)
    greedy_kernel(const float* __restrict__ x, int64_t rows, int64_t n, int32_t* __restrict__ idx,
                  double* __restrict__ logprob) {
  __shared__ float s_v[kThreads / 32];
  __shared__ int32_t s_i[kThreads / 32];
  __shared__ double s_z[kThreads / 32];
  __shared__ int s_bad;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = x + r * n;
    if (threadIdx.x == 0) s_bad = 0;
    float bv = -INFINITY;
    int32_t bi = INT32_MAX;
    bool bad = false;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      const float v = xr[i];
      if (!(v < INFINITY) && v != -INFINITY) bad = true;  // NaN or +inf
      else if (v != -INFINITY && better(v, (int32_t)i, bv, bi)) bv = v, bi = (int32_t)i;
    }
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(kFullMask, bv, o);
      const int32_t oi = __shfl_xor_sync(kFullMask, bi, o);
      if (better(ov, oi, bv, bi)) bv = ov, bi = oi;
    }
    __syncthreads();  // s_bad reset is visible; the previous row's reads of s_* are done
    if (bad) atomicOr(&s_bad, 1);
    if (lane == 0) s_v[warp] = bv, s_i[warp] = bi;
    __syncthreads();
    bv = s_v[0], bi = s_i[0];
    for (int w = 1; w < kThreads / 32; ++w)
      if (better(s_v[w], s_i[w], bv, bi)) bv = s_v[w], bi = s_i[w];
    const bool any_bad = s_bad != 0, none = bi == INT32_MAX;
    double z = 0;
    if (!any_bad && !none)
      for (int64_t i = threadIdx.x; i < n; i += blockDim.x) z += exp((double)xr[i] - (double)bv);  // exp(-inf) = 0
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) z += __shfl_xor_sync(kFullMask, z, o);
    __syncthreads();  // everyone has read s_v / s_i / s_bad
    if (lane == 0) s_z[warp] = z;
    __syncthreads();
    if (threadIdx.x == 0) {
      double t = 0;
      for (int w = 0; w < kThreads / 32; ++w) t += s_z[w];
      idx[r] = any_bad ? -2 : none ? -1 : bi;
      logprob[r] = any_bad || none ? 0.0 : 0.0 - log(t);
    }
    __syncthreads();
  }
}

__global__ void __launch_bounds__(kThreads) scatter_add_kernel(float* __restrict__ x, const float* __restrict__ y,
                                                               const int32_t* __restrict__ rows, int64_t n_rows,
                                                               int64_t n) {
  for (int64_t r = blockIdx.x; r < n_rows; r += gridDim.x) {
    float* dst = x + (int64_t)rows[r] * n;
    const float* src = y + r * n;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) dst[i] += src[i];
  }
}

unsigned row_grid(int64_t rows) { return (unsigned)(rows < 65535 ? (rows > 0 ? rows : 1) : 65535); }

}  // namespace

void top_k_rows(cudaStream_t stream, const float* x, int64_t rows, int64_t n, int k, int32_t* idx, float* val) {
  if (rows <= 0 || k <= 0) return;
  if (n <= 0 || n > INT32_MAX - 1) throw std::invalid_argument("tessera::cuda::top_k_rows: row length out of range");
  top_k_kernel<<<row_grid(rows), kThreads, 0, stream>>>(x, rows, n, k, idx, val);
  check_launch("top_k_rows");
}

void argmax_rows(cudaStream_t stream, const float* x, int64_t rows, int64_t n, int32_t* idx, float* val) {
  top_k_rows(stream, x, rows, n, 1, idx, val);
}

void greedy_rows(cudaStream_t stream, const float* x, int64_t rows, int64_t n, int32_t* idx, double* logprob) {
  if (rows <= 0) return;
  if (n <= 0 || n > INT32_MAX - 1) throw std::invalid_argument("tessera::cuda::greedy_rows: row length out of range");
  greedy_kernel<<<row_grid(rows), kThreads, 0, stream>>>(x, rows, n, idx, logprob);
  check_launch("greedy_rows");
}

void scatter_add_rows(cudaStream_t stream, float* x, const float* y, const int32_t* rows, int64_t n_rows, int64_t n) {
  if (n_rows <= 0 || n <= 0) return;
  scatter_add_kernel<<<row_grid(n_rows), kThreads, 0, stream>>>(x, y, rows, n_rows, n);
  check_launch("scatter_add_rows");
}

}  // namespace tessera::cuda
