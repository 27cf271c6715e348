// paged_attention: queries of many sequences (decode, chunked prefill, tree verify) against the
// CSR paged KV cache (FlashInfer NHD layout), f32 or f16 pages, GQA, optional tree mask.
// Head dims 64 / 128 / 256 with at most 16 query heads per KV head take the GQA-aware split-KV
// kernel of paged_decode.cuh (splits only when the caller gives PagedAttnHints: the grid must be
// sized on the host). Other shapes use the per-(token, head) kernel below.
// Launch: grid (token blocks, Hq), 128 threads; each block loops over the query tokens
// t < qo_indptr[batch] (read on the device), finds the sequence b of t by binary search on
// qo_indptr and runs the online-softmax core (attention.cuh) over the keys of b:
//   query i of nq sees the prefix [0, L - nq) and, without a tree, nodes 0..i (plain causal);
//   with a tree, node j iff mask[mask_indptr[b] + i * nq + j] != 0.
// Key positions map to page slots through the sequence's page table (indices[indptr[b] + pos /
// page_size], slot pos % page_size).
#include "attention.cuh"
#include "cuda_ops.h"
#include "paged_decode.cuh"

#include <algorithm>
#include <climits>

namespace tessera::cuda {
namespace {

template <typename KV>
struct PagedKeys {
  const KV* k_pages;
  const KV* v_pages;
  const int32_t* pages;  // the sequence's page ids
  const uint8_t* mrow;   // this query's tree mask row, or null
  int32_t prefix;        // keys [0, prefix) are always visible
  int32_t page_size;
  int32_t Hkv;
  int32_t D;
  int32_t hk;

  __device__ __forceinline__ int64_t row(int j) const {
    const int32_t page = pages[j / page_size];
    return (((int64_t)page * page_size + j % page_size) * Hkv + hk) * D;
  }
  __device__ __forceinline__ const KV* krow(int j) const { return k_pages + row(j); }
  __device__ __forceinline__ const KV* vrow(int j) const { return v_pages + row(j); }
  __device__ __forceinline__ bool visible(int j) const {
    return j < prefix || mrow == nullptr || mrow[j - prefix] != 0;
  }
};

template <int DPL, typename KV>
__global__ void __launch_bounds__(kAttnThreads, kAttnMinBlocks)
    paged_attention_kernel(const float* __restrict__ q, const int32_t* __restrict__ qo_indptr,
                           PagedKv kv, TreeMask tree, bool has_tree, float* __restrict__ o,
                           int32_t Hq, int32_t group, int32_t D, float scale) {
  extern __shared__ float smem[];
  const int32_t h = blockIdx.y;
  const int32_t total = qo_indptr[kv.batch];
  PagedKeys<KV> keys;
  keys.k_pages = static_cast<const KV*>(kv.k_pages);
  keys.v_pages = static_cast<const KV*>(kv.v_pages);
  keys.page_size = kv.page_size;
  keys.Hkv = kv.n_kv_heads;
  keys.D = D;
  keys.hk = h / group;
  for (int32_t t = blockIdx.x; t < total; t += gridDim.x) {
    const int32_t b = find_segment(qo_indptr, kv.batch, t);
    const int32_t q0 = qo_indptr[b];
    const int32_t nq = qo_indptr[b + 1] - q0;
    const int32_t i = t - q0;
    const int32_t L = kv.seq_len(b);
    keys.prefix = L - nq;
    keys.pages = kv.indices + kv.indptr[b];
    keys.mrow = has_tree ? tree.mask + tree.indptr[b] + (int64_t)i * nq : nullptr;
    const int32_t n = has_tree ? L : keys.prefix + i + 1;
    const int64_t qo = ((int64_t)t * Hq + h) * D;
    attend_row<DPL>(q + qo, scale, D, n, keys, o + qo, smem);
  }
}

template <int DPL, typename KV>
void launch(cudaStream_t stream, const float* q, const int32_t* qo_indptr, const PagedKv& kv,
            const TreeMask* tree, float* o, const AttnShape& s) {
  const size_t smem = attn_smem_bytes(DPL, s.head_dim);
  attn_prepare_smem(paged_attention_kernel<DPL, KV>, smem, "paged_attention");
  const dim3 grid(attn_token_blocks(s.n_heads), (unsigned)s.n_heads);
  const TreeMask tm = tree != nullptr ? *tree : TreeMask{};
  paged_attention_kernel<DPL, KV><<<grid, kAttnThreads, smem, stream>>>(
      q, qo_indptr, kv, tm, tree != nullptr, o, s.n_heads, s.n_heads / s.n_kv_heads, s.head_dim,
      s.scale);
}

template <typename KV>
void dispatch(cudaStream_t stream, const float* q, const int32_t* qo_indptr, const PagedKv& kv,
              const TreeMask* tree, float* o, const AttnShape& s) {
  switch (attn_dpl(s.head_dim)) {
    case 1: launch<1, KV>(stream, q, qo_indptr, kv, tree, o, s); break;
    case 2: launch<2, KV>(stream, q, qo_indptr, kv, tree, o, s); break;
    case 3: launch<3, KV>(stream, q, qo_indptr, kv, tree, o, s); break;
    case 4: launch<4, KV>(stream, q, qo_indptr, kv, tree, o, s); break;
    case 6: launch<6, KV>(stream, q, qo_indptr, kv, tree, o, s); break;
    case 8: launch<8, KV>(stream, q, qo_indptr, kv, tree, o, s); break;
    default: launch<0, KV>(stream, q, qo_indptr, kv, tree, o, s); break;
  }
}

template <typename KV, int D, int R>
void launch_decode(cudaStream_t stream, const float* q, const int32_t* qo_indptr, const PagedKv& kv,
                   const TreeMask* tree, float* o, const AttnShape& s, unsigned gx, int S, float* ws, int32_t max_nq) {
  const int G = s.n_heads / s.n_kv_heads;
  const size_t smem = paged_decode_smem((int)sizeof(KV), D, G);
  attn_prepare_smem(paged_decode_kernel<KV, D, R>, smem, "paged_attention");
  const TreeMask tm = tree != nullptr ? *tree : TreeMask{};
  const dim3 grid(gx, (unsigned)s.n_kv_heads, (unsigned)S);
  float* ws_lse = nullptr;
  if (S > 1) ws_lse = ws + (size_t)gx * s.n_heads * S * D;  // after the partial outputs
  paged_decode_kernel<KV, D, R><<<grid, kDecThreads, smem, stream>>>(q, qo_indptr, kv, tm, tree != nullptr, o, ws,
                                                                      ws_lse, s.n_heads, G, s.scale, max_nq);
  if (S > 1) {
    check_launch("paged_attention (split-KV)");
    const unsigned mg = (unsigned)std::min<int64_t>((int64_t)gx * s.n_heads, 65535);
    paged_decode_merge<<<mg, 128, 0, stream>>>(ws, ws_lse, o, qo_indptr, kv.batch, (int32_t)gx, s.n_heads, D, S, max_nq);
  }
}

template <typename KV, int D>
void decode_by_r(cudaStream_t stream, const float* q, const int32_t* qo_indptr, const PagedKv& kv,
                 const TreeMask* tree, float* o, const AttnShape& s, unsigned gx, int S, float* ws, int32_t max_nq) {
  const int G = s.n_heads / s.n_kv_heads;
  const int need = (G * D / 2 + kDecThreads - 1) / kDecThreads;
  if (need <= 1) launch_decode<KV, D, 1>(stream, q, qo_indptr, kv, tree, o, s, gx, S, ws, max_nq);
  else if (need <= 2) launch_decode<KV, D, 2>(stream, q, qo_indptr, kv, tree, o, s, gx, S, ws, max_nq);
  else if (need <= 4) launch_decode<KV, D, 4>(stream, q, qo_indptr, kv, tree, o, s, gx, S, ws, max_nq);
  else if (need <= 8) launch_decode<KV, D, 8>(stream, q, qo_indptr, kv, tree, o, s, gx, S, ws, max_nq);
  else launch_decode<KV, D, 16>(stream, q, qo_indptr, kv, tree, o, s, gx, S, ws, max_nq);
}

template <typename KV>
void decode_by_dim(cudaStream_t stream, const float* q, const int32_t* qo_indptr, const PagedKv& kv,
                   const TreeMask* tree, float* o, const AttnShape& s, unsigned gx, int S, float* ws, int32_t max_nq) {
  switch (s.head_dim) {
    case 64: decode_by_r<KV, 64>(stream, q, qo_indptr, kv, tree, o, s, gx, S, ws, max_nq); break;
    case 128: decode_by_r<KV, 128>(stream, q, qo_indptr, kv, tree, o, s, gx, S, ws, max_nq); break;
    default: decode_by_r<KV, 256>(stream, q, qo_indptr, kv, tree, o, s, gx, S, ws, max_nq); break;
  }
}

// Whether the split-KV kernel takes this shape, its grid width and split count, and the scratch
// bytes it needs; the same answer for the same inputs (CUDA graph replays rely on that).
struct DecodeChoice {
  bool ok = false;
  unsigned gx = 0;
  int splits = 1;
  size_t ws_bytes = 0;
};

DecodeChoice choose_decode(const PagedKv& kv, const AttnShape& s, const PagedAttnHints* hints) {
  DecodeChoice c;
  const int D = s.head_dim, G = s.n_heads / s.n_kv_heads;
  if (D != 64 && D != 128 && D != 256) return c;
  if (G > 16 || (kv.kv_dtype != DType::F16 && kv.kv_dtype != DType::F32)) return c;
  if (reinterpret_cast<uintptr_t>(kv.k_pages) % 16 != 0 || reinterpret_cast<uintptr_t>(kv.v_pages) % 16 != 0) return c;
  // e.g. f32 pages with D = 256 need 66 KB: more than a Turing block may have
  if (paged_decode_smem(kv.kv_dtype == DType::F16 ? 2 : 4, D, G) > max_smem_optin()) return c;
  c.ok = true;
  if (hints != nullptr && hints->total_q > 0 && hints->total_q <= 65535) {
    c.gx = (unsigned)hints->total_q;
    // Enough blocks for two waves of the SMs, but at least 256 keys per split.
    const int64_t base = (int64_t)c.gx * s.n_kv_heads, want = 2 * (int64_t)sm_count();
    const int64_t by_len = std::max<int64_t>(1, (hints->max_kv_len + 255) / 256);
    c.splits = (int)std::clamp<int64_t>((want + base - 1) / base, 1, std::min<int64_t>(by_len, 64));
  } else {  // no (usable) hints: one split, blocks loop over the tokens
    c.gx = attn_token_blocks(s.n_kv_heads);
  }
  // partial outputs (rows x S x D) and log-sum-exps (rows x S) of the tokens of one grid pass
  if (c.splits > 1) c.ws_bytes = sizeof(float) * (size_t)c.gx * s.n_heads * c.splits * ((size_t)D + 1);
  return c;
}

// The split-KV kernel when the shape allows it; false (nothing launched) otherwise.
bool paged_decode(cudaStream_t stream, const float* q, const int32_t* qo_indptr, const PagedKv& kv,
                  const TreeMask* tree, float* o, const AttnShape& s, const PagedAttnHints* hints,
                  int32_t max_nq = INT32_MAX) {
  const DecodeChoice c = choose_decode(kv, s, hints);
  if (!c.ok) return false;
  float* ws = c.ws_bytes > 0 ? static_cast<float*>(stream_workspace(stream, c.ws_bytes)) : nullptr;
  if (kv.kv_dtype == DType::F16) decode_by_dim<uint16_t>(stream, q, qo_indptr, kv, tree, o, s, c.gx, c.splits, ws, max_nq);
  else decode_by_dim<float>(stream, q, qo_indptr, kv, tree, o, s, c.gx, c.splits, ws, max_nq);
  return true;
}

}  // namespace

PagedAttnPlan paged_attention_plan(const PagedKv& kv, const AttnShape& s, const PagedAttnHints& hints) {
  PagedAttnPlan p;
  if (kv.batch <= 0 || s.n_heads <= 0 || s.n_kv_heads <= 0 || s.head_dim <= 0) return p;
  const DecodeChoice c = choose_decode(kv, s, &hints);
  p.splits = c.ok ? c.splits : 0;
  p.workspace_bytes = c.ws_bytes;
  return p;
}

void paged_attention_hinted(cudaStream_t stream, const float* q, const int32_t* qo_indptr, const PagedKv& kv,
                            const TreeMask* tree, float* o, const AttnShape& s, const PagedAttnHints& hints) {
  if (kv.batch <= 0 || s.n_heads <= 0 || s.n_kv_heads <= 0 || s.head_dim <= 0) return;
  // Sequences with many queries (a prompt continuing a sequence) on tensor cores, the rest (decode
  // tokens) in the split-KV kernel, which then skips the former.
  constexpr int32_t kPrefillMinQ = 16;
  int32_t max_nq = INT32_MAX;
  // (only when the split-KV kernel can take the other rows: the fallback kernel does every row)
  if (tree == nullptr && hints.total_q > 0 && hints.max_q_per_seq >= kPrefillMinQ && choose_decode(kv, s, &hints).ok &&
      paged_prefill_tensor_cores(stream, q, qo_indptr, kv, o, s, hints.total_q, kPrefillMinQ))
    max_nq = kPrefillMinQ - 1;
  if (paged_decode(stream, q, qo_indptr, kv, tree, o, s, &hints, max_nq)) {
    check_launch("paged_attention");
    return;
  }
  paged_attention(stream, q, qo_indptr, kv, tree, o, s);  // every row
}

void paged_attention(cudaStream_t stream, const float* q, const int32_t* qo_indptr, const PagedKv& kv,
                     const TreeMask* tree, float* o, const AttnShape& s) {
  if (kv.batch <= 0 || s.n_heads <= 0 || s.n_kv_heads <= 0 || s.head_dim <= 0) return;
  if (paged_decode(stream, q, qo_indptr, kv, tree, o, s, nullptr)) {
    check_launch("paged_attention");
    return;
  }
  if (kv.kv_dtype == DType::F16) {
    dispatch<uint16_t>(stream, q, qo_indptr, kv, tree, o, s);
  } else if (kv.kv_dtype == DType::F32) {
    dispatch<float>(stream, q, qo_indptr, kv, tree, o, s);
  } else {
    throw std::invalid_argument("tessera::cuda::paged_attention: kv dtype must be f32 or f16");
  }
  check_launch("paged_attention");
}

}  // namespace tessera::cuda
