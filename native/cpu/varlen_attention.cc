// varlen_attention: causal attention over packed sequences (cu_seqlens), block-diagonal per
// sequence, GQA. One work item per (token, query head); no work on other sequences' keys.
#include "attention_common.h"
#include "tessera/ops.h"
#include "tessera/threadpool.h"

namespace tessera::cpu {

void varlen_attention(ThreadPool& pool, const float* q, const float* k, const float* v, float* o,
                      const VarlenBatch& batch, const AttnShape& s) {
  const Kernels& Kn = kernels();
  const int64_t T = batch.total();
  const int32_t Hq = s.n_heads, Hkv = s.n_kv_heads, D = s.head_dim, group = Hq / Hkv;
  // q (T, Hq, D) · k, v (T, Hkv, D)
  pool.parallel_for(T * Hq, 4, [&](int64_t w0, int64_t w1) {
    for (int64_t w = w0; w < w1; w++) {
      const int64_t t = w / Hq;
      const int32_t h = (int32_t)(w % Hq), hk = h / group;
      const int32_t b = find_segment(batch.cu_seqlens, batch.num_seqs, t);
      const int64_t start = batch.begin(b);
      const int32_t n = (int32_t)(t - start + 1);  // causal: keys start..t
      const float* kb = k + (start * Hkv + hk) * D;
      const float* vb = v + (start * Hkv + hk) * D;
      attend_one(
          q + (t * Hq + h) * D, D, s.scale, n,
          [&](const float* qv, int32_t j) { return Kn.dot_f32(qv, kb + (int64_t)j * Hkv * D, D); },
          [&](float* acc, float p, int32_t j) { Kn.axpy_f32(acc, p, vb + (int64_t)j * Hkv * D, D); },
          [](int32_t) { return true; }, o + (t * Hq + h) * D);
    }
  });
}

}  // namespace tessera::cpu
