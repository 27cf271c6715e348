// The Llama-family forward pass on a CUDA device: the weights of a loaded LlamaModel copied to the
// device as they are stored (quantised blocks stay quantised and are dequantised in registers by
// the matmuls), a KV cache whose pages live on the device, and forward() with the same contract as
// LlamaModel::forward (same validation, same rollback on failure, logits returned to the host).
// Plain C++ (no CUDA header): the N-API binding includes it; native/cuda/llama_cuda.cu implements
// it, and only binaries built with the CUDA backend (TESSERA_WITH_CUDA) link it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "tessera/kv_cache.h"
#include "tessera/llama.h"

namespace tessera::cuda {

class CudaLlama {
 public:
  // Copies the weights of `model` to device `device` (-1: the current device). Throws
  // std::runtime_error when no usable device exists (the probe's reason), when the device has
  // compute capability < 7.5, or when its memory cannot hold the weights (naming the tensor).
  // `model` is only read during construction.
  explicit CudaLlama(const LlamaModel& model, int device = -1);
  ~CudaLlama();
  CudaLlama(const CudaLlama&) = delete;
  CudaLlama& operator=(const CudaLlama&) = delete;

  // A cache for this model whose pages are on the device (throws naming the bad field, or when
  // the device memory cannot hold it).
  std::unique_ptr<KvCache> make_cache(int32_t num_pages, int32_t page_size, DType dtype = DType::F16) const;

  // One packed step (see LlamaModel::forward). `kv` must come from make_cache(). Synchronous:
  // returns when the logits (n_logit_rows, n_vocab) are in host memory.
  // `logits` may be null: the logits then stay on the device only (for greedy_last_step).
  void forward(KvCache& kv, const ForwardBatch& batch, float* logits, int32_t max_seq_len);

  // Greedy sampling on the device (cuda::greedy_rows, the native sampler's greedy path) of every
  // logit row the last forward() left there: tokens / logprobs (n_logit_rows,); a token of -1 means
  // every logit was -inf, -2 a NaN or +inf logit. Synchronous.
  void greedy_last_step(int32_t* tokens, double* logprobs);

  const LlamaConfig& config() const;
  int device() const;
  std::string device_name() const;
  int64_t weight_bytes() const;

  // Decode steps (every sequence one new token) run as a replayed CUDA graph once the same step
  // shape comes twice in a row; TESSERA_CUDA_GRAPHS=0 or set_graphs(false) turns that off.
  struct GraphStats {
    bool enabled;
    int64_t captures, replays;
  };
  GraphStats graph_stats() const;
  void set_graphs(bool on);

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace tessera::cuda
