// matmul: y (m, n) = x (m, k) · wᵀ, w (n, k) in f32 / f16 / bf16 / q8_0 / q4_0 / q4_k / q6_k.
// Batches of kTcMinRows+ rows go to the tensor-core kernel (matmul_tc.cu) where it applies; this
// is the CUDA-core kernel for decode and short batches (and f32 / bf16 weights): 128-thread blocks of 4 warps; each warp
// owns NR consecutive weight rows (outputs n0 .. n0+NR-1) and a tile of MT rows of x, and streams
// the k axis with lane l handling elements [l*VEC + i*32*VEC, +VEC). Weights are dequantised in
// registers (WeightLoader in common.cuh) and reused for the MT x rows; x rows are reused for the
// NR weight rows. The per-lane partial sums are reduced with warp shuffles at the end of a tile.
// Launch: grid.x = ceil(n / (4*NR)) weight-row groups, grid.y = m tiles of MT rows (grid-stride
// beyond 65535). Tile shape by m: 1 -> (MT 1, NR 2), 2 -> (2, 2), <=4 -> (4, 2), else (8, 4).
// VEC = 4 (float4 / 8-byte / 2x16-bit loads) when k % 4 == 0 and x / w are aligned, else VEC = 1.
#include "common.cuh"
#include "cuda_ops.h"

namespace tessera::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;

template <DType WT, int VEC, int MT, int NR>
__global__ void __launch_bounds__(kThreads, 4)
    matmul_kernel(const float* __restrict__ x, const uint8_t* __restrict__ w, float* __restrict__ y,
                  int64_t m, int64_t n, int64_t k, int64_t w_row_bytes) {
  const int lane = threadIdx.x & 31;
  const int64_t n0 = ((int64_t)blockIdx.x * kWarps + (threadIdx.x >> 5)) * NR;
  if (n0 >= n) return;  // no block-level synchronisation below

  const uint8_t* wrow[NR];
#pragma unroll
  for (int r = 0; r < NR; ++r) wrow[r] = w + (n0 + r < n ? n0 + r : n - 1) * w_row_bytes;

  for (int64_t m0 = (int64_t)blockIdx.y * MT; m0 < m; m0 += (int64_t)gridDim.y * MT) {
    const float* xrow[MT];
#pragma unroll
    for (int i = 0; i < MT; ++i) xrow[i] = x + (m0 + i < m ? m0 + i : m - 1) * k;  // clamp the tail

    float acc[MT][NR];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
      for (int r = 0; r < NR; ++r) acc[i][r] = 0.f;

    for (int64_t kk = (int64_t)lane * VEC; kk < k; kk += 32 * VEC) {
      float wv[NR][VEC];
#pragma unroll
      for (int r = 0; r < NR; ++r) WeightLoader<WT, VEC>::load(wrow[r], kk, wv[r]);
#pragma unroll
      for (int i = 0; i < MT; ++i) {
        float xv[VEC];
        if constexpr (VEC == 4) {
          const float4 t = __ldg(reinterpret_cast<const float4*>(xrow[i] + kk));
          xv[0] = t.x, xv[1] = t.y, xv[2] = t.z, xv[3] = t.w;
        } else {
          xv[0] = __ldg(xrow[i] + kk);
        }
#pragma unroll
        for (int r = 0; r < NR; ++r)
#pragma unroll
          for (int e = 0; e < VEC; ++e) acc[i][r] = fmaf(xv[e], wv[r][e], acc[i][r]);
      }
    }

#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
      for (int r = 0; r < NR; ++r) {
        const float v = warp_sum(acc[i][r]);
        if (lane == i * NR + r && m0 + i < m && n0 + r < n) y[(m0 + i) * n + n0 + r] = v;
      }
  }
}

template <DType WT, int VEC, int MT, int NR>
void launch(cudaStream_t stream, const float* x, const void* w, float* y, int64_t m, int64_t n,
            int64_t k) {
  static_assert(MT * NR <= 32, "one lane stores each output of a warp tile");
  const int64_t gx = (n + kWarps * NR - 1) / (kWarps * NR);
  const int64_t tiles = (m + MT - 1) / MT;
  if (gx > 0x7fffffff) throw std::invalid_argument("tessera::cuda::matmul: n too large");
  const dim3 grid((unsigned)gx, (unsigned)(tiles < 65535 ? tiles : 65535));
  matmul_kernel<WT, VEC, MT, NR><<<grid, kThreads, 0, stream>>>(
      x, static_cast<const uint8_t*>(w), y, m, n, k, dtype_bytes(WT, k));
}

template <DType WT, int VEC>
void by_rows(cudaStream_t stream, const float* x, const void* w, float* y, int64_t m, int64_t n,
             int64_t k) {
  if (m == 1) launch<WT, VEC, 1, 2>(stream, x, w, y, m, n, k);
  else if (m == 2) launch<WT, VEC, 2, 2>(stream, x, w, y, m, n, k);
  else if (m <= 4) launch<WT, VEC, 4, 2>(stream, x, w, y, m, n, k);
  else launch<WT, VEC, 8, 4>(stream, x, w, y, m, n, k);
}

template <DType WT>
void by_vec(cudaStream_t stream, const float* x, const void* w, float* y, int64_t m, int64_t n,
            int64_t k) {
  // Vector loads need k % 4 == 0 (so every row starts aligned) and aligned base pointers:
  // 16 bytes for x and f32 weights, 8 for f16/bf16, 2 for the quant blocks.
  const uintptr_t wa = reinterpret_cast<uintptr_t>(w), xa = reinterpret_cast<uintptr_t>(x);
  const uintptr_t walign = WT == DType::F32 ? 16 : (WT == DType::F16 || WT == DType::BF16) ? 8 : 2;
  if (k % 4 == 0 && xa % 16 == 0 && wa % walign == 0) by_rows<WT, 4>(stream, x, w, y, m, n, k);
  else by_rows<WT, 1>(stream, x, w, y, m, n, k);
}

}  // namespace

void matmul(cudaStream_t stream, const float* x, const void* w, DType w_dtype, float* y, int64_t m,
            int64_t n, int64_t k) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {  // empty inner dimension: y = 0
    TS_CUDA_CHECK(cudaMemsetAsync(y, 0, sizeof(float) * m * n, stream));
    return;
  }
  if (matmul_tensor_cores(stream, x, w, w_dtype, y, m, n, k)) return;
  switch (w_dtype) {
    case DType::F32: by_vec<DType::F32>(stream, x, w, y, m, n, k); break;
    case DType::F16: by_vec<DType::F16>(stream, x, w, y, m, n, k); break;
    case DType::BF16: by_vec<DType::BF16>(stream, x, w, y, m, n, k); break;
    case DType::Q8_0: by_vec<DType::Q8_0>(stream, x, w, y, m, n, k); break;
    case DType::Q4_0: by_vec<DType::Q4_0>(stream, x, w, y, m, n, k); break;
    case DType::Q4_K: by_vec<DType::Q4_K>(stream, x, w, y, m, n, k); break;
    case DType::Q6_K: by_vec<DType::Q6_K>(stream, x, w, y, m, n, k); break;
    default:
      throw std::invalid_argument(std::string("tessera::cuda::matmul: unsupported weight dtype ") +
                                  dtype_info(w_dtype).name);
  }
  check_launch("matmul");
}

}  // namespace tessera::cuda
