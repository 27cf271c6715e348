// swiglu: y = silu(gate) * up, the FFN activation of Llama-family models.
#include <algorithm>
#include <cmath>

#include "tessera/ops.h"
#include "tessera/threadpool.h"

namespace tessera::cpu {

void swiglu(ThreadPool& pool, const float* gate, const float* up, float* y, int64_t n) {
  pool.parallel_for(n, 16384, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; i++) {
      const float g = gate[i];
      y[i] = g / (1.0f + std::exp(-g)) * up[i];
    }
  });
}

}  // namespace tessera::cpu
