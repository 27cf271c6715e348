// The Llama-family forward pass on a CUDA device: the weights of a loaded LlamaModel copied to the
// device as they are stored (quantised blocks stay quantised and are dequantised in registers by
// the matmul), a KV cache whose pages live on the device, and forward() with the same contract as
// LlamaModel::forward (same validation, same rollback on failure, logits returned to the host).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "common.cuh"
#include "tessera/kv_cache.h"
#include "tessera/llama.h"

namespace tessera::cuda {

class CudaLlama {
 public:
  // Copies the weights of `model` to device `device` (-1: the current device). Throws
  // std::runtime_error when no usable device exists (the probe's reason), when the device has
  // compute capability < 7.5, or when its memory cannot hold the weights (naming the tensor).
  // `model` must outlive this object only during construction.
  explicit CudaLlama(const LlamaModel& model, int device = -1);
  ~CudaLlama();
  CudaLlama(const CudaLlama&) = delete;
  CudaLlama& operator=(const CudaLlama&) = delete;

  // A cache for this model whose pages are on the device.
  std::unique_ptr<KvCache> make_cache(int32_t num_pages, int32_t page_size, DType dtype = DType::F16) const;

  // One packed step (see LlamaModel::forward). `kv` must come from make_cache(). Synchronous:
  // returns when the logits (n_logit_rows, n_vocab) are in host memory.
  void forward(KvCache& kv, const ForwardBatch& batch, float* logits, int32_t max_seq_len);

  const LlamaConfig& config() const { return cfg_; }
  int device() const { return device_; }
  int64_t weight_bytes() const { return weight_bytes_; }
  cudaStream_t stream() const { return stream_; }

 private:
  struct DevWeight {
    const void* data = nullptr;  // device
    DType dtype = DType::F32;
    int64_t n = 0, k = 0;
  };
  struct DevLayer {
    DevWeight wq, wk, wv, wo, w_gate, w_up, w_down;
    const float *attn_norm = nullptr, *ffn_norm = nullptr, *bq = nullptr, *bk = nullptr, *bv = nullptr;
  };
  const void* upload(const void* host, size_t bytes, const std::string& what);
  DevWeight upload_weight(const Weight& w);
  const float* upload_vector(const std::vector<float>& v, const std::string& what);
  void matmul(const float* x, const DevWeight& w, float* y, int64_t m) const;
  void ensure_capacity(int64_t tokens, int64_t logit_rows, size_t int_bytes);

  LlamaConfig cfg_;
  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  std::vector<DeviceBuffer> owned_;  // every weight and norm vector
  int64_t weight_bytes_ = 0;
  DevWeight tok_embd_, output_;
  const float* output_norm_ = nullptr;
  std::vector<DevLayer> layers_;

  // Per-step memory, grown on demand and reused: activations, the step's index arrays (device and
  // a pinned host staging copy, uploaded with one copy) and the logits.
  DeviceBuffer act_, ints_;
  int32_t* host_ints_ = nullptr;
  size_t host_ints_bytes_ = 0;
  int64_t cap_tokens_ = 0, cap_rows_ = 0;
};

}  // namespace tessera::cuda
