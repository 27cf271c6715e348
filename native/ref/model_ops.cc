// Float64 references of the ops the model's forward step needs beside the kernels of
// reference.cc: embedding lookup, bias, residual add fused with rmsnorm, row gather / scatter-add
// top-k / argmax and the KV entry moves of a tree-path commit (namespace tessera::ref; no argument
// validation, as in reference.cc).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <vector>

#include "tessera/dtype.h"
#include "tessera/ops.h"

namespace tessera::ref {

void embed(const void* table, DType dtype, int64_t n_embd, const int32_t* tokens, int64_t n_tokens, float* out) {
  const int64_t row_bytes = dtype_bytes(dtype, n_embd);
  for (int64_t t = 0; t < n_tokens; t++)
    convert(static_cast<const uint8_t*>(table) + (int64_t)tokens[t] * row_bytes, dtype, out + t * n_embd, DType::F32,
            n_embd);
}

void add_bias(float* y, const float* bias, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; r++)
    for (int64_t i = 0; i < n; i++) y[r * n + i] = (float)((double)y[r * n + i] + (double)bias[i]);
}

void add_rmsnorm(float* x, const float* y, const float* weight, float* xn, int64_t rows, int64_t n, float eps) {
  for (int64_t r = 0; r < rows; r++) {
    float* xr = x + r * n;
    double ss = 0;
    for (int64_t i = 0; i < n; i++) {
      xr[i] = (float)((double)xr[i] + (double)y[r * n + i]);
      ss += (double)xr[i] * xr[i];
    }
    const double inv = 1.0 / std::sqrt(ss / (double)n + (double)eps);
    for (int64_t i = 0; i < n; i++) xn[r * n + i] = (float)((double)xr[i] * inv * (double)weight[i]);
  }
}

void gather_rows(const float* x, const int32_t* rows, int64_t n_rows, int64_t n, float* out) {
  for (int64_t r = 0; r < n_rows; r++) std::copy_n(x + (int64_t)rows[r] * n, n, out + r * n);
}

void scatter_add_rows(float* x, const float* y, const int32_t* rows, int64_t n_rows, int64_t n) {
  for (int64_t r = 0; r < n_rows; r++)
    for (int64_t i = 0; i < n; i++) {
      float& d = x[(int64_t)rows[r] * n + i];
      d = (float)((double)d + (double)y[r * n + i]);
    }
}

void top_k_rows(const float* x, int64_t rows, int64_t n, int k, int32_t* idx, float* val) {
  std::vector<int32_t> order;
  for (int64_t r = 0; r < rows; r++) {
    const float* xr = x + r * n;
    order.clear();
    for (int32_t i = 0; i < (int32_t)n; i++)
      if (!std::isnan(xr[i])) order.push_back(i);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return xr[a] > xr[b]; });
    for (int p = 0; p < k; p++) {
      const bool have = p < (int)order.size();
      idx[r * k + p] = have ? order[p] : -1;
      val[r * k + p] = have ? xr[order[p]] : -INFINITY;
    }
  }
}

void argmax_rows(const float* x, int64_t rows, int64_t n, int32_t* idx, float* val) {
  top_k_rows(x, rows, n, 1, idx, val);
}

void kv_compact(const int32_t* batch_indices, const int32_t* src, const int32_t* dst, int64_t n_moves,
                const PagedKv& kv) {
  const int64_t row = dtype_bytes(kv.kv_dtype, (int64_t)kv.n_kv_heads * kv.head_dim);  // heads are contiguous
  const int64_t elem = dtype_bytes(kv.kv_dtype, 1);
  for (int64_t m = 0; m < n_moves; m++) {
    const int32_t b = batch_indices[m];
    if (src[m] == dst[m]) continue;
    const int64_t from = kv.offset(b, src[m], 0) * elem, to = kv.offset(b, dst[m], 0) * elem;
    std::memmove(static_cast<uint8_t*>(kv.k_pages) + to, static_cast<const uint8_t*>(kv.k_pages) + from, row);
    std::memmove(static_cast<uint8_t*>(kv.v_pages) + to, static_cast<const uint8_t*>(kv.v_pages) + from, row);
  }
}

}  // namespace tessera::ref
