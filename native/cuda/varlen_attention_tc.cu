// Prefill attention on tensor cores (FlashAttention-2 style, WMMA 16x16x16, f16 operands, f32
// accumulation and softmax) for head dims 64 and 128, when the host knows the batch's token count:
// varlen_attention_hinted over the step's own K / V (packed prefill), and
// paged_prefill_tensor_cores over the paged cache (prompts that continue a sequence). A small
// kernel lists the (sequence, 64-query tile) work items, so a block never spans two sequences and
// never touches padding; its KV loop stops at the tile's last query (causal).
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

// tile_start[b] = Σ_{c < b} tiles of c, tile_start[n] = total; sequence c has
// ceil(len_c / 64) tiles, or none when len_c < min_len (those rows are another kernel's). One
// thread: the sequence count is small next to everything else in a prefill step.
__global__ void list_tiles(const int32_t* __restrict__ indptr, int32_t n, int32_t min_len,
                           int32_t* __restrict__ tile_start) {
  if (blockIdx.x != 0 || threadIdx.x != 0) return;
  int32_t acc = 0;
  for (int32_t b = 0; b < n; ++b) {
    tile_start[b] = acc;
    const int32_t len = indptr[b + 1] - indptr[b];
    if (len >= min_len) acc += (len + kTile - 1) / kTile;
  }
  tile_start[n] = acc;
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

// Keys of a packed varlen batch: rows begin.. of the step's own (T, Hkv, D) f32 K and V.
template <int D>
struct ContigKeys {
  const float* k;
  const float* v;
  int32_t begin, Hkv, hk;
  // keys [k0, k0 + 64) of the sequence (0-based), zero past `count`
  __device__ __forceinline__ void stage(half* Ks, half* Vs, int32_t k0, int32_t count) const {
    stage_rows<D>(Ks, k, (int64_t)begin + k0, (int64_t)begin + count, Hkv, hk);
    stage_rows<D>(Vs, v, (int64_t)begin + k0, (int64_t)begin + count, Hkv, hk);
  }
};

// Keys of one sequence in the paged cache (f32 or f16 pages, NHD).
template <typename KV, int D>
struct PagedKeys {
  const KV* k_pages;
  const KV* v_pages;
  const int32_t* pages;
  int32_t page_size, Hkv, hk;
  __device__ __forceinline__ void stage(half* Ks, half* Vs, int32_t k0, int32_t count) const {
    constexpr int kPer = 8;  // elements per thread-step: 16 bytes of f16, 32 of f32
    constexpr int kChunks = D / kPer;
    for (int e = threadIdx.x; e < kTile * kChunks; e += kThreads) {
      const int r = e / kChunks, c = (e % kChunks) * kPer;
      const int32_t j = k0 + r;
      uint4 kh = make_uint4(0, 0, 0, 0), vh = make_uint4(0, 0, 0, 0);  // 8 halves each
      if (j < count) {
        const int64_t off = (((int64_t)__ldg(pages + j / page_size) * page_size + j % page_size) * Hkv + hk) * D + c;
        if constexpr (sizeof(KV) == 2) {
          kh = __ldg(reinterpret_cast<const uint4*>(k_pages + off));
          vh = __ldg(reinterpret_cast<const uint4*>(v_pages + off));
        } else {
          const float4* kp = reinterpret_cast<const float4*>(k_pages + off);
          const float4* vp = reinterpret_cast<const float4*>(v_pages + off);
          const float4 k0v = __ldg(kp), k1v = __ldg(kp + 1), v0v = __ldg(vp), v1v = __ldg(vp + 1);
          half2* kd = reinterpret_cast<half2*>(&kh);
          half2* vd = reinterpret_cast<half2*>(&vh);
          kd[0] = __floats2half2_rn(k0v.x, k0v.y), kd[1] = __floats2half2_rn(k0v.z, k0v.w);
          kd[2] = __floats2half2_rn(k1v.x, k1v.y), kd[3] = __floats2half2_rn(k1v.z, k1v.w);
          vd[0] = __floats2half2_rn(v0v.x, v0v.y), vd[1] = __floats2half2_rn(v0v.z, v0v.w);
          vd[2] = __floats2half2_rn(v1v.x, v1v.y), vd[3] = __floats2half2_rn(v1v.z, v1v.w);
        }
      }
      *reinterpret_cast<uint4*>(Ks + r * Geo<D>::LDH + c) = kh;
      *reinterpret_cast<uint4*>(Vs + r * Geo<D>::LDH + c) = vh;
    }
  }
};

// One block's work: query rows t_first .. t_first + rows - 1 (of q / o, head h) whose keys are
// the sequence's keys 0, 1, ...: row r sees keys [0, kpos0 + r + 1). `keys` stages them.
template <int D, class Keys>
__device__ __forceinline__ void flash_tile(const float* __restrict__ q, float* __restrict__ o, int32_t t_first,
                                           int32_t rows, int32_t kpos0, const Keys& keys, int32_t Hq, int32_t h,
                                           float scale) {
  using G = Geo<D>;
  extern __shared__ __align__(32) uint8_t smem[];
  half* Qs = reinterpret_cast<half*>(smem);
  half* Ks = reinterpret_cast<half*>(smem + G::kQ);
  half* Vs = reinterpret_cast<half*>(smem + G::kQ + G::kKV);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  float* Sw = reinterpret_cast<float*>(smem + G::kQ + 2 * G::kKV) + warp * 16 * G::LDF;
  half* Pw = reinterpret_cast<half*>(smem + G::kQ + 2 * G::kKV + G::kScratch) + warp * 16 * G::LDP;

  stage_rows<D>(Qs, q, t_first, (int64_t)t_first + rows, Hq, h);

  // This lane's softmax row (r) and output half (cols [half_id * D/2, +D/2)).
  const int r = lane >> 1, half_id = lane & 1;
  const int row = warp * 16 + r;           // may be >= rows (padding row of the last tile)
  const int32_t limit = kpos0 + row + 1;   // keys [0, limit) are visible to this row
  const int32_t count = kpos0 + rows;      // keys the tile needs at all
  float m = -INFINITY, l = 0.f;
  float acc[D / 2];
#pragma unroll
  for (int i = 0; i < D / 2; ++i) acc[i] = 0.f;

  for (int32_t k0 = 0; k0 < count; k0 += kTile) {
    __syncthreads();  // the previous tile's K / V (and, first, Q's staging) are done with
    keys.stage(Ks, Vs, k0, count);
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
      const bool vis = j < limit;  // causal within the sequence
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

  if (row < rows) {
    const float inv = l > 0.f ? 1.f / l : 0.f;
    float* dst = o + (((int64_t)t_first + row) * Hq + h) * D + half_id * (D / 2);
#pragma unroll
    for (int i = 0; i < D / 2; i += 4)
      *reinterpret_cast<float4*>(dst + i) = make_float4(acc[i] * inv, acc[i + 1] * inv, acc[i + 2] * inv, acc[i + 3] * inv);
  }
}

// Packed varlen prefill: tiles over cu_seqlens, keys are the step's own K / V.
template <int D>
__global__ void __launch_bounds__(kThreads)
    varlen_tc_kernel(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                     float* __restrict__ o, const int32_t* __restrict__ cu, int32_t num_seqs,
                     const int32_t* __restrict__ tile_start, int32_t Hq, int32_t Hkv, float scale) {
  const int32_t tile = blockIdx.x;
  if (tile >= tile_start[num_seqs]) return;  // the grid is an upper bound (no barrier has run yet)
  const int32_t b = find_segment(tile_start, num_seqs, tile);
  const int32_t begin = cu[b], end = cu[b + 1];
  const int32_t i0 = (tile - tile_start[b]) * kTile;  // first query of the tile, within the sequence
  const int32_t h = blockIdx.y;
  const ContigKeys<D> keys{k, v, begin, Hkv, h / (Hq / Hkv)};
  flash_tile<D>(q, o, begin + i0, min(kTile, end - begin - i0), i0, keys, Hq, h, scale);
}

// Prefill against the paged cache (chunked prefill, prompts after a cached prefix, mixed steps):
// tiles over the sequences with at least min_nq queries; query i of nq sees keys
// [0, L - nq + i + 1) of its sequence.
template <typename KV, int D>
__global__ void __launch_bounds__(kThreads)
    paged_prefill_tc_kernel(const float* __restrict__ q, const int32_t* __restrict__ qo_indptr, PagedKv kv,
                            float* __restrict__ o, const int32_t* __restrict__ tile_start, int32_t Hq, float scale) {
  const int32_t tile = blockIdx.x;
  if (tile >= tile_start[kv.batch]) return;
  const int32_t b = find_segment(tile_start, kv.batch, tile);
  const int32_t q_begin = qo_indptr[b], nq = qo_indptr[b + 1] - q_begin;
  const int32_t i0 = (tile - tile_start[b]) * kTile;
  const int32_t prefix = kv.seq_len(b) - nq;
  const int32_t h = blockIdx.y;
  const PagedKeys<KV, D> keys{static_cast<const KV*>(kv.k_pages), static_cast<const KV*>(kv.v_pages),
                              kv.indices + kv.indptr[b], kv.page_size, kv.n_kv_heads, h / (Hq / kv.n_kv_heads)};
  flash_tile<D>(q, o, q_begin + i0, min(kTile, nq - i0), prefix + i0, keys, Hq, h, scale);
}

// e.g. D = 128 needs 93 KB: not on a 64 KiB Turing SM
bool smem_ok(size_t bytes) { return bytes <= max_smem_optin(); }

template <int D>
bool launch(cudaStream_t stream, const float* q, const float* k, const float* v, float* o, const VarlenBatch& batch,
            const AttnShape& s, const VarlenHints& hints) {
  static_assert(Geo<D>::kSmem <= 227 * 1024, "shared memory");
  if (!smem_ok(Geo<D>::kSmem)) return false;
  attn_prepare_smem(varlen_tc_kernel<D>, Geo<D>::kSmem, "varlen_attention");
  const int64_t max_tiles = (hints.total_tokens + kTile - 1) / kTile + batch.num_seqs;
  if (max_tiles > 0x7fffffff) return false;
  int32_t* tile_start = static_cast<int32_t*>(stream_workspace(stream, sizeof(int32_t) * (batch.num_seqs + 1)));
  list_tiles<<<1, 1, 0, stream>>>(batch.cu_seqlens, batch.num_seqs, 1, tile_start);
  check_launch("varlen_attention (tile list)");
  varlen_tc_kernel<D><<<dim3((unsigned)max_tiles, (unsigned)s.n_heads), kThreads, Geo<D>::kSmem, stream>>>(
      q, k, v, o, batch.cu_seqlens, batch.num_seqs, tile_start, s.n_heads, s.n_kv_heads, s.scale);
  check_launch("varlen_attention (tensor cores)");
  return true;
}

template <typename KV, int D>
bool launch_paged(cudaStream_t stream, const float* q, const int32_t* qo_indptr, const PagedKv& kv, float* o,
                  const AttnShape& s, int64_t total_q, int32_t min_nq) {
  if (!smem_ok(Geo<D>::kSmem)) return false;
  attn_prepare_smem(paged_prefill_tc_kernel<KV, D>, Geo<D>::kSmem, "paged_attention");
  const int64_t max_tiles = (total_q + kTile - 1) / kTile + kv.batch;
  if (max_tiles > 0x7fffffff) return false;
  // The decode kernel's split-KV partials use this stream's workspace too, after this kernel.
  int32_t* tile_start = static_cast<int32_t*>(stream_workspace(stream, sizeof(int32_t) * (kv.batch + 1)));
  list_tiles<<<1, 1, 0, stream>>>(qo_indptr, kv.batch, min_nq, tile_start);
  check_launch("paged_attention (tile list)");
  paged_prefill_tc_kernel<KV, D><<<dim3((unsigned)max_tiles, (unsigned)s.n_heads), kThreads, Geo<D>::kSmem, stream>>>(
      q, qo_indptr, kv, o, tile_start, s.n_heads, s.scale);
  check_launch("paged_attention (tensor-core prefill)");
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

bool paged_prefill_tensor_cores(cudaStream_t stream, const float* q, const int32_t* qo_indptr, const PagedKv& kv,
                                float* o, const AttnShape& s, int64_t total_q, int32_t min_nq) {
  if (!tensor_cores_enabled() || total_q <= 0 || min_nq < 1 || s.n_heads > 65535) return false;
  if (reinterpret_cast<uintptr_t>(q) % 16 != 0 || reinterpret_cast<uintptr_t>(o) % 16 != 0) return false;
  if (reinterpret_cast<uintptr_t>(kv.k_pages) % 16 != 0 || reinterpret_cast<uintptr_t>(kv.v_pages) % 16 != 0) return false;
  const bool f16 = kv.kv_dtype == DType::F16;
  if (!f16 && kv.kv_dtype != DType::F32) return false;
  if (s.head_dim == 64) return f16 ? launch_paged<uint16_t, 64>(stream, q, qo_indptr, kv, o, s, total_q, min_nq)
                                   : launch_paged<float, 64>(stream, q, qo_indptr, kv, o, s, total_q, min_nq);
  if (s.head_dim == 128) return f16 ? launch_paged<uint16_t, 128>(stream, q, qo_indptr, kv, o, s, total_q, min_nq)
                                    : launch_paged<float, 128>(stream, q, qo_indptr, kv, o, s, total_q, min_nq);
  return false;
}

}  // namespace tessera::cuda
