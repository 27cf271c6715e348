// What the process can expect from CUDA, for layers built with or without the CUDA backend
// (plain C++: no CUDA header is needed to include this file).
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace tessera {

struct CudaDeviceInfo {
  int index = 0;
  std::string name;
  int cc_major = 0, cc_minor = 0;  // compute capability
  size_t total_mem = 0;            // bytes
};

struct CudaProbe {
  bool usable = false;     // the current device can run the tessera::cuda ops
  std::string reason;      // why not (empty when usable)
  int driver_version = 0;  // cudaDriverGetVersion (0 without a driver)
  int runtime_version = 0; // cudaRuntimeGetVersion
  std::vector<CudaDeviceInfo> devices;
};

// Probes once (device count, compute capability >= 7.5 on the current device, then a tiny kernel
// launch checked end to end) and returns a copy of the cached result afterwards. Never throws for
// a missing driver or device: that is reported through `usable` / `reason`.
// CUDA builds implement it in native/cuda/runtime.cu; CPU-only builds get a stub that reports
// why (native/ops/backends.cc).
CudaProbe cuda_probe();

// Whether this binary has the CUDA backend compiled in (native/ops/backends.cc).
bool cuda_compiled();

}  // namespace tessera
