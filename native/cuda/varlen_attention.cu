// varlen_attention: causal attention over sequences packed along the token axis (cu_seqlens),
// block-diagonal per sequence, GQA (query head h reads kv head h / (Hq / Hkv)).
// Launch: grid (token blocks, Hq), 128 threads; each block loops over tokens t = blockIdx.x,
// blockIdx.x + gridDim.x, ... < cu_seqlens[num_seqs] (read on the device), finds the sequence of
// t by binary search on cu_seqlens and runs the online-softmax core (attention.cuh) over keys
// begin(b) .. t.
#include "attention.cuh"
#include "cuda_ops.h"

namespace tessera::cuda {
namespace {

struct VarlenKeys {
  const float* k;  // row of key 0 of the sequence, kv head hk
  const float* v;
  int64_t row_stride;  // Hkv * D
  __device__ __forceinline__ const float* krow(int j) const { return k + j * row_stride; }
  __device__ __forceinline__ const float* vrow(int j) const { return v + j * row_stride; }
  __device__ __forceinline__ bool visible(int) const { return true; }
};

template <int DPL>
__global__ void __launch_bounds__(kAttnThreads, kAttnMinBlocks)
    varlen_attention_kernel(const float* __restrict__ q, const float* __restrict__ k,
                            const float* __restrict__ v, float* __restrict__ o,
                            const int32_t* __restrict__ cu_seqlens, int32_t num_seqs, int32_t Hq,
                            int32_t Hkv, int32_t D, float scale) {
  extern __shared__ float smem[];
  const int32_t h = blockIdx.y;
  const int32_t hk = h / (Hq / Hkv);
  const int32_t total = cu_seqlens[num_seqs];
  for (int32_t t = blockIdx.x; t < total; t += gridDim.x) {
    const int32_t b = find_segment(cu_seqlens, num_seqs, t);
    const int32_t start = cu_seqlens[b];
    VarlenKeys keys;
    keys.row_stride = (int64_t)Hkv * D;
    keys.k = k + ((int64_t)start * Hkv + hk) * D;
    keys.v = v + ((int64_t)start * Hkv + hk) * D;
    const int64_t qo = ((int64_t)t * Hq + h) * D;
    attend_row<DPL>(q + qo, scale, D, t - start + 1, keys, o + qo, smem);
  }
}

template <int DPL>
void launch(cudaStream_t stream, const float* q, const float* k, const float* v, float* o,
            const VarlenBatch& batch, const AttnShape& s) {
  const size_t smem = attn_smem_bytes(DPL, s.head_dim);
  attn_prepare_smem(varlen_attention_kernel<DPL>, smem, "varlen_attention");
  const dim3 grid(attn_token_blocks(s.n_heads), (unsigned)s.n_heads);
  varlen_attention_kernel<DPL><<<grid, kAttnThreads, smem, stream>>>(
      q, k, v, o, batch.cu_seqlens, batch.num_seqs, s.n_heads, s.n_kv_heads, s.head_dim, s.scale);
}

}  // namespace

void varlen_attention(cudaStream_t stream, const float* q, const float* k, const float* v, float* o,
                      const VarlenBatch& batch, const AttnShape& s) {
  if (batch.num_seqs <= 0 || s.n_heads <= 0 || s.n_kv_heads <= 0 || s.head_dim <= 0) return;
  switch (attn_dpl(s.head_dim)) {
    case 1: launch<1>(stream, q, k, v, o, batch, s); break;
    case 2: launch<2>(stream, q, k, v, o, batch, s); break;
    case 3: launch<3>(stream, q, k, v, o, batch, s); break;
    case 4: launch<4>(stream, q, k, v, o, batch, s); break;
    case 6: launch<6>(stream, q, k, v, o, batch, s); break;
    case 8: launch<8>(stream, q, k, v, o, batch, s); break;
    default: launch<0>(stream, q, k, v, o, batch, s); break;
  }
  check_launch("varlen_attention");
}

}  // namespace tessera::cuda
