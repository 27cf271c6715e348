// The small kernels of the forward step on CUDA (native/cpu/model_ops.cc holds the CPU versions):
// embedding lookup with dequantisation, Q/K/V bias, the residual add fused with the next
// rmsnorm, and the row gather before the output projection. Declared with the op set (ops.h, cuda_ops.h).
#include "common.cuh"
#include "cuda_ops.h"

namespace tessera::cuda {
namespace {

constexpr int kThreads = 256;

template <DType T>
__global__ void __launch_bounds__(kThreads)
    embed_kernel(const uint8_t* __restrict__ table, int64_t row_bytes, const int32_t* __restrict__ tokens,
                 int64_t n_tokens, int64_t E, float* __restrict__ out) {
  for (int64_t t = blockIdx.x; t < n_tokens; t += gridDim.x) {
    const uint8_t* row = table + (int64_t)tokens[t] * row_bytes;
    for (int64_t i = threadIdx.x; i < E; i += blockDim.x) {
      float v;
      WeightLoader<T, 1>::load(row, i, &v);
      out[t * E + i] = v;
    }
  }
}

__global__ void __launch_bounds__(kThreads) add_bias_kernel(float* __restrict__ y, const float* __restrict__ b,
                                                            int64_t rows, int64_t n) {
  const int64_t total = rows * n, stride = (int64_t)gridDim.x * blockDim.x;
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) y[i] += b[i % n];
}

// x += y, then xn = x / sqrt(mean(x²) + eps) * weight; one block per row. Each thread re-reads
// only the elements it wrote itself, so no barrier is needed between the add and the scaling.
__global__ void __launch_bounds__(kThreads)
    add_rmsnorm_kernel(float* __restrict__ x, const float* __restrict__ y, const float* __restrict__ weight,
                       float* __restrict__ xn, int64_t rows, int64_t n, float eps) {
  __shared__ float scratch[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    float* xr = x + r * n;
    const float* yr = y + r * n;
    float ss = 0.f;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      const float v = xr[i] + yr[i];
      xr[i] = v;
      ss = fmaf(v, v, ss);
    }
    ss = block_sum(ss, scratch);
    const float inv = 1.f / sqrtf(ss / (float)n + eps);
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) xn[r * n + i] = xr[i] * inv * weight[i];
  }
}

__global__ void __launch_bounds__(kThreads) gather_rows_kernel(const float* __restrict__ x,
                                                               const int32_t* __restrict__ rows, int64_t R,
                                                               int64_t n, float* __restrict__ out) {
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const float* src = x + (int64_t)rows[r] * n;
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) out[r * n + i] = src[i];
  }
}

unsigned row_grid(int64_t rows) { return (unsigned)(rows < 65535 ? (rows > 0 ? rows : 1) : 65535); }

}  // namespace

void embed(cudaStream_t stream, const void* table, DType dtype, int64_t n_embd, const int32_t* tokens,
           int64_t n_tokens, float* out) {
  if (n_tokens <= 0 || n_embd <= 0) return;
  const int64_t rb = dtype_bytes(dtype, n_embd);
  const uint8_t* t = static_cast<const uint8_t*>(table);
  const unsigned g = row_grid(n_tokens);
  switch (dtype) {
    case DType::F32: embed_kernel<DType::F32><<<g, kThreads, 0, stream>>>(t, rb, tokens, n_tokens, n_embd, out); break;
    case DType::F16: embed_kernel<DType::F16><<<g, kThreads, 0, stream>>>(t, rb, tokens, n_tokens, n_embd, out); break;
    case DType::BF16: embed_kernel<DType::BF16><<<g, kThreads, 0, stream>>>(t, rb, tokens, n_tokens, n_embd, out); break;
    case DType::Q8_0: embed_kernel<DType::Q8_0><<<g, kThreads, 0, stream>>>(t, rb, tokens, n_tokens, n_embd, out); break;
    case DType::Q4_0: embed_kernel<DType::Q4_0><<<g, kThreads, 0, stream>>>(t, rb, tokens, n_tokens, n_embd, out); break;
    case DType::Q4_K: embed_kernel<DType::Q4_K><<<g, kThreads, 0, stream>>>(t, rb, tokens, n_tokens, n_embd, out); break;
    case DType::Q6_K: embed_kernel<DType::Q6_K><<<g, kThreads, 0, stream>>>(t, rb, tokens, n_tokens, n_embd, out); break;
    default:
      throw std::invalid_argument(std::string("tessera::cuda::embed: unsupported table dtype ") + dtype_info(dtype).name);
  }
  check_launch("embed");
}

void add_bias(cudaStream_t stream, float* y, const float* bias, int64_t rows, int64_t n) {
  if (rows <= 0 || n <= 0) return;
  add_bias_kernel<<<grid_for(rows * n, kThreads), kThreads, 0, stream>>>(y, bias, rows, n);
  check_launch("add_bias");
}

void add_rmsnorm(cudaStream_t stream, float* x, const float* y, const float* weight, float* xn, int64_t rows,
                 int64_t n, float eps) {
  if (rows <= 0 || n <= 0) return;
  add_rmsnorm_kernel<<<row_grid(rows), kThreads, 0, stream>>>(x, y, weight, xn, rows, n, eps);
  check_launch("add_rmsnorm");
}

void gather_rows(cudaStream_t stream, const float* x, const int32_t* rows, int64_t n_rows, int64_t n, float* out) {
  if (n_rows <= 0 || n <= 0) return;
  gather_rows_kernel<<<row_grid(n_rows), kThreads, 0, stream>>>(x, rows, n_rows, n, out);
  check_launch("gather_rows");
}

}  // namespace tessera::cuda
