// LlamaModel: reads the hyper-parameters and weights of a llama / qwen2 GGUF, and runs the
// forward pass of one packed batch (prefill, decode and mixed steps are the same call).
#include "tessera/llama.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <new>
#include <stdexcept>

#include "../cpu/qmatmul.h"
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

void add_bias(float* y, const std::vector<float>& b, int64_t rows) {
  const int64_t n = (int64_t)b.size();
  for (int64_t r = 0; r < rows; r++)
    for (int64_t i = 0; i < n; i++) y[r * n + i] += b[i];
}

void add_into(float* x, const float* y, int64_t n) {
  for (int64_t i = 0; i < n; i++) x[i] += y[i];
}

}  // namespace

StepPlan::StepPlan(KvCache& kv, const ForwardBatch& b, int32_t n_vocab, int32_t max_seq_len) {
  const int64_t T = b.n_tokens, V = n_vocab;
  if (b.n_seqs < 0 || T < 0) throw_range("forward: negative batch size");
  int64_t total = 0;
  for (int32_t s = 0; s < b.n_seqs; s++) {
    if (b.seq_n_tokens[s] < 1) throw_range("forward: every sequence in a step needs at least one token");
    if (!kv.has_sequence(b.seq_ids[s])) throw_range("forward: unknown sequence id " + std::to_string(b.seq_ids[s]));
    const int64_t end = (int64_t)kv.length(b.seq_ids[s]) + b.seq_n_tokens[s];
    if (end > max_seq_len)
      throw_range("forward: sequence " + std::to_string(b.seq_ids[s]) + " would reach " + std::to_string(end) +
                  " tokens, more than the context size (" + std::to_string(max_seq_len) + ")");
    total += b.seq_n_tokens[s];
  }
  if (total != T) throw_range("forward: the sequences' token counts add up to " + std::to_string(total) + ", not " + std::to_string(T));
  for (int64_t t = 0; t < T; t++)
    if (b.tokens[t] < 0 || b.tokens[t] >= V)
      throw_range("forward: token id " + std::to_string(b.tokens[t]) + " at position " + std::to_string(t) +
                  " is outside the vocabulary [0, " + std::to_string(V) + ")");
  for (int32_t r = 0; r < b.n_logit_rows; r++)
    if (b.logit_rows[r] < 0 || b.logit_rows[r] >= T) throw_range("forward: logit row " + std::to_string(b.logit_rows[r]) + " is out of range");

  pos.resize(T), bidx.resize(T), qo.assign(b.n_seqs + 1, 0), old_len.resize(b.n_seqs);
  for (int32_t s = 0, t = 0; s < b.n_seqs; s++) {
    old_len[s] = kv.length(b.seq_ids[s]);
    for (int32_t i = 0; i < b.seq_n_tokens[s]; i++, t++) {
      pos[t] = old_len[s] + i;
      bidx[t] = s;
    }
    qo[s + 1] = qo[s] + b.seq_n_tokens[s];
  }
  kv.grow(b.seq_ids, b.seq_n_tokens, b.n_seqs);  // all or nothing
  try {
    kv.page_tables(b.seq_ids, b.n_seqs, indptr, indices, last);
  } catch (...) {
    rollback(kv, b);
    throw;
  }
}

void StepPlan::rollback(KvCache& kv, const ForwardBatch& b) const {
  for (int32_t s = 0; s < b.n_seqs; s++) kv.truncate(b.seq_ids[s], old_len[s]);
}

void LlamaModel::forward(KvCache& kv, const ForwardBatch& b, float* logits, ThreadPool& pool,
                         int32_t max_seq_len) const {
  const int64_t T = b.n_tokens, E = cfg_.n_embd, D = cfg_.head_dim, Hq = cfg_.n_head, Hkv = cfg_.n_head_kv;
  const int64_t F = cfg_.n_ff;
  if (!kv.on_host()) throw_type("forward: this KV cache keeps its pages on a GPU; the CPU model needs a host cache");
  const StepPlan plan(kv, b, cfg_.n_vocab, max_seq_len);
  const std::vector<int32_t>&pos = plan.pos, &bidx = plan.bidx, &qo = plan.qo;
  const std::vector<int32_t>&indptr = plan.indptr, &indices = plan.indices, &last = plan.last;
  try {
    // Activations. x (T, E) is the residual stream.
    std::vector<float> x(T * E), xn(T * E), q(T * Hq * D), k(T * Hkv * D), v(T * Hkv * D), att(T * Hq * D),
        tmp(T * E), g(T * F), u(T * F);
    const int64_t emb_row = dtype_bytes(tok_embd_.dtype, E);
    for (int64_t t = 0; t < T; t++)
      ref::convert(static_cast<const uint8_t*>(tok_embd_.data) + b.tokens[t] * emb_row, tok_embd_.dtype, &x[t * E],
                   DType::F32, E);

    const AttnShape shape{(int32_t)Hq, (int32_t)Hkv, (int32_t)D, 1.0f / std::sqrt((float)D)};
    for (const LlamaLayer& L : layers_) {
      // attention block
      cpu::rmsnorm(pool, x.data(), L.attn_norm.data(), xn.data(), T, E, cfg_.rms_eps);
      const cpu::MatmulJob qkv[3] = {L.wq.job(q.data()), L.wk.job(k.data()), L.wv.job(v.data())};
      cpu::matmul_multi(pool, xn.data(), T, E, qkv, 3, /*quantize_x=*/true);
      if (cfg_.qkv_bias) {
        add_bias(q.data(), L.bq, T);
        add_bias(k.data(), L.bk, T);
        add_bias(v.data(), L.bv, T);
      }
      cpu::rope(pool, q.data(), pos.data(), T, (int32_t)Hq, (int32_t)D, cfg_.rope);
      cpu::rope(pool, k.data(), pos.data(), T, (int32_t)Hkv, (int32_t)D, cfg_.rope);
      const PagedKv pk = kv.layer((int32_t)(&L - layers_.data()), indptr, indices, last);
      cpu::kv_append(pool, k.data(), v.data(), bidx.data(), pos.data(), T, pk);
      cpu::paged_attention(pool, q.data(), qo.data(), pk, nullptr, att.data(), shape);
      const cpu::MatmulJob wo = L.wo.job(tmp.data());
      cpu::matmul_multi(pool, att.data(), T, Hq * D, &wo, 1, /*quantize_x=*/true);
      add_into(x.data(), tmp.data(), T * E);
      // feed-forward block
      cpu::rmsnorm(pool, x.data(), L.ffn_norm.data(), xn.data(), T, E, cfg_.rms_eps);
      const cpu::MatmulJob gate_up[2] = {L.w_gate.job(g.data()), L.w_up.job(u.data())};
      cpu::matmul_multi(pool, xn.data(), T, E, gate_up, 2, /*quantize_x=*/true);
      cpu::swiglu(pool, g.data(), u.data(), g.data(), T * F);
      const cpu::MatmulJob down = L.w_down.job(tmp.data());
      cpu::matmul_multi(pool, g.data(), T, F, &down, 1, /*quantize_x=*/true);
      add_into(x.data(), tmp.data(), T * E);
    }

    // logits of the wanted rows only
    const int64_t R = b.n_logit_rows;
    if (R > 0) {
      std::vector<float> xs(R * E), xsn(R * E);
      for (int64_t r = 0; r < R; r++) std::copy_n(&x[(int64_t)b.logit_rows[r] * E], E, &xs[r * E]);
      cpu::rmsnorm(pool, xs.data(), output_norm_.data(), xsn.data(), R, E, cfg_.rms_eps);
      const cpu::MatmulJob out = output_.job(logits);
      cpu::matmul_multi(pool, xsn.data(), R, E, &out, 1, /*quantize_x=*/true);
    }
  } catch (...) {
    plan.rollback(kv, b);
    throw;
  }
}

}  // namespace tessera
