// matmul: y (m, n) = x (m, k) · wᵀ with w (n, k) in f32/f16/bf16/q8_0/q4_0/q4_k/q6_k.
// matmul_multi runs several weight matrices over the same x in one parallel loop (Q/K/V, gate/up).
// Few rows (decode): each weight row is streamed once and dequantised in registers.
// Many rows (prefill): gemm_nr weight rows at a time are dequantised once into a per-thread
// f32 panel (transposed: panel[p][j]) and multiplied by every row of x with the register-blocked
// panel kernel; threads split the weight rows, so each weight byte is read once.
// Weights repacked for the int8 path (MatmulJob::packed, qmatmul.h) skip both: x is rounded to
// int8 once and threads split the packed 16-row tiles (VNNI kernel; AMX for 16+ rows).
#include <algorithm>
#include <vector>

#include "kernels.h"
#include "qmatmul.h"
#include "tessera/check.h"
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

void matmul_multi(ThreadPool& pool, const float* x, int64_t m, int64_t k, const MatmulJob* jobs, int count,
                  bool quantize_x) {
  if (m <= 0 || count <= 0) return;
  if (count > 8) throw_range("matmul_multi: at most 8 jobs");
  if (quantize_x && k % 32 == 0 && int8_path_active()) {
    // Packed weights: int8 activations times VNNI tiles, all jobs' tiles in one parallel loop.
    MatmulJob rest[8];
    const MatmulJob* packed[8];
    int n_rest = 0, n_packed = 0;
    for (int c = 0; c < count; c++) {
      if (jobs[c].packed != nullptr) packed[n_packed++] = &jobs[c];
      else rest[n_rest++] = jobs[c];
    }
    if (n_packed > 0) {
      thread_local QuantRows xq;
      quantize_rows(&pool, x, m, k, xq);
      int64_t first_tile[9];
      first_tile[0] = 0;
      for (int c = 0; c < n_packed; c++) {
        if (packed[c]->packed->k != k || packed[c]->packed->n != packed[c]->n)
          throw_range("matmul_multi: packed weight shape does not match the job");
        first_tile[c + 1] = first_tile[c] + packed[c]->packed->n_tiles;
      }
      const QuantRows& xr = xq;
      // Cost of a tile (ThreadPool units): its bytes streamed, plus 16 x k x m int8 products at
      // ~1/4 unit each (they matter from a few rows of x on).
      Cost tile_bytes = 0;
      for (int c = 0; c < n_packed; c++) tile_bytes += packed[c]->packed->n_tiles * packed[c]->packed->tile_bytes;
      const Cost tile_cost = tile_bytes / std::max<int64_t>(first_tile[n_packed], 1) + kTileRows * k * m / 4;
      pool.parallel_for(first_tile[n_packed], 1, tile_cost, [&](int64_t u0, int64_t u1) {
        for (int c = 0; c < n_packed; c++) {
          const int64_t a = std::max(u0, first_tile[c]), b = std::min(u1, first_tile[c + 1]);
          if (a < b) packed_matmul_tiles(*packed[c]->packed, xr, packed[c]->y, packed[c]->n, a - first_tile[c], b - first_tile[c]);
        }
      });
      if (n_rest > 0) matmul_multi(pool, x, m, k, rest, n_rest, quantize_x);
      return;
    }
  }
  const Kernels& K = kernels();
  // Work units of every job, numbered consecutively: weight rows (GEMV) or panels (GEMM).
  const int32_t nr = K.gemm_nr;
  const bool gemv = m <= kGemvMaxRows;
  int64_t first[8], total = 0;
  for (int c = 0; c < count; c++) {
    first[c] = total;
    total += gemv ? jobs[c].n : (jobs[c].n + nr - 1) / nr;
  }
  auto job_of = [&](int64_t u) {
    int c = count - 1;
    while (first[c] > u) c--;
    return c;
  };

  if (gemv) {
    // x rows as q8_0 blocks for the integer dot products (k % 32 == 0 for q8_0/q4_0 weights).
    thread_local std::vector<BlockQ8_0> xq;
    bool use_q = quantize_x && k % 32 == 0;
    if (use_q) {
      xq.resize((size_t)m * k / 32);
      for (int64_t i = 0; i < m; i++) ref::convert(x + i * k, DType::F32, xq.data() + i * k / 32, DType::Q8_0, k);
    }
    const bool simd = active_isa() == CpuIsa::Avx2 || active_isa() == CpuIsa::Avx512;
#if defined(__x86_64__) || defined(_M_X64)
    auto dot88 = simd ? dot_q8_0_q8_0_avx2 : dot_q8_0_q8_0_scalar;
    auto dot48 = simd ? dot_q4_0_q8_0_avx2 : dot_q4_0_q8_0_scalar;
#else
    (void)simd;
    auto dot88 = dot_q8_0_q8_0_scalar;
    auto dot48 = dot_q4_0_q8_0_scalar;
#endif
    const BlockQ8_0* xqd = xq.data();
    // Cost of a weight row (ThreadPool units): its bytes streamed once, and k multiply-adds for
    // every further row of x (the row is in cache by then).
    Cost row_bytes = 0;
    for (int c = 0; c < count; c++) row_bytes += jobs[c].n * dtype_bytes(jobs[c].w_dtype, k);
    const Cost row_cost = row_bytes / std::max<int64_t>(total, 1) + (m - 1) * k;
    pool.parallel_for(total, 8, row_cost, [&](int64_t u0, int64_t u1) {
      for (int64_t u = u0; u < u1; u++) {
        const MatmulJob& jb = jobs[job_of(u)];
        const int64_t j = u - first[&jb - jobs];
        const uint8_t* row = static_cast<const uint8_t*>(jb.w) + j * dtype_bytes(jb.w_dtype, k);
        for (int64_t i = 0; i < m; i++) {
          float v;
          if (use_q && jb.w_dtype == DType::Q8_0) v = dot88(xqd + i * k / 32, reinterpret_cast<const BlockQ8_0*>(row), k);
          else if (use_q && jb.w_dtype == DType::Q4_0) v = dot48(xqd + i * k / 32, reinterpret_cast<const BlockQ4_0*>(row), k);
          else v = dot_row(K, jb.w_dtype, x + i * k, row, k);
          jb.y[i * jb.n + j] = v;
        }
      }
    });
    return;
  }

  // Cost of a panel (ThreadPool units): nr x k weights dequantised and transposed (~2 each), then
  // m x nr x k multiply-adds.
  const Cost panel_cost = (Cost)nr * k * (m + 2);
  pool.parallel_for(total, 1, panel_cost, [&](int64_t t0, int64_t t1) {
    thread_local std::vector<float> panel, row;
    panel.resize(k * nr);
    row.resize(k);
    for (int64_t t = t0; t < t1; t++) {
      const MatmulJob& jb = jobs[job_of(t)];
      const int64_t row_bytes = dtype_bytes(jb.w_dtype, k);
      const uint8_t* wb = static_cast<const uint8_t*>(jb.w);
      const int64_t j0 = (t - first[&jb - jobs]) * nr;
      const int32_t nb = (int32_t)std::min<int64_t>(nr, jb.n - j0);
      // panel (k, nr) = w rows j0 .. j0+nb transposed, zero beyond nb
      for (int32_t j = 0; j < nr; j++) {
        const float* src;
        if (j >= nb) {
          std::fill(row.begin(), row.end(), 0.f);
          src = row.data();
        } else if (jb.w_dtype == DType::F32) {
          src = reinterpret_cast<const float*>(wb + (j0 + j) * row_bytes);
        } else {
          row_to_f32(K, jb.w_dtype, wb + (j0 + j) * row_bytes, row.data(), k);
          src = row.data();
        }
        for (int64_t p = 0; p < k; p++) panel[p * nr + j] = src[p];
      }
      K.gemm_panel(x, k, panel.data(), jb.y + j0, jb.n, m, nb, k);
    }
  });
}

void matmul(ThreadPool& pool, const float* x, const void* w, DType w_dtype, float* y, int64_t m,
            int64_t n, int64_t k) {
  if (n <= 0) return;
  const MatmulJob job{w, w_dtype, y, n};
  matmul_multi(pool, x, m, k, &job, 1);
}

}  // namespace tessera::cpu
