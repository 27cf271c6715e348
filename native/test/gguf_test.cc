// GGUF container test binary (no Node): writer -> reader round trips for every metadata value type
// and tensor type, the real files of test/data/models (and models/), hand-made malformed files that must be
// rejected with a named GgufError, and a fuzz pass (truncations and bit flips of every file) that
// must only ever parse or throw GgufError. Build it with -fsanitize=address,undefined to prove the
// reader never reads out of bounds: the fuzz pass parses from exactly-sized heap buffers.
//
// Usage: gguf_test [repo-dir]   (default: the source tree it was built from; see test_data.h)
// Last line of output: "gguf: <passed> passed, <failed> failed"; exit status 1 on failure.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "harness.h"
#include "test_data.h"
#include "tessera/dtype.h"
#include "tessera/gguf.h"

using namespace tessera;
using namespace harness;
namespace fs = std::filesystem;

namespace {

// ---------------------------------------------------------------------------------------------
// Checks (the harness itself is harness.h)
// ---------------------------------------------------------------------------------------------

// Runs fn, which must throw GgufError whose message contains every string of `needles`.
void expect_gguf_error(const char* file, int line, const std::string& what, const std::vector<std::string>& needles,
                       const std::function<void()>& fn) {
  ++g_checks;
  try {
    fn();
  } catch (const GgufError& e) {
    const std::string msg = e.what();
    for (const std::string& n : needles) {
      if (msg.find(n) == std::string::npos) {
        fail(file, line, what + ": message \"" + msg + "\" does not contain \"" + n + "\"");
        return;
      }
    }
    return;
  } catch (const std::exception& e) {
    fail(file, line, what + ": threw a non-GgufError exception: " + e.what());
    return;
  }
  fail(file, line, what + ": did not throw");
}
#define EXPECT_GGUF_ERROR(what, needles, ...) expect_gguf_error(__FILE__, __LINE__, what, needles, __VA_ARGS__)
#define NEEDLES(...) std::vector<std::string>{__VA_ARGS__}

fs::path g_tmp;  // scratch folder for written files

using test_data::model;  // the path of a real model file; throws (naming it) when it is missing

std::vector<uint8_t> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void write_bytes(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(b.data()), (std::streamsize)b.size());
}

std::string tmp_file(const std::string& name) { return (g_tmp / name).string(); }

// Parses `n` bytes from an exactly-sized heap copy (so a sanitizer sees any read past the end)
// and touches everything a caller could touch; returns true when it parsed, false on a
// GgufError; records a failure for any other exception.
bool parse_ok(const uint8_t* p, size_t n, const std::string& name, std::string* err = nullptr) {
  std::unique_ptr<uint8_t[]> buf(new uint8_t[n ? n : 1]);
  if (n) memcpy(buf.get(), p, n);
  try {
    GgufFile f = GgufFile::from_memory(n ? buf.get() : nullptr, n, name);
    volatile uint64_t sink = 0;
    for (const auto& kv : f.metadata()) {
      sink += kv.second.type_string().size() + kv.second.size();
      if (kv.second.is_array() && kv.second.elem_type() == GgufType::String)
        for (const std::string& s : kv.second.strings()) sink += s.size();
    }
    try {
      sink += f.get_u32("llama.block_count", 0);
      sink += (uint64_t)f.get_f32("llama.attention.layer_norm_rms_epsilon", 0.0f);
      sink += f.get_string_array("tokenizer.ggml.tokens").size();
      sink += f.get_float_array("tokenizer.ggml.scores").size();
      sink += f.get_int_array("tokenizer.ggml.token_type").size();
      sink += f.get_bool("tokenizer.ggml.add_bos_token", false);
      sink += f.get_string("general.architecture", "").size();
    } catch (const GgufError&) {
      // wrong types after a bit flip are reported as GgufError too
    }
    for (const GgufTensor& t : f.tensors()) {
      if (t.byte_size > 0) sink += t.data[0] + t.data[t.byte_size - 1];
      sink += t.type_name().size();
    }
    (void)sink;
    return true;
  } catch (const GgufError& e) {
    if (err) *err = e.what();
    return false;
  } catch (const std::exception& e) {
    fail(__FILE__, __LINE__, name + ": threw a non-GgufError exception: " + e.what());
    return false;
  }
}

// ---------------------------------------------------------------------------------------------
// A raw byte builder for hand-made (and malformed) files, independent of GgufWriter.
// ---------------------------------------------------------------------------------------------

struct Bytes {
  std::vector<uint8_t> b;
  Bytes& u8(uint8_t v) { return raw(&v, 1); }
  Bytes& u32(uint32_t v) { return raw(&v, 4); }
  Bytes& u64(uint64_t v) { return raw(&v, 8); }
  Bytes& f32(float v) { return raw(&v, 4); }
  Bytes& raw(const void* p, size_t n) {
    const uint8_t* c = static_cast<const uint8_t*>(p);
    b.insert(b.end(), c, c + n);
    return *this;
  }
  Bytes& str(const std::string& s) {
    u64(s.size());
    return raw(s.data(), s.size());
  }
  Bytes& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    raw("GGUF", 4);
    u32(version);
    u64(n_tensors);
    return u64(n_kv);
  }
  Bytes& kv_str(const std::string& k, const std::string& v) { return str(k).u32(8).str(v); }
  Bytes& kv_u32(const std::string& k, uint32_t v) { return str(k).u32(4).u32(v); }
  Bytes& tinfo(const std::string& name, const std::vector<uint64_t>& dims, uint32_t type, uint64_t offset) {
    str(name).u32((uint32_t)dims.size());
    for (uint64_t d : dims) u64(d);
    return u32(type).u64(offset);
  }
  Bytes& pad(size_t align) {
    while (b.size() % align) b.push_back(0);
    return *this;
  }
  Bytes& zeros(size_t n) {
    b.insert(b.end(), n, 0);
    return *this;
  }
};

// A valid file: 1 key, tensors a (F32 [8]) at 0 and b (F32 [8, 2]) at 32, 96 data bytes.
Bytes valid_small(uint32_t version = 3) {
  Bytes x;
  x.header(2, 1, version).kv_str("general.architecture", "llama");
  x.tinfo("a", {8}, 0, 0).tinfo("b", {8, 2}, 0, 32).pad(32).zeros(96);
  return x;
}

std::string parse_error(const Bytes& x, const std::string& name = "crafted.gguf") {
  std::string err;
  if (parse_ok(x.b.data(), x.b.size(), name, &err)) return "(parsed)";
  return err;
}

#define EXPECT_REJECTS(bytes, ...)                                                                     \
  do {                                                                                                 \
    const std::string err_ = parse_error(bytes);                                                       \
    ++g_checks;                                                                                        \
    for (const std::string& n_ : std::vector<std::string>{__VA_ARGS__})                               \
      if (err_.find(n_) == std::string::npos) {                                                       \
        fail(__FILE__, __LINE__, "expected an error containing \"" + n_ + "\", got \"" + err_ + "\""); \
        break;                                                                                         \
      }                                                                                                \
    if (err_.rfind("crafted.gguf: ", 0) != 0 && err_ != "(parsed)")                                    \
      fail(__FILE__, __LINE__, "error does not start with the file name: " + err_);                    \
  } while (0)

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

TEST_CASE(type_tables) {
  GgmlTypeInfo ti;
  EXPECT(ggml_type_info(0, &ti) && ti.block_elems == 1 && ti.block_bytes == 4, "F32");
  EXPECT(ggml_type_info(8, &ti) && ti.block_elems == 32 && ti.block_bytes == 34 && std::string(ti.name) == "Q8_0", "Q8_0");
  EXPECT(ggml_type_info(13, &ti) && ti.block_elems == 256 && ti.block_bytes == 176 && std::string(ti.name) == "Q5_K", "Q5_K");
  EXPECT(ggml_type_info(30, &ti) && ti.block_bytes == 2 && std::string(ti.name) == "BF16", "BF16");
  for (uint32_t removed : {4u, 5u, 31u, 32u, 33u, 36u, 37u, 38u, 42u, 1000u, 0xffffffffu})
    EXPECT(!ggml_type_info(removed, nullptr), "type %u must be unknown", removed);
  // The tessera dtypes and their ggml ids agree on block layout both ways.
  const struct {
    uint32_t ggml;
    DType dt;
  } map[] = {{0, DType::F32}, {1, DType::F16}, {2, DType::Q4_0}, {8, DType::Q8_0},
             {12, DType::Q4_K}, {14, DType::Q6_K}, {30, DType::BF16}, {26, DType::I32}};
  for (const auto& m : map) {
    DType d;
    EXPECT(dtype_from_ggml(m.ggml, &d) && d == m.dt, "ggml %u", m.ggml);
    EXPECT(ggml_from_dtype(m.dt) == (int64_t)m.ggml, "dtype %s", dtype_info(m.dt).name);
    ggml_type_info(m.ggml, &ti);
    EXPECT(ti.block_elems == dtype_info(m.dt).block_elems && ti.block_bytes == dtype_info(m.dt).block_bytes,
           "layout of %s", ti.name);
  }
  EXPECT(!dtype_from_ggml(13, nullptr) && !dtype_from_ggml(3, nullptr), "Q5_K / Q4_1 are not tessera dtypes");
  EXPECT(ggml_from_dtype(DType::U8) == -1, "u8 has no ggml type");
  EXPECT(ggml_type_name(13) == "Q5_K" && ggml_type_name(99) == "GGML_TYPE_99", "names");
  EXPECT(std::string(gguf_type_name(GgufType::String)) == "string", "gguf type names");
}

// ---------------------------------------------------------------------------------------------
// Round trips
// ---------------------------------------------------------------------------------------------

std::vector<std::pair<std::string, GgufValue>> all_values() {
  std::vector<std::pair<std::string, GgufValue>> v;
  float nan_f;
  const uint32_t nan_bits = 0x7fc01234u;
  memcpy(&nan_f, &nan_bits, 4);
  v.emplace_back("t.u8", GgufValue::u8(255));
  v.emplace_back("t.i8", GgufValue::i8(-128));
  v.emplace_back("t.u16", GgufValue::u16(65535));
  v.emplace_back("t.i16", GgufValue::i16(-32768));
  v.emplace_back("t.u32", GgufValue::u32(4294967295u));
  v.emplace_back("t.i32", GgufValue::i32(std::numeric_limits<int32_t>::min()));
  v.emplace_back("t.f32", GgufValue::f32(-1.5e-7f));
  v.emplace_back("t.f32_nan", GgufValue::f32(nan_f));
  v.emplace_back("t.bool_true", GgufValue::boolean(true));
  v.emplace_back("t.bool_false", GgufValue::boolean(false));
  v.emplace_back("t.string", GgufValue::string("h\xc3\xa9llo \xe2\x96\x81world"));
  v.emplace_back("t.string_nul", GgufValue::string(std::string("a\0b", 3)));
  v.emplace_back("t.string_empty", GgufValue::string(""));
  v.emplace_back("t.u64", GgufValue::u64(std::numeric_limits<uint64_t>::max()));
  v.emplace_back("t.i64", GgufValue::i64(std::numeric_limits<int64_t>::min()));
  v.emplace_back("t.f64", GgufValue::f64(-0.0));
  v.emplace_back("t.f64_big", GgufValue::f64(1e300));
  v.emplace_back("a.u8", GgufValue::array_of(GgufType::U8, std::vector<uint8_t>{0, 1, 255}));
  v.emplace_back("a.i8", GgufValue::array_of(GgufType::I8, std::vector<int8_t>{-128, 0, 127}));
  v.emplace_back("a.u16", GgufValue::array_of(GgufType::U16, std::vector<uint16_t>{1, 65535}));
  v.emplace_back("a.i16", GgufValue::array_of(GgufType::I16, std::vector<int16_t>{-2, 3}));
  v.emplace_back("a.u32", GgufValue::array_of(GgufType::U32, std::vector<uint32_t>{7, 4000000000u}));
  v.emplace_back("a.i32", GgufValue::array_of(GgufType::I32, std::vector<int32_t>{-1, 2, 3, 4}));
  v.emplace_back("a.f32", GgufValue::array_of(GgufType::F32, std::vector<float>{0.5f, -2.0f, 1e30f}));
  v.emplace_back("a.bool", GgufValue::bool_array({true, false, true}));
  v.emplace_back("a.string", GgufValue::string_array({"<unk>", "", "\xe2\x96\x81the", std::string("x\0y", 3)}));
  v.emplace_back("a.u64", GgufValue::array_of(GgufType::U64, std::vector<uint64_t>{0, 1ull << 63}));
  v.emplace_back("a.i64", GgufValue::array_of(GgufType::I64, std::vector<int64_t>{-(1ll << 62), 5}));
  v.emplace_back("a.f64", GgufValue::array_of(GgufType::F64, std::vector<double>{3.25, -1e300}));
  v.emplace_back("a.empty_f32", GgufValue::array_of(GgufType::F32, std::vector<float>{}));
  v.emplace_back("a.empty_string", GgufValue::string_array({}));
  v.emplace_back("n.i32_2d", GgufValue::array_of_arrays({
                                 GgufValue::array_of(GgufType::I32, std::vector<int32_t>{1, 2}),
                                 GgufValue::array_of(GgufType::I32, std::vector<int32_t>{}),
                                 GgufValue::array_of(GgufType::I32, std::vector<int32_t>{3}),
                             }));
  v.emplace_back("n.string_3d", GgufValue::array_of_arrays({GgufValue::array_of_arrays(
                                    {GgufValue::string_array({"a", "bc"}), GgufValue::string_array({})})}));
  v.emplace_back("n.mixed", GgufValue::array_of_arrays({GgufValue::string_array({"x"}),
                                                        GgufValue::array_of(GgufType::F64, std::vector<double>{1.0})}));
  v.emplace_back("n.empty", GgufValue::array_of_arrays({}));
  return v;
}

TEST_CASE(metadata_round_trip) {
  for (uint32_t align : {32u, 64u, 1u}) {
    GgufWriter w;
    const auto values = all_values();
    for (const auto& kv : values) w.set(kv.first, kv.second);
    if (align != 32) w.set("general.alignment", GgufValue::u32(align));
    const std::string path = tmp_file("meta_" + std::to_string(align) + ".gguf");
    const uint64_t written = w.write(path);
    EXPECT(written == w.file_size() && written == fs::file_size(path), "size %llu vs planned %llu vs on disk %llu",
           (unsigned long long)written, (unsigned long long)w.file_size(), (unsigned long long)fs::file_size(path));
    EXPECT(!fs::exists(path + ".partial"), "temporary file removed");
    const GgufFile f(path);
    EXPECT(f.version() == 3 && f.alignment() == align, "version %u alignment %u", f.version(), f.alignment());
    EXPECT(f.tensors().empty() && f.data_offset() % align == 0 && f.data_offset() == f.file_size(),
           "data offset %llu file %llu", (unsigned long long)f.data_offset(), (unsigned long long)f.file_size());
    const size_t extra = align != 32 ? 1 : 0;
    EXPECT(f.metadata().size() == values.size() + extra, "count %zu", f.metadata().size());
    for (size_t i = 0; i < values.size() && i < f.metadata().size(); ++i) {
      const auto& got = f.metadata()[i];
      EXPECT(got.first == values[i].first, "key %zu order: %s vs %s", i, got.first.c_str(), values[i].first.c_str());
      EXPECT(got.second == values[i].second, "value of %s (type %s vs %s)", values[i].first.c_str(),
             got.second.type_string().c_str(), values[i].second.type_string().c_str());
    }
    // Typed getters.
    EXPECT(f.get_u32("t.u8") == 255 && f.get_u32("t.u16") == 65535 && f.get_u32("t.u32") == 4294967295u, "get_u32");
    EXPECT(f.get_u32("missing", 7) == 7 && f.get_string("missing", "d") == "d" && f.get_bool("missing", true),
           "defaults");
    EXPECT(f.get_i64("t.i64") == std::numeric_limits<int64_t>::min() && f.get_i64("t.i8") == -128, "get_i64");
    EXPECT(f.get_f32("t.f32") == -1.5e-7f && f.get_f32("t.u16") == 65535.0f, "get_f32");
    EXPECT(std::isinf(f.get_f32("t.f64_big")) && f.get_f32("t.f64_big") > 0, "f64 beyond float range -> inf");
    EXPECT(f.get_bool("t.bool_true") && !f.get_bool("t.bool_false"), "get_bool");
    EXPECT(f.get_string("t.string") == "h\xc3\xa9llo \xe2\x96\x81world", "get_string");
    EXPECT(f.get_string("t.string_nul") == std::string("a\0b", 3), "embedded NUL kept");
    EXPECT(f.get_string_array("a.string").size() == 4 && f.get_string_array("a.string")[2] == "\xe2\x96\x81the",
           "string array");
    const std::vector<float> fl = f.get_float_array("a.f32");
    EXPECT(fl.size() == 3 && fl[1] == -2.0f && fl[2] == 1e30f, "float array");
    EXPECT(f.get_float_array("a.i16") == std::vector<float>({-2.0f, 3.0f}), "float array from ints");
    EXPECT(f.get_int_array("a.i32") == std::vector<int64_t>({-1, 2, 3, 4}), "int array");
    EXPECT(f.get_int_array("a.u32") == std::vector<int64_t>({7, 4000000000ll}), "int array from u32");
    EXPECT(f.find("n.i32_2d")->type_string() == "i32[][]" && f.find("n.string_3d")->type_string() == "string[][][]",
           "nested type strings %s", f.find("n.i32_2d")->type_string().c_str());
    EXPECT(f.find("a.f64")->type_string() == "f64[]" && f.find("t.u64")->type_string() == "u64", "type strings");
    EXPECT_GGUF_ERROR("u32 from a string", NEEDLES("t.string", "expected an integer", path),
                      [&] { f.get_u32("t.string"); });
    EXPECT_GGUF_ERROR("u32 from a negative", NEEDLES("t.i8", "negative"), [&] { f.get_u32("t.i8"); });
    EXPECT_GGUF_ERROR("u32 overflow", NEEDLES("t.u64", "does not fit"), [&] { f.get_u32("t.u64"); });
    EXPECT_GGUF_ERROR("i64 overflow", NEEDLES("t.u64", "does not fit"), [&] { f.get_i64("t.u64"); });
    EXPECT_GGUF_ERROR("int array overflow", NEEDLES("a.u64", "does not fit"), [&] { f.get_int_array("a.u64"); });
    EXPECT_GGUF_ERROR("bool from u8", NEEDLES("t.u8", "expected bool"), [&] { f.get_bool("t.u8"); });
    EXPECT_GGUF_ERROR("string from f32", NEEDLES("expected string"), [&] { f.get_string("t.f32"); });
    EXPECT_GGUF_ERROR("string array from f32 array", NEEDLES("a.f32", "string[]"),
                      [&] { f.get_string_array("a.f32"); });
    EXPECT_GGUF_ERROR("float array from strings", NEEDLES("a.string"), [&] { f.get_float_array("a.string"); });
    EXPECT_GGUF_ERROR("int array from floats", NEEDLES("a.f32"), [&] { f.get_int_array("a.f32"); });
    EXPECT_GGUF_ERROR("missing tensor", NEEDLES("no tensor named", "'w'"), [&] { f.tensor("w"); });
    // The in-memory parse of the same bytes agrees.
    const std::vector<uint8_t> bytes = read_bytes(path);
    const GgufFile m = GgufFile::from_memory(bytes.data(), bytes.size(), "mem");
    EXPECT(m.metadata().size() == f.metadata().size(), "memory parse");
  }
}

// Deterministic bytes for tensor i.
uint8_t pattern(uint64_t tensor, uint64_t at) { return (uint8_t)((at * 2654435761ull + tensor * 97 + (at >> 8)) >> 3); }

TEST_CASE(tensor_round_trip) {
  struct Spec {
    const char* name;
    bool use_dtype;
    DType dtype;
    uint32_t ggml;
    std::vector<int64_t> shape;
    bool fill;
  };
  const std::vector<Spec> specs = {
      {"f32.1d", true, DType::F32, 0, {7}, false},
      {"f16.2d", true, DType::F16, 1, {5, 3}, true},
      {"bf16.3d", true, DType::BF16, 30, {4, 3, 2}, false},
      {"q8_0.2d", true, DType::Q8_0, 8, {64, 3}, true},
      {"q4_0.4d", true, DType::Q4_0, 2, {32, 2, 2, 2}, false},
      {"q4_k.2d", true, DType::Q4_K, 12, {256, 2}, true},
      {"q6_k.1d", true, DType::Q6_K, 14, {512}, false},
      {"i32.2d", true, DType::I32, 26, {3, 3}, true},
      {"q5_k.raw", false, DType::F32, 13, {256, 1}, false},
      {"iq2_xxs.raw", false, DType::F32, 16, {256}, true},
      {"empty.f32", true, DType::F32, 0, {0, 4}, false},
  };
  for (uint32_t align : {32u, 64u}) {
    GgufWriter w;
    w.set_string("general.architecture", "test");
    if (align != 32) w.set_u32("general.alignment", align);
    std::vector<std::vector<uint8_t>> data(specs.size());
    for (size_t i = 0; i < specs.size(); ++i) {
      const Spec& s = specs[i];
      GgmlTypeInfo ti;
      ggml_type_info(s.ggml, &ti);
      uint64_t n = 1;
      for (int64_t d : s.shape) n *= (uint64_t)d;
      data[i].resize(n / ti.block_elems * ti.block_bytes);
      for (size_t b = 0; b < data[i].size(); ++b) data[i][b] = pattern(i, b);
      if (s.fill) {
        const std::vector<uint8_t>* src = &data[i];
        GgufWriter::FillFn fn = [src](uint8_t* dst, uint64_t off, uint64_t cnt) { memcpy(dst, src->data() + off, cnt); };
        if (s.use_dtype) w.add_tensor(s.name, s.dtype, s.shape, fn);
        else w.add_tensor_ggml(s.name, s.ggml, s.shape, fn);
      } else {
        if (s.use_dtype) w.add_tensor(s.name, s.dtype, s.shape, data[i].data());
        else w.add_tensor_ggml(s.name, s.ggml, s.shape, data[i].data());
      }
    }
    const std::string path = tmp_file("tensors_" + std::to_string(align) + ".gguf");
    const uint64_t written = w.write(path);
    EXPECT(written == fs::file_size(path) && written == w.file_size(), "size");
    const GgufFile f(path);
    EXPECT(f.alignment() == align && f.tensors().size() == specs.size(), "alignment %u, %zu tensors", f.alignment(),
           f.tensors().size());
    EXPECT(f.data_offset() == w.data_offset(), "data offset %llu vs %llu", (unsigned long long)f.data_offset(),
           (unsigned long long)w.data_offset());
    uint64_t expect_offset = 0;
    for (size_t i = 0; i < specs.size() && i < f.tensors().size(); ++i) {
      const Spec& s = specs[i];
      const GgufTensor& t = f.tensors()[i];
      EXPECT(t.name == s.name && &f.tensor(s.name) == &t, "name %s", t.name.c_str());
      EXPECT(t.ggml_type == s.ggml, "%s ggml type %u", s.name, t.ggml_type);
      EXPECT(t.supported == s.use_dtype && (!s.use_dtype || t.dtype == s.dtype), "%s dtype", s.name);
      EXPECT(t.shape == s.shape, "%s shape", s.name);
      int64_t n = 1;
      for (int64_t d : s.shape) n *= d;
      EXPECT(t.n_elements == n, "%s elements %lld", s.name, (long long)t.n_elements);
      EXPECT(t.byte_size == data[i].size(), "%s byte size %llu", s.name, (unsigned long long)t.byte_size);
      EXPECT(t.offset == expect_offset, "%s offset %llu, expected %llu (ggml's sequential layout)", s.name,
             (unsigned long long)t.offset, (unsigned long long)expect_offset);
      expect_offset += (t.byte_size + align - 1) / align * align;
      EXPECT(((uintptr_t)t.data - (uintptr_t)f.file_data()) % align == 0, "%s data alignment", s.name);
      EXPECT(t.byte_size == 0 || memcmp(t.data, data[i].data(), t.byte_size) == 0, "%s data", s.name);
    }
    EXPECT(f.tensor("q5_k.raw").type_name() == "q5_k" && f.tensor("iq2_xxs.raw").type_name() == "iq2_xxs",
           "unsupported types named by ggml name");
    EXPECT(f.tensor("q8_0.2d").type_name() == "q8_0" && f.tensor("bf16.3d").type_name() == "bf16", "dtype names");
    // Padding after the last tensor too (ggml's layout): the file ends on the alignment.
    EXPECT(f.file_size() % align == 0 && f.data_offset() + expect_offset == f.file_size(), "file ends padded");
  }
  // A file with no tensors and no metadata at all.
  GgufWriter empty;
  const std::string p = tmp_file("empty.gguf");
  empty.write(p);
  const GgufFile e(p);
  EXPECT(e.metadata().empty() && e.tensors().empty() && e.file_size() == 32, "empty file is %llu bytes",
         (unsigned long long)e.file_size());
}

TEST_CASE(writer_streams_in_block_chunks) {
  // ~20 MB of Q8_0 through a fill callback: chunks arrive in order, on block boundaries.
  GgufWriter w;
  const int64_t cols = 4096, rows = 1500;  // 4096/32*34*1500 = 6.5 MB per tensor
  uint64_t next = 0;
  bool ordered = true, on_blocks = true;
  int calls = 0;
  for (int k = 0; k < 3; ++k) {
    w.add_tensor("big." + std::to_string(k), DType::Q8_0, {cols, rows},
                 [&, k](uint8_t* dst, uint64_t off, uint64_t n) {
                   if (off == 0) next = 0;
                   ordered = ordered && off == next;
                   on_blocks = on_blocks && off % 34 == 0;
                   next = off + n;
                   ++calls;
                   for (uint64_t j = 0; j < n; ++j) dst[j] = pattern((uint64_t)k, off + j);
                 });
  }
  const std::string path = tmp_file("big.gguf");
  w.write(path);
  EXPECT(ordered && on_blocks && calls >= 3, "ordered %d on_blocks %d calls %d", ordered, on_blocks, calls);
  const GgufFile f(path);
  bool same = true;
  for (int k = 0; k < 3; ++k) {
    const GgufTensor& t = f.tensor("big." + std::to_string(k));
    for (uint64_t j = 0; j < t.byte_size && same; j += 4097) same = t.data[j] == pattern((uint64_t)k, j);
    same = same && t.data[t.byte_size - 1] == pattern((uint64_t)k, t.byte_size - 1);
  }
  EXPECT(same, "streamed data reads back");
  // A failing callback leaves no file behind.
  GgufWriter bad;
  bad.add_tensor("x", DType::F32, {8}, [](uint8_t*, uint64_t, uint64_t) { throw std::runtime_error("boom"); });
  const std::string bp = tmp_file("bad.gguf");
  bool threw = false;
  try {
    bad.write(bp);
  } catch (const std::runtime_error&) {
    threw = true;
  }
  EXPECT(threw && !fs::exists(bp) && !fs::exists(bp + ".partial"), "failed write cleaned up");
  EXPECT_GGUF_ERROR("unwritable path", NEEDLES("no/such/dir", "cannot create"),
                    [&] { GgufWriter().write(tmp_file("no/such/dir/x.gguf")); });
}

TEST_CASE(writer_rejects_bad_input) {
  std::vector<float> d(64);
  EXPECT_GGUF_ERROR("duplicate tensor", NEEDLES("duplicate tensor name 'a'"), [&] {
    GgufWriter w;
    w.add_tensor("a", DType::F32, {8}, d.data());
    w.add_tensor("a", DType::F32, {8}, d.data());
  });
  EXPECT_GGUF_ERROR("long name", NEEDLES("64 bytes", "63"),
                    [&] { GgufWriter().add_tensor(std::string(64, 'n'), DType::F32, {8}, d.data()); });
  EXPECT_GGUF_ERROR("block multiple", NEEDLES("multiple of 32"),
                    [&] { GgufWriter().add_tensor("q", DType::Q8_0, {33}, d.data()); });
  EXPECT_GGUF_ERROR("5 dims", NEEDLES("1 to 4 dimensions"),
                    [&] { GgufWriter().add_tensor("q", DType::F32, {1, 1, 1, 1, 1}, d.data()); });
  EXPECT_GGUF_ERROR("no dims", NEEDLES("1 to 4 dimensions"),
                    [&] { GgufWriter().add_tensor("q", DType::F32, {}, d.data()); });
  EXPECT_GGUF_ERROR("negative dim", NEEDLES("negative"),
                    [&] { GgufWriter().add_tensor("q", DType::F32, {-8}, d.data()); });
  EXPECT_GGUF_ERROR("overflow", NEEDLES("overflows"), [&] {
    GgufWriter().add_tensor("q", DType::F32, {1ll << 40, 1ll << 40}, d.data());
  });
  EXPECT_GGUF_ERROR("no data", NEEDLES("no data"),
                    [&] { GgufWriter().add_tensor("q", DType::F32, {8}, (const void*)nullptr); });
  EXPECT_GGUF_ERROR("u8 dtype", NEEDLES("u8"), [&] { GgufWriter().add_tensor("q", DType::U8, {8}, d.data()); });
  EXPECT_GGUF_ERROR("unknown ggml type", NEEDLES("unknown ggml type 4"),
                    [&] { GgufWriter().add_tensor_ggml("q", 4, {8}, d.data()); });
  EXPECT_GGUF_ERROR("empty key", NEEDLES("empty"), [&] { GgufWriter().set_u32("", 1); });
  EXPECT_GGUF_ERROR("alignment type", NEEDLES("general.alignment", "u32"),
                    [&] { GgufWriter().set_u64("general.alignment", 64); });
  EXPECT_GGUF_ERROR("alignment value", NEEDLES("power of two"),
                    [&] { GgufWriter().set_u32("general.alignment", 48); });
  EXPECT_GGUF_ERROR("nested non-array", NEEDLES("must be an array"),
                    [&] { GgufValue::array_of_arrays({GgufValue::u8(1)}); });
  // set() replaces in place.
  GgufWriter w;
  w.set_u32("a", 1);
  w.set_u32("b", 2);
  w.set_string("a", "x");
  const std::string p = tmp_file("replace.gguf");
  w.write(p);
  const GgufFile f(p);
  EXPECT(f.metadata().size() == 2 && f.metadata()[0].first == "a" && f.get_string("a") == "x", "replace keeps order");
}

// ---------------------------------------------------------------------------------------------
// Real files
// ---------------------------------------------------------------------------------------------

void check_stories(const GgufFile& f, uint32_t matrix_type) {
  EXPECT(f.version() == 3 && f.alignment() == 32, "version %u alignment %u", f.version(), f.alignment());
  EXPECT(f.metadata().size() == 21 && f.tensors().size() == 47, "%zu keys, %zu tensors", f.metadata().size(),
         f.tensors().size());
  EXPECT(f.get_string("general.architecture") == "llama", "architecture");
  EXPECT(f.get_u32("llama.block_count") == 5 && f.get_u32("llama.embedding_length") == 64, "block_count/embedding");
  EXPECT(f.get_u32("llama.attention.head_count") == 8 && f.get_u32("llama.attention.head_count_kv") == 4, "heads");
  EXPECT(f.get_u32("llama.feed_forward_length") == 172 && f.get_u32("llama.context_length") == 512, "ffn/ctx");
  EXPECT(std::fabs(f.get_f32("llama.attention.layer_norm_rms_epsilon") - 1e-5f) < 1e-9f, "rms eps");
  EXPECT(f.get_f32("llama.rope.freq_base") == 10000.0f, "rope base");
  const std::vector<std::string> tokens = f.get_string_array("tokenizer.ggml.tokens");
  EXPECT(tokens.size() == 512 && tokens[0] == "<unk>", "tokens: %zu", tokens.size());
  EXPECT(f.get_float_array("tokenizer.ggml.scores").size() == 512, "scores");
  const std::vector<int64_t> tt = f.get_int_array("tokenizer.ggml.token_type");
  EXPECT(tt.size() == 512 && tt[0] == 2 && tt[1] == 3, "token types");
  EXPECT(f.get_u32("tokenizer.ggml.bos_token_id") == 1 && f.get_u32("tokenizer.ggml.eos_token_id") == 2, "bos/eos");
  EXPECT(f.get_bool("tokenizer.ggml.add_bos_token"), "add_bos");
  EXPECT(f.find("tokenizer.ggml.scores")->type_string() == "f32[]" &&
             f.find("tokenizer.ggml.token_type")->type_string() == "i32[]",
         "array types");
  const GgufTensor& emb = f.tensor("token_embd.weight");
  EXPECT(emb.shape == std::vector<int64_t>({64, 512}) && emb.ggml_type == matrix_type && emb.offset == 0,
         "token_embd shape/type %u", emb.ggml_type);
  const GgufTensor& norm = f.tensor("output_norm.weight");
  EXPECT(norm.shape == std::vector<int64_t>({64}) && norm.dtype == DType::F32 && norm.byte_size == 256, "output_norm");
  const GgufTensor& wk = f.tensor("blk.0.attn_k.weight");
  EXPECT(wk.shape == std::vector<int64_t>({64, 32}) && wk.n_elements == 2048, "attn_k (GQA: 4 kv heads x 8)");
  const GgufTensor& down = f.tensor("blk.4.ffn_down.weight");
  EXPECT(down.shape == std::vector<int64_t>({172, 64}), "ffn_down");
  for (int l = 0; l < 5; ++l)
    for (const char* n : {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate",
                          "ffn_down", "ffn_up"})
      EXPECT(f.find_tensor("blk." + std::to_string(l) + "." + n + ".weight") != nullptr, "blk.%d.%s", l, n);
  EXPECT(f.data_offset() == 14176, "data offset %llu", (unsigned long long)f.data_offset());
  // Norm weights are F32 in every variant: finite and near 1-ish, so the pointer is right.
  float w0;
  memcpy(&w0, norm.data, 4);
  EXPECT(std::isfinite(w0) && std::fabs(w0) < 100.0f, "output_norm[0] = %g", (double)w0);
}

TEST_CASE(stories260K_f32) {
  const GgufFile f(model("stories260K.gguf"));
  check_stories(f, 0);
  for (const GgufTensor& t : f.tensors()) EXPECT(t.dtype == DType::F32 && t.supported, "%s is f32", t.name.c_str());
  EXPECT(f.file_size() == 1054304, "size");
}

TEST_CASE(stories260K_q8_0) {
  const GgufFile f(model("stories260K-q8_0.gguf"));
  check_stories(f, 8);
  EXPECT(f.tensor("blk.0.attn_q.weight").dtype == DType::Q8_0 && f.tensor("blk.0.attn_q.weight").byte_size == 64 * 2 * 34,
         "q8_0 matrix");
  EXPECT(f.tensor("blk.0.ffn_down.weight").dtype == DType::F16, "ffn_down falls back to f16");
  EXPECT(f.tensor("blk.0.ffn_norm.weight").dtype == DType::F32, "norms stay f32");
}

TEST_CASE(stories260K_f16) {
  const GgufFile f(model("stories260K-f16.gguf"));
  check_stories(f, 1);
  for (const GgufTensor& t : f.tensors())
    EXPECT(t.dtype == (t.shape.size() == 2 ? DType::F16 : DType::F32), "%s: %s", t.name.c_str(), t.type_name().c_str());
}

TEST_CASE(llama2_vocab) {
  const GgufFile f(model("llama2-vocab.gguf"));
  EXPECT(f.tensors().empty(), "no tensors");
  const std::vector<std::string> tokens = f.get_string_array("tokenizer.ggml.tokens");
  EXPECT(tokens.size() == 32000, "%zu tokens", tokens.size());
  EXPECT(f.get_float_array("tokenizer.ggml.scores").size() == 32000, "scores");
  EXPECT(f.get_int_array("tokenizer.ggml.token_type").size() == 32000, "token types");
  EXPECT(f.get_u32("llama.vocab_size") == 32000 && f.get_string("tokenizer.ggml.model") == "llama", "vocab meta");
  EXPECT(f.data_offset() <= f.file_size(), "data offset");
}

// Copying a real file through GgufWriter reproduces it byte for byte: the writer's layout is the
// one gguf-py/ggml produce (and llama.cpp loads).
TEST_CASE(rewrite_is_byte_identical) {
  for (const char* name : {"stories260K.gguf", "stories260K-q8_0.gguf", "llama2-vocab.gguf"}) {
    const GgufFile f(model(name));
    GgufWriter w;
    for (const auto& kv : f.metadata()) w.set(kv.first, kv.second);
    for (const GgufTensor& t : f.tensors()) w.add_tensor_ggml(t.name, t.ggml_type, t.shape, t.data);
    const std::string out = tmp_file(std::string("copy_") + name);
    w.write(out);
    const std::vector<uint8_t> a = read_bytes(model(name)), b = read_bytes(out);
    size_t diff = 0;
    while (diff < a.size() && diff < b.size() && a[diff] == b[diff]) ++diff;
    EXPECT(a == b, "%s: %zu vs %zu bytes, first difference at %zu", name, a.size(), b.size(), diff);
  }
}

// ---------------------------------------------------------------------------------------------
// Malformed files
// ---------------------------------------------------------------------------------------------

TEST_CASE(rejects_malformed) {
  {
    std::string err;
    Bytes ok = valid_small();
    EXPECT(parse_ok(ok.b.data(), ok.b.size(), "ok.gguf", &err), "valid v3: %s", err.c_str());
    Bytes ok2 = valid_small(2);
    EXPECT(parse_ok(ok2.b.data(), ok2.b.size(), "ok.gguf", &err), "valid v2: %s", err.c_str());
  }
  {
    Bytes x = valid_small();
    x.b[0] = 'g';
    EXPECT_REJECTS(x, "bad magic");
  }
  for (uint32_t v : {0u, 1u, 4u, 0x03000000u}) {
    Bytes x = valid_small();
    memcpy(&x.b[4], &v, 4);
    EXPECT_REJECTS(x, "unsupported GGUF version " + std::to_string(v));
  }
  EXPECT_REJECTS(Bytes().raw("GGU", 3), "truncated in header");
  EXPECT_REJECTS(Bytes().raw("GGUF", 4).u32(3).u64(0), "truncated in header");
  EXPECT_REJECTS(Bytes().header(0, 1ull << 60), "metadata count", "impossible");
  EXPECT_REJECTS(Bytes().header(1ull << 60, 0), "tensor count", "impossible");
  EXPECT_REJECTS(Bytes().header(0, 1).u64(1ull << 40).raw("key", 3).zeros(40), "truncated in metadata key 0");
  {
    Bytes x;
    x.header(0, 13);
    for (int i = 0; i < 12; ++i) x.kv_u32("k" + std::to_string(i), (uint32_t)i);
    x.str("k12").u32(8).u64(1000).raw("short", 5);
    EXPECT_REJECTS(x, "truncated in metadata key 12", "'k12'");
  }
  EXPECT_REJECTS(Bytes().header(0, 1).str("k").u32(13).u32(0).zeros(8), "key 0", "invalid value type 13");
  EXPECT_REJECTS(Bytes().header(0, 1).str("k").u32(9).u32(99).u64(0), "invalid array element type 99");
  EXPECT_REJECTS(Bytes().header(0, 1).str("k").u32(9).u32(4).u64(1ull << 30).zeros(64), "truncated in metadata key 0");
  EXPECT_REJECTS(Bytes().header(0, 1).str("k").u32(9).u32(4).u64(1ull << 62).zeros(64), "too large");
  EXPECT_REJECTS(Bytes().header(0, 1).str("k").u32(9).u32(8).u64(1ull << 31).zeros(64), "truncated", "strings");
  {
    Bytes x;
    x.header(0, 1).str("deep").u32(9);
    for (int i = 0; i < 20; ++i) x.u32(9).u64(1);
    x.u32(4).u64(0);
    EXPECT_REJECTS(x, "nested deeper than 16");
  }
  EXPECT_REJECTS(Bytes().header(0, 1).str("").u32(4).u32(1), "metadata key 0 is empty");
  EXPECT_REJECTS(Bytes().header(0, 2).kv_u32("k", 1).kv_u32("k", 2), "duplicate metadata key 'k'");
  EXPECT_REJECTS(Bytes().header(0, 1).str("general.alignment").u32(10).u64(64), "general.alignment", "u32");
  EXPECT_REJECTS(Bytes().header(0, 1).kv_u32("general.alignment", 48), "general.alignment 48", "power of two");
  EXPECT_REJECTS(Bytes().header(0, 1).kv_u32("general.alignment", 0), "power of two");
  {
    std::string err;
    Bytes x;
    x.header(1, 1).kv_u32("general.alignment", 64).tinfo("t", {16}, 0, 0).pad(64).zeros(64);
    EXPECT(parse_ok(x.b.data(), x.b.size(), "a64.gguf", &err), "alignment 64: %s", err.c_str());
  }
  auto with_tensors = [](std::function<void(Bytes&)> infos, uint64_t n, size_t data) {
    Bytes x;
    x.header(n, 0);
    infos(x);
    x.pad(32).zeros(data);
    return x;
  };
  EXPECT_REJECTS(with_tensors([](Bytes& x) { x.tinfo("t", {1, 1, 1, 1, 1}, 0, 0); }, 1, 64), "'t' has 5 dimensions");
  EXPECT_REJECTS(with_tensors([](Bytes& x) { x.tinfo("t", {1ull << 32, 1ull << 32}, 0, 0); }, 1, 64),
                 "'t' element count overflows");
  EXPECT_REJECTS(with_tensors([](Bytes& x) { x.tinfo("t", {1ull << 31, 1ull << 31, 4}, 0, 0); }, 1, 64),
                 "'t' element count overflows");
  EXPECT_REJECTS(with_tensors([](Bytes& x) { x.tinfo("t", {1ull << 63}, 0, 0); }, 1, 64), "negative");
  EXPECT_REJECTS(with_tensors([](Bytes& x) { x.tinfo("t", {1ull << 62}, 0, 0); }, 1, 64), "'t'", "byte size overflows");
  EXPECT_REJECTS(with_tensors([](Bytes& x) { x.tinfo("t", {8}, 99, 0); }, 1, 64), "unknown ggml type 99");
  EXPECT_REJECTS(with_tensors([](Bytes& x) { x.tinfo("t", {8}, 4, 0); }, 1, 64), "unknown ggml type 4");
  EXPECT_REJECTS(with_tensors([](Bytes& x) { x.tinfo("t", {33, 2}, 8, 0); }, 1, 128), "Q8_0", "ne[0] = 33",
                 "block size 32");
  EXPECT_REJECTS(with_tensors([](Bytes& x) { x.tinfo("t", {8}, 0, 4); }, 1, 64), "'t' offset 4",
                 "not a multiple of the alignment 32");
  EXPECT_REJECTS(with_tensors([](Bytes& x) { x.tinfo("x", {8}, 0, 1ull << 40); }, 1, 64),
                 "tensor 'x' data out of file bounds");
  EXPECT_REJECTS(with_tensors([](Bytes& x) { x.tinfo("x", {32}, 0, 0); }, 1, 64), "tensor 'x' data out of file bounds");
  EXPECT_REJECTS(with_tensors([](Bytes& x) { x.tinfo("x", {8}, 0, 0xffffffffffffffe0ull); }, 1, 64),
                 "data out of file bounds");
  EXPECT_REJECTS(with_tensors([](Bytes& x) { x.tinfo("a", {16}, 0, 0).tinfo("b", {8}, 0, 32); }, 2, 96),
                 "tensors 'a' and 'b' overlap");
  EXPECT_REJECTS(with_tensors([](Bytes& x) { x.tinfo("a", {8}, 0, 0).tinfo("a", {8}, 0, 32); }, 2, 64),
                 "duplicate tensor name 'a'");
  EXPECT_REJECTS(Bytes().header(2, 0).tinfo("a", {8}, 0, 0).str("b").u32(2).u64(8), "truncated in tensor info 1 ('b')");
  {
    Bytes x;  // tensor infos end exactly at end of file: the data section is missing
    x.header(1, 0).tinfo("a", {8}, 0, 0);
    EXPECT_REJECTS(x, "data");
  }
  // Zero-element tensors, out-of-order offsets and gaps are fine (not ggml's layout, but valid).
  {
    std::string err;
    Bytes x = with_tensors(
        [](Bytes& b) { b.tinfo("z", {0, 4}, 0, 0).tinfo("b", {8}, 0, 64).tinfo("a", {8}, 0, 0); }, 3, 96);
    EXPECT(parse_ok(x.b.data(), x.b.size(), "gaps.gguf", &err), "gaps: %s", err.c_str());
  }
  // Names from the file are quoted with control bytes escaped.
  EXPECT_REJECTS(with_tensors([](Bytes& x) { x.tinfo(std::string("a\n\x01", 3), {8}, 99, 0); }, 1, 64),
                 "'a\\x0a\\x01'");
  // Path-level failures.
  EXPECT_GGUF_ERROR("missing file", NEEDLES("nope.gguf", "cannot open"), [] { GgufFile(tmp_file("nope.gguf")); });
  EXPECT_GGUF_ERROR("directory", NEEDLES("not a regular file"), [] { GgufFile(g_tmp.string()); });
  write_bytes(tmp_file("zero.gguf"), {});
  EXPECT_GGUF_ERROR("empty file", NEEDLES("zero.gguf", "truncated in header"), [] { GgufFile(tmp_file("zero.gguf")); });
  Bytes v = valid_small();
  v.b[0] = 'X';
  write_bytes(tmp_file("magic.gguf"), v.b);
  EXPECT_GGUF_ERROR("bad magic on disk", NEEDLES(tmp_file("magic.gguf") + ": bad magic"),
                    [] { GgufFile(tmp_file("magic.gguf")); });
}

// ---------------------------------------------------------------------------------------------
// Fuzz: truncations and bit flips must parse or throw GgufError, never crash or read out of bounds.
// ---------------------------------------------------------------------------------------------

struct FuzzStats {
  int64_t parsed = 0, rejected = 0;
};

void fuzz_bytes(const std::string& name, const std::vector<uint8_t>& file, int flips, uint64_t seed,
                FuzzStats& st) {
  const size_t n = file.size();
  // Truncations: every size in the first 4 KiB, then ~400 evenly spaced sizes, and the last bytes.
  std::vector<size_t> sizes;
  for (size_t s = 0; s <= std::min<size_t>(n, 4096); ++s) sizes.push_back(s);
  const size_t stride = std::max<size_t>(1, n / 400);
  for (size_t s = 4097; s < n; s += stride) sizes.push_back(s);
  for (size_t k = 1; k <= 64 && k <= n; ++k) sizes.push_back(n - k);
  for (size_t s : sizes) {
    if (parse_ok(file.data(), s, name + " truncated to " + std::to_string(s))) ++st.parsed;
    else ++st.rejected;
  }
  // The whole file must parse.
  std::string err;
  EXPECT(parse_ok(file.data(), n, name, &err), "%s: %s", name.c_str(), err.c_str());
  // Bit flips: 1-4 bits, mostly in the header and tensor infos (where they matter).
  uint64_t meta_end = n;
  try {
    meta_end = std::min<uint64_t>(n, GgufFile::from_memory(file.data(), n, name).data_offset());
  } catch (const GgufError&) {
  }
  std::mt19937_64 rng(seed);
  std::unique_ptr<uint8_t[]> buf(new uint8_t[n]);
  memcpy(buf.get(), file.data(), n);
  for (int it = 0; it < flips; ++it) {
    const int nbits = 1 + (int)(rng() % 4);
    size_t where[4];
    for (int k = 0; k < nbits; ++k) {
      const bool meta = rng() % 10 < 8;
      where[k] = meta ? (size_t)(rng() % std::max<uint64_t>(meta_end, 1)) : (size_t)(rng() % n);
      if (where[k] >= n) where[k] = n - 1;
      buf[where[k]] ^= (uint8_t)(1u << (rng() % 8));
    }
    // An occasional byte set to an extreme value (lengths and counts).
    if (it % 7 == 0) buf[where[0]] = (it % 14 == 0) ? 0xff : 0x00;
    try {
      GgufFile f = GgufFile::from_memory(buf.get(), n, name + " flipped");
      ++st.parsed;
      volatile uint64_t sink = 0;
      for (const GgufTensor& t : f.tensors())
        if (t.byte_size) sink += t.data[0] + t.data[t.byte_size - 1];
      (void)sink;
    } catch (const GgufError&) {
      ++st.rejected;
    } catch (const std::exception& e) {
      fail(__FILE__, __LINE__, name + ": bit flip " + std::to_string(it) + " threw a non-GgufError: " + e.what());
    }
    memcpy(buf.get(), file.data(), n);  // restore (cheap next to a parse for these sizes)
  }
}

TEST_CASE(fuzz) {
  FuzzStats st;
  // Synthetic: every value type, several tensor types, custom alignment.
  GgufWriter w;
  for (const auto& kv : all_values()) w.set(kv.first, kv.second);
  w.set_u32("general.alignment", 64);
  std::vector<uint8_t> d(4096, 0x5a);
  w.add_tensor("a", DType::F32, {8, 4}, d.data());
  w.add_tensor("b", DType::Q8_0, {64, 2}, d.data());
  w.add_tensor_ggml("c", ggml_type::Q5_K, {256}, d.data());
  w.add_tensor("d", DType::F16, {3}, d.data());
  const std::string syn = tmp_file("fuzz_synthetic.gguf");
  w.write(syn);
  fuzz_bytes("synthetic", read_bytes(syn), 6000, 1, st);
  const struct {
    const char* name;
    int flips;
  } files[] = {{"stories260K.gguf", 3000}, {"stories260K-q8_0.gguf", 3000}, {"stories260K-f16.gguf", 2000},
               {"llama2-vocab.gguf", 600}};
  uint64_t seed = 2;
  for (const auto& f : files) fuzz_bytes(f.name, read_bytes(model(f.name)), f.flips, seed++, st);
  // The mmap path on truncated copies of a real file.
  const std::vector<uint8_t> full = read_bytes(model("stories260K-q8_0.gguf"));
  for (size_t k = 0; k < 40; ++k) {
    const size_t s = full.size() * k / 40 + (k * 131) % 97;
    if (s > full.size()) continue;
    const std::string p = tmp_file("trunc.gguf");
    write_bytes(p, std::vector<uint8_t>(full.begin(), full.begin() + (ptrdiff_t)s));
    try {
      GgufFile f(p);
      ++st.parsed;
    } catch (const GgufError& e) {
      ++st.rejected;
      EXPECT(std::string(e.what()).rfind(p + ": ", 0) == 0, "message names the file: %s", e.what());
    }
  }
  printf("    fuzz: %lld parsed, %lld rejected with GgufError\n", (long long)st.parsed, (long long)st.rejected);
  EXPECT(st.rejected > 0 && st.parsed > 0, "both outcomes seen");
}

}  // namespace

int main(int argc, char** argv) {
  const auto t0 = std::chrono::steady_clock::now();
  test_data::init(argc, argv, "gguf");
  std::random_device rd;
  g_tmp = fs::temp_directory_path() / ("tessera_gguf_test_" + std::to_string(rd()) + "_" +
                                       std::to_string(std::chrono::steady_clock::now().time_since_epoch().count()));
  fs::create_directories(g_tmp);

  const Tally tally = run_registered();
  std::error_code ec;
  fs::remove_all(g_tmp, ec);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  printf("gguf: %lld checks in %.1f s\n", (long long)g_checks, secs);
  printf("gguf: %d passed, %d failed\n", tally.passed, tally.failed);
  return tally.failed == 0 ? 0 : 1;
}
