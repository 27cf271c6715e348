// kv_append: writes new K/V rows (f32) into their page slots, converting to the pool's dtype.
#include <cstring>

#include "kernels.h"
#include "tessera/ops.h"
#include "tessera/threadpool.h"

namespace tessera::cpu {

void kv_append(ThreadPool& pool, const float* k, const float* v, const int32_t* batch_indices,
               const int32_t* positions, int64_t tokens, const PagedKv& kv) {
  const int32_t H = kv.n_kv_heads, D = kv.head_dim;
  const Kernels& K = kernels();
  // k, v (tokens, H, D) -> pages (num_pages, page_size, H, D)
  // Cost per token: K and V rows read as f32 and written (f16 or f32), ~6 units per value each.
  pool.parallel_for(tokens, 16, (Cost)H * D * 12, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; t++) {
      const int64_t dst = kv.offset(batch_indices[t], positions[t], 0);  // heads are contiguous
      const float* ks = k + t * H * D;
      const float* vs = v + t * H * D;
      if (kv.kv_dtype == DType::F16) {
        uint16_t* kd = static_cast<uint16_t*>(kv.k_pages) + dst;
        uint16_t* vd = static_cast<uint16_t*>(kv.v_pages) + dst;
        K.f32_to_f16(ks, kd, (int64_t)H * D);
        K.f32_to_f16(vs, vd, (int64_t)H * D);
      } else {
        std::memcpy(static_cast<float*>(kv.k_pages) + dst, ks, sizeof(float) * H * D);
        std::memcpy(static_cast<float*>(kv.v_pages) + dst, vs, sizeof(float) * H * D);
      }
    }
  });
}

}  // namespace tessera::cpu
