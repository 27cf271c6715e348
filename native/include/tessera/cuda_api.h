// The CUDA runtime seen from plain C++ (no CUDA headers), so the N-API layer can report on it
// in every build: cuda_probe() is real in CUDA builds and a stub in CPU-only builds.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace tessera {

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  int cc_major = 0, cc_minor = 0;
  size_t total_mem = 0;
};

struct CudaProbe {
  bool usable = false;
  std::string reason;  // why not usable (empty when usable)
  int driver_version = 0;
  int runtime_version = 0;
  std::vector<CudaDeviceInfo> devices;
};

// Probes once (device count, compute capability >= 7.5, a tiny kernel launch) and caches it.
CudaProbe cuda_probe();
// Whether this binary has the CUDA backend compiled in.
bool cuda_compiled();

}  // namespace tessera
