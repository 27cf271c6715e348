// paged_attention: queries of many sequences (several per sequence: decode, chunked prefill,
// tree verify) against the paged KV cache, GQA, f32 or f16 pages, optional tree mask.
#include <vector>

#include "attention_common.h"
#include "tessera/ops.h"
#include "tessera/threadpool.h"

namespace tessera::cpu {
namespace {

template <typename KV>
void run(ThreadPool& pool, const float* q, const int32_t* qo_indptr, const PagedKv& kv,
         const TreeMask* tree, float* o, const AttnShape& s) {
  const Kernels& Kn = kernels();
  const int32_t Hq = s.n_heads, D = s.head_dim, group = Hq / s.n_kv_heads;
  const int64_t Tq = qo_indptr[kv.batch];
  const KV* kp = static_cast<const KV*>(kv.k_pages);
  const KV* vp = static_cast<const KV*>(kv.v_pages);
  // q (Tq, Hq, D); K/V (num_pages, page_size, Hkv, D)
  pool.parallel_for(Tq * Hq, 2, [&](int64_t w0, int64_t w1) {
    thread_local std::vector<int64_t> rows;  // element offset of each visible-or-not key
    for (int64_t w = w0; w < w1; w++) {
      const int64_t t = w / Hq;
      const int32_t h = (int32_t)(w % Hq), hk = h / group;
      const int32_t b = find_segment(qo_indptr, kv.batch, t);
      const int32_t nq = qo_indptr[b + 1] - qo_indptr[b];
      const int32_t i = (int32_t)(t - qo_indptr[b]);
      const int32_t L = kv.seq_len(b), prefix = L - nq;
      const int32_t n = tree ? L : prefix + i + 1;  // keys to scan
      rows.resize(n);
      for (int32_t pos = 0, pi = kv.indptr[b]; pos < n; pi++) {  // walk the page table once
        const int64_t base = (int64_t)kv.indices[pi] * kv.page_size;
        for (int32_t slot = 0; slot < kv.page_size && pos < n; slot++, pos++)
          rows[pos] = ((base + slot) * kv.n_kv_heads + hk) * D;
      }
      const uint8_t* mrow = tree ? tree->mask + tree->indptr[b] + (int64_t)i * nq : nullptr;
      auto visible = [&](int32_t j) { return j < prefix || !mrow || mrow[j - prefix]; };
      auto key = [&](const float* qv, int32_t j) {
        if constexpr (sizeof(KV) == 4) return Kn.dot_f32(qv, (const float*)(kp + rows[j]), D);
        else return Kn.dot_f16(qv, (const uint16_t*)(kp + rows[j]), D);
      };
      auto value = [&](float* acc, float p, int32_t j) {
        if constexpr (sizeof(KV) == 4) Kn.axpy_f32(acc, p, (const float*)(vp + rows[j]), D);
        else Kn.axpy_f16(acc, p, (const uint16_t*)(vp + rows[j]), D);
      };
      attend_one(q + (t * Hq + h) * D, D, s.scale, n, key, value, visible, o + (t * Hq + h) * D);
    }
  });
}

}  // namespace

void paged_attention(ThreadPool& pool, const float* q, const int32_t* qo_indptr, const PagedKv& kv,
                     const TreeMask* tree, float* o, const AttnShape& s) {
  if (kv.kv_dtype == DType::F16) run<uint16_t>(pool, q, qo_indptr, kv, tree, o, s);
  else run<float>(pool, q, qo_indptr, kv, tree, o, s);
}

}  // namespace tessera::cpu
