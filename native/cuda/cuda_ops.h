// The CUDA backend: tessera::cuda implements the op set of tessera/ops.h with CUDA kernels.
// Every pointer argument is a DEVICE pointer, including the ones held by PagedKv, VarlenBatch and
// TreeMask (the structs themselves live on the host and are passed by value to the kernels).
// Each op enqueues its kernels on `stream` and returns without synchronising; a failed launch
// throws std::runtime_error carrying cudaGetErrorString. Arguments are validated beforehand by
// tessera/check.h (on host copies of the index arrays), exactly as for the other backends.
#pragma once

#include <cuda_runtime.h>

#include "tessera/ops.h"

#define TESSERA_CUDA_CTX cudaStream_t stream,

namespace tessera::cuda {
TESSERA_OP_SIGNATURES(TESSERA_CUDA_CTX)

// What the host knows about a paged_attention call that the device arrays hide: the number of
// query tokens (qo_indptr[batch]) and the longest sequence. With them the decode kernel splits long
// sequences across blocks (flash-decoding) instead of giving each (token, KV head) one block.
// They must be exact (total_q = qo_indptr[batch]; max_kv_len >= every sequence's length): rows past
// a too-small total_q are not written. total_q <= 0 means "unknown" (no splits).
struct PagedAttnHints {
  int64_t total_q = 0;
  int32_t max_kv_len = 0;
  // Most queries of one sequence; from 16 up, such sequences (without a tree mask) run on the
  // tensor-core prefill kernel. 0: unknown (every row in the decode kernel).
  int32_t max_q_per_seq = 0;
};
// The packed prefill's token count, known to the caller; with it varlen_attention runs on tensor
// cores (head dims 64 / 128; f16 operands, f32 softmax and accumulation).
struct VarlenHints {
  int64_t total_tokens = 0;  // must equal cu_seqlens[num_seqs]; <= 0: unknown (CUDA-core kernel)
};
void varlen_attention_hinted(cudaStream_t stream, const float* q, const float* k, const float* v, float* o,
                             const VarlenBatch& batch, const AttnShape& s, const VarlenHints& hints);
void paged_attention_hinted(cudaStream_t stream, const float* q, const int32_t* qo_indptr, const PagedKv& kv,
                            const TreeMask* tree, float* o, const AttnShape& s, const PagedAttnHints& hints);
// What a decode-only paged_attention_hinted call (max_q_per_seq < 16) launches: the split count
// (0: the per-(token, head) fallback kernel) and the stream scratch it takes. Equal plans launch
// equal kernels, so a captured CUDA graph of such a step can be replayed.
struct PagedAttnPlan {
  int splits = 0;
  size_t workspace_bytes = 0;
};
PagedAttnPlan paged_attention_plan(const PagedKv& kv, const AttnShape& s, const PagedAttnHints& hints);

// Greedy sampling on the device (native/cuda/sampling.cu), the CUDA side of the native sampler's
// greedy path (tessera::sample_row with temperature 0, its reference): per row of x (rows, n),
// idx (rows,) the first index of the largest value, -1 when every value is -inf, -2 when one is NaN
// or +inf; logprob (rows,) its log-softmax at temperature 1 (accumulated in double).
void greedy_rows(cudaStream_t stream, const float* x, int64_t rows, int64_t n, int32_t* idx, double* logprob);
}  // namespace tessera::cuda
