// The Llama / Qwen2 forward pass, written once over the Backend interface (backend.h), and the
// step's bookkeeping (StepPlan): validation, positions, KV slots, tree offsets, FFN rows, page tables.
#include <algorithm>
#include <climits>
#include <cmath>
#include <string>

#include "backend.h"
#include "tessera/check.h"
#include "tessera/kv_cache.h"
#include "tessera/llama.h"

namespace tessera {

StepPlan::StepPlan(KvCache& kv, const ForwardBatch& b, const LlamaConfig& cfg, int32_t max_seq_len) {
  const int64_t T = b.n_tokens, V = cfg.n_vocab, L = cfg.n_layer;
  if (b.n_seqs < 0 || T < 0) throw_range("forward: negative batch size");
  int64_t total = 0, tree_len = 0;
  for (int32_t s = 0; s < b.n_seqs; s++) {
    if (b.seq_n_tokens[s] < 1)
      throw_range("forward: seqTokens[" + std::to_string(s) + "] = " + std::to_string(b.seq_n_tokens[s]) +
                  ": every sequence in a step needs at least one token");
    if (!kv.has_sequence(b.seq_ids[s])) throw_range("forward: unknown sequence id " + std::to_string(b.seq_ids[s]));
    const int64_t end = (int64_t)kv.length(b.seq_ids[s]) + b.seq_n_tokens[s];
    if (end > max_seq_len)
      throw_range("forward: sequence " + std::to_string(b.seq_ids[s]) + " would reach " + std::to_string(end) +
                  " tokens, more than the context size (" + std::to_string(max_seq_len) + ")");
    total += b.seq_n_tokens[s];
    tree_len += (int64_t)b.seq_n_tokens[s] * b.seq_n_tokens[s];
  }
  if (total != T) throw_range("forward: the sequences' token counts add up to " + std::to_string(total) + ", not " + std::to_string(T));
  for (int64_t t = 0; t < T; t++)
    if (b.tokens[t] < 0 || b.tokens[t] >= V)
      throw_range("forward: token id " + std::to_string(b.tokens[t]) + " at position " + std::to_string(t) +
                  " is outside the vocabulary [0, " + std::to_string(V) + ")");
  for (int32_t r = 0; r < b.n_logit_rows; r++)
    if (b.logit_rows[r] < 0 || b.logit_rows[r] >= T)
      throw_range("forward: logitRows[" + std::to_string(r) + "] = " + std::to_string(b.logit_rows[r]) + " is out of range [0, " +
                  std::to_string(T) + ")");

  pos.resize(T), slot.resize(T), bidx.resize(T), qo.assign(b.n_seqs + 1, 0), old_len.resize(b.n_seqs);
  for (int32_t s = 0, t = 0; s < b.n_seqs; s++) {
    old_len[s] = kv.length(b.seq_ids[s]);
    all_fresh = all_fresh && old_len[s] == 0;
    max_kv_len = std::max(max_kv_len, old_len[s] + b.seq_n_tokens[s]);
    max_q_per_seq = std::max(max_q_per_seq, b.seq_n_tokens[s]);
    for (int32_t i = 0; i < b.seq_n_tokens[s]; i++, t++) {
      slot[t] = old_len[s] + i;
      pos[t] = b.positions != nullptr ? b.positions[t] : slot[t];
      if (pos[t] < 0 || pos[t] > slot[t])
        throw_range("forward: positions[" + std::to_string(t) + "] = " + std::to_string(pos[t]) +
                    " is outside [0, " + std::to_string(slot[t]) + "] (token " + std::to_string(i) + " of sequence " +
                    std::to_string(b.seq_ids[s]) + ", which holds " + std::to_string(old_len[s]) + " tokens)");
      bidx[t] = s;
    }
    qo[s + 1] = qo[s] + b.seq_n_tokens[s];
  }

  if (b.tree_mask != nullptr) {
    if (tree_len > INT32_MAX)  // TreeMask offsets are int32
      throw_range("forward: treeMask would hold " + std::to_string(tree_len) + " bytes (the sum of seqTokens[i]²), more than 2^31 - 1");
    if (b.tree_mask_len != tree_len)
      throw_range("forward: treeMask has " + std::to_string(b.tree_mask_len) + " entries, expected " +
                  std::to_string(tree_len) + " (the sum of seqTokens[i]²)");
    has_tree = true;
    tree_indptr.assign(b.n_seqs + 1, 0);
    for (int32_t s = 0; s < b.n_seqs; s++) {
      const int64_t nq = b.seq_n_tokens[s];
      const uint8_t* m = b.tree_mask + tree_indptr[s];
      for (int64_t a = 0; a < nq; a++)
        for (int64_t c = 0; c < nq; c++) {
          const bool want_set = a == c;
          if ((c > a && m[a * nq + c] != 0) || (want_set && m[a * nq + c] == 0))
            throw_range("forward: treeMask of sequence " + std::to_string(b.seq_ids[s]) + ": token " +
                        std::to_string(a) + (c > a ? " sees the later token " + std::to_string(c)
                                                   : " does not see itself") +
                        " (a token sees itself and only earlier tokens)");
        }
      tree_indptr[s + 1] = tree_indptr[s] + (int32_t)(nq * nq);
    }
  }
  if (b.skip_mask != nullptr) {
    if (b.skip_mask_len != L * T)
      throw_range("forward: skipMask has " + std::to_string(b.skip_mask_len) + " entries, expected " +
                  std::to_string(L * T) + " (layers x tokens = " + std::to_string(L) + " x " + std::to_string(T) + ")");
    bool any = false;
    for (int64_t i = 0; i < L * T && !any; i++) any = b.skip_mask[i] != 0;
    if (any) {
      ffn_rows.assign(L * T, 0);
      ffn_count.assign(L, 0);
      for (int64_t l = 0; l < L; l++)
        for (int64_t t = 0; t < T; t++)
          if (b.skip_mask[l * T + t] == 0) ffn_rows[l * T + ffn_count[l]++] = (int32_t)t;
    }
  }

  kv.grow(b.seq_ids, b.seq_n_tokens, b.n_seqs);  // all or nothing
  try {
    kv.page_tables(b.seq_ids, b.n_seqs, indptr, indices, last);
  } catch (...) {
    rollback(kv, b);
    throw;
  }
}

void StepPlan::rollback(KvCache& kv, const ForwardBatch& b) const {
  for (int32_t s = 0; s < b.n_seqs; s++) kv.truncate(b.seq_ids[s], old_len[s]);
}

void forward_step(Backend& be, const LlamaConfig& cfg, const ModelWeights& w, KvCache& kv, const ForwardBatch& b,
                  float* logits, int32_t max_seq_len) {
  const StepPlan plan(kv, b, cfg, max_seq_len);
  const int64_t T = b.n_tokens, E = cfg.n_embd, D = cfg.head_dim, Hq = cfg.n_head, Hkv = cfg.n_head_kv;
  const int64_t F = cfg.n_ff, V = cfg.n_vocab, R = b.n_logit_rows;
  const float eps = cfg.rms_eps;
  if (T == 0) return;
  try {
    StepArrays a;
    StepBuffers m;
    be.begin_step(plan, b, logits, a, m);
    const AttnShape shape{(int32_t)Hq, (int32_t)Hkv, (int32_t)D, 1.0f / std::sqrt((float)D)};
    auto layer_kv = [&](size_t l) {
      PagedKv pk = kv.layer((int32_t)l, plan.indptr, plan.indices, plan.last);  // host tables ...
      pk.indptr = a.indptr, pk.indices = a.indices, pk.last_page_len = a.last;  // ... in the backend's memory
      return pk;
    };
    const size_t n_layer = w.layers.size();
    be.run(plan, layer_kv(0), [&] {
      // x (T, E) is the residual stream; xn holds the norm the next block reads.
      be.embed(w.tok_embd, a.tokens, T, m.x);
      be.rmsnorm(m.x, w.layers[0].attn_norm, m.xn, T, E, eps);
      for (size_t l = 0; l < n_layer; l++) {
        const LayerWeights& L = w.layers[l];
        // attention block
        const MatmulOut qkv[3] = {{&L.wq, m.q}, {&L.wk, m.k}, {&L.wv, m.v}};
        be.matmul(m.xn, T, E, qkv, 3);
        if (cfg.qkv_bias) {
          be.add_bias(m.q, L.bq, T, Hq * D);
          be.add_bias(m.k, L.bk, T, Hkv * D);
          be.add_bias(m.v, L.bv, T, Hkv * D);
        }
        be.rope(m.q, a.pos, T, (int32_t)Hq, (int32_t)D, cfg.rope);
        be.rope(m.k, a.pos, T, (int32_t)Hkv, (int32_t)D, cfg.rope);
        const PagedKv pk = layer_kv(l);
        be.kv_append(m.k, m.v, a.bidx, a.slot, T, pk);
        be.attention(m.q, m.k, m.v, a.qo, pk, plan.has_tree ? &a.tree : nullptr, m.att, shape, plan);
        const MatmulOut wo = {&L.wo, m.tmp};
        be.matmul(m.att, T, Hq * D, &wo, 1);
        be.add_rmsnorm(m.x, m.tmp, L.ffn_norm, m.xn, T, E, eps);
        // feed-forward block, on every row or on the rows the skip mask leaves
        auto ffn = [&](const float* in, int64_t rows, float* out) {
          const MatmulOut gate_up[2] = {{&L.w_gate, m.g}, {&L.w_up, m.u}};
          be.matmul(in, rows, E, gate_up, 2);
          be.swiglu(m.g, m.u, m.g, rows * F);
          const MatmulOut down = {&L.w_down, out};
          be.matmul(m.g, rows, F, &down, 1);
        };
        const float* next_norm = l + 1 < n_layer ? w.layers[l + 1].attn_norm : w.output_norm;
        const int64_t n_ffn = plan.ffn_count.empty() ? T : plan.ffn_count[l];
        if (n_ffn == T) {
          ffn(m.xn, T, m.tmp);
          be.add_rmsnorm(m.x, m.tmp, next_norm, m.xn, T, E, eps);
        } else {
          const int32_t* rows = a.ffn_rows + l * T;
          if (n_ffn > 0) {
            be.gather_rows(m.xn, rows, n_ffn, E, m.xa);
            ffn(m.xa, n_ffn, m.tmp);
            be.scatter_add_rows(m.x, m.tmp, rows, n_ffn, E);
          }
          be.rmsnorm(m.x, next_norm, m.xn, T, E, eps);
        }
      }
      // logits of the wanted rows only (xn holds the output-normed rows now)
      if (R > 0) {
        be.gather_rows(m.xn, a.rows, R, E, m.xs);
        const MatmulOut out = {&w.output, m.logits};
        be.matmul(m.xs, R, E, &out, 1);
      }
    });
    be.finish(logits, m.logits, R * V);
  } catch (...) {
    be.abort();
    plan.rollback(kv, b);
    throw;
  }
}

}  // namespace tessera
