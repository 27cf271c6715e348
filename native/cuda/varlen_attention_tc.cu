// varlen_attention on tensor cores (FlashAttention-2 style, WMMA 16x16x16, f16 operands, f32
// accumulation and softmax) for head dims 64 and 128, when the host knows the batch's token count
// (VarlenHints): a small kernel lists the (sequence, 64-query tile) work items, so a block never
// spans two sequences and never touches padding; its KV loop stops at the tile's last query
// (causal), and only the last tiles are masked.
// Block: 4 warps, 64 queries x one query head; each warp owns 16 query rows. Per 64-key tile:
//   S = Q Kᵀ (tensor cores) -> shared (f32) -> scaled, masked online softmax, one row per lane
//   pair -> P (f16, shared) -> O_tile = P V (tensor cores) -> shared -> O = O * corr + O_tile in
//   registers (lane pair 2r, 2r+1 owns row r, half of the dims each).
// Q, K and V arrive in f32 (the op's layout) and are rounded to f16 when staged in shared memory.
#include <mma.h>

#include "attention.cuh"
#include "cuda_ops.h"

namespace tessera::cuda {
namespace {

using namespace nvcuda;

constexpr int kTile = 64;     // queries per block and keys per KV tile
constexpr int kThreads = 128; // 4 warps x 16 query rows

template <int D>
struct Geo {
  static constexpr int LDH = D + 8;    // halves per staged Q/K/V row (keeps fragments 32-byte aligned)
  static constexpr int LDF = D + 4;    // floats per row of a warp's S / O_tile scratch
  static constexpr int LDP = kTile + 8;
  static constexpr size_t kQ = (size_t)kTile * LDH * 2, kKV = kQ;
  static constexpr size_t kScratch = (size_t)(kThreads / 32) * 16 * LDF * 4;
  static constexpr size_t kP = (size_t)(kThreads / 32) * 16 * LDP * 2;
  static constexpr size_t kSmem = kQ + 2 * kKV + kScratch + kP;
};

// tile_start[b] = Σ_{c < b} ceil(len_c / 64); tile_start[num_seqs] = total tiles. One thread: the
// sequence count is small next to everything else in a prefill step.
__global__ void list_tiles(const int32_t* __restrict__ cu, int32_t num_seqs, int32_t* __restrict__ tile_start) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  int32_t acc = 0;
  for (int32_t b = 0; b < num_seqs; ++b) {
    tile_start[b] = acc;
    acc += (cu[b + 1] - cu[b] + kTile - 1) / kTile;
  }
  tile_start[num_seqs] = acc;
}

// Rows [r0, r0 + 64) of a (T, H, D) f32 tensor, head h, to f16 shared rows; rows >= r_end are 0.
template <int D>
__device__ __forceinline__ void stage_rows(half* dst, const float* __restrict__ src, int64_t r0, int64_t r_end,
                                           int H, int h) {
  constexpr int V4 = D / 4;  // float4 per row
  for (int e = threadIdx.x; e < kTile * V4; e += kThreads) {
    const int r = e / V4, c = (e % V4) * 4;
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (r0 + r < r_end) v = __ldg(reinterpret_cast<const float4*>(src + ((r0 + r) * H + h) * D + c));
    half2* d = reinterpret_cast<half2*>(dst + r * Geo<D>::LDH + c);
    d[0] = __floats2half2_rn(v.x, v.y);
    d[1] = __floats2half2_rn(v.z, v.w);
  }
}

template <int D>
__global__ void __launch_bounds__(kThreads)
    varlen_tc_kernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                     float* __restrict__ o, const int32_t* __restrict__ cu, int32_t num_seqs,
                     const int32_t* __restrict__ tile_start, int32_t Hq, int32_t Hkv, float scale) {
  using G = Geo<D>;
  extern __shared__ __align__(32) uint8_t smem[];
  half* Qs = reinterpret_cast<half*>(smem);
  half* Ks = reinterpret_cast<half*>(smem + G::kQ);
  half* Vs = reinterpret_cast<half*>(smem + G::kQ + G::kKV);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float* Sw = reinterpret_cast<float*>(smem + G::kQ + 2 * G::kKV) + warp * 16 * G::LDF;
  half* Pw = reinterpret_cast<half*>(smem + G::kQ + 2 * G::kKV + G::kScratch) + warp * 16 * G::LDP;

  const int32_t tiles = tile_start[num_seqs];
  const int32_t tile = blockIdx.x;
  if (tile >= tiles) return;  // the grid is an upper bound (no barrier has run yet)
  const int32_t b = find_segment(tile_start, num_seqs, tile);
  const int32_t begin = cu[b], end = cu[b + 1];
  const int32_t q0 = begin + (tile - tile_start[b]) * kTile;  // first query token of the tile
  const int32_t q_last = min(end, q0 + kTile) - 1;
  const int32_t h = blockIdx.y, hk = h / (Hq / Hkv);

  stage_rows<D>(Qs, q, q0, end, Hq, h);

  // This lane's softmax row (r) and output half (cols [c0, c0 + D/2)).
  const int r = lane >> 1, half_id = lane & 1;
  const int32_t my_q = q0 + warp * 16 + r;  // may be >= end (padding row of the last tile)
  float m = -INFINITY, l = 0.f;
  float acc[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) acc[i] = 0.f;

  for (int32_t k0 = begin; k0 <= q_last; k0 += kTile) {
    __syncthreads();  // the previous tile's K / V are no longer read
    stage_rows<D>(Ks, k, k0, end, Hkv, hk);
    stage_rows<D>(Vs, v, k0, end, Hkv, hk);
    __syncthreads();

    // S = Q_w K_tileᵀ: 16 x 64, in four 16 x 16 fragments.
#pragma unroll
    for (int n = 0; n < kTile / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> s;
      wmma::fill_fragment(s, 0.f);
#pragma unroll
      for (int kd = 0; kd < D; kd += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, half, wmma::row_major> a;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, half, wmma::col_major> bk;
        wmma::load_matrix_sync(a, Qs + (warp * 16) * G::LDH + kd, G::LDH);
        wmma::load_matrix_sync(bk, Ks + (n * 16) * G::LDH + kd, G::LDH);
        wmma::mma_sync(s, a, bk, s);
      }
      wmma::store_matrix_sync(Sw + n * 16, s, G::LDF, wmma::mem_row_major);
    }
    __syncwarp();

    // Online softmax of row r over keys [half_id * 32, +32) of the tile.
    const float* srow = Sw + r * G::LDF + half_id * 32;
    float sv[32];
    float mx = -INFINITY;
#pragma unroll
    for (int c = 0; c < 32; ++c) {
      const int32_t j = k0 + half_id * 32 + c;
      const bool vis = j <= my_q && j < end;  // causal within the sequence (keys start at `begin`)
      sv[c] = vis ? srow[c] * scale : -INFINITY;
      mx = fmaxf(mx, sv[c]);
    }
    mx = fmaxf(mx, __shfl_xor_sync(kFullMask, mx, 1));
    const float m_new = fmaxf(m, mx);
    const float corr = m_new == -INFINITY ? 1.f : expf(m - m_new);
    float sum = 0.f;
    half* prow = Pw + r * G::LDP + half_id * 32;
#pragma unroll
    for (int c = 0; c < 32; c += 2) {
      const float p0 = m_new == -INFINITY ? 0.f : expf(sv[c] - m_new);
      const float p1 = m_new == -INFINITY ? 0.f : expf(sv[c + 1] - m_new);
      const half2 ph = __floats2half2_rn(p0, p1);
      *reinterpret_cast<half2*>(prow + c) = ph;
      const float2 pr = __half22float2(ph);  // sum what the tensor cores will multiply
      sum += pr.x + pr.y;
    }
    sum += __shfl_xor_sync(kFullMask, sum, 1);
    l = l * corr + sum;
    m = m_new;
    __syncwarp();

    // O_tile = P V: 16 x D, stored over the S scratch (S is dead now).
#pragma unroll
    for (int n = 0; n < D / 16; ++n) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> ot;
      wmma::fill_fragment(ot, 0.f);
#pragma unroll
      for (int kk = 0; kk < kTile; kk += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, half, wmma::row_major> pa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, half, wmma::row_major> vb;
        wmma::load_matrix_sync(pa, Pw + kk, G::LDP);
        wmma::load_matrix_sync(vb, Vs + kk * G::LDH + n * 16, G::LDH);
        wmma::mma_sync(ot, pa, vb, ot);
      }
      __syncwarp();  // all lanes have read S (row max pass) before the first store overwrites it
      wmma::store_matrix_sync(Sw + n * 16, ot, G::LDF, wmma::mem_row_major);
    }
    __syncwarp();
    const float* orow = Sw + r * G::LDF + half_id * (D / 2);
#pragma unroll
    for (int i = 0; i < D / 2; ++i) acc[i] = fmaf(acc[i], corr, orow[i]);
    __syncwarp();  // the next tile's S stores wait for these reads
  }

  if (my_q < end) {
    const float inv = l > 0.f ? 1.f / l : 0.f;
    float* dst = o + ((int64_t)my_q * Hq + h) * D + half_id * (D / 2);
#pragma unroll
    for (int i = 0; i < D / 2; i += 4)
      *reinterpret_cast<float4*>(dst + i) = make_float4(acc[i] * inv, acc[i + 1] * inv, acc[i + 2] * inv, acc[i + 3] * inv);
  }
}

template <int D>
bool launch(cudaStream_t stream, const float* q, const float* k, const float* v, float* o, const VarlenBatch& batch,
            const AttnShape& s, const VarlenHints& hints) {
  static_assert(Geo<D>::kSmem <= 227 * 1024, "shared memory");
  int dev = 0, optin = 0;
  TS_CUDA_CHECK(cudaGetDevice(&dev));
  TS_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  if ((size_t)optin < Geo<D>::kSmem) return false;  // e.g. D = 128 on a 64 KiB Turing SM
  attn_prepare_smem(varlen_tc_kernel<D>, Geo<D>::kSmem, "varlen_attention");
  const int64_t max_tiles = (hints.total_tokens + kTile - 1) / kTile + batch.num_seqs;
  if (max_tiles > 0x7fffffff) return false;
  int32_t* tile_start = static_cast<int32_t*>(stream_workspace(stream, sizeof(int32_t) * (batch.num_seqs + 1)));
  list_tiles<<<1, 1, 0, stream>>>(batch.cu_seqlens, batch.num_seqs, tile_start);
  check_launch("varlen_attention (tile list)");
  varlen_tc_kernel<D><<<dim3((unsigned)max_tiles, (unsigned)s.n_heads), kThreads, Geo<D>::kSmem, stream>>>(
      q, k, v, o, batch.cu_seqlens, batch.num_seqs, tile_start, s.n_heads, s.n_kv_heads, s.scale);
  check_launch("varlen_attention (tensor cores)");
  return true;
}

}  // namespace

void varlen_attention_hinted(cudaStream_t stream, const float* q, const float* k, const float* v, float* o,
                             const VarlenBatch& batch, const AttnShape& s, const VarlenHints& hints) {
  if (batch.num_seqs <= 0 || s.n_heads <= 0 || s.n_kv_heads <= 0 || s.head_dim <= 0) return;
  const bool aligned = reinterpret_cast<uintptr_t>(q) % 16 == 0 && reinterpret_cast<uintptr_t>(k) % 16 == 0 &&
                       reinterpret_cast<uintptr_t>(v) % 16 == 0 && reinterpret_cast<uintptr_t>(o) % 16 == 0;
  if (tensor_cores_enabled() && aligned && s.n_heads <= 65535 && hints.total_tokens > 0) {
    if (s.head_dim == 64 && launch<64>(stream, q, k, v, o, batch, s, hints)) return;
    if (s.head_dim == 128 && launch<128>(stream, q, k, v, o, batch, s, hints)) return;
  }
  varlen_attention(stream, q, k, v, o, batch, s);
}

}  // namespace tessera::cuda
