// What the running CPU can do, and which kernel set the CPU backend uses on it.
#pragma once

#include <string>

namespace tessera {

enum class CpuIsa { Scalar = 0, Avx2 = 1, Avx512 = 2, Neon = 3 };

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512vnni = false;
  bool neon = false;
};

const CpuFeatures& cpu_features();
const char* isa_name(CpuIsa isa);
bool isa_supported(CpuIsa isa);
// The best supported kernel set, unless TESSERA_CPU_ISA=scalar|avx2|avx512|neon asks for
// another (an unsupported request falls back to the best supported one).
CpuIsa best_isa();
// Switches the kernel set used by tessera::cpu (tests use this to run every path).
// Returns false (and changes nothing) when the CPU does not support `isa`.
bool set_active_isa(CpuIsa isa);
CpuIsa active_isa();
std::string cpu_feature_string();

}  // namespace tessera
