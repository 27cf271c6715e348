// softmax over the last axis, max-subtracted for stability.
#include <algorithm>
#include <cmath>

#include "kernels.h"
#include "tessera/ops.h"
#include "tessera/threadpool.h"

namespace tessera::cpu {

namespace {
// Rows per parallel chunk so that a chunk holds at least ~16k elements.
int64_t row_grain(int64_t n) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(n, 1)); }
// Cost units per element (ThreadPool): max, exp and sum, scale.
constexpr Cost kElemCost = 8;
}  // namespace

void softmax(ThreadPool& pool, const float* x, float* y, int64_t rows, int64_t n) {
  const Kernels& K = kernels();
  pool.parallel_for(rows, row_grain(n), kElemCost * n, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float* xr = x + r * n;
      float* yr = y + r * n;
      float mx = -INFINITY;
      for (int64_t i = 0; i < n; i++) mx = std::max(mx, xr[i]);
      std::copy_n(xr, n, yr);
      const float sum = K.exp_sum(yr, n, mx);
      const float inv = 1.0f / sum;
      for (int64_t i = 0; i < n; i++) yr[i] *= inv;
    }
  });
}

}  // namespace tessera::cpu
