// N-API binding of a loaded model: LlamaModel + its KvCache + its ThreadPool behind one JS
// object. forward() is the one crossing per step: it copies the step's small inputs, runs the
// whole forward pass on a worker thread, and resolves with the wanted logits. Sequence
// bookkeeping calls are synchronous and refused while a step is running.
#include <napi.h>

#include <atomic>
#include <cmath>
#include <climits>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "tessera/check.h"
#include "tessera/gguf.h"
#include "tessera/kv_cache.h"
#include "tessera/llama.h"
#include "tessera/synth.h"
#include "tessera/threadpool.h"
#include "sampling.h"
#ifdef TESSERA_WITH_CUDA
#include "tessera/cuda_llama.h"
#endif

namespace tessera {
namespace {

struct ModelState {
  std::unique_ptr<LlamaModel> model;
#ifdef TESSERA_WITH_CUDA
  std::unique_ptr<cuda::CudaLlama> gpu;  // set when the model runs on a GPU (kv then lives there)
#endif
  std::unique_ptr<KvCache> kv;
  std::unique_ptr<ThreadPool> pool;
  int32_t context_size = 0;
  // device 'cuda': the weights go to the GPU and its cache is made in repack(), on a worker thread
  // (copying gigabytes must not block the event loop); until then kv is null.
  bool gpu_pending = false;
  int32_t kv_pages = 0, page_size = 0;
  DType kv_dtype = DType::F16;
  std::atomic<bool> busy{false};
};

class NativeModel : public Napi::ObjectWrap<NativeModel> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeModel",
                       {InstanceMethod("info", &NativeModel::Info), InstanceMethod("createSequence", &NativeModel::CreateSequence),
                        InstanceMethod("forkSequence", &NativeModel::ForkSequence),
                        InstanceMethod("releaseSequence", &NativeModel::ReleaseSequence),
                        InstanceMethod("truncateSequence", &NativeModel::TruncateSequence),
                        InstanceMethod("commitPath", &NativeModel::CommitPath),
                        InstanceMethod("sequenceLength", &NativeModel::SequenceLength),
                        InstanceMethod("freePages", &NativeModel::FreePages),
                        InstanceMethod("pagesNeeded", &NativeModel::PagesNeeded),
                        InstanceMethod("forward", &NativeModel::Forward), InstanceMethod("repack", &NativeModel::Repack),
                        InstanceMethod("dispose", &NativeModel::Dispose)});
  }

  // new NativeModel(path, { device: 'cpu' | 'cuda', threads, contextSize, kvPages, pageSize, kvDtype })
  explicit NativeModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeModel>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsString() || !info[1].IsObject())
      throw Napi::TypeError::New(env, "NativeModel(path: string, options: object)");
    const std::string path = info[0].As<Napi::String>();
    Napi::Object o = info[1].As<Napi::Object>();
    auto integer = [&](const char* name, int64_t min, int64_t max) {
      Napi::Value v = o.Get(name);
      if (!v.IsNumber()) throw Napi::TypeError::New(env, std::string("loadModel: ") + name + " must be a number");
      const double d = v.As<Napi::Number>().DoubleValue();
      if (!(d >= (double)min && d <= (double)max) || d != (double)(int64_t)d)
        throw Napi::RangeError::New(env, std::string("loadModel: ") + name + " must be an integer in [" + std::to_string(min) + ", " +
                                             std::to_string(max) + "]");
      return (int64_t)d;
    };
    const int threads = (int)integer("threads", 0, 1024);
    const int32_t page_size = (int32_t)integer("pageSize", 1, 4096);
    int64_t context = integer("contextSize", 0, INT32_MAX);
    int64_t pages = integer("kvPages", 0, INT32_MAX);
    const std::string kv_dtype = o.Get("kvDtype").ToString();
    if (kv_dtype != "f16" && kv_dtype != "f32") throw Napi::RangeError::New(env, "loadModel: kvDtype must be 'f16' or 'f32'");
    const std::string device = o.Has("device") ? o.Get("device").ToString().Utf8Value() : "cpu";
    if (device != "cpu" && device != "cuda") throw Napi::RangeError::New(env, "loadModel: device must be 'cpu' or 'cuda'");
#ifndef TESSERA_WITH_CUDA
    if (device == "cuda")
      throw Napi::Error::New(env, "loadModel: device 'cuda': this tessera binary was built without the CUDA backend");
#endif
    try {
      state_ = std::make_shared<ModelState>();
      state_->pool = std::make_unique<ThreadPool>(threads);
      // Repacking weights takes real time (about 1 s per GB): repack() does it on a worker thread.
      state_->model = std::make_unique<LlamaModel>(std::make_unique<GgufFile>(path), state_->pool.get(), /*repack_now=*/false);
      const LlamaConfig& c = state_->model->config();
      if (context == 0) context = std::min<int64_t>(c.n_ctx_train, 4096);
      if (pages == 0) pages = (context + page_size - 1) / page_size;  // room for one full-length sequence
      state_->context_size = (int32_t)context;
      const DType kd = kv_dtype == "f16" ? DType::F16 : DType::F32;
      const KvCacheConfig kc{c.n_layer, (int32_t)pages, page_size, c.n_head_kv, c.head_dim, kd};
      if (device == "cuda") {
        KvCache::validate(kc);  // bad geometry is reported here, not by repack()
        state_->gpu_pending = true;
        state_->kv_pages = (int32_t)pages, state_->page_size = page_size, state_->kv_dtype = kd;
      } else {
        state_->kv = std::make_unique<KvCache>(kc);
      }
    } catch (const ArgError& e) {
      throw Napi::RangeError::New(env, e.what());
    } catch (const std::exception& e) {
      throw Napi::Error::New(env, e.what());
    }
  }

 private:
  ModelState& live(Napi::Env env) {
    if (!state_) throw Napi::Error::New(env, "the model was disposed");
    if (state_->busy.load()) throw Napi::Error::New(env, "the model is running a forward step (or repacking its weights); wait for it to finish");
    if (!state_->kv) throw Napi::Error::New(env, "the model is not on its GPU yet: await repack() first");
    return *state_;
  }

  static int32_t seq_arg(const Napi::CallbackInfo& info, size_t i, const char* what) {
    if (info.Length() <= i || !info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), std::string(what) + " must be a number");
    return info[i].As<Napi::Number>().Int32Value();
  }

  template <typename F>
  Napi::Value guarded(Napi::Env env, F&& f) {
    try {
      return f();
    } catch (const Napi::Error&) {
      throw;
    } catch (const ArgError& e) {
      throw Napi::RangeError::New(env, e.what());
    } catch (const std::exception& e) {
      throw Napi::Error::New(env, e.what());
    }
  }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!state_) throw Napi::Error::New(env, "the model was disposed");
    const LlamaModel& m = *state_->model;
    const LlamaConfig& c = m.config();
    Napi::Object o = Napi::Object::New(env);
    o.Set("architecture", c.arch);
    o.Set("name", c.name);
    o.Set("vocabSize", c.n_vocab);
    o.Set("embeddingLength", c.n_embd);
    o.Set("layers", c.n_layer);
    o.Set("heads", c.n_head);
    o.Set("kvHeads", c.n_head_kv);
    o.Set("headDim", c.head_dim);
    o.Set("feedForwardLength", c.n_ff);
    o.Set("trainContextLength", c.n_ctx_train);
    o.Set("contextSize", state_->context_size);
    o.Set("rmsEps", c.rms_eps);
    o.Set("ropeBase", c.rope.theta_base);
    o.Set("ropeDim", c.rope.n_rot);
    o.Set("ropeFreqScale", c.rope.freq_scale);
    o.Set("ropeMode", c.rope.mode == RopeMode::NeoX ? "neox" : "normal");
    o.Set("qkvBias", c.qkv_bias);
    o.Set("tiedOutput", c.tied_output);
    o.Set("fileSize", (double)m.file().file_size());
    Napi::Object types = Napi::Object::New(env);
    for (auto& [name, count] : m.weight_types()) types.Set(name, count);
    o.Set("weightTypes", types);
    o.Set("packedBytes", (double)m.packed_bytes());
    if (state_->kv) {
      const KvCacheConfig& kc = state_->kv->config();
      o.Set("kvPages", kc.num_pages);
      o.Set("pageSize", kc.page_size);
      o.Set("kvDtype", dtype_info(kc.dtype).name);
      o.Set("kvBytes", (double)state_->kv->bytes());
    } else {  // device 'cuda' before repack(): nothing on the GPU yet
      o.Set("kvPages", state_->kv_pages);
      o.Set("pageSize", state_->page_size);
      o.Set("kvDtype", dtype_info(state_->kv_dtype).name);
      o.Set("kvBytes", 0);
    }
    o.Set("threads", state_->pool->size());
    o.Set("device", "cpu");
#ifdef TESSERA_WITH_CUDA
    if (state_->gpu) {
      o.Set("device", "cuda");
      o.Set("gpu", state_->gpu->device_name());
      o.Set("gpuWeightBytes", (double)state_->gpu->weight_bytes());
    }
#endif
    return o;
  }

  Napi::Value CreateSequence(const Napi::CallbackInfo& info) {
    ModelState& s = live(info.Env());
    return Napi::Number::New(info.Env(), s.kv->create_sequence());
  }
  Napi::Value ForkSequence(const Napi::CallbackInfo& info) {
    ModelState& s = live(info.Env());
    const int32_t seq = seq_arg(info, 0, "sequence");
    return guarded(info.Env(), [&] { return Napi::Number::New(info.Env(), s.kv->fork_sequence(seq)); });
  }
  Napi::Value ReleaseSequence(const Napi::CallbackInfo& info) {
    ModelState& s = live(info.Env());
    const int32_t seq = seq_arg(info, 0, "sequence");
    return guarded(info.Env(), [&] {
      s.kv->release_sequence(seq);
      return info.Env().Undefined();
    });
  }
  Napi::Value TruncateSequence(const Napi::CallbackInfo& info) {
    ModelState& s = live(info.Env());
    const int32_t seq = seq_arg(info, 0, "sequence"), len = seq_arg(info, 1, "length");
    return guarded(info.Env(), [&] {
      s.kv->truncate(seq, len);
      return info.Env().Undefined();
    });
  }
  // commitPath(seq, keepPositions: Int32Array) -> pages freed (KvCache::commit_path)
  Napi::Value CommitPath(const Napi::CallbackInfo& info) {
    ModelState& s = live(info.Env());
    const int32_t seq = seq_arg(info, 0, "sequence");
    if (info.Length() < 2 || !info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      throw Napi::TypeError::New(info.Env(), "commitPath: keepPositions must be an Int32Array");
    auto keep = info[1].As<Napi::Int32Array>();
    const std::vector<int32_t> k(keep.Data(), keep.Data() + keep.ElementLength());
    return guarded(info.Env(), [&] {
      return Napi::Number::New(info.Env(), s.kv->commit_path(seq, k.data(), (int32_t)k.size()));
    });
  }
  Napi::Value SequenceLength(const Napi::CallbackInfo& info) {
    ModelState& s = live(info.Env());
    const int32_t seq = seq_arg(info, 0, "sequence");
    return guarded(info.Env(), [&] { return Napi::Number::New(info.Env(), s.kv->length(seq)); });
  }
  Napi::Value FreePages(const Napi::CallbackInfo& info) {
    ModelState& s = live(info.Env());
    return Napi::Number::New(info.Env(), s.kv->free_pages());
  }
  // pagesNeeded(seqIds: Int32Array, counts: Int32Array): pages a step growing them would take.
  Napi::Value PagesNeeded(const Napi::CallbackInfo& info) {
    ModelState& s = live(info.Env());
    if (info.Length() < 2 || !info[0].IsTypedArray() || !info[1].IsTypedArray())
      throw Napi::TypeError::New(info.Env(), "pagesNeeded(seqIds: Int32Array, counts: Int32Array)");
    auto ids = info[0].As<Napi::Int32Array>();
    auto n = info[1].As<Napi::Int32Array>();
    if (ids.ElementLength() != n.ElementLength()) throw Napi::RangeError::New(info.Env(), "pagesNeeded: arrays differ in length");
    return guarded(info.Env(), [&] {
      return Napi::Number::New(info.Env(), s.kv->pages_needed(ids.Data(), n.Data(), (int32_t)ids.ElementLength()));
    });
  }

  // The inputs of one forward step, copied off the JS heap (the worker reads them on its thread).
  struct StepInput {
    std::vector<int32_t> tokens, seqs, counts, rows, positions;  // positions: empty when not given
    std::vector<uint8_t> tree, skip;                              // empty when not given
    bool has_tree = false, has_skip = false;
    ForwardBatch batch() const {
      ForwardBatch b;
      b.tokens = tokens.data();
      b.n_tokens = (int32_t)tokens.size();
      b.seq_ids = seqs.data();
      b.seq_n_tokens = counts.data();
      b.n_seqs = (int32_t)seqs.size();
      b.logit_rows = rows.data();
      b.n_logit_rows = (int32_t)rows.size();
      if (!positions.empty()) b.positions = positions.data();
      static const uint8_t kEmpty = 0;  // a given but empty mask stays "given" (its length is checked)
      if (has_tree) b.tree_mask = tree.empty() ? &kEmpty : tree.data(), b.tree_mask_len = (int64_t)tree.size();
      if (has_skip) b.skip_mask = skip.empty() ? &kEmpty : skip.data(), b.skip_mask_len = (int64_t)skip.size();
      return b;
    }
  };

  class ForwardWorker : public Napi::AsyncWorker {
   public:
    ForwardWorker(Napi::Env env, std::shared_ptr<ModelState> state, StepInput in)
        : Napi::AsyncWorker(env, "tessera.forward"),
          deferred_(Napi::Promise::Deferred::New(env)),
          state_(std::move(state)),
          in_(std::move(in)) {}
    Napi::Promise Promise() { return deferred_.Promise(); }

   protected:
    void Execute() override {
      try {
        const ForwardBatch bb = in_.batch();
        logits_.resize(in_.rows.size() * (size_t)state_->model->config().n_vocab);
#ifdef TESSERA_WITH_CUDA
        if (state_->gpu) {
          if (device_greedy()) {  // sampled on the GPU: only tokens and logprobs come back
            state_->gpu->forward(*state_->kv, bb, nullptr, state_->context_size);
            greedy_from_device();
            return;
          }
          state_->gpu->forward(*state_->kv, bb, logits_.data(), state_->context_size);
          sample_step();
          return;
        }
#endif
        state_->model->forward(*state_->kv, bb, logits_.data(), *state_->pool, state_->context_size);
        sample_step();
      } catch (const KvOutOfPages& e) {
        kind_ = "out_of_pages";
        SetError(e.what());
      } catch (const ArgError& e) {
        kind_ = "range";
        SetError(e.what());
      } catch (const std::exception& e) {
        SetError(e.what());
      }
    }
    void OnOK() override {
      state_->busy.store(false);
      auto out = Napi::Float32Array::New(Env(), logits_.size());
      std::copy(logits_.begin(), logits_.end(), out.Data());
      if (!sample_) return deferred_.Resolve(out);
      Napi::Object r = Napi::Object::New(Env());
      write_sample_results(Env(), *sample_, r);
      r.Set("logits", out);  // the rows not sampled (sample_step moved them to the front)
      deferred_.Resolve(r);
    }

   public:
    // Samples rows of this step natively after the forward: request i samples logit row rows[i]
    // (a position in logitRows).
    void set_sampling(SampleBatch batch, std::vector<int32_t> rows) {
      sample_ = std::make_unique<SampleBatch>(std::move(batch));
      sample_rows_ = std::move(rows);
    }

   protected:
    void OnError(const Napi::Error& e) override {
      state_->busy.store(false);
      Napi::Error err = kind_ == "range" ? Napi::RangeError::New(Env(), e.Message()) : Napi::Error::New(Env(), e.Message());
      if (kind_ == "out_of_pages") err.Set("code", "TESSERA_OUT_OF_PAGES");
      if (bad_sample_ >= 0) err.Set("sampleIndex", Napi::Number::New(Env(), (double)bad_sample_));
      deferred_.Reject(err.Value());
    }

   private:
    Napi::Promise::Deferred deferred_;
    std::shared_ptr<ModelState> state_;
    StepInput in_;
    std::vector<float> logits_;
    std::string kind_;
    std::unique_ptr<SampleBatch> sample_;
    std::vector<int32_t> sample_rows_;
    int64_t bad_sample_ = -1;  // the sample request whose row could not be sampled, if any

    // On the worker thread, after the forward: samples the requested rows on the model's pool,
    // then keeps only the rows not sampled in logits_ (in logitRows order).
    void sample_step() {
      if (!sample_) return;
      const int32_t V = state_->model->config().n_vocab;
      std::vector<const float*> rows(sample_rows_.size());
      for (size_t i = 0; i < rows.size(); i++) rows[i] = logits_.data() + (size_t)sample_rows_[i] * V;
      const int64_t bad = sample_->run(rows.data(), V, state_->pool.get());
      if (bad >= 0) {
        bad_sample_ = bad;  // the caller fails that request only (OnError names it)
        throw ArgError(ErrorKind::Range, sample_->results[bad].error);
      }
      std::vector<char> sampled(in_.rows.size(), 0);
      for (int32_t r : sample_rows_) sampled[r] = 1;
      size_t kept = 0;
      for (size_t r = 0; r < sampled.size(); r++)
        if (!sampled[r]) {
          if (kept != r) std::copy_n(logits_.data() + r * V, V, logits_.data() + kept * V);
          kept++;
        }
      logits_.resize(kept * V);
    }

#ifdef TESSERA_WITH_CUDA
    // Whether the step samples every logit row greedily with nothing to apply first (no bias, no
    // penalty, no top-n): then the GPU picks the tokens (cuda::greedy_rows) and the logits stay there.
    bool device_greedy() const {
      if (!sample_ || sample_rows_.size() != in_.rows.size() || in_.rows.empty()) return false;
      for (int64_t i = 0; i < sample_->size(); i++) {
        const SamplingParams& p = sample_->params[i];
        const bool penalties = p.penalty_last_n != 0 && (p.repeat_penalty != 1 || p.presence_penalty != 0 || p.frequency_penalty != 0);
        if (p.temperature != 0 || !p.bias_ids.empty() || penalties || sample_->top_n[i] > 0) return false;
      }
      return true;
    }
    void greedy_from_device() {
      const size_t R = in_.rows.size();
      const int32_t V = state_->model->config().n_vocab;
      std::vector<int32_t> tok(R);
      std::vector<double> lp(R);
      state_->gpu->greedy_last_step(tok.data(), lp.data());
      sample_->results.assign(R, SampleResult{});
      for (size_t i = 0; i < R; i++) {
        const int32_t r = sample_rows_[i], t = tok[r];
        if (t < 0) bad_sample_ = (int64_t)i;  // the caller fails that request only
        if (t == -1)
          throw ArgError(ErrorKind::Range, "sample: no token left to sample: all " + std::to_string(V) +
                                               " logits are -Infinity after logitBias and penalties");
        if (t < 0)
          throw ArgError(ErrorKind::Range, "sample: a logit of logit row " + std::to_string(r) +
                                               " is NaN or Infinity; expected finite numbers or -Infinity in logits");
        sample_->results[i].token = t;
        sample_->results[i].logprob = sample_->top_n[i] < 0 ? std::nan("") : lp[r];
      }
      logits_.clear();
    }
#endif
  };

  // forward({ tokens, seqIds, seqTokens, logitRows, positions?, treeMask?, skipMask? })
  //   -> Promise<Float32Array (rows * vocab)>
  // With sample: { rows, options, histories?, rngStates, logprobs? } the given logit rows are
  // sampled on the worker thread -> Promise<{ tokens, logprobs, topOffsets, topTokens, topLogprobs,
  // rngStates, logits (the rows not sampled) }> (NativeSampledStep in lib/native.ts).
  // positions: Int32Array (one per token); treeMask: Uint8Array (sum of seqTokens[i]², row-major
  // per sequence); skipMask: Uint8Array (layers x tokens). Their contents are checked natively.
  Napi::Value Forward(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    // Reading the arguments may run user code (getters, proxies) that disposes the model or starts
    // another step: hold the state here and check it again once everything is copied.
    const std::shared_ptr<ModelState> held = state_;
    live(env);
    ModelState& s = *held;
    if (info.Length() < 1 || !info[0].IsObject()) throw Napi::TypeError::New(env, "forward: expected an argument object");
    Napi::Object o = info[0].As<Napi::Object>();
    auto typed = [&](const char* name, napi_typedarray_type type, const char* type_name, bool optional) {
      Napi::Value v = o.Get(name);
      if (optional && (v.IsUndefined() || v.IsNull())) return Napi::TypedArray();
      if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type)
        throw Napi::TypeError::New(env, std::string("forward: ") + name + " must be " + type_name);
      return v.As<Napi::TypedArray>();
    };
    auto ints = [&](const char* name, bool optional = false) {
      Napi::TypedArray t = typed(name, napi_int32_array, optional ? "an Int32Array or undefined" : "an Int32Array", optional);
      if (t.IsEmpty()) return std::vector<int32_t>();
      auto a = t.As<Napi::Int32Array>();
      return std::vector<int32_t>(a.Data(), a.Data() + a.ElementLength());
    };
    auto bytes = [&](const char* name, bool& given) {
      Napi::TypedArray t = typed(name, napi_uint8_array, "a Uint8Array or undefined", true);
      given = !t.IsEmpty();
      if (!given) return std::vector<uint8_t>();
      auto a = t.As<Napi::Uint8Array>();
      return std::vector<uint8_t>(a.Data(), a.Data() + a.ElementLength());
    };
    StepInput in;
    in.tokens = ints("tokens"), in.seqs = ints("seqIds"), in.counts = ints("seqTokens"), in.rows = ints("logitRows");
    if (in.seqs.size() != in.counts.size()) throw Napi::RangeError::New(env, "forward: seqIds and seqTokens differ in length");
    const Napi::Value pv = o.Get("positions");
    const bool has_positions = !(pv.IsUndefined() || pv.IsNull());
    in.positions = ints("positions", true);
    if (has_positions && in.positions.size() != in.tokens.size())
      throw Napi::RangeError::New(env, "forward: positions has " + std::to_string(in.positions.size()) +
                                           " entries, expected one per token (" + std::to_string(in.tokens.size()) + ")");
    in.tree = bytes("treeMask", in.has_tree);
    in.skip = bytes("skipMask", in.has_skip);
    // sample: { rows, options, histories?, rngStates, logprobs? } (NativeStepSampling in lib/native.ts)
    const Napi::Value sv = o.Get("sample");
    const bool has_sample = !(sv.IsUndefined() || sv.IsNull());
    SampleBatch sample;
    std::vector<int32_t> sample_rows;
    if (has_sample) {
      if (!sv.IsObject()) throw Napi::TypeError::New(env, "forward: sample must be an object");
      Napi::Object so = sv.As<Napi::Object>();
      sample = read_sample_batch(env, so, s.model->config().n_vocab, "forward: sample");
      // A bad history id would only show after the whole step ran: refuse it now, naming its request.
      for (int64_t i = 0; i < sample.size(); i++) {
        const std::string bad = check_history(sample.params[i], sample.histories[i].data(), (int64_t)sample.histories[i].size(),
                                              s.model->config().n_vocab);
        if (bad.empty()) continue;
        Napi::Error e = Napi::RangeError::New(env, "forward: sample: histories[" + std::to_string(i) + "]: " + bad);
        e.Set("sampleIndex", Napi::Number::New(env, (double)i));
        throw e;
      }
      Napi::Value rv = so.Get("rows");
      if (!rv.IsTypedArray() || rv.As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
        throw Napi::TypeError::New(env, "forward: sample.rows must be an Int32Array");
      auto ra = rv.As<Napi::Int32Array>();
      if ((int64_t)ra.ElementLength() != sample.size())
        throw Napi::RangeError::New(env, "forward: sample.rows must have one entry per sampled row (" + std::to_string(sample.size()) + ")");
      std::vector<char> seen(in.rows.size(), 0);
      for (size_t i = 0; i < ra.ElementLength(); i++) {
        const int32_t r = ra[i];
        if (r < 0 || (size_t)r >= in.rows.size() || seen[r])
          throw Napi::RangeError::New(env, "forward: sample.rows[" + std::to_string(i) + "] must be a distinct position in logitRows [0, " +
                                               std::to_string(in.rows.size()) + "), got " + std::to_string(r));
        seen[r] = 1;
        sample_rows.push_back(r);
      }
    }
    if (state_ != held) throw Napi::Error::New(env, "forward: the model was disposed while the step's arguments were read");
    live(env);  // and no other step started meanwhile
    s.busy.store(true);
    auto* worker = new ForwardWorker(env, held, std::move(in));
    if (has_sample) worker->set_sampling(std::move(sample), std::move(sample_rows));
    Napi::Promise p = worker->Promise();
    worker->Queue();
    return p;
  }

  // Runs LlamaModel::repack (or the GPU copy) on a worker thread; reports per-layer progress to an
  // optional JS callback on the main thread (every report arrives before the promise settles).
  class RepackWorker : public Napi::AsyncProgressQueueWorker<double> {
   public:
    RepackWorker(Napi::Env env, std::shared_ptr<ModelState> state, Napi::Function on_progress)
        : Napi::AsyncProgressQueueWorker<double>(env, "tessera.repack"),
          deferred_(Napi::Promise::Deferred::New(env)),
          state_(std::move(state)) {
      if (!on_progress.IsEmpty()) on_progress_ = Napi::Persistent(on_progress);
    }
    Napi::Promise Promise() { return deferred_.Promise(); }

   protected:
    void Execute(const ExecutionProgress& progress) override {
      try {
#ifdef TESSERA_WITH_CUDA
        if (state_->gpu_pending) {  // copy the weights to the GPU (as stored: nothing to repack)
          if (!state_->gpu) state_->gpu = std::make_unique<cuda::CudaLlama>(*state_->model);
          if (!state_->kv) state_->kv = state_->gpu->make_cache(state_->kv_pages, state_->page_size, state_->kv_dtype);
          const double done = 1.0;
          progress.Send(&done, 1);
          return;
        }
#endif
        state_->model->repack(state_->pool.get(), [&](double f) { progress.Send(&f, 1); });
      } catch (const std::exception& e) {
        SetError(e.what());
      }
    }
    void OnProgress(const double* data, size_t count) override {
      if (on_progress_.IsEmpty() || count == 0) return;
      Napi::HandleScope scope(Env());
      try {
        on_progress_.Call({Napi::Number::New(Env(), data[count - 1])});
      } catch (const Napi::Error& e) {  // the callback threw: repack() rejects with it once the work is done
        if (progress_error_.IsEmpty()) progress_error_ = Napi::Persistent(e.Value());
      }
    }
    void OnOK() override {
      state_->busy.store(false);
      if (!progress_error_.IsEmpty()) return deferred_.Reject(progress_error_.Value());
      deferred_.Resolve(Env().Undefined());
    }
    void OnError(const Napi::Error& e) override {
      state_->busy.store(false);
      deferred_.Reject(Napi::Error::New(Env(), e.Message()).Value());
    }

   private:
    Napi::Promise::Deferred deferred_;
    std::shared_ptr<ModelState> state_;
    Napi::FunctionReference on_progress_;
    Napi::ObjectReference progress_error_;
  };

  // repack(onProgress?: (fraction) => void) -> Promise<void>: the int8 repacking of the weights
  // (LlamaModel::repack), or for device 'cuda' the copy of the weights to the GPU and its KV cache,
  // off the main thread; loadModel awaits it before the model is used.
  Napi::Value Repack(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!state_) throw Napi::Error::New(env, "the model was disposed");
    if (state_->busy.load()) throw Napi::Error::New(env, "the model is running a forward step (or repacking its weights); wait for it to finish");
    Napi::Function on_progress;
    if (info.Length() > 0 && !info[0].IsUndefined()) {
      if (!info[0].IsFunction()) throw Napi::TypeError::New(env, "repack: onProgress must be a function");
      on_progress = info[0].As<Napi::Function>();
    }
    ModelState& s = *state_;
    s.busy.store(true);
    auto* worker = new RepackWorker(env, state_, on_progress);
    Napi::Promise p = worker->Promise();
    worker->Queue();
    return p;
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    if (state_ && state_->busy.load())
      throw Napi::Error::New(info.Env(), "dispose: a forward step (or the weight repacking) is running; await it first");
    state_.reset();  // a running worker keeps its own reference until it finishes
    return info.Env().Undefined();
  }

  std::shared_ptr<ModelState> state_;
};

class SynthWorker : public Napi::AsyncWorker {
 public:
  SynthWorker(Napi::Env env, std::string path, SynthSpec spec)
      : Napi::AsyncWorker(env, "tessera.synth"), deferred_(Napi::Promise::Deferred::New(env)), path_(std::move(path)), spec_(std::move(spec)) {}
  Napi::Promise Promise() { return deferred_.Promise(); }

 protected:
  void Execute() override {
    try {
      bytes_ = write_synthetic_llama(path_, spec_);
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }
  void OnOK() override { deferred_.Resolve(Napi::Number::New(Env(), (double)bytes_)); }
  void OnError(const Napi::Error& e) override { deferred_.Reject(Napi::Error::New(Env(), e.Message()).Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::string path_;
  SynthSpec spec_;
  uint64_t bytes_ = 0;
};

// writeSyntheticModel(path, { name, dim, layers, heads, kvHeads, ff, vocab, context, ropeBase,
//                             rmsEps, dtype (code), tiedOutput, seed, vocabPath }) -> Promise<bytes>
Napi::Value WriteSyntheticModel(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsObject())
    throw Napi::TypeError::New(env, "writeSyntheticModel(path: string, spec: object)");
  Napi::Object o = info[1].As<Napi::Object>();
  auto num = [&](const char* k) {
    Napi::Value v = o.Get(k);
    if (!v.IsNumber()) throw Napi::TypeError::New(env, std::string("writeSyntheticModel: ") + k + " must be a number");
    return v.As<Napi::Number>().DoubleValue();
  };
  SynthSpec s;
  s.arch = o.Get("arch").ToString().Utf8Value();
  s.weight_std = (float)num("weightStd");
  s.name = o.Get("name").ToString().Utf8Value();
  s.dim = (int32_t)num("dim");
  s.layers = (int32_t)num("layers");
  s.heads = (int32_t)num("heads");
  s.kv_heads = (int32_t)num("kvHeads");
  s.ff = (int32_t)num("ff");
  s.vocab = (int32_t)num("vocab");
  s.context = (int32_t)num("context");
  s.rope_base = (float)num("ropeBase");
  s.rms_eps = (float)num("rmsEps");
  const double dt = num("dtype");
  if (!dtype_valid((int32_t)dt)) throw Napi::RangeError::New(env, "writeSyntheticModel: bad dtype code");
  s.dtype = (DType)(int32_t)dt;
  s.tied_output = o.Get("tiedOutput").ToBoolean().Value();
  s.seed = (uint64_t)num("seed");
  s.vocab_path = o.Get("vocabPath").ToString().Utf8Value();
  auto* w = new SynthWorker(env, info[0].As<Napi::String>(), s);
  Napi::Promise p = w->Promise();
  w->Queue();
  return p;
}

}  // namespace

void register_model(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeModel", NativeModel::Define(env));
  exports.Set("writeSyntheticModel", Napi::Function::New(env, WriteSyntheticModel));
}

}  // namespace tessera
