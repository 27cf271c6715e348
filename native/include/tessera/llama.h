// Llama-family transformer (llama: Llama 1/2/3, TinyLlama, Mistral, SmolLM; qwen2: QKV bias,
// NeoX rope) over a memory-mapped GGUF file, and its forward pass over one packed batch.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "tessera/gguf.h"
#include "tessera/kv_cache.h"
#include "tessera/ops.h"

namespace tessera {

class ThreadPool;

struct LlamaConfig {
  std::string arch;          // "llama" | "qwen2"
  std::string name;          // general.name
  int32_t n_vocab = 0;
  int32_t n_embd = 0;
  int32_t n_layer = 0;
  int32_t n_head = 0;
  int32_t n_head_kv = 0;
  int32_t head_dim = 0;
  int32_t n_ff = 0;
  int32_t n_ctx_train = 0;
  float rms_eps = 1e-5f;
  RopeParams rope;
  bool qkv_bias = false;
  bool tied_output = false;  // output projection shares token_embd
};

// A weight matrix w (n, k) as stored in the file (GGUF shape [k, n]).
struct Weight {
  const void* data = nullptr;
  DType dtype = DType::F32;
  int64_t n = 0, k = 0;
  std::string name;
  // The same matrix repacked for the int8 path (native/cpu/qmatmul.h), when this CPU has one.
  std::shared_ptr<const cpu::PackedWeight> packed;
  cpu::MatmulJob job(float* y) const { return {data, dtype, y, n, packed.get()}; }
};

struct LlamaLayer {
  std::vector<float> attn_norm, ffn_norm;  // (n_embd,)
  Weight wq, wk, wv, wo, w_gate, w_up, w_down;
  std::vector<float> bq, bk, bv;  // qwen2 only
};

// One forward step: tokens of several sequences, grouped by sequence in `seq_ids` order.
// Sequence i contributes seq_n_tokens[i] tokens; they take its next KV slots (current length + j).
struct ForwardBatch {
  const int32_t* tokens = nullptr;
  int32_t n_tokens = 0;
  const int32_t* seq_ids = nullptr;
  const int32_t* seq_n_tokens = nullptr;
  int32_t n_seqs = 0;
  const int32_t* logit_rows = nullptr;  // indices into tokens whose logits are wanted (any number per sequence)
  int32_t n_logit_rows = 0;
  // Optional (n_tokens,) rope positions; null: each token's KV slot (current length + j). A given
  // position must lie in [0, its slot]: e.g. prefix length + depth for the nodes of a token tree.
  const int32_t* positions = nullptr;
  // Optional token-tree ancestor masks, one per sequence back to back: sequence i's nq = seq_n_tokens[i]
  // tokens have nq*nq bytes, mask[a * nq + b] != 0 when token a sees token b. Each token sees
  // itself and only earlier tokens (b <= a); every token sees the whole cached prefix. Null: causal.
  const uint8_t* tree_mask = nullptr;
  int64_t tree_mask_len = 0;
  // Optional FFN skip mask (n_layer, n_tokens): nonzero skips that token's FFN block in that layer
  // (its residual stream passes the block unchanged). Null: every FFN runs.
  const uint8_t* skip_mask = nullptr;
  int64_t skip_mask_len = 0;
};

class KvCache;

// The bookkeeping of one forward step, shared by every backend: validates `batch` against the
// cache (sequence ids, token ids, context size, logit rows, positions, tree and skip masks; throws
// std::out_of_range naming the problem before touching anything), computes each token's
// position, KV slot, sequence index and the query offsets, the tree's offsets and each layer's
// FFN rows, then grows the sequences (all or nothing; KvOutOfPages when the pool is full) and
// builds their page tables. rollback() restores the previous lengths (call it when the step
// fails after the plan was made).
struct StepPlan {
  std::vector<int32_t> pos, slot, bidx, qo, old_len;
  std::vector<int32_t> indptr, indices, last;
  bool has_tree = false;
  std::vector<int32_t> tree_indptr;  // (n_seqs+1,) offsets into batch.tree_mask
  // With a skip mask that skips something: layer l runs its FFN on ffn_count[l] rows, listed at
  // ffn_rows[l * n_tokens ...]. Empty: every row runs every FFN.
  std::vector<int32_t> ffn_rows, ffn_count;
  int32_t max_kv_len = 0, max_q_per_seq = 0;
  bool all_fresh = true;  // every sequence starts in this step (no cached prefix)
  StepPlan(KvCache& kv, const ForwardBatch& batch, const LlamaConfig& cfg, int32_t max_seq_len);
  void rollback(KvCache& kv, const ForwardBatch& batch) const;
};

class LlamaModel {
 public:
  // Takes ownership of the parsed file; validates architecture, hyper-parameters and every tensor
  // (names, shapes, types) and throws std::runtime_error naming the problem. Then repack(pool),
  // unless `repack_now` is false (the N-API binding repacks on a worker thread instead).
  explicit LlamaModel(std::unique_ptr<GgufFile> file, ThreadPool* pool = nullptr, bool repack_now = true);
  // On CPUs with the int8 path (AVX512-VNNI, and the AVX-512 kernel set active) repacks the
  // quantised matrices once, in parallel on `pool` when given, and drops their mapped pages; does
  // nothing otherwise or when already done. Must not run concurrently with forward().
  // `progress`, when given, is called after each layer with the fraction done (0..1].
  void repack(ThreadPool* pool, const std::function<void(double)>& progress = {});
  // Bytes of repacked weights held in memory (0 when nothing was repacked).
  int64_t packed_bytes() const { return packed_bytes_; }

  const LlamaConfig& config() const { return cfg_; }
  const GgufFile& file() const { return *file_; }
  // Types of the weight matrices, e.g. {"q8_0": 84, "f16": 12}.
  std::vector<std::pair<std::string, int>> weight_types() const;

  // The weights, for other backends (the CUDA model uploads them).
  const std::vector<LlamaLayer>& layers() const { return layers_; }
  const Weight& token_embedding() const { return tok_embd_; }
  const Weight& output() const { return output_; }
  const std::vector<float>& output_norm() const { return output_norm_; }

  // Runs the batch: appends its K/V to the sequences in `kv` (growing them) and writes the logits
  // of the wanted rows to logits (n_logit_rows, n_vocab). Throws on bad input (before touching
  // the cache) and KvOutOfPages when the pool is full; on any failure the sequences keep their
  // previous lengths.
  void forward(KvCache& kv, const ForwardBatch& batch, float* logits, ThreadPool& pool,
               int32_t max_seq_len) const;

 private:
  Weight weight(const std::string& name, int64_t k, int64_t n) const;
  std::vector<float> vector(const std::string& name, int64_t n) const;

  std::unique_ptr<GgufFile> file_;
  LlamaConfig cfg_;
  Weight tok_embd_, output_;
  std::vector<float> output_norm_;
  std::vector<LlamaLayer> layers_;
  int64_t packed_bytes_ = 0;
  bool repacked_ = false;
};

}  // namespace tessera
