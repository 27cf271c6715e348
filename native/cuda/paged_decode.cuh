// GQA-aware, split-KV paged attention (flash-decoding) for the decode and tree-verify steps.
// One block (128 threads) handles one query token t, one KV head hk and the G = Hq / Hkv query
// heads that read it, over one split of t's visible keys; so every K/V row is read from memory
// once per query token, not once per query head. Keys go through shared memory in tiles of 32:
//   1. the tile's K and V rows (16-byte loads, page-table lookups per row) land in shared memory;
//      the next tile's rows are already loading into registers while this one is used
//   2. scores: thread <-> (head, key) pairs, q (pre-scaled) broadcast from shared memory, K rows
//      padded by 16 bytes so the 32 rows a warp reads hit different banks
//   3. online softmax per head: warp w owns heads w, w + 4, ... (a tile's 32 scores = one warp)
//   4. P·V: thread <-> (head, pair of dims), registers hold the output accumulators
// With one split the block writes o directly; with S > 1 it writes its normalised partial output
// and log-sum-exp to a workspace and paged_decode_merge combines the splits:
//   M = max_s lse_s,  o = Σ_s e^(lse_s - M) o_s / Σ_s e^(lse_s - M).
// Visibility (as the CPU op): query i of nq in a sequence of L keys sees keys [0, L - nq) and,
// without a tree, nodes 0..i; with a tree, node j iff its mask row says so. No visible key: o = 0.
// Sequences with more than max_nq queries are skipped (the tensor-core prefill kernel did them).
#pragma once

#include "attention.cuh"

namespace tessera::cuda {

constexpr int kDecThreads = 128;
constexpr int kDecTile = 32;  // keys per tile (= warp size: one warp reduces one head's tile)

template <typename KV, int D>
struct DecGeom {
  static constexpr int kRowBytes = D * (int)sizeof(KV);
  static constexpr int kChunks = kRowBytes / 16;                   // 16-byte chunks per row
  static constexpr int kPerThread = kDecTile * kChunks / kDecThreads;  // chunks per thread per tile
  static constexpr int kSmemRow = kRowBytes + 16;                  // padded shared row
  static_assert(kRowBytes % 16 == 0 && (kDecTile * kChunks) % kDecThreads == 0, "tile geometry");
};

// Dynamic shared memory: K and V tiles, q (G x D floats), scores / probabilities (G x 32), and per
// head m, l, correction.
inline size_t paged_decode_smem(int kv_bytes, int D, int G) {
  const size_t row = (size_t)D * kv_bytes + 16;
  return 2 * kDecTile * row + sizeof(float) * ((size_t)G * D + (size_t)G * kDecTile + 3 * (size_t)G);
}

__device__ __forceinline__ float kv_to_float(float v) { return v; }
__device__ __forceinline__ float kv_half_lo(uint32_t w) { return h2f((uint16_t)(w & 0xffff)); }
__device__ __forceinline__ float kv_half_hi(uint32_t w) { return h2f((uint16_t)(w >> 16)); }

// Dot product of the pre-scaled query row qs (D floats, shared) with a shared K row.
template <typename KV, int D>
__device__ __forceinline__ float dec_dot(const float* qs, const uint8_t* krow) {
  float s = 0.f;
  const uint4* k4 = reinterpret_cast<const uint4*>(krow);
#pragma unroll
  for (int c = 0; c < DecGeom<KV, D>::kChunks; ++c) {
    const uint4 v = k4[c];
    if constexpr (sizeof(KV) == 2) {
      const float* q = qs + 8 * c;
      s = fmaf(q[0], kv_half_lo(v.x), s), s = fmaf(q[1], kv_half_hi(v.x), s);
      s = fmaf(q[2], kv_half_lo(v.y), s), s = fmaf(q[3], kv_half_hi(v.y), s);
      s = fmaf(q[4], kv_half_lo(v.z), s), s = fmaf(q[5], kv_half_hi(v.z), s);
      s = fmaf(q[6], kv_half_lo(v.w), s), s = fmaf(q[7], kv_half_hi(v.w), s);
    } else {
      const float* q = qs + 4 * c;
      s = fmaf(q[0], __uint_as_float(v.x), s), s = fmaf(q[1], __uint_as_float(v.y), s);
      s = fmaf(q[2], __uint_as_float(v.z), s), s = fmaf(q[3], __uint_as_float(v.w), s);
    }
  }
  return s;
}

// Elements d, d + 1 (d even) of a shared V row.
template <typename KV>
__device__ __forceinline__ float2 kv_pair(const uint8_t* row, int d) {
  if constexpr (sizeof(KV) == 2) {
    const uint32_t w = reinterpret_cast<const uint32_t*>(row)[d >> 1];
    return make_float2(kv_half_lo(w), kv_half_hi(w));
  } else {
    return reinterpret_cast<const float2*>(row)[d >> 1];
  }
}

// R = output dim pairs per thread = ceil(G * D / 2 / 128).
template <typename KV, int D, int R>
__global__ void __launch_bounds__(kDecThreads)
    paged_decode_kernel(const float* __restrict__ q, const int32_t* __restrict__ qo_indptr, PagedKv kv,
                        TreeMask tree, bool has_tree, float* __restrict__ o, float* __restrict__ ws_o,
                        float* __restrict__ ws_lse, int32_t Hq, int32_t G, float scale, int32_t max_nq) {
  using Geo = DecGeom<KV, D>;
  extern __shared__ __align__(16) uint8_t smem_raw[];
  uint8_t* ks = smem_raw;
  uint8_t* vs = ks + kDecTile * Geo::kSmemRow;
  float* qs = reinterpret_cast<float*>(vs + kDecTile * Geo::kSmemRow);
  float* ps = qs + G * D;     // (G, 32) scores, then probabilities
  float* m_s = ps + G * kDecTile;
  float* l_s = m_s + G;
  float* c_s = l_s + G;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int32_t hk = blockIdx.y, S = gridDim.z, split = blockIdx.z;
  const int32_t total = qo_indptr[kv.batch];
  const uint8_t* kbase = static_cast<const uint8_t*>(kv.k_pages);
  const uint8_t* vbase = static_cast<const uint8_t*>(kv.v_pages);
  const int64_t row_stride = (int64_t)kv.n_kv_heads * Geo::kRowBytes;  // bytes between slots

  // With splits the grid has exactly one block row per query token (the workspace holds that
  // many rows); without, blocks loop over the tokens.
  const int32_t t_end = S > 1 ? min(total, (int32_t)gridDim.x) : total;
  for (int32_t t = blockIdx.x; t < t_end; t += gridDim.x) {
    const int32_t b = find_segment(qo_indptr, kv.batch, t);
    const int32_t q0 = qo_indptr[b], nq = qo_indptr[b + 1] - q0, i = t - q0;
    if (nq > max_nq) continue;  // a prefill kernel owns these rows (t is block-uniform)
    const int32_t L = kv.seq_len(b), prefix = L - nq;
    const int32_t n = has_tree ? L : prefix + i + 1;  // keys [0, n) are candidates
    const int32_t* pages = kv.indices + kv.indptr[b];
    const uint8_t* mrow = has_tree ? tree.mask + tree.indptr[b] + (int64_t)i * nq : nullptr;
    // This split's keys, in whole tiles.
    const int32_t per = ((n + S - 1) / S + kDecTile - 1) / kDecTile * kDecTile;
    const int32_t j0 = min(n, split * per), j1 = min(n, j0 + per);

    for (int e = tid; e < G * D; e += kDecThreads) {
      const int g = e / D, d = e % D;
      qs[e] = q[((int64_t)t * Hq + hk * G + g) * D + d] * scale;
    }
    for (int g = tid; g < G; g += kDecThreads) m_s[g] = -INFINITY, l_s[g] = 0.f;
    float2 acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = make_float2(0.f, 0.f);

    uint4 kr[Geo::kPerThread], vr[Geo::kPerThread];
    auto load = [&](int32_t base) {
#pragma unroll
      for (int c = 0; c < Geo::kPerThread; ++c) {
        const int chunk = tid + c * kDecThreads, jj = chunk / Geo::kChunks, part = chunk % Geo::kChunks;
        const int32_t j = base + jj;
        if (j < j1) {
          const int32_t page = __ldg(pages + j / kv.page_size);
          const int64_t off = ((int64_t)page * kv.page_size + j % kv.page_size) * row_stride +
                              (int64_t)hk * Geo::kRowBytes + part * 16;
          kr[c] = __ldg(reinterpret_cast<const uint4*>(kbase + off));
          vr[c] = __ldg(reinterpret_cast<const uint4*>(vbase + off));
        } else {
          kr[c] = vr[c] = make_uint4(0, 0, 0, 0);
        }
      }
    };
    auto stash = [&] {
#pragma unroll
      for (int c = 0; c < Geo::kPerThread; ++c) {
        const int chunk = tid + c * kDecThreads, jj = chunk / Geo::kChunks, part = chunk % Geo::kChunks;
        *reinterpret_cast<uint4*>(ks + jj * Geo::kSmemRow + part * 16) = kr[c];
        *reinterpret_cast<uint4*>(vs + jj * Geo::kSmemRow + part * 16) = vr[c];
      }
    };

    if (j0 < j1) load(j0);
    for (int32_t base = j0; base < j1; base += kDecTile) {
      __syncthreads();  // previous tile (or q / m / l set-up) fully consumed / written
      stash();
      __syncthreads();
      if (base + kDecTile < j1) load(base + kDecTile);  // next tile in flight during the math
      // 2. scores
      for (int e = tid; e < G * kDecTile; e += kDecThreads) {
        const int g = e / kDecTile, jj = e % kDecTile;
        const int32_t j = base + jj;
        const bool vis = j < j1 && (j < prefix || mrow == nullptr || mrow[j - prefix] != 0);
        ps[e] = vis ? dec_dot<KV, D>(qs + g * D, ks + jj * Geo::kSmemRow) : -INFINITY;
      }
      __syncthreads();
      // 3. online softmax, one warp per head
      for (int g = warp; g < G; g += kDecThreads / 32) {
        const float s = ps[g * kDecTile + lane];
        const float mx = warp_max(s);
        const float m_old = m_s[g];
        const float m_new = fmaxf(m_old, mx);
        const float p = m_new == -INFINITY ? 0.f : expf(s - m_new);  // masked keys: e^-inf = 0
        const float sum = warp_sum(p);
        ps[g * kDecTile + lane] = p;
        if (lane == 0) {
          const float corr = m_new == -INFINITY ? 1.f : expf(m_old - m_new);  // m_old = -inf: 0
          c_s[g] = corr;
          l_s[g] = l_s[g] * corr + sum;
          m_s[g] = m_new;
        }
      }
      __syncthreads();
      // 4. P·V
      const int nk = min(kDecTile, j1 - base);
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const int e = tid + r * kDecThreads;
        if (e < G * D / 2) {
          const int g = e / (D / 2), d = 2 * (e % (D / 2));
          const float c = c_s[g];
          float2 a = make_float2(acc[r].x * c, acc[r].y * c);
          const float* p = ps + g * kDecTile;
          for (int jj = 0; jj < nk; ++jj) {
            const float2 v = kv_pair<KV>(vs + jj * Geo::kSmemRow, d);
            a.x = fmaf(p[jj], v.x, a.x);
            a.y = fmaf(p[jj], v.y, a.y);
          }
          acc[r] = a;
        }
      }
    }
    __syncthreads();  // m_s / l_s final
    // 5. output: direct (one split) or the split's partial
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int e = tid + r * kDecThreads;
      if (e < G * D / 2) {
        const int g = e / (D / 2), d = 2 * (e % (D / 2));
        const int64_t row = (int64_t)t * Hq + hk * G + g;
        const float l = l_s[g];
        const float inv = l > 0.f ? 1.f / l : 0.f;
        float* dst = S == 1 ? o + row * D + d : ws_o + (row * S + split) * D + d;
        dst[0] = acc[r].x * inv;
        dst[1] = acc[r].y * inv;
        if (S > 1 && d == 0) ws_lse[row * S + split] = l > 0.f ? m_s[g] + logf(l) : -INFINITY;
      }
    }
    __syncthreads();  // qs / m_s reused by the block's next token
  }
}

// o (rows, D) from S partials per row.
__global__ void __launch_bounds__(128)
    paged_decode_merge(const float* __restrict__ ws_o, const float* __restrict__ ws_lse, float* __restrict__ o,
                       const int32_t* __restrict__ qo_indptr, int32_t batch, int32_t max_tokens, int32_t Hq,
                       int32_t D, int32_t S, int32_t max_nq) {
  const int64_t rows = (int64_t)min(qo_indptr[batch], max_tokens) * Hq;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int32_t t = (int32_t)(row / Hq), b = find_segment(qo_indptr, batch, t);
    if (qo_indptr[b + 1] - qo_indptr[b] > max_nq) continue;  // rows the decode kernel skipped
    const float* lse = ws_lse + row * S;
    float M = -INFINITY;
    for (int s = 0; s < S; ++s) M = fmaxf(M, lse[s]);
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
      float num = 0.f, den = 0.f;
      if (M != -INFINITY) {
        for (int s = 0; s < S; ++s) {
          if (lse[s] == -INFINITY) continue;
          const float w = expf(lse[s] - M);
          num = fmaf(w, ws_o[(row * S + s) * D + d], num);
          den += w;
        }
      }
      o[row * D + d] = den > 0.f ? num / den : 0.f;
    }
  }
}

}  // namespace tessera::cuda
