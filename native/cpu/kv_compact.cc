// cpu::kv_compact: the KV entry moves of a tree-path commit (ops.h). A few rows per commit, in
// order (a move may read what an earlier one wrote), so it runs on the calling thread.
#include <cstdint>
#include <cstring>

#include "tessera/ops.h"

namespace tessera::cpu {

void kv_compact(ThreadPool&, const int32_t* batch_indices, const int32_t* src, const int32_t* dst, int64_t n_moves,
                const PagedKv& kv) {
  const int64_t row = dtype_bytes(kv.kv_dtype, (int64_t)kv.n_kv_heads * kv.head_dim);  // (Hkv, D) at one slot
  const int64_t elem = dtype_bytes(kv.kv_dtype, 1);
  uint8_t* k = static_cast<uint8_t*>(kv.k_pages);
  uint8_t* v = static_cast<uint8_t*>(kv.v_pages);
  for (int64_t m = 0; m < n_moves; m++) {
    if (src[m] == dst[m]) continue;
    const int64_t from = kv.offset(batch_indices[m], src[m], 0) * elem, to = kv.offset(batch_indices[m], dst[m], 0) * elem;
    std::memcpy(k + to, k + from, row);  // distinct slots: the rows do not overlap
    std::memcpy(v + to, v + from, row);
  }
}

}  // namespace tessera::cpu
