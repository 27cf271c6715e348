// GGUF reader (mmap, every read bounds-checked) and streaming writer. See tessera/gguf.h.
#include "tessera/gguf.h"

#include <algorithm>
#include <cerrno>
#include <cinttypes>
#include <cstdio>
#include <cstring>
#include <limits>

#ifdef _WIN32
#ifndef NOMINMAX
#define NOMINMAX
#endif
#ifndef WIN32_LEAN_AND_MEAN
#define WIN32_LEAN_AND_MEAN
#endif
#include <windows.h>
#else
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#endif

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__)
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the GGUF reader assumes a little-endian host");
#endif

namespace tessera {

namespace {

constexpr uint32_t kGgufMagic = 0x46554747u;  // "GGUF" read as a little-endian u32
constexpr uint32_t kDefaultAlignment = 32;
constexpr int kMaxArrayDepth = 16;             // nested arrays deeper than this are rejected
constexpr uint64_t kMaxArrayElements = 1ull << 32;
constexpr size_t kMaxTensorName = 63;          // llama.cpp: GGML_MAX_NAME (64) including the NUL

std::string u64s(uint64_t v) { return std::to_string(v); }

bool mul_overflow_u64(uint64_t a, uint64_t b, uint64_t* out) {
  if (a != 0 && b > std::numeric_limits<uint64_t>::max() / a) return true;
  *out = a * b;
  return false;
}

bool is_pow2(uint64_t v) { return v != 0 && (v & (v - 1)) == 0; }

// Rounds v up to a multiple of a (a power of two); false on overflow.
bool align_up(uint64_t v, uint64_t a, uint64_t* out) {
  const uint64_t r = v & (a - 1);
  if (r == 0) {
    *out = v;
    return true;
  }
  const uint64_t add = a - r;
  if (v > std::numeric_limits<uint64_t>::max() - add) return false;
  *out = v + add;
  return true;
}

// Same for values known not to overflow (the writer bounds every size it accepts).
uint64_t pad_to(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

// Printable, shortened form of a name for error messages (names come from untrusted files).
std::string quoted(const std::string& s) {
  std::string out = "'";
  const size_t n = std::min<size_t>(s.size(), 80);
  for (size_t i = 0; i < n; ++i) {
    const unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out += (char)c;
    } else {
      char buf[8];
      snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    }
  }
  if (s.size() > n) out += "...";
  return out + "'";
}

bool valid_type_code(uint32_t t) { return t < kGgufNumTypes; }

// double -> float without undefined behaviour for values outside float's range.
float to_float(double d) {
  if (d > (double)std::numeric_limits<float>::max()) return std::numeric_limits<float>::infinity();
  if (d < -(double)std::numeric_limits<float>::max()) return -std::numeric_limits<float>::infinity();
  return (float)d;
}

// ggml type layouts (ggml.c type_traits; ids removed from GGUF have block_elems 0).
struct TypeRow {
  const char* name;
  int32_t block_elems;
  int32_t block_bytes;
};
constexpr TypeRow kGgmlTypes[] = {
    {"F32", 1, 4},        // 0
    {"F16", 1, 2},        // 1
    {"Q4_0", 32, 18},     // 2
    {"Q4_1", 32, 20},     // 3
    {nullptr, 0, 0},      // 4 (Q4_2, removed)
    {nullptr, 0, 0},      // 5 (Q4_3, removed)
    {"Q5_0", 32, 22},     // 6
    {"Q5_1", 32, 24},     // 7
    {"Q8_0", 32, 34},     // 8
    {"Q8_1", 32, 36},     // 9
    {"Q2_K", 256, 84},    // 10
    {"Q3_K", 256, 110},   // 11
    {"Q4_K", 256, 144},   // 12
    {"Q5_K", 256, 176},   // 13
    {"Q6_K", 256, 210},   // 14
    {"Q8_K", 256, 292},   // 15
    {"IQ2_XXS", 256, 66}, // 16
    {"IQ2_XS", 256, 74},  // 17
    {"IQ3_XXS", 256, 98}, // 18
    {"IQ1_S", 256, 50},   // 19
    {"IQ4_NL", 32, 18},   // 20
    {"IQ3_S", 256, 110},  // 21
    {"IQ2_S", 256, 82},   // 22
    {"IQ4_XS", 256, 136}, // 23
    {"I8", 1, 1},         // 24
    {"I16", 1, 2},        // 25
    {"I32", 1, 4},        // 26
    {"I64", 1, 8},        // 27
    {"F64", 1, 8},        // 28
    {"IQ1_M", 256, 56},   // 29
    {"BF16", 1, 2},       // 30
    {nullptr, 0, 0},      // 31 (Q4_0_4_4, removed from GGUF)
    {nullptr, 0, 0},      // 32 (Q4_0_4_8, removed)
    {nullptr, 0, 0},      // 33 (Q4_0_8_8, removed)
    {"TQ1_0", 256, 54},   // 34
    {"TQ2_0", 256, 66},   // 35
    {nullptr, 0, 0},      // 36 (IQ4_NL_4_4, removed)
    {nullptr, 0, 0},      // 37 (IQ4_NL_4_8, removed)
    {nullptr, 0, 0},      // 38 (IQ4_NL_8_8, removed)
    {"MXFP4", 32, 17},    // 39
    {"NVFP4", 64, 36},    // 40
    {"Q1_0", 128, 18},    // 41
};
constexpr uint32_t kNumGgmlTypes = sizeof(kGgmlTypes) / sizeof(kGgmlTypes[0]);

}  // namespace

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

const char* gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::U8: return "u8";
    case GgufType::I8: return "i8";
    case GgufType::U16: return "u16";
    case GgufType::I16: return "i16";
    case GgufType::U32: return "u32";
    case GgufType::I32: return "i32";
    case GgufType::F32: return "f32";
    case GgufType::Bool: return "bool";
    case GgufType::String: return "string";
    case GgufType::Array: return "array";
    case GgufType::U64: return "u64";
    case GgufType::I64: return "i64";
    case GgufType::F64: return "f64";
  }
  return "invalid";
}

size_t gguf_type_size(GgufType t) {
  switch (t) {
    case GgufType::U8:
    case GgufType::I8:
    case GgufType::Bool: return 1;
    case GgufType::U16:
    case GgufType::I16: return 2;
    case GgufType::U32:
    case GgufType::I32:
    case GgufType::F32: return 4;
    case GgufType::U64:
    case GgufType::I64:
    case GgufType::F64: return 8;
    case GgufType::String:
    case GgufType::Array: return 0;
  }
  return 0;
}

bool ggml_type_info(uint32_t id, GgmlTypeInfo* out) {
  if (id >= kNumGgmlTypes || kGgmlTypes[id].block_elems == 0) return false;
  if (out) *out = {kGgmlTypes[id].name, kGgmlTypes[id].block_elems, kGgmlTypes[id].block_bytes};
  return true;
}

std::string ggml_type_name(uint32_t id) {
  GgmlTypeInfo info;
  if (ggml_type_info(id, &info)) return info.name;
  return "GGML_TYPE_" + std::to_string(id);
}

bool dtype_from_ggml(uint32_t id, DType* out) {
  DType d;
  switch (id) {
    case ggml_type::F32: d = DType::F32; break;
    case ggml_type::F16: d = DType::F16; break;
    case ggml_type::Q4_0: d = DType::Q4_0; break;
    case ggml_type::Q8_0: d = DType::Q8_0; break;
    case ggml_type::Q4_K: d = DType::Q4_K; break;
    case ggml_type::Q6_K: d = DType::Q6_K; break;
    case ggml_type::BF16: d = DType::BF16; break;
    case ggml_type::I32: d = DType::I32; break;
    default: return false;
  }
  if (out) *out = d;
  return true;
}

int64_t ggml_from_dtype(DType t) {
  switch (t) {
    case DType::F32: return ggml_type::F32;
    case DType::F16: return ggml_type::F16;
    case DType::BF16: return ggml_type::BF16;
    case DType::I32: return ggml_type::I32;
    case DType::U8: return -1;
    case DType::Q8_0: return ggml_type::Q8_0;
    case DType::Q4_0: return ggml_type::Q4_0;
    case DType::Q4_K: return ggml_type::Q4_K;
    case DType::Q6_K: return ggml_type::Q6_K;
  }
  return -1;
}

std::string GgufTensor::type_name() const {
  if (supported) return dtype_info(dtype).name;
  std::string n = ggml_type_name(ggml_type);
  for (char& c : n) c = (char)((c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c);
  return n;
}

// ---------------------------------------------------------------------------------------------
// GgufValue
// ---------------------------------------------------------------------------------------------

GgufValue GgufValue::scalar(GgufType t, const void* p) {
  GgufValue v;
  v.type_ = t;
  v.elem_ = t;
  v.count_ = 1;
  const size_t n = gguf_type_size(t);
  v.bytes_.assign(static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n);
  if (t == GgufType::Bool) v.bytes_[0] = v.bytes_[0] != 0;
  return v;
}

GgufValue GgufValue::string(std::string s) {
  GgufValue v;
  v.type_ = GgufType::String;
  v.elem_ = GgufType::String;
  v.count_ = 1;
  v.str_ = std::move(s);
  return v;
}

GgufValue GgufValue::numeric_array(GgufType elem, const void* data, uint64_t count) {
  const size_t es = gguf_type_size(elem);
  if (es == 0) throw GgufError(std::string("GgufValue::numeric_array: element type ") + gguf_type_name(elem) +
                               " is not a fixed-size type");
  uint64_t nbytes;
  if (mul_overflow_u64(count, es, &nbytes) || nbytes > std::numeric_limits<size_t>::max())
    throw GgufError("GgufValue::numeric_array: too many elements");
  GgufValue v;
  v.type_ = GgufType::Array;
  v.elem_ = elem;
  v.count_ = count;
  if (nbytes) {
    const uint8_t* p = static_cast<const uint8_t*>(data);
    v.bytes_.assign(p, p + nbytes);
  }
  if (elem == GgufType::Bool)
    for (uint8_t& b : v.bytes_) b = b != 0;
  return v;
}

GgufValue GgufValue::bool_array(const std::vector<bool>& bits) {
  std::vector<uint8_t> b(bits.size());
  for (size_t i = 0; i < bits.size(); ++i) b[i] = bits[i] ? 1 : 0;
  return numeric_array(GgufType::Bool, b.data(), b.size());
}

GgufValue GgufValue::string_array(std::vector<std::string> s) {
  GgufValue v;
  v.type_ = GgufType::Array;
  v.elem_ = GgufType::String;
  v.count_ = s.size();
  v.strings_ = std::move(s);
  return v;
}

GgufValue GgufValue::array_of_arrays(std::vector<GgufValue> items) {
  for (const GgufValue& it : items)
    if (!it.is_array()) throw GgufError("GgufValue::array_of_arrays: every item must be an array");
  GgufValue v;
  v.type_ = GgufType::Array;
  v.elem_ = GgufType::Array;
  v.count_ = items.size();
  v.items_ = std::move(items);
  return v;
}

std::string GgufValue::type_string() const {
  if (!is_array()) return gguf_type_name(type_);
  if (elem_ == GgufType::Array) return (items_.empty() ? std::string("array") : items_[0].type_string()) + "[]";
  return std::string(gguf_type_name(elem_)) + "[]";
}

bool GgufValue::is_integer() const {
  switch (type_) {
    case GgufType::U8:
    case GgufType::I8:
    case GgufType::U16:
    case GgufType::I16:
    case GgufType::U32:
    case GgufType::I32:
    case GgufType::U64:
    case GgufType::I64: return true;
    default: return false;
  }
}

bool GgufValue::is_float() const { return type_ == GgufType::F32 || type_ == GgufType::F64; }

namespace {

// Reads element i of packed type t as (is_signed, u64 bits, i64 value, double value).
struct Num {
  bool integer;
  bool negative;
  uint64_t u;
  int64_t i;
  double d;
};

Num load_num(GgufType t, const uint8_t* p) {
  Num n{true, false, 0, 0, 0.0};
  switch (t) {
    case GgufType::U8:
    case GgufType::Bool: n.u = p[0]; break;
    case GgufType::I8: { int8_t v; memcpy(&v, p, 1); n.i = v; n.negative = v < 0; n.u = (uint64_t)(int64_t)v; break; }
    case GgufType::U16: { uint16_t v; memcpy(&v, p, 2); n.u = v; break; }
    case GgufType::I16: { int16_t v; memcpy(&v, p, 2); n.i = v; n.negative = v < 0; n.u = (uint64_t)(int64_t)v; break; }
    case GgufType::U32: { uint32_t v; memcpy(&v, p, 4); n.u = v; break; }
    case GgufType::I32: { int32_t v; memcpy(&v, p, 4); n.i = v; n.negative = v < 0; n.u = (uint64_t)(int64_t)v; break; }
    case GgufType::U64: { uint64_t v; memcpy(&v, p, 8); n.u = v; break; }
    case GgufType::I64: { int64_t v; memcpy(&v, p, 8); n.i = v; n.negative = v < 0; n.u = (uint64_t)v; break; }
    case GgufType::F32: { float v; memcpy(&v, p, 4); n.integer = false; n.d = v; return n; }
    case GgufType::F64: { double v; memcpy(&v, p, 8); n.integer = false; n.d = v; return n; }
    default: n.integer = false; return n;
  }
  const bool is_signed = t == GgufType::I8 || t == GgufType::I16 || t == GgufType::I32 || t == GgufType::I64;
  if (is_signed) {
    n.d = (double)n.i;
  } else {
    n.i = (int64_t)n.u;  // only meaningful when u <= INT64_MAX
    n.d = (double)n.u;
  }
  return n;
}

bool is_unsigned_int(GgufType t) {
  return t == GgufType::U8 || t == GgufType::U16 || t == GgufType::U32 || t == GgufType::U64 || t == GgufType::Bool;
}

}  // namespace

uint64_t GgufValue::as_u64(const std::string& what) const {
  if (!is_integer()) throw GgufError(what + " is " + type_string() + ", expected an integer");
  const Num n = load_num(type_, bytes_.data());
  if (n.negative) throw GgufError(what + " is negative (" + std::to_string(n.i) + ")");
  return n.u;
}

int64_t GgufValue::as_i64(const std::string& what) const {
  if (!is_integer()) throw GgufError(what + " is " + type_string() + ", expected an integer");
  const Num n = load_num(type_, bytes_.data());
  if (is_unsigned_int(type_) && n.u > (uint64_t)std::numeric_limits<int64_t>::max())
    throw GgufError(what + " (" + u64s(n.u) + ") does not fit in int64");
  return n.i;
}

double GgufValue::as_f64(const std::string& what) const {
  if (!is_integer() && !is_float()) throw GgufError(what + " is " + type_string() + ", expected a number");
  return load_num(type_, bytes_.data()).d;
}

bool GgufValue::as_bool(const std::string& what) const {
  if (type_ != GgufType::Bool) throw GgufError(what + " is " + type_string() + ", expected bool");
  return bytes_[0] != 0;
}

const std::string& GgufValue::as_string(const std::string& what) const {
  if (type_ != GgufType::String) throw GgufError(what + " is " + type_string() + ", expected string");
  return str_;
}

double GgufValue::number_at(uint64_t i) const {
  const size_t es = gguf_type_size(elem_);
  if (!is_array() || es == 0) throw GgufError("GgufValue::number_at: not a numeric array");
  if (i >= count_) throw GgufError("GgufValue::number_at: index out of range");
  return load_num(elem_, bytes_.data() + i * es).d;
}

int64_t GgufValue::int_at(uint64_t i, const std::string& what) const {
  const size_t es = gguf_type_size(elem_);
  if (!is_array() || es == 0 || elem_ == GgufType::F32 || elem_ == GgufType::F64)
    throw GgufError(what + " is " + type_string() + ", expected an integer array");
  if (i >= count_) throw GgufError(what + ": index out of range");
  const Num n = load_num(elem_, bytes_.data() + i * es);
  if (is_unsigned_int(elem_) && n.u > (uint64_t)std::numeric_limits<int64_t>::max())
    throw GgufError(what + "[" + u64s(i) + "] (" + u64s(n.u) + ") does not fit in int64");
  return n.i;
}

std::vector<float> GgufValue::to_floats(const std::string& what) const {
  const size_t es = gguf_type_size(elem_);
  if (!is_array() || es == 0 || elem_ == GgufType::Bool)
    throw GgufError(what + " is " + type_string() + ", expected a numeric array");
  std::vector<float> out((size_t)count_);
  if (elem_ == GgufType::F32) {
    if (count_) memcpy(out.data(), bytes_.data(), (size_t)count_ * 4);
    return out;
  }
  for (uint64_t i = 0; i < count_; ++i) out[(size_t)i] = to_float(load_num(elem_, bytes_.data() + i * es).d);
  return out;
}

std::vector<int64_t> GgufValue::to_ints(const std::string& what) const {
  const size_t es = gguf_type_size(elem_);
  if (!is_array() || es == 0 || elem_ == GgufType::F32 || elem_ == GgufType::F64)
    throw GgufError(what + " is " + type_string() + ", expected an integer array");
  std::vector<int64_t> out((size_t)count_);
  for (uint64_t i = 0; i < count_; ++i) out[(size_t)i] = int_at(i, what);
  return out;
}

bool GgufValue::operator==(const GgufValue& o) const {
  if (type_ != o.type_ || count_ != o.count_) return false;
  if (type_ == GgufType::String) return str_ == o.str_;
  if (!is_array()) return bytes_ == o.bytes_;
  if (elem_ != o.elem_) return false;
  if (elem_ == GgufType::String) return strings_ == o.strings_;
  if (elem_ == GgufType::Array) return items_ == o.items_;
  return bytes_ == o.bytes_;
}

uint64_t GgufValue::encoded_size() const {
  // Type code (4) + payload; for array elements of an outer array the caller subtracts nothing:
  // a nested array is encoded as (elem type, count, elements) without its own type code.
  if (type_ == GgufType::String) return 4 + 8 + str_.size();
  if (!is_array()) return 4 + bytes_.size();
  uint64_t n = 4 + 4 + 8;
  if (elem_ == GgufType::String) {
    for (const std::string& s : strings_) n += 8 + s.size();
  } else if (elem_ == GgufType::Array) {
    for (const GgufValue& it : items_) n += it.encoded_size() - 4;
  } else {
    n += bytes_.size();
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------------

class GgufParser {
 public:
  explicit GgufParser(GgufFile& f) : f_(f), p_(f.base_), size_(f.size_) {}

  void run() {
    section_ = "header";
    if (size_ < 4) fail("truncated in header (file is " + u64s(size_) + " bytes)");
    const uint32_t magic = rd<uint32_t>();
    if (magic != kGgufMagic) {
      char got[5] = {0};
      for (int i = 0; i < 4; ++i) {
        const char c = (char)p_[i];
        got[i] = (c >= 0x20 && c < 0x7f) ? c : '?';
      }
      fail(std::string("bad magic (expected 'GGUF', got '") + got + "'): not a GGUF file");
    }
    const uint32_t version = rd<uint32_t>();
    if (version != 2 && version != 3) {
      std::string why = "unsupported GGUF version " + std::to_string(version);
      if (version == 1) why += " (GGUF v1 is obsolete; re-convert the model)";
      else if (version != 0 && (version & 0xFFFFu) == 0) why += " (a big-endian file?)";
      fail(why + "; versions 2 and 3 are supported");
    }
    f_.version_ = version;
    const uint64_t n_tensors = rd<uint64_t>();
    const uint64_t n_kv = rd<uint64_t>();

    // Every key/value takes at least 14 bytes (u64 length, one key byte, u32 type, one value byte).
    if (n_kv > remaining() / 14)
      fail("metadata count " + u64s(n_kv) + " is impossible for a file of " + u64s(size_) + " bytes");
    f_.kv_.reserve((size_t)std::min<uint64_t>(n_kv, 4096));
    for (uint64_t i = 0; i < n_kv; ++i) read_kv(i);

    // Alignment.
    f_.alignment_ = kDefaultAlignment;
    if (const GgufValue* a = f_.find("general.alignment")) {
      if (a->type() != GgufType::U32)
        fail("general.alignment must be a u32, is " + a->type_string());
      const uint32_t al = (uint32_t)a->as_u64();
      if (!is_pow2(al)) fail("general.alignment " + std::to_string(al) + " is not a power of two");
      f_.alignment_ = al;
    }

    // Every tensor info takes at least 24 bytes (u64 name length, u32 n_dims, u32 type, u64 offset).
    section_ = "tensor count";
    if (n_tensors > remaining() / 24)
      fail("tensor count " + u64s(n_tensors) + " is impossible for a file of " + u64s(size_) + " bytes");
    f_.tensors_.reserve((size_t)std::min<uint64_t>(n_tensors, 1u << 14));
    for (uint64_t i = 0; i < n_tensors; ++i) read_tensor_info(i);

    uint64_t data_offset;
    if (!align_up(pos_, f_.alignment_, &data_offset)) fail("data section offset overflows");
    f_.data_offset_ = data_offset;
    if (n_tensors > 0 && data_offset > size_)
      fail("truncated before the data section (it starts at " + u64s(data_offset) + ", file is " +
           u64s(size_) + " bytes)");
    check_tensor_data();
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { f_.fail(what); }

  uint64_t remaining() const { return size_ - pos_; }

  void need(uint64_t n) const {
    if (n > remaining())
      fail("truncated in " + section_ + " (needs " + u64s(n) + " bytes at offset " + u64s(pos_) + ", file is " +
           u64s(size_) + " bytes)");
  }

  template <typename T>
  T rd() {
    need(sizeof(T));
    T v;
    memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string rd_string() {
    const uint64_t n = rd<uint64_t>();
    need(n);
    std::string s(reinterpret_cast<const char*>(p_ + pos_), (size_t)n);
    pos_ += n;
    return s;
  }

  GgufType rd_type(const char* role) {
    const uint32_t t = rd<uint32_t>();
    if (!valid_type_code(t)) fail(section_ + " has an invalid " + role + " type " + std::to_string(t));
    return (GgufType)t;
  }

  void read_kv(uint64_t i) {
    section_ = "metadata key " + u64s(i);
    std::string key = rd_string();
    if (key.empty()) fail(section_ + " is empty");
    section_ += " (" + quoted(key) + ")";
    if (f_.kv_index_.count(key)) fail("duplicate metadata key " + quoted(key));
    const GgufType t = rd_type("value");
    GgufValue v = read_value(t, 0);
    f_.kv_index_.emplace(key, f_.kv_.size());
    f_.kv_.emplace_back(std::move(key), std::move(v));
  }

  // A value of type t (its type code already read). Arrays: elem type, count, elements.
  GgufValue read_value(GgufType t, int depth) {
    if (t == GgufType::String) return GgufValue::string(rd_string());
    if (t != GgufType::Array) {
      const size_t n = gguf_type_size(t);
      need(n);
      GgufValue v = GgufValue::scalar(t, p_ + pos_);
      pos_ += n;
      return v;
    }
    if (depth >= kMaxArrayDepth) fail(section_ + ": arrays nested deeper than " + std::to_string(kMaxArrayDepth));
    const GgufType elem = rd_type("array element");
    const uint64_t count = rd<uint64_t>();
    if (count > kMaxArrayElements) fail(section_ + ": array of " + u64s(count) + " elements is too large");
    if (elem == GgufType::String) {
      if (count > remaining() / 8)
        fail("truncated in " + section_ + " (array of " + u64s(count) + " strings, " + u64s(remaining()) +
             " bytes left)");
      std::vector<std::string> s;
      s.reserve((size_t)std::min<uint64_t>(count, 1u << 16));  // grows with the data actually read
      for (uint64_t j = 0; j < count; ++j) s.push_back(rd_string());
      return GgufValue::string_array(std::move(s));
    }
    if (elem == GgufType::Array) {
      if (count > remaining() / 12)
        fail("truncated in " + section_ + " (array of " + u64s(count) + " arrays, " + u64s(remaining()) +
             " bytes left)");
      std::vector<GgufValue> items;
      items.reserve((size_t)std::min<uint64_t>(count, 1u << 12));
      for (uint64_t j = 0; j < count; ++j) items.push_back(read_value(GgufType::Array, depth + 1));
      return GgufValue::array_of_arrays(std::move(items));
    }
    const size_t es = gguf_type_size(elem);
    if (count > remaining() / es)
      fail("truncated in " + section_ + " (array of " + u64s(count) + " " + gguf_type_name(elem) + " needs " +
           u64s(count) + " x " + std::to_string(es) + " bytes, " + u64s(remaining()) + " left)");
    GgufValue v = GgufValue::numeric_array(elem, p_ + pos_, count);
    pos_ += count * es;
    return v;
  }

  void read_tensor_info(uint64_t i) {
    section_ = "tensor info " + u64s(i);
    GgufTensor t;
    t.name = rd_string();
    const std::string q = quoted(t.name);
    section_ += " (" + q + ")";
    if (f_.tensor_index_.count(t.name)) fail("duplicate tensor name " + q);
    const uint32_t n_dims = rd<uint32_t>();
    if (n_dims > 4) fail("tensor " + q + " has " + std::to_string(n_dims) + " dimensions (at most 4)");
    uint64_t n_elements = 1;
    bool overflow = false;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t ne = rd<uint64_t>();
      if (ne > (uint64_t)std::numeric_limits<int64_t>::max())
        fail("tensor " + q + " dimension " + std::to_string(d) + " is " + u64s(ne) + " (negative as int64)");
      t.shape.push_back((int64_t)ne);
      overflow = overflow || mul_overflow_u64(n_elements, ne, &n_elements);
    }
    if (overflow || n_elements > (uint64_t)std::numeric_limits<int64_t>::max())
      fail("tensor " + q + " element count overflows");
    t.n_elements = (int64_t)n_elements;
    t.ggml_type = rd<uint32_t>();
    GgmlTypeInfo ti;
    if (!ggml_type_info(t.ggml_type, &ti))
      fail("tensor " + q + " has unknown ggml type " + std::to_string(t.ggml_type));
    const uint64_t ne0 = n_dims > 0 ? (uint64_t)t.shape[0] : 1;
    if (ne0 % (uint64_t)ti.block_elems != 0)
      fail("tensor " + q + " of type " + ti.name + " has ne[0] = " + u64s(ne0) + ", not a multiple of its block size " +
           std::to_string(ti.block_elems));
    if (mul_overflow_u64(n_elements / (uint64_t)ti.block_elems, (uint64_t)ti.block_bytes, &t.byte_size))
      fail("tensor " + q + " byte size overflows");
    t.supported = dtype_from_ggml(t.ggml_type, &t.dtype);
    t.offset = rd<uint64_t>();
    if (t.offset % f_.alignment_ != 0)
      fail("tensor " + q + " offset " + u64s(t.offset) + " is not a multiple of the alignment " +
           std::to_string(f_.alignment_));
    f_.tensor_index_.emplace(t.name, f_.tensors_.size());
    f_.tensors_.push_back(std::move(t));
  }

  void check_tensor_data() {
    const uint64_t data_bytes = f_.data_offset_ <= size_ ? size_ - f_.data_offset_ : 0;
    for (GgufTensor& t : f_.tensors_) {
      if (t.offset > data_bytes || t.byte_size > data_bytes - t.offset)
        fail("tensor " + quoted(t.name) + " data out of file bounds (offset " + u64s(t.offset) + " + " +
             u64s(t.byte_size) + " bytes in a data section of " + u64s(data_bytes) + " bytes at file offset " +
             u64s(f_.data_offset_) + ")");
      t.data = p_ ? p_ + f_.data_offset_ + t.offset : nullptr;
    }
    // Overlaps: sort the non-empty tensors by offset, neighbours must not intersect.
    std::vector<const GgufTensor*> order;
    order.reserve(f_.tensors_.size());
    for (const GgufTensor& t : f_.tensors_)
      if (t.byte_size > 0) order.push_back(&t);
    std::sort(order.begin(), order.end(),
              [](const GgufTensor* a, const GgufTensor* b) { return a->offset < b->offset; });
    for (size_t k = 1; k < order.size(); ++k) {
      const GgufTensor* a = order[k - 1];
      const GgufTensor* b = order[k];
      if (a->offset + a->byte_size > b->offset)
        fail("tensors " + quoted(a->name) + " and " + quoted(b->name) + " overlap (offsets " + u64s(a->offset) +
             " + " + u64s(a->byte_size) + " and " + u64s(b->offset) + ")");
    }
  }

  GgufFile& f_;
  const uint8_t* p_;
  uint64_t size_;
  uint64_t pos_ = 0;
  std::string section_;
};

// ---------------------------------------------------------------------------------------------
// GgufFile
// ---------------------------------------------------------------------------------------------

void GgufFile::fail(const std::string& what) const { throw GgufError(path_ + ": " + what); }

#ifdef _WIN32
namespace {
std::wstring widen(const std::string& s) {
  if (s.empty()) return std::wstring();
  const int n = MultiByteToWideChar(CP_UTF8, 0, s.data(), (int)s.size(), nullptr, 0);
  std::wstring w((size_t)std::max(n, 0), L'\0');
  if (n > 0) MultiByteToWideChar(CP_UTF8, 0, s.data(), (int)s.size(), &w[0], n);
  return w;
}
std::string win_error() {
  const DWORD e = GetLastError();
  char buf[256] = {0};
  FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, nullptr, e, 0, buf, sizeof buf, nullptr);
  std::string s(buf);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r' || s.back() == ' ')) s.pop_back();
  return s + " (error " + std::to_string((unsigned long)e) + ")";
}
}  // namespace
#endif

GgufFile::GgufFile(const std::string& path) : path_(path) {
#ifdef _WIN32
  HANDLE fh = CreateFileW(widen(path).c_str(), GENERIC_READ, FILE_SHARE_READ, nullptr, OPEN_EXISTING,
                          FILE_ATTRIBUTE_NORMAL, nullptr);
  if (fh == INVALID_HANDLE_VALUE) fail("cannot open: " + win_error());
  LARGE_INTEGER sz;
  if (!GetFileSizeEx(fh, &sz)) {
    const std::string e = win_error();
    CloseHandle(fh);
    fail("cannot stat: " + e);
  }
  size_ = (uint64_t)sz.QuadPart;
  if ((unsigned long long)size_ > (unsigned long long)std::numeric_limits<size_t>::max()) {
    CloseHandle(fh);
    fail("file too large to map");
  }
  file_handle_ = fh;
  if (size_ > 0) {
    HANDLE mh = CreateFileMappingW(fh, nullptr, PAGE_READONLY, 0, 0, nullptr);
    if (!mh) {
      const std::string e = win_error();
      release();
      fail("cannot map: " + e);
    }
    map_handle_ = mh;
    void* view = MapViewOfFile(mh, FILE_MAP_READ, 0, 0, 0);
    if (!view) {
      const std::string e = win_error();
      release();
      fail("cannot map: " + e);
    }
    base_ = static_cast<const uint8_t*>(view);
    mapped_ = true;
  }
#else
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(std::string("cannot open: ") + strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    const int e = errno;
    ::close(fd);
    fail(std::string("cannot stat: ") + strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    fail("not a regular file");
  }
  if (st.st_size < 0 || (unsigned long long)st.st_size > (unsigned long long)std::numeric_limits<size_t>::max()) {
    ::close(fd);
    fail("file too large to map");
  }
  size_ = (uint64_t)st.st_size;
  if (size_ > 0) {
    void* m = mmap(nullptr, (size_t)size_, PROT_READ, MAP_PRIVATE, fd, 0);
    const int e = errno;
    ::close(fd);
    if (m == MAP_FAILED) fail(std::string("cannot mmap: ") + strerror(e));
    base_ = static_cast<const uint8_t*>(m);
    mapped_ = true;
  } else {
    ::close(fd);
  }
#endif
  try {
    parse();
  } catch (...) {
    release();
    throw;
  }
}

GgufFile GgufFile::from_memory(const void* data, size_t size, const std::string& name) {
  GgufFile f;
  f.path_ = name;
  f.base_ = static_cast<const uint8_t*>(data);
  f.size_ = data ? size : 0;
  f.parse();
  return f;
}

void GgufFile::parse() {
  try {
    GgufParser(*this).run();
  } catch (const GgufError&) {
    throw;
  } catch (const std::bad_alloc&) {
    fail("out of memory while parsing");
  } catch (const std::length_error&) {
    fail("out of memory while parsing");
  }
}

void GgufFile::release() noexcept {
#ifdef _WIN32
  if (mapped_ && base_) UnmapViewOfFile(base_);
  if (map_handle_) CloseHandle((HANDLE)map_handle_);
  if (file_handle_) CloseHandle((HANDLE)file_handle_);
  map_handle_ = nullptr;
  file_handle_ = nullptr;
#else
  if (mapped_ && base_) munmap(const_cast<uint8_t*>(base_), (size_t)size_);
#endif
  mapped_ = false;
  base_ = nullptr;
}

void GgufFile::drop_pages(const void* p, size_t n) const {
#ifndef _WIN32
  if (!mapped_ || base_ == nullptr) return;
  const uintptr_t lo = (uintptr_t)p, hi = lo + n, b = (uintptr_t)base_;
  if (lo < b || hi > b + size_) return;
  const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  const uintptr_t start = (lo + page - 1) / page * page, end = hi / page * page;
  if (end > start) madvise((void*)start, end - start, MADV_DONTNEED);
#else
  (void)p, (void)n;
#endif
}

GgufFile::GgufFile(GgufFile&& o) noexcept { *this = std::move(o); }

GgufFile& GgufFile::operator=(GgufFile&& o) noexcept {
  if (this == &o) return *this;
  release();
  path_ = std::move(o.path_);
  base_ = o.base_;
  size_ = o.size_;
  mapped_ = o.mapped_;
  map_handle_ = o.map_handle_;
  file_handle_ = o.file_handle_;
  version_ = o.version_;
  alignment_ = o.alignment_;
  data_offset_ = o.data_offset_;
  kv_ = std::move(o.kv_);
  kv_index_ = std::move(o.kv_index_);
  tensors_ = std::move(o.tensors_);
  tensor_index_ = std::move(o.tensor_index_);
  o.base_ = nullptr;
  o.mapped_ = false;
  o.map_handle_ = nullptr;
  o.file_handle_ = nullptr;
  o.size_ = 0;
  return *this;
}

GgufFile::~GgufFile() { release(); }

const GgufValue* GgufFile::find(const std::string& key) const {
  const auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

std::string GgufFile::get_string(const std::string& key, const std::string& def) const {
  const GgufValue* v = find(key);
  return v ? v->as_string(path_ + ": metadata key " + quoted(key)) : def;
}

uint32_t GgufFile::get_u32(const std::string& key, uint32_t def) const {
  const GgufValue* v = find(key);
  if (!v) return def;
  const std::string what = path_ + ": metadata key " + quoted(key);
  const uint64_t u = v->as_u64(what);
  if (u > std::numeric_limits<uint32_t>::max()) throw GgufError(what + " (" + u64s(u) + ") does not fit in u32");
  return (uint32_t)u;
}

int64_t GgufFile::get_i64(const std::string& key, int64_t def) const {
  const GgufValue* v = find(key);
  return v ? v->as_i64(path_ + ": metadata key " + quoted(key)) : def;
}

float GgufFile::get_f32(const std::string& key, float def) const {
  const GgufValue* v = find(key);
  return v ? to_float(v->as_f64(path_ + ": metadata key " + quoted(key))) : def;
}

bool GgufFile::get_bool(const std::string& key, bool def) const {
  const GgufValue* v = find(key);
  return v ? v->as_bool(path_ + ": metadata key " + quoted(key)) : def;
}

std::vector<std::string> GgufFile::get_string_array(const std::string& key) const {
  const GgufValue* v = find(key);
  if (!v) return {};
  if (!v->is_array() || v->elem_type() != GgufType::String)
    throw GgufError(path_ + ": metadata key " + quoted(key) + " is " + v->type_string() + ", expected string[]");
  return v->strings();
}

std::vector<float> GgufFile::get_float_array(const std::string& key) const {
  const GgufValue* v = find(key);
  return v ? v->to_floats(path_ + ": metadata key " + quoted(key)) : std::vector<float>();
}

std::vector<int64_t> GgufFile::get_int_array(const std::string& key) const {
  const GgufValue* v = find(key);
  return v ? v->to_ints(path_ + ": metadata key " + quoted(key)) : std::vector<int64_t>();
}

const GgufTensor* GgufFile::find_tensor(const std::string& name) const {
  const auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufTensor& GgufFile::tensor(const std::string& name) const {
  const GgufTensor* t = find_tensor(name);
  if (!t) fail("no tensor named " + quoted(name));
  return *t;
}

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

void GgufWriter::set(const std::string& key, GgufValue v) {
  if (key.empty()) throw GgufError("GgufWriter: metadata keys must not be empty");
  if (key == "general.alignment") {
    if (v.type() != GgufType::U32) throw GgufError("GgufWriter: general.alignment must be a u32");
    const uint64_t a = v.as_u64();
    if (!is_pow2(a)) throw GgufError("GgufWriter: general.alignment must be a power of two, got " + u64s(a));
    alignment_ = (uint32_t)a;
  }
  for (auto& kv : kv_) {
    if (kv.first == key) {
      kv.second = std::move(v);
      return;
    }
  }
  kv_.emplace_back(key, std::move(v));
}

bool GgufWriter::remove(const std::string& key) {
  for (auto it = kv_.begin(); it != kv_.end(); ++it) {
    if (it->first == key) {
      kv_.erase(it);
      if (key == "general.alignment") alignment_ = kDefaultAlignment;
      return true;
    }
  }
  return false;
}

void GgufWriter::add(const std::string& name, uint32_t type, std::vector<int64_t> shape, const void* data,
                     FillFn fill) {
  const std::string q = quoted(name);
  if (name.empty()) throw GgufError("GgufWriter: tensor names must not be empty");
  if (name.size() > kMaxTensorName)
    throw GgufError("GgufWriter: tensor name " + q + " is " + std::to_string(name.size()) +
                    " bytes; llama.cpp allows at most " + std::to_string(kMaxTensorName));
  for (const Tensor& t : tensors_)
    if (t.name == name) throw GgufError("GgufWriter: duplicate tensor name " + q);
  GgmlTypeInfo ti;
  if (!ggml_type_info(type, &ti)) throw GgufError("GgufWriter: tensor " + q + ": unknown ggml type " + std::to_string(type));
  if (shape.empty() || shape.size() > 4)
    throw GgufError("GgufWriter: tensor " + q + " must have 1 to 4 dimensions, has " + std::to_string(shape.size()));
  uint64_t n = 1;
  for (int64_t d : shape) {
    if (d < 0) throw GgufError("GgufWriter: tensor " + q + " has a negative dimension");
    if (mul_overflow_u64(n, (uint64_t)d, &n) || n > (uint64_t)std::numeric_limits<int64_t>::max())
      throw GgufError("GgufWriter: tensor " + q + " element count overflows");
  }
  if ((uint64_t)shape[0] % (uint64_t)ti.block_elems != 0)
    throw GgufError("GgufWriter: tensor " + q + " of type " + ti.name + " needs ne[0] (" + std::to_string(shape[0]) +
                    ") to be a multiple of " + std::to_string(ti.block_elems));
  uint64_t bytes;
  if (mul_overflow_u64(n / (uint64_t)ti.block_elems, (uint64_t)ti.block_bytes, &bytes) || bytes > (1ull << 62))
    throw GgufError("GgufWriter: tensor " + q + " byte size overflows");
  if (!data && !fill && bytes > 0) throw GgufError("GgufWriter: tensor " + q + " has no data");
  tensors_.push_back({name, type, std::move(shape), bytes, (uint32_t)ti.block_bytes, data, std::move(fill)});
}

void GgufWriter::add_tensor(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data) {
  const int64_t g = ggml_from_dtype(dtype);
  if (g < 0) throw GgufError(std::string("GgufWriter: dtype ") + dtype_info(dtype).name + " has no GGUF type");
  add(name, (uint32_t)g, std::move(shape), data, nullptr);
}

void GgufWriter::add_tensor(const std::string& name, DType dtype, std::vector<int64_t> shape, FillFn fill) {
  const int64_t g = ggml_from_dtype(dtype);
  if (g < 0) throw GgufError(std::string("GgufWriter: dtype ") + dtype_info(dtype).name + " has no GGUF type");
  if (!fill) throw GgufError("GgufWriter: tensor " + quoted(name) + ": empty fill function");
  add(name, (uint32_t)g, std::move(shape), nullptr, std::move(fill));
}

void GgufWriter::add_tensor_ggml(const std::string& name, uint32_t ggml_type, std::vector<int64_t> shape,
                                 const void* data) {
  add(name, ggml_type, std::move(shape), data, nullptr);
}

void GgufWriter::add_tensor_ggml(const std::string& name, uint32_t ggml_type, std::vector<int64_t> shape,
                                 FillFn fill) {
  if (!fill) throw GgufError("GgufWriter: tensor " + quoted(name) + ": empty fill function");
  add(name, ggml_type, std::move(shape), nullptr, std::move(fill));
}

namespace {

// Serialises the header (magic .. tensor infos, without the final padding) into a byte buffer.
class HeaderBuf {
 public:
  template <typename T>
  void put(T v) {
    const size_t at = buf.size();
    buf.resize(at + sizeof(T));
    memcpy(buf.data() + at, &v, sizeof(T));
  }
  void put_bytes(const void* p, size_t n) {
    if (!n) return;
    const uint8_t* b = static_cast<const uint8_t*>(p);
    buf.insert(buf.end(), b, b + n);
  }
  void put_string(const std::string& s) {
    put<uint64_t>(s.size());
    put_bytes(s.data(), s.size());
  }
  // The value's payload after its type code (an array: elem type, count, elements).
  void put_payload(const GgufValue& v) {
    if (v.type() == GgufType::String) {
      put_string(v.as_string());
    } else if (!v.is_array()) {
      put_bytes(v.raw(), v.raw_bytes());
    } else {
      put<uint32_t>((uint32_t)v.elem_type());
      put<uint64_t>(v.size());
      if (v.elem_type() == GgufType::String) {
        for (const std::string& s : v.strings()) put_string(s);
      } else if (v.elem_type() == GgufType::Array) {
        for (const GgufValue& it : v.items()) put_payload(it);
      } else {
        put_bytes(v.raw(), v.raw_bytes());
      }
    }
  }
  std::vector<uint8_t> buf;
};

}  // namespace

uint64_t GgufWriter::data_offset() const {
  uint64_t n = 4 + 4 + 8 + 8;
  for (const auto& kv : kv_) n += 8 + kv.first.size() + kv.second.encoded_size();
  for (const Tensor& t : tensors_) n += 8 + t.name.size() + 4 + 8 * t.shape.size() + 4 + 8;
  return pad_to(n, alignment_);
}

uint64_t GgufWriter::file_size() const {
  uint64_t n = data_offset();
  for (const Tensor& t : tensors_) n += pad_to(t.byte_size, alignment_);
  return n;
}

uint64_t GgufWriter::write(const std::string& path) const {
  const std::string tmp = path + ".partial";
  auto fail = [&](const std::string& what) -> GgufError { return GgufError(path + ": " + what); };

  // Header and tensor infos (offsets: each tensor at the next multiple of the alignment).
  HeaderBuf h;
  h.put<uint32_t>(kGgufMagic);
  h.put<uint32_t>(3);
  h.put<uint64_t>(tensors_.size());
  h.put<uint64_t>(kv_.size());
  for (const auto& kv : kv_) {
    h.put_string(kv.first);
    h.put<uint32_t>((uint32_t)kv.second.type());
    h.put_payload(kv.second);
  }
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    h.put_string(t.name);
    h.put<uint32_t>((uint32_t)t.shape.size());
    for (int64_t d : t.shape) h.put<uint64_t>((uint64_t)d);
    h.put<uint32_t>(t.ggml_type);
    h.put<uint64_t>(offset);
    const uint64_t padded = pad_to(t.byte_size, alignment_);
    if (offset + padded < offset || offset + padded > (1ull << 62)) throw fail("file size overflows");
    offset += padded;
  }
  h.buf.resize((size_t)pad_to(h.buf.size(), alignment_), 0);

  FILE* f = fopen(tmp.c_str(), "wb");
  if (!f) throw fail("cannot create " + tmp + ": " + strerror(errno));
  uint64_t written = 0;
  try {
    auto put = [&](const void* p, size_t n) {
      if (n && fwrite(p, 1, n, f) != n) throw fail(std::string("write failed: ") + strerror(errno));
      written += n;
    };
    put(h.buf.data(), h.buf.size());
    std::vector<uint8_t> zeros(alignment_, 0);
    std::vector<uint8_t> chunk;
    for (const Tensor& t : tensors_) {
      if (t.data) {
        const uint8_t* p = static_cast<const uint8_t*>(t.data);
        for (uint64_t at = 0; at < t.byte_size;) {
          const size_t n = (size_t)std::min<uint64_t>(t.byte_size - at, 64ull << 20);
          put(p + at, n);
          at += n;
        }
      } else if (t.byte_size > 0) {
        // Whole blocks per chunk, about 8 MiB.
        const uint64_t per = std::max<uint64_t>(1, (8ull << 20) / t.block_bytes) * t.block_bytes;
        chunk.resize((size_t)std::min<uint64_t>(per, t.byte_size));
        for (uint64_t at = 0; at < t.byte_size;) {
          const uint64_t n = std::min<uint64_t>(t.byte_size - at, chunk.size());
          t.fill(chunk.data(), at, n);
          put(chunk.data(), (size_t)n);
          at += n;
        }
      }
      put(zeros.data(), (size_t)(pad_to(t.byte_size, alignment_) - t.byte_size));
    }
    if (fflush(f) != 0) throw fail(std::string("write failed: ") + strerror(errno));
    const int rc = fclose(f);
    f = nullptr;
    if (rc != 0) throw fail(std::string("close failed: ") + strerror(errno));
#ifdef _WIN32
    std::remove(path.c_str());
#endif
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
      throw fail("cannot rename " + tmp + " to the destination: " + strerror(errno));
  } catch (...) {
    if (f) fclose(f);
    std::remove(tmp.c_str());
    throw;
  }
  return written;
}

}  // namespace tessera
