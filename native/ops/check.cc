// Argument validation for the op set: every message names the argument and the bad value.
#include "tessera/check.h"

#include <algorithm>
#include <sstream>

namespace tessera {
namespace {

template <typename... Args>
std::string cat(Args&&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

// indptr (n+1,) starts at 0, never decreases, ends at `total` (when total >= 0).
void check_indptr(const char* name, const int32_t* indptr, int64_t n, int64_t total) {
  if (n < 0) throw_range(cat(name, ": batch size must be >= 0, got ", n));
  if (indptr == nullptr) throw_type(cat(name, " is missing"));
  if (indptr[0] != 0) throw_range(cat(name, "[0] must be 0, got ", indptr[0]));
  for (int64_t i = 0; i < n; i++)
    if (indptr[i + 1] < indptr[i])
      throw_range(cat(name, " must be non-decreasing: ", name, "[", i + 1, "] = ", indptr[i + 1],
                      " < ", name, "[", i, "] = ", indptr[i]));
  if (total >= 0 && indptr[n] != total)
    throw_range(cat(name, "[", n, "] = ", indptr[n], " must equal the number of rows (", total, ")"));
}

}  // namespace

void throw_range(const std::string& msg) { throw ArgError(ErrorKind::Range, msg); }
void throw_type(const std::string& msg) { throw ArgError(ErrorKind::Type, msg); }

void check_varlen(const VarlenBatch& b, int64_t total_tokens) {
  check_indptr("cu_seqlens", b.cu_seqlens, b.num_seqs, total_tokens);
}

void check_attn_shape(const AttnShape& s) {
  if (s.n_heads <= 0) throw_range(cat("n_heads must be > 0, got ", s.n_heads));
  if (s.n_kv_heads <= 0) throw_range(cat("n_kv_heads must be > 0, got ", s.n_kv_heads));
  if (s.n_heads % s.n_kv_heads != 0)
    throw_range(cat("n_heads (", s.n_heads, ") must be a multiple of n_kv_heads (", s.n_kv_heads, ")"));
  if (s.head_dim <= 0) throw_range(cat("head_dim must be > 0, got ", s.head_dim));
  if (!(s.scale > 0.f) || s.scale != s.scale) throw_range(cat("scale must be a positive number, got ", s.scale));
}

void check_paged(const PagedKv& kv, int64_t num_indices) {
  if (kv.kv_dtype != DType::F32 && kv.kv_dtype != DType::F16)
    throw_type(cat("kv dtype must be f32 or f16, got ", dtype_info(kv.kv_dtype).name));
  if (kv.page_size <= 0) throw_range(cat("page_size must be > 0, got ", kv.page_size));
  if (kv.num_pages < 0) throw_range(cat("num_pages must be >= 0, got ", kv.num_pages));
  if (kv.n_kv_heads <= 0) throw_range(cat("n_kv_heads must be > 0, got ", kv.n_kv_heads));
  if (kv.head_dim <= 0) throw_range(cat("head_dim must be > 0, got ", kv.head_dim));
  check_indptr("kv_indptr", kv.indptr, kv.batch, num_indices);
  for (int64_t i = 0; i < num_indices; i++)
    if (kv.indices[i] < 0 || kv.indices[i] >= kv.num_pages)
      throw_range(cat("kv_indices[", i, "] = ", kv.indices[i], " is out of range [0, ", kv.num_pages, ")"));
  for (int32_t b = 0; b < kv.batch; b++)
    if (kv.num_seq_pages(b) > 0 && (kv.last_page_len[b] < 1 || kv.last_page_len[b] > kv.page_size))
      throw_range(cat("kv_last_page_len[", b, "] = ", kv.last_page_len[b], " must be in [1, page_size = ",
                      kv.page_size, "]"));
}

void check_paged_queries(const int32_t* qo_indptr, int64_t total_q, const PagedKv& kv,
                         const TreeMask* tree, int64_t mask_len) {
  check_indptr("qo_indptr", qo_indptr, kv.batch, total_q);
  for (int32_t b = 0; b < kv.batch; b++) {
    const int32_t nq = qo_indptr[b + 1] - qo_indptr[b];
    if (nq > kv.seq_len(b))
      throw_range(cat("sequence ", b, " has ", nq, " queries but only ", kv.seq_len(b),
                      " KV entries (append the queries' K/V before attending)"));
  }
  if (tree == nullptr) return;
  check_indptr("mask_indptr", tree->indptr, kv.batch, mask_len);
  for (int32_t b = 0; b < kv.batch; b++) {
    const int64_t nq = qo_indptr[b + 1] - qo_indptr[b];
    const int64_t have = tree->indptr[b + 1] - tree->indptr[b];
    if (have != nq * nq)
      throw_range(cat("tree mask of sequence ", b, " has ", have, " entries, expected ", nq, " x ", nq, " = ",
                      nq * nq, " (mask_indptr)"));
  }
}

void check_kv_append(const int32_t* batch_indices, const int32_t* positions, int64_t tokens,
                     const PagedKv& kv) {
  for (int64_t t = 0; t < tokens; t++) {
    const int32_t b = batch_indices[t];
    if (b < 0 || b >= kv.batch)
      throw_range(cat("batch_indices[", t, "] = ", b, " is out of range [0, ", kv.batch, ")"));
    if (positions[t] < 0 || positions[t] >= kv.seq_len(b))
      throw_range(cat("positions[", t, "] = ", positions[t], " is outside sequence ", b, "'s page table (length ",
                      kv.seq_len(b), ")"));
  }
}

void check_matmul(DType w_dtype, int64_t k) {
  switch (w_dtype) {
    case DType::F32: case DType::F16: case DType::BF16: case DType::Q8_0: case DType::Q4_0:
    case DType::Q4_K: case DType::Q6_K: break;
    default:
      throw_type(cat("matmul weight dtype must be f32, f16, bf16, q8_0, q4_0, q4_k or q6_k, got ",
                     dtype_info(w_dtype).name));
  }
  const int32_t blk = dtype_info(w_dtype).block_elems;
  if (k % blk != 0)
    throw_range(cat("matmul inner dimension k = ", k, " must be a multiple of ", blk, " for ",
                    dtype_info(w_dtype).name, " weights"));
}

void check_rope(const RopeParams& p, int32_t head_dim) {
  if (p.n_rot <= 0 || p.n_rot % 2 != 0 || p.n_rot > head_dim)
    throw_range(cat("rope n_rot must be even and in [2, head_dim = ", head_dim, "], got ", p.n_rot));
  if (!(p.theta_base > 0.f)) throw_range(cat("rope theta_base must be > 0, got ", p.theta_base));
  if (!(p.freq_scale > 0.f)) throw_range(cat("rope freq_scale must be > 0, got ", p.freq_scale));
  if (p.mode != RopeMode::Normal && p.mode != RopeMode::NeoX)
    throw_range(cat("rope mode must be normal (0) or neox (2), got ", (int)p.mode));
}

void check_convert(DType src, DType dst, int64_t n) {
  auto plain = [](DType t) {
    return t == DType::F32 || t == DType::F16 || t == DType::BF16 || t == DType::Q8_0 || t == DType::Q4_0;
  };
  auto kquant = [](DType t) { return t == DType::Q4_K || t == DType::Q6_K; };
  if (!(dst == DType::F32 && (plain(src) || kquant(src))) && !(src == DType::F32 && (plain(dst) || kquant(dst))))
    throw_type(cat("convert supports any of f32/f16/bf16/q8_0/q4_0/q4_k/q6_k to f32 and f32 to any of "
                   "them, not ",
                   dtype_info(src).name, " -> ", dtype_info(dst).name));
  const int32_t blk = std::max(dtype_info(src).block_elems, dtype_info(dst).block_elems);
  if (n % blk != 0) throw_range(cat("convert: element count ", n, " must be a multiple of ", blk));
}

}  // namespace tessera
