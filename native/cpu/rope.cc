// rope: rotary position embedding in place, llama.cpp "normal" (interleaved pairs) and NeoX
// (split halves) layouts. Angles are computed in double once per token and shared by its heads.
#include <cmath>
#include <vector>

#include "tessera/ops.h"
#include "tessera/threadpool.h"

namespace tessera::cpu {

void rope(ThreadPool& pool, float* x, const int32_t* positions, int64_t tokens, int32_t heads,
          int32_t head_dim, const RopeParams& p) {
  const int32_t half = p.n_rot / 2;
  std::vector<double> inv_freq(half);
  for (int32_t i = 0; i < half; i++)
    inv_freq[i] = (double)p.freq_scale * std::pow((double)p.theta_base, -2.0 * i / p.n_rot);
  const int32_t stride = p.mode == RopeMode::NeoX ? half : 1;  // distance between pair members
  const int32_t step = p.mode == RopeMode::NeoX ? 1 : 2;       // distance between pairs

  // Cost per token (ThreadPool units): a double cos and sin per pair (~30 ns), then every head.
  const Cost token_cost = (Cost)half * 300 + (Cost)heads * head_dim * 2;
  pool.parallel_for(tokens, 4, token_cost, [&](int64_t t0, int64_t t1) {
    thread_local std::vector<float> cs;
    cs.resize(2 * half);
    for (int64_t t = t0; t < t1; t++) {
      for (int32_t i = 0; i < half; i++) {
        const double a = (double)positions[t] * inv_freq[i];
        cs[2 * i] = (float)std::cos(a);
        cs[2 * i + 1] = (float)std::sin(a);
      }
      for (int32_t h = 0; h < heads; h++) {
        float* v = x + (t * heads + h) * (int64_t)head_dim;
        for (int32_t i = 0; i < half; i++) {
          float* a = v + i * step;
          float* b = a + stride;
          const float c = cs[2 * i], s = cs[2 * i + 1];
          const float x0 = *a, x1 = *b;
          *a = x0 * c - x1 * s;
          *b = x0 * s + x1 * c;
        }
      }
    }
  });
}

}  // namespace tessera::cpu
