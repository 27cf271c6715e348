// varlen_attention: causal attention over packed sequences (cu_seqlens), block-diagonal per
// sequence, GQA. Work items are (sequence, kv head, block of tokens): the queries of a block and
// the heads of its GQA group share one pass over the sequence's keys (attend_block); no work is
// spent on other sequences' keys or on padding.
#include <vector>

#include "attention_common.h"
#include "tessera/ops.h"
#include "tessera/threadpool.h"

namespace tessera::cpu {
namespace {
constexpr int32_t kBlockRows = 48;  // query rows (tokens x group heads) per work item
}

void varlen_attention(ThreadPool& pool, const float* q, const float* k, const float* v, float* o,
                      const VarlenBatch& batch, const AttnShape& s) {
  const Kernels& Kn = kernels();
  const int32_t Hq = s.n_heads, Hkv = s.n_kv_heads, D = s.head_dim, group = Hq / Hkv;
  const int32_t block_tokens = std::max(1, kBlockRows / group);
  // Work items: (sequence, kv head, a range of query blocks); the keys a range needs are packed
  // once and shared by its blocks.
  int64_t units = 0;
  int32_t max_blocks = 0;
  for (int32_t b = 0; b < batch.num_seqs; b++)
    if (batch.len(b) > 0) {
      units += Hkv;
      max_blocks = std::max(max_blocks, (batch.len(b) + block_tokens - 1) / block_tokens);
    }
  // Cost (ThreadPool units): per (sequence, kv head) every key packed once (~4 units per value) and
  // two multiply-adds per (query row, causal key, dim); it sets the threads (and so the items).
  Cost cost = 0;
  for (int32_t b = 0; b < batch.num_seqs; b++) {
    const int64_t n = batch.len(b);
    cost += Hkv * (n * D * 4 + n * (n + 1) / 2 * group * D * 2);
  }
  const int64_t max_items = units * max_blocks;
  const int threads = pool.threads_for(max_items, 1, cost / std::max<int64_t>(max_items, 1));
  const int32_t range_tokens = block_tokens * blocks_per_item(units, max_blocks, threads);
  struct Item { int32_t b, hk, i0, i1; };
  std::vector<Item> items;
  for (int32_t b = 0; b < batch.num_seqs; b++)
    for (int32_t hk = 0; hk < Hkv; hk++)
      for (int32_t i0 = 0; i0 < batch.len(b); i0 += range_tokens)
        items.push_back({b, hk, i0, std::min(batch.len(b), i0 + range_tokens)});
  // q (T, Hq, D) · k, v (T, Hkv, D)
  pool.parallel_for((int64_t)items.size(), 1, cost / std::max<int64_t>((int64_t)items.size(), 1), [&](int64_t w0, int64_t w1) {
    thread_local std::vector<float> qs;
    thread_local PackedKvRows pk;
    for (int64_t w = w0; w < w1; w++) {
      const Item it = items[w];
      const int64_t start = batch.begin(it.b);
      pack_kv<float>(
          Kn, D, it.i1, [&](int32_t j) { return k + ((start + j) * Hkv + it.hk) * D; },
          [&](int32_t j) { return v + ((start + j) * Hkv + it.hk) * D; }, pk);
      for (int32_t i0 = it.i0; i0 < it.i1; i0 += block_tokens) {
        const int32_t i1 = std::min(it.i1, i0 + block_tokens), M = (i1 - i0) * group;
        auto qrow = [&](int32_t r) { return ((start + i0 + r / group) * Hq + it.hk * group + r % group) * D; };
        qs.resize((size_t)M * D);
        for (int32_t r = 0; r < M; r++) std::copy_n(q + qrow(r), D, qs.data() + (size_t)r * D);
        attend_packed(
            Kn, qs.data(), M, D, s.scale, pk, i1, [&](int32_t r) { return i0 + r / group + 1; },
            [](int32_t, int32_t) { return true; }, [&](int32_t r) { return o + qrow(r); });
      }
    }
  });
}

}  // namespace tessera::cpu
