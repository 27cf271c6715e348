// N-API binding of the native sampler (native/model/sampler.h): sampleRows({ logits, vocab,
// options, histories, rngStates, logprobs }) samples rows of logits synchronously on the default
// pool (for tests and benchmarks; a forward step samples on its worker thread through the same
// SampleBatch), and the argument plumbing both share.
#include "sampling.h"

#include <cmath>
#include <string>

#include "tessera/threadpool.h"

namespace tessera {

namespace {

std::string at(const char* where, const std::string& name) { return std::string(where) + ": " + name; }

double number_field(Napi::Env env, Napi::Object o, const char* key, double fallback, const std::string& what) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsNumber()) throw Napi::TypeError::New(env, what + "." + key + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

int64_t integer_field(Napi::Env env, Napi::Object o, const char* key, int64_t fallback, const std::string& what) {
  const double d = number_field(env, o, key, (double)fallback, what);
  if (!(std::fabs(d) <= 9007199254740991.0) || d != std::floor(d))
    throw Napi::RangeError::New(env, what + "." + key + " must be an integer");
  return (int64_t)d;
}

template <typename A>
A typed_field(Napi::Env env, Napi::Object o, const char* key, napi_typedarray_type type, const char* type_name,
              const std::string& what) {
  Napi::Value v = o.Get(key);
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type)
    throw Napi::TypeError::New(env, what + "." + key + " must be a " + type_name);
  return v.As<A>();
}

SamplingParams read_params(Napi::Env env, Napi::Value v, int32_t vocab, const std::string& what) {
  if (!v.IsObject()) throw Napi::TypeError::New(env, what + " must be an object of sampling options");
  Napi::Object o = v.As<Napi::Object>();
  SamplingParams p;
  p.temperature = number_field(env, o, "temperature", 1, what);
  p.top_k = integer_field(env, o, "topK", 0, what);
  p.top_p = number_field(env, o, "topP", 1, what);
  p.min_p = number_field(env, o, "minP", 0, what);
  p.repeat_penalty = number_field(env, o, "repeatPenalty", 1, what);
  p.presence_penalty = number_field(env, o, "presencePenalty", 0, what);
  p.frequency_penalty = number_field(env, o, "frequencyPenalty", 0, what);
  p.penalty_last_n = integer_field(env, o, "penaltyLastN", 64, what);
  const bool has_ids = !o.Get("biasIds").IsUndefined(), has_values = !o.Get("biasValues").IsUndefined();
  if (has_ids != has_values) throw Napi::TypeError::New(env, what + ": biasIds and biasValues come together");
  if (has_ids) {
    auto ids = typed_field<Napi::Int32Array>(env, o, "biasIds", napi_int32_array, "Int32Array", what);
    auto values = typed_field<Napi::Float64Array>(env, o, "biasValues", napi_float64_array, "Float64Array", what);
    if (ids.ElementLength() != values.ElementLength())
      throw Napi::RangeError::New(env, what + ": biasIds and biasValues differ in length");
    p.bias_ids.assign(ids.Data(), ids.Data() + ids.ElementLength());
    p.bias_values.assign(values.Data(), values.Data() + values.ElementLength());
  }
  const std::string bad = check_sampling_params(p, vocab);
  if (!bad.empty()) throw Napi::RangeError::New(env, what + ": " + bad);
  return p;
}

}  // namespace

SampleBatch read_sample_batch(Napi::Env env, Napi::Object o, int32_t vocab, const char* where) {
  SampleBatch b;
  Napi::Value opts = o.Get("options");
  if (!opts.IsArray()) throw Napi::TypeError::New(env, at(where, "options must be an array of sampling options (one per row)"));
  Napi::Array arr = opts.As<Napi::Array>();
  const uint32_t n = arr.Length();
  b.params.reserve(n);
  for (uint32_t i = 0; i < n; i++)
    b.params.push_back(read_params(env, arr.Get(i), vocab, at(where, "options[" + std::to_string(i) + "]")));

  b.histories.resize(n);
  Napi::Value hv = o.Get("histories");
  if (!hv.IsUndefined()) {
    if (!hv.IsArray()) throw Napi::TypeError::New(env, at(where, "histories must be an array of Int32Array (one per row)"));
    Napi::Array h = hv.As<Napi::Array>();
    if (h.Length() != n) throw Napi::RangeError::New(env, at(where, "histories must have one entry per row (" + std::to_string(n) + ")"));
    for (uint32_t i = 0; i < n; i++) {
      Napi::Value e = h.Get(i);
      if (e.IsUndefined()) continue;
      if (!e.IsTypedArray() || e.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
        throw Napi::TypeError::New(env, at(where, "histories[" + std::to_string(i) + "] must be an Int32Array"));
      auto a = e.As<Napi::Int32Array>();
      b.histories[i].assign(a.Data(), a.Data() + a.ElementLength());
    }
  }

  auto states = typed_field<Napi::Uint32Array>(env, o, "rngStates", napi_uint32_array, "Uint32Array", at(where, "step"));
  if (states.ElementLength() != 4 * (size_t)n)
    throw Napi::RangeError::New(env, at(where, "rngStates must hold 4 words per row (" + std::to_string(4 * (size_t)n) + "), got " +
                                                  std::to_string(states.ElementLength())));
  b.rngs.resize(n);
  for (uint32_t i = 0; i < n; i++) {
    for (int k = 0; k < 4; k++) b.rngs[i].s[k] = states.Data()[4 * i + k];
    if ((b.rngs[i].s[0] | b.rngs[i].s[1] | b.rngs[i].s[2] | b.rngs[i].s[3]) == 0)
      throw Napi::RangeError::New(env, at(where, "rngStates of row " + std::to_string(i) + " is all zero (not a xoshiro128** state)"));
  }

  b.top_n.assign(n, 0);
  Napi::Value lv = o.Get("logprobs");
  if (!lv.IsUndefined()) {
    auto lp = typed_field<Napi::Int32Array>(env, o, "logprobs", napi_int32_array, "Int32Array", at(where, "step"));
    if (lp.ElementLength() != n) throw Napi::RangeError::New(env, at(where, "logprobs must have one entry per row (" + std::to_string(n) + ")"));
    for (uint32_t i = 0; i < n; i++) {
      if (lp.Data()[i] < -1) throw Napi::RangeError::New(env, at(where, "logprobs[" + std::to_string(i) + "] must be >= -1"));
      b.top_n[i] = lp.Data()[i];
    }
  }
  return b;
}

int64_t SampleBatch::run(const float* const* rows, int32_t vocab, ThreadPool* pool) {
  const int64_t n = size();
  std::vector<SampleRequest> reqs((size_t)n);
  for (int64_t i = 0; i < n; i++) {
    SampleRequest& r = reqs[i];
    r.logits = rows[i];
    r.params = &params[i];
    r.history = histories[i].data();
    r.history_len = (int64_t)histories[i].size();
    r.rng = &rngs[i];
    r.top_n = top_n[i];
  }
  results.assign((size_t)n, SampleResult{});
  sample_rows(reqs.data(), n, vocab, results.data(), pool);
  for (int64_t i = 0; i < n; i++)
    if (!results[i].error.empty()) return i;
  return -1;
}

void write_sample_results(Napi::Env env, const SampleBatch& b, Napi::Object out) {
  const size_t n = (size_t)b.size();
  auto tokens = Napi::Int32Array::New(env, n);
  auto logprobs = Napi::Float64Array::New(env, n);
  auto offsets = Napi::Int32Array::New(env, n + 1);
  size_t total = 0;
  for (size_t i = 0; i < n; i++) {
    tokens[i] = b.results[i].token;
    logprobs[i] = b.results[i].logprob;
    offsets[i] = (int32_t)total;
    total += b.results[i].top.size();
  }
  offsets[n] = (int32_t)total;
  auto top_tokens = Napi::Int32Array::New(env, total);
  auto top_logprobs = Napi::Float64Array::New(env, total);
  for (size_t i = 0, k = 0; i < n; i++)
    for (const TokenLogprob& t : b.results[i].top) top_tokens[k] = t.token, top_logprobs[k++] = t.logprob;
  auto states = Napi::Uint32Array::New(env, 4 * n);
  for (size_t i = 0; i < n; i++)
    for (int k = 0; k < 4; k++) states[4 * i + k] = b.rngs[i].s[k];
  out.Set("tokens", tokens);
  out.Set("logprobs", logprobs);
  out.Set("topOffsets", offsets);
  out.Set("topTokens", top_tokens);
  out.Set("topLogprobs", top_logprobs);
  out.Set("rngStates", states);
}

namespace {

// sampleRows({ logits: Float32Array (rows * vocab), vocab, options, histories?, rngStates,
// logprobs? }) -> { tokens, logprobs, topOffsets, topTokens, topLogprobs, rngStates }
Napi::Value SampleRows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const char* where = "sampleRows";
  if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "sampleRows: expected an argument object");
  Napi::Object o = info[0].As<Napi::Object>();
  Napi::Value vv = o.Get("vocab");
  if (!vv.IsNumber()) throw Napi::TypeError::New(env, "sampleRows: vocab must be a number");
  const double vd = vv.As<Napi::Number>().DoubleValue();
  if (!(vd >= 1 && vd < 2147483648.0) || vd != std::floor(vd))
    throw Napi::RangeError::New(env, "sampleRows: vocab must be an integer in [1, 2^31)");
  const int32_t vocab = (int32_t)vd;
  SampleBatch b = read_sample_batch(env, o, vocab, where);
  auto logits = typed_field<Napi::Float32Array>(env, o, "logits", napi_float32_array, "Float32Array", at(where, "step"));
  const size_t n = (size_t)b.size();
  if (logits.ElementLength() != n * (size_t)vocab)
    throw Napi::RangeError::New(env, at(where, "logits must hold rows x vocab = " + std::to_string(n * (size_t)vocab) +
                                                  " floats, got " + std::to_string(logits.ElementLength())));
  std::vector<const float*> rows(n);
  for (size_t i = 0; i < n; i++) rows[i] = logits.Data() + i * (size_t)vocab;
  const int64_t bad = b.run(rows.data(), vocab, &default_pool());
  if (bad >= 0) {
    Napi::Error e = Napi::RangeError::New(env, b.results[bad].error);
    e.Set("row", Napi::Number::New(env, (double)bad));
    throw e;
  }
  Napi::Object out = Napi::Object::New(env);
  write_sample_results(env, b, out);
  return out;
}

}  // namespace

void register_sampling(Napi::Env env, Napi::Object exports) {
  exports.Set("sampleRows", Napi::Function::New(env, SampleRows));
}

}  // namespace tessera
