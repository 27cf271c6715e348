// LlamaModel: reads the hyper-parameters and weights of a llama / qwen2 GGUF, and runs the
// forward pass of one packed batch (native/model/forward.cc) on the CPU backend.
#include "tessera/llama.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <new>
#include <stdexcept>

#include "../cpu/qmatmul.h"
#include "cpu_backend.h"
#include "tessera/check.h"
#include "tessera/threadpool.h"

namespace tessera {
namespace {

[[noreturn]] void fail(const GgufFile& f, const std::string& what) {
  throw std::runtime_error(f.path() + ": " + what);
}

bool matmul_supported(DType t) {
  switch (t) {
    case DType::F32: case DType::F16: case DType::BF16: case DType::Q8_0: case DType::Q4_0:
    case DType::Q4_K: case DType::Q6_K: return true;
    default: return false;
  }
}

}  // namespace

Weight LlamaModel::weight(const std::string& name, int64_t k, int64_t n) const {
  const GgufTensor* t = file_->find_tensor(name);
  if (t == nullptr) fail(*file_, "missing tensor '" + name + "'");
  if (t->shape.size() != 2 || t->shape[0] != k || t->shape[1] != n)
    fail(*file_, "tensor '" + name + "' has shape [" + std::to_string(t->shape.empty() ? 0 : t->shape[0]) +
                     (t->shape.size() > 1 ? ", " + std::to_string(t->shape[1]) : "") + "], expected [" +
                     std::to_string(k) + ", " + std::to_string(n) + "]");
  if (!t->supported || !matmul_supported(t->dtype))
    fail(*file_, "tensor '" + name + "' has type " + t->type_name() +
                     ", which tessera cannot run yet (supported: f32, f16, bf16, q8_0, q4_0, q4_k, q6_k)");
  try {
    check_matmul(t->dtype, k);
  } catch (const ArgError& e) {
    fail(*file_, "tensor '" + name + "': " + e.what());
  }
  return Weight{t->data, t->dtype, n, k, name};
}

std::vector<float> LlamaModel::vector(const std::string& name, int64_t n) const {
  const GgufTensor* t = file_->find_tensor(name);
  if (t == nullptr) fail(*file_, "missing tensor '" + name + "'");
  if (t->n_elements != n || t->shape.size() != 1)
    fail(*file_, "tensor '" + name + "' must be a vector of " + std::to_string(n) + " elements");
  if (!t->supported || (t->dtype != DType::F32 && t->dtype != DType::F16 && t->dtype != DType::BF16))
    fail(*file_, "tensor '" + name + "' has type " + t->type_name() + ", expected f32, f16 or bf16");
  std::vector<float> out(n);
  ref::convert(t->data, t->dtype, out.data(), DType::F32, n);
  return out;
}

LlamaModel::LlamaModel(std::unique_ptr<GgufFile> file, ThreadPool* pool, bool repack_now) : file_(std::move(file)) {
  const GgufFile& f = *file_;
  cfg_.arch = f.get_string("general.architecture");
  if (cfg_.arch != "llama" && cfg_.arch != "qwen2")
    fail(f, "unsupported architecture '" + cfg_.arch + "' (supported: llama, qwen2)");
  const std::string a = cfg_.arch + ".";
  cfg_.name = f.get_string("general.name");
  auto need_u32 = [&](const std::string& key) {
    if (!f.has(key)) fail(f, "missing metadata key '" + key + "'");
    const uint32_t v = f.get_u32(key);
    if (v == 0 || v > (1u << 24)) fail(f, "metadata '" + key + "' = " + std::to_string(v) + " is out of range");
    return (int32_t)v;
  };
  cfg_.n_embd = need_u32(a + "embedding_length");
  cfg_.n_layer = need_u32(a + "block_count");
  cfg_.n_ff = need_u32(a + "feed_forward_length");
  cfg_.n_head = need_u32(a + "attention.head_count");
  cfg_.n_head_kv = f.has(a + "attention.head_count_kv") ? need_u32(a + "attention.head_count_kv") : cfg_.n_head;
  cfg_.head_dim = f.has(a + "attention.key_length") ? need_u32(a + "attention.key_length") : cfg_.n_embd / cfg_.n_head;
  if (cfg_.n_head % cfg_.n_head_kv != 0)
    fail(f, "head_count (" + std::to_string(cfg_.n_head) + ") is not a multiple of head_count_kv (" +
                std::to_string(cfg_.n_head_kv) + ")");
  if (f.has(a + "attention.value_length") && (int32_t)f.get_u32(a + "attention.value_length") != cfg_.head_dim)
    fail(f, "attention.value_length differs from key_length (not supported)");
  cfg_.n_ctx_train = (int32_t)f.get_u32(a + "context_length", 2048);
  cfg_.rms_eps = f.get_f32(a + "attention.layer_norm_rms_epsilon", 1e-5f);
  if (!(cfg_.rms_eps > 0.f)) fail(f, "layer_norm_rms_epsilon must be > 0");

  cfg_.rope.mode = cfg_.arch == "qwen2" ? RopeMode::NeoX : RopeMode::Normal;
  cfg_.rope.theta_base = f.get_f32(a + "rope.freq_base", 10000.f);
  cfg_.rope.n_rot = (int32_t)f.get_u32(a + "rope.dimension_count", (uint32_t)cfg_.head_dim);
  const std::string scaling = f.get_string(a + "rope.scaling.type", "none");
  const float factor = f.get_f32(a + "rope.scaling.factor", 0.f);
  if (scaling == "linear" && factor > 0.f) cfg_.rope.freq_scale = 1.f / factor;
  else if (scaling != "none" && scaling != "linear")
    fail(f, "rope scaling '" + scaling + "' is not supported yet (supported: none, linear)");
  if (f.find_tensor("rope_freqs.weight"))
    fail(f, "per-dimension rope frequency factors (rope_freqs.weight, Llama 3.1 long context) are not supported yet");
  try {
    check_rope(cfg_.rope, cfg_.head_dim);
  } catch (const ArgError& e) {
    fail(f, e.what());
  }

  const int64_t E = cfg_.n_embd, D = cfg_.head_dim, Hq = cfg_.n_head, Hkv = cfg_.n_head_kv, F = cfg_.n_ff;
  const GgufTensor* emb = f.find_tensor("token_embd.weight");
  if (emb == nullptr || emb->shape.size() != 2) fail(f, "missing or malformed tensor 'token_embd.weight'");
  cfg_.n_vocab = (int32_t)emb->shape[1];
  tok_embd_ = weight("token_embd.weight", E, cfg_.n_vocab);
  output_norm_ = vector("output_norm.weight", E);
  cfg_.tied_output = f.find_tensor("output.weight") == nullptr;
  output_ = cfg_.tied_output ? tok_embd_ : weight("output.weight", E, cfg_.n_vocab);
  cfg_.qkv_bias = f.find_tensor("blk.0.attn_q.bias") != nullptr;

  layers_.resize(cfg_.n_layer);
  for (int32_t l = 0; l < cfg_.n_layer; l++) {
    const std::string p = "blk." + std::to_string(l) + ".";
    LlamaLayer& L = layers_[l];
    L.attn_norm = vector(p + "attn_norm.weight", E);
    L.ffn_norm = vector(p + "ffn_norm.weight", E);
    L.wq = weight(p + "attn_q.weight", E, Hq * D);
    L.wk = weight(p + "attn_k.weight", E, Hkv * D);
    L.wv = weight(p + "attn_v.weight", E, Hkv * D);
    L.wo = weight(p + "attn_output.weight", Hq * D, E);
    L.w_gate = weight(p + "ffn_gate.weight", E, F);
    L.w_up = weight(p + "ffn_up.weight", E, F);
    L.w_down = weight(p + "ffn_down.weight", F, E);
    if (cfg_.qkv_bias) {
      L.bq = vector(p + "attn_q.bias", Hq * D);
      L.bk = vector(p + "attn_k.bias", Hkv * D);
      L.bv = vector(p + "attn_v.bias", Hkv * D);
    }
  }

  if (repack_now) repack(pool);
}

void LlamaModel::repack(ThreadPool* pool, const std::function<void(double)>& progress) {
  if (repacked_) return;
  repacked_ = true;
  // The mapped originals are then not read (unless the kernel set is switched later), so their
  // pages are dropped to keep memory near file size.
  if (cpu::int8_path_active()) {
    auto pack = [&](Weight& w, bool drop) {
      if (!cpu::packable(w.dtype)) return;
      std::unique_ptr<cpu::PackedWeight> pw;
      try {
        pw = cpu::pack_weight(w.data, w.dtype, w.n, w.k, pool);
      } catch (const std::bad_alloc&) {
        fail(*file_, "out of memory repacking tensor '" + w.name + "' (" +
                         std::to_string(dtype_bytes(w.dtype, w.n * w.k) >> 20) +
                         " MiB; TESSERA_CPU_ISA=avx2 runs the file's own layout without a copy)");
      }
      if (!pw) return;  // a scale f16 cannot hold: keep using the original rows
      packed_bytes_ += pw->bytes();
      w.packed = std::move(pw);
      if (drop) file_->drop_pages(w.data, (size_t)dtype_bytes(w.dtype, w.n * w.k));
    };
    const size_t steps = layers_.size() + 1;
    for (size_t l = 0; l < layers_.size(); l++) {
      LlamaLayer& L = layers_[l];
      for (Weight* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) pack(*w, true);
      if (progress) progress((double)(l + 1) / (double)steps);
    }
    pack(output_, /*drop=*/!cfg_.tied_output);  // tied: token_embd rows are still looked up
  }
  if (progress) progress(1.0);
}

std::vector<std::pair<std::string, int>> LlamaModel::weight_types() const {
  std::map<std::string, int> count;
  auto add = [&](const Weight& w) { count[dtype_info(w.dtype).name]++; };
  add(tok_embd_);
  if (!cfg_.tied_output) add(output_);
  for (const LlamaLayer& L : layers_)
    for (const Weight* w : {&L.wq, &L.wk, &L.wv, &L.wo, &L.w_gate, &L.w_up, &L.w_down}) add(*w);
  return {count.begin(), count.end()};
}

namespace {

WeightRef ref_of(const Weight& w) { return WeightRef{w.data, w.dtype, w.n, w.k, w.packed.get()}; }

}  // namespace

void LlamaModel::forward(KvCache& kv, const ForwardBatch& b, float* logits, ThreadPool& pool,
                         int32_t max_seq_len) const {
  if (!kv.on_host()) throw_type("forward: this KV cache keeps its pages on a GPU; the CPU model needs a host cache");
  ModelWeights w;  // a view of the host weights (repack() may have added packed copies)
  w.tok_embd = ref_of(tok_embd_), w.output = ref_of(output_), w.output_norm = output_norm_.data();
  w.layers.resize(layers_.size());
  for (size_t l = 0; l < layers_.size(); l++) {
    const LlamaLayer& L = layers_[l];
    LayerWeights& d = w.layers[l];
    d.wq = ref_of(L.wq), d.wk = ref_of(L.wk), d.wv = ref_of(L.wv), d.wo = ref_of(L.wo);
    d.w_gate = ref_of(L.w_gate), d.w_up = ref_of(L.w_up), d.w_down = ref_of(L.w_down);
    d.attn_norm = L.attn_norm.data(), d.ffn_norm = L.ffn_norm.data();
    if (cfg_.qkv_bias) d.bq = L.bq.data(), d.bk = L.bk.data(), d.bv = L.bv.data();
  }
  CpuBackend be(pool, cfg_);
  forward_step(be, cfg_, w, kv, b, logits, max_seq_len);
}

}  // namespace tessera
