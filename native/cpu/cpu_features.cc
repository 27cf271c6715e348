// Run-time CPU feature detection and the choice of kernel set (one binary for every CPU).
#include "tessera/cpu_features.h"

#include <atomic>
#include <cstdlib>
#include <cstring>

#include "kernels.h"

namespace tessera {

const CpuFeatures& cpu_features() {
  static const CpuFeatures f = [] {
    CpuFeatures c;
#if (defined(__x86_64__) || defined(__i386__)) && (defined(__GNUC__) || defined(__clang__))
    __builtin_cpu_init();
    c.avx2 = __builtin_cpu_supports("avx2");
    c.fma = __builtin_cpu_supports("fma");
    c.avx512f = __builtin_cpu_supports("avx512f");
    c.avx512bw = __builtin_cpu_supports("avx512bw");
    c.avx512vl = __builtin_cpu_supports("avx512vl");
    c.avx512vnni = __builtin_cpu_supports("avx512vnni");
    // F16C has no __builtin_cpu_supports name on every compiler: CPUID.1:ECX bit 29.
    unsigned eax, ebx, ecx, edx;
    __asm__ volatile("cpuid" : "=a"(eax), "=b"(ebx), "=c"(ecx), "=d"(edx) : "a"(1), "c"(0));
    c.f16c = (ecx >> 29) & 1;
#endif
#if defined(__aarch64__)
    c.neon = true;
#endif
    return c;
  }();
  return f;
}

const char* isa_name(CpuIsa isa) {
  switch (isa) {
    case CpuIsa::Scalar: return "scalar";
    case CpuIsa::Avx2: return "avx2";
    case CpuIsa::Avx512: return "avx512";
    case CpuIsa::Neon: return "neon";
  }
  return "unknown";
}

bool isa_supported(CpuIsa isa) {
  const CpuFeatures& f = cpu_features();
  switch (isa) {
    case CpuIsa::Scalar: return true;
#if defined(__x86_64__) || defined(_M_X64)
    case CpuIsa::Avx2: return f.avx2 && f.fma && f.f16c;
    case CpuIsa::Avx512: return f.avx512f && f.avx512bw && f.avx512vl && f.fma && f.f16c;
#endif
#if defined(__aarch64__)
    case CpuIsa::Neon: return f.neon;
#endif
    default: return false;
  }
}

CpuIsa best_isa() {
  static const CpuIsa best = [] {
    const CpuIsa order[] = {CpuIsa::Avx512, CpuIsa::Avx2, CpuIsa::Neon, CpuIsa::Scalar};
    if (const char* want = std::getenv("TESSERA_CPU_ISA")) {
      for (CpuIsa isa : order)
        if (std::strcmp(want, isa_name(isa)) == 0 && isa_supported(isa)) return isa;
    }
    for (CpuIsa isa : order)
      if (isa_supported(isa)) return isa;
    return CpuIsa::Scalar;
  }();
  return best;
}

namespace {
std::atomic<int> g_active{-1};
}

CpuIsa active_isa() {
  int v = g_active.load(std::memory_order_relaxed);
  if (v < 0) {
    v = (int)best_isa();
    g_active.store(v, std::memory_order_relaxed);
  }
  return (CpuIsa)v;
}

bool set_active_isa(CpuIsa isa) {
  if (!isa_supported(isa)) return false;
  g_active.store((int)isa, std::memory_order_relaxed);
  return true;
}

std::string cpu_feature_string() {
  const CpuFeatures& f = cpu_features();
  std::string s;
  auto add = [&](bool on, const char* name) {
    if (!on) return;
    if (!s.empty()) s += ' ';
    s += name;
  };
  add(f.avx2, "avx2");
  add(f.fma, "fma");
  add(f.f16c, "f16c");
  add(f.avx512f, "avx512f");
  add(f.avx512bw, "avx512bw");
  add(f.avx512vl, "avx512vl");
  add(f.avx512vnni, "avx512vnni");
  add(f.neon, "neon");
  return s;
}

namespace cpu {

const Kernels& kernels_for(CpuIsa isa) {
  switch (isa) {
#if defined(__x86_64__) || defined(_M_X64)
    case CpuIsa::Avx2: return kAvx2Kernels;
    case CpuIsa::Avx512: return kAvx512Kernels;
#endif
#if defined(__aarch64__)
    case CpuIsa::Neon: return kNeonKernels;
#endif
    default: return kScalarKernels;
  }
}

const Kernels& kernels() { return kernels_for(active_isa()); }

}  // namespace cpu
}  // namespace tessera
