// The attention core shared by varlen_attention.cu and paged_attention.cu: one thread block
// computes one (query token, query head) output row with an fp32 online softmax.
//
// Block = kAttnWarps warps. Keys are dealt to the warps in groups of kKeyGroup consecutive keys
// (warp w takes groups w, w + kAttnWarps, ...). Within a warp, lane l owns the head dims
// l, l + 32, l + 64, ...; a key's score is the warp-wide sum of the lanes' partial dot products
// (xor shuffles), so every lane sees every score. Each warp keeps its own running max m, sum l
// and output accumulator; the warps are merged through shared memory at the end:
//   M = max_w m_w,  L = Σ_w l_w e^(m_w - M),  o = Σ_w acc_w e^(m_w - M) / L.
// The query (pre-multiplied by the softmax scale) and the accumulator live in registers for
// head_dim <= 256 (DPL = dims per lane, a template parameter); larger head dims use the DPL = 0
// variant that keeps both in shared memory. A row with no visible key is written as zeros (like
// the CPU backend).
#pragma once

#include "common.cuh"

namespace tessera::cuda {

constexpr int kAttnWarps = 4;
constexpr int kAttnThreads = kAttnWarps * 32;
// __launch_bounds__ min blocks per SM: caps registers at 64 / thread (ptxas otherwise aims at full
// occupancy with 32 registers and spills).
constexpr int kAttnMinBlocks = 8;
constexpr int kKeyGroup = 4;

// Dims per lane for a head dim, 0 = shared-memory variant.
inline int attn_dpl(int D) {
  if (D <= 32) return 1;
  if (D <= 64) return 2;
  if (D <= 96) return 3;
  if (D <= 128) return 4;
  if (D <= 192) return 6;
  if (D <= 256) return 8;
  return 0;
}

// Dynamic shared memory of one block: per-warp m and l, per-warp accumulators, and (DPL = 0)
// the scaled query.
inline size_t attn_smem_bytes(int dpl, int D) {
  return sizeof(float) * (2 * kAttnWarps + (size_t)kAttnWarps * D + (dpl == 0 ? (size_t)D : 0));
}

// Index b with indptr[b] <= t < indptr[b + 1] (indptr non-decreasing, n + 1 entries, t < indptr[n]).
__device__ __forceinline__ int32_t find_segment(const int32_t* __restrict__ indptr, int32_t n,
                                                int32_t t) {
  int32_t lo = 0, hi = n + 1;  // first index whose value is > t
  while (lo < hi) {
    const int32_t mid = (lo + hi) >> 1;
    if (indptr[mid] <= t) lo = mid + 1;
    else hi = mid;
  }
  return lo - 1;
}

// Keys: `src.krow(j)` / `src.vrow(j)` return the K / V row (float or f16 bits) of key j in [0, n),
// `src.visible(j)` says whether the query sees it. `q` and `o` point at the (token, head) row.
template <int DPL, class Src>
__device__ __forceinline__ void attend_row(const float* __restrict__ q, float scale, int D, int n,
                                           const Src& src, float* __restrict__ o, float* smem) {
  constexpr int R = DPL > 0 ? DPL : 1;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  float* s_m = smem;
  float* s_l = smem + kAttnWarps;
  float* s_acc = smem + 2 * kAttnWarps;
  float* s_q = s_acc + kAttnWarps * D;  // DPL == 0 only
  float* my_acc = s_acc + warp * D;

  float qr[R], acc[R];
  if constexpr (DPL > 0) {
#pragma unroll
    for (int i = 0; i < R; ++i) {
      const int d = lane + 32 * i;
      qr[i] = d < D ? q[d] * scale : 0.f;
      acc[i] = 0.f;
    }
  } else {
    for (int d = threadIdx.x; d < D; d += blockDim.x) s_q[d] = q[d] * scale;
    for (int d = lane; d < D; d += 32) my_acc[d] = 0.f;
    __syncthreads();
  }

  float m = -INFINITY, l = 0.f;
  for (int base = warp * kKeyGroup; base < n; base += kAttnWarps * kKeyGroup) {
    bool ok[kKeyGroup];
    float s[kKeyGroup];
#pragma unroll
    for (int g = 0; g < kKeyGroup; ++g) {
      const int j = base + g;
      ok[g] = j < n && src.visible(j);  // warp-uniform
      float part = 0.f;
      if (ok[g]) {
        const auto* kr = src.krow(j);
        if constexpr (DPL > 0) {
#pragma unroll
          for (int i = 0; i < R; ++i) {
            const int d = lane + 32 * i;
            if (d < D) part = fmaf(qr[i], load_elem(kr, d), part);
          }
        } else {
          for (int d = lane; d < D; d += 32) part = fmaf(s_q[d], load_elem(kr, d), part);
        }
      }
      s[g] = part;
    }
#pragma unroll
    for (int o2 = 16; o2 > 0; o2 >>= 1) {
#pragma unroll
      for (int g = 0; g < kKeyGroup; ++g) s[g] += __shfl_xor_sync(kFullMask, s[g], o2);
    }
    float mx = -INFINITY;
#pragma unroll
    for (int g = 0; g < kKeyGroup; ++g) {
      if (!ok[g]) s[g] = -INFINITY;
      mx = fmaxf(mx, s[g]);
    }
    if (mx == -INFINITY) continue;  // nothing visible in this group (warp-uniform)
    const float mn = fmaxf(m, mx);
    const float corr = expf(m - mn);  // 0 on the first visible group (m = -inf)
    l *= corr;
    if constexpr (DPL > 0) {
#pragma unroll
      for (int i = 0; i < R; ++i) acc[i] *= corr;
    } else {
      for (int d = lane; d < D; d += 32) my_acc[d] *= corr;
    }
#pragma unroll
    for (int g = 0; g < kKeyGroup; ++g) {
      if (!ok[g]) continue;
      const float p = expf(s[g] - mn);
      l += p;
      const auto* vr = src.vrow(base + g);
      if constexpr (DPL > 0) {
#pragma unroll
        for (int i = 0; i < R; ++i) {
          const int d = lane + 32 * i;
          if (d < D) acc[i] = fmaf(p, load_elem(vr, d), acc[i]);
        }
      } else {
        for (int d = lane; d < D; d += 32) my_acc[d] = fmaf(p, load_elem(vr, d), my_acc[d]);
      }
    }
    m = mn;
  }

  // Merge the warps.
  if constexpr (DPL > 0) {
#pragma unroll
    for (int i = 0; i < R; ++i) {
      const int d = lane + 32 * i;
      if (d < D) my_acc[d] = acc[i];
    }
  }
  if (lane == 0) {
    s_m[warp] = m;
    s_l[warp] = l;
  }
  __syncthreads();
  float M = -INFINITY;
#pragma unroll
  for (int w = 0; w < kAttnWarps; ++w) M = fmaxf(M, s_m[w]);
  if (M == -INFINITY) {  // no visible key at all
    for (int d = threadIdx.x; d < D; d += blockDim.x) o[d] = 0.f;
  } else {
    float wt[kAttnWarps], L = 0.f;
#pragma unroll
    for (int w = 0; w < kAttnWarps; ++w) {
      wt[w] = s_m[w] == -INFINITY ? 0.f : expf(s_m[w] - M);
      L = fmaf(s_l[w], wt[w], L);
    }
    const float inv = 1.f / L;
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
      float sum = 0.f;
#pragma unroll
      for (int w = 0; w < kAttnWarps; ++w) sum = fmaf(s_acc[w * D + d], wt[w], sum);
      o[d] = sum * inv;
    }
  }
  __syncthreads();  // shared memory is reused by the block's next row
}

// Sets the dynamic shared memory limit of `kernel` when a block needs more than the default 48 KiB.
template <class Kernel>
void attn_prepare_smem(Kernel kernel, size_t bytes, const char* name) {
  if (bytes <= 48 * 1024) return;
  set_max_dynamic_smem(reinterpret_cast<const void*>(kernel), bytes, name);
}

// Blocks along the token axis of an attention grid whose y axis holds `heads` heads: enough
// resident blocks to fill every SM, each looping over tokens (the token count lives on the
// device, so the grid cannot be sized by it without a synchronisation).
inline unsigned attn_token_blocks(int heads) {
  const int64_t want = (int64_t)sm_count() * 16;  // ~16 resident 128-thread blocks per SM
  int64_t gx = (want + heads - 1) / heads;
  if (gx < 1) gx = 1;
  if (gx > 65535) gx = 65535;
  return (unsigned)gx;
}

}  // namespace tessera::cuda
