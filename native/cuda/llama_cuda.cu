// CudaLlama: see tessera/cuda_llama.h. The step mirrors LlamaModel::forward op for op (the CPU model is
// its reference in native/test/cuda_model_test.cu); differences: the residual add is fused with
// the following rmsnorm (add_rmsnorm), and activations stay f32 on the device. One stream per
// model; the only synchronisation is the final copy of the logits.
#include "tessera/cuda_llama.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "common.cuh"
#include "cuda_ops.h"
#include "model_kernels.h"
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

 private:
  StreamRef owner_;
  cudaStream_t stream_;
  std::vector<DeviceBuffer> k_, v_;
};

size_t round_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

}  // namespace

struct CudaLlama::Impl {
  struct DevWeight {
    const void* data = nullptr;  // device
    DType dtype = DType::F32;
    int64_t n = 0, k = 0;
  };
  struct DevLayer {
    DevWeight wq, wk, wv, wo, w_gate, w_up, w_down;
    const float *attn_norm = nullptr, *ffn_norm = nullptr, *bq = nullptr, *bk = nullptr, *bv = nullptr;
  };

  explicit Impl(const LlamaModel& model, int device);
  ~Impl();
  const void* upload(const void* host, size_t bytes, const std::string& what);
  DevWeight upload_weight(const Weight& w);
  const float* upload_vector(const std::vector<float>& v, const std::string& what);
  void matmul(const float* x, const DevWeight& w, float* y, int64_t m) const;
  void ensure_capacity(int64_t tokens, int64_t logit_rows, int64_t seqs, int64_t pages);
  void forward(KvCache& kv, const ForwardBatch& b, float* logits, int32_t max_seq_len);

  // The step's device arrays, at offsets fixed by the capacities (so a captured graph stays valid
  // while the capacities do).
  struct Ints {
    int32_t *tokens, *pos, *bidx, *qo, *indptr, *indices, *last, *rows;
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
  DevWeight tok_embd_, output_;
  const float* output_norm_ = nullptr;
  std::vector<DevLayer> layers_;

  // Per-step memory, grown on demand and reused: activations, the step's index arrays (device and
  // a pinned host staging copy, uploaded with one copy) and the logits.
  DeviceBuffer act_, ints_;
  int32_t* host_ints_ = nullptr;
  size_t host_ints_bytes_ = 0;
  int64_t cap_int_tokens_ = 0, cap_int_rows_ = 0;
  int64_t cap_tokens_ = 0, cap_rows_ = 0, cap_seqs_ = 0, cap_pages_ = 0;
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
    tok_embd_ = upload_weight(model.token_embedding());
    output_ = model.output().data == model.token_embedding().data ? tok_embd_ : upload_weight(model.output());
    output_norm_ = upload_vector(model.output_norm(), "output_norm.weight");
    int li = 0;
    for (const LlamaLayer& L : model.layers()) {
      const std::string p = "blk." + std::to_string(li++) + ".";
      DevLayer dl;
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
      layers_.push_back(dl);
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

CudaLlama::Impl::DevWeight CudaLlama::Impl::upload_weight(const Weight& w) {
  DevWeight d;
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

void CudaLlama::Impl::matmul(const float* x, const DevWeight& w, float* y, int64_t m) const {
  cuda::matmul(stream_, x, w.data, w.dtype, y, m, w.n, w.k);
}

void CudaLlama::Impl::ensure_capacity(int64_t T, int64_t R, int64_t S, int64_t P) {
  if (T > cap_tokens_ || R > cap_rows_) {
    const int64_t t = std::max(T, cap_tokens_), r = std::max(R, cap_rows_);
    const int64_t E = cfg_.n_embd, Q = (int64_t)cfg_.n_head * cfg_.head_dim, KV = (int64_t)cfg_.n_head_kv * cfg_.head_dim;
    const size_t floats = round_up(t * E, 64) * 3 + round_up(t * Q, 64) * 2 + round_up(t * KV, 64) * 2 +
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
  if (T > cap_int_tokens_ || R > cap_int_rows_ || S > cap_seqs_ || P > cap_pages_ || host_ints_ == nullptr) {
    // grow with headroom: decode steps add a page now and then
    cap_int_tokens_ = std::max<int64_t>(T, cap_int_tokens_);
    cap_int_rows_ = std::max<int64_t>(R, cap_int_rows_);
    cap_seqs_ = std::max<int64_t>(S, cap_seqs_);
    cap_pages_ = std::max<int64_t>(P + P / 2 + 64, cap_pages_);
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
  return (size_t)(3 * cap_int_tokens_ + 3 * (cap_seqs_ + 1) + cap_pages_ + cap_int_rows_);
}

CudaLlama::Impl::Ints CudaLlama::Impl::ints_at(int32_t* base) const {
  Ints a;
  int32_t* p = base;
  auto take = [&](int64_t n) {
    int32_t* r = p;
    p += n;
    return r;
  };
  a.tokens = take(cap_int_tokens_), a.pos = take(cap_int_tokens_), a.bidx = take(cap_int_tokens_);
  a.qo = take(cap_seqs_ + 1), a.indptr = take(cap_seqs_ + 1), a.last = take(cap_seqs_ + 1);
  a.indices = take(cap_pages_), a.rows = take(cap_int_rows_);
  return a;
}

void CudaLlama::Impl::forward(KvCache& kv, const ForwardBatch& b, float* logits, int32_t max_seq_len) {
  if (kv.on_host()) throw std::invalid_argument("CudaLlama::forward: the KV cache is in host memory; use make_cache()");
  const KvCacheConfig& kc = kv.config();
  if (kc.n_layers != cfg_.n_layer || kc.n_kv_heads != cfg_.n_head_kv || kc.head_dim != cfg_.head_dim)
    throw std::invalid_argument("CudaLlama::forward: the KV cache was made for another model");
  TS_CUDA_CHECK(cudaSetDevice(device_));
  const StepPlan plan(kv, b, cfg_.n_vocab, max_seq_len);
  try {
    const int64_t T = b.n_tokens, E = cfg_.n_embd, D = cfg_.head_dim, Hq = cfg_.n_head, Hkv = cfg_.n_head_kv;
    const int64_t F = cfg_.n_ff, V = cfg_.n_vocab, R = b.n_logit_rows, S = b.n_seqs;
    if (T == 0) return;
    ensure_capacity(T, R, S, (int64_t)plan.indices.size());

    // The step's index arrays: one upload from pinned memory, at offsets fixed by the capacities.
    const Ints h = ints_at(host_ints_), d = ints_at(ints_.as<int32_t>());
    std::memcpy(h.tokens, b.tokens, T * sizeof(int32_t));
    std::memcpy(h.pos, plan.pos.data(), T * sizeof(int32_t));
    std::memcpy(h.bidx, plan.bidx.data(), T * sizeof(int32_t));
    std::memcpy(h.qo, plan.qo.data(), (S + 1) * sizeof(int32_t));
    std::memcpy(h.indptr, plan.indptr.data(), (S + 1) * sizeof(int32_t));
    std::memcpy(h.last, plan.last.data(), S * sizeof(int32_t));
    if (!plan.indices.empty()) std::memcpy(h.indices, plan.indices.data(), plan.indices.size() * sizeof(int32_t));
    if (R > 0) std::memcpy(h.rows, b.logit_rows, R * sizeof(int32_t));
    TS_CUDA_CHECK(cudaMemcpyAsync(ints_.get(), host_ints_, ints_count() * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));

    float* base = act_.as<float>();
    size_t at = 0;
    auto take = [&](int64_t n) {
      float* p = base + at;
      at += round_up((size_t)n, 64);
      return p;
    };
    const int64_t t = cap_tokens_, r = cap_rows_;  // carve with the capacity used to size act_
    float *x = take(t * E), *xn = take(t * E), *tmp = take(t * E);
    float *q = take(t * Hq * D), *att = take(t * Hq * D), *k = take(t * Hkv * D), *v = take(t * Hkv * D);
    float *g = take(t * F), *u = take(t * F), *xs = take(r * E), *dlogits = take(r * V);

    const AttnShape shape{(int32_t)Hq, (int32_t)Hkv, (int32_t)D, 1.0f / std::sqrt((float)D)};
    PagedAttnHints hints;
    hints.total_q = T;
    // A step in which every sequence starts from nothing (the Prepacking case) attends within the
    // step's own keys; tensor cores need at least a tile's worth of tokens to pay off.
    bool fresh = T >= 64;
    for (int32_t s = 0; s < S; s++) {
      fresh = fresh && plan.old_len[s] == 0;
      hints.max_kv_len = std::max(hints.max_kv_len, plan.old_len[s] + b.seq_n_tokens[s]);
      hints.max_q_per_seq = std::max(hints.max_q_per_seq, b.seq_n_tokens[s]);
    }
    auto layer_kv = [&](size_t l) {
      PagedKv pk = kv.layer((int32_t)l, plan.indptr, plan.indices, plan.last);  // host tables ...
      pk.indptr = d.indptr, pk.indices = d.indices, pk.last_page_len = d.last;  // ... on the device
      return pk;
    };

    // Everything between the upload and the logits copy: enqueued directly, or captured as a graph.
    auto run = [&] {
      embed(stream_, tok_embd_.data, tok_embd_.dtype, E, d.tokens, T, x);
      rmsnorm(stream_, x, layers_[0].attn_norm, xn, T, E, cfg_.rms_eps);
      for (size_t l = 0; l < layers_.size(); l++) {
        const DevLayer& L = layers_[l];
        matmul(xn, L.wq, q, T);
        matmul(xn, L.wk, k, T);
        matmul(xn, L.wv, v, T);
        if (cfg_.qkv_bias) {
          add_bias(stream_, q, L.bq, T, Hq * D);
          add_bias(stream_, k, L.bk, T, Hkv * D);
          add_bias(stream_, v, L.bv, T, Hkv * D);
        }
        rope(stream_, q, d.pos, T, (int32_t)Hq, (int32_t)D, cfg_.rope);
        rope(stream_, k, d.pos, T, (int32_t)Hkv, (int32_t)D, cfg_.rope);
        const PagedKv pk = layer_kv(l);
        kv_append(stream_, k, v, d.bidx, d.pos, T, pk);
        if (fresh) {  // every sequence starts here: packed varlen prefill over this step's own K / V
          varlen_attention_hinted(stream_, q, k, v, att, VarlenBatch{d.qo, (int32_t)S}, shape, VarlenHints{T});
        } else {
          paged_attention_hinted(stream_, q, d.qo, pk, nullptr, att, shape, hints);
        }
        matmul(att, L.wo, tmp, T);
        add_rmsnorm(stream_, x, tmp, L.ffn_norm, xn, T, E, cfg_.rms_eps);
        matmul(xn, L.w_gate, g, T);
        matmul(xn, L.w_up, u, T);
        swiglu(stream_, g, u, g, T * F);
        matmul(g, L.w_down, tmp, T);
        const float* next_norm = l + 1 < layers_.size() ? layers_[l + 1].attn_norm : output_norm_;
        add_rmsnorm(stream_, x, tmp, next_norm, xn, T, E, cfg_.rms_eps);
      }
      if (R > 0) {
        gather_rows(stream_, xn, d.rows, R, E, xs);  // xn holds the output-normed rows now
        matmul(xs, output_, dlogits, R);
      }
    };

    // Decode steps replay a graph: ~15 launches per layer cost more than their work at batch 1.
    const bool decode = graphs_ && hints.max_q_per_seq == 1 && !fresh;
    if (decode) {
      const PagedAttnPlan ap = paged_attention_plan(layer_kv(0), shape, hints);
      GraphKey key;
      key.tokens = T, key.rows = R, key.seqs = S, key.layout = layout_gen_, key.splits = ap.splits;
      key.page_size = kc.page_size, key.num_pages = kc.num_pages, key.kv_dtype = (int)kc.dtype;
      key.kv = layer_kv(0).k_pages;
      // reserve the scratch now: growing it inside a capture would synchronise the stream
      key.ws = ap.workspace_bytes > 0 ? stream_workspace(stream_, ap.workspace_bytes) : nullptr;
      const bool have = graph_ != nullptr && key == graph_key_;
      const bool seen = key == last_key_;  // capture on the second step with a key: the first one
      last_key_ = key;                     // ran eagerly (kernel attributes set, caches warm)
      if (!have && !seen) {
        run();
      } else if (!have) {
        if (graph_ != nullptr) cudaGraphExecDestroy(graph_);
        graph_ = nullptr;
        cudaGraph_t g = nullptr;
        TS_CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
        try {
          run();
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
    } else {
      run();
    }
    if (R > 0)
      TS_CUDA_CHECK(cudaMemcpyAsync(logits, dlogits, sizeof(float) * R * V, cudaMemcpyDeviceToHost, stream_));
    TS_CUDA_CHECK(cudaStreamSynchronize(stream_));
  } catch (...) {
    cudaStreamSynchronize(stream_);
    plan.rollback(kv, b);
    throw;
  }
}

CudaLlama::CudaLlama(const LlamaModel& model, int device) : impl_(std::make_unique<Impl>(model, device)) {}
CudaLlama::~CudaLlama() = default;
void CudaLlama::forward(KvCache& kv, const ForwardBatch& b, float* logits, int32_t max_seq_len) {
  impl_->forward(kv, b, logits, max_seq_len);
}
const LlamaConfig& CudaLlama::config() const { return impl_->cfg_; }
int CudaLlama::device() const { return impl_->device_; }
std::string CudaLlama::device_name() const { return impl_->name_; }
int64_t CudaLlama::weight_bytes() const { return impl_->weight_bytes_; }
CudaLlama::GraphStats CudaLlama::graph_stats() const {
  return {impl_->graphs_, impl_->graph_captures_, impl_->graph_replays_};
}
void CudaLlama::set_graphs(bool on) { impl_->graphs_ = on; }

}  // namespace tessera::cuda
