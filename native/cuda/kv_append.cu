// kv_append: k/v (tokens, Hkv, D) f32 written into the page slot of (batch_indices[t],
// positions[t]), converted to the pool's dtype (f32 copy or f16 round-to-nearest-even).
// Launch: blockIdx.x = token (grid-stride), threads over the token's Hkv*D contiguous elements
// (the heads of one slot are contiguous in NHD pages).
#include "common.cuh"
#include "cuda_ops.h"

namespace tessera::cuda {
namespace {

constexpr int kThreads = 256;

template <typename KV>
__global__ void __launch_bounds__(kThreads) kv_append_kernel(const float* __restrict__ k,
                                                             const float* __restrict__ v,
                                                             const int32_t* __restrict__ batch_indices,
                                                             const int32_t* __restrict__ positions,
                                                             int64_t tokens, PagedKv kv) {
  const int64_t row = (int64_t)kv.n_kv_heads * kv.head_dim;
  KV* kd = static_cast<KV*>(kv.k_pages);
  KV* vd = static_cast<KV*>(kv.v_pages);
  for (int64_t t = blockIdx.x; t < tokens; t += gridDim.x) {
    const int64_t dst = kv.offset(batch_indices[t], positions[t], 0);
    const float* ks = k + t * row;
    const float* vs = v + t * row;
    for (int64_t e = threadIdx.x; e < row; e += blockDim.x) {
      store_elem(kd, dst + e, ks[e]);
      store_elem(vd, dst + e, vs[e]);
    }
  }
}

}  // namespace

void kv_append(cudaStream_t stream, const float* k, const float* v, const int32_t* batch_indices,
               const int32_t* positions, int64_t tokens, const PagedKv& kv) {
  if (tokens <= 0 || kv.n_kv_heads <= 0 || kv.head_dim <= 0) return;
  const unsigned grid = (unsigned)(tokens < 65535 * 32 ? tokens : 65535 * 32);
  if (kv.kv_dtype == DType::F16) {
    kv_append_kernel<uint16_t><<<grid, kThreads, 0, stream>>>(k, v, batch_indices, positions, tokens, kv);
  } else if (kv.kv_dtype == DType::F32) {
    kv_append_kernel<float><<<grid, kThreads, 0, stream>>>(k, v, batch_indices, positions, tokens, kv);
  } else {
    throw std::invalid_argument("tessera::cuda::kv_append: kv dtype must be f32 or f16");
  }
  check_launch("kv_append");
}

}  // namespace tessera::cuda
