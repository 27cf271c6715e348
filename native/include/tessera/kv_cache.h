// The paged KV cache: one pool of fixed-size pages per layer (K and V, FlashInfer NHD layout),
// sequences as lists of pages with refcounts, fork with copy-on-write of a shared last page,
// and the CSR page tables a forward step passes to the attention op.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "tessera/dtype.h"
#include "tessera/layouts.h"

namespace tessera {

struct KvCacheConfig {
  int32_t n_layers = 0;
  int32_t num_pages = 0;
  int32_t page_size = 16;
  int32_t n_kv_heads = 0;
  int32_t head_dim = 0;
  DType dtype = DType::F16;  // F16 or F32
};

// Raised when a step needs more pages than are free (the scheduler can preempt and retry).
class KvOutOfPages : public std::runtime_error {
 public:
  KvOutOfPages(int32_t need, int32_t free_pages)
      : std::runtime_error("out of KV pages: the step needs " + std::to_string(need) + " new pages, " +
                           std::to_string(free_pages) + " are free (raise kvPages or contextSize, or run fewer sequences)"),
        need(need),
        free(free_pages) {}
  int32_t need, free;
};

// Where the pages live when not in host memory (the CUDA model keeps them on its device). The
// cache does the bookkeeping either way; the storage holds the bytes and copies pages.
class KvStorage {
 public:
  virtual ~KvStorage() = default;
  // Base of layer l's K / V pages: (num_pages, page_size, Hkv, D) elements of the cache's dtype.
  virtual void* k_pages(int32_t layer) const = 0;
  virtual void* v_pages(int32_t layer) const = 0;
  // Copies the first `bytes` of page src onto page dst, in every layer's K and V.
  virtual void copy_page_prefix(int32_t dst, int32_t src, int64_t page_bytes, int64_t bytes) = 0;
  // kv_compact's moves (ops.h) in every layer. `tables` holds host page tables (its page pointers
  // are not used); the arrays are host memory, n_moves long.
  virtual void compact(const PagedKv& tables, const int32_t* batch_indices, const int32_t* src, const int32_t* dst,
                       int64_t n_moves) = 0;
};

class KvCache {
 public:
  // Pages in host memory, or in `storage` when given (its pages must match `config`).
  explicit KvCache(const KvCacheConfig& config, std::unique_ptr<KvStorage> storage = nullptr);
  ~KvCache();
  // Throws std::out_of_range / ArgError naming the bad field of `config` (the constructor calls it).
  static void validate(const KvCacheConfig& config);
  // Whether the pages are in host memory (false: they live in a KvStorage, e.g. on a GPU).
  bool on_host() const { return storage_ == nullptr; }

  const KvCacheConfig& config() const { return cfg_; }
  int32_t free_pages() const { return (int32_t)free_.size(); }
  // Bytes of K+V memory for all layers.
  int64_t bytes() const;

  int32_t create_sequence();
  // A new sequence sharing all of `seq`'s pages (refcounted; a shared partial page is copied on
  // the first append to either sequence).
  int32_t fork_sequence(int32_t seq);
  void release_sequence(int32_t seq);
  bool has_sequence(int32_t seq) const { return seqs_.count(seq) != 0; }
  int32_t length(int32_t seq) const;
  int32_t num_sequences() const { return (int32_t)seqs_.size(); }

  // Pages the sequences would need to grow by n[i] tokens each (including copy-on-write copies).
  int32_t pages_needed(const int32_t* seqs, const int32_t* n, int32_t count) const;
  // Grows each sequence by n[i] tokens, all or nothing: throws KvOutOfPages before changing
  // anything when the pool cannot hold them.
  void grow(const int32_t* seqs, const int32_t* n, int32_t count);
  // Drops tokens past `len` (speculative rollback); pages no longer used are released.
  void truncate(int32_t seq, int32_t len);
  // Commits an accepted token-tree path: the entries at slots keep[0..n) (strictly increasing,
  // below the length) move to slots keep[0], keep[0] + 1, ... (entries before keep[0] stay, in
  // every layer, K and V), then the sequence is truncated to keep[0] + n. Returns the number of
  // pages freed. Throws ArgError (range) naming the problem before changing anything, also when
  // a page that would be written is shared with another sequence.
  int32_t commit_path(int32_t seq, const int32_t* keep, int32_t n);

  // CSR page tables (kv_indptr, kv_indices, kv_last_page_len) of `seqs`, in that order.
  void page_tables(const int32_t* seqs, int32_t count, std::vector<int32_t>& indptr,
                   std::vector<int32_t>& indices, std::vector<int32_t>& last_page_len) const;
  // The PagedKv view of one layer over page tables built by page_tables().
  PagedKv layer(int32_t l, const std::vector<int32_t>& indptr, const std::vector<int32_t>& indices,
                const std::vector<int32_t>& last_page_len) const;
  int32_t refcount(int32_t page) const { return ref_[page]; }

 private:
  struct Sequence {
    std::vector<int32_t> pages;
    int32_t len = 0;
  };
  Sequence& seq_ref(int32_t seq);
  const Sequence& seq_ref(int32_t seq) const;
  int32_t alloc_page();
  void unref_page(int32_t page);
  void copy_page(int32_t dst, int32_t src, int32_t tokens);

  KvCacheConfig cfg_;
  int64_t page_elems_ = 0;  // page_size * n_kv_heads * head_dim
  std::vector<std::unique_ptr<uint8_t[]>> k_, v_;  // per layer: (num_pages, page_size, Hkv, D)
  std::unique_ptr<KvStorage> storage_;             // when set, k_ / v_ are empty
  std::vector<int32_t> ref_;
  std::vector<int32_t> free_;
  std::unordered_map<int32_t, Sequence> seqs_;
  int32_t next_id_ = 0;
};

}  // namespace tessera
