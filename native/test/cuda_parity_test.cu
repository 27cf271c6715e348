// CUDA parity test: runs every op on tessera::cpu (the reference for CUDA) and on tessera::cuda
// with the same seeded random inputs and compares the results. Standalone (no Node); meant for
// a GPU machine. Without a usable GPU it prints "cuda: skipped (<reason>)" and exits 0.
//
// Error metric: max |cuda - cpu| / max |cpu| over a whole output, per case. Output buffers on the
// device are filled with a NaN pattern (all bits set) before every run, so an element the kernel
// forgets to write shows up as NaN and fails the case. The last line is
// "cuda: <passed> passed, <failed> failed"; the exit status is non-zero when anything failed.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "../cuda/common.cuh"
#include "../cuda/cuda_ops.h"
#include "../model/sampler.h"
#include "tessera/check.h"
#include "tessera/cuda_api.h"
#include "tessera/dtype.h"
#include "tessera/layouts.h"
#include "tessera/ops.h"
#include "tessera/threadpool.h"

namespace {

using tessera::DType;
using tessera::cuda::DeviceBuffer;

// ---- bookkeeping ---------------------------------------------------------------------------------

int g_passed = 0, g_failed = 0;
bool g_verbose = false;

struct OpStats {
  int passed = 0, failed = 0;
  double worst = 0.0;
};
std::map<std::string, OpStats> g_ops;

void record(const std::string& op, const std::string& name, bool ok, double err,
            const std::string& detail = "") {
  OpStats& s = g_ops[op];
  if (ok) {
    ++g_passed;
    ++s.passed;
  } else {
    ++g_failed;
    ++s.failed;
  }
  if (std::isfinite(err)) s.worst = std::max(s.worst, err);
  if (!ok || g_verbose) {
    std::printf("%s %s %s: err %.3g%s%s\n", ok ? "ok  " : "FAIL", op.c_str(), name.c_str(), err,
                detail.empty() ? "" : " ", detail.c_str());
    std::fflush(stdout);
  }
}

// Runs one case; an exception (CUDA error, bad argument) is a failure of that case.
void run_case(const std::string& op, const std::string& name, const std::function<void()>& body) {
  try {
    body();
  } catch (const std::exception& e) {
    record(op, name, false, INFINITY, std::string("exception: ") + e.what());
    cudaGetLastError();  // clear a non-sticky error so the next case starts clean
  }
}

// max |got - ref| / max |ref|; any non-finite value in `got` where `ref` is finite counts as
// an infinite error (poisoned elements the kernel did not write are NaN).
double rel_err(const float* ref, const float* got, size_t n, size_t* bad_index = nullptr) {
  double max_ref = 0.0, max_err = 0.0;
  for (size_t i = 0; i < n; ++i) {
    if (std::isfinite(ref[i])) max_ref = std::max(max_ref, (double)std::fabs(ref[i]));
  }
  for (size_t i = 0; i < n; ++i) {
    const bool rf = std::isfinite(ref[i]), gf = std::isfinite(got[i]);
    double e;
    if (rf && gf) e = std::fabs((double)got[i] - (double)ref[i]);
    else if (!rf && !gf && (std::isnan(ref[i]) == std::isnan(got[i])) &&
             (std::isnan(ref[i]) || ref[i] == got[i])) e = 0.0;
    else e = INFINITY;
    if (e > max_err || std::isnan(e)) {
      max_err = e;
      if (bad_index) *bad_index = i;
    }
  }
  if (max_err == 0.0) return 0.0;
  return max_err / std::max(max_ref, 1e-30);
}

std::string fmt_err_at(const float* ref, const float* got, size_t i) {
  char buf[128];
  std::snprintf(buf, sizeof(buf), "(at %zu: cpu %.9g, cuda %.9g)", i, ref[i], got[i]);
  return buf;
}

void compare(const std::string& op, const std::string& name, const std::vector<float>& ref,
             const std::vector<float>& got, double tol) {
  size_t at = 0;
  const double e = rel_err(ref.data(), got.data(), ref.size(), &at);
  record(op, name, e <= tol, e, e <= tol ? "" : fmt_err_at(ref.data(), got.data(), at));
}

// ---- random data ---------------------------------------------------------------------------------

std::mt19937_64 g_rng(0x7e55e7a);

float uni(float lo, float hi) { return std::uniform_real_distribution<float>(lo, hi)(g_rng); }
int randint(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(g_rng); }  // inclusive

std::vector<float> randv(size_t n, float lo = -1.f, float hi = 1.f) {
  std::vector<float> v(n);
  for (float& x : v) x = uni(lo, hi);
  return v;
}

// Values spread over many magnitudes (exercise f16/bf16 rounding, subnormals, overflow).
std::vector<float> rand_wide(size_t n) {
  std::vector<float> v(n);
  for (float& x : v) x = uni(-1.f, 1.f) * std::pow(10.f, uni(-9.f, 5.5f));
  return v;
}

// ---- device helpers ------------------------------------------------------------------------------

template <class T>
DeviceBuffer to_dev(const std::vector<T>& v) {
  DeviceBuffer b(std::max<size_t>(v.size() * sizeof(T), 1));
  b.upload(v.data(), v.size() * sizeof(T));
  return b;
}

template <class T>
std::vector<T> from_dev(const DeviceBuffer& b, size_t n) {
  std::vector<T> v(n);
  b.download(v.data(), n * sizeof(T));
  return v;
}

// Output buffer filled with 0xFF bytes: NaN as f32 and as f16.
DeviceBuffer poisoned(size_t bytes) {
  DeviceBuffer b(std::max<size_t>(bytes, 1));
  b.fill(0xFF);
  return b;
}

cudaStream_t g_stream = nullptr;

void sync() {
  TS_CUDA_CHECK(cudaGetLastError());
  TS_CUDA_CHECK(cudaStreamSynchronize(g_stream));
}

tessera::ThreadPool& pool() { return tessera::default_pool(); }

// Weight / source data in `t`, made from random floats with the CPU converter.
std::vector<uint8_t> encode(const std::vector<float>& f, DType t) {
  std::vector<uint8_t> out((size_t)tessera::dtype_bytes(t, (int64_t)f.size()));
  if (t == DType::F32) std::memcpy(out.data(), f.data(), out.size());
  else tessera::cpu::convert(pool(), f.data(), DType::F32, out.data(), t, (int64_t)f.size());
  return out;
}

const char* dname(DType t) { return tessera::dtype_info(t).name; }

// ---- matmul --------------------------------------------------------------------------------------

// The CUDA-core kernel (tensor cores off: test_matmul_tensor_cores covers that path).
void test_matmul() {
  tessera::cuda::set_tensor_cores(false);
  const DType dtypes[] = {DType::F32,  DType::F16,  DType::BF16, DType::Q8_0,
                          DType::Q4_0, DType::Q4_K, DType::Q6_K};
  const int64_t ms[] = {1, 2, 3, 5, 64};
  const int64_t ns[] = {1, 7, 33, 129};
  for (DType dt : dtypes) {
    const int64_t blk = tessera::dtype_info(dt).block_elems;
    const std::vector<int64_t> ks = blk == 256  ? std::vector<int64_t>{256, 768}
                                    : blk == 32 ? std::vector<int64_t>{32, 96, 512}
                                                : std::vector<int64_t>{1, 37, 64, 100, 512};
    for (int64_t m : ms)
      for (int64_t n : ns)
        for (int64_t k : ks)
          for (int offset = 0; offset < 2; ++offset) {  // offset 1: x misaligned -> scalar path
            if (offset && !(m == 5 && n == 33)) continue;
            char name[96];
            std::snprintf(name, sizeof(name), "%s m=%lld n=%lld k=%lld%s", dname(dt), (long long)m,
                          (long long)n, (long long)k, offset ? " x+1" : "");
            run_case("matmul", name, [&] {
              tessera::check_matmul(dt, k);
              const std::vector<float> x = randv((size_t)(m * k + offset));
              const std::vector<uint8_t> w = encode(randv((size_t)(n * k)), dt);
              std::vector<float> ref((size_t)(m * n));
              tessera::cpu::matmul(pool(), x.data() + offset, w.data(), dt, ref.data(), m, n, k);
              DeviceBuffer dx = to_dev(x), dw = to_dev(w), dy = poisoned(ref.size() * 4);
              tessera::cuda::matmul(g_stream, dx.as<float>() + offset, dw.get(), dt, dy.as<float>(),
                                    m, n, k);
              sync();
              // fp32 sums of up to 512 products in a different order: ~1e-6 relative
              compare("matmul", name, ref, from_dev<float>(dy, ref.size()), 1e-4);
            });
          }
  }
  tessera::cuda::set_tensor_cores(true);
}

// Prefill-sized batches: the tensor-core kernel (x and w rounded to f16, f32 accumulation:
// ~2^-11 relative per product) and, with tensor cores turned off, the CUDA-core kernel (f32).
void test_matmul_tensor_cores() {
  const DType dtypes[] = {DType::F16, DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K, DType::F32};
  for (DType dt : dtypes)
    for (int64_t m : {32, 200, 300})
      for (int64_t n : {1, 129, 300})
        for (int64_t k : {256, 768}) {
          if ((m == 300) != (n == 300) && m * n > 300 * 129) continue;  // thin the sweep
          for (int tc = 1; tc >= 0; --tc) {
            char name[96];
            std::snprintf(name, sizeof(name), "%s m=%lld n=%lld k=%lld %s", dname(dt), (long long)m, (long long)n,
                          (long long)k, tc ? "tensor cores" : "cuda cores");
            run_case("matmul_tc", name, [&] {
              const std::vector<float> x = randv((size_t)(m * k));
              const std::vector<uint8_t> w = encode(randv((size_t)(n * k)), dt);
              std::vector<float> ref((size_t)(m * n));
              tessera::cpu::matmul(pool(), x.data(), w.data(), dt, ref.data(), m, n, k);
              DeviceBuffer dx = to_dev(x), dw = to_dev(w), dy = poisoned(ref.size() * 4);
              tessera::cuda::set_tensor_cores(tc == 1);
              tessera::cuda::matmul(g_stream, dx.as<float>(), dw.get(), dt, dy.as<float>(), m, n, k);
              sync();
              tessera::cuda::set_tensor_cores(true);
              // f32 weights never take the tensor-core path (f16 would round them)
              compare("matmul_tc", name, ref, from_dev<float>(dy, ref.size()), tc && dt != DType::F32 ? 3e-3 : 1e-4);
            });
            tessera::cuda::set_tensor_cores(true);
          }
        }
}

// Activations beyond f16's range (|x| up to ~3e5, as in some models' FFN inputs): the tensor-core
// kernel scales such rows by a power of two before rounding them to f16.
void test_matmul_tensor_cores_large_x() {
  for (DType dt : {DType::F16, DType::Q8_0})
    run_case("matmul_tc", std::string("large activations ") + dname(dt), [&] {
      const int64_t m = 256, n = 300, k = 512;
      std::vector<float> x = randv((size_t)(m * k));
      for (int64_t r = 0; r < m; ++r)
        for (int64_t c = 0; c < k; ++c) x[r * k + c] *= (r % 3 == 0) ? 3e5f : (r % 3 == 1 ? 1e3f : 1.f);
      const std::vector<uint8_t> w = encode(randv((size_t)(n * k)), dt);
      std::vector<float> ref((size_t)(m * n));
      tessera::cpu::matmul(pool(), x.data(), w.data(), dt, ref.data(), m, n, k);
      DeviceBuffer dx = to_dev(x), dw = to_dev(w), dy = poisoned(ref.size() * 4);
      tessera::cuda::matmul(g_stream, dx.as<float>(), dw.get(), dt, dy.as<float>(), m, n, k);
      sync();
      const std::vector<float> got = from_dev<float>(dy, ref.size());
      // per row class: the error relative to that row class's own scale
      for (int cls = 0; cls < 3; ++cls) {
        std::vector<float> rr, gg;
        for (int64_t r = cls; r < m; r += 3) {
          rr.insert(rr.end(), ref.begin() + r * n, ref.begin() + (r + 1) * n);
          gg.insert(gg.end(), got.begin() + r * n, got.begin() + (r + 1) * n);
        }
        compare("matmul_tc", std::string("large activations ") + dname(dt) + " rows x" +
                                 (cls == 0 ? "3e5" : cls == 1 ? "1e3" : "1"), rr, gg, 3e-3);
      }
    });
}

// ---- rmsnorm / swiglu / softmax ------------------------------------------------------------------

void test_rmsnorm() {
  for (int64_t rows : {1, 3, 17})
    for (int64_t n : {1, 7, 128, 4099}) {
      const std::string name = "rows=" + std::to_string(rows) + " n=" + std::to_string(n);
      run_case("rmsnorm", name, [&] {
        const std::vector<float> x = randv((size_t)(rows * n), -3.f, 3.f), w = randv((size_t)n);
        std::vector<float> ref(x.size());
        tessera::cpu::rmsnorm(pool(), x.data(), w.data(), ref.data(), rows, n, 1e-5f);
        DeviceBuffer dx = to_dev(x), dw = to_dev(w), dy = poisoned(x.size() * 4);
        tessera::cuda::rmsnorm(g_stream, dx.as<float>(), dw.as<float>(), dy.as<float>(), rows, n, 1e-5f);
        sync();
        compare("rmsnorm", name, ref, from_dev<float>(dy, ref.size()), 1e-5);
      });
    }
}

void test_swiglu() {
  for (int64_t n : {1, 3, 1000, 4097})
    for (int offset = 0; offset < 2; ++offset) {
      const std::string name = "n=" + std::to_string(n) + (offset ? " +1" : "");
      run_case("swiglu", name, [&] {
        const std::vector<float> g = randv((size_t)(n + offset), -8.f, 8.f),
                                 u = randv((size_t)(n + offset), -2.f, 2.f);
        std::vector<float> ref((size_t)n);
        tessera::cpu::swiglu(pool(), g.data() + offset, u.data() + offset, ref.data(), n);
        DeviceBuffer dg = to_dev(g), du = to_dev(u), dy = poisoned((size_t)(n + offset) * 4);
        tessera::cuda::swiglu(g_stream, dg.as<float>() + offset, du.as<float>() + offset,
                              dy.as<float>() + offset, n);
        sync();
        const std::vector<float> all = from_dev<float>(dy, (size_t)(n + offset));
        compare("swiglu", name, ref, std::vector<float>(all.begin() + offset, all.end()), 1e-5);
      });
    }
}

void test_softmax() {
  for (int64_t rows : {1, 4, 9})
    for (int64_t n : {1, 5, 256, 32001}) {
      const std::string name = "rows=" + std::to_string(rows) + " n=" + std::to_string(n);
      run_case("softmax", name, [&] {
        const std::vector<float> x = randv((size_t)(rows * n), -12.f, 12.f);
        std::vector<float> ref(x.size());
        tessera::cpu::softmax(pool(), x.data(), ref.data(), rows, n);
        DeviceBuffer dx = to_dev(x), dy = poisoned(x.size() * 4);
        tessera::cuda::softmax(g_stream, dx.as<float>(), dy.as<float>(), rows, n);
        sync();
        // the CPU sums the n exponentials sequentially in fp32 (rounding error grows ~ n·eps),
        // the GPU in a tree: allow 1e-4 for long rows
        compare("softmax", name, ref, from_dev<float>(dy, ref.size()), n > 1024 ? 1e-4 : 1e-5);
      });
    }
}

// ---- rope ----------------------------------------------------------------------------------------

void test_rope() {
  struct Geo {
    int32_t head_dim, n_rot;
  };
  const Geo geos[] = {{64, 64}, {128, 128}, {128, 64}, {80, 80}, {33, 32}, {96, 2}};
  for (const Geo& g : geos)
    for (tessera::RopeMode mode : {tessera::RopeMode::Normal, tessera::RopeMode::NeoX})
      for (int64_t tokens : {1, 5, 33})
        for (int32_t heads : {1, 3, 12}) {
          if (tokens == 33 && heads == 12 && g.head_dim != 128) continue;
          char name[96];
          std::snprintf(name, sizeof(name), "%s D=%d rot=%d tokens=%lld heads=%d",
                        mode == tessera::RopeMode::NeoX ? "neox" : "normal", g.head_dim, g.n_rot,
                        (long long)tokens, heads);
          run_case("rope", name, [&] {
            tessera::RopeParams p;
            p.n_rot = g.n_rot;
            p.mode = mode;
            p.theta_base = heads == 3 ? 1000000.f : 10000.f;
            p.freq_scale = tokens == 5 ? 0.25f : 1.f;
            tessera::check_rope(p, g.head_dim);
            std::vector<float> x = randv((size_t)(tokens * heads * g.head_dim), -2.f, 2.f);
            std::vector<int32_t> pos((size_t)tokens);
            for (auto& v : pos) v = randint(0, 32767);
            pos[0] = 0;
            DeviceBuffer dx = to_dev(x), dp = to_dev(pos);
            tessera::cpu::rope(pool(), x.data(), pos.data(), tokens, heads, g.head_dim, p);
            tessera::cuda::rope(g_stream, dx.as<float>(), dp.as<int32_t>(), tokens, heads, g.head_dim, p);
            sync();
            // same double-precision angles on both sides: only the last rotation step rounds
            compare("rope", name, x, from_dev<float>(dx, x.size()), 1e-5);
          });
        }
}

// ---- varlen attention ----------------------------------------------------------------------------

void test_varlen() {
  const std::vector<std::vector<int32_t>> batches = {
      {1}, {7}, {0, 1, 7, 0, 13}, {1, 1, 1}, {0}, {33, 65}, {130}, {300, 1, 64, 65, 0, 127}, {1000}};
  const int32_t groups[] = {1, 2, 4, 8};
  const int32_t dims[] = {64, 128, 33, 80, 256, 300};
  for (const auto& lens : batches)
    for (int32_t group : groups)
      for (int32_t D : dims) {
        // keep the sweep small where it adds nothing: odd dims on a few batches only
        if ((D == 33 || D == 80 || D == 300) && lens.size() < 2) continue;
        if (D == 256 && group != 2) continue;
        if (lens.size() > 1 && lens[0] == 300 && D != 64 && D != 128) continue;
        if (lens.size() == 1 && lens[0] == 1000 && (D != 128 || group != 4)) continue;
        const int32_t Hkv = group == 8 ? 1 : 2, Hq = Hkv * group;
        std::string name = "seqs=[";
        for (size_t i = 0; i < lens.size(); ++i) name += (i ? "," : "") + std::to_string(lens[i]);
        name += "] Hq=" + std::to_string(Hq) + " Hkv=" + std::to_string(Hkv) + " D=" + std::to_string(D);
        run_case("varlen_attention", name, [&] {
          std::vector<int32_t> cu(lens.size() + 1, 0);
          for (size_t i = 0; i < lens.size(); ++i) cu[i + 1] = cu[i] + lens[i];
          const int64_t T = cu.back();
          tessera::AttnShape s;
          s.n_heads = Hq;
          s.n_kv_heads = Hkv;
          s.head_dim = D;
          s.scale = 1.f / std::sqrt((float)D);
          tessera::VarlenBatch hb;
          hb.cu_seqlens = cu.data();
          hb.num_seqs = (int32_t)lens.size();
          tessera::check_varlen(hb, T);
          tessera::check_attn_shape(s);
          const std::vector<float> q = randv((size_t)(T * Hq * D), -2.f, 2.f),
                                   k = randv((size_t)(T * Hkv * D), -2.f, 2.f),
                                   v = randv((size_t)(T * Hkv * D));
          std::vector<float> ref(q.size());
          tessera::cpu::varlen_attention(pool(), q.data(), k.data(), v.data(), ref.data(), hb, s);
          DeviceBuffer dq = to_dev(q), dk = to_dev(k), dv = to_dev(v), dcu = to_dev(cu),
                       dout = poisoned(q.size() * 4);
          tessera::VarlenBatch db = hb;
          db.cu_seqlens = dcu.as<int32_t>();
          tessera::cuda::varlen_attention(g_stream, dq.as<float>(), dk.as<float>(), dv.as<float>(),
                                          dout.as<float>(), db, s);
          sync();
          compare("varlen_attention", name, ref, from_dev<float>(dout, ref.size()), 1e-4);
          // With the token count known, head dims 64 / 128 run on tensor cores: q, k, v and the
          // probabilities are rounded to f16 (2^-11 relative each), softmax and sums stay f32.
          tessera::cuda::VarlenHints hints;
          hints.total_tokens = T;
          DeviceBuffer dout2 = poisoned(q.size() * 4);
          tessera::cuda::varlen_attention_hinted(g_stream, dq.as<float>(), dk.as<float>(), dv.as<float>(),
                                                 dout2.as<float>(), db, s, hints);
          sync();
          const bool tc = D == 64 || D == 128;
          compare("varlen_attention", name + (tc ? " tensor cores" : " hinted"), ref,
                  from_dev<float>(dout2, ref.size()), tc ? 5e-3 : 1e-4);
        });
      }
}

// ---- paged KV: shared geometry -------------------------------------------------------------------

// A random paged layout: sequence b has lens[b] tokens in shuffled pages (plus unused pages).
struct PagedSetup {
  std::vector<int32_t> indptr, indices, last;
  int32_t num_pages = 0;
  std::vector<uint8_t> k_pages, v_pages;  // f32 or f16 bits
  size_t page_elems = 0;                  // elements of one K (or V) page array

  tessera::PagedKv host(DType dt, int32_t page_size, int32_t Hkv, int32_t D) {
    tessera::PagedKv kv;
    kv.k_pages = k_pages.data();
    kv.v_pages = v_pages.data();
    kv.kv_dtype = dt;
    kv.num_pages = num_pages;
    kv.page_size = page_size;
    kv.n_kv_heads = Hkv;
    kv.head_dim = D;
    kv.indptr = indptr.data();
    kv.indices = indices.data();
    kv.last_page_len = last.data();
    kv.batch = (int32_t)last.size();
    return kv;
  }
};

PagedSetup make_paged(const std::vector<int32_t>& lens, DType dt, int32_t page_size, int32_t Hkv,
                      int32_t D) {
  PagedSetup ps;
  ps.indptr.push_back(0);
  int32_t used = 0;
  for (int32_t len : lens) {
    const int32_t np = (len + page_size - 1) / page_size;
    used += np;
    ps.indptr.push_back(used);
    ps.last.push_back(np == 0 ? 1 : len - (np - 1) * page_size);
  }
  ps.num_pages = used + 3;  // a few pages nobody owns
  std::vector<int32_t> perm(ps.num_pages);
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), g_rng);
  ps.indices.assign(perm.begin(), perm.begin() + used);
  ps.page_elems = (size_t)ps.num_pages * page_size * Hkv * D;
  ps.k_pages = encode(randv(ps.page_elems, -2.f, 2.f), dt);
  ps.v_pages = encode(randv(ps.page_elems), dt);
  return ps;
}

// Device copies of a PagedSetup and the PagedKv pointing at them.
struct PagedDev {
  DeviceBuffer k, v, indptr, indices, last;
  tessera::PagedKv kv;
  PagedDev(const PagedSetup& ps, const tessera::PagedKv& host)
      : k(to_dev(ps.k_pages)), v(to_dev(ps.v_pages)), indptr(to_dev(ps.indptr)),
        indices(to_dev(ps.indices)), last(to_dev(ps.last)), kv(host) {
    kv.k_pages = k.get();
    kv.v_pages = v.get();
    kv.indptr = indptr.as<int32_t>();
    kv.indices = indices.as<int32_t>();
    kv.last_page_len = last.as<int32_t>();
  }
};

// ---- paged attention -----------------------------------------------------------------------------

void test_paged_attention() {
  struct Batch {
    std::vector<int32_t> lens, nq;
  };
  const Batch batches[] = {
      {{1}, {1}},                                      // single token
      {{40}, {1}},                                     // decode
      {{7, 300, 1, 0, 19}, {3, 1, 1, 0, 5}},           // mixed, an empty sequence
      {{5, 5}, {5, 2}},                                // every entry is a query (prefix 0)
      {{260, 33}, {6, 4}},                             // tree-verify sized
      {{5000, 1, 700}, {1, 1, 3}},                     // long: many splits with hints
      {{300, 40, 5, 90}, {70, 40, 1, 16}},             // mixed: prompts (tensor cores with hints) + decode
  };
  const int32_t page_sizes[] = {1, 3, 16, 256};
  const DType kv_dtypes[] = {DType::F32, DType::F16};
  const int32_t groups[] = {1, 2, 4, 8};
  const int32_t dims[] = {64, 128, 33};
  for (int bi = 0; bi < (int)(sizeof(batches) / sizeof(batches[0])); ++bi)
    for (int pi = 0; pi < 4; ++pi)
      for (int ki = 0; ki < 2; ++ki)
        for (int tree = 0; tree < 2; ++tree)
          for (int gi = 0; gi < 4; ++gi)
            for (int di = 0; di < 3; ++di) {
              // thin the full product to a third: every (batch, page size, dtype, tree) still
              // meets every GQA group, and every head dim across the sweep; D 128 / group 4 always
              const Batch& bt = batches[bi];
              const int32_t page_size = page_sizes[pi], group = groups[gi], D = dims[di];
              const DType kd = kv_dtypes[ki];
              if ((bi + pi + ki + tree + gi + di) % 3 != 0 && !(D == 128 && group == 4)) continue;
              const int32_t Hkv = group == 8 ? 1 : 2, Hq = Hkv * group;
              std::string name = "batch" + std::to_string(bi) + " page=" +
                                 std::to_string(page_size) + " kv=" + dname(kd) +
                                 (tree ? " tree" : " causal") + " Hq=" + std::to_string(Hq) +
                                 " Hkv=" + std::to_string(Hkv) + " D=" + std::to_string(D);
              run_case("paged_attention", name, [&] {
                PagedSetup ps = make_paged(bt.lens, kd, page_size, Hkv, D);
                const tessera::PagedKv hkv = ps.host(kd, page_size, Hkv, D);
                std::vector<int32_t> qo(bt.nq.size() + 1, 0);
                for (size_t b = 0; b < bt.nq.size(); ++b) qo[b + 1] = qo[b] + bt.nq[b];
                const int64_t Tq = qo.back();
                // tree mask: random with the diagonal set, except one row left empty where the
                // sequence has no prefix (that query sees nothing: zeros)
                std::vector<int32_t> mindptr(1, 0);
                std::vector<uint8_t> mask;
                for (size_t b = 0; b < bt.nq.size(); ++b) {
                  const int32_t nq = bt.nq[b];
                  for (int32_t i = 0; i < nq; ++i)
                    for (int32_t j = 0; j < nq; ++j)
                      mask.push_back((uint8_t)(i == j ? 1 : (j < i ? randint(0, 1) : randint(0, 5) == 0)));
                  if (nq > 1 && bt.lens[b] == nq) {
                    for (int32_t j = 0; j < nq; ++j) mask[mindptr.back() + (nq - 1) * nq + j] = 0;
                  }
                  mindptr.push_back((int32_t)mask.size());
                }
                tessera::TreeMask htm;
                htm.mask = mask.data();
                htm.indptr = mindptr.data();
                tessera::AttnShape s;
                s.n_heads = Hq;
                s.n_kv_heads = Hkv;
                s.head_dim = D;
                s.scale = 1.f / std::sqrt((float)D);
                tessera::check_attn_shape(s);
                tessera::check_paged(hkv, (int64_t)ps.indices.size());
                tessera::check_paged_queries(qo.data(), Tq, hkv, tree ? &htm : nullptr, (int64_t)mask.size());

                const std::vector<float> q = randv((size_t)(Tq * Hq * D), -2.f, 2.f);
                std::vector<float> ref(q.size());
                tessera::cpu::paged_attention(pool(), q.data(), qo.data(), hkv, tree ? &htm : nullptr,
                                              ref.data(), s);
                PagedDev dev(ps, hkv);
                DeviceBuffer dq = to_dev(q), dqo = to_dev(qo), dmask = to_dev(mask),
                             dmi = to_dev(mindptr), dout = poisoned(q.size() * 4);
                tessera::TreeMask dtm;
                dtm.mask = dmask.as<uint8_t>();
                dtm.indptr = dmi.as<int32_t>();
                tessera::cuda::paged_attention(g_stream, dq.as<float>(), dqo.as<int32_t>(), dev.kv,
                                               tree ? &dtm : nullptr, dout.as<float>(), s);
                sync();
                compare("paged_attention", name, ref, from_dev<float>(dout, ref.size()), 1e-4);
                // With the host's hints the decode kernel may split sequences (flash-decoding).
                tessera::cuda::PagedAttnHints hints;
                hints.total_q = Tq;
                hints.max_kv_len = *std::max_element(bt.lens.begin(), bt.lens.end());
                hints.max_q_per_seq = *std::max_element(bt.nq.begin(), bt.nq.end());
                DeviceBuffer dout2 = poisoned(q.size() * 4);
                tessera::cuda::paged_attention_hinted(g_stream, dq.as<float>(), dqo.as<int32_t>(), dev.kv,
                                                      tree ? &dtm : nullptr, dout2.as<float>(), s, hints);
                sync();
                // sequences with 16+ queries go to the tensor-core prefill kernel (f16 operands)
                const bool tc = !tree && (D == 64 || D == 128) && hints.max_q_per_seq >= 16;
                compare("paged_attention", name + (tc ? " hinted, tensor cores" : " hinted"), ref,
                        from_dev<float>(dout2, ref.size()), tc ? 5e-3 : 1e-4);
              });
            }
}

// ---- the model's own kernels (ops.h) ----------------------------------------------------

void test_model_kernels() {
  for (DType dt : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K}) {
    const std::string name = std::string("embed ") + dname(dt);
    run_case("model_kernels", name, [&] {
      const int64_t V = 37, E = 512;
      const std::vector<uint8_t> table = encode(randv((size_t)(V * E), -3.f, 3.f), dt);
      const std::vector<int32_t> tokens = {0, 36, 5, 5, 17};
      std::vector<float> ref(tokens.size() * E);
      tessera::cpu::embed(pool(), table.data(), dt, E, tokens.data(), (int64_t)tokens.size(), ref.data());
      DeviceBuffer dtab = to_dev(table), dtok = to_dev(tokens), dout = poisoned(ref.size() * 4);
      tessera::cuda::embed(g_stream, dtab.get(), dt, E, dtok.as<int32_t>(), (int64_t)tokens.size(), dout.as<float>());
      sync();
      compare("model_kernels", name, ref, from_dev<float>(dout, ref.size()), dt == DType::Q4_K || dt == DType::Q6_K ? 1e-6 : 0.0);
    });
  }
  for (int64_t rows : {1, 7})
    for (int64_t n : {5, 2048}) {
      const std::string sfx = " rows=" + std::to_string(rows) + " n=" + std::to_string(n);
      run_case("model_kernels", "add_bias" + sfx, [&] {
        std::vector<float> y = randv((size_t)(rows * n)), b = randv((size_t)n);
        DeviceBuffer dy = to_dev(y), db = to_dev(b);
        tessera::cuda::add_bias(g_stream, dy.as<float>(), db.as<float>(), rows, n);
        sync();
        tessera::cpu::add_bias(pool(), y.data(), b.data(), rows, n);
        compare("model_kernels", "add_bias" + sfx, y, from_dev<float>(dy, y.size()), 0.0);
      });
      run_case("model_kernels", "add_rmsnorm" + sfx, [&] {
        std::vector<float> x = randv((size_t)(rows * n), -4.f, 4.f), y = randv((size_t)(rows * n)), w = randv((size_t)n);
        DeviceBuffer dx = to_dev(x), dy = to_dev(y), dw = to_dev(w), dxn = poisoned(x.size() * 4);
        tessera::cuda::add_rmsnorm(g_stream, dx.as<float>(), dy.as<float>(), dw.as<float>(), dxn.as<float>(), rows, n, 1e-5f);
        sync();
        std::vector<float> xn(x.size());
        tessera::cpu::add_rmsnorm(pool(), x.data(), y.data(), w.data(), xn.data(), rows, n, 1e-5f);
        compare("model_kernels", "add_rmsnorm (sum)" + sfx, x, from_dev<float>(dx, x.size()), 0.0);
        compare("model_kernels", "add_rmsnorm (norm)" + sfx, xn, from_dev<float>(dxn, xn.size()), 1e-5);
      });
      run_case("model_kernels", "gather_rows" + sfx, [&] {
        const std::vector<float> x = randv((size_t)(rows * n));
        const std::vector<int32_t> idx = {(int32_t)rows - 1, 0, (int32_t)(rows / 2)};
        std::vector<float> ref(idx.size() * n);
        tessera::cpu::gather_rows(pool(), x.data(), idx.data(), (int64_t)idx.size(), n, ref.data());
        DeviceBuffer dx = to_dev(x), di = to_dev(idx), dout = poisoned(ref.size() * 4);
        tessera::cuda::gather_rows(g_stream, dx.as<float>(), di.as<int32_t>(), (int64_t)idx.size(), n, dout.as<float>());
        sync();
        compare("model_kernels", "gather_rows" + sfx, ref, from_dev<float>(dout, ref.size()), 0.0);
      });
    }
}

// Top-k / argmax (value descending, index ascending, NaN never taken) and the scatter that undoes
// gather_rows, against the CPU ops.
void test_sampling_kernels() {
  for (int64_t n : {1, 7, 1000, 32000})
    for (int k : {1, 5, 40}) {
      const std::string name = "top_k n=" + std::to_string(n) + " k=" + std::to_string(k);
      run_case("sampling", name, [&] {
        const int64_t rows = 3;
        std::vector<float> x = randv((size_t)(rows * n), -5.f, 5.f);
        if (n >= 1000) {  // ties, infinities and NaN in row 1
          x[n + 3] = x[n + 9] = x[n + 500] = 7.f;
          x[n + 10] = INFINITY, x[n + 11] = -INFINITY, x[n + 12] = NAN;
        }
        if (n == 7) x[0] = x[1] = NAN;  // row 0: five values for k up to 40
        DeviceBuffer dx = to_dev(x), di = poisoned((size_t)rows * k * 4), dv = poisoned((size_t)rows * k * 4);
        tessera::cuda::top_k_rows(g_stream, dx.as<float>(), rows, n, k, di.as<int32_t>(), dv.as<float>());
        sync();
        const std::vector<int32_t> gi = from_dev<int32_t>(di, (size_t)(rows * k));
        const std::vector<float> gv = from_dev<float>(dv, (size_t)(rows * k));
        std::vector<int32_t> ci((size_t)(rows * k));  // the CPU op is the reference
        std::vector<float> cv((size_t)(rows * k));
        tessera::cpu::top_k_rows(pool(), x.data(), rows, n, k, ci.data(), cv.data());
        size_t bad = 0;
        for (size_t i = 0; i < ci.size(); ++i)
          if (gi[i] != ci[i] || !(gv[i] == cv[i])) ++bad;
        record("sampling", name, bad == 0, (double)bad, bad ? std::to_string(bad) + " picks differ" : "");
      });
    }
  run_case("sampling", "argmax and scatter_add_rows", [&] {
    const int64_t rows = 5, n = 300;
    std::vector<float> x = randv((size_t)(rows * n));
    DeviceBuffer dx = to_dev(x), di = poisoned(rows * 4), dv = poisoned(rows * 4);
    tessera::cuda::argmax_rows(g_stream, dx.as<float>(), rows, n, di.as<int32_t>(), dv.as<float>());
    sync();
    const std::vector<int32_t> gi = from_dev<int32_t>(di, rows);
    std::vector<int32_t> ci(rows);
    std::vector<float> cv(rows);
    tessera::cpu::argmax_rows(pool(), x.data(), rows, n, ci.data(), cv.data());
    size_t bad = 0;
    for (int64_t r = 0; r < rows; ++r)
      if (gi[r] != ci[r]) ++bad;
    record("sampling", "argmax", bad == 0, (double)bad);
    const std::vector<int32_t> sel = {4, 0, 2};
    const std::vector<float> y = randv(sel.size() * n);
    DeviceBuffer dy = to_dev(y), ds = to_dev(sel);
    tessera::cuda::scatter_add_rows(g_stream, dx.as<float>(), dy.as<float>(), ds.as<int32_t>(), (int64_t)sel.size(), n);
    sync();
    tessera::cpu::scatter_add_rows(pool(), x.data(), y.data(), sel.data(), (int64_t)sel.size(), n);
    compare("sampling", "scatter_add_rows", x, from_dev<float>(dx, x.size()), 0.0);
  });
  // greedy_rows against the native sampler's greedy path (tessera::sample_row, temperature 0):
  // the same token on every row (ties, -inf, an all -inf row, NaN / +inf rows flagged), logprob
  // within 1e-9.
  for (int64_t n : {1, 48, 32000, 152064})
    run_case("sampling", "greedy_rows n=" + std::to_string(n), [&] {
      const int64_t rows = 6;
      std::vector<float> x = randv((size_t)(rows * n), -8.f, 8.f);
      for (int64_t i = 0; i < n; i += 3) x[n + i] = std::round(x[n + i]);  // row 1: ties
      for (int64_t i = 0; i < n; i += 2) x[2 * n + i] = -INFINITY;          // row 2: half banned
      for (int64_t i = 0; i < n; ++i) x[3 * n + i] = -INFINITY;             // row 3: nothing left
      x[4 * n + n / 2] = NAN;                                               // row 4: NaN
      x[5 * n + n - 1] = INFINITY;                                          // row 5: +inf
      DeviceBuffer dx = to_dev(x), di = poisoned(rows * 4), dl = poisoned(rows * 8);
      tessera::cuda::greedy_rows(g_stream, dx.as<float>(), rows, n, di.as<int32_t>(), dl.as<double>());
      sync();
      const std::vector<int32_t> gi = from_dev<int32_t>(di, rows);
      const std::vector<double> gl = from_dev<double>(dl, rows);
      tessera::SamplingParams greedy;
      greedy.temperature = 0;
      size_t bad = 0;
      double worst = 0;
      for (int64_t r = 0; r < rows; ++r) {
        tessera::SampleRequest q;
        q.logits = x.data() + r * n;
        q.params = &greedy;
        const tessera::SampleResult c = tessera::sample_row(q, (int32_t)n);
        const bool c_bad = !c.error.empty() && c.error.find("no token left") == std::string::npos;
        const int32_t want = c_bad ? -2 : !c.error.empty() ? -1 : c.token;
        if (gi[r] != want) ++bad;
        else if (want >= 0) worst = std::max(worst, std::fabs(gl[r] - c.logprob));
      }
      record("sampling", "greedy_rows n=" + std::to_string(n), bad == 0 && worst < 1e-9, worst,
             bad ? std::to_string(bad) + " rows differ" : "");
    });
}

// ---- kv_append -----------------------------------------------------------------------------------

void test_kv_append() {
  const std::vector<int32_t> lens = {1, 9, 40, 0, 17};
  for (int32_t page_size : {1, 3, 16, 256})
    for (DType kd : {DType::F32, DType::F16})
      for (int32_t D : {64, 33}) {
        const int32_t Hkv = D == 64 ? 2 : 3;
        std::string name = "page=" + std::to_string(page_size) + " kv=" + dname(kd) +
                           " Hkv=" + std::to_string(Hkv) + " D=" + std::to_string(D);
        run_case("kv_append", name, [&] {
          PagedSetup ps = make_paged(lens, kd, page_size, Hkv, D);
          tessera::PagedKv hkv = ps.host(kd, page_size, Hkv, D);
          // distinct (sequence, position) targets, in random order
          std::vector<std::pair<int32_t, int32_t>> slots;
          for (int32_t b = 0; b < (int32_t)lens.size(); ++b)
            for (int32_t p = 0; p < lens[b]; ++p)
              if (randint(0, 2) == 0 || p == lens[b] - 1) slots.emplace_back(b, p);
          std::shuffle(slots.begin(), slots.end(), g_rng);
          const int64_t T = (int64_t)slots.size();
          std::vector<int32_t> bi, pos;
          for (auto& sl : slots) bi.push_back(sl.first), pos.push_back(sl.second);
          tessera::check_paged(hkv, (int64_t)ps.indices.size());
          tessera::check_kv_append(bi.data(), pos.data(), T, hkv);
          const std::vector<float> k = rand_wide((size_t)(T * Hkv * D)),
                                   v = randv((size_t)(T * Hkv * D), -3.f, 3.f);
          PagedDev dev(ps, hkv);  // copies the pages before the CPU writes into them
          tessera::cpu::kv_append(pool(), k.data(), v.data(), bi.data(), pos.data(), T, hkv);
          DeviceBuffer dk = to_dev(k), dv = to_dev(v), dbi = to_dev(bi), dpos = to_dev(pos);
          tessera::cuda::kv_append(g_stream, dk.as<float>(), dv.as<float>(), dbi.as<int32_t>(),
                                   dpos.as<int32_t>(), T, dev.kv);
          sync();
          // bit-exact: the same conversion on both sides, and every other slot left untouched
          const std::vector<uint8_t> gk = from_dev<uint8_t>(dev.k, ps.k_pages.size()),
                                     gv = from_dev<uint8_t>(dev.v, ps.v_pages.size());
          size_t diff = 0;
          for (size_t i = 0; i < gk.size(); ++i) diff += gk[i] != ps.k_pages[i];
          for (size_t i = 0; i < gv.size(); ++i) diff += gv[i] != ps.v_pages[i];
          record("kv_append", name, diff == 0, (double)diff,
                 diff ? std::to_string(diff) + " bytes differ" : "");
        });
      }
}

// Tree-path compaction: moves within sequences, in order (chains where a move reads an earlier
// move's destination, and one that writes an earlier move's source), bit-exact against the CPU op.
void test_kv_compact() {
  const std::vector<int32_t> lens = {12, 1, 40, 17};
  for (int32_t page_size : {1, 3, 16})
    for (DType kd : {DType::F32, DType::F16})
      for (int32_t D : {64, 33}) {
        const int32_t Hkv = D == 64 ? 2 : 3;
        std::string name = "page=" + std::to_string(page_size) + " kv=" + dname(kd) + " D=" + std::to_string(D);
        run_case("kv_compact", name, [&] {
          PagedSetup ps = make_paged(lens, kd, page_size, Hkv, D);
          tessera::PagedKv hkv = ps.host(kd, page_size, Hkv, D);
          // sequence 0: 5 -> 4, 8 -> 5, 11 -> 6; sequence 2: 30 -> 20, 39 -> 30; sequence 3: 16 -> 3
          const std::vector<int32_t> bi = {0, 0, 0, 2, 2, 3}, src = {5, 8, 11, 30, 39, 16}, dst = {4, 5, 6, 20, 30, 3};
          PagedDev dev(ps, hkv);  // copies the pages before the CPU moves them
          tessera::cpu::kv_compact(pool(), bi.data(), src.data(), dst.data(), (int64_t)bi.size(), hkv);
          DeviceBuffer dbi = to_dev(bi), dsrc = to_dev(src), ddst = to_dev(dst);
          tessera::cuda::kv_compact(g_stream, dbi.as<int32_t>(), dsrc.as<int32_t>(), ddst.as<int32_t>(),
                                    (int64_t)bi.size(), dev.kv);
          sync();
          const std::vector<uint8_t> gk = from_dev<uint8_t>(dev.k, ps.k_pages.size()),
                                     gv = from_dev<uint8_t>(dev.v, ps.v_pages.size());
          size_t diff = 0;
          for (size_t i = 0; i < gk.size(); ++i) diff += gk[i] != ps.k_pages[i];
          for (size_t i = 0; i < gv.size(); ++i) diff += gv[i] != ps.v_pages[i];
          record("kv_compact", name, diff == 0, (double)diff, diff ? std::to_string(diff) + " bytes differ" : "");
        });
      }
}

// ---- convert -------------------------------------------------------------------------------------

void test_convert() {
  // any -> f32: sources made by the CPU converter; dequantisation is exact on both sides, except
  // that k-quants' d * sc * q - dmin * m may be contracted to one fma on either side
  for (DType st : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K})
    for (int64_t n : {256, 1024, 256 * 101}) {
      const std::string name = std::string(dname(st)) + "->f32 n=" + std::to_string(n);
      run_case("convert", name, [&] {
        tessera::check_convert(st, DType::F32, n);
        const std::vector<uint8_t> src = encode(randv((size_t)n, -5.f, 5.f), st);
        std::vector<float> ref((size_t)n);
        tessera::cpu::convert(pool(), src.data(), st, ref.data(), DType::F32, n);
        DeviceBuffer ds = to_dev(src), dd = poisoned((size_t)n * 4);
        tessera::cuda::convert(g_stream, ds.get(), st, dd.get(), DType::F32, n);
        sync();
        compare("convert", name, ref, from_dev<float>(dd, (size_t)n),
                tessera::dtype_info(st).block_elems == 256 ? 1e-6 : 0.0);
      });
    }
  // f32 -> f16 / bf16: bit-exact (same scalar rounding routine)
  for (DType dt : {DType::F16, DType::BF16})
    for (int64_t n : {1, 1001, 65536}) {
      const std::string name = std::string("f32->") + dname(dt) + " n=" + std::to_string(n);
      run_case("convert", name, [&] {
        tessera::check_convert(DType::F32, dt, n);
        std::vector<float> x = rand_wide((size_t)n);
        if (n > 8) x[1] = INFINITY, x[2] = -INFINITY, x[3] = 65520.f, x[4] = 5.9604645e-8f, x[5] = -0.f;
        std::vector<uint16_t> ref((size_t)n);
        tessera::cpu::convert(pool(), x.data(), DType::F32, ref.data(), dt, n);
        DeviceBuffer dx = to_dev(x), dd = poisoned((size_t)n * 2);
        tessera::cuda::convert(g_stream, dx.get(), DType::F32, dd.get(), dt, n);
        sync();
        const std::vector<uint16_t> got = from_dev<uint16_t>(dd, (size_t)n);
        size_t diff = 0, first = 0;
        for (size_t i = 0; i < got.size(); ++i)
          if (got[i] != ref[i] && diff++ == 0) first = i;
        char detail[96] = "";
        if (diff) std::snprintf(detail, sizeof(detail), "%zu differ (first at %zu: cpu %04x, cuda %04x)",
                                diff, first, ref[first], got[first]);
        record("convert", name, diff == 0, (double)diff, detail);
      });
    }
  // f32 -> q8_0 / q4_0: identical scales; quants may differ by one step only where x * id lands
  // on a rounding tie that the CPU's SIMD path rounds the other way (counted, must stay rare)
  for (DType dt : {DType::Q8_0, DType::Q4_0})
    for (int64_t n : {32, 1024, 32 * 1001}) {
      const std::string name = std::string("f32->") + dname(dt) + " n=" + std::to_string(n);
      run_case("convert", name, [&] {
        tessera::check_convert(DType::F32, dt, n);
        std::vector<float> x = randv((size_t)n, -3.f, 3.f);
        if (n >= 96) {
          std::fill(x.begin() + 32, x.begin() + 64, 0.f);  // an all-zero block: d = 0
          for (int j = 64; j < 96; ++j) x[j] = (j % 2 ? 1.f : -1.f) * (float)(j % 7);  // ties
        }
        const size_t bytes = (size_t)tessera::dtype_bytes(dt, n);
        std::vector<uint8_t> ref(bytes);
        tessera::cpu::convert(pool(), x.data(), DType::F32, ref.data(), dt, n);
        DeviceBuffer dx = to_dev(x), dd = poisoned(bytes);
        tessera::cuda::convert(g_stream, dx.get(), DType::F32, dd.get(), dt, n);
        sync();
        const std::vector<uint8_t> got = from_dev<uint8_t>(dd, bytes);
        const int64_t nb = n / 32;
        size_t scale_diff = 0, q_off_by_one = 0, q_bad = 0;
        for (int64_t b = 0; b < nb; ++b) {
          int qr[32], qg[32];
          uint16_t dr, dg;
          if (dt == DType::Q8_0) {
            const auto* r = reinterpret_cast<const tessera::BlockQ8_0*>(ref.data()) + b;
            const auto* g = reinterpret_cast<const tessera::BlockQ8_0*>(got.data()) + b;
            dr = r->d, dg = g->d;
            for (int j = 0; j < 32; ++j) qr[j] = r->qs[j], qg[j] = g->qs[j];
          } else {
            const auto* r = reinterpret_cast<const tessera::BlockQ4_0*>(ref.data()) + b;
            const auto* g = reinterpret_cast<const tessera::BlockQ4_0*>(got.data()) + b;
            dr = r->d, dg = g->d;
            for (int j = 0; j < 16; ++j) {
              qr[j] = r->qs[j] & 15, qr[j + 16] = r->qs[j] >> 4;
              qg[j] = g->qs[j] & 15, qg[j + 16] = g->qs[j] >> 4;
            }
          }
          scale_diff += dr != dg;
          for (int j = 0; j < 32; ++j) {
            const int dq = std::abs(qr[j] - qg[j]);
            q_off_by_one += dq == 1;
            q_bad += dq > 1;
          }
        }
        const bool ok = scale_diff == 0 && q_bad == 0 && q_off_by_one * 1000 <= (size_t)n;
        char detail[128];
        std::snprintf(detail, sizeof(detail), "scales differ %zu, quants off by 1: %zu, worse: %zu",
                      scale_diff, q_off_by_one, q_bad);
        record("convert", name, ok, (double)(scale_diff + q_off_by_one + q_bad),
               ok && q_off_by_one == 0 ? "" : detail);
      });
    }
}

}  // namespace

// Usage: cuda_parity_test [-v] [op ...]   (no op names: every op)
int main(int argc, char** argv) {
  std::vector<std::string> only;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "-v") == 0 || std::strcmp(argv[i], "--verbose") == 0) g_verbose = true;
    else only.emplace_back(argv[i]);
  }
  auto want = [&](const char* op) {
    return only.empty() || std::find(only.begin(), only.end(), op) != only.end();
  };

  const tessera::CudaProbe probe = tessera::cuda_probe();
  if (!probe.usable) {
    std::printf("cuda: skipped (%s)\n", probe.reason.c_str());
    return 0;
  }
  int dev = 0;
  cudaGetDevice(&dev);
  for (const auto& d : probe.devices)
    std::printf("cuda device %d%s: %s, cc %d.%d, %.1f GiB (driver %d, runtime %d)\n", d.index,
                d.index == dev ? " (current)" : "", d.name.c_str(), d.cc_major, d.cc_minor,
                d.total_mem / 1073741824.0, probe.driver_version, probe.runtime_version);
  try {
    // A blocking stream: it orders after the synchronous cudaMemcpy / cudaMemset of the legacy
    // default stream used by DeviceBuffer (pageable uploads may still be in flight on return).
    TS_CUDA_CHECK(cudaStreamCreate(&g_stream));
  } catch (const std::exception& e) {
    std::printf("%s\ncuda: 0 passed, 1 failed\n", e.what());
    return 1;
  }

  if (want("matmul")) test_matmul();
  if (want("matmul_tc")) {
    test_matmul_tensor_cores();
    test_matmul_tensor_cores_large_x();
  }
  if (want("rmsnorm")) test_rmsnorm();
  if (want("swiglu")) test_swiglu();
  if (want("softmax")) test_softmax();
  if (want("rope")) test_rope();
  if (want("varlen_attention")) test_varlen();
  if (want("paged_attention")) test_paged_attention();
  if (want("kv_append")) test_kv_append();
  if (want("kv_compact")) test_kv_compact();
  if (want("model_kernels")) test_model_kernels();
  if (want("sampling")) test_sampling_kernels();
  if (want("convert")) test_convert();

  for (const auto& [op, s] : g_ops)
    std::printf("%-17s %4d passed, %3d failed, worst err %.3g\n", op.c_str(), s.passed, s.failed, s.worst);
  cudaStreamDestroy(g_stream);
  std::printf("cuda: %d passed, %d failed\n", g_passed, g_failed);
  return g_failed == 0 ? 0 : 1;
}
