// Where the native test binaries find their data (provenance and licences: test/data/README.md):
// the stories260K GGUFs and the Llama 2 vocabulary under test/data/models, the llama2.c and
// llama.cpp reference outputs under test/data/golden, and the demo's embedded
// models/stories260K-q8_0.gguf (one copy, which the tests use too). Paths are under the source tree
// the binary was built from (TESSERA_SOURCE_DIR, set by CMakeLists.txt), or under the repository
// named by the binary's first argument (a binary run on another machine, e.g. bench/gpu/check.sh).
// A missing file throws std::runtime_error naming it, so its test case fails: never a skip.
#pragma once

#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>

#ifndef TESSERA_SOURCE_DIR
#define TESSERA_SOURCE_DIR "."  // built outside CMake: run from the repository root
#endif

namespace test_data {

inline std::string g_root = TESSERA_SOURCE_DIR;

// The repository from argv[1] when given, else the compiled-in source tree; says which.
inline void init(int argc, char** argv, const char* who) {
  if (argc > 1 && argv[1][0] != '\0') g_root = argv[1];
  std::printf("%s: test data from %s\n", who, g_root.c_str());
}

// <root>/<rel>, which must be a file.
inline std::string file(const std::string& rel) {
  const std::string p = g_root + "/" + rel;
  std::error_code ec;
  if (!std::filesystem::is_regular_file(p, ec)) {
    throw std::runtime_error("test data file not found: " + p + " (see test/data/README.md)");
  }
  return p;
}

// A model: test/data/models/<name>, or models/<name> for the embedded demo model.
inline std::string model(const std::string& name) {
  return file((name == "stories260K-q8_0.gguf" ? "models/" : "test/data/models/") + name);
}

// A reference output under test/data/golden.
inline std::string golden(const std::string& name) { return file("test/data/golden/" + name); }

}  // namespace test_data
