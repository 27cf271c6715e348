// Synthetic Llama models: real shapes, seeded random weights, any vocabulary (copied from
// another GGUF), written as GGUF files llama.cpp also loads. Benchmarks need big models and no
// machine here can download one (vLLM's "dummy" load format is the precedent).
#pragma once

#include <cstdint>
#include <string>

#include "tessera/dtype.h"

namespace tessera {

struct SynthSpec {
  std::string arch = "llama";  // "llama" or "qwen2" (adds Q/K/V biases; NeoX rope)
  std::string name = "tessera-synthetic";
  int32_t dim = 768, layers = 12, heads = 12, kv_heads = 12, ff = 2048;
  int32_t vocab = 0;        // 0: the size of the vocabulary file's token list
  int32_t context = 2048;
  float rope_base = 10000.f, rms_eps = 1e-5f;
  DType dtype = DType::F16;  // 2-D weights (f32, f16, bf16, q8_0, q4_0, q4_k, q6_k); norms stay f32
  bool tied_output = false;
  uint64_t seed = 1;
  float weight_std = 0.02f;  // standard deviation of the (uniform) random weights
  std::string vocab_path;    // GGUF whose tokenizer.* keys are copied (required)
};

// Writes the model to `path` (streamed: memory stays small whatever the size). Returns bytes written.
uint64_t write_synthetic_llama(const std::string& path, const SynthSpec& spec);

}  // namespace tessera
