// What this binary was built with: the CUDA probe of a CPU-only build (the CUDA build defines
// TESSERA_WITH_CUDA and links native/cuda/runtime.cu, which probes for real).
#include "tessera/cuda_api.h"

namespace tessera {

bool cuda_compiled() {
#if defined(TESSERA_WITH_CUDA)
  return true;
#else
  return false;
#endif
}

#if !defined(TESSERA_WITH_CUDA)
CudaProbe cuda_probe() {
  CudaProbe p;
  p.usable = false;
  p.reason = "this binary was built without CUDA (CPU-only build)";
  return p;
}
#endif

}  // namespace tessera
