// The CUDA backend: tessera::cuda implements the op set of tessera/ops.h with CUDA kernels.
// Every pointer argument is a DEVICE pointer, including the ones held by PagedKv, VarlenBatch and
// TreeMask (the structs themselves live on the host and are passed by value to the kernels).
// Each op enqueues its kernels on `stream` and returns without synchronising; a failed launch
// throws std::runtime_error carrying cudaGetErrorString. Arguments are validated beforehand by
// tessera/check.h (on host copies of the index arrays), exactly as for the other backends.
#pragma once

#include <cuda_runtime.h>

#include "tessera/ops.h"

#define TESSERA_CUDA_CTX cudaStream_t stream,

namespace tessera::cuda {
TESSERA_OP_SIGNATURES(TESSERA_CUDA_CTX)
}  // namespace tessera::cuda
