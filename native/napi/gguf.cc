// N-API binding of the GGUF container (tessera/gguf.h): ggufRead(path) and ggufWrite(path, spec).
// Argument plumbing only: GgufError becomes a JS Error with the same message; bad arguments become
// TypeError / RangeError naming the argument.
#include <napi.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "tessera/dtype.h"
#include "tessera/gguf.h"

namespace tessera {

namespace {

constexpr double kMaxSafeInteger = 9007199254740991.0;  // Number.MAX_SAFE_INTEGER

constexpr napi_property_attributes kDataProperty =
    static_cast<napi_property_attributes>(napi_writable | napi_enumerable | napi_configurable);

// obj[key] = value as an own data property (no setters run, so a "__proto__" key is just a key).
void define(Napi::Env env, Napi::Object obj, const std::string& key, Napi::Value value) {
  obj.DefineProperty(Napi::PropertyDescriptor::Value(Napi::String::New(env, key), value, kDataProperty));
}

template <typename T>
Napi::Value typed_copy(Napi::Env env, const GgufValue& v, napi_typedarray_type type) {
  auto arr = Napi::TypedArrayOf<T>::New(env, (size_t)v.size(), type);
  if (v.raw_bytes()) memcpy(arr.Data(), v.raw(), v.raw_bytes());
  return arr;
}

Napi::Value u64_to_js(Napi::Env env, uint64_t u) {
  if (u <= 9007199254740991ull) return Napi::Number::New(env, (double)u);
  return Napi::BigInt::New(env, u);
}

Napi::Value i64_to_js(Napi::Env env, int64_t i) {
  if (i >= -(int64_t)kMaxSafeInteger && i <= (int64_t)kMaxSafeInteger) return Napi::Number::New(env, (double)i);
  return Napi::BigInt::New(env, i);
}

Napi::Value value_to_js(Napi::Env env, const GgufValue& v) {
  switch (v.type()) {
    case GgufType::U8:
    case GgufType::I8:
    case GgufType::U16:
    case GgufType::I16:
    case GgufType::U32:
    case GgufType::I32:
    case GgufType::F32:
    case GgufType::F64: return Napi::Number::New(env, v.as_f64());
    case GgufType::U64: return u64_to_js(env, v.as_u64());
    case GgufType::I64: return i64_to_js(env, v.as_i64());
    case GgufType::Bool: return Napi::Boolean::New(env, v.as_bool());
    case GgufType::String: return Napi::String::New(env, v.as_string());
    case GgufType::Array: break;
  }
  switch (v.elem_type()) {
    case GgufType::U8: return typed_copy<uint8_t>(env, v, napi_uint8_array);
    case GgufType::I8: return typed_copy<int8_t>(env, v, napi_int8_array);
    case GgufType::U16: return typed_copy<uint16_t>(env, v, napi_uint16_array);
    case GgufType::I16: return typed_copy<int16_t>(env, v, napi_int16_array);
    case GgufType::U32: return typed_copy<uint32_t>(env, v, napi_uint32_array);
    case GgufType::I32: return typed_copy<int32_t>(env, v, napi_int32_array);
    case GgufType::F32: return typed_copy<float>(env, v, napi_float32_array);
    case GgufType::F64: return typed_copy<double>(env, v, napi_float64_array);
    case GgufType::U64: return typed_copy<uint64_t>(env, v, napi_biguint64_array);
    case GgufType::I64: return typed_copy<int64_t>(env, v, napi_bigint64_array);
    case GgufType::Bool: {
      Napi::Array a = Napi::Array::New(env, (size_t)v.size());
      for (uint32_t i = 0; i < (uint32_t)v.size(); ++i) a.Set(i, Napi::Boolean::New(env, v.raw()[i] != 0));
      return a;
    }
    case GgufType::String: {
      const auto& s = v.strings();
      Napi::Array a = Napi::Array::New(env, s.size());
      for (uint32_t i = 0; i < (uint32_t)s.size(); ++i) a.Set(i, Napi::String::New(env, s[i]));
      return a;
    }
    case GgufType::Array: {
      const auto& items = v.items();
      Napi::Array a = Napi::Array::New(env, items.size());
      for (uint32_t i = 0; i < (uint32_t)items.size(); ++i) a.Set(i, value_to_js(env, items[i]));
      return a;
    }
  }
  return env.Undefined();
}

Napi::Value GgufRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "ggufRead: path must be a string");
  const std::string path = info[0].As<Napi::String>();
  try {
    const GgufFile f(path);  // parsed synchronously; unmapped when this scope ends
    Napi::Object out = Napi::Object::New(env);
    out.Set("version", f.version());
    out.Set("alignment", f.alignment());
    out.Set("dataOffset", (double)f.data_offset());
    out.Set("fileSize", (double)f.file_size());
    Napi::Object meta = Napi::Object::New(env);
    Napi::Object types = Napi::Object::New(env);
    for (const auto& kv : f.metadata()) {
      define(env, meta, kv.first, value_to_js(env, kv.second));
      define(env, types, kv.first, Napi::String::New(env, kv.second.type_string()));
    }
    out.Set("metadata", meta);
    out.Set("metadataTypes", types);
    Napi::Array tensors = Napi::Array::New(env, f.tensors().size());
    for (size_t i = 0; i < f.tensors().size(); ++i) {
      const GgufTensor& t = f.tensors()[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", Napi::String::New(env, t.name));
      o.Set("type", t.type_name());
      o.Set("ggmlType", t.ggml_type);
      Napi::Array shape = Napi::Array::New(env, t.shape.size());
      for (uint32_t d = 0; d < (uint32_t)t.shape.size(); ++d) shape.Set(d, (double)t.shape[d]);
      o.Set("shape", shape);
      o.Set("offset", (double)t.offset);
      o.Set("byteSize", (double)t.byte_size);
      tensors.Set((uint32_t)i, o);
    }
    out.Set("tensors", tensors);
    return out;
  } catch (const GgufError& e) {
    throw Napi::Error::New(env, e.what());
  }
}

// ---------------------------------------------------------------------------------------------
// ggufWrite
// ---------------------------------------------------------------------------------------------

// A metadata type string: a base type and an array depth ("f32[]" -> F32, 1).
struct TypeSpec {
  GgufType base;
  int depth;
};

bool parse_type(const std::string& s, TypeSpec* out) {
  std::string b = s;
  int depth = 0;
  while (b.size() >= 2 && b.compare(b.size() - 2, 2, "[]") == 0) {
    b.resize(b.size() - 2);
    ++depth;
  }
  for (uint32_t t = 0; t < kGgufNumTypes; ++t) {
    if ((GgufType)t == GgufType::Array) continue;
    if (b == gguf_type_name((GgufType)t)) {
      *out = {(GgufType)t, depth};
      return true;
    }
  }
  if (b == "array" && depth >= 1) {  // "array[]": an empty array of arrays, as ggufRead names it
    *out = {GgufType::U8, depth + 1};
    return true;
  }
  return false;
}

class Converter {
 public:
  explicit Converter(Napi::Env env) : env_(env) {}

  [[noreturn]] void type_error(const std::string& where, const std::string& expected) const {
    throw Napi::TypeError::New(env_, "ggufWrite: " + where + " must be " + expected);
  }
  [[noreturn]] void range_error(const std::string& where, const std::string& msg) const {
    throw Napi::RangeError::New(env_, "ggufWrite: " + where + " " + msg);
  }

  // An integer in [lo, hi] from a Number (exact integer) or a BigInt.
  void integer(Napi::Value v, const std::string& where, bool is_signed, uint64_t* u, int64_t* i, double lo,
               double hi) const {
    if (v.IsBigInt()) {
      bool lossless = false;
      if (is_signed) {
        *i = v.As<Napi::BigInt>().Int64Value(&lossless);
        if (!lossless || (double)*i < lo || (double)*i > hi) range_error(where, "is out of range");
        *u = (uint64_t)*i;
      } else {
        *u = v.As<Napi::BigInt>().Uint64Value(&lossless);
        if (!lossless || (double)*u > hi) range_error(where, "is out of range");
        *i = (int64_t)*u;
      }
      return;
    }
    if (!v.IsNumber()) type_error(where, "an integer (number or bigint)");
    const double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d) || d != std::floor(d)) type_error(where, "an integer");
    // 2^63 and 2^64 are representable doubles but not int64 / uint64 values.
    if (d < lo || d > hi || d >= (is_signed ? 9223372036854775808.0 : 18446744073709551616.0))
      range_error(where, "is out of range (" + std::to_string(d) + ")");
    if (is_signed) {
      *i = (int64_t)d;
      *u = (uint64_t)*i;
    } else {
      *u = (uint64_t)d;
      *i = (int64_t)*u;
    }
  }

  // Appends the packed little-endian bytes of one scalar of type t to out.
  void scalar_bytes(Napi::Value v, GgufType t, const std::string& where, std::vector<uint8_t>& out) const {
    uint64_t u = 0;
    int64_t i = 0;
    auto put = [&](const void* p, size_t n) {
      const uint8_t* b = static_cast<const uint8_t*>(p);
      out.insert(out.end(), b, b + n);
    };
    switch (t) {
      case GgufType::U8: { integer(v, where, false, &u, &i, 0, 255); const uint8_t x = (uint8_t)u; put(&x, 1); return; }
      case GgufType::I8: { integer(v, where, true, &u, &i, -128, 127); const int8_t x = (int8_t)i; put(&x, 1); return; }
      case GgufType::U16: { integer(v, where, false, &u, &i, 0, 65535); const uint16_t x = (uint16_t)u; put(&x, 2); return; }
      case GgufType::I16: { integer(v, where, true, &u, &i, -32768, 32767); const int16_t x = (int16_t)i; put(&x, 2); return; }
      case GgufType::U32: { integer(v, where, false, &u, &i, 0, 4294967295.0); const uint32_t x = (uint32_t)u; put(&x, 4); return; }
      case GgufType::I32: { integer(v, where, true, &u, &i, -2147483648.0, 2147483647.0); const int32_t x = (int32_t)i; put(&x, 4); return; }
      case GgufType::U64: { integer(v, where, false, &u, &i, 0, 18446744073709551615.0); put(&u, 8); return; }
      case GgufType::I64: { integer(v, where, true, &u, &i, -9223372036854775808.0, 9223372036854775807.0); put(&i, 8); return; }
      case GgufType::F32: {
        if (!v.IsNumber()) type_error(where, "a number");
        const double dv = v.As<Napi::Number>().DoubleValue();
        const double fmax = (double)std::numeric_limits<float>::max();
        const float x = dv > fmax    ? std::numeric_limits<float>::infinity()
                        : dv < -fmax ? -std::numeric_limits<float>::infinity()
                                     : (float)dv;  // NaN passes through
        put(&x, 4);
        return;
      }
      case GgufType::F64: {
        if (!v.IsNumber()) type_error(where, "a number");
        const double x = v.As<Napi::Number>().DoubleValue();
        put(&x, 8);
        return;
      }
      case GgufType::Bool: {
        if (!v.IsBoolean()) type_error(where, "a boolean");
        const uint8_t x = v.As<Napi::Boolean>().Value() ? 1 : 0;
        put(&x, 1);
        return;
      }
      case GgufType::String:
      case GgufType::Array: break;
    }
    type_error(where, "a scalar");
  }

  static napi_typedarray_type typed_for(GgufType t) {
    switch (t) {
      case GgufType::U8:
      case GgufType::Bool: return napi_uint8_array;
      case GgufType::I8: return napi_int8_array;
      case GgufType::U16: return napi_uint16_array;
      case GgufType::I16: return napi_int16_array;
      case GgufType::U32: return napi_uint32_array;
      case GgufType::I32: return napi_int32_array;
      case GgufType::F32: return napi_float32_array;
      case GgufType::F64: return napi_float64_array;
      case GgufType::U64: return napi_biguint64_array;
      case GgufType::I64: return napi_bigint64_array;
      default: return (napi_typedarray_type)-1;
    }
  }

  GgufValue value(Napi::Value v, TypeSpec spec, const std::string& where) const {
    if (spec.depth == 0) {
      if (spec.base == GgufType::String) {
        if (!v.IsString()) type_error(where, "a string");
        return GgufValue::string(v.As<Napi::String>().Utf8Value());
      }
      std::vector<uint8_t> b;
      scalar_bytes(v, spec.base, where, b);
      switch (spec.base) {  // re-wrap as a scalar
        case GgufType::U8: { uint8_t x; memcpy(&x, b.data(), 1); return GgufValue::u8(x); }
        case GgufType::I8: { int8_t x; memcpy(&x, b.data(), 1); return GgufValue::i8(x); }
        case GgufType::U16: { uint16_t x; memcpy(&x, b.data(), 2); return GgufValue::u16(x); }
        case GgufType::I16: { int16_t x; memcpy(&x, b.data(), 2); return GgufValue::i16(x); }
        case GgufType::U32: { uint32_t x; memcpy(&x, b.data(), 4); return GgufValue::u32(x); }
        case GgufType::I32: { int32_t x; memcpy(&x, b.data(), 4); return GgufValue::i32(x); }
        case GgufType::F32: { float x; memcpy(&x, b.data(), 4); return GgufValue::f32(x); }
        case GgufType::U64: { uint64_t x; memcpy(&x, b.data(), 8); return GgufValue::u64(x); }
        case GgufType::I64: { int64_t x; memcpy(&x, b.data(), 8); return GgufValue::i64(x); }
        case GgufType::F64: { double x; memcpy(&x, b.data(), 8); return GgufValue::f64(x); }
        case GgufType::Bool: return GgufValue::boolean(b[0] != 0);
        default: type_error(where, "a scalar");
      }
    }
    if (spec.depth == 1 && spec.base != GgufType::String && v.IsTypedArray() &&
        v.As<Napi::TypedArray>().TypedArrayType() == typed_for(spec.base)) {
      auto ta = v.As<Napi::TypedArray>();
      const uint8_t* p = static_cast<const uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
      return GgufValue::numeric_array(spec.base, p, ta.ElementLength());
    }
    if (!v.IsArray())
      type_error(where, spec.depth == 1 && spec.base != GgufType::String
                            ? std::string("an array or a ") + typed_name(spec.base)
                            : std::string("an array"));
    Napi::Array a = v.As<Napi::Array>();
    const uint32_t n = a.Length();
    const TypeSpec inner{spec.base, spec.depth - 1};
    if (spec.depth >= 2) {
      std::vector<GgufValue> items;
      items.reserve(n);
      for (uint32_t i = 0; i < n; ++i) items.push_back(value(a.Get(i), inner, where + "[" + std::to_string(i) + "]"));
      return GgufValue::array_of_arrays(std::move(items));
    }
    if (spec.base == GgufType::String) {
      std::vector<std::string> s;
      s.reserve(n);
      for (uint32_t i = 0; i < n; ++i) {
        Napi::Value e = a.Get(i);
        if (!e.IsString()) type_error(where + "[" + std::to_string(i) + "]", "a string");
        s.push_back(e.As<Napi::String>().Utf8Value());
      }
      return GgufValue::string_array(std::move(s));
    }
    std::vector<uint8_t> b;
    b.reserve((size_t)n * gguf_type_size(spec.base));
    for (uint32_t i = 0; i < n; ++i) scalar_bytes(a.Get(i), spec.base, where + "[" + std::to_string(i) + "]", b);
    return GgufValue::numeric_array(spec.base, b.data(), n);
  }

  static const char* typed_name(GgufType t) {
    switch (t) {
      case GgufType::U8:
      case GgufType::Bool: return "Uint8Array";
      case GgufType::I8: return "Int8Array";
      case GgufType::U16: return "Uint16Array";
      case GgufType::I16: return "Int16Array";
      case GgufType::U32: return "Uint32Array";
      case GgufType::I32: return "Int32Array";
      case GgufType::F32: return "Float32Array";
      case GgufType::F64: return "Float64Array";
      case GgufType::U64: return "BigUint64Array";
      case GgufType::I64: return "BigInt64Array";
      default: return "TypedArray";
    }
  }

 private:
  Napi::Env env_;
};

// dtype: a tessera dtype name ("f32", "q8_0", ...) or code; returns the ggml type id.
uint32_t tensor_type(const Converter& c, Napi::Object t, const std::string& where) {
  Napi::Value g = t.Get("ggmlType");
  if (!g.IsUndefined() && !g.IsNull()) {
    uint64_t u;
    int64_t i;
    c.integer(g, where + ".ggmlType", false, &u, &i, 0, 4294967295.0);
    if (!ggml_type_info((uint32_t)u, nullptr)) c.range_error(where + ".ggmlType", "is not a known ggml type: " + std::to_string(u));
    return (uint32_t)u;
  }
  Napi::Value d = t.Get("dtype");
  DType dt;
  if (d.IsString()) {
    const std::string name = d.As<Napi::String>();
    bool found = false;
    for (int32_t code = 0; code < kNumDTypes; ++code) {
      if (name == dtype_info((DType)code).name) {
        dt = (DType)code;
        found = true;
        break;
      }
    }
    if (!found) c.range_error(where + ".dtype", "is not a tessera dtype: " + name);
  } else if (d.IsNumber()) {
    uint64_t u;
    int64_t i;
    c.integer(d, where + ".dtype", false, &u, &i, 0, 1e9);
    if (!dtype_valid((int32_t)u)) c.range_error(where + ".dtype", "is not a known dtype code: " + std::to_string(u));
    dt = (DType)u;
  } else {
    c.type_error(where + ".dtype", "a dtype name or code (or give ggmlType)");
  }
  const int64_t g_id = ggml_from_dtype(dt);
  if (g_id < 0) c.range_error(where + ".dtype", std::string("(") + dtype_info(dt).name + ") has no GGUF type");
  return (uint32_t)g_id;
}

Napi::Value GgufWrite(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const Converter c(env);
  if (info.Length() < 2 || !info[0].IsString() || !info[1].IsObject())
    throw Napi::TypeError::New(env, "ggufWrite: expected (path: string, { metadata, tensors })");
  const std::string path = info[0].As<Napi::String>();
  Napi::Object spec = info[1].As<Napi::Object>();
  try {
    GgufWriter w;
    Napi::Value mv = spec.Get("metadata");
    if (!mv.IsUndefined() && !mv.IsNull()) {
      if (!mv.IsArray()) c.type_error("metadata", "an array of { key, type, value }");
      Napi::Array meta = mv.As<Napi::Array>();
      for (uint32_t i = 0; i < meta.Length(); ++i) {
        const std::string where = "metadata[" + std::to_string(i) + "]";
        Napi::Value ev = meta.Get(i);
        if (!ev.IsObject()) c.type_error(where, "an object { key, type, value }");
        Napi::Object e = ev.As<Napi::Object>();
        Napi::Value k = e.Get("key"), ty = e.Get("type");
        if (!k.IsString()) c.type_error(where + ".key", "a string");
        if (!ty.IsString()) c.type_error(where + ".type", "a type string such as 'u32', 'string', 'f32[]'");
        const std::string key = k.As<Napi::String>().Utf8Value();
        const std::string type = ty.As<Napi::String>().Utf8Value();
        TypeSpec ts;
        if (!parse_type(type, &ts))
          c.range_error(where + ".type", "'" + type +
                                             "' is not a GGUF type (u8 i8 u16 i16 u32 i32 u64 i64 f32 f64 bool "
                                             "string, with [] per array level)");
        w.set(key, c.value(e.Get("value"), ts, where + ".value"));
      }
    }
    Napi::Value tv = spec.Get("tensors");
    if (!tv.IsUndefined() && !tv.IsNull()) {
      if (!tv.IsArray()) c.type_error("tensors", "an array of { name, dtype, shape, data }");
      Napi::Array ts = tv.As<Napi::Array>();
      for (uint32_t i = 0; i < ts.Length(); ++i) {
        const std::string where = "tensors[" + std::to_string(i) + "]";
        Napi::Value ev = ts.Get(i);
        if (!ev.IsObject()) c.type_error(where, "an object { name, dtype, shape, data }");
        Napi::Object t = ev.As<Napi::Object>();
        Napi::Value nm = t.Get("name");
        if (!nm.IsString()) c.type_error(where + ".name", "a string");
        const uint32_t type = tensor_type(c, t, where);
        Napi::Value sv = t.Get("shape");
        if (!sv.IsArray()) c.type_error(where + ".shape", "an array of dimensions (GGUF order, ne[0] first)");
        Napi::Array sa = sv.As<Napi::Array>();
        std::vector<int64_t> shape;
        for (uint32_t d = 0; d < sa.Length(); ++d) {
          uint64_t u;
          int64_t s;
          c.integer(sa.Get(d), where + ".shape[" + std::to_string(d) + "]", true, &u, &s, 0, kMaxSafeInteger);
          shape.push_back(s);
        }
        Napi::Value dv = t.Get("data");
        if (!dv.IsTypedArray()) c.type_error(where + ".data", "a TypedArray");
        auto ta = dv.As<Napi::TypedArray>();
        const uint8_t* p = static_cast<const uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
        const std::string name = nm.As<Napi::String>().Utf8Value();
        w.add_tensor_ggml(name, type, shape, p);
        // The byte size is known once the shape is validated: the data must match it exactly.
        GgmlTypeInfo gi;
        ggml_type_info(type, &gi);
        uint64_t n = 1;
        for (int64_t d : shape) n *= (uint64_t)d;
        const uint64_t need = n / (uint64_t)gi.block_elems * (uint64_t)gi.block_bytes;
        if ((uint64_t)ta.ByteLength() != need)
          c.range_error(where + ".data", "holds " + std::to_string(ta.ByteLength()) + " bytes, needs " +
                                             std::to_string(need) + " for " + gi.name + " of this shape");
      }
    }
    return Napi::Number::New(env, (double)w.write(path));
  } catch (const GgufError& e) {
    throw Napi::Error::New(env, e.what());
  }
}

}  // namespace

void register_gguf(Napi::Env env, Napi::Object exports) {
  exports.Set("ggufRead", Napi::Function::New(env, GgufRead, "ggufRead"));
  exports.Set("ggufWrite", Napi::Function::New(env, GgufWrite, "ggufWrite"));
}

}  // namespace tessera
