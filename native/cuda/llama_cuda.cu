// CudaLlama: see tessera/cuda_llama.h. The CUDA backend of the one forward pass (native/model/forward.cc,
// the Backend interface of native/model/backend.h; the CPU model is its reference in
// native/test/cuda_model_test.cu). What is its own: the weights and activations in device memory,
// the step's index arrays uploaded in one copy, one stream per model (the only synchronisation is
// the final copy of the logits), the choice of attention kernel, and decode steps as CUDA graphs.
#include "tessera/cuda_llama.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "../model/backend.h"
#include "common.cuh"
#include "cuda_ops.h"
#include "tessera/cuda_api.h"

namespace tessera::cuda {
namespace {

// The model's stream, shared with the caches it makes (a cache may outlive the model): destroyed,
// with its scratch memory, when the last owner goes.
using StreamRef = std::shared_ptr<CUstream_st>;

StreamRef make_stream(int device) {
  cudaStream_t s = nullptr;
  TS_CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return StreamRef(s, [device](cudaStream_t st) {
    cudaSetDevice(device);
    release_stream_workspace(st);  // synchronises the stream first
    cudaStreamDestroy(st);
  });
}

// Page storage on the device: per layer one K and one V buffer of (num_pages, page_size, Hkv, D).
class DeviceKvStorage final : public KvStorage {
 public:
  DeviceKvStorage(const KvCacheConfig& c, StreamRef stream) : owner_(std::move(stream)), stream_(owner_.get()) {
    const size_t bytes = (size_t)dtype_bytes(c.dtype, (int64_t)c.num_pages * c.page_size * c.n_kv_heads * c.head_dim);
    for (int32_t l = 0; l < c.n_layers; l++) {
      try {
        k_.emplace_back(bytes);
        v_.emplace_back(bytes);
      } catch (const std::runtime_error& e) {
        throw std::runtime_error("out of GPU memory for the KV cache (" + std::to_string(c.num_pages) + " pages of " +
                                 std::to_string(c.page_size) + " tokens, " +
                                 std::to_string((2 * bytes * c.n_layers) >> 20) +
                                 " MiB; lower kvPages or contextSize): " + e.what());
      }
    }
  }
  void* k_pages(int32_t l) const override { return k_[l].get(); }
  void* v_pages(int32_t l) const override { return v_[l].get(); }
  void copy_page_prefix(int32_t dst, int32_t src, int64_t page_bytes, int64_t bytes) override {
    for (size_t l = 0; l < k_.size(); l++) {
      uint8_t* k = k_[l].as<uint8_t>();
      uint8_t* v = v_[l].as<uint8_t>();
      TS_CUDA_CHECK(cudaMemcpyAsync(k + dst * page_bytes, k + src * page_bytes, bytes, cudaMemcpyDeviceToDevice, stream_));
      TS_CUDA_CHECK(cudaMemcpyAsync(v + dst * page_bytes, v + src * page_bytes, bytes, cudaMemcpyDeviceToDevice, stream_));
    }
  }
  void compact(const PagedKv& tables, const int32_t* bidx, const int32_t* src, const int32_t* dst,
               int64_t n_moves) override {
    // the tables and moves in one upload: indptr (2), last (1), indices, then bidx / src / dst
    const int32_t P = tables.indptr[1];
    std::vector<int32_t> h(3 + P + 3 * n_moves);
    h[0] = tables.indptr[0], h[1] = tables.indptr[1], h[2] = tables.last_page_len[0];
    std::copy_n(tables.indices, P, h.begin() + 3);
    std::copy_n(bidx, n_moves, h.begin() + 3 + P);
    std::copy_n(src, n_moves, h.begin() + 3 + P + n_moves);
    std::copy_n(dst, n_moves, h.begin() + 3 + P + 2 * n_moves);
    DeviceBuffer d(h.size() * sizeof(int32_t));
    TS_CUDA_CHECK(cudaMemcpyAsync(d.get(), h.data(), h.size() * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
    const int32_t* dp = d.as<int32_t>();
    PagedKv kv = tables;
    kv.indptr = dp, kv.last_page_len = dp + 2, kv.indices = dp + 3;
    for (size_t l = 0; l < k_.size(); l++) {
      kv.k_pages = k_[l].get(), kv.v_pages = v_[l].get();
      cuda::kv_compact(stream_, dp + 3 + P, dp + 3 + P + n_moves, dp + 3 + P + 2 * n_moves, n_moves, kv);
    }
    TS_CUDA_CHECK(cudaStreamSynchronize(stream_));  // before `h` and `d` go
  }

 private:
  StreamRef owner_;
  cudaStream_t stream_;
  std::vector<DeviceBuffer> k_, v_;
};

size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

}  // namespace

struct CudaLlama::Impl final : public Backend {
  explicit Impl(const LlamaModel& model, int device);
  ~Impl() override;
  const void* upload(const void* host, size_t bytes, const std::string& what);
  WeightRef upload_weight(const Weight& w);
  const float* upload_vector(const std::vector<float>& v, const std::string& what);
  void ensure_capacity(int64_t tokens, int64_t logit_rows, int64_t seqs, int64_t pages, int64_t ffn_rows,
                       int64_t mask_words);

  // Backend
  bool host_memory() const override { return false; }
  void begin_step(const StepPlan& plan, const ForwardBatch& b, float* host_logits, StepArrays& a,
                  StepBuffers& m) override;
  void run(const StepPlan& plan, const PagedKv& layer0, const std::function<void()>& body) override;
  void finish(float* host_logits, const float* logits, int64_t n) override;
  const float* last_logits_ = nullptr;  // (last_rows_, V) on the device: the last step's logits
  int64_t last_rows_ = 0;
  void abort() noexcept override { cudaStreamSynchronize(stream_); }
  void embed(const WeightRef& t, const int32_t* tokens, int64_t n_tokens, float* out) override {
    cuda::embed(stream_, t.data, t.dtype, t.k, tokens, n_tokens, out);
  }
  void matmul(const float* x, int64_t m, int64_t k, const MatmulOut* outs, int count) override {
    for (int i = 0; i < count; i++) cuda::matmul(stream_, x, outs[i].w->data, outs[i].w->dtype, outs[i].y, m, outs[i].w->n, k);
  }
  void add_bias(float* y, const float* bias, int64_t rows, int64_t n) override { cuda::add_bias(stream_, y, bias, rows, n); }
  void rmsnorm(const float* x, const float* weight, float* y, int64_t rows, int64_t n, float eps) override {
    cuda::rmsnorm(stream_, x, weight, y, rows, n, eps);
  }
  void add_rmsnorm(float* x, const float* y, const float* weight, float* xn, int64_t rows, int64_t n,
                   float eps) override {
    cuda::add_rmsnorm(stream_, x, y, weight, xn, rows, n, eps);
  }
  void rope(float* x, const int32_t* positions, int64_t tokens, int32_t heads, int32_t head_dim,
            const RopeParams& p) override {
    cuda::rope(stream_, x, positions, tokens, heads, head_dim, p);
  }
  void swiglu(const float* gate, const float* up, float* y, int64_t n) override { cuda::swiglu(stream_, gate, up, y, n); }
  void kv_append(const float* k, const float* v, const int32_t* bidx, const int32_t* slots, int64_t tokens,
                 const PagedKv& kv) override {
    cuda::kv_append(stream_, k, v, bidx, slots, tokens, kv);
  }
  void attention(const float* q, const float* k, const float* v, const int32_t* qo, const PagedKv& kv,
                 const TreeMask* tree, float* o, const AttnShape& s, const StepPlan& plan) override;
  void gather_rows(const float* x, const int32_t* rows, int64_t n_rows, int64_t n, float* out) override {
    cuda::gather_rows(stream_, x, rows, n_rows, n, out);
  }
  void scatter_add_rows(float* x, const float* y, const int32_t* rows, int64_t n_rows, int64_t n) override {
    cuda::scatter_add_rows(stream_, x, y, rows, n_rows, n);
  }
  void top_k_rows(const float* x, int64_t rows, int64_t n, int k, int32_t* idx, float* val) override {
    cuda::top_k_rows(stream_, x, rows, n, k, idx, val);
  }
  void argmax_rows(const float* x, int64_t rows, int64_t n, int32_t* idx, float* val) override {
    cuda::argmax_rows(stream_, x, rows, n, idx, val);
  }

  // The step's device arrays, at offsets fixed by the capacities (so a captured graph stays valid
  // while the capacities do).
  struct Ints {
    int32_t *tokens, *pos, *slot, *bidx, *qo, *indptr, *last, *tree_indptr, *indices, *rows, *ffn_rows, *mask;
  };
  Ints ints_at(int32_t* base) const;
  size_t ints_count() const;

  // Decode steps (every sequence one token) as a CUDA graph: captured once per key, replayed while
  // the key holds. TESSERA_CUDA_GRAPHS=0 turns this off.
  struct GraphKey {
    int64_t tokens = -1, rows = -1, seqs = -1, layout = -1;
    int splits = -1, page_size = -1, num_pages = -1, kv_dtype = -1;
    const void *ws = nullptr, *kv = nullptr;
    bool operator==(const GraphKey& o) const {
      return tokens == o.tokens && rows == o.rows && seqs == o.seqs && layout == o.layout && splits == o.splits &&
             page_size == o.page_size && num_pages == o.num_pages && kv_dtype == o.kv_dtype && ws == o.ws && kv == o.kv;
    }
  };
  cudaGraphExec_t graph_ = nullptr;
  GraphKey graph_key_, last_key_;  // the captured step's key; the previous decode step's key
  int64_t layout_gen_ = 0;         // bumped whenever act_ or ints_ is reallocated
  bool graphs_ = true;
  int64_t graph_replays_ = 0, graph_captures_ = 0;

  LlamaConfig cfg_;
  int device_ = 0;
  std::string name_;
  StreamRef stream_ref_;
  cudaStream_t stream_ = nullptr;
  std::vector<DeviceBuffer> owned_;  // every weight and norm vector
  int64_t weight_bytes_ = 0;
  ModelWeights weights_;  // device pointers

  // Per-step memory, grown on demand and reused: activations, the step's index arrays (device and
  // a pinned host staging copy, uploaded with one copy) and the logits.
  DeviceBuffer act_, ints_;
  int32_t* host_ints_ = nullptr;
  size_t host_ints_bytes_ = 0;
  int64_t cap_int_tokens_ = 0, cap_int_rows_ = 0, cap_ffn_ = 0, cap_mask_words_ = 0;
  int64_t cap_tokens_ = 0, cap_rows_ = 0, cap_seqs_ = 0, cap_pages_ = 0;
  int64_t graph_rows_ = 0;     // this step's logit rows (for the decode graph's key)
};

CudaLlama::Impl::Impl(const LlamaModel& model, int device) : cfg_(model.config()) {
  const CudaProbe probe = cuda_probe();
  if (!probe.usable) throw std::runtime_error("CUDA is not usable: " + probe.reason);
  if (device < 0) TS_CUDA_CHECK(cudaGetDevice(&device));
  if (device >= (int)probe.devices.size())
    throw std::runtime_error("CUDA device " + std::to_string(device) + " does not exist (" +
                             std::to_string(probe.devices.size()) + " found)");
  const CudaDeviceInfo& d = probe.devices[device];
  if (d.cc_major * 10 + d.cc_minor < 75)
    throw std::runtime_error("CUDA device " + std::to_string(device) + " (" + d.name + ") has compute capability " +
                             std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor) + "; tessera needs 7.5 or newer");
  device_ = device;
  name_ = d.name;
  if (const char* e = std::getenv("TESSERA_CUDA_GRAPHS")) graphs_ = std::string(e) != "0";
  TS_CUDA_CHECK(cudaSetDevice(device_));
  stream_ref_ = make_stream(device_);
  stream_ = stream_ref_.get();
  try {
    weights_.tok_embd = upload_weight(model.token_embedding());
    weights_.output = model.output().data == model.token_embedding().data ? weights_.tok_embd : upload_weight(model.output());
    weights_.output_norm = upload_vector(model.output_norm(), "output_norm.weight");
    int li = 0;
    for (const LlamaLayer& L : model.layers()) {
      const std::string p = "blk." + std::to_string(li++) + ".";
      LayerWeights dl;
      dl.wq = upload_weight(L.wq), dl.wk = upload_weight(L.wk), dl.wv = upload_weight(L.wv);
      dl.wo = upload_weight(L.wo), dl.w_gate = upload_weight(L.w_gate), dl.w_up = upload_weight(L.w_up);
      dl.w_down = upload_weight(L.w_down);
      dl.attn_norm = upload_vector(L.attn_norm, p + "attn_norm.weight");
      dl.ffn_norm = upload_vector(L.ffn_norm, p + "ffn_norm.weight");
      if (cfg_.qkv_bias) {
        dl.bq = upload_vector(L.bq, p + "attn_q.bias");
        dl.bk = upload_vector(L.bk, p + "attn_k.bias");
        dl.bv = upload_vector(L.bv, p + "attn_v.bias");
      }
      weights_.layers.push_back(dl);
    }
    // The uploads ran on the legacy stream and may still be in flight; the model's stream does
    // not wait for that stream.
    TS_CUDA_CHECK(cudaDeviceSynchronize());
  } catch (...) {
    owned_.clear();
    throw;
  }
}

CudaLlama::Impl::~Impl() {
  cudaSetDevice(device_);
  cudaStreamSynchronize(stream_);
  if (graph_ != nullptr) cudaGraphExecDestroy(graph_);
  owned_.clear();
  act_.reset();
  ints_.reset();
  if (host_ints_ != nullptr) cudaFreeHost(host_ints_);

}

const void* CudaLlama::Impl::upload(const void* host, size_t bytes, const std::string& what) {
  DeviceBuffer b;
  try {
    b = DeviceBuffer(bytes);
  } catch (const std::runtime_error& e) {
    size_t free_b = 0, total_b = 0;
    cudaMemGetInfo(&free_b, &total_b);
    throw std::runtime_error("out of GPU memory copying '" + what + "' (" + std::to_string(bytes >> 20) +
                             " MiB; " + std::to_string(free_b >> 20) + " MiB free of " + std::to_string(total_b >> 20) +
                             " MiB on device " + std::to_string(device_) + "): " + e.what());
  }
  b.upload(host, bytes);
  weight_bytes_ += (int64_t)bytes;
  owned_.push_back(std::move(b));
  return owned_.back().get();
}

WeightRef CudaLlama::Impl::upload_weight(const Weight& w) {
  WeightRef d;
  d.dtype = w.dtype, d.n = w.n, d.k = w.k;
  d.data = upload(w.data, (size_t)dtype_bytes(w.dtype, w.n * w.k), w.name);
  return d;
}

const float* CudaLlama::Impl::upload_vector(const std::vector<float>& v, const std::string& what) {
  return static_cast<const float*>(upload(v.data(), v.size() * sizeof(float), what));
}

std::unique_ptr<KvCache> CudaLlama::make_cache(int32_t num_pages, int32_t page_size, DType dtype) const {
  const Impl& m = *impl_;
  KvCacheConfig c;
  c.n_layers = m.cfg_.n_layer;
  c.num_pages = num_pages;
  c.page_size = page_size;
  c.n_kv_heads = m.cfg_.n_head_kv;
  c.head_dim = m.cfg_.head_dim;
  c.dtype = dtype;
  KvCache::validate(c);  // before any device memory is taken
  TS_CUDA_CHECK(cudaSetDevice(m.device_));
  return std::make_unique<KvCache>(c, std::make_unique<DeviceKvStorage>(c, m.stream_ref_));
}

void CudaLlama::Impl::ensure_capacity(int64_t T, int64_t R, int64_t S, int64_t P, int64_t FR, int64_t MW) {
  if (T > cap_tokens_ || R > cap_rows_) {
    const int64_t t = std::max(T, cap_tokens_), r = std::max(R, cap_rows_);
    const int64_t E = cfg_.n_embd, Q = (int64_t)cfg_.n_head * cfg_.head_dim, KV = (int64_t)cfg_.n_head_kv * cfg_.head_dim;
    const size_t floats = round_up(t * E, 64) * 4 + round_up(t * Q, 64) * 2 + round_up(t * KV, 64) * 2 +
                          round_up(t * (int64_t)cfg_.n_ff, 64) * 2 + round_up(r * E, 64) +
                          round_up(r * (int64_t)cfg_.n_vocab, 64);
    act_.reset();
    cap_tokens_ = cap_rows_ = 0;
    try {
      act_ = DeviceBuffer(floats * sizeof(float));
    } catch (const std::runtime_error& e) {
      throw std::runtime_error("out of GPU memory for the activations of a " + std::to_string(T) +
                               "-token step (" + std::to_string((floats * 4) >> 20) + " MiB; run shorter steps): " + e.what());
    }
    cap_tokens_ = t, cap_rows_ = r;
    layout_gen_++;
  }
  if (T > cap_int_tokens_ || R > cap_int_rows_ || S > cap_seqs_ || P > cap_pages_ || FR > cap_ffn_ ||
      MW > cap_mask_words_ || host_ints_ == nullptr) {
    // grow with headroom: decode steps add a page now and then
    cap_int_tokens_ = std::max<int64_t>(T, cap_int_tokens_);
    cap_int_rows_ = std::max<int64_t>(R, cap_int_rows_);
    cap_seqs_ = std::max<int64_t>(S, cap_seqs_);
    cap_pages_ = std::max<int64_t>(P + P / 2 + 64, cap_pages_);
    cap_ffn_ = std::max<int64_t>(FR, cap_ffn_);
    cap_mask_words_ = std::max<int64_t>(MW, cap_mask_words_);
    const size_t bytes = ints_count() * sizeof(int32_t);
    ints_.reset();
    if (host_ints_ != nullptr) cudaFreeHost(host_ints_);
    host_ints_ = nullptr;
    ints_ = DeviceBuffer(bytes);
    TS_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&host_ints_), bytes, cudaHostAllocDefault));
    host_ints_bytes_ = bytes;
    layout_gen_++;
  }
}

size_t CudaLlama::Impl::ints_count() const {
  return (size_t)(4 * cap_int_tokens_ + 4 * (cap_seqs_ + 1) + cap_pages_ + cap_int_rows_ + cap_ffn_ + cap_mask_words_);
}

CudaLlama::Impl::Ints CudaLlama::Impl::ints_at(int32_t* base) const {
  Ints a;
  int32_t* p = base;
  auto take = [&](int64_t n) {
    int32_t* r = p;
    p += n;
    return r;
  };
  a.tokens = take(cap_int_tokens_), a.pos = take(cap_int_tokens_), a.slot = take(cap_int_tokens_);
  a.bidx = take(cap_int_tokens_);
  a.qo = take(cap_seqs_ + 1), a.indptr = take(cap_seqs_ + 1), a.last = take(cap_seqs_ + 1);
  a.tree_indptr = take(cap_seqs_ + 1);
  a.indices = take(cap_pages_), a.rows = take(cap_int_rows_), a.ffn_rows = take(cap_ffn_);
  a.mask = take(cap_mask_words_);
  return a;
}

void CudaLlama::Impl::begin_step(const StepPlan& plan, const ForwardBatch& b, float*, StepArrays& sa,
                                 StepBuffers& m) {
  const int64_t T = b.n_tokens, R = b.n_logit_rows, S = b.n_seqs, E = cfg_.n_embd, D = cfg_.head_dim;
  const int64_t Hq = cfg_.n_head, Hkv = cfg_.n_head_kv, F = cfg_.n_ff, V = cfg_.n_vocab;
  const int64_t mask_bytes = plan.has_tree ? b.tree_mask_len : 0, mask_words = (mask_bytes + 3) / 4;
  ensure_capacity(T, R, S, (int64_t)plan.indices.size(), (int64_t)plan.ffn_rows.size(), mask_words);

  // The step's index arrays: one upload from pinned memory, at offsets fixed by the capacities.
  const Ints h = ints_at(host_ints_), d = ints_at(ints_.as<int32_t>());
  std::memcpy(h.tokens, b.tokens, T * sizeof(int32_t));
  std::memcpy(h.pos, plan.pos.data(), T * sizeof(int32_t));
  std::memcpy(h.slot, plan.slot.data(), T * sizeof(int32_t));
  std::memcpy(h.bidx, plan.bidx.data(), T * sizeof(int32_t));
  std::memcpy(h.qo, plan.qo.data(), (S + 1) * sizeof(int32_t));
  std::memcpy(h.indptr, plan.indptr.data(), (S + 1) * sizeof(int32_t));
  std::memcpy(h.last, plan.last.data(), S * sizeof(int32_t));
  if (plan.has_tree) {
    std::memcpy(h.tree_indptr, plan.tree_indptr.data(), (S + 1) * sizeof(int32_t));
    std::memcpy(h.mask, b.tree_mask, (size_t)mask_bytes);
  }
  if (!plan.indices.empty()) std::memcpy(h.indices, plan.indices.data(), plan.indices.size() * sizeof(int32_t));
  if (R > 0) std::memcpy(h.rows, b.logit_rows, R * sizeof(int32_t));
  if (!plan.ffn_rows.empty()) std::memcpy(h.ffn_rows, plan.ffn_rows.data(), plan.ffn_rows.size() * sizeof(int32_t));
  TS_CUDA_CHECK(cudaMemcpyAsync(ints_.get(), host_ints_, ints_count() * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
  sa.tokens = d.tokens, sa.pos = d.pos, sa.slot = d.slot, sa.bidx = d.bidx, sa.qo = d.qo, sa.indptr = d.indptr;
  sa.indices = d.indices, sa.last = d.last, sa.rows = d.rows, sa.ffn_rows = d.ffn_rows;
  sa.tree = TreeMask{reinterpret_cast<const uint8_t*>(d.mask), d.tree_indptr};

  float* base = act_.as<float>();
  size_t at = 0;
  auto take = [&](int64_t n) {
    float* p = base + at;
    at += round_up((size_t)n, 64);
    return p;
  };
  const int64_t t = cap_tokens_, r = cap_rows_;  // carve with the capacity used to size act_
  m.x = take(t * E), m.xn = take(t * E), m.tmp = take(t * E), m.xa = take(t * E);
  m.q = take(t * Hq * D), m.att = take(t * Hq * D), m.k = take(t * Hkv * D), m.v = take(t * Hkv * D);
  m.g = take(t * F), m.u = take(t * F), m.xs = take(r * E), m.logits = take(r * V);
}

// A step in which every sequence starts from nothing (the Prepacking case) attends within the
// step's own keys; tensor cores need at least a tile's worth of tokens to pay off.
static bool fresh_step(const StepPlan& plan) { return plan.all_fresh && !plan.has_tree && plan.slot.size() >= 64; }

void CudaLlama::Impl::attention(const float* q, const float* k, const float* v, const int32_t* qo, const PagedKv& kv,
                                const TreeMask* tree, float* o, const AttnShape& s, const StepPlan& plan) {
  const int64_t T = (int64_t)plan.slot.size();
  if (fresh_step(plan)) {  // packed varlen prefill over this step's own K / V
    varlen_attention_hinted(stream_, q, k, v, o, VarlenBatch{qo, (int32_t)plan.old_len.size()}, s, VarlenHints{T});
  } else {
    PagedAttnHints hints;
    hints.total_q = T, hints.max_kv_len = plan.max_kv_len, hints.max_q_per_seq = plan.max_q_per_seq;
    paged_attention_hinted(stream_, q, qo, kv, tree, o, s, hints);
  }
}

void CudaLlama::Impl::run(const StepPlan& plan, const PagedKv& layer0, const std::function<void()>& body) {
  // Decode steps replay a graph: ~15 launches per layer cost more than their work at batch 1. A
  // step with a tree or a skip mask runs eagerly (its shape lives in host-side counts).
  const bool decode = graphs_ && plan.max_q_per_seq == 1 && !fresh_step(plan) && !plan.has_tree && plan.ffn_count.empty();
  if (!decode) return body();
  const int64_t T = (int64_t)plan.slot.size(), S = (int64_t)plan.old_len.size();
  const AttnShape shape{cfg_.n_head, cfg_.n_head_kv, cfg_.head_dim, 1.0f / std::sqrt((float)cfg_.head_dim)};
  PagedAttnHints hints;
  hints.total_q = T, hints.max_kv_len = plan.max_kv_len, hints.max_q_per_seq = plan.max_q_per_seq;
  const PagedAttnPlan ap = paged_attention_plan(layer0, shape, hints);
  GraphKey key;
  key.tokens = T, key.rows = graph_rows_, key.seqs = S, key.layout = layout_gen_, key.splits = ap.splits;
  key.page_size = layer0.page_size, key.num_pages = layer0.num_pages, key.kv_dtype = (int)layer0.kv_dtype;
  key.kv = layer0.k_pages;
  // reserve the scratch now: growing it inside a capture would synchronise the stream
  key.ws = ap.workspace_bytes > 0 ? stream_workspace(stream_, ap.workspace_bytes) : nullptr;
  const bool have = graph_ != nullptr && key == graph_key_;
  const bool seen = key == last_key_;  // capture on the second step with a key: the first one
  last_key_ = key;                     // ran eagerly (kernel attributes set, caches warm)
  if (!have && !seen) {
    body();
  } else if (!have) {
    if (graph_ != nullptr) cudaGraphExecDestroy(graph_);
    graph_ = nullptr;
    cudaGraph_t g = nullptr;
    TS_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
    try {
      body();
    } catch (...) {
      cudaStreamEndCapture(stream_, &g);
      if (g != nullptr) cudaGraphDestroy(g);
      cudaGetLastError();
      throw;
    }
    TS_CUDA_CHECK(cudaStreamEndCapture(stream_, &g));
    const cudaError_t err = cudaGraphInstantiate(&graph_, g, 0);
    cudaGraphDestroy(g);
    if (err != cudaSuccess) {
      graph_ = nullptr;
      throw_cuda_error(err, "cudaGraphInstantiate", __FILE__, __LINE__);
    }
    graph_key_ = key;
    graph_captures_++;
    TS_CUDA_CHECK(cudaGraphLaunch(graph_, stream_));
  } else {
    graph_replays_++;
    TS_CUDA_CHECK(cudaGraphLaunch(graph_, stream_));
  }
}

void CudaLlama::Impl::finish(float* host_logits, const float* logits, int64_t n) {
  last_logits_ = logits, last_rows_ = n / cfg_.n_vocab;  // for greedy_last_step
  if (n > 0 && host_logits) TS_CUDA_CHECK(cudaMemcpyAsync(host_logits, logits, sizeof(float) * n, cudaMemcpyDeviceToHost, stream_));
  TS_CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void CudaLlama::greedy_last_step(int32_t* tokens, double* logprobs) {
  Impl& m = *impl_;
  const int64_t R = m.last_rows_;
  if (R <= 0 || !m.last_logits_) return;
  TS_CUDA_CHECK(cudaSetDevice(m.device_));
  void* buf = nullptr;  // logprob (R,) f64, then idx (R,) i32
  TS_CUDA_CHECK(cudaMallocAsync(&buf, (size_t)R * (sizeof(double) + sizeof(int32_t)), m.stream_));
  double* dl = static_cast<double*>(buf);
  int32_t* di = reinterpret_cast<int32_t*>(dl + R);
  try {
    cuda::greedy_rows(m.stream_, m.last_logits_, R, m.cfg_.n_vocab, di, dl);
    TS_CUDA_CHECK(cudaMemcpyAsync(tokens, di, sizeof(int32_t) * R, cudaMemcpyDeviceToHost, m.stream_));
    TS_CUDA_CHECK(cudaMemcpyAsync(logprobs, dl, sizeof(double) * R, cudaMemcpyDeviceToHost, m.stream_));
  } catch (...) {
    cudaFreeAsync(buf, m.stream_);
    cudaStreamSynchronize(m.stream_);
    throw;
  }
  TS_CUDA_CHECK(cudaFreeAsync(buf, m.stream_));
  TS_CUDA_CHECK(cudaStreamSynchronize(m.stream_));
}

void CudaLlama::forward(KvCache& kv, const ForwardBatch& b, float* logits, int32_t max_seq_len) {
  Impl& m = *impl_;
  if (kv.on_host()) throw std::invalid_argument("CudaLlama::forward: the KV cache is in host memory; use make_cache()");
  const KvCacheConfig& kc = kv.config();
  if (kc.n_layers != m.cfg_.n_layer || kc.n_kv_heads != m.cfg_.n_head_kv || kc.head_dim != m.cfg_.head_dim)
    throw std::invalid_argument("CudaLlama::forward: the KV cache was made for another model");
  TS_CUDA_CHECK(cudaSetDevice(m.device_));
  m.graph_rows_ = b.n_logit_rows;
  forward_step(m, m.cfg_, m.weights_, kv, b, logits, max_seq_len);
}

CudaLlama::CudaLlama(const LlamaModel& model, int device) : impl_(std::make_unique<Impl>(model, device)) {}
CudaLlama::~CudaLlama() = default;
const LlamaConfig& CudaLlama::config() const { return impl_->cfg_; }
int CudaLlama::device() const { return impl_->device_; }
std::string CudaLlama::device_name() const { return impl_->name_; }
int64_t CudaLlama::weight_bytes() const { return impl_->weight_bytes_; }
CudaLlama::GraphStats CudaLlama::graph_stats() const {
  return {impl_->graphs_, impl_->graph_captures_, impl_->graph_replays_};
}
void CudaLlama::set_graphs(bool on) { impl_->graphs_ = on; }

}  // namespace tessera::cuda
