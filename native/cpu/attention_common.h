// Pieces shared by the CPU attention ops: attention of a block of queries as two panel GEMMs
// (prefill, tree verify), and the segment lookup of packed rows.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels.h"

namespace tessera::cpu {

// K and V rows of nk keys of one KV head, packed once for the panel GEMMs and shared by every
// query block of a work item (a long prompt's blocks would otherwise repack the same keys):
// K as panels (D, NR) of NR keys, kp[p][d][j] = K[p*NR + j][d]; V as column chunks of NR dims,
// vp[c][j][dd] = V[j][c*NR + dd]. A block may use any first nk' <= nk keys of the packing.
struct PackedKvRows {
  std::vector<float> kp, vp, row;
  int32_t nk = 0;
};

template <typename KV, typename KRow, typename VRow>
void pack_kv(const Kernels& K, int32_t D, int32_t nk, KRow key_row, VRow value_row, PackedKvRows& pk) {
  const int32_t NR = K.gemm_nr;
  const int32_t panels = (nk + NR - 1) / NR, chunks = (D + NR - 1) / NR;
  pk.nk = nk;
  pk.kp.assign((size_t)panels * NR * D, 0.f);
  pk.vp.assign((size_t)chunks * nk * NR, 0.f);
  pk.row.resize(D);
  auto load = [&](const KV* src, float* dst) {
    if constexpr (sizeof(KV) == 4) std::copy_n(reinterpret_cast<const float*>(src), D, dst);
    else K.f16_to_f32(reinterpret_cast<const uint16_t*>(src), dst, D);
  };
  for (int32_t j = 0; j < nk; j++) {
    load(key_row(j), pk.row.data());
    float* panel = pk.kp.data() + (size_t)(j / NR) * NR * D + j % NR;
    for (int32_t d = 0; d < D; d++) panel[(size_t)d * NR] = pk.row[d];
    load(value_row(j), pk.row.data());
    for (int32_t c = 0; c < chunks; c++) {
      const int32_t w = std::min(NR, D - c * NR);
      std::copy_n(pk.row.data() + c * NR, w, pk.vp.data() + ((size_t)c * nk + j) * NR);
    }
  }
}

// Block attention: M query rows (several tokens and/or the heads of one GQA group) against the
// first nk keys of a packing, as two panel GEMMs: S (M, nk) = Q·Kᵀ, then O (M, D) = softmax(S)·V.
// q rows are (M, D) contiguous. Row r sees keys j < limit(r) (<= nk) for which visible(r, j) holds
// (causal attention passes a visible that is always true); o row r is written to out(r).
template <typename Limit, typename Visible, typename Out>
void attend_packed(const Kernels& K, const float* q, int32_t M, int32_t D, float scale, const PackedKvRows& pk,
                   int32_t nk, Limit limit, Visible visible, Out out) {
  const int32_t NR = K.gemm_nr;
  const int32_t panels = (nk + NR - 1) / NR, ld = panels * NR, chunks = (D + NR - 1) / NR;
  thread_local std::vector<float> s, o, sums;
  s.resize((size_t)M * ld);
  for (int32_t p = 0; p < panels; p++)
    K.gemm_panel(q, D, pk.kp.data() + (size_t)p * NR * D, s.data() + p * NR, ld, M, std::min(NR, nk - p * NR), D);
  // Masked softmax per row (unnormalised; the sum divides O at the end).
  sums.assign(M, 0.f);
  for (int32_t r = 0; r < M; r++) {
    float* sr = s.data() + (size_t)r * ld;
    const int32_t lim = std::min(nk, limit(r));
    float mx = -INFINITY;
    for (int32_t j = 0; j < lim; j++) {
      sr[j] = visible(r, j) ? sr[j] * scale : -INFINITY;
      mx = std::max(mx, sr[j]);
    }
    std::fill(sr + std::max(lim, 0), sr + nk, 0.f);
    if (mx == -INFINITY) {  // row sees no key: zeros
      std::fill(sr, sr + nk, 0.f);
      sums[r] = 0.f;
    } else {
      sums[r] = K.exp_sum(sr, lim, mx);
    }
  }
  o.resize((size_t)M * chunks * NR);
  for (int32_t c = 0; c < chunks; c++)
    K.gemm_panel(s.data(), ld, pk.vp.data() + (size_t)c * pk.nk * NR, o.data() + c * NR, (int64_t)chunks * NR, M,
                 std::min(NR, D - c * NR), nk);
  for (int32_t r = 0; r < M; r++) {
    float* dst = out(r);
    const float inv = sums[r] > 0.f ? 1.0f / sums[r] : 0.f;
    const float* src = o.data() + (size_t)r * chunks * NR;
    for (int32_t d = 0; d < D; d++) dst[d] = src[d] * inv;
  }
}

// Splits each of `units` (sequence, kv head) pairs' `blocks` query blocks into consecutive ranges so
// that there are about 4 work items per thread: each range packs its keys once.
inline int32_t blocks_per_item(int64_t units, int32_t blocks, int threads) {
  if (units <= 0 || blocks <= 0) return 1;
  const int64_t want_items = 4 * (int64_t)threads;
  const int64_t ranges = std::max<int64_t>(1, (want_items + units - 1) / units);
  return (int32_t)std::max<int64_t>(1, (blocks + ranges - 1) / ranges);
}

// Index b with indptr[b] <= t < indptr[b+1] (indptr non-decreasing, n+1 entries).
inline int32_t find_segment(const int32_t* indptr, int32_t n, int64_t t) {
  return (int32_t)(std::upper_bound(indptr, indptr + n + 1, (int32_t)t) - indptr) - 1;
}

}  // namespace tessera::cpu
