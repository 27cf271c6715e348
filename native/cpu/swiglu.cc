// swiglu: y = silu(gate) * up, the FFN activation of Llama-family models.
#include <algorithm>
#include <cmath>

#include "kernels.h"
#include "tessera/ops.h"
#include "tessera/threadpool.h"

namespace tessera::cpu {

void swiglu(ThreadPool& pool, const float* gate, const float* up, float* y, int64_t n) {
  const Kernels& K = kernels();
  // ~8 cost units per element (an exp and a divide); one chunk of at least 16k elements.
  pool.parallel_for(n, 16384, 8, [&](int64_t i0, int64_t i1) { K.swiglu(gate + i0, up + i0, y + i0, i1 - i0); });
}

}  // namespace tessera::cpu
