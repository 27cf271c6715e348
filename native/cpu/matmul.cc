// matmul: y (m, n) = x (m, k) · wᵀ with w (n, k) in f32/f16/bf16/q8_0/q4_0/q4_k/q6_k.
// Few rows (decode): each weight row is streamed once and dequantised in registers.
// Many rows (prefill): gemm_nr weight rows at a time are dequantised once into a per-thread
// f32 panel (transposed: panel[p][j]) and multiplied by every row of x with the register-blocked
// panel kernel; threads split the weight rows, so each weight byte is read once.
#include <algorithm>
#include <vector>

#include "kernels.h"
#include "tessera/ops.h"
#include "tessera/threadpool.h"

namespace tessera::cpu {
namespace {

float dot_row(const Kernels& K, DType t, const float* x, const void* row, int64_t k) {
  switch (t) {
    case DType::F32: return K.dot_f32(x, (const float*)row, k);
    case DType::F16: return K.dot_f16(x, (const uint16_t*)row, k);
    case DType::BF16: return K.dot_bf16(x, (const uint16_t*)row, k);
    case DType::Q8_0: return K.dot_q8_0(x, (const BlockQ8_0*)row, k);
    case DType::Q4_0: return K.dot_q4_0(x, (const BlockQ4_0*)row, k);
    case DType::Q4_K: return K.dot_q4_k(x, (const BlockQ4_K*)row, k);
    case DType::Q6_K: return K.dot_q6_k(x, (const BlockQ6_K*)row, k);
    default: return 0.f;  // rejected by check_matmul
  }
}

void row_to_f32(const Kernels& K, DType t, const void* row, float* out, int64_t k) {
  switch (t) {
    case DType::F16: K.f16_to_f32((const uint16_t*)row, out, k); break;
    case DType::BF16: K.bf16_to_f32((const uint16_t*)row, out, k); break;
    case DType::Q8_0: K.q8_0_to_f32((const BlockQ8_0*)row, out, k); break;
    case DType::Q4_0: K.q4_0_to_f32((const BlockQ4_0*)row, out, k); break;
    case DType::Q4_K: K.q4_k_to_f32((const BlockQ4_K*)row, out, k); break;
    case DType::Q6_K: K.q6_k_to_f32((const BlockQ6_K*)row, out, k); break;
    default: break;
  }
}

constexpr int64_t kGemvMaxRows = 3;  // up to this many x rows, stream w without a panel

}  // namespace

void matmul(ThreadPool& pool, const float* x, const void* w, DType w_dtype, float* y, int64_t m,
            int64_t n, int64_t k) {
  if (m <= 0 || n <= 0) return;
  const Kernels& K = kernels();
  const int64_t row_bytes = dtype_bytes(w_dtype, k);
  const uint8_t* wb = static_cast<const uint8_t*>(w);

  if (m <= kGemvMaxRows) {
    pool.parallel_for(n, 8, [&](int64_t j0, int64_t j1) {
      for (int64_t j = j0; j < j1; j++)
        for (int64_t i = 0; i < m; i++) y[i * n + j] = dot_row(K, w_dtype, x + i * k, wb + j * row_bytes, k);
    });
    return;
  }

  const int32_t nr = K.gemm_nr;
  const int64_t panels = (n + nr - 1) / nr;
  pool.parallel_for(panels, 1, [&](int64_t t0, int64_t t1) {
    thread_local std::vector<float> panel, row;
    panel.resize(k * nr);
    row.resize(k);
    for (int64_t t = t0; t < t1; t++) {
      const int64_t j0 = t * nr;
      const int32_t nb = (int32_t)std::min<int64_t>(nr, n - j0);
      // panel (k, nr) = w rows j0 .. j0+nb transposed, zero beyond nb
      for (int32_t j = 0; j < nr; j++) {
        const float* src;
        if (j >= nb) {
          std::fill(row.begin(), row.end(), 0.f);
          src = row.data();
        } else if (w_dtype == DType::F32) {
          src = reinterpret_cast<const float*>(wb + (j0 + j) * row_bytes);
        } else {
          row_to_f32(K, w_dtype, wb + (j0 + j) * row_bytes, row.data(), k);
          src = row.data();
        }
        for (int64_t p = 0; p < k; p++) panel[p * nr + j] = src[p];
      }
      K.gemm_panel(x, k, panel.data(), y + j0, n, m, nb, k);
    }
  });
}

}  // namespace tessera::cpu
