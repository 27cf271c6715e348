// The CPU backend of the forward pass: tessera::cpu ops on a thread pool, activations in host
// vectors sized per step, the logits written straight into the caller's array.
#pragma once

#include <memory>

#include "backend.h"
#include "tessera/llama.h"

namespace tessera {

class ThreadPool;

class CpuBackend final : public Backend {
 public:
  CpuBackend(ThreadPool& pool, const LlamaConfig& cfg) : pool_(pool), cfg_(cfg) {}
  bool host_memory() const override { return true; }
  void begin_step(const StepPlan& plan, const ForwardBatch& batch, float* host_logits, StepArrays& arrays,
                  StepBuffers& bufs) override;
  void run(const StepPlan&, const PagedKv&, const std::function<void()>& body) override { body(); }
  void finish(float* host_logits, const float* logits, int64_t n) override;
  void abort() noexcept override {}

  void embed(const WeightRef& table, const int32_t* tokens, int64_t n_tokens, float* out) override;
  void matmul(const float* x, int64_t m, int64_t k, const MatmulOut* outs, int count) override;
  void add_bias(float* y, const float* bias, int64_t rows, int64_t n) override;
  void rmsnorm(const float* x, const float* weight, float* y, int64_t rows, int64_t n, float eps) override;
  void add_rmsnorm(float* x, const float* y, const float* weight, float* xn, int64_t rows, int64_t n,
                   float eps) override;
  void rope(float* x, const int32_t* positions, int64_t tokens, int32_t heads, int32_t head_dim,
            const RopeParams& p) override;
  void swiglu(const float* gate, const float* up, float* y, int64_t n) override;
  void kv_append(const float* k, const float* v, const int32_t* batch_indices, const int32_t* slots, int64_t tokens,
                 const PagedKv& kv) override;
  void attention(const float* q, const float* k, const float* v, const int32_t* qo, const PagedKv& kv,
                 const TreeMask* tree, float* o, const AttnShape& s, const StepPlan& plan) override;
  void gather_rows(const float* x, const int32_t* rows, int64_t n_rows, int64_t n, float* out) override;
  void scatter_add_rows(float* x, const float* y, const int32_t* rows, int64_t n_rows, int64_t n) override;
  void top_k_rows(const float* x, int64_t rows, int64_t n, int k, int32_t* idx, float* val) override;
  void argmax_rows(const float* x, int64_t rows, int64_t n, int32_t* idx, float* val) override;

 private:
  ThreadPool& pool_;
  const LlamaConfig& cfg_;
  std::unique_ptr<float[]> act_;  // every activation of the step, carved by begin_step (not zeroed)
};

}  // namespace tessera
