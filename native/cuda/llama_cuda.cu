// CudaLlama: see tessera/cuda_llama.h. The step mirrors LlamaModel::forward op for op (the CPU model is
// its reference in native/test/cuda_model_test.cu); differences: the residual add is fused with
// the following rmsnorm (add_rmsnorm), and activations stay f32 on the device. One stream per
// model; the only synchronisation is the final copy of the logits.
#include "tessera/cuda_llama.h"

#include <algorithm>
#include <cmath>
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
  void ensure_capacity(int64_t tokens, int64_t logit_rows, size_t int_bytes);
  void forward(KvCache& kv, const ForwardBatch& b, float* logits, int32_t max_seq_len);

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
  int64_t cap_tokens_ = 0, cap_rows_ = 0;
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

void CudaLlama::Impl::ensure_capacity(int64_t T, int64_t R, size_t int_bytes) {
  if (T > cap_tokens_ || R > cap_rows_) {
    const int64_t t = std::max(T, cap_tokens_), r = std::max(R, cap_rows_);
    const int64_t E = cfg_.n_embd, Q = (int64_t)cfg_.n_head * cfg_.head_dim, KV = (int64_t)cfg_.n_head_kv * cfg_.head_dim;
    const size_t floats = round_up(t * E, 64) * 3 + round_up(t * Q, 64) * 2 + round_up(t * KV, 64) * 2 +
                          round_up(t * (int64_t)cfg_.n_ff, 64) * 2 + round_up(r * E, 64) +
                          round_up(r * (int64_t)cfg_.n_vocab, 64);
    act_.reset();
    try {
      act_ = DeviceBuffer(floats * sizeof(float));
    } catch (const std::runtime_error& e) {
      cap_tokens_ = cap_rows_ = 0;
      throw std::runtime_error("out of GPU memory for the activations of a " + std::to_string(T) +
                               "-token step (" + std::to_string((floats * 4) >> 20) + " MiB; run shorter steps): " + e.what());
    }
    cap_tokens_ = t, cap_rows_ = r;
  }
  if (int_bytes > host_ints_bytes_) {
    const size_t bytes = std::max(int_bytes, (size_t)4096) * 2;
    ints_.reset();
    ints_ = DeviceBuffer(bytes);
    if (host_ints_ != nullptr) cudaFreeHost(host_ints_);
    host_ints_ = nullptr;
    host_ints_bytes_ = 0;
    TS_CUDA_CHECK(cudaHostAlloc(reinterpret_cast<void**>(&host_ints_), bytes, cudaHostAllocDefault));
    host_ints_bytes_ = bytes;
  }
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

    // The step's index arrays, packed into one upload.
    const size_t n_ints = 3 * T + 2 * (S + 1) + plan.indices.size() + S + R;
    ensure_capacity(T, R, n_ints * sizeof(int32_t));
    int32_t* h = host_ints_;
    size_t off = 0;
    auto put = [&](const int32_t* src, size_t n) {
      const size_t at = off;
      if (n > 0) std::memcpy(h + off, src, n * sizeof(int32_t));
      off += n;
      return ints_.as<int32_t>() + at;
    };
    const int32_t* d_tokens = put(b.tokens, T);
    const int32_t* d_pos = put(plan.pos.data(), T);
    const int32_t* d_bidx = put(plan.bidx.data(), T);
    const int32_t* d_qo = put(plan.qo.data(), S + 1);
    const int32_t* d_indptr = put(plan.indptr.data(), S + 1);
    const int32_t* d_indices = put(plan.indices.data(), plan.indices.size());
    const int32_t* d_last = put(plan.last.data(), S);
    const int32_t* d_rows = put(b.logit_rows, R);
    TS_CUDA_CHECK(cudaMemcpyAsync(ints_.get(), h, off * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));

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
    for (int32_t s = 0; s < S; s++) fresh = fresh && plan.old_len[s] == 0;
    for (int32_t s = 0; s < S; s++) {
      hints.max_kv_len = std::max(hints.max_kv_len, plan.old_len[s] + b.seq_n_tokens[s]);
      hints.max_q_per_seq = std::max(hints.max_q_per_seq, b.seq_n_tokens[s]);
    }
    embed(stream_, tok_embd_.data, tok_embd_.dtype, E, d_tokens, T, x);
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
      rope(stream_, q, d_pos, T, (int32_t)Hq, (int32_t)D, cfg_.rope);
      rope(stream_, k, d_pos, T, (int32_t)Hkv, (int32_t)D, cfg_.rope);
      PagedKv pk = kv.layer((int32_t)l, plan.indptr, plan.indices, plan.last);  // host tables ...
      pk.indptr = d_indptr, pk.indices = d_indices, pk.last_page_len = d_last;  // ... on the device
      kv_append(stream_, k, v, d_bidx, d_pos, T, pk);
      if (fresh) {  // every sequence starts here: packed varlen prefill over this step's own K / V
        varlen_attention_hinted(stream_, q, k, v, att, VarlenBatch{d_qo, (int32_t)S}, shape, VarlenHints{T});
      } else {
        paged_attention_hinted(stream_, q, d_qo, pk, nullptr, att, shape, hints);
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
      gather_rows(stream_, xn, d_rows, R, E, xs);  // xn holds the output-normed rows now
      matmul(xs, output_, dlogits, R);
      TS_CUDA_CHECK(cudaMemcpyAsync(logits, dlogits, sizeof(float) * R * V, cudaMemcpyDeviceToHost, stream_));
    }
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

}  // namespace tessera::cuda
