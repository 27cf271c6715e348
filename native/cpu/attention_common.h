// Pieces shared by the CPU attention ops: softmax-weighted sums over a list of key rows.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels.h"

namespace tessera::cpu {

// o (D) = Σ_j softmax(scores)_j · v_j over the keys whose score is finite.
// `key(j)` and `value(j)` return row pointers (float or uint16 f16) of key j in [0, n).
// Scores are computed first (one pass over K), then the weighted sum (one pass over V).
template <typename KRow, typename VRow, typename Visible>
void attend_one(const float* q, int32_t D, float scale, int32_t n, KRow key,
                VRow value, Visible visible, float* o) {
  thread_local std::vector<float> scores;
  scores.resize(std::max(n, 1));
  float mx = -INFINITY;
  for (int32_t j = 0; j < n; j++) {
    if (!visible(j)) {
      scores[j] = -INFINITY;
      continue;
    }
    const float s = key(q, j) * scale;
    scores[j] = s;
    mx = std::max(mx, s);
  }
  std::fill(o, o + D, 0.f);
  if (mx == -INFINITY) return;  // no visible key: zeros
  float sum = 0.f;
  for (int32_t j = 0; j < n; j++) {
    if (scores[j] == -INFINITY) continue;
    const float p = std::exp(scores[j] - mx);
    sum += p;
    value(o, p, j);
  }
  const float inv = 1.0f / sum;
  for (int32_t d = 0; d < D; d++) o[d] *= inv;
}

// Index b with indptr[b] <= t < indptr[b+1] (indptr non-decreasing, n+1 entries).
inline int32_t find_segment(const int32_t* indptr, int32_t n, int64_t t) {
  return (int32_t)(std::upper_bound(indptr, indptr + n + 1, (int32_t)t) - indptr) - 1;
}

}  // namespace tessera::cpu
