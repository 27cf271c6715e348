// The CPU versions of the forward step's small ops (ops.h): embedding lookup, bias, residual add
// fused with rmsnorm, row gather / scatter-add, top-k / argmax. They move little data next to
// the matmuls, so most run on the calling thread; add_rmsnorm reuses cpu::rmsnorm for the norm.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "tessera/dtype.h"
#include "tessera/ops.h"
#include "tessera/threadpool.h"

namespace tessera::cpu {

void embed(ThreadPool&, const void* table, DType dtype, int64_t n_embd, const int32_t* tokens, int64_t n_tokens,
           float* out) {
  const int64_t row_bytes = dtype_bytes(dtype, n_embd);
  for (int64_t t = 0; t < n_tokens; t++)  // exact conversions: the reference's own code
    ref::convert(static_cast<const uint8_t*>(table) + (int64_t)tokens[t] * row_bytes, dtype, out + t * n_embd,
                 DType::F32, n_embd);
}

void add_bias(ThreadPool&, float* y, const float* bias, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t i = 0; i < n; i++) y[r * n + i] += bias[i];
}

void add_rmsnorm(ThreadPool& pool, float* x, const float* y, const float* weight, float* xn, int64_t rows, int64_t n,
                 float eps) {
  const int64_t total = rows * n;
  for (int64_t i = 0; i < total; i++) x[i] += y[i];
  rmsnorm(pool, x, weight, xn, rows, n, eps);
}

void gather_rows(ThreadPool&, const float* x, const int32_t* rows, int64_t n_rows, int64_t n, float* out) {
  for (int64_t r = 0; r < n_rows; r++) std::memcpy(out + r * n, x + (int64_t)rows[r] * n, sizeof(float) * n);
}

void scatter_add_rows(ThreadPool&, float* x, const float* y, const int32_t* rows, int64_t n_rows, int64_t n) {
  for (int64_t r = 0; r < n_rows; r++) {
    float* d = x + (int64_t)rows[r] * n;
    const float* s = y + r * n;
    for (int64_t i = 0; i < n; i++) d[i] += s[i];
  }
}

namespace {
// (v, i) is better than (bv, bi): larger value, or equal value and lower index.
inline bool better(float v, int32_t i, float bv, int32_t bi) { return v > bv || (v == bv && i < bi); }
}  // namespace

void top_k_rows(ThreadPool& pool, const float* x, int64_t rows, int64_t n, int k, int32_t* idx, float* val) {
  if (k <= 0) return;
  // One row per task; a row keeps its best k in a small sorted array (k is small when sampling).
  // ~2 cost units per value (a compare; few reach the insertion).
  pool.parallel_for(rows, 1, (Cost)n * 2, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r++) {
      const float* xr = x + r * n;
      int32_t* ir = idx + r * k;
      float* vr = val + r * k;
      int have = 0;
      for (int32_t i = 0; i < (int32_t)n; i++) {
        const float v = xr[i];
        if (std::isnan(v)) continue;
        if (have == k && !better(v, i, vr[k - 1], ir[k - 1])) continue;
        int p = have < k ? have++ : k - 1;
        while (p > 0 && better(v, i, vr[p - 1], ir[p - 1])) {
          vr[p] = vr[p - 1], ir[p] = ir[p - 1];
          p--;
        }
        vr[p] = v, ir[p] = i;
      }
      for (int p = have; p < k; p++) ir[p] = -1, vr[p] = -INFINITY;
    }
  });
}

void argmax_rows(ThreadPool& pool, const float* x, int64_t rows, int64_t n, int32_t* idx, float* val) {
  top_k_rows(pool, x, rows, n, 1, idx, val);
}

}  // namespace tessera::cpu
