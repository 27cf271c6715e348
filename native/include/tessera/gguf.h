// GGUF container: a bounds-checked, memory-mapped reader (GGUF v2 and v3) and a streaming v3
// writer. No Node, no ggml: the native tests and the model loader use it directly.
//
// Layout (little-endian): "GGUF" magic, u32 version, u64 tensor count, u64 metadata count, the
// metadata key/values (u64-length strings, u32 value types, arrays as u32 element type + u64
// count + elements, nested arrays allowed), the tensor infos (name, u32 n_dims <= 4, u64 ne[],
// u32 ggml type, u64 offset), zero padding to `general.alignment` (a u32, default 32), then the
// data section. Tensor offsets are relative to the data section and multiples of the alignment.
//
// Shapes are in GGUF order everywhere in this file: shape[0] is ne[0], the innermost (contiguous)
// dimension. A row-major (rows, cols) matrix has the GGUF shape {cols, rows}.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tessera/dtype.h"

namespace tessera {

// A malformed or unreadable GGUF file (or a write that failed / was given bad input). what()
// names the file and what is wrong with it.
class GgufError : public std::runtime_error {
 public:
  explicit GgufError(const std::string& msg) : std::runtime_error(msg) {}
};

// Metadata value types (gguf_type); the numeric codes are the file format's.
enum class GgufType : uint32_t {
  U8 = 0,
  I8 = 1,
  U16 = 2,
  I16 = 3,
  U32 = 4,
  I32 = 5,
  F32 = 6,
  Bool = 7,
  String = 8,
  Array = 9,
  U64 = 10,
  I64 = 11,
  F64 = 12,
};
constexpr uint32_t kGgufNumTypes = 13;

// "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64";
// "invalid" for anything else.
const char* gguf_type_name(GgufType t);
// Byte size of one element of a fixed-size type (0 for String, Array and invalid codes).
size_t gguf_type_size(GgufType t);

// ---------------------------------------------------------------------------------------------
// ggml tensor types
// ---------------------------------------------------------------------------------------------

// The ggml type ids tessera computes on (others are listed by ggml_type_info()).
namespace ggml_type {
constexpr uint32_t F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
                   Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15, I8 = 24,
                   I16 = 25, I32 = 26, I64 = 27, F64 = 28, BF16 = 30;
}

struct GgmlTypeInfo {
  const char* name;     // ggml's name, upper case: "F32", "Q5_K", "IQ2_XXS", ...
  int32_t block_elems;  // elements per block (1 for plain types)
  int32_t block_bytes;  // bytes per block
};

// Layout of ggml type `id`; false for ids that are unknown or were removed from GGUF (4, 5,
// 31-33, 36-38, and anything past the newest known type).
bool ggml_type_info(uint32_t id, GgmlTypeInfo* out);
// ggml's upper-case name, or "GGML_TYPE_<id>" for unknown ids.
std::string ggml_type_name(uint32_t id);
// The tessera dtype stored as ggml type `id`: F32, F16, BF16, Q4_0, Q8_0, Q4_K, Q6_K and I32.
bool dtype_from_ggml(uint32_t id, DType* out);
// The ggml type id of a tessera dtype; -1 for U8 (no unsigned byte type in ggml).
int64_t ggml_from_dtype(DType t);

// ---------------------------------------------------------------------------------------------
// Metadata values
// ---------------------------------------------------------------------------------------------

// One metadata value: a scalar, a string, or an array (of scalars, of strings, or of arrays).
// Numeric and bool arrays keep their elements packed little-endian exactly as in the file
// (bools as one byte each), so a 32000-entry score array is one memcpy away from a typed array.
class GgufValue {
 public:
  GgufValue() = default;

  static GgufValue u8(uint8_t v) { return scalar(GgufType::U8, &v); }
  static GgufValue i8(int8_t v) { return scalar(GgufType::I8, &v); }
  static GgufValue u16(uint16_t v) { return scalar(GgufType::U16, &v); }
  static GgufValue i16(int16_t v) { return scalar(GgufType::I16, &v); }
  static GgufValue u32(uint32_t v) { return scalar(GgufType::U32, &v); }
  static GgufValue i32(int32_t v) { return scalar(GgufType::I32, &v); }
  static GgufValue f32(float v) { return scalar(GgufType::F32, &v); }
  static GgufValue u64(uint64_t v) { return scalar(GgufType::U64, &v); }
  static GgufValue i64(int64_t v) { return scalar(GgufType::I64, &v); }
  static GgufValue f64(double v) { return scalar(GgufType::F64, &v); }
  static GgufValue boolean(bool v) {
    const uint8_t b = v ? 1 : 0;
    return scalar(GgufType::Bool, &b);
  }
  static GgufValue string(std::string s);
  // An array of `count` fixed-size elements of type `elem` (not String/Array) read from `data`
  // (packed, little-endian; bools one byte each, any non-zero byte is stored as 1).
  static GgufValue numeric_array(GgufType elem, const void* data, uint64_t count);
  template <typename T>
  static GgufValue array_of(GgufType elem, const std::vector<T>& v) {
    if (gguf_type_size(elem) != sizeof(T)) throw GgufError("GgufValue::array_of: element size mismatch");
    return numeric_array(elem, v.data(), v.size());
  }
  static GgufValue bool_array(const std::vector<bool>& v);
  static GgufValue string_array(std::vector<std::string> v);
  // An array of arrays: every item must be an array (of any element type). Note: the GGUF spec
  // allows nested arrays, but llama.cpp's reader rejects files that contain them.
  static GgufValue array_of_arrays(std::vector<GgufValue> items);

  GgufType type() const { return type_; }
  bool is_array() const { return type_ == GgufType::Array; }
  // Element type of an array (meaningless for scalars).
  GgufType elem_type() const { return elem_; }
  // Element count of an array; 1 for a scalar.
  uint64_t size() const { return is_array() ? count_ : 1; }
  // "u32", "string", "f32[]", "string[]", "i32[][]" (element type of nested arrays taken from the
  // first item; "array[]" when empty). The N-API binding uses these names both ways.
  std::string type_string() const;

  bool is_integer() const;  // u8..i64 scalar
  bool is_float() const;    // f32/f64 scalar
  // Scalar readers: throw GgufError (naming `what`) on a type mismatch or when the value does not
  // fit the requested type.
  uint64_t as_u64(const std::string& what = "value") const;
  int64_t as_i64(const std::string& what = "value") const;
  double as_f64(const std::string& what = "value") const;  // any numeric scalar
  bool as_bool(const std::string& what = "value") const;
  const std::string& as_string(const std::string& what = "value") const;

  // Array contents.
  const std::vector<std::string>& strings() const { return strings_; }  // string arrays
  const std::vector<GgufValue>& items() const { return items_; }        // arrays of arrays
  const uint8_t* raw() const { return bytes_.data(); }                  // numeric/bool arrays
  size_t raw_bytes() const { return bytes_.size(); }
  // Numeric array element i as double / int64 (bounds- and type-checked).
  double number_at(uint64_t i) const;
  int64_t int_at(uint64_t i, const std::string& what = "value") const;
  // Converted copies of a numeric array (floats from any numeric element type; ints from integer
  // and bool element types, throwing if a u64 element exceeds INT64_MAX).
  std::vector<float> to_floats(const std::string& what = "value") const;
  std::vector<int64_t> to_ints(const std::string& what = "value") const;

  // Exact equality (type, element type and contents; floats bitwise).
  bool operator==(const GgufValue& o) const;
  bool operator!=(const GgufValue& o) const { return !(*this == o); }

  // Bytes this value takes in a file (without its key).
  uint64_t encoded_size() const;

 private:
  friend class GgufParser;
  static GgufValue scalar(GgufType t, const void* p);

  GgufType type_ = GgufType::U8;
  GgufType elem_ = GgufType::U8;
  uint64_t count_ = 0;
  std::vector<uint8_t> bytes_;       // scalar bytes, or packed numeric/bool array elements
  std::string str_;                  // string scalar
  std::vector<std::string> strings_; // string array
  std::vector<GgufValue> items_;     // array of arrays
};

// ---------------------------------------------------------------------------------------------
// Reader
// ---------------------------------------------------------------------------------------------

struct GgufTensor {
  std::string name;
  uint32_t ggml_type = 0;       // ggml type id as stored
  bool supported = false;       // ggml_type maps to a tessera dtype
  DType dtype = DType::F32;     // valid when supported
  std::vector<int64_t> shape;   // GGUF order: shape[0] = ne[0], the contiguous dimension
  int64_t n_elements = 0;
  uint64_t offset = 0;          // relative to the data section
  uint64_t byte_size = 0;
  const uint8_t* data = nullptr;  // into the file's mapping (null for an in-memory parse of 0 B)

  // tessera dtype name ("f32", "q8_0", ...) when supported, else ggml's name in lower case ("q5_k").
  std::string type_name() const;
};

class GgufFile {
 public:
  // Maps `path` read-only and parses it; throws GgufError on any problem. Tensor data pointers
  // stay valid for the lifetime of this object (the mapping is released by the destructor).
  // Another process truncating the file while it is mapped can still fault on access (SIGBUS):
  // the checks here are against the size at open time.
  explicit GgufFile(const std::string& path);
  // Parses a buffer the caller keeps alive for the lifetime of the result (no copy).
  // `name` is used in error messages.
  static GgufFile from_memory(const void* data, size_t size, const std::string& name = "<memory>");

  GgufFile(GgufFile&& o) noexcept;
  GgufFile& operator=(GgufFile&& o) noexcept;
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;
  ~GgufFile();

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // start of the data section in the file
  uint64_t file_size() const { return size_; }
  const uint8_t* file_data() const { return base_; }

  // Metadata, in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const GgufValue* find(const std::string& key) const;
  bool has(const std::string& key) const { return find(key) != nullptr; }

  // Typed getters: `def` when the key is missing; GgufError naming the key when it holds a value
  // of the wrong type or one out of range (get_u32 accepts any integer type whose value fits;
  // get_f32 accepts any numeric scalar).
  std::string get_string(const std::string& key, const std::string& def = "") const;
  uint32_t get_u32(const std::string& key, uint32_t def = 0) const;
  int64_t get_i64(const std::string& key, int64_t def = 0) const;
  float get_f32(const std::string& key, float def = 0.0f) const;
  bool get_bool(const std::string& key, bool def = false) const;
  // Array getters: empty when missing; GgufError when the key is not an array of that kind.
  std::vector<std::string> get_string_array(const std::string& key) const;
  std::vector<float> get_float_array(const std::string& key) const;
  std::vector<int64_t> get_int_array(const std::string& key) const;

  const std::vector<GgufTensor>& tensors() const { return tensors_; }
  const GgufTensor* find_tensor(const std::string& name) const;
  // Throws GgufError when there is no tensor `name`.
  const GgufTensor& tensor(const std::string& name) const;
  // Says the mapped bytes [p, p + n) will not be read soon (a repacked copy replaces them): their
  // whole pages leave the process's resident set and are read from the file again if touched.
  // A no-op for in-memory files and on Windows.
  void drop_pages(const void* p, size_t n) const;

 private:
  friend class GgufParser;
  GgufFile() = default;
  void release() noexcept;
  void parse();
  [[noreturn]] void fail(const std::string& what) const;

  std::string path_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  bool mapped_ = false;
  void* map_handle_ = nullptr;   // Windows: the file mapping handle
  void* file_handle_ = nullptr;  // Windows: the file handle

  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::unordered_map<std::string, size_t> kv_index_;
  std::vector<GgufTensor> tensors_;
  std::unordered_map<std::string, size_t> tensor_index_;
};

// ---------------------------------------------------------------------------------------------
// Writer
// ---------------------------------------------------------------------------------------------

// Collects metadata and tensors, then streams a GGUF v3 file to disk one tensor at a time.
// Tensors are laid out in insertion order, each at the next multiple of the alignment, with zero
// padding after every tensor (ggml's own layout, which llama.cpp requires). Tensor names are at
// most 63 bytes (llama.cpp's limit) and unique; keys are non-empty and unique (set() replaces).
class GgufWriter {
 public:
  // Fills bytes [offset, offset + n) of one tensor's data into dst. Chunks arrive in order, and
  // their boundaries fall on whole blocks of the tensor's type (and whole elements).
  using FillFn = std::function<void(uint8_t* dst, uint64_t offset, uint64_t n)>;

  GgufWriter() = default;

  // Adds or replaces a key (keeping its original position when replacing). `general.alignment`
  // must be a u32 power of two; it sets the file's alignment (default 32, not written unless set).
  void set(const std::string& key, GgufValue v);
  void set_string(const std::string& key, std::string v) { set(key, GgufValue::string(std::move(v))); }
  void set_u32(const std::string& key, uint32_t v) { set(key, GgufValue::u32(v)); }
  void set_i32(const std::string& key, int32_t v) { set(key, GgufValue::i32(v)); }
  void set_u64(const std::string& key, uint64_t v) { set(key, GgufValue::u64(v)); }
  void set_f32(const std::string& key, float v) { set(key, GgufValue::f32(v)); }
  void set_bool(const std::string& key, bool v) { set(key, GgufValue::boolean(v)); }
  void set_string_array(const std::string& key, std::vector<std::string> v) {
    set(key, GgufValue::string_array(std::move(v)));
  }
  void set_f32_array(const std::string& key, const std::vector<float>& v) {
    set(key, GgufValue::array_of(GgufType::F32, v));
  }
  void set_i32_array(const std::string& key, const std::vector<int32_t>& v) {
    set(key, GgufValue::array_of(GgufType::I32, v));
  }
  bool remove(const std::string& key);

  // Tensors (shape in GGUF order, 1 to 4 dims, shape[0] a multiple of the type's block size).
  // `data` must hold the tensor's byte size and stay valid until write() returns.
  void add_tensor(const std::string& name, DType dtype, std::vector<int64_t> shape, const void* data);
  void add_tensor(const std::string& name, DType dtype, std::vector<int64_t> shape, FillFn fill);
  // Any ggml type (e.g. Q5_K), for files tessera only passes through.
  void add_tensor_ggml(const std::string& name, uint32_t ggml_type, std::vector<int64_t> shape,
                       const void* data);
  void add_tensor_ggml(const std::string& name, uint32_t ggml_type, std::vector<int64_t> shape,
                       FillFn fill);

  uint32_t alignment() const { return alignment_; }
  size_t tensor_count() const { return tensors_.size(); }
  // Where the data section will start, and the total file size write() will produce.
  uint64_t data_offset() const;
  uint64_t file_size() const;

  // Writes the file (to `path`.partial, renamed over `path` when complete; removed on failure).
  // Returns the number of bytes written. Throws GgufError naming the file on I/O failure.
  uint64_t write(const std::string& path) const;

 private:
  struct Tensor {
    std::string name;
    uint32_t ggml_type;
    std::vector<int64_t> shape;
    uint64_t byte_size;
    uint32_t block_bytes;
    const void* data;
    FillFn fill;
  };
  void add(const std::string& name, uint32_t ggml_type, std::vector<int64_t> shape, const void* data,
           FillFn fill);

  uint32_t alignment_ = 32;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<Tensor> tensors_;
};

}  // namespace tessera
