// The op set. Every backend implements these signatures in its own namespace:
//   tessera::ref  — plain float64 references (native/ref), the oracle for every other backend
//   tessera::cpu  — threaded SIMD kernels (native/cpu), runtime-dispatched per CPU
//   tessera::cuda — CUDA kernels (native/cuda), tested against tessera::cpu
// Argument validation lives in check.h and runs once before any backend is called.
#pragma once

#include <cstdint>

#include "tessera/dtype.h"
#include "tessera/layouts.h"

namespace tessera {

struct RopeParams {
  int32_t n_rot = 0;          // rotated dims per head (even, <= head_dim); the rest pass through
  float theta_base = 10000.f; // freq_i = theta_base^(-2i/n_rot)
  float freq_scale = 1.f;     // linear position scaling: angle = pos * freq_scale * freq_i
  RopeMode mode = RopeMode::Normal;
};

struct AttnShape {
  int32_t n_heads = 0;     // query heads (Hq)
  int32_t n_kv_heads = 0;  // key/value heads (Hkv); Hq % Hkv == 0, query head h reads kv head h / (Hq / Hkv)
  int32_t head_dim = 0;    // D
  float scale = 0.f;       // softmax scale, usually 1/sqrt(D)
};

class ThreadPool;

#define TESSERA_OP_SIGNATURES(CTX)                                                              \
  /* y (m, n) = x (m, k) · wᵀ; w (n, k) in f32/f16/bf16/q8_0/q4_0/q4_k/q6_k, k % block == 0 */  \
  void matmul(CTX const float* x, const void* w, DType w_dtype, float* y, int64_t m, int64_t n,   \
              int64_t k);                                                                       \
  /* y (rows, n) = x / sqrt(mean(x²) + eps) * weight (n) */                                    \
  void rmsnorm(CTX const float* x, const float* weight, float* y, int64_t rows, int64_t n,        \
               float eps);                                                                      \
  /* x (tokens, heads, head_dim) rotated in place; positions (tokens,) */                        \
  void rope(CTX float* x, const int32_t* positions, int64_t tokens, int32_t heads,               \
            int32_t head_dim, const RopeParams& p);                                             \
  /* y (n) = silu(gate) * up */                                                                 \
  void swiglu(CTX const float* gate, const float* up, float* y, int64_t n);                      \
  /* y (rows, n) = softmax over the last axis of x (rows, n) */                                 \
  void softmax(CTX const float* x, float* y, int64_t rows, int64_t n);                           \
  /* q (T, Hq, D), k/v (T, Hkv, D), o (T, Hq, D): block-diagonal causal attention per segment */ \
  void varlen_attention(CTX const float* q, const float* k, const float* v, float* o,            \
                        const VarlenBatch& batch, const AttnShape& s);                          \
  /* q (Tq, Hq, D) split by qo_indptr (batch+1,); o (Tq, Hq, D). The queries of sequence b are  \
     its last nq KV entries (already appended); tree may be null (plain causal). */             \
  void paged_attention(CTX const float* q, const int32_t* qo_indptr, const PagedKv& kv,           \
                       const TreeMask* tree, float* o, const AttnShape& s);                     \
  /* k/v (T, Hkv, D) f32 written into the pages of sequence batch_indices[t] at positions[t];   \
     positions[t] < seq_len: the page table already counts the new tokens (FlashInfer rule) */   \
  void kv_append(CTX const float* k, const float* v, const int32_t* batch_indices,                \
                 const int32_t* positions, int64_t tokens, const PagedKv& kv);                   \
  /* n elements: any weight dtype (k-quants too) -> f32, f32 -> f16/bf16/q8_0/q4_0 */           \
  void convert(CTX const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n);      \
  /* out (n_tokens, n_embd) = rows tokens[t] of table (n_vocab, n_embd), any weight dtype */     \
  void embed(CTX const void* table, DType dtype, int64_t n_embd, const int32_t* tokens,          \
             int64_t n_tokens, float* out);                                                      \
  /* y (rows, n) += bias (n) on every row */                                                    \
  void add_bias(CTX float* y, const float* bias, int64_t rows, int64_t n);                       \
  /* x (rows, n) += y (rows, n); xn (rows, n) = rmsnorm(x) * weight (n): residual + next norm */ \
  void add_rmsnorm(CTX float* x, const float* y, const float* weight, float* xn, int64_t rows,   \
                   int64_t n, float eps);                                                        \
  /* out (n_rows, n) = x[rows[r]], x (*, n) */                                                  \
  void gather_rows(CTX const float* x, const int32_t* rows, int64_t n_rows, int64_t n,          \
                   float* out);                                                                  \
  /* x[rows[r]] += y (n_rows, n); rows distinct: the inverse of gather_rows (FFN skip) */        \
  void scatter_add_rows(CTX float* x, const float* y, const int32_t* rows, int64_t n_rows,      \
                        int64_t n);                                                              \
  /* per row of x (rows, n): the k best (value desc, index asc; NaN never taken) -> idx / val   \
     (rows, k); a row with fewer than k non-NaN values ends with -1 / -inf */                   \
  void top_k_rows(CTX const float* x, int64_t rows, int64_t n, int k, int32_t* idx, float* val); \
  /* top_k_rows with k = 1: idx / val (rows,) */                                                \
  void argmax_rows(CTX const float* x, int64_t rows, int64_t n, int32_t* idx, float* val);        \
  /* moves KV entry src[m] of sequence batch_indices[m] to its entry dst[m] (all heads, K and V),\
     in order m = 0..n_moves-1: a move reads what the earlier ones wrote (tree path compaction) */\
  void kv_compact(CTX const int32_t* batch_indices, const int32_t* src, const int32_t* dst,      \
                  int64_t n_moves, const PagedKv& kv);

#define TESSERA_NO_CTX
#define TESSERA_CPU_CTX ThreadPool& pool,

namespace ref {
TESSERA_OP_SIGNATURES(TESSERA_NO_CTX)
}

namespace cpu {
TESSERA_OP_SIGNATURES(TESSERA_CPU_CTX)

struct PackedWeight;  // native/cpu/qmatmul.h

// One weight of a fused matmul: y (m, n) = x (m, k) · wᵀ. `packed`, when set, is the same weight
// repacked for the int8 path (pack_weight) and is used instead of w while that path is active.
struct MatmulJob {
  const void* w;
  DType w_dtype;
  float* y;
  int64_t n;
  const PackedWeight* packed = nullptr;
};
// Several matmuls sharing x in one parallel loop (at most 8 jobs): saves a thread-pool round trip
// per extra weight, which matters in decode steps. With quantize_x, quantised weights use integer
// arithmetic on x rounded to q8_0 blocks, as llama.cpp does: the result is ref::matmul of the
// q8_0-rounded x. On AVX512-VNNI CPUs that holds for every row count and packed q8_0 / q4_0 / q4_k /
// q6_k weight; otherwise for q8_0 / q4_0 rows when x has at most 3 rows (other cases use f32 x).
void matmul_multi(ThreadPool& pool, const float* x, int64_t m, int64_t k, const MatmulJob* jobs, int count,
                  bool quantize_x = false);
}

}  // namespace tessera
