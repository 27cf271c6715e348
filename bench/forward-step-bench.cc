// Decode tokens/s of LlamaModel::forward (the CPU backend, no N-API) on a GGUF: prefill 32 tokens per
// sequence, then N decode steps. Build and run (bench/RESULTS.md, "One forward over a Backend interface"):
//   cmake --build build-native --target tessera_core
//   g++ -O2 -std=c++17 -I native/include bench/forward-step-bench.cc build-native/libtessera_core.a -lpthread -o /tmp/fsb
//   /tmp/fsb /tmp/tessera-bench/models/synthetic-110m-q8_0.gguf <sequences> <steps> <threads>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>
#include "tessera/llama.h"
#include "tessera/kv_cache.h"
#include "tessera/threadpool.h"
using namespace tessera;
int main(int argc, char** argv) {
  const char* path = argv[1];
  int B = atoi(argv[2]), N = atoi(argv[3]), threads = atoi(argv[4]);
  ThreadPool pool(threads);
  LlamaModel m(std::make_unique<GgufFile>(path), &pool);
  const auto& c = m.config();
  KvCache kv(KvCacheConfig{c.n_layer, 1024, 16, c.n_head_kv, c.head_dim, DType::F16});
  std::vector<int32_t> seqs(B);
  for (auto& s : seqs) s = kv.create_sequence();
  auto step = [&](int n) {
    std::vector<int32_t> toks(B * n), cnt(B, n), rows(B);
    for (size_t i = 0; i < toks.size(); i++) toks[i] = (int32_t)(i * 7919 % c.n_vocab);
    for (int b = 0; b < B; b++) rows[b] = b * n + n - 1;
    std::vector<float> logits((size_t)B * c.n_vocab);
    ForwardBatch fb; fb.tokens = toks.data(); fb.n_tokens = B * n; fb.seq_ids = seqs.data(); fb.seq_n_tokens = cnt.data();
    fb.n_seqs = B; fb.logit_rows = rows.data(); fb.n_logit_rows = B;
    m.forward(kv, fb, logits.data(), pool, 4096);
  };
  auto t0 = std::chrono::steady_clock::now();
  step(32);
  auto t1 = std::chrono::steady_clock::now();
  for (int i = 0; i < N; i++) step(1);
  auto t2 = std::chrono::steady_clock::now();
  double pf = std::chrono::duration<double>(t1 - t0).count(), dc = std::chrono::duration<double>(t2 - t1).count();
  printf("B=%d prefill %.1f tok/s decode %.2f tok/s (%.2f ms/step)\n", B, B * 32 / pf, B * N / dc, dc * 1000 / N);
}
