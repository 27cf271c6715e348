// Argument validation shared by every entry point (N-API, native tests, the model runtime).
// Checks are O(batch + pages) and run once per call, before any backend touches memory.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "tessera/layouts.h"
#include "tessera/ops.h"

namespace tessera {

enum class ErrorKind { Type, Range };

// A bad argument: `what()` names the argument and what was wrong with it.
class ArgError : public std::invalid_argument {
 public:
  ArgError(ErrorKind kind, const std::string& msg) : std::invalid_argument(msg), kind_(kind) {}
  ErrorKind kind() const { return kind_; }

 private:
  ErrorKind kind_;
};

[[noreturn]] void throw_range(const std::string& msg);
[[noreturn]] void throw_type(const std::string& msg);

// cu_seqlens (num_seqs+1,) starts at 0, never decreases and ends at total_tokens.
void check_varlen(const VarlenBatch& b, int64_t total_tokens);
void check_attn_shape(const AttnShape& s);
// Page geometry, indptr monotonic, every page index in [0, num_pages), last_page_len in [1, page_size].
void check_paged(const PagedKv& kv, int64_t num_indices);
// qo_indptr (batch+1,) monotonic from 0 to total_q; each sequence has at least as many KV entries
// as queries; the tree mask (if any) holds nq*nq entries per sequence.
void check_paged_queries(const int32_t* qo_indptr, int64_t total_q, const PagedKv& kv,
                         const TreeMask* tree, int64_t mask_len);
// Each appended token targets an existing sequence at a position inside its page table.
void check_kv_append(const int32_t* batch_indices, const int32_t* positions, int64_t tokens,
                     const PagedKv& kv);
void check_matmul(DType w_dtype, int64_t k);
void check_rope(const RopeParams& p, int32_t head_dim);
void check_convert(DType src, DType dst, int64_t n);

}  // namespace tessera
