// KvCache: page allocation with refcounts, copy-on-write, and page-table construction.
#include "tessera/kv_cache.h"

#include <algorithm>
#include <cstring>

#include "tessera/check.h"
#include "tessera/ops.h"
#include "tessera/threadpool.h"

namespace tessera {

void KvCache::validate(const KvCacheConfig& c) {
  if (c.n_layers <= 0) throw_range("kv cache: n_layers must be > 0");
  if (c.num_pages <= 0) throw_range("kv cache: kvPages must be > 0, got " + std::to_string(c.num_pages));
  if (c.page_size <= 0 || c.page_size > 4096) throw_range("kv cache: pageSize must be in [1, 4096], got " + std::to_string(c.page_size));
  if (c.dtype != DType::F16 && c.dtype != DType::F32) throw_type("kv cache: dtype must be f16 or f32");
}

KvCache::KvCache(const KvCacheConfig& c, std::unique_ptr<KvStorage> storage) : cfg_(c), storage_(std::move(storage)) {
  validate(c);
  page_elems_ = (int64_t)c.page_size * c.n_kv_heads * c.head_dim;
  const int64_t layer_bytes = dtype_bytes(c.dtype, page_elems_ * c.num_pages);
  for (int32_t l = 0; storage_ == nullptr && l < c.n_layers; l++) {
    // Not value-initialised: the OS commits pages as they are first written.
    k_.emplace_back(new uint8_t[layer_bytes]);
    v_.emplace_back(new uint8_t[layer_bytes]);
  }
  ref_.assign(c.num_pages, 0);
  free_.reserve(c.num_pages);
  for (int32_t p = c.num_pages - 1; p >= 0; p--) free_.push_back(p);  // pop_back hands out 0, 1, 2, ...
}

KvCache::~KvCache() = default;

int64_t KvCache::bytes() const { return 2 * (int64_t)cfg_.n_layers * dtype_bytes(cfg_.dtype, page_elems_ * cfg_.num_pages); }

KvCache::Sequence& KvCache::seq_ref(int32_t seq) {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) throw_range("unknown sequence id " + std::to_string(seq));
  return it->second;
}
const KvCache::Sequence& KvCache::seq_ref(int32_t seq) const {
  auto it = seqs_.find(seq);
  if (it == seqs_.end()) throw_range("unknown sequence id " + std::to_string(seq));
  return it->second;
}

int32_t KvCache::create_sequence() {
  const int32_t id = next_id_++;
  seqs_.emplace(id, Sequence{});
  return id;
}

int32_t KvCache::fork_sequence(int32_t seq) {
  Sequence copy = seq_ref(seq);
  for (int32_t p : copy.pages) ref_[p]++;
  const int32_t id = next_id_++;
  seqs_.emplace(id, std::move(copy));
  return id;
}

void KvCache::release_sequence(int32_t seq) {
  Sequence& s = seq_ref(seq);
  for (int32_t p : s.pages) unref_page(p);
  seqs_.erase(seq);
}

int32_t KvCache::length(int32_t seq) const { return seq_ref(seq).len; }

int32_t KvCache::alloc_page() {
  const int32_t p = free_.back();
  free_.pop_back();
  ref_[p] = 1;
  return p;
}

void KvCache::unref_page(int32_t page) {
  if (--ref_[page] == 0) free_.push_back(page);
}

void KvCache::copy_page(int32_t dst, int32_t src, int32_t tokens) {
  const int64_t row = dtype_bytes(cfg_.dtype, (int64_t)cfg_.n_kv_heads * cfg_.head_dim);
  const int64_t page_bytes = dtype_bytes(cfg_.dtype, page_elems_);
  if (storage_ != nullptr) {
    storage_->copy_page_prefix(dst, src, page_bytes, row * tokens);
    return;
  }
  for (int32_t l = 0; l < cfg_.n_layers; l++) {
    std::memcpy(k_[l].get() + dst * page_bytes, k_[l].get() + src * page_bytes, row * tokens);
    std::memcpy(v_[l].get() + dst * page_bytes, v_[l].get() + src * page_bytes, row * tokens);
  }
}

int32_t KvCache::pages_needed(const int32_t* seqs, const int32_t* n, int32_t count) const {
  int64_t need = 0;
  for (int32_t i = 0; i < count; i++) {
    const Sequence& s = seq_ref(seqs[i]);
    if (n[i] < 0) throw_range("cannot grow a sequence by a negative number of tokens");
    if (n[i] == 0) continue;
    const int64_t pages_after = ((int64_t)s.len + n[i] + cfg_.page_size - 1) / cfg_.page_size;
    need += std::max<int64_t>(0, pages_after - (int64_t)s.pages.size());
    // A partially filled last page shared with another sequence is copied before writing.
    if (s.len % cfg_.page_size != 0 && ref_[s.pages.back()] > 1) need++;
  }
  return (int32_t)std::min<int64_t>(need, INT32_MAX);
}

void KvCache::grow(const int32_t* seqs, const int32_t* n, int32_t count) {
  for (int32_t i = 0; i < count; i++)
    for (int32_t j = 0; j < i; j++)
      if (seqs[i] == seqs[j]) throw_range("sequence " + std::to_string(seqs[i]) + " appears twice in one step");
  const int32_t need = pages_needed(seqs, n, count);
  if (need > free_pages()) throw KvOutOfPages(need, free_pages());
  for (int32_t i = 0; i < count; i++) {
    if (n[i] == 0) continue;
    Sequence& s = seq_ref(seqs[i]);
    if (s.len % cfg_.page_size != 0 && ref_[s.pages.back()] > 1) {  // copy-on-write
      const int32_t fresh = alloc_page();
      copy_page(fresh, s.pages.back(), s.len % cfg_.page_size);
      unref_page(s.pages.back());
      s.pages.back() = fresh;
    }
    s.len += n[i];
    while ((int64_t)s.pages.size() * cfg_.page_size < s.len) s.pages.push_back(alloc_page());
  }
}

void KvCache::truncate(int32_t seq, int32_t len) {
  Sequence& s = seq_ref(seq);
  if (len < 0 || len > s.len)
    throw_range("truncate: length " + std::to_string(len) + " is outside [0, " + std::to_string(s.len) + "]");
  s.len = len;
  const size_t keep = (size_t)((len + cfg_.page_size - 1) / cfg_.page_size);
  while (s.pages.size() > keep) {
    unref_page(s.pages.back());
    s.pages.pop_back();
  }
}

int32_t KvCache::commit_path(int32_t seq, const int32_t* keep, int32_t n) {
  Sequence& s = seq_ref(seq);
  if (n < 1) throw_range("commitPath: keepPositions must hold at least one slot (truncate drops every tree entry)");
  for (int32_t i = 0; i < n; i++) {
    if (keep[i] < 0 || keep[i] >= s.len)
      throw_range("commitPath: keepPositions[" + std::to_string(i) + "] = " + std::to_string(keep[i]) +
                  " is outside the sequence [0, " + std::to_string(s.len) + ")");
    if (i > 0 && keep[i] <= keep[i - 1])
      throw_range("commitPath: keepPositions must be strictly increasing (keepPositions[" + std::to_string(i) +
                  "] = " + std::to_string(keep[i]) + " follows " + std::to_string(keep[i - 1]) + ")");
  }
  const int32_t base = keep[0];
  std::vector<int32_t> bidx, src, dst;
  for (int32_t i = 0; i < n; i++)
    if (keep[i] != base + i) {
      const int32_t page = s.pages[(base + i) / cfg_.page_size];
      if (ref_[page] > 1)
        throw_range("commitPath: slot " + std::to_string(base + i) + " of sequence " + std::to_string(seq) +
                    " lies in a page shared with another sequence (commit before forking)");
      bidx.push_back(0), src.push_back(keep[i]), dst.push_back(base + i);
    }
  if (!src.empty()) {
    std::vector<int32_t> indptr, indices, last;
    page_tables(&seq, 1, indptr, indices, last);
    if (storage_ != nullptr) {
      storage_->compact(layer(0, indptr, indices, last), bidx.data(), src.data(), dst.data(), (int64_t)src.size());
    } else {
      for (int32_t l = 0; l < cfg_.n_layers; l++)
        cpu::kv_compact(default_pool(), bidx.data(), src.data(), dst.data(), (int64_t)src.size(),
                        layer(l, indptr, indices, last));
    }
  }
  const int32_t before = free_pages();
  truncate(seq, base + n);
  return free_pages() - before;
}

void KvCache::page_tables(const int32_t* seqs, int32_t count, std::vector<int32_t>& indptr,
                          std::vector<int32_t>& indices, std::vector<int32_t>& last_page_len) const {
  indptr.assign(1, 0);
  indices.clear();
  last_page_len.clear();
  for (int32_t i = 0; i < count; i++) {
    const Sequence& s = seq_ref(seqs[i]);
    const size_t used = (size_t)((s.len + cfg_.page_size - 1) / cfg_.page_size);
    indices.insert(indices.end(), s.pages.begin(), s.pages.begin() + used);
    indptr.push_back((int32_t)indices.size());
    last_page_len.push_back(s.len == 0 ? 0 : s.len - (int32_t)(used - 1) * cfg_.page_size);
  }
}

PagedKv KvCache::layer(int32_t l, const std::vector<int32_t>& indptr, const std::vector<int32_t>& indices,
                       const std::vector<int32_t>& last_page_len) const {
  PagedKv kv;
  kv.k_pages = storage_ ? storage_->k_pages(l) : k_[l].get();
  kv.v_pages = storage_ ? storage_->v_pages(l) : v_[l].get();
  kv.kv_dtype = cfg_.dtype;
  kv.num_pages = cfg_.num_pages;
  kv.page_size = cfg_.page_size;
  kv.n_kv_heads = cfg_.n_kv_heads;
  kv.head_dim = cfg_.head_dim;
  kv.indptr = indptr.data();
  kv.indices = indices.data();
  kv.last_page_len = last_page_len.data();
  kv.batch = (int32_t)last_page_len.size();
  return kv;
}

}  // namespace tessera
