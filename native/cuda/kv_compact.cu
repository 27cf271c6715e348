// cuda::kv_compact: the KV entry moves of a tree-path commit (ops.h). Moves apply in order (a move's
// destination may be an earlier move's source), so one block walks them one after another, its
// threads copying the (Hkv, D) row of each move, with a barrier between moves.
#include "common.cuh"
#include "cuda_ops.h"

namespace tessera::cuda {
namespace {

constexpr int kThreads = 256;

// Rows as 16-bit words (f16: one element; f32: half an element).
__global__ void __launch_bounds__(kThreads)
    kv_compact_kernel(uint16_t* __restrict__ k, uint16_t* __restrict__ v, const int32_t* __restrict__ bidx,
                      const int32_t* __restrict__ src, const int32_t* __restrict__ dst, int64_t n_moves, PagedKv kv,
                      int64_t words_per_elem) {
  const int64_t row = (int64_t)kv.n_kv_heads * kv.head_dim * words_per_elem;
  for (int64_t m = 0; m < n_moves; m++) {
    const int32_t s = src[m], d = dst[m];
    if (s != d) {
      const int64_t from = kv.offset(bidx[m], s, 0) * words_per_elem, to = kv.offset(bidx[m], d, 0) * words_per_elem;
      for (int64_t i = threadIdx.x; i < row; i += blockDim.x) {
        k[to + i] = k[from + i];
        v[to + i] = v[from + i];
      }
    }
    __syncthreads();  // the next move may read this one's destination
  }
}

}  // namespace

void kv_compact(cudaStream_t stream, const int32_t* batch_indices, const int32_t* src, const int32_t* dst,
                int64_t n_moves, const PagedKv& kv) {
  if (n_moves <= 0) return;
  if (kv.kv_dtype != DType::F32 && kv.kv_dtype != DType::F16)
    throw std::invalid_argument("tessera::cuda::kv_compact: the KV dtype must be f32 or f16");
  const int64_t words = kv.kv_dtype == DType::F32 ? 2 : 1;
  kv_compact_kernel<<<1, kThreads, 0, stream>>>(static_cast<uint16_t*>(kv.k_pages), static_cast<uint16_t*>(kv.v_pages),
                                                batch_indices, src, dst, n_moves, kv, words);
  check_launch("kv_compact");
}

}  // namespace tessera::cuda
