// Batch layouts shared by the CPU ops, the CUDA kernels and the references: packed varlen
// sequences, the CSR paged KV cache (FlashInfer NHD) and the tree mask of speculative verify.
#pragma once

#include <cstdint>

#include "tessera/dtype.h"

namespace tessera {

// Sequences packed back to back along the token axis.
// cu_seqlens is (num_seqs + 1,), non-decreasing, cu_seqlens[0] == 0,
// cu_seqlens[num_seqs] == total tokens. Sequence b owns tokens [cu_seqlens[b], cu_seqlens[b+1]).
struct VarlenBatch {
  const int32_t* cu_seqlens = nullptr;
  int32_t num_seqs = 0;

  TS_HD int32_t begin(int32_t b) const { return cu_seqlens[b]; }
  TS_HD int32_t len(int32_t b) const { return cu_seqlens[b + 1] - cu_seqlens[b]; }
  TS_HD int32_t total() const { return cu_seqlens[num_seqs]; }
};

// One layer's K and V pages plus the CSR page tables of a batch.
// k_pages, v_pages: (num_pages, page_size, n_kv_heads, head_dim) in kv_dtype (F32 or F16).
// Sequence b uses pages indices[indptr[b] .. indptr[b+1]); its last page holds
// last_page_len[b] tokens (1..page_size), every other page is full. A sequence with no page
// has length 0 and last_page_len is ignored.
struct PagedKv {
  void* k_pages = nullptr;
  void* v_pages = nullptr;
  DType kv_dtype = DType::F32;
  int32_t num_pages = 0;
  int32_t page_size = 0;
  int32_t n_kv_heads = 0;
  int32_t head_dim = 0;

  const int32_t* indptr = nullptr;         // (batch + 1,)
  const int32_t* indices = nullptr;        // (indptr[batch],) page ids in [0, num_pages)
  const int32_t* last_page_len = nullptr;  // (batch,)
  int32_t batch = 0;

  TS_HD int32_t num_seq_pages(int32_t b) const { return indptr[b + 1] - indptr[b]; }
  TS_HD int32_t seq_len(int32_t b) const {
    const int32_t n = num_seq_pages(b);
    return n == 0 ? 0 : (n - 1) * page_size + last_page_len[b];
  }
  // Element offset of token `pos` of sequence b, kv head h, within k_pages / v_pages.
  TS_HD int64_t offset(int32_t b, int32_t pos, int32_t h) const {
    const int32_t page = indices[indptr[b] + pos / page_size];
    return (((int64_t)page * page_size + pos % page_size) * n_kv_heads + h) * head_dim;
  }
};

// Tree attention mask for several query tokens per sequence (speculative verify).
// For sequence b with nq = qo_indptr[b+1] - qo_indptr[b] query tokens, the last nq KV entries
// of the sequence are the tree nodes; mask[indptr[b] + i * nq + j] != 0 lets query i see node j.
// Every query sees the whole prefix before the nodes. indptr[b+1] - indptr[b] must equal nq*nq.
// Without a tree mask, query i of nq sees the prefix and nodes 0..i (plain causal).
struct TreeMask {
  const uint8_t* mask = nullptr;
  const int32_t* indptr = nullptr;  // (batch + 1,)
};

enum class RopeMode : int32_t {
  Normal = 0,  // llama.cpp "normal": rotates interleaved pairs (x[2i], x[2i+1])
  NeoX = 2,    // GPT-NeoX / Qwen: rotates (x[i], x[i + n_rot/2])
};

}  // namespace tessera
