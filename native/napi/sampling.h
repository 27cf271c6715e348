// Reading a step's sampling requests from JS and writing the sampled tokens back (shared by
// sampleRows in native/napi/sampling.cc and NativeModel.forward in native/napi/model.cc).
#pragma once

#include <napi.h>

#include <cstdint>
#include <vector>

#include "../model/sampler.h"

namespace tessera {

class ThreadPool;

// What one step samples: n rows, each with its own options, history, generator and logprobs.
// Everything is copied out of JS, so the batch can be sampled on a worker thread.
struct SampleBatch {
  std::vector<SamplingParams> params;
  std::vector<std::vector<int32_t>> histories;
  std::vector<SamplerRng> rngs;
  std::vector<int32_t> top_n;  // -1: no logprob, 0: the chosen token's, n: and the top n
  std::vector<SampleResult> results;

  int64_t size() const { return (int64_t)params.size(); }
  // rows[i] (vocab,) is request i's logits. Fills results; returns the index of the first row that
  // failed (its results[i].error says why), or -1.
  int64_t run(const float* const* rows, int32_t vocab, ThreadPool* pool);
};

// Reads { options: NativeSamplingOptions[], histories?: Int32Array[], rngStates: Uint32Array
// (4 per row), logprobs?: Int32Array } (the types in lib/native.ts); throws TypeError/RangeError
// prefixed with `where`, naming the field.
SampleBatch read_sample_batch(Napi::Env env, Napi::Object o, int32_t vocab, const char* where);

// Sets tokens, logprobs, topOffsets, topTokens, topLogprobs and rngStates on `out`.
void write_sample_results(Napi::Env env, const SampleBatch& b, Napi::Object out);

}  // namespace tessera
