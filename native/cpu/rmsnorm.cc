// rmsnorm: y = x / sqrt(mean(x²) + eps) * weight, one row per parallel item.
#include <algorithm>
#include <cmath>

#include "kernels.h"
#include "tessera/ops.h"
#include "tessera/threadpool.h"

namespace tessera::cpu {

namespace {
// Rows per parallel chunk so that a chunk holds at least ~16k elements.
int64_t row_grain(int64_t n) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(n, 1)); }
// Cost units per element (ThreadPool): a sum of squares, then a scaled copy.
constexpr Cost kElemCost = 4;
}  // namespace

void rmsnorm(ThreadPool& pool, const float* x, const float* weight, float* y, int64_t rows,
             int64_t n, float eps) {
  const Kernels& K = kernels();
  pool.parallel_for(rows, row_grain(n), kElemCost * n, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float* xr = x + r * n;
      float* yr = y + r * n;
      const float ss = K.dot_f32(xr, xr, n);
      const float inv = 1.0f / std::sqrt(ss / (float)n + eps);
      for (int64_t i = 0; i < n; i++) yr[i] = xr[i] * inv * weight[i];
    }
  });
}

}  // namespace tessera::cpu
