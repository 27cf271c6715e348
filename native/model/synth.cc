// write_synthetic_llama: streams a Llama GGUF whose weights are a seeded, counter-based random
// function of (tensor, element), so the file is the same however it is chunked or threaded.
#include "tessera/synth.h"

#include <cmath>
#include <vector>

#include "tessera/check.h"
#include "tessera/gguf.h"
#include "tessera/ops.h"
#include "tessera/threadpool.h"

namespace tessera {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Uniform in [-scale, scale] for element i of tensor `id`.
float weight_value(uint64_t seed, uint64_t id, uint64_t i, float scale) {
  const uint64_t r = splitmix64(seed ^ (id << 40) ^ i);
  return ((float)(r >> 40) / (float)(1ull << 24) * 2.f - 1.f) * scale;
}

}  // namespace

uint64_t write_synthetic_llama(const std::string& path, const SynthSpec& s) {
  if (s.dim <= 0 || s.layers <= 0 || s.heads <= 0 || s.kv_heads <= 0 || s.ff <= 0)
    throw_range("synthetic model: dim, layers, heads, kvHeads and ff must be > 0");
  if (s.dim % s.heads != 0) throw_range("synthetic model: dim must be a multiple of heads");
  if (s.heads % s.kv_heads != 0) throw_range("synthetic model: heads must be a multiple of kvHeads");
  if ((s.dim / s.heads) % 2 != 0) throw_range("synthetic model: head dimension must be even (rope)");
  switch (s.dtype) {
    case DType::F32: case DType::F16: case DType::BF16: case DType::Q8_0: case DType::Q4_0: case DType::Q4_K:
    case DType::Q6_K: break;
    default: throw_type("synthetic model: dtype must be f32, f16, bf16, q8_0, q4_0, q4_k or q6_k");
  }
  if (s.arch != "llama" && s.arch != "qwen2") throw_range("synthetic model: arch must be llama or qwen2");
  if (!(s.weight_std > 0.f)) throw_range("synthetic model: weight std must be > 0");
  if (s.vocab_path.empty()) throw_range("synthetic model: a vocabulary GGUF is required");
  const GgufFile vocab(s.vocab_path);
  const GgufValue* tokens = vocab.find("tokenizer.ggml.tokens");
  if (tokens == nullptr) throw GgufError(s.vocab_path + ": no tokenizer.ggml.tokens (not a vocabulary)");
  const int32_t n_vocab = s.vocab > 0 ? s.vocab : (int32_t)tokens->size();
  if (n_vocab != (int32_t)tokens->size())
    throw_range("synthetic model: vocab " + std::to_string(n_vocab) + " differs from the vocabulary file's " +
                std::to_string(tokens->size()) + " tokens");

  GgufWriter w;
  const std::string ak = s.arch + ".";
  w.set_string("general.architecture", s.arch);
  w.set_string("general.name", s.name);
  const uint32_t file_type = s.dtype == DType::F32 ? 0 : s.dtype == DType::F16 ? 1 : s.dtype == DType::Q4_0 ? 2
                           : s.dtype == DType::Q8_0 ? 7 : s.dtype == DType::Q4_K ? 14 : s.dtype == DType::Q6_K ? 18
                           : 32;  // llama_ftype (14: Q4_K_S, 18: Q6_K, 32: BF16)
  w.set_u32("general.file_type", file_type);
  w.set_u32(ak + "context_length", (uint32_t)s.context);
  w.set_u32(ak + "embedding_length", (uint32_t)s.dim);
  w.set_u32(ak + "block_count", (uint32_t)s.layers);
  w.set_u32(ak + "feed_forward_length", (uint32_t)s.ff);
  w.set_u32(ak + "rope.dimension_count", (uint32_t)(s.dim / s.heads));
  w.set_u32(ak + "attention.head_count", (uint32_t)s.heads);
  w.set_u32(ak + "attention.head_count_kv", (uint32_t)s.kv_heads);
  w.set_f32(ak + "attention.layer_norm_rms_epsilon", s.rms_eps);
  w.set_f32(ak + "rope.freq_base", s.rope_base);
  w.set_u32(ak + "vocab_size", (uint32_t)n_vocab);
  for (const auto& [key, value] : vocab.metadata())
    if (key.rfind("tokenizer.", 0) == 0) w.set(key, value);

  uint64_t next_id = 0;
  // A tensor of `dtype` (falling back to f16 when the row is not whole blocks, as llama.cpp does).
  auto add = [&](const std::string& name, std::vector<int64_t> shape, DType dtype, float scale, bool ones) {
    const int64_t row = shape[0];
    if (row % dtype_info(dtype).block_elems != 0) dtype = DType::F16;
    const uint64_t id = next_id++;
    const uint64_t seed = s.seed;
    w.add_tensor(name, dtype, shape, [=](uint8_t* dst, uint64_t offset, uint64_t n) {
      const DTypeInfo info = dtype_info(dtype);
      const int64_t first = (int64_t)(offset / info.block_bytes) * info.block_elems;
      const int64_t count = (int64_t)(n / info.block_bytes) * info.block_elems;
      thread_local std::vector<float> f;
      f.resize(count);
      for (int64_t i = 0; i < count; i++) f[i] = ones ? 1.f : weight_value(seed, id, (uint64_t)(first + i), scale);
      cpu::convert(default_pool(), f.data(), DType::F32, dst, dtype, count);
    });
  };
  const int64_t E = s.dim, KV = (int64_t)s.kv_heads * (s.dim / s.heads), F = s.ff;
  const float a = s.weight_std * std::sqrt(3.f);  // uniform with standard deviation weight_std
  add("token_embd.weight", {E, n_vocab}, s.dtype, a, false);
  for (int32_t l = 0; l < s.layers; l++) {
    const std::string p = "blk." + std::to_string(l) + ".";
    add(p + "attn_norm.weight", {E}, DType::F32, 0, true);
    add(p + "attn_q.weight", {E, E}, s.dtype, a, false);
    add(p + "attn_k.weight", {E, KV}, s.dtype, a, false);
    add(p + "attn_v.weight", {E, KV}, s.dtype, a, false);
    add(p + "attn_output.weight", {E, E}, s.dtype, a, false);
    if (s.arch == "qwen2") {
      add(p + "attn_q.bias", {E}, DType::F32, a, false);
      add(p + "attn_k.bias", {KV}, DType::F32, a, false);
      add(p + "attn_v.bias", {KV}, DType::F32, a, false);
    }
    add(p + "ffn_norm.weight", {E}, DType::F32, 0, true);
    add(p + "ffn_gate.weight", {E, F}, s.dtype, a, false);
    add(p + "ffn_up.weight", {E, F}, s.dtype, a, false);
    add(p + "ffn_down.weight", {F, E}, s.dtype, a, false);
  }
  add("output_norm.weight", {E}, DType::F32, 0, true);
  if (!s.tied_output) add("output.weight", {E, n_vocab}, s.dtype, a, false);
  return w.write(path);
}

}  // namespace tessera
