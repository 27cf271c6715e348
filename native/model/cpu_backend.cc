// CpuBackend: see cpu_backend.h. The index arrays are the plan's own host vectors.
#include "cpu_backend.h"

#include <algorithm>
#include <cstring>

#include "tessera/kv_cache.h"
#include "tessera/llama.h"
#include "tessera/threadpool.h"

namespace tessera {

void CpuBackend::begin_step(const StepPlan& plan, const ForwardBatch& b, float* host_logits, StepArrays& a,
                            StepBuffers& m) {
  a.tokens = b.tokens, a.pos = plan.pos.data(), a.slot = plan.slot.data(), a.bidx = plan.bidx.data();
  a.qo = plan.qo.data(), a.indptr = plan.indptr.data(), a.indices = plan.indices.data(), a.last = plan.last.data();
  a.rows = b.logit_rows, a.ffn_rows = plan.ffn_rows.data();
  a.tree = TreeMask{b.tree_mask, plan.tree_indptr.data()};

  const int64_t T = b.n_tokens, R = b.n_logit_rows, E = cfg_.n_embd, F = cfg_.n_ff;
  const int64_t Q = (int64_t)cfg_.n_head * cfg_.head_dim, KV = (int64_t)cfg_.n_head_kv * cfg_.head_dim;
  act_.reset(new float[(size_t)(T * (4 * E + 2 * Q + 2 * KV + 2 * F) + R * E)]);
  float* p = act_.get();
  auto take = [&](int64_t n) {
    float* r = p;
    p += n;
    return r;
  };
  m.x = take(T * E), m.xn = take(T * E), m.tmp = take(T * E), m.xa = take(T * E);
  m.q = take(T * Q), m.att = take(T * Q), m.k = take(T * KV), m.v = take(T * KV);
  m.g = take(T * F), m.u = take(T * F), m.xs = take(R * E);
  m.logits = host_logits;
}

void CpuBackend::finish(float* host_logits, const float* logits, int64_t n) {
  if (host_logits != logits && n > 0) std::memcpy(host_logits, logits, sizeof(float) * n);
}

void CpuBackend::embed(const WeightRef& t, const int32_t* tokens, int64_t n_tokens, float* out) {
  cpu::embed(pool_, t.data, t.dtype, t.k, tokens, n_tokens, out);
}

void CpuBackend::matmul(const float* x, int64_t m, int64_t k, const MatmulOut* outs, int count) {
  cpu::MatmulJob jobs[8];
  for (int i = 0; i < count; i++) jobs[i] = {outs[i].w->data, outs[i].w->dtype, outs[i].y, outs[i].w->n, outs[i].w->packed};
  cpu::matmul_multi(pool_, x, m, k, jobs, count, /*quantize_x=*/true);
}

void CpuBackend::add_bias(float* y, const float* bias, int64_t rows, int64_t n) { cpu::add_bias(pool_, y, bias, rows, n); }

void CpuBackend::rmsnorm(const float* x, const float* weight, float* y, int64_t rows, int64_t n, float eps) {
  cpu::rmsnorm(pool_, x, weight, y, rows, n, eps);
}

void CpuBackend::add_rmsnorm(float* x, const float* y, const float* weight, float* xn, int64_t rows, int64_t n,
                             float eps) {
  cpu::add_rmsnorm(pool_, x, y, weight, xn, rows, n, eps);
}

void CpuBackend::rope(float* x, const int32_t* positions, int64_t tokens, int32_t heads, int32_t head_dim,
                      const RopeParams& p) {
  cpu::rope(pool_, x, positions, tokens, heads, head_dim, p);
}

void CpuBackend::swiglu(const float* gate, const float* up, float* y, int64_t n) { cpu::swiglu(pool_, gate, up, y, n); }

void CpuBackend::kv_append(const float* k, const float* v, const int32_t* batch_indices, const int32_t* slots,
                           int64_t tokens, const PagedKv& kv) {
  cpu::kv_append(pool_, k, v, batch_indices, slots, tokens, kv);
}

void CpuBackend::attention(const float* q, const float*, const float*, const int32_t* qo, const PagedKv& kv,
                           const TreeMask* tree, float* o, const AttnShape& s, const StepPlan&) {
  cpu::paged_attention(pool_, q, qo, kv, tree, o, s);
}

void CpuBackend::gather_rows(const float* x, const int32_t* rows, int64_t n_rows, int64_t n, float* out) {
  cpu::gather_rows(pool_, x, rows, n_rows, n, out);
}

void CpuBackend::scatter_add_rows(float* x, const float* y, const int32_t* rows, int64_t n_rows, int64_t n) {
  cpu::scatter_add_rows(pool_, x, y, rows, n_rows, n);
}

void CpuBackend::top_k_rows(const float* x, int64_t rows, int64_t n, int k, int32_t* idx, float* val) {
  cpu::top_k_rows(pool_, x, rows, n, k, idx, val);
}

void CpuBackend::argmax_rows(const float* x, int64_t rows, int64_t n, int32_t* idx, float* val) {
  cpu::argmax_rows(pool_, x, rows, n, idx, val);
}

}  // namespace tessera
