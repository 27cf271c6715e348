// Token sampling on rows of logits, natively: a port of lib/sampling.ts's Sampler.sample (the
// reference) with the same chain, order of operations, float32/float64 split and generator
// (xoshiro128** seeded through splitmix64), so that the same row, options, history and generator
// state pick the same token. sample_rows runs the rows of one step on a thread pool.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tessera {

class ThreadPool;

// lib/sampling.ts's Rng: xoshiro128**. The state is four 32-bit words (never all zero).
struct SamplerRng {
  uint32_t s[4] = {0x9e3779b9u, 0, 0, 0};

  // splitmix64 over the 64-bit two's complement of seed: two outputs, four words (as Rng(seed)).
  static SamplerRng from_seed(int64_t seed);
  // A uniform integer in [0, 2^32).
  uint32_t next_u32();
  // A uniform number in [0, 1) with 53 random bits.
  double next_double();
};

// ResolvedSamplingOptions (lib/sampling.ts) with the logit bias as two parallel arrays.
struct SamplingParams {
  double temperature = 1;  // 0: greedy
  int64_t top_k = 0;       // 0: off
  double top_p = 1;        // 1: off
  double min_p = 0;        // 0: off
  double repeat_penalty = 1;
  double presence_penalty = 0;
  double frequency_penalty = 0;
  int64_t penalty_last_n = 64;  // -1: all of the history, 0: none
  std::vector<int32_t> bias_ids;
  std::vector<double> bias_values;
};

struct TokenLogprob {
  int32_t token;
  double logprob;
};

// One row to sample. `logits` (vocab,) is read only; `history` (history_len,) is read by the
// penalties (its last penalty_last_n entries); `rng` advances once unless temperature is 0.
struct SampleRequest {
  const float* logits = nullptr;
  const SamplingParams* params = nullptr;
  const int32_t* history = nullptr;
  int64_t history_len = 0;
  SamplerRng* rng = nullptr;
  // -1: the chosen token's logprob is not needed (NaN; greedy skips the normaliser), 0: it is,
  // n > 0: it is, and so are the n most likely tokens of the distribution sampled from.
  int32_t top_n = 0;
};

struct SampleResult {
  int32_t token = -1;
  double logprob = 0;  // NaN when top_n was -1
  std::vector<TokenLogprob> top;
  // Empty on success; else the reference's RangeError message (NaN/+Infinity logit, a logit that
  // left the finite range after bias and penalties, every logit -Infinity, a bad history id).
  std::string error;
};

// Checks the options as validateSamplingOptions and Sampler's constructor do (vocab too);
// returns "" or a message naming the option.
std::string check_sampling_params(const SamplingParams& p, int32_t vocab);

// Checks the history ids the penalties of `p` will read (its last penalty_last_n; none when no
// penalty is on); returns "" or the reference's message naming history[i].
std::string check_history(const SamplingParams& p, const int32_t* history, int64_t len, int32_t vocab);

// Samples one row (Sampler.sample). Thread-safe (scratch space is per thread).
SampleResult sample_row(const SampleRequest& req, int32_t vocab);

// Samples every request, in parallel on `pool` when given and the work pays for it; out[i] is
// request i's result. Each request has its own rng, so the result does not depend on threads.
void sample_rows(const SampleRequest* reqs, int64_t n, int32_t vocab, SampleResult* out, ThreadPool* pool);

}  // namespace tessera
