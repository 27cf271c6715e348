// Kernels used only by the CUDA model's forward step (native/cuda/llama_cuda.cu). Device pointers;
// each enqueues on `stream` and throws std::runtime_error when the launch fails.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "tessera/dtype.h"

namespace tessera::cuda {

// out (n_tokens, n_embd) = rows tokens[t] of `table` (n_vocab, n_embd) in any weight dtype, as f32.
void embed(cudaStream_t stream, const void* table, DType dtype, int64_t n_embd, const int32_t* tokens,
           int64_t n_tokens, float* out);
// y (rows, n) += bias (n) on every row.
void add_bias(cudaStream_t stream, float* y, const float* bias, int64_t rows, int64_t n);
// x (rows, n) += y; xn = rmsnorm(x) * weight. The residual add and the next norm in one pass.
void add_rmsnorm(cudaStream_t stream, float* x, const float* y, const float* weight, float* xn, int64_t rows,
                 int64_t n, float eps);
// out (n_rows, n) = x[rows[r]].
void gather_rows(cudaStream_t stream, const float* x, const int32_t* rows, int64_t n_rows, int64_t n, float* out);
// x[rows[r]] += y (n_rows, n), rows distinct: the inverse of gather_rows (sampling.cu).
void scatter_add_rows(cudaStream_t stream, float* x, const float* y, const int32_t* rows, int64_t n_rows, int64_t n);

// Per row of x (rows, n): the k best elements by (value descending, index ascending), NaN never
// taken; idx / val (rows, k). A row with fewer than k non-NaN values ends with -1 / -inf.
void top_k_rows(cudaStream_t stream, const float* x, int64_t rows, int64_t n, int k, int32_t* idx, float* val);
void argmax_rows(cudaStream_t stream, const float* x, int64_t rows, int64_t n, int32_t* idx, float* val);

}  // namespace tessera::cuda
