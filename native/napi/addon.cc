// N-API binding: reads one argument object per op, re-checks sizes cheaply, calls the op
// (tessera::cpu, or tessera::ref when `reference` is set) and turns ArgError into JS errors.
// No logic lives here beyond argument plumbing; lib/ops.ts does the user-facing validation.
#include <napi.h>

#include <climits>
#include <cmath>
#include <string>

#include "../cpu/qmatmul.h"
#include "tessera/check.h"
#include "tessera/cpu_features.h"
#include "tessera/cuda_api.h"
#include "tessera/ops.h"
#include "tessera/threadpool.h"

namespace tessera {
void register_gguf(Napi::Env env, Napi::Object exports);   // native/napi/gguf.cc
void register_model(Napi::Env env, Napi::Object exports);  // native/napi/model.cc
void register_sampling(Napi::Env env, Napi::Object exports);  // native/napi/sampling.cc
}

namespace {

using namespace tessera;

// Typed access to the properties of one argument object, with errors naming the property.
class Args {
 public:
  Args(const Napi::CallbackInfo& info, const char* op) : env_(info.Env()), op_(op) {
    if (info.Length() < 1 || !info[0].IsObject())
      throw Napi::TypeError::New(env_, std::string(op) + ": expected an argument object");
    obj_ = info[0].As<Napi::Object>();
  }

  Napi::Env env() const { return env_; }

  bool has(const char* name) const {
    Napi::Value v = obj_.Get(name);
    return !v.IsUndefined() && !v.IsNull();
  }

  // Any TypedArray or ArrayBuffer view: (pointer, byte length).
  std::pair<void*, size_t> bytes(const char* name) const {
    Napi::Value v = obj_.Get(name);
    if (v.IsTypedArray()) {
      auto a = v.As<Napi::TypedArray>();
      auto buf = a.ArrayBuffer();
      return {static_cast<uint8_t*>(buf.Data()) + a.ByteOffset(), a.ByteLength()};
    }
    throw type_error(name, "a TypedArray");
  }
  float* f32(const char* name, int64_t count) const {
    return typed<float>(name, napi_float32_array, "Float32Array", count);
  }
  int32_t* i32(const char* name, int64_t count) const {
    return typed<int32_t>(name, napi_int32_array, "Int32Array", count);
  }
  uint8_t* u8(const char* name, int64_t count) const {
    return typed<uint8_t>(name, napi_uint8_array, "Uint8Array", count);
  }
  // Element count of an Int32Array (for indptr-style arrays whose length defines a size).
  int64_t length(const char* name) const {
    Napi::Value v = obj_.Get(name);
    if (!v.IsTypedArray()) throw type_error(name, "a TypedArray");
    return (int64_t)v.As<Napi::TypedArray>().ElementLength();
  }
  int64_t integer(const char* name, int64_t min, int64_t max = int64_t(1) << 53) const {
    Napi::Value v = obj_.Get(name);
    if (!v.IsNumber()) throw type_error(name, "an integer");
    const double d = v.As<Napi::Number>().DoubleValue();
    if (!(d >= (double)min && d <= (double)max) || d != std::floor(d))
      throw Napi::RangeError::New(env_, prefix(name) + " must be an integer in [" + std::to_string(min) + ", " +
                                            std::to_string(max) + "], got " + std::to_string(d));
    return (int64_t)d;
  }
  double number(const char* name) const {
    Napi::Value v = obj_.Get(name);
    if (!v.IsNumber()) throw type_error(name, "a number");
    return v.As<Napi::Number>().DoubleValue();
  }
  DType dtype(const char* name) const {
    const int64_t code = integer(name, 0);
    if (!dtype_valid((int32_t)code))
      throw Napi::RangeError::New(env_, prefix(name) + " is not a known dtype code: " + std::to_string(code));
    return (DType)code;
  }
  bool flag(const char* name) const { return obj_.Get(name).ToBoolean().Value(); }

  // Product of sizes, rejecting overflow and anything past 2^53 (no buffer is that large).
  int64_t product(std::initializer_list<int64_t> dims) const {
    int64_t p = 1;
    for (int64_t d : dims)
      if (__builtin_mul_overflow(p, d, &p) || p > (int64_t(1) << 53))
        throw Napi::RangeError::New(env_, std::string(op_) + ": sizes are too large (their product overflows)");
    return p;
  }

  // Requires `have` bytes to hold at least `need`.
  void need_bytes(const char* name, size_t have, int64_t need) const {
    if ((int64_t)have < need)
      throw Napi::RangeError::New(env_, prefix(name) + " holds " + std::to_string(have) + " bytes, needs " +
                                            std::to_string(need));
  }

 private:
  template <typename T>
  T* typed(const char* name, napi_typedarray_type type, const char* type_name, int64_t count) const {
    Napi::Value v = obj_.Get(name);
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type) throw type_error(name, type_name);
    auto a = v.As<Napi::TypedArray>();
    if ((int64_t)a.ElementLength() < count)
      throw Napi::RangeError::New(env_, prefix(name) + " has " + std::to_string(a.ElementLength()) +
                                            " elements, needs " + std::to_string(count));
    return reinterpret_cast<T*>(static_cast<uint8_t*>(a.ArrayBuffer().Data()) + a.ByteOffset());
  }
  std::string prefix(const char* name) const { return std::string(op_) + ": " + name; }
  Napi::Error type_error(const char* name, const char* expected) const {
    return Napi::TypeError::New(env_, prefix(name) + " must be " + expected);
  }

  Napi::Env env_;
  const char* op_;
  Napi::Object obj_;
};

// Runs `body`, converting tessera::ArgError into a TypeError / RangeError.
template <typename F>
Napi::Value guarded(const Napi::CallbackInfo& info, F&& body) {
  try {
    body();
  } catch (const ArgError& e) {
    if (e.kind() == ErrorKind::Type) throw Napi::TypeError::New(info.Env(), e.what());
    throw Napi::RangeError::New(info.Env(), e.what());
  }
  return info.Env().Undefined();
}

Napi::Value Matmul(const Napi::CallbackInfo& info) {
  Args a(info, "matmul");
  return guarded(info, [&] {
    const int64_t m = a.integer("m", 0), n = a.integer("n", 0), k = a.integer("k", 1);
    const DType wt = a.dtype("wDtype");
    check_matmul(wt, k);
    const float* x = a.f32("x", a.product({m, k}));
    auto [w, wbytes] = a.bytes("w");
    a.need_bytes("w", wbytes, a.product({n, dtype_bytes(wt, k)}));
    float* y = a.f32("y", a.product({m, n}));
    if (a.flag("reference")) ref::matmul(x, w, wt, y, m, n, k);
    else cpu::matmul(default_pool(), x, w, wt, y, m, n, k);
  });
}

Napi::Value Rmsnorm(const Napi::CallbackInfo& info) {
  Args a(info, "rmsnorm");
  return guarded(info, [&] {
    const int64_t rows = a.integer("rows", 0), n = a.integer("n", 1);
    const float* x = a.f32("x", a.product({rows, n}));
    const float* w = a.f32("weight", n);
    float* y = a.f32("y", a.product({rows, n}));
    const float eps = (float)a.number("eps");
    if (a.flag("reference")) ref::rmsnorm(x, w, y, rows, n, eps);
    else cpu::rmsnorm(default_pool(), x, w, y, rows, n, eps);
  });
}

Napi::Value Rope(const Napi::CallbackInfo& info) {
  Args a(info, "rope");
  return guarded(info, [&] {
    const int64_t tokens = a.integer("tokens", 0);
    const int32_t heads = (int32_t)a.integer("heads", 1, INT32_MAX), head_dim = (int32_t)a.integer("headDim", 1, INT32_MAX);
    RopeParams p;
    p.n_rot = (int32_t)a.integer("nRot", 0, INT32_MAX);
    p.theta_base = (float)a.number("thetaBase");
    p.freq_scale = (float)a.number("freqScale");
    p.mode = (RopeMode)a.integer("mode", 0, 2);
    check_rope(p, head_dim);
    float* x = a.f32("x", a.product({tokens, heads, head_dim}));
    const int32_t* pos = a.i32("positions", tokens);
    if (a.flag("reference")) ref::rope(x, pos, tokens, heads, head_dim, p);
    else cpu::rope(default_pool(), x, pos, tokens, heads, head_dim, p);
  });
}

Napi::Value Swiglu(const Napi::CallbackInfo& info) {
  Args a(info, "swiglu");
  return guarded(info, [&] {
    const int64_t n = a.integer("n", 0);
    const float* g = a.f32("gate", n);
    const float* u = a.f32("up", n);
    float* y = a.f32("y", n);
    if (a.flag("reference")) ref::swiglu(g, u, y, n);
    else cpu::swiglu(default_pool(), g, u, y, n);
  });
}

Napi::Value Softmax(const Napi::CallbackInfo& info) {
  Args a(info, "softmax");
  return guarded(info, [&] {
    const int64_t rows = a.integer("rows", 0), n = a.integer("n", 1);
    const float* x = a.f32("x", a.product({rows, n}));
    float* y = a.f32("y", a.product({rows, n}));
    if (a.flag("reference")) ref::softmax(x, y, rows, n);
    else cpu::softmax(default_pool(), x, y, rows, n);
  });
}

AttnShape attn_shape(const Args& a) {
  AttnShape s;
  s.n_heads = (int32_t)a.integer("nHeads", 1, INT32_MAX);
  s.n_kv_heads = (int32_t)a.integer("nKvHeads", 1, INT32_MAX);
  s.head_dim = (int32_t)a.integer("headDim", 1, INT32_MAX);
  s.scale = (float)a.number("scale");
  check_attn_shape(s);
  return s;
}

Napi::Value VarlenAttention(const Napi::CallbackInfo& info) {
  Args a(info, "varlenAttention");
  return guarded(info, [&] {
    const AttnShape s = attn_shape(a);
    const int64_t T = a.integer("tokens", 0);
    VarlenBatch batch;
    batch.num_seqs = (int32_t)(a.length("cuSeqlens") - 1);
    batch.cu_seqlens = a.i32("cuSeqlens", batch.num_seqs + 1);
    check_varlen(batch, T);
    const float* q = a.f32("q", a.product({T, s.n_heads, s.head_dim}));
    const float* k = a.f32("k", a.product({T, s.n_kv_heads, s.head_dim}));
    const float* v = a.f32("v", a.product({T, s.n_kv_heads, s.head_dim}));
    float* o = a.f32("o", a.product({T, s.n_heads, s.head_dim}));
    if (a.flag("reference")) ref::varlen_attention(q, k, v, o, batch, s);
    else cpu::varlen_attention(default_pool(), q, k, v, o, batch, s);
  });
}

// The page pool and page table of a paged op, fully checked.
PagedKv paged_kv(const Args& a) {
  PagedKv kv;
  kv.kv_dtype = a.dtype("kvDtype");
  kv.num_pages = (int32_t)a.integer("numPages", 0, INT32_MAX);
  kv.page_size = (int32_t)a.integer("pageSize", 1, INT32_MAX);
  kv.n_kv_heads = (int32_t)a.integer("nKvHeads", 1, INT32_MAX);
  kv.head_dim = (int32_t)a.integer("headDim", 1, INT32_MAX);
  kv.batch = (int32_t)(a.length("kvIndptr") - 1);
  if (kv.batch < 0) throw_range("kvIndptr must have at least one element");
  kv.indptr = a.i32("kvIndptr", kv.batch + 1);
  const int64_t nnz = a.length("kvIndices");
  kv.indices = a.i32("kvIndices", nnz);
  kv.last_page_len = a.i32("kvLastPageLen", kv.batch);
  check_paged(kv, nnz);
  const int64_t pool_bytes = dtype_bytes(
      kv.kv_dtype, a.product({kv.num_pages, kv.page_size, kv.n_kv_heads, kv.head_dim, 2}) / 2);
  auto [kp, kbytes] = a.bytes("kPages");
  auto [vp, vbytes] = a.bytes("vPages");
  a.need_bytes("kPages", kbytes, pool_bytes);
  a.need_bytes("vPages", vbytes, pool_bytes);
  kv.k_pages = kp;
  kv.v_pages = vp;
  return kv;
}

Napi::Value PagedAttention(const Napi::CallbackInfo& info) {
  Args a(info, "pagedAttention");
  return guarded(info, [&] {
    const PagedKv kv = paged_kv(a);
    const AttnShape s = attn_shape(a);
    if (s.n_kv_heads != kv.n_kv_heads || s.head_dim != kv.head_dim)
      throw_range("pagedAttention: nKvHeads/headDim of the query shape and the page pool differ");
    const int64_t Tq = a.integer("tokens", 0);
    const int32_t* qo = a.i32("qoIndptr", kv.batch + 1);
    if (a.length("qoIndptr") != kv.batch + 1)
      throw_range("qoIndptr must have as many elements as kvIndptr (batch + 1)");
    TreeMask tree;
    const bool has_tree = a.has("mask");
    int64_t mask_len = 0;
    if (has_tree) {
      mask_len = a.length("mask");
      tree.mask = a.u8("mask", mask_len);
      tree.indptr = a.i32("maskIndptr", kv.batch + 1);
    }
    check_paged_queries(qo, Tq, kv, has_tree ? &tree : nullptr, mask_len);
    const float* q = a.f32("q", a.product({Tq, s.n_heads, s.head_dim}));
    float* o = a.f32("o", a.product({Tq, s.n_heads, s.head_dim}));
    if (a.flag("reference")) ref::paged_attention(q, qo, kv, has_tree ? &tree : nullptr, o, s);
    else cpu::paged_attention(default_pool(), q, qo, kv, has_tree ? &tree : nullptr, o, s);
  });
}

Napi::Value KvAppend(const Napi::CallbackInfo& info) {
  Args a(info, "kvAppend");
  return guarded(info, [&] {
    const PagedKv kv = paged_kv(a);
    const int64_t T = a.integer("tokens", 0);
    const int32_t* bi = a.i32("batchIndices", T);
    const int32_t* pos = a.i32("positions", T);
    check_kv_append(bi, pos, T, kv);
    const float* k = a.f32("k", a.product({T, kv.n_kv_heads, kv.head_dim}));
    const float* v = a.f32("v", a.product({T, kv.n_kv_heads, kv.head_dim}));
    if (a.flag("reference")) ref::kv_append(k, v, bi, pos, T, kv);
    else cpu::kv_append(default_pool(), k, v, bi, pos, T, kv);
  });
}

Napi::Value Convert(const Napi::CallbackInfo& info) {
  Args a(info, "convert");
  return guarded(info, [&] {
    const DType st = a.dtype("srcDtype"), dt = a.dtype("dstDtype");
    const int64_t n = a.integer("n", 0);
    check_convert(st, dt, n);
    auto [src, sbytes] = a.bytes("src");
    auto [dst, dbytes] = a.bytes("dst");
    a.need_bytes("src", sbytes, dtype_bytes(st, n));
    a.need_bytes("dst", dbytes, dtype_bytes(dt, n));
    if (a.flag("reference")) ref::convert(src, st, dst, dt, n);
    else cpu::convert(default_pool(), src, st, dst, dt, n);
  });
}

Napi::Value SetThreads(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throw Napi::TypeError::New(info.Env(), "threads must be a number");
  const int64_t n = info[0].As<Napi::Number>().Int64Value();
  if (n < 0 || n > 1024) throw Napi::RangeError::New(info.Env(), "threads must be in [0, 1024] (0 = all cores)");
  set_default_pool_threads((int)n);
  return Napi::Number::New(info.Env(), default_pool().size());
}

Napi::Value SetIsa(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(info.Env(), "isa must be a string");
  const std::string want = info[0].As<Napi::String>();
  for (CpuIsa isa : {CpuIsa::Scalar, CpuIsa::Avx2, CpuIsa::Avx512, CpuIsa::Neon})
    if (want == isa_name(isa)) return Napi::Boolean::New(info.Env(), set_active_isa(isa));
  throw Napi::RangeError::New(info.Env(), "isa must be one of scalar, avx2, avx512, neon; got " + want);
}

Napi::Value Info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("isa", isa_name(active_isa()));
  o.Set("bestIsa", isa_name(best_isa()));
  Napi::Array isas = Napi::Array::New(env);
  uint32_t i = 0;
  for (CpuIsa isa : {CpuIsa::Scalar, CpuIsa::Avx2, CpuIsa::Avx512, CpuIsa::Neon})
    if (isa_supported(isa)) isas.Set(i++, isa_name(isa));
  o.Set("isas", isas);
  o.Set("cpuFeatures", cpu_feature_string());
  // Quantised matmuls: packed int8 tiles with AMX for prefill and VNNI otherwise, VNNI only, or the
  // kernel set's own dot products on the file's layout.
  o.Set("int8Path", !cpu::int8_path_active() ? "none" : cpu::amx_enabled() ? "amx+vnni" : "vnni");
  o.Set("threads", default_pool().size());
  o.Set("cores", ThreadPool::available_cores());

  Napi::Object cuda = Napi::Object::New(env);
  const CudaProbe probe = cuda_probe();
  cuda.Set("compiled", cuda_compiled());
  cuda.Set("usable", probe.usable);
  cuda.Set("reason", probe.reason);
  cuda.Set("driverVersion", probe.driver_version);
  cuda.Set("runtimeVersion", probe.runtime_version);
  Napi::Array devs = Napi::Array::New(env);
  for (size_t d = 0; d < probe.devices.size(); d++) {
    Napi::Object dev = Napi::Object::New(env);
    dev.Set("index", probe.devices[d].index);
    dev.Set("name", probe.devices[d].name);
    dev.Set("computeCapability",
            std::to_string(probe.devices[d].cc_major) + "." + std::to_string(probe.devices[d].cc_minor));
    dev.Set("totalMemory", (double)probe.devices[d].total_mem);
    devs.Set((uint32_t)d, dev);
  }
  cuda.Set("devices", devs);
  o.Set("cuda", cuda);
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("info", Napi::Function::New(env, Info));
  exports.Set("setThreads", Napi::Function::New(env, SetThreads));
  exports.Set("setIsa", Napi::Function::New(env, SetIsa));
  exports.Set("matmul", Napi::Function::New(env, Matmul));
  exports.Set("rmsnorm", Napi::Function::New(env, Rmsnorm));
  exports.Set("rope", Napi::Function::New(env, Rope));
  exports.Set("swiglu", Napi::Function::New(env, Swiglu));
  exports.Set("softmax", Napi::Function::New(env, Softmax));
  exports.Set("varlenAttention", Napi::Function::New(env, VarlenAttention));
  exports.Set("pagedAttention", Napi::Function::New(env, PagedAttention));
  exports.Set("kvAppend", Napi::Function::New(env, KvAppend));
  exports.Set("convert", Napi::Function::New(env, Convert));
  register_gguf(env, exports);
  register_model(env, exports);
  register_sampling(env, exports);
  return exports;
}

}  // namespace

NODE_API_MODULE(tessera, Init)
