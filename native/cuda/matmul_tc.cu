// matmul on tensor cores for prefill-sized batches: y (m, n) = x (m, k) · wᵀ with x rounded to
// f16 and w dequantised to f16 in shared memory (never in global memory), products accumulated in
// f32 by WMMA 16x16x16 (sm_70+; Volta/Turing/Ampere/Ada/Hopper all run it, Hopper without wgmma).
// Block tile 128 x 128 x 32, 8 warps in a 4 x 2 grid, each warp 32 x 64 (2 x 4 fragments). The
// next k-slab is loaded into registers (x as float4, w through WeightLoader) while the tensor
// cores work on the current one, then converted and stored to shared memory.
// Used for f16 / q8_0 / q4_0 / q4_k / q6_k weights (values that f16 holds; f32 and bf16 weights
// keep the f32 CUDA-core kernel) when m >= kTcMinRows, k % 32 == 0 and x is 16-byte aligned.
// Rows of x beyond f16's range are scaled by a power of two (see row_inv).
#include <mma.h>

#include "common.cuh"
#include "cuda_ops.h"

namespace tessera::cuda {
namespace {

using namespace nvcuda;

constexpr int BM = 128, BN = 128, BK = 32;
constexpr int LDS = BK + 8;  // halves per shared row: 80 bytes, keeps every fragment 32-byte aligned
constexpr int kThreads = 256;

template <DType WT>
__global__ void __launch_bounds__(kThreads)
    matmul_tc_kernel(const float* __restrict__ x, const uint8_t* __restrict__ w, float* __restrict__ y,
                     int64_t m, int64_t n, int64_t k, int64_t w_row_bytes) {
  __shared__ __align__(32) half xs[BM * LDS];
  __shared__ __align__(32) half ws[BN * LDS];
  __shared__ __align__(32) float stage[kThreads / 32][16 * 16];

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wm = warp >> 1, wn = warp & 1;  // warp tile: rows wm*32 .. +32, cols wn*64 .. +64
  const int64_t m0 = (int64_t)blockIdx.y * BM, n0 = (int64_t)blockIdx.x * BN;

  // This thread's share of a slab: row `lr` of the x and w tiles, k offset `lk` (16 elements).
  const int lr = tid >> 1, lk = (tid & 1) * 16;
  const bool x_ok = m0 + lr < m, w_ok = n0 + lr < n;
  const float* xrow = x + (x_ok ? m0 + lr : 0) * k;
  const uint8_t* wrow = w + (w_ok ? n0 + lr : 0) * w_row_bytes;
  float xr[16], wr[16];

  // f16 holds magnitudes up to 65504: a row of x whose largest |x| passes 2^15 is scaled by a power
  // of two (exact) before rounding, and its outputs by the inverse in the epilogue. Rows that fit
  // (almost always) keep scale 1. One extra pass over the block's x rows (L2-resident).
  __shared__ float row_inv[BM];
  float amax = 0.f;
  if (x_ok)
    for (int64_t k0 = lk; k0 < k; k0 += BK)
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const float4 v = __ldg(reinterpret_cast<const float4*>(xrow + k0 + 4 * i));
        amax = fmaxf(amax, fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w))));
      }
  amax = fmaxf(amax, __shfl_xor_sync(kFullMask, amax, 1));  // the row's other thread (tid ^ 1)
  int e = 0;
  if (amax > 32768.f) e = min(ilogbf(amax) - 14, 126);  // amax * 2^-e < 2^15 (inf / NaN stay as they are)
  const float xscale = exp2f((float)-e);
  if ((tid & 1) == 0) row_inv[lr] = exp2f((float)e);


  auto load = [&](int64_t k0) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      if (x_ok) {
        const float4 v = __ldg(reinterpret_cast<const float4*>(xrow + k0 + lk + 4 * i));
        xr[4 * i] = v.x, xr[4 * i + 1] = v.y, xr[4 * i + 2] = v.z, xr[4 * i + 3] = v.w;
      } else {
        xr[4 * i] = xr[4 * i + 1] = xr[4 * i + 2] = xr[4 * i + 3] = 0.f;
      }
      if (w_ok) {
        WeightLoader<WT, 4>::load(wrow, k0 + lk + 4 * i, wr + 4 * i);
      } else {
        wr[4 * i] = wr[4 * i + 1] = wr[4 * i + 2] = wr[4 * i + 3] = 0.f;
      }
    }
  };
  auto store = [&] {
    // 16 halves = two 16-byte stores per tile row share (row offset lr * 80 B + lk * 2 B).
    uint4 xv[2], wv[2];
    half2* xh = reinterpret_cast<half2*>(xv);
    half2* wh = reinterpret_cast<half2*>(wv);
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      xh[i] = __floats2half2_rn(xr[2 * i] * xscale, xr[2 * i + 1] * xscale);
      wh[i] = __floats2half2_rn(wr[2 * i], wr[2 * i + 1]);
    }
    uint4* xd = reinterpret_cast<uint4*>(xs + lr * LDS + lk);
    uint4* wd = reinterpret_cast<uint4*>(ws + lr * LDS + lk);
    xd[0] = xv[0], xd[1] = xv[1];
    wd[0] = wv[0], wd[1] = wv[1];
  };

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][4];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) wmma::fill_fragment(acc[i][j], 0.f);

  load(0);
  store();
  __syncthreads();
  for (int64_t k0 = 0; k0 < k; k0 += BK) {
    const bool more = k0 + BK < k;
    if (more) load(k0 + BK);  // global loads in flight during the MMAs below
#pragma unroll
    for (int kk = 0; kk < BK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, half, wmma::row_major> a[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, half, wmma::col_major> b[4];
#pragma unroll
      for (int i = 0; i < 2; ++i) wmma::load_matrix_sync(a[i], xs + (wm * 32 + i * 16) * LDS + kk, LDS);
#pragma unroll
      for (int j = 0; j < 4; ++j) wmma::load_matrix_sync(b[j], ws + (wn * 64 + j * 16) * LDS + kk, LDS);
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
    }
    __syncthreads();  // everyone is done reading this slab
    if (more) {
      store();
      __syncthreads();
    }
  }

  // Epilogue: each fragment through the warp's 16 x 16 staging tile, stores guarded at the edges.
  float* st = stage[warp];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      wmma::store_matrix_sync(st, acc[i][j], 16, wmma::mem_row_major);
      __syncwarp();
      const int64_t r0 = m0 + wm * 32 + i * 16, c0 = n0 + wn * 64 + j * 16;
      for (int q = lane; q < 256; q += 32) {
        const int64_t r = r0 + (q >> 4), c = c0 + (q & 15);
        if (r < m && c < n) y[r * n + c] = st[q] * row_inv[r - m0];
      }
      __syncwarp();
    }
}

template <DType WT>
void launch(cudaStream_t stream, const float* x, const void* w, float* y, int64_t m, int64_t n, int64_t k) {
  const int64_t gx = (n + BN - 1) / BN, gy = (m + BM - 1) / BM;
  if (gx > 0x7fffffff || gy > 65535) throw std::invalid_argument("tessera::cuda::matmul: matrix too large for one launch");
  matmul_tc_kernel<WT><<<dim3((unsigned)gx, (unsigned)gy), kThreads, 0, stream>>>(
      x, static_cast<const uint8_t*>(w), y, m, n, k, dtype_bytes(WT, k));
}

}  // namespace

bool matmul_tensor_cores(cudaStream_t stream, const float* x, const void* w, DType dt, float* y, int64_t m,
                         int64_t n, int64_t k) {
  if (!tensor_cores_enabled() || m < kTcMinRows || k % BK != 0) return false;
  // Below 128 rows a 128 x 128 tile wastes tensor-core work on zero rows; take it only when the grid
  // still covers the SMs (otherwise the CUDA-core kernel streams the weights over more SMs).
  if (m < BM && ((n + BN - 1) / BN) * ((m + BM - 1) / BM) < sm_count()) return false;
  if (reinterpret_cast<uintptr_t>(x) % 16 != 0) return false;
  if (dt == DType::F16 && reinterpret_cast<uintptr_t>(w) % 8 != 0) return false;
  if (dt != DType::F16 && reinterpret_cast<uintptr_t>(w) % 2 != 0) return false;
  switch (dt) {
    case DType::F16: launch<DType::F16>(stream, x, w, y, m, n, k); break;
    case DType::Q8_0: launch<DType::Q8_0>(stream, x, w, y, m, n, k); break;
    case DType::Q4_0: launch<DType::Q4_0>(stream, x, w, y, m, n, k); break;
    case DType::Q4_K: launch<DType::Q4_K>(stream, x, w, y, m, n, k); break;
    case DType::Q6_K: launch<DType::Q6_K>(stream, x, w, y, m, n, k); break;
    default: return false;
  }
  check_launch("matmul (tensor cores)");
  return true;
}

}  // namespace tessera::cuda
