// The interface the one forward pass (native/model/forward.cc) runs on: the buffers of a step
// and the ops the Llama layer loop needs, each in the backend's memory. CpuBackend
// (native/model/cpu_backend.cc) calls tessera::cpu; the CUDA backend (native/cuda/llama_cuda.cu)
// enqueues tessera::cuda kernels on its stream and owns device buffers, graph capture and the
// choice between kernels (varlen / tensor-core prefill, split decode). No backend holds a model.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "tessera/layouts.h"
#include "tessera/ops.h"

namespace tessera {

class KvCache;
struct StepPlan;
struct ForwardBatch;
struct LlamaConfig;

// A weight matrix w (n, k) in the backend's memory. `packed` (CPU only): the int8 repack.
struct WeightRef {
  const void* data = nullptr;
  DType dtype = DType::F32;
  int64_t n = 0, k = 0;
  const cpu::PackedWeight* packed = nullptr;
};

// One layer's weights; the vectors are f32 (n_embd,) or the bias lengths, null when absent.
struct LayerWeights {
  WeightRef wq, wk, wv, wo, w_gate, w_up, w_down;
  const float *attn_norm = nullptr, *ffn_norm = nullptr, *bq = nullptr, *bk = nullptr, *bv = nullptr;
};

struct ModelWeights {
  WeightRef tok_embd, output;
  const float* output_norm = nullptr;
  std::vector<LayerWeights> layers;
};

// One output of a fused matmul: y (m, w.n) = x (m, k) · wᵀ.
struct MatmulOut {
  const WeightRef* w;
  float* y;
};

// The step's index arrays in the backend's memory (copies of the StepPlan's host arrays).
struct StepArrays {
  const int32_t* tokens = nullptr;    // (T,)
  const int32_t* pos = nullptr;       // (T,) rope positions
  const int32_t* slot = nullptr;      // (T,) KV slots: old length + i
  const int32_t* bidx = nullptr;      // (T,) sequence index of each token
  const int32_t* qo = nullptr;        // (S+1,) query offsets
  const int32_t* indptr = nullptr;    // (S+1,) page tables (CSR)
  const int32_t* indices = nullptr;   // (pages,)
  const int32_t* last = nullptr;      // (S,)
  const int32_t* rows = nullptr;      // (R,) logit rows
  const int32_t* ffn_rows = nullptr;  // (n_layer, T): layer l's FFN rows from ffn_rows + l*T (skip mask only)
  TreeMask tree;                      // mask (sum nq², u8) and indptr (S+1,), when the step has a tree
};

// The step's activations in the backend's memory (T tokens, R logit rows).
struct StepBuffers {
  float *x = nullptr, *xn = nullptr, *tmp = nullptr;  // (T, E): residual stream, its norm, a block output
  float *xa = nullptr;                                // (T, E): rows gathered for a partial FFN
  float *q = nullptr, *att = nullptr;                 // (T, Hq*D)
  float *k = nullptr, *v = nullptr;                   // (T, Hkv*D)
  float *g = nullptr, *u = nullptr;                   // (T, F)
  float *xs = nullptr;                                // (R, E)
  float *logits = nullptr;                            // (R, V)
};

class Backend {
 public:
  virtual ~Backend() = default;
  // Whether the backend computes in host memory (a host KvCache) or on a device (a device cache).
  virtual bool host_memory() const = 0;

  // Sizes the step's buffers and copies the plan's index arrays into backend memory. `host_logits`
  // (R, V) is where finish() leaves the logits (a host backend may write there directly).
  virtual void begin_step(const StepPlan& plan, const ForwardBatch& batch, float* host_logits, StepArrays& arrays,
                          StepBuffers& bufs) = 0;
  // Runs `body` (the layer loop, which enqueues ops): directly, or captured and replayed as a
  // graph when the backend knows an equal step. `layer0` is layer 0's PagedKv over `arrays`.
  virtual void run(const StepPlan& plan, const PagedKv& layer0, const std::function<void()>& body) = 0;
  // Copies the logits (n floats of bufs.logits) to host_logits and waits for the step to end.
  virtual void finish(float* host_logits, const float* logits, int64_t n) = 0;
  // After a failure: waits for whatever is in flight (never throws).
  virtual void abort() noexcept = 0;

  // The ops (tessera/ops.h semantics; pointers in backend memory).
  virtual void embed(const WeightRef& table, const int32_t* tokens, int64_t n_tokens, float* out) = 0;
  virtual void matmul(const float* x, int64_t m, int64_t k, const MatmulOut* outs, int count) = 0;
  virtual void add_bias(float* y, const float* bias, int64_t rows, int64_t n) = 0;
  virtual void rmsnorm(const float* x, const float* weight, float* y, int64_t rows, int64_t n, float eps) = 0;
  virtual void add_rmsnorm(float* x, const float* y, const float* weight, float* xn, int64_t rows, int64_t n,
                           float eps) = 0;
  virtual void rope(float* x, const int32_t* positions, int64_t tokens, int32_t heads, int32_t head_dim,
                    const RopeParams& p) = 0;
  virtual void swiglu(const float* gate, const float* up, float* y, int64_t n) = 0;
  virtual void kv_append(const float* k, const float* v, const int32_t* batch_indices, const int32_t* slots,
                         int64_t tokens, const PagedKv& kv) = 0;
  // Paged attention of the step's queries (q, and this step's own k / v, already appended); the
  // backend picks the kernel (e.g. packed varlen prefill when every sequence starts here).
  virtual void attention(const float* q, const float* k, const float* v, const int32_t* qo, const PagedKv& kv,
                         const TreeMask* tree, float* o, const AttnShape& s, const StepPlan& plan) = 0;
  virtual void gather_rows(const float* x, const int32_t* rows, int64_t n_rows, int64_t n, float* out) = 0;
  virtual void scatter_add_rows(float* x, const float* y, const int32_t* rows, int64_t n_rows, int64_t n) = 0;
  virtual void top_k_rows(const float* x, int64_t rows, int64_t n, int k, int32_t* idx, float* val) = 0;
  virtual void argmax_rows(const float* x, int64_t rows, int64_t n, int32_t* idx, float* val) = 0;
};

// The forward pass of one packed batch (see LlamaModel::forward) on `be`: plans the step (validation,
// growth of the sequences), runs the layer loop and leaves the logits of the wanted rows in
// `logits` (n_logit_rows, n_vocab). On any failure the sequences keep their previous lengths.
void forward_step(Backend& be, const LlamaConfig& cfg, const ModelWeights& w, KvCache& kv, const ForwardBatch& batch,
                  float* logits, int32_t max_seq_len);

}  // namespace tessera
