// paged_attention: queries of many sequences (several per sequence: decode, chunked prefill,
// tree verify) against the paged KV cache, GQA, f32 or f16 pages, optional tree mask.
#include <vector>

#include "attention_common.h"
#include "tessera/ops.h"
#include "tessera/threadpool.h"

namespace tessera::cpu {
namespace {

// Element offsets of the first n K/V rows of sequence b, kv head hk (walks its page table once).
void key_offsets(const PagedKv& kv, int32_t b, int32_t hk, int32_t n, std::vector<int64_t>& rows) {
  rows.resize(n);
  for (int32_t pos = 0, pi = kv.indptr[b]; pos < n; pi++) {
    const int64_t base = (int64_t)kv.indices[pi] * kv.page_size;
    for (int32_t slot = 0; slot < kv.page_size && pos < n; slot++, pos++)
      rows[pos] = ((base + slot) * kv.n_kv_heads + hk) * kv.head_dim;
  }
}

// Query rows (tokens x heads of a GQA group) a blocked work item packs at most.
constexpr int32_t kBlockRows = 48;

template <typename KV>
void run(ThreadPool& pool, const float* q, const int32_t* qo_indptr, const PagedKv& kv,
         const TreeMask* tree, float* o, const AttnShape& s) {
  const Kernels& Kn = kernels();
  const int32_t Hq = s.n_heads, Hkv = s.n_kv_heads, D = s.head_dim, group = Hq / Hkv;
  const KV* kp = static_cast<const KV*>(kv.k_pages);
  const KV* vp = static_cast<const KV*>(kv.v_pages);
  // q (Tq, Hq, D); K/V (num_pages, page_size, Hkv, D)

  // Sequences with many query rows (prefill, tree verify) go through the blocked GEMM path in
  // items of (sequence, kv head, range of query blocks): a range packs the keys it needs once;
  // the rest (decode) attend one query at a time.
  const int32_t block_tokens = std::max(1, kBlockRows / group);
  std::vector<int32_t> single;  // sequences done per query
  std::vector<int32_t> multi;
  int32_t max_blocks = 0;
  for (int32_t b = 0; b < kv.batch; b++) {
    const int32_t nq = qo_indptr[b + 1] - qo_indptr[b];
    if (nq == 0) continue;
    if (nq < 4) {  // decode-like: a few tokens
      single.push_back(b);
      continue;
    }
    multi.push_back(b);
    max_blocks = std::max(max_blocks, (nq + block_tokens - 1) / block_tokens);
  }
  // Cost (ThreadPool units) of the blocked sequences: per kv head, every key packed once (~4 units
  // per value) and two multiply-adds per (query row, visible key, dim); it sets how many threads
  // (and so how many items) the loop gets.
  Cost multi_cost = 0;
  for (int32_t b : multi) {
    const int64_t nq = qo_indptr[b + 1] - qo_indptr[b], L = kv.seq_len(b), prefix = L - nq;
    const int64_t visible = tree ? nq * L : nq * prefix + nq * (nq + 1) / 2;  // (query, key) pairs
    multi_cost += Hkv * (L * D * 4 + visible * group * D * 2);
  }
  const int64_t max_items = (int64_t)multi.size() * Hkv * max_blocks;
  const int multi_threads = pool.threads_for(max_items, 1, multi_cost / std::max<int64_t>(max_items, 1));
  const int32_t range_tokens = block_tokens * blocks_per_item((int64_t)multi.size() * Hkv, max_blocks, multi_threads);
  struct Item { int32_t b, hk, i0, i1; };
  std::vector<Item> blocked;
  for (int32_t b : multi) {
    const int32_t nq = qo_indptr[b + 1] - qo_indptr[b];
    for (int32_t hk = 0; hk < Hkv; hk++)
      for (int32_t i0 = 0; i0 < nq; i0 += range_tokens) blocked.push_back({b, hk, i0, std::min(nq, i0 + range_tokens)});
  }

  const Cost item_cost = multi_cost / std::max<int64_t>((int64_t)blocked.size(), 1);
  pool.parallel_for((int64_t)blocked.size(), 1, item_cost, [&](int64_t w0, int64_t w1) {
    thread_local std::vector<int64_t> rows;
    thread_local std::vector<float> qs;
    thread_local PackedKvRows pk;
    for (int64_t w = w0; w < w1; w++) {
      const Item it = blocked[w];
      const int32_t nq = qo_indptr[it.b + 1] - qo_indptr[it.b];
      const int32_t L = kv.seq_len(it.b), prefix = L - nq;
      const int32_t nk_all = tree ? L : prefix + it.i1;
      key_offsets(kv, it.b, it.hk, nk_all, rows);
      pack_kv<KV>(Kn, D, nk_all, [&](int32_t j) { return kp + rows[j]; }, [&](int32_t j) { return vp + rows[j]; }, pk);
      const uint8_t* mask = tree ? tree->mask + tree->indptr[it.b] : nullptr;
      for (int32_t i0 = it.i0; i0 < it.i1; i0 += block_tokens) {
        const int32_t i1 = std::min(it.i1, i0 + block_tokens);
        const int32_t nk = tree ? L : prefix + i1;
        const int32_t M = (i1 - i0) * group;
        auto qrow = [&](int32_t r) {
          const int64_t t = qo_indptr[it.b] + i0 + r / group;
          return (t * Hq + it.hk * group + r % group) * D;
        };
        qs.resize((size_t)M * D);
        for (int32_t r = 0; r < M; r++) std::copy_n(q + qrow(r), D, qs.data() + (size_t)r * D);
        if (mask) {
          attend_packed(
              Kn, qs.data(), M, D, s.scale, pk, nk, [&](int32_t) { return nk; },
              [&](int32_t r, int32_t j) { return j < prefix || mask[(int64_t)(i0 + r / group) * nq + (j - prefix)] != 0; },
              [&](int32_t r) { return o + qrow(r); });
        } else {
          attend_packed(
              Kn, qs.data(), M, D, s.scale, pk, nk, [&](int32_t r) { return prefix + i0 + r / group + 1; },
              [](int32_t, int32_t) { return true; }, [&](int32_t r) { return o + qrow(r); });
        }
      }
    }
  });

  // One query token at a time, all heads of a GQA group together: each K and V row is read once
  // for the group. Work items are (query token, kv head).
  // Cost (ThreadPool units) per key of an item: K and V rows read, group x D multiply-adds for the
  // scores and as many for the output, and an exp per score.
  std::vector<int64_t> queries;  // token indices
  int64_t keys = 0;              // keys scanned, summed over the queries
  for (int32_t b : single) {
    const int32_t nq = qo_indptr[b + 1] - qo_indptr[b], L = kv.seq_len(b);
    for (int32_t t = qo_indptr[b]; t < qo_indptr[b + 1]; t++) {
      queries.push_back(t);
      keys += tree ? L : L - nq + (t - qo_indptr[b]) + 1;
    }
  }
  const Cost key_cost = (Cost)D * (2 * (Cost)sizeof(KV) + 2 * group) + 8 * group;
  const int64_t single_items = (int64_t)queries.size() * Hkv;
  pool.parallel_for(single_items, 1, keys * Hkv * key_cost / std::max<int64_t>(single_items, 1), [&](int64_t w0, int64_t w1) {
    thread_local std::vector<int64_t> rows;
    thread_local std::vector<float> scores;
    for (int64_t w = w0; w < w1; w++) {
      const int64_t t = queries[w / Hkv];
      const int32_t hk = (int32_t)(w % Hkv);
      const int32_t b = find_segment(qo_indptr, kv.batch, t);
      const int32_t nq = qo_indptr[b + 1] - qo_indptr[b];
      const int32_t i = (int32_t)(t - qo_indptr[b]);
      const int32_t L = kv.seq_len(b), prefix = L - nq;
      const int32_t n = tree ? L : prefix + i + 1;  // keys to scan
      key_offsets(kv, b, hk, n, rows);
      const uint8_t* mrow = tree ? tree->mask + tree->indptr[b] + (int64_t)i * nq : nullptr;
      const float* qg = q + (t * Hq + (int64_t)hk * group) * D;  // the group's query heads, contiguous
      float* og = o + (t * Hq + (int64_t)hk * group) * D;
      scores.resize((size_t)group * n);
      // scores (group, n)
      for (int32_t j = 0; j < n; j++) {
        const bool vis = j < prefix || !mrow || mrow[j - prefix];
        for (int32_t g = 0; g < group; g++) {
          float sc = -INFINITY;
          if (vis) {
            if constexpr (sizeof(KV) == 4) sc = Kn.dot_f32(qg + g * D, (const float*)(kp + rows[j]), D);
            else sc = Kn.dot_f16(qg + g * D, (const uint16_t*)(kp + rows[j]), D);
            sc *= s.scale;
          }
          scores[(size_t)g * n + j] = sc;
        }
      }
      std::fill(og, og + (int64_t)group * D, 0.f);
      for (int32_t g = 0; g < group; g++) {
        float* sg = scores.data() + (size_t)g * n;
        float mx = -INFINITY;
        for (int32_t j = 0; j < n; j++) mx = std::max(mx, sg[j]);
        if (mx == -INFINITY) {
          std::fill(sg, sg + n, 0.f);
        } else {
          const float inv = 1.0f / Kn.exp_sum(sg, n, mx);
          for (int32_t j = 0; j < n; j++) sg[j] *= inv;
        }
      }
      // o (group, D) += p (group, j) * v_j
      for (int32_t j = 0; j < n; j++)
        for (int32_t g = 0; g < group; g++) {
          const float p = scores[(size_t)g * n + j];
          if (p == 0.f) continue;
          if constexpr (sizeof(KV) == 4) Kn.axpy_f32(og + g * D, p, (const float*)(vp + rows[j]), D);
          else Kn.axpy_f16(og + g * D, p, (const uint16_t*)(vp + rows[j]), D);
        }
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
