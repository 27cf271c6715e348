// GPU benchmark of the CUDA backend: reads a plan (one measurement per line, written by
// bench/gpu/plan.py from bench/gpu/shapes.json; bench/gpu/torch_ref.py times the same plan with
// PyTorch) and prints one "RESULT tessera <kind> key=value ..." line per measurement.
//   copy <bytes>                                   device-to-device copy bandwidth
//   gemm <dtype> <m> <n> <k>                       tessera::cuda::matmul, weights rotated past L2
//   attn <set> <heads> <kv_heads> <head_dim> <L1> <L2> ...    varlen_attention over packed lengths
//   decode <batch> <context> <heads> <kv_heads> <head_dim> <page_size>   paged_attention, 1 query
//   chunk <seqs> <context> <nq> <heads> <kv_heads> <head_dim> <page_size>   nq new queries per sequence
//   model <dtype> <dim> <layers> <heads> <kv_heads> <ff> <prefill_seqs> <prefill_len>
//         <decode_batch> <decode_steps> <vocab_gguf>   end-to-end CudaLlama on a synthetic model
// Timing: CUDA events around each repetition after a warm-up; the median is reported. Inputs are
// random (never zeros), generated on the device.
// Usage: tessera_cuda_bench <plan-file>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "../cuda/common.cuh"
#include "../cuda/cuda_ops.h"
#include "tessera/cuda_llama.h"
#include "tessera/cuda_api.h"
#include "tessera/gguf.h"
#include "tessera/kv_cache.h"
#include "tessera/llama.h"
#include "tessera/synth.h"

using namespace tessera;
using cuda::DeviceBuffer;

namespace {

cudaStream_t g_stream = nullptr;

__device__ __forceinline__ uint32_t hash32(uint64_t i, uint32_t seed) {
  uint64_t x = i * 0x9E3779B97F4A7C15ull + seed;
  x ^= x >> 31;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 29;
  return (uint32_t)(x >> 16);
}

// Uniform in [lo, hi) as f32.
__global__ void fill_f32(float* p, int64_t n, uint32_t seed, float lo, float hi) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    p[i] = lo + (hi - lo) * (hash32(i, seed) * (1.f / 4294967296.f));
}
// Random bytes (for quantised weights: random codes; f16 scales are fixed up by fill_scales).
__global__ void fill_bytes(uint8_t* p, int64_t n, uint32_t seed) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    p[i] = (uint8_t)hash32(i, seed);
}
__global__ void fill_f16(uint16_t* p, int64_t n, uint32_t seed) {
  for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
    p[i] = __half_as_ushort(__float2half(-1.f + 2.f * (hash32(i, seed) * (1.f / 4294967296.f))));
}

void fill_random(void* p, size_t bytes, uint32_t seed) {
  fill_bytes<<<1024, 256, 0, g_stream>>>(static_cast<uint8_t*>(p), (int64_t)bytes, seed);
}

// Weights of `dtype`, made by converting random f32 on the device where the converter can
// (f16, bf16, q8_0, q4_0); k-quant blocks are converted on the host from random floats once per
// size and uploaded.
DeviceBuffer make_weight(DType dt, int64_t n, int64_t k, uint32_t seed) {
  const size_t bytes = (size_t)dtype_bytes(dt, n * k);
  DeviceBuffer w(bytes);
  if (dt == DType::Q4_K || dt == DType::Q6_K) {
    std::vector<float> f((size_t)(256 * 1024));
    uint64_t s = seed * 2654435761u + 1;
    for (float& v : f) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      v = ((s >> 40) * (1.f / 16777216.f)) * 2.f - 1.f;
    }
    std::vector<uint8_t> blocks((size_t)dtype_bytes(dt, (int64_t)f.size()));
    ref::convert(f.data(), DType::F32, blocks.data(), dt, (int64_t)f.size());
    for (size_t at = 0; at < bytes; at += blocks.size())
      TS_CUDA_CHECK(cudaMemcpy(w.as<uint8_t>() + at, blocks.data(), std::min(blocks.size(), bytes - at), cudaMemcpyHostToDevice));
    return w;
  }
  DeviceBuffer f((size_t)(n * k) * sizeof(float));
  fill_f32<<<1024, 256, 0, g_stream>>>(f.as<float>(), n * k, seed, -1.f, 1.f);
  if (dt == DType::F32) return f;
  cuda::convert(g_stream, f.get(), DType::F32, w.get(), dt, n * k);
  TS_CUDA_CHECK(cudaStreamSynchronize(g_stream));
  return w;
}

// Median milliseconds of `fn` over repetitions chosen to take about `budget_ms` in all.
double time_ms(const std::function<void(int)>& fn, double budget_ms = 300) {
  cudaEvent_t a, b;
  TS_CUDA_CHECK(cudaEventCreate(&a));
  TS_CUDA_CHECK(cudaEventCreate(&b));
  fn(0);  // warm-up (module load, first touch)
  TS_CUDA_CHECK(cudaStreamSynchronize(g_stream));
  auto once = [&](int i) {
    TS_CUDA_CHECK(cudaEventRecord(a, g_stream));
    fn(i);
    TS_CUDA_CHECK(cudaEventRecord(b, g_stream));
    TS_CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0;
    TS_CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    return (double)ms;
  };
  const double first = once(1);
  const int reps = (int)std::clamp(budget_ms / std::max(first, 1e-3), 3.0, 200.0);
  std::vector<double> t;
  for (int i = 0; i < reps; i++) t.push_back(once(i + 2));
  std::sort(t.begin(), t.end());
  cudaEventDestroy(a);
  cudaEventDestroy(b);
  return t[t.size() / 2];
}

DType parse_dtype(const std::string& s) {
  for (int c = 0; c < kNumDTypes; c++)
    if (s == dtype_info((DType)c).name) return (DType)c;
  throw std::runtime_error("unknown dtype " + s);
}

void bench_copy(size_t bytes) {
  DeviceBuffer a(bytes), b(bytes);
  fill_random(a.get(), bytes, 1);
  const double ms = time_ms([&](int) {
    TS_CUDA_CHECK(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice, g_stream));
  });
  std::printf("RESULT tessera copy bytes=%zu ms=%.4f gbps=%.1f\n", bytes, ms, 2.0 * bytes / ms / 1e6);
}

void bench_gemm(DType dt, int64_t m, int64_t n, int64_t k) {
  // Enough weight copies to exceed 3x the L2 so every call streams its weights from memory.
  int l2 = 0, dev = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, dev);
  const size_t wbytes = (size_t)dtype_bytes(dt, n * k);
  const int copies = (int)std::clamp<size_t>(3 * (size_t)l2 / wbytes + 1, 1, 16);
  std::vector<DeviceBuffer> ws;
  for (int i = 0; i < copies; i++) ws.push_back(make_weight(dt, n, k, 100 + i));
  DeviceBuffer x((size_t)(m * k) * 4), y((size_t)(m * n) * 4);
  fill_f32<<<1024, 256, 0, g_stream>>>(x.as<float>(), m * k, 7, -1.f, 1.f);
  const double ms = time_ms([&](int i) {
    cuda::matmul(g_stream, x.as<float>(), ws[i % copies].get(), dt, y.as<float>(), m, n, k);
  });
  double core_ms = ms;  // the CUDA-core kernel on the same shape, when the tensor-core one ran
  if (m >= cuda::kTcMinRows) {
    cuda::set_tensor_cores(false);
    core_ms = time_ms([&](int i) {
      cuda::matmul(g_stream, x.as<float>(), ws[i % copies].get(), dt, y.as<float>(), m, n, k);
    }, 150);
    cuda::set_tensor_cores(true);
  }
  const double flops = 2.0 * m * n * k;
  std::printf("RESULT tessera gemm dtype=%s m=%lld n=%lld k=%lld ms=%.4f tflops=%.2f weight_gbps=%.1f cuda_core_ms=%.4f\n",
              dtype_info(dt).name, (long long)m, (long long)n, (long long)k, ms, flops / ms / 1e9, wbytes / ms / 1e6,
              core_ms);
}

void bench_attn(const std::string& set, int Hq, int Hkv, int D, const std::vector<int32_t>& lens) {
  std::vector<int32_t> cu(1, 0);
  double flops = 0;
  for (int32_t L : lens) {
    cu.push_back(cu.back() + L);
    flops += 4.0 * D * Hq * (double)L * (L + 1) / 2;  // QK^T and PV over the causal pairs
  }
  const int64_t T = cu.back();
  DeviceBuffer q((size_t)T * Hq * D * 4), k((size_t)T * Hkv * D * 4), v((size_t)T * Hkv * D * 4),
      o((size_t)T * Hq * D * 4), dcu(cu.size() * 4);
  fill_f32<<<1024, 256, 0, g_stream>>>(q.as<float>(), T * Hq * D, 1, -1.f, 1.f);
  fill_f32<<<1024, 256, 0, g_stream>>>(k.as<float>(), T * Hkv * D, 2, -1.f, 1.f);
  fill_f32<<<1024, 256, 0, g_stream>>>(v.as<float>(), T * Hkv * D, 3, -1.f, 1.f);
  dcu.upload(cu.data(), cu.size() * 4);
  const VarlenBatch vb{dcu.as<int32_t>(), (int32_t)lens.size()};
  const AttnShape s{Hq, Hkv, D, 1.f / std::sqrt((float)D)};
  const cuda::VarlenHints hints{T};
  const double ms = time_ms([&](int) {
    cuda::varlen_attention_hinted(g_stream, q.as<float>(), k.as<float>(), v.as<float>(), o.as<float>(), vb, s, hints);
  });
  // the CUDA-core kernel (no hints), for the record
  const double core_ms = time_ms([&](int) {
    cuda::varlen_attention(g_stream, q.as<float>(), k.as<float>(), v.as<float>(), o.as<float>(), vb, s);
  }, 100);
  std::printf("RESULT tessera attn set=%s heads=%d kv_heads=%d head_dim=%d seqs=%zu tokens=%lld ms=%.4f tflops=%.2f "
              "cuda_core_ms=%.4f\n", set.c_str(), Hq, Hkv, D, lens.size(), (long long)T, ms, flops / ms / 1e9, core_ms);
}

// `seqs` sequences of `ctx` random f16 keys in a page pool, pages shuffled so consecutive pages of
// a sequence are not adjacent in memory; the last `nq` keys of each are its queries (qo_indptr).
struct PagedPool {
  DeviceBuffer kp, vp, indptr, indices, last, qo;
  PagedKv kv;
};

PagedPool make_pool(int seqs, int ctx, int nq, int Hkv, int D, int page_size, uint32_t seed) {
  PagedPool p;
  const int32_t per_seq = (ctx + page_size - 1) / page_size, pages = per_seq * seqs;
  const int64_t elems = (int64_t)pages * page_size * Hkv * D;
  p.kp = DeviceBuffer((size_t)elems * 2), p.vp = DeviceBuffer((size_t)elems * 2);
  fill_f16<<<4096, 256, 0, g_stream>>>(p.kp.as<uint16_t>(), elems, seed);
  fill_f16<<<4096, 256, 0, g_stream>>>(p.vp.as<uint16_t>(), elems, seed + 1);
  std::vector<int32_t> indptr(seqs + 1), indices(pages), last(seqs), qo(seqs + 1);
  for (int32_t i = 0; i < pages; i++) indices[i] = (int32_t)(((int64_t)i * 7919) % pages);
  for (int b = 0; b <= seqs; b++) indptr[b] = b * per_seq, qo[b] = b * nq;
  for (int b = 0; b < seqs; b++) last[b] = ctx - (per_seq - 1) * page_size;
  auto up = [](DeviceBuffer& d, const std::vector<int32_t>& v) {
    d = DeviceBuffer(v.size() * 4);
    d.upload(v.data(), v.size() * 4);
  };
  up(p.indptr, indptr), up(p.indices, indices), up(p.last, last), up(p.qo, qo);
  PagedKv& kv = p.kv;
  kv.k_pages = p.kp.get(), kv.v_pages = p.vp.get(), kv.kv_dtype = DType::F16, kv.num_pages = pages;
  kv.page_size = page_size, kv.n_kv_heads = Hkv, kv.head_dim = D;
  kv.indptr = p.indptr.as<int32_t>(), kv.indices = p.indices.as<int32_t>(), kv.last_page_len = p.last.as<int32_t>();
  kv.batch = seqs;
  return p;
}

void bench_decode(int batch, int ctx, int Hq, int Hkv, int D, int page_size) {
  const PagedPool pool = make_pool(batch, ctx, 1, Hkv, D, page_size, 11);
  const PagedKv& kv = pool.kv;
  const int32_t* dq = pool.qo.as<int32_t>();
  DeviceBuffer q((size_t)batch * Hq * D * 4), o((size_t)batch * Hq * D * 4);
  fill_f32<<<256, 256, 0, g_stream>>>(q.as<float>(), (int64_t)batch * Hq * D, 13, -1.f, 1.f);
  const AttnShape s{Hq, Hkv, D, 1.f / std::sqrt((float)D)};
  cuda::PagedAttnHints hints;
  hints.total_q = batch;
  hints.max_kv_len = ctx;
  const double ms = time_ms([&](int) {
    cuda::paged_attention_hinted(g_stream, q.as<float>(), dq, kv, nullptr, o.as<float>(), s, hints);
  });
  // without hints: no splits (one block per token and KV head)
  const double ms1 = time_ms([&](int) { cuda::paged_attention(g_stream, q.as<float>(), dq, kv, nullptr, o.as<float>(), s); }, 150);
  const double kv_bytes = 2.0 * batch * (double)ctx * Hkv * D * 2;  // K and V, f16, each read once
  std::printf("RESULT tessera decode batch=%d context=%d heads=%d kv_heads=%d head_dim=%d page_size=%d ms=%.4f kv_gbps=%.1f "
              "nosplit_ms=%.4f\n", batch, ctx, Hq, Hkv, D, page_size, ms, kv_bytes / ms / 1e6, ms1);
}

// A prompt chunk continuing a long sequence (chunked prefill / a prompt after a cached prefix):
// `seqs` sequences of `ctx` keys whose last `nq` are the new queries, through paged_attention with
// the tensor-core prefill (hints.max_q_per_seq = nq) and without it (every row in the split-KV
// decode kernel), to place the threshold between the two.
void bench_chunk(int seqs, int ctx, int nq, int Hq, int Hkv, int D, int page_size) {
  const PagedPool pool = make_pool(seqs, ctx, nq, Hkv, D, page_size, 21);
  const PagedKv& kv = pool.kv;
  const int32_t* dq = pool.qo.as<int32_t>();
  const int64_t T = (int64_t)seqs * nq;
  DeviceBuffer q((size_t)T * Hq * D * 4), o((size_t)T * Hq * D * 4);
  fill_f32<<<1024, 256, 0, g_stream>>>(q.as<float>(), T * Hq * D, 23, -1.f, 1.f);
  const AttnShape s{Hq, Hkv, D, 1.f / std::sqrt((float)D)};
  cuda::PagedAttnHints hints;
  hints.total_q = T, hints.max_kv_len = ctx, hints.max_q_per_seq = nq;
  auto go = [&](int) { cuda::paged_attention_hinted(g_stream, q.as<float>(), dq, kv, nullptr, o.as<float>(), s, hints); };
  const double tc_ms = time_ms(go, 200);
  hints.max_q_per_seq = 0;  // unknown: the decode kernel takes every row
  const double dec_ms = time_ms(go, 200);
  double flops = 0;
  for (int i = 0; i < nq; i++) flops += 4.0 * D * Hq * (ctx - nq + i + 1);
  flops *= seqs;
  std::printf("RESULT tessera chunk seqs=%d context=%d nq=%d heads=%d kv_heads=%d head_dim=%d tc_ms=%.4f decode_kernel_ms=%.4f "
              "tc_tflops=%.2f\n", seqs, ctx, nq, Hq, Hkv, D, tc_ms, dec_ms, flops / tc_ms / 1e9);
}

void bench_model(DType dt, const SynthSpec& base, int prefill_seqs, int prefill_len, int decode_batch, int steps) {
  SynthSpec spec = base;
  spec.dtype = dt;
  const std::string path = std::string("/tmp/tessera-bench-") + dtype_info(dt).name + "-" + std::to_string(spec.dim) + ".gguf";
  if (!std::ifstream(path).good()) {
    const auto t0 = std::chrono::steady_clock::now();
    write_synthetic_llama(path, spec);
    std::printf("# wrote %s in %.1f s\n", path.c_str(),
                std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  LlamaModel cpu(std::make_unique<GgufFile>(path), nullptr, /*repack_now=*/false);
  cuda::CudaLlama gpu(cpu);
  const int32_t V = cpu.config().n_vocab;
  const int32_t ctx = prefill_len + steps + 8;
  const int32_t seqs_max = std::max(prefill_seqs, decode_batch);
  auto kv = gpu.make_cache(seqs_max * ((ctx + 15) / 16) + 8, 16, DType::F16);
  using clk = std::chrono::steady_clock;

  // prefill: prefill_seqs prompts of prefill_len tokens in one packed step, last-row logits
  std::vector<int32_t> seqs, counts(prefill_seqs, prefill_len), tokens, rows;
  for (int i = 0; i < prefill_seqs; i++) seqs.push_back(kv->create_sequence());
  for (int i = 0; i < prefill_seqs * prefill_len; i++) tokens.push_back(1 + (i * 7919) % (V - 1));
  for (int i = 0; i < prefill_seqs; i++) rows.push_back((i + 1) * prefill_len - 1);
  std::vector<float> logits((size_t)seqs_max * V);
  ForwardBatch b;
  auto set = [&](const std::vector<int32_t>& s, const std::vector<int32_t>& c, const std::vector<int32_t>& t,
                 const std::vector<int32_t>& r) {
    b.tokens = t.data(), b.n_tokens = (int32_t)t.size(), b.seq_ids = s.data(), b.seq_n_tokens = c.data();
    b.n_seqs = (int32_t)s.size(), b.logit_rows = r.data(), b.n_logit_rows = (int32_t)r.size();
  };
  set(seqs, counts, tokens, rows);
  gpu.forward(*kv, b, logits.data(), ctx);  // warm-up
  for (int32_t s : seqs) kv->truncate(s, 0);
  const int reps = 3;
  double best = 1e30;
  for (int r = 0; r < reps; r++) {
    const auto t0 = clk::now();
    gpu.forward(*kv, b, logits.data(), ctx);
    best = std::min(best, std::chrono::duration<double>(clk::now() - t0).count());
    for (int32_t s : seqs) kv->truncate(s, 0);
  }
  std::printf("RESULT tessera model_prefill dtype=%s seqs=%d len=%d s=%.4f tok_per_s=%.0f weights_mib=%lld\n",
              dtype_info(dt).name, prefill_seqs, prefill_len, best, prefill_seqs * prefill_len / best,
              (long long)(gpu.weight_bytes() >> 20));

  // decode: decode_batch sequences after a prompt of prefill_len, `steps` steps of one token each
  for (int32_t s : seqs) kv->release_sequence(s);
  seqs.clear();
  for (int i = 0; i < decode_batch; i++) seqs.push_back(kv->create_sequence());
  std::vector<int32_t> pc(decode_batch, prefill_len), pt, pr;
  for (int i = 0; i < decode_batch * prefill_len; i++) pt.push_back(1 + (i * 31) % (V - 1));
  for (int i = 0; i < decode_batch; i++) pr.push_back((i + 1) * prefill_len - 1);
  set(seqs, pc, pt, pr);
  gpu.forward(*kv, b, logits.data(), ctx);
  std::vector<int32_t> ones(decode_batch, 1), next(decode_batch, 5), dr;
  for (int i = 0; i < decode_batch; i++) dr.push_back(i);
  set(seqs, ones, next, dr);
  // decode `steps` steps, with CUDA graphs (default) and without; the sequences go back to the
  // prompt in between
  double sec_graphs = 0, sec_plain = 0;
  for (int pass = 0; pass < 2; pass++) {
    gpu.set_graphs(pass == 0);
    const auto t0 = clk::now();
    for (int st = 0; st < steps; st++) {
      gpu.forward(*kv, b, logits.data(), ctx);
      for (int i = 0; i < decode_batch; i++)
        next[i] = (int32_t)(std::max_element(&logits[(size_t)i * V], &logits[(size_t)(i + 1) * V]) - &logits[(size_t)i * V]);
    }
    (pass == 0 ? sec_graphs : sec_plain) = std::chrono::duration<double>(clk::now() - t0).count();
    for (int32_t s : seqs) kv->truncate(s, prefill_len);
  }
  gpu.set_graphs(true);
  const double sec = sec_graphs;
  std::printf("RESULT tessera model_decode dtype=%s batch=%d steps=%d s=%.4f tok_per_s=%.1f ms_per_step=%.3f weights_gbps=%.1f "
              "no_graphs_ms_per_step=%.3f\n",
              dtype_info(dt).name, decode_batch, steps, sec, decode_batch * steps / sec, 1e3 * sec / steps,
              gpu.weight_bytes() * (double)steps / sec / 1e9, 1e3 * sec_plain / steps);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: tessera_cuda_bench <plan-file>\n");
    return 2;
  }
  const CudaProbe probe = cuda_probe();
  if (!probe.usable) {
    std::printf("cuda bench: skipped (%s)\n", probe.reason.c_str());
    return 0;
  }
  TS_CUDA_CHECK(cudaStreamCreate(&g_stream));
  std::ifstream plan(argv[1]);
  if (!plan) {
    std::fprintf(stderr, "cannot read plan %s\n", argv[1]);
    return 2;
  }
  int failed = 0;
  std::string line;
  while (std::getline(plan, line)) {
    std::istringstream in(line);
    std::string kind;
    if (!(in >> kind) || kind[0] == '#') continue;
    try {
      if (kind == "copy") {
        size_t bytes;
        in >> bytes;
        bench_copy(bytes);
      } else if (kind == "gemm") {
        std::string dt;
        int64_t m, n, k;
        in >> dt >> m >> n >> k;
        bench_gemm(parse_dtype(dt), m, n, k);
      } else if (kind == "attn") {
        std::string set;
        int hq, hkv, d;
        in >> set >> hq >> hkv >> d;
        std::vector<int32_t> lens;
        for (int32_t L; in >> L;) lens.push_back(L);
        bench_attn(set, hq, hkv, d, lens);
      } else if (kind == "decode") {
        int batch, ctx, hq, hkv, d, ps;
        in >> batch >> ctx >> hq >> hkv >> d >> ps;
        bench_decode(batch, ctx, hq, hkv, d, ps);
      } else if (kind == "chunk") {
        int seqs, ctx, nq, hq, hkv, d, ps;
        in >> seqs >> ctx >> nq >> hq >> hkv >> d >> ps;
        bench_chunk(seqs, ctx, nq, hq, hkv, d, ps);
      } else if (kind == "model") {
        std::string dt, vocab;
        SynthSpec s;
        int pseqs, plen, dbatch, steps;
        in >> dt >> s.dim >> s.layers >> s.heads >> s.kv_heads >> s.ff >> pseqs >> plen >> dbatch >> steps >> vocab;
        s.vocab_path = vocab;
        s.context = 4096;
        bench_model(parse_dtype(dt), s, pseqs, plen, dbatch, steps);
      } else {
        throw std::runtime_error("unknown plan line");
      }
    } catch (const std::exception& e) {
      failed++;
      std::printf("ERROR %s: %s\n", line.substr(0, 80).c_str(), e.what());
      cudaGetLastError();
      cudaStreamSynchronize(g_stream);
    }
    std::fflush(stdout);
  }
  cudaStreamDestroy(g_stream);
  return failed == 0 ? 0 : 1;
}
