// Pieces shared by the CPU attention ops: attention of a block of queries as two panel GEMMs
// (prefill, tree verify), and the segment lookup of packed rows.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels.h"

namespace tessera::cpu {

// Block attention: M query rows (several tokens and/or the heads of one GQA group) against nk
// keys of one KV head, as two panel GEMMs: S (M, nk) = Q·Kᵀ, then O (M, D) = softmax(S)·V.
// q rows are (M, D) contiguous; key_row(j) / value_row(j) give key j's K / V row (f32, or f16 when
// KV is uint16_t); visible(r, j) says whether row r sees key j. o row r is written to out(r).
template <typename KV, typename KRow, typename VRow, typename Visible, typename Out>
void attend_block(const Kernels& K, const float* q, int32_t M, int32_t D, float scale, int32_t nk,
                  KRow key_row, VRow value_row, Visible visible, Out out) {
  const int32_t NR = K.gemm_nr;
  const int32_t panels = (nk + NR - 1) / NR, ld = panels * NR;
  thread_local std::vector<float> kp, vp, s, o, row;
  // K packed as panels (D, NR) of NR keys: kp[p][d][j] = K[p*NR + j][d].
  kp.assign((size_t)panels * NR * D, 0.f);
  row.resize(D);
  auto load = [&](const KV* src, float* dst) {
    if constexpr (sizeof(KV) == 4) std::copy_n(reinterpret_cast<const float*>(src), D, dst);
    else K.f16_to_f32(reinterpret_cast<const uint16_t*>(src), dst, D);
  };
  for (int32_t j = 0; j < nk; j++) {
    load(key_row(j), row.data());
    float* panel = kp.data() + (size_t)(j / NR) * NR * D + j % NR;
    for (int32_t d = 0; d < D; d++) panel[(size_t)d * NR] = row[d];
  }
  s.resize((size_t)M * ld);
  for (int32_t p = 0; p < panels; p++)
    K.gemm_panel(q, D, kp.data() + (size_t)p * NR * D, s.data() + p * NR, ld, M, std::min(NR, nk - p * NR), D);
  // Masked softmax per row (unnormalised; the sum divides O at the end).
  thread_local std::vector<float> sums;
  sums.assign(M, 0.f);
  for (int32_t r = 0; r < M; r++) {
    float* sr = s.data() + (size_t)r * ld;
    float mx = -INFINITY;
    for (int32_t j = 0; j < nk; j++) {
      sr[j] = visible(r, j) ? sr[j] * scale : -INFINITY;
      mx = std::max(mx, sr[j]);
    }
    if (mx == -INFINITY) {  // row sees no key: zeros
      std::fill(sr, sr + nk, 0.f);
      sums[r] = 0.f;
    } else {
      sums[r] = K.exp_sum(sr, nk, mx);
    }
  }
  // V packed as column chunks of NR dims: vp[c][j][dd] = V[j][c*NR + dd].
  const int32_t chunks = (D + NR - 1) / NR;
  vp.assign((size_t)chunks * nk * NR, 0.f);
  for (int32_t j = 0; j < nk; j++) {
    load(value_row(j), row.data());
    for (int32_t d = 0; d < D; d++) vp[((size_t)(d / NR) * nk + j) * NR + d % NR] = row[d];
  }
  o.resize((size_t)M * chunks * NR);
  for (int32_t c = 0; c < chunks; c++)
    K.gemm_panel(s.data(), ld, vp.data() + (size_t)c * nk * NR, o.data() + c * NR, (int64_t)chunks * NR, M,
                 std::min(NR, D - c * NR), nk);
  for (int32_t r = 0; r < M; r++) {
    float* dst = out(r);
    const float inv = sums[r] > 0.f ? 1.0f / sums[r] : 0.f;
    const float* src = o.data() + (size_t)r * chunks * NR;
    for (int32_t d = 0; d < D; d++) dst[d] = src[d] * inv;
  }
}

// Index b with indptr[b] <= t < indptr[b+1] (indptr non-decreasing, n+1 entries).
inline int32_t find_segment(const int32_t* indptr, int32_t n, int64_t t) {
  return (int32_t)(std::upper_bound(indptr, indptr + n + 1, (int32_t)t) - indptr) - 1;
}

}  // namespace tessera::cpu
