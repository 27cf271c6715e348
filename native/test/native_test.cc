// Native test binary: tessera::cpu (every supported instruction set, several thread pools)
// against the float64 references in tessera::ref on seeded random inputs, plus the argument
// checks of check.h. No framework: a small harness of named test cases is defined below.
// Last line of output: "native: <passed> passed, <failed> failed"; exit status 1 on failure.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "tessera/check.h"
#include "tessera/cpu_features.h"
#include "tessera/dtype.h"
#include "tessera/layouts.h"
#include "tessera/ops.h"
#include "tessera/threadpool.h"
#include "../cpu/qmatmul.h"
#include "harness.h"

using namespace tessera;
using namespace harness;

namespace {

// ---------------------------------------------------------------------------------------------
// Closeness checks (the harness itself is harness.h)
// ---------------------------------------------------------------------------------------------

// Largest normalised error seen per metric (printed at the end, to judge the tolerances).
std::map<std::string, std::pair<double, double>>& error_stats() {
  static std::map<std::string, std::pair<double, double>> stats;  // key -> (max error, tol)
  return stats;
}

// Checks that got is finite and |got[i] - ref[i]| <= tol * scale(i) for every i.
template <typename Scale>
bool expect_close_at(const char* file, int line, const std::string& what, const std::string& key,
                     const float* got, const float* ref, int64_t n, double tol, Scale scale) {
  ++g_checks;
  double worst = 0.0;
  int64_t wi = -1;
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(ref[i])) {
      fail(file, line, strf("%s: reference not finite at %lld (%g)", what.c_str(), (long long)i,
                            (double)ref[i]));
      return false;
    }
    if (!std::isfinite(got[i])) {
      fail(file, line, strf("%s: non-finite output at %lld: got %g, ref %g", what.c_str(),
                            (long long)i, (double)got[i], (double)ref[i]));
      return false;
    }
    const double s = std::max((double)scale(i), 1e-30);
    const double e = std::fabs((double)got[i] - (double)ref[i]) / s;
    if (e > worst) {
      worst = e;
      wi = i;
    }
  }
  auto& st = error_stats()[key];
  st.first = std::max(st.first, worst);
  st.second = tol;
  if (worst > tol) {
    fail(file, line,
         strf("%s: normalised error %.3g > tol %.3g at index %lld of %lld (got %.9g, ref %.9g, "
              "scale %.4g)",
              what.c_str(), worst, tol, (long long)wi, (long long)n, (double)got[wi],
              (double)ref[wi], (double)scale(wi)));
    return false;
  }
  return true;
}
#define EXPECT_CLOSE(...) expect_close_at(__FILE__, __LINE__, __VA_ARGS__)

// max |ref| over n elements (at least tiny).
double max_abs(const float* x, int64_t n) {
  double m = 0.0;
  for (int64_t i = 0; i < n; ++i) m = std::max(m, (double)std::fabs(x[i]));
  return std::max(m, 1e-30);
}

// ---------------------------------------------------------------------------------------------
// Random inputs
// ---------------------------------------------------------------------------------------------

struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull) {}
  uint64_t next() {  // splitmix64
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  float uni(float lo = -1.f, float hi = 1.f) {
    const double u = (double)(next() >> 11) * (1.0 / 9007199254740992.0);
    return (float)(lo + (hi - lo) * u);
  }
  int range(int lo, int hi) {  // inclusive
    return lo + (int)(next() % (uint64_t)(hi - lo + 1));
  }
};

std::vector<float> rand_vec(Rng& r, int64_t n, float lo = -1.f, float hi = 1.f) {
  std::vector<float> v((size_t)std::max<int64_t>(n, 1));
  for (int64_t i = 0; i < n; ++i) v[i] = r.uni(lo, hi);
  return v;
}

std::vector<float> nan_vec(int64_t n) {
  return std::vector<float>((size_t)std::max<int64_t>(n, 1),
                            std::numeric_limits<float>::quiet_NaN());
}

template <typename T>
void shuffle(std::vector<T>& v, Rng& r) {
  for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[r.next() % i]);
}

// ---------------------------------------------------------------------------------------------
// Backends: every supported ISA x {default pool, 1 thread, 3 threads}
// ---------------------------------------------------------------------------------------------

struct Backend {
  CpuIsa isa;
  ThreadPool* pool;
  std::string name;
};

std::vector<CpuIsa> g_isas;
std::vector<Backend> g_backends;
std::unique_ptr<ThreadPool> g_pool1, g_pool3;

template <typename F>
void for_each_backend(F f) {
  for (const Backend& b : g_backends) {
    set_active_isa(b.isa);
    f(b.name, *b.pool);
  }
  set_active_isa(best_isa());
}

// ---------------------------------------------------------------------------------------------
// Harness self-test and reference sanity (hand-computed values)
// ---------------------------------------------------------------------------------------------

TEST_CASE(harness_self_test) {
  // The comparator must catch a small perturbation and a NaN; a failure here is expected and
  // is undone, so it counts as a pass when both are detected.
  std::vector<float> a = {1.f, -0.5f, 0.25f, 0.f}, b = a;
  b[2] += 1e-3f;
  const int before = g_failures;
  const int64_t checks = g_checks;
  g_quiet = true;
  std::string key = "selftest";
  const bool ok1 = expect_close_at(__FILE__, __LINE__, "perturbed (expected)", key, b.data(),
                                   a.data(), 4, 1e-5, [](int64_t) { return 1.0; });
  b[2] = a[2];
  b[3] = std::numeric_limits<float>::quiet_NaN();
  const bool ok2 = expect_close_at(__FILE__, __LINE__, "nan (expected)", key, b.data(), a.data(),
                                   4, 1e-5, [](int64_t) { return 1.0; });
  b[3] = a[3];
  const bool ok3 = expect_close_at(__FILE__, __LINE__, "identical", key, b.data(), a.data(), 4,
                                   1e-5, [](int64_t) { return 1.0; });
  g_quiet = false;
  g_failures = before;
  g_checks = checks;
  error_stats().erase(key);
  EXPECT(!ok1 && !ok2 && ok3, "comparator: perturbation %d nan %d identical %d", ok1, ok2, ok3);
}

TEST_CASE(ref_sanity) {
  // q4_0: d = 1, element j = (j & 15) - 8 from the low nibble, element j+16 = (15-j) - 8.
  BlockQ4_0 q4;
  q4.d = f32_to_f16(1.f);
  for (int j = 0; j < 16; ++j) q4.qs[j] = (uint8_t)(j | ((15 - j) << 4));
  float out[32];
  ref::convert(&q4, DType::Q4_0, out, DType::F32, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT(out[j] == (float)(j - 8), "q4_0 low nibble %d: %g", j, out[j]);
    EXPECT(out[j + 16] == (float)(7 - j), "q4_0 high nibble %d: %g", j, out[j + 16]);
  }
  BlockQ8_0 q8;
  q8.d = f32_to_f16(0.5f);
  for (int j = 0; j < 32; ++j) q8.qs[j] = (int8_t)(j * 8 - 128);
  ref::convert(&q8, DType::Q8_0, out, DType::F32, 32);
  for (int j = 0; j < 32; ++j) EXPECT(out[j] == 0.5f * (j * 8 - 128), "q8_0 %d: %g", j, out[j]);

  // q4_0 quantisation: max magnitude value -2 -> d = 0.25, -2 maps to nibble 0.
  float x[32];
  for (int j = 0; j < 32; ++j) x[j] = 0.f;
  x[3] = -2.f;
  x[20] = 1.f;
  ref::convert(x, DType::F32, &q4, DType::Q4_0, 32);
  EXPECT(f16_to_f32(q4.d) == 0.25f, "q4_0 d %g", f16_to_f32(q4.d));
  EXPECT((q4.qs[3] & 0xF) == 0, "q4_0 q[3] %d", q4.qs[3] & 0xF);
  // d = max / -8 = 0.25, id = 4: x = 1 -> 1*4 + 8.5 = 12.5 -> 12 -> (12-8)*0.25 = 1;
  // x = 0 -> 8 -> 0.
  EXPECT((q4.qs[4] >> 4) == 12, "q4_0 q[20] %d", q4.qs[4] >> 4);
  EXPECT((q4.qs[0] & 0xF) == 8, "q4_0 q[0] %d", q4.qs[0] & 0xF);
  ref::convert(&q4, DType::Q4_0, out, DType::F32, 32);
  EXPECT(out[3] == -2.f && out[20] == 1.f && out[0] == 0.f, "q4_0 roundtrip: %g %g %g", out[3],
         out[20], out[0]);
  // Positive max: x = 5 -> d = -0.625, 5 maps to nibble 0 and back to 5.
  x[3] = 5.f;
  ref::convert(x, DType::F32, &q4, DType::Q4_0, 32);
  ref::convert(&q4, DType::Q4_0, out, DType::F32, 32);
  EXPECT(f16_to_f32(q4.d) == -0.625f && (q4.qs[3] & 0xF) == 0 && out[3] == 5.f,
         "q4_0 positive max: d %g q %d out %g", f16_to_f32(q4.d), q4.qs[3] & 0xF, out[3]);

  // softmax of [0, ln 3] = [1/4, 3/4].
  const float sx[2] = {0.f, (float)std::log(3.0)};
  float sy[2];
  ref::softmax(sx, sy, 1, 2);
  EXPECT(std::fabs(sy[0] - 0.25f) < 1e-6f && std::fabs(sy[1] - 0.75f) < 1e-6f, "softmax %g %g",
         sy[0], sy[1]);

  // rope, normal mode: head_dim 4, n_rot 4, base 100, pos 2, freq_scale 0.5:
  // pair (x0,x1) angle 1, pair (x2,x3) angle 1 * 100^(-1/2) = 0.1.
  float r[4] = {1.f, 0.f, 0.f, 1.f};
  const int32_t pos = 2;
  RopeParams p;
  p.n_rot = 4;
  p.theta_base = 100.f;
  p.freq_scale = 0.5f;
  p.mode = RopeMode::Normal;
  ref::rope(r, &pos, 1, 1, 4, p);
  EXPECT(std::fabs(r[0] - std::cos(1.0)) < 1e-6 && std::fabs(r[1] - std::sin(1.0)) < 1e-6 &&
             std::fabs(r[2] + std::sin(0.1)) < 1e-6 && std::fabs(r[3] - std::cos(0.1)) < 1e-6,
         "rope normal %g %g %g %g", r[0], r[1], r[2], r[3]);
  // NeoX: pairs (x0,x2) angle 1 and (x1,x3) angle 0.1.
  float r2[4] = {1.f, 0.f, 0.f, 1.f};
  p.mode = RopeMode::NeoX;
  ref::rope(r2, &pos, 1, 1, 4, p);
  EXPECT(std::fabs(r2[0] - std::cos(1.0)) < 1e-6 && std::fabs(r2[2] - std::sin(1.0)) < 1e-6 &&
             std::fabs(r2[1] + std::sin(0.1)) < 1e-6 && std::fabs(r2[3] - std::cos(0.1)) < 1e-6,
         "rope neox %g %g %g %g", r2[0], r2[1], r2[2], r2[3]);

  // rmsnorm of [3, 4] (mean square 12.5), weight [1, 2].
  const float nx[2] = {3.f, 4.f}, nw[2] = {1.f, 2.f};
  float ny[2];
  ref::rmsnorm(nx, nw, ny, 1, 2, 0.f);
  EXPECT(std::fabs(ny[0] - 3 / std::sqrt(12.5)) < 1e-6 && std::fabs(ny[1] - 8 / std::sqrt(12.5)) < 1e-6,
         "rmsnorm %g %g", ny[0], ny[1]);
}

// ---------------------------------------------------------------------------------------------
// convert
// ---------------------------------------------------------------------------------------------

std::vector<float> convert_inputs(Rng& r, int64_t n, bool specials) {
  std::vector<float> x = rand_vec(r, n);
  // Mix in other magnitudes.
  for (int64_t i = 0; i < n; ++i) {
    switch (r.range(0, 7)) {
      case 0: x[i] *= 1000.f; break;
      case 1: x[i] *= 1e-5f; break;
      case 2: x[i] *= 1e-7f; break;  // f16 subnormal range
      default: break;
    }
  }
  if (specials) {
    const float inf = std::numeric_limits<float>::infinity();
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const float sp[] = {0.f,     -0.f,      inf,       -inf,      nan,     -nan,
                        65504.f, 65520.f,   -65536.f,  1e-8f,     5.96e-8f, 2.98e-8f,
                        1.f,     1.0009766f, 3.4e38f,  -1.17e-38f, 0.333333f};
    for (size_t i = 0; i < sizeof sp / sizeof sp[0] && (int64_t)i < n; ++i)
      x[(i * 7919) % n] = sp[i];
  }
  return x;
}

TEST_CASE(convert_f16_bf16) {
  Rng r(11);
  for (const int64_t n : {1, 2, 7, 15, 16, 17, 33, 1000, 4099}) {
    const std::vector<float> x = convert_inputs(r, n, n >= 17);
    for (const DType dt : {DType::F16, DType::BF16}) {
      std::vector<uint16_t> want(n + 1), back_want(n + 1);
      ref::convert(x.data(), DType::F32, want.data(), dt, n);
      for_each_backend([&](const std::string& be, ThreadPool& pool) {
        std::vector<uint16_t> got(n + 1, 0xAAAA);
        cpu::convert(pool, x.data(), DType::F32, got.data(), dt, n);
        int64_t bad = -1;
        for (int64_t i = 0; i < n && bad < 0; ++i)
          if (got[i] != want[i]) bad = i;
        EXPECT(bad < 0, "%s f32->%s n=%lld: element %lld of %g: got 0x%04x want 0x%04x",
               be.c_str(), dtype_info(dt).name, (long long)n, (long long)bad,
               bad >= 0 ? x[bad] : 0.0, bad >= 0 ? got[bad] : 0, bad >= 0 ? want[bad] : 0);
        // And back to f32: exact (compare bit patterns, NaN included).
        std::vector<float> f(n + 1, 7.f), fr(n + 1, 9.f);
        cpu::convert(pool, want.data(), dt, f.data(), DType::F32, n);
        ref::convert(want.data(), dt, fr.data(), DType::F32, n);
        EXPECT(std::memcmp(f.data(), fr.data(), n * 4) == 0, "%s %s->f32 n=%lld not bit-exact",
               be.c_str(), dtype_info(dt).name, (long long)n);
      });
    }
  }
  // Every half and every bfloat to f32, bit-exact against the scalar helpers.
  std::vector<uint16_t> all(65536);
  for (int i = 0; i < 65536; ++i) all[i] = (uint16_t)i;
  for (const DType dt : {DType::F16, DType::BF16}) {
    std::vector<float> want(65536);
    ref::convert(all.data(), dt, want.data(), DType::F32, 65536);
    for (int i = 0; i < 65536; i += 4099) {
      const float h = dt == DType::F16 ? f16_to_f32((uint16_t)i) : bf16_to_f32((uint16_t)i);
      EXPECT(std::memcmp(&h, &want[i], 4) == 0, "ref %s->f32 of 0x%04x", dtype_info(dt).name, i);
    }
    for_each_backend([&](const std::string& be, ThreadPool& pool) {
      std::vector<float> got(65536);
      cpu::convert(pool, all.data(), dt, got.data(), DType::F32, 65536);
      // Bit-exact, except that a NaN only has to stay a NaN of the same sign (hardware
      // conversions such as F16C's quieten signalling NaNs, changing the payload bit).
      int bad = -1;
      for (int i = 0; i < 65536 && bad < 0; ++i) {
        if (std::isnan(want[i]))
          bad = std::isnan(got[i]) && std::signbit(got[i]) == std::signbit(want[i]) ? -1 : i;
        else if (std::memcmp(&got[i], &want[i], 4) != 0)
          bad = i;
      }
      EXPECT(bad < 0, "%s all %s -> f32: 0x%04x gives %g, want %g", be.c_str(),
             dtype_info(dt).name, bad, bad >= 0 ? got[bad] : 0.0, bad >= 0 ? want[bad] : 0.0);
    });
  }
  // f32 -> f32 is a copy.
  const std::vector<float> x = rand_vec(r, 37);
  for_each_backend([&](const std::string& be, ThreadPool& pool) {
    std::vector<float> y(37);
    cpu::convert(pool, x.data(), DType::F32, y.data(), DType::F32, 37);
    EXPECT(std::memcmp(x.data(), y.data(), 37 * 4) == 0, "%s f32->f32 copy", be.c_str());
  });
}

// Inputs for quantisation: random blocks, plus all-zero, one-outlier, negative-max and
// constant blocks.
std::vector<float> quant_inputs(Rng& r, int64_t n) {
  std::vector<float> x = rand_vec(r, n);
  for (int64_t b = 0; b < n / 32; ++b) {
    float* xb = x.data() + b * 32;
    switch (b % 7) {
      case 1: std::fill(xb, xb + 32, 0.f); break;
      case 2: xb[r.range(0, 31)] = -3.f; break;
      case 3: xb[r.range(0, 31)] = 5.f; break;
      case 4: std::fill(xb, xb + 32, -0.75f); break;
      case 5:
        for (int j = 0; j < 32; ++j) xb[j] *= 100.f;
        break;
      default: break;
    }
  }
  return x;
}

TEST_CASE(convert_quant) {
  Rng r(12);
  for (const DType dt : {DType::Q8_0, DType::Q4_0}) {
    for (const int64_t n : {32, 64, 96, 32 * 37, 32 * 128}) {
      const std::vector<float> x = quant_inputs(r, n);
      const int64_t bytes = dtype_bytes(dt, n);
      std::vector<uint8_t> want(bytes);
      ref::convert(x.data(), DType::F32, want.data(), dt, n);
      std::vector<float> deq_want(n);
      ref::convert(want.data(), dt, deq_want.data(), DType::F32, n);
      // The reference quantisation is close to the input: one step (d) for q4_0 (the clamp at
      // 15 costs a full step), half a step for q8_0.
      for (int64_t b = 0; b < n / 32; ++b) {
        const uint16_t dh = dt == DType::Q8_0 ? reinterpret_cast<BlockQ8_0*>(want.data())[b].d
                                              : reinterpret_cast<BlockQ4_0*>(want.data())[b].d;
        const double d = std::fabs(f16_to_f32(dh));
        double amax = 0;
        for (int j = 0; j < 32; ++j) amax = std::max(amax, (double)std::fabs(x[b * 32 + j]));
        const double bound = (dt == DType::Q8_0 ? 0.5 : 1.0) * d * 1.01 + amax * 2e-3;
        for (int j = 0; j < 32; ++j) {
          const double e = std::fabs(deq_want[b * 32 + j] - x[b * 32 + j]);
          EXPECT(e <= bound, "ref %s block %lld elem %d: x %g deq %g (d %g)",
                 dtype_info(dt).name, (long long)b, j, x[b * 32 + j], deq_want[b * 32 + j], d);
        }
      }
      for_each_backend([&](const std::string& be, ThreadPool& pool) {
        std::vector<uint8_t> got(bytes, 0xCD);
        cpu::convert(pool, x.data(), DType::F32, got.data(), dt, n);
        std::vector<float> deq(n);
        ref::convert(got.data(), dt, deq.data(), DType::F32, n);
        int64_t mismatched = 0;
        for (int64_t b = 0; b < n / 32; ++b) {
          const uint16_t dh = dt == DType::Q8_0 ? reinterpret_cast<BlockQ8_0*>(want.data())[b].d
                                                : reinterpret_cast<BlockQ4_0*>(want.data())[b].d;
          const double step = std::fabs(f16_to_f32(dh)) * 1.01 + 1e-30;
          for (int j = 0; j < 32; ++j) {
            const int64_t i = b * 32 + j;
            if (deq[i] != deq_want[i]) ++mismatched;
            EXPECT(std::fabs(deq[i] - deq_want[i]) <= step,
                   "%s f32->%s n=%lld block %lld elem %d: x %g dequantised cpu %g ref %g",
                   be.c_str(), dtype_info(dt).name, (long long)n, (long long)b, j, x[i], deq[i],
                   deq_want[i]);
          }
        }
        // Rounding ties may differ in rare elements; anything more is a different algorithm.
        EXPECT(mismatched * 1000 <= n, "%s f32->%s n=%lld: %lld of %lld dequantised values differ",
               be.c_str(), dtype_info(dt).name, (long long)n, (long long)mismatched,
               (long long)n);
        // Dequantisation is exact arithmetic: bit-exact.
        std::vector<float> d2(n, 3.f);
        cpu::convert(pool, want.data(), dt, d2.data(), DType::F32, n);
        int64_t bad = -1;
        for (int64_t i = 0; i < n && bad < 0; ++i)
          if (std::memcmp(&d2[i], &deq_want[i], 4) != 0) bad = i;
        EXPECT(bad < 0, "%s %s->f32 n=%lld element %lld: got %g want %g", be.c_str(),
               dtype_info(dt).name, (long long)n, (long long)bad, bad >= 0 ? d2[bad] : 0.0,
               bad >= 0 ? deq_want[bad] : 0.0);
      });
    }
    // Random block bytes (every nibble / int8 value, random finite scales) dequantise exactly.
    const int64_t nb = 64, n = nb * 32;
    std::vector<uint8_t> raw(dtype_bytes(dt, n));
    for (auto& c : raw) c = (uint8_t)r.next();
    for (int64_t b = 0; b < nb; ++b) {
      uint16_t d = f32_to_f16(r.uni(-2.f, 2.f) * (b % 3 == 0 ? 1e-4f : 1.f));
      std::memcpy(raw.data() + b * dtype_info(dt).block_bytes, &d, 2);
    }
    std::vector<float> want(n);
    ref::convert(raw.data(), dt, want.data(), DType::F32, n);
    for_each_backend([&](const std::string& be, ThreadPool& pool) {
      std::vector<float> got(n, 5.f);
      cpu::convert(pool, raw.data(), dt, got.data(), DType::F32, n);
      int64_t bad = -1;
      for (int64_t i = 0; i < n && bad < 0; ++i)
        if (std::memcmp(&got[i], &want[i], 4) != 0) bad = i;
      EXPECT(bad < 0, "%s random %s blocks -> f32: element %lld got %g want %g", be.c_str(),
             dtype_info(dt).name, (long long)bad, bad >= 0 ? got[bad] : 0.0,
             bad >= 0 ? want[bad] : 0.0);
    });
  }
}

// ---------------------------------------------------------------------------------------------
// matmul
// ---------------------------------------------------------------------------------------------

void check_matmul_case(DType dt, int64_t m, int64_t n, int64_t k, Rng& r) {
  const std::vector<float> x = rand_vec(r, m * k);
  const std::vector<float> wf = rand_vec(r, n * k);
  std::vector<uint8_t> w((size_t)dtype_bytes(dt, n * k) + 1);
  ref::convert(wf.data(), DType::F32, w.data(), dt, n * k);
  std::vector<float> wd(n * k);  // the weights as stored, dequantised
  ref::convert(w.data(), dt, wd.data(), DType::F32, n * k);
  std::vector<float> want = nan_vec(m * n);
  ref::matmul(x.data(), w.data(), dt, want.data(), m, n, k);
  // Float-level bound: error relative to sum_l |x_il w_jl| (the condition of each dot product).
  std::vector<double> scale(m * n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0.0;
      for (int64_t l = 0; l < k; ++l) s += std::fabs((double)x[i * k + l] * wd[j * k + l]);
      scale[i * n + j] = s;
    }
  const std::string key = std::string("matmul_") + dtype_info(dt).name;
  for_each_backend([&](const std::string& be, ThreadPool& pool) {
    std::vector<float> y = nan_vec(m * n);
    cpu::matmul(pool, x.data(), w.data(), dt, y.data(), m, n, k);
    EXPECT_CLOSE(strf("%s matmul %s m=%lld n=%lld k=%lld", be.c_str(), dtype_info(dt).name,
                      (long long)m, (long long)n, (long long)k),
                 key, y.data(), want.data(), m * n, 5e-6, [&](int64_t i) { return scale[i]; });
  });
}

void matmul_sweep(DType dt, uint64_t seed) {
  Rng r(seed);
  std::vector<int64_t> ks = {32, 64, 96, 288};
  const bool plain = dt == DType::F32 || dt == DType::F16 || dt == DType::BF16;
  if (plain) ks.insert(ks.end(), {1, 5, 67});
  for (const int64_t m : {1, 2, 3, 5, 17, 64})
    for (const int64_t n : {1, 7, 33, 128})
      for (const int64_t k : ks) check_matmul_case(dt, m, n, k, r);
  // Larger shapes crossing the tile sizes.
  check_matmul_case(dt, 65, 257, 512, r);
  check_matmul_case(dt, 130, 70, plain ? 333 : 320, r);
}

// matmul_multi: several weights in one loop; with quantize_x, q8_0/q4_0 weights see x rounded to
// q8_0 (integer dot products, llama.cpp's decode path): the reference is ref::matmul of that x.
TEST_CASE(matmul_multi_quantized_x) {
  Rng r(28);
  for (const int64_t m : {1, 2, 3, 5})
    for (const int64_t k : {32, 96, 288}) {
      const std::vector<float> x = rand_vec(r, m * k);
      std::vector<BlockQ8_0> xq(m * k / 32);
      ref::convert(x.data(), DType::F32, xq.data(), DType::Q8_0, m * k);
      std::vector<float> xr(m * k);  // x as the integer path sees it
      ref::convert(xq.data(), DType::Q8_0, xr.data(), DType::F32, m * k);
      const DType types[3] = {DType::Q8_0, DType::Q4_0, DType::F16};
      const int64_t ns[3] = {33, 7, 20};
      std::vector<std::vector<uint8_t>> w(3);
      std::vector<std::vector<float>> want(3);
      for (int c = 0; c < 3; c++) {
        const std::vector<float> wf = rand_vec(r, ns[c] * k);
        w[c].resize((size_t)dtype_bytes(types[c], ns[c] * k));
        ref::convert(wf.data(), DType::F32, w[c].data(), types[c], ns[c] * k);
        want[c].resize(m * ns[c]);
        // m > 3 rows take the GEMM path, which keeps x in f32; f16 weights always do.
        const bool q = m <= 3 && types[c] != DType::F16;
        ref::matmul(q ? xr.data() : x.data(), w[c].data(), types[c], want[c].data(), m, ns[c], k);
      }
      for_each_backend([&](const std::string& be, ThreadPool& pool) {
        std::vector<std::vector<float>> y(3);
        cpu::MatmulJob jobs[3];
        for (int c = 0; c < 3; c++) {
          y[c] = nan_vec(m * ns[c]);
          jobs[c] = {w[c].data(), types[c], y[c].data(), ns[c]};
        }
        cpu::matmul_multi(pool, x.data(), m, k, jobs, 3, /*quantize_x=*/true);
        for (int c = 0; c < 3; c++)
          EXPECT_CLOSE(strf("%s matmul_multi %s m=%lld k=%lld", be.c_str(), dtype_info(types[c]).name, (long long)m,
                            (long long)k),
                       "matmul_multi", y[c].data(), want[c].data(), m * ns[c], 2e-5, [&](int64_t) { return (double)k; });
      });
    }
}

TEST_CASE(matmul_f32) { matmul_sweep(DType::F32, 21); }
TEST_CASE(matmul_f16) { matmul_sweep(DType::F16, 22); }
TEST_CASE(matmul_bf16) { matmul_sweep(DType::BF16, 23); }
TEST_CASE(matmul_q8_0) { matmul_sweep(DType::Q8_0, 24); }
TEST_CASE(matmul_q4_0) { matmul_sweep(DType::Q4_0, 25); }

// ---------------------------------------------------------------------------------------------
// k-quants (q4_k, q6_k): decode only. There is no k-quant encoder, so weights are random block
// bytes, plus hand-written blocks whose values are worked out by hand below (a bit-layout error
// shared by ref and the kernels would pass the cpu-vs-ref sweeps but not these).
// ---------------------------------------------------------------------------------------------

// Random block bytes; d (and dmin for q4_k) random small positive finite halves, a third of the
// blocks with tiny ones (down to f16 subnormals).
std::vector<uint8_t> random_kquant(Rng& r, DType dt, int64_t n) {
  const int64_t bb = dtype_info(dt).block_bytes;
  std::vector<uint8_t> w((size_t)dtype_bytes(dt, n) + 1);
  for (auto& c : w) c = (uint8_t)r.next();
  for (int64_t b = 0; b < n / 256; ++b) {
    uint8_t* p = w.data() + b * bb;
    const int halves = dt == DType::Q4_K ? 2 : 1;
    for (int t = 0; t < halves; ++t) {
      const float mag = b % 3 == 0 ? 1e-6f : 2e-3f;
      const uint16_t h = f32_to_f16(r.uni(0.f, mag));
      std::memcpy(dt == DType::Q4_K ? p + 2 * t : p + offsetof(BlockQ6_K, d), &h, 2);
    }
  }
  return w;
}

// |w| bound used for error scales: for q4_k the kernels compute d*sc*sum(x q) - dmin*m*sum(x),
// whose rounding is relative to |d sc q| + |dmin m|: the same blocks with d -> |d| and
// dmin -> -|dmin| dequantise to exactly that. For q6_k it is |w|.
std::vector<float> kquant_abs_weights(const std::vector<uint8_t>& w, DType dt, int64_t n) {
  std::vector<uint8_t> a = w;
  std::vector<float> out(n);
  if (dt == DType::Q4_K)
    for (int64_t b = 0; b < n / 256; ++b) {
      BlockQ4_K* blk = reinterpret_cast<BlockQ4_K*>(a.data()) + b;
      blk->d &= 0x7fff;
      blk->dmin |= 0x8000;
    }
  ref::convert(a.data(), dt, out.data(), DType::F32, n);
  for (auto& v : out) v = std::fabs(v);
  return out;
}

// The hand-written blocks (also fed to ggml's own dequantize_row_q4_K / _q6_K from the
// libggml-base.so that node-llama-cpp ships, which gave exactly the values and checksums below).
//
// q4_k: d = 0.5, dmin = 0.25; sub-block scales sc = {1, 2, 3, 4, 17, 33, 50, 63} and mins
// m = {5, 6, 7, 8, 36, 50, 20, 10} (for j >= 4 the top 2 bits and the low 4 bits of sc[j] and
// m[j] all differ, so mixing up their sources shows), packed as
//   scales[0..3]  = sc[0..3] | (sc[4..7] >> 4) << 6 = 0x41 0x82 0xC3 0xC4
//   scales[4..7]  = m[0..3]  | (m[4..7] >> 4) << 6  = 0x85 0xC6 0x47 0x08
//   scales[8..11] = (sc[4..7] & 15) | (m[4..7] & 15) << 4 = 0x41 0x21 0x42 0xAF
// qs[i] = (i % 16) | (15 - i % 16) << 4. Element e lies in sub-block j = e / 32; with
// l = e % 32, its q is l % 16 in the low-nibble sub-blocks (j even) and 15 - l % 16 in the
// high-nibble ones (j odd); value = 0.5 sc[j] q - 0.25 m[j].
BlockQ4_K hand_q4_k() {
  BlockQ4_K b;
  b.d = 0x3800;
  b.dmin = 0x3400;
  const uint8_t s[12] = {0x41, 0x82, 0xC3, 0xC4, 0x85, 0xC6, 0x47, 0x08, 0x41, 0x21, 0x42, 0xAF};
  std::memcpy(b.scales, s, 12);
  for (int i = 0; i < 128; ++i) b.qs[i] = (uint8_t)((i % 16) | ((15 - i % 16) << 4));
  return b;
}
// q6_k: d = 0.125, scales = {1, -2, 3, -4, 5, -6, 7, -8, 9, -10, 11, -12, 13, -14, 127, -128},
// ql[i] = i, qh[i] = 0xE4 (2-bit fields 0,1,2,3 from bit 0 up) for even i, 0x1B (3,2,1,0) for odd
// i. Element e: half h = e / 128, group g = (e % 128) / 32, l = e % 32; ql byte
// i = 64 h + 32 (g & 1) + l gives the low 4 bits (i % 16 for g < 2, i / 16 for g >= 2), field g
// of qh[32 h + l] the top 2 (g for even l, 3 - g for odd l); value = 0.125 scales[e / 16] (q - 32).
BlockQ6_K hand_q6_k() {
  BlockQ6_K b;
  b.d = 0x3000;
  const int8_t s[16] = {1, -2, 3, -4, 5, -6, 7, -8, 9, -10, 11, -12, 13, -14, 127, -128};
  std::memcpy(b.scales, s, 16);
  for (int i = 0; i < 128; ++i) b.ql[i] = (uint8_t)i;
  for (int i = 0; i < 64; ++i) b.qh[i] = i % 2 == 0 ? 0xE4 : 0x1B;
  return b;
}

struct HandValue {
  int e;
  float v;
};
// Worked by hand, e.g. q4_k e = 170: j = 5, l = 10, odd j -> q = 15 - 10 = 5,
// 0.5 * 33 * 5 - 0.25 * 50 = 70; q6_k e = 235: h = 1, g = 3, l = 11 (odd), i = 107 -> low
// bits 107 / 16 = 6, top bits 3 - 3 = 0, q = 6, 0.125 * scales[14] * (6 - 32) = -412.75.
const HandValue kHandQ4K[] = {{0, -1.25f},  {1, -0.75f},   {31, 6.25f},   {32, 13.5f},
                              {63, -1.5f},  {64, -1.75f},  {100, 20.f},   {130, 8.f},
                              {170, 70.f},  {200, 195.f},  {240, 470.f},  {255, -2.5f}};
const HandValue kHandQ6K[] = {{0, -4.f},    {1, 2.125f},   {17, -4.25f},   {40, -3.f},
                              {71, -10.f},  {127, 29.f},   {130, -33.75f}, {200, 6.5f},
                              {235, -412.75f}, {250, -368.f}, {255, 400.f}};
// sum over e of (e + 1) * value(e), from ggml's dequantisation of the same blocks.
const double kHandQ4KChecksum = 3969448.0, kHandQ6KChecksum = -54032.0;

// The full hand block, element by element, from the layout description above.
float hand_q4_k_value(int e) {
  const int sc[8] = {1, 2, 3, 4, 17, 33, 50, 63}, m[8] = {5, 6, 7, 8, 36, 50, 20, 10};
  const int j = e / 32, l = e % 32;
  const int q = j % 2 == 0 ? l % 16 : 15 - l % 16;
  return 0.5f * (float)(sc[j] * q) - 0.25f * (float)m[j];
}
float hand_q6_k_value(int e) {
  const int s[16] = {1, -2, 3, -4, 5, -6, 7, -8, 9, -10, 11, -12, 13, -14, 127, -128};
  const int h = e / 128, g = (e % 128) / 32, l = e % 32;
  const int i = 64 * h + 32 * (g & 1) + l;
  const int lo = g < 2 ? i % 16 : i / 16;
  const int hi = l % 2 == 0 ? g : 3 - g;
  return 0.125f * (float)(s[e / 16] * ((lo | hi << 4) - 32));
}

TEST_CASE(kquant_hand_blocks) {
  const BlockQ4_K b4 = hand_q4_k();
  const BlockQ6_K b6 = hand_q6_k();
  for (const DType dt : {DType::Q4_K, DType::Q6_K}) {
    const bool is4 = dt == DType::Q4_K;
    const void* blk = is4 ? (const void*)&b4 : (const void*)&b6;
    const char* nm = dtype_info(dt).name;
    float want[256];
    double sum = 0;
    for (int e = 0; e < 256; ++e) {
      want[e] = is4 ? hand_q4_k_value(e) : hand_q6_k_value(e);
      sum += (e + 1) * (double)want[e];
    }
    // The layout description agrees with the hand-worked spot values and ggml's checksum.
    for (const HandValue& hv : is4 ? std::vector<HandValue>(std::begin(kHandQ4K), std::end(kHandQ4K))
                                   : std::vector<HandValue>(std::begin(kHandQ6K), std::end(kHandQ6K)))
      EXPECT(want[hv.e] == hv.v, "%s hand table [%d] = %g, worked by hand %g", nm, hv.e, want[hv.e], hv.v);
    EXPECT(sum == (is4 ? kHandQ4KChecksum : kHandQ6KChecksum), "%s hand checksum %.17g", nm, sum);
    float got[256];
    ref::convert(blk, dt, got, DType::F32, 256);
    for (int e = 0; e < 256; ++e) EXPECT(got[e] == want[e], "ref %s [%d] = %g, want %g", nm, e, got[e], want[e]);
    // x = 1..256 (exact in float): y = the checksum.
    float x[256], y_ref;
    for (int e = 0; e < 256; ++e) x[e] = (float)(e + 1);
    ref::matmul(x, blk, dt, &y_ref, 1, 1, 256);
    EXPECT(y_ref == (float)sum, "ref matmul %s hand block: %g want %g", nm, y_ref, sum);
    for_each_backend([&](const std::string& be, ThreadPool& pool) {
      float c[256];
      cpu::convert(pool, blk, dt, c, DType::F32, 256);
      int bad = -1;
      for (int e = 0; e < 256 && bad < 0; ++e)
        if (c[e] != want[e]) bad = e;
      EXPECT(bad < 0, "%s %s hand block element %d: %g want %g", be.c_str(), nm, bad,
             bad >= 0 ? c[bad] : 0.0, bad >= 0 ? want[bad] : 0.0);
      // Gemv path (m = 1) and panel path (m = 4, rows scaled by 1, -1, 0.5, 2: exact in float).
      const float rs[4] = {1.f, -1.f, 0.5f, 2.f};
      std::vector<float> x4(4 * 256), y(4, std::numeric_limits<float>::quiet_NaN());
      for (int i = 0; i < 4; ++i)
        for (int e = 0; e < 256; ++e) x4[i * 256 + e] = rs[i] * x[e];
      cpu::matmul(pool, x, blk, dt, y.data(), 1, 1, 256);
      EXPECT(std::fabs(y[0] - sum) <= 1e-6 * std::fabs(sum), "%s %s hand block m=1: %.9g want %.9g",
             be.c_str(), nm, y[0], sum);
      cpu::matmul(pool, x4.data(), blk, dt, y.data(), 4, 1, 256);
      for (int i = 0; i < 4; ++i)
        EXPECT(std::fabs(y[i] - rs[i] * sum) <= 1e-6 * std::fabs(sum), "%s %s hand block m=4 row %d: %.9g want %.9g",
               be.c_str(), nm, i, y[i], rs[i] * sum);
    });
  }
}

TEST_CASE(convert_kquant) {
  Rng r(13);
  for (const DType dt : {DType::Q4_K, DType::Q6_K}) {
    for (const int64_t n : {256, 512, 256 * 37, 256 * 130}) {
      const std::vector<uint8_t> w = random_kquant(r, dt, n);
      std::vector<float> want(n, 1.f);
      ref::convert(w.data(), dt, want.data(), DType::F32, n);
      // Random nibbles / 6-bit values: every sub-block has a nonzero scale somewhere, so the
      // outputs must not all be equal.
      EXPECT(*std::max_element(want.begin(), want.end()) > *std::min_element(want.begin(), want.end()),
             "ref %s n=%lld: constant output", dtype_info(dt).name, (long long)n);
      for_each_backend([&](const std::string& be, ThreadPool& pool) {
        std::vector<float> got(n + 1, 5.f);
        cpu::convert(pool, w.data(), dt, got.data(), DType::F32, n);
        // Dequantisation is exact up to the single rounding of the q4_k subtraction: bit-exact.
        int64_t bad = -1;
        for (int64_t i = 0; i < n && bad < 0; ++i)
          if (std::memcmp(&got[i], &want[i], 4) != 0) bad = i;
        EXPECT(bad < 0, "%s random %s blocks n=%lld -> f32: element %lld got %g want %g", be.c_str(),
               dtype_info(dt).name, (long long)n, (long long)bad, bad >= 0 ? got[bad] : 0.0,
               bad >= 0 ? want[bad] : 0.0);
        EXPECT(got[n] == 5.f, "%s %s n=%lld wrote past the end", be.c_str(), dtype_info(dt).name,
               (long long)n);
      });
    }
  }
}

// f32 -> q4_k / q6_k (tessera/kquant_encode.h): cpu and ref give the same bytes, decoding is within
// half a step (plus the rounding-up of scales) of the input, including constant, all-negative,
// all-zero and huge-range super-blocks.
TEST_CASE(encode_kquant) {
  Rng r(14);
  const int64_t n = 256 * 9;
  std::vector<float> x = rand_vec(r, n, -2.f, 2.f);
  std::fill(x.begin(), x.begin() + 256, 0.75f);                            // constant
  for (int64_t i = 256; i < 512; ++i) x[i] = -std::fabs(x[i]) - 0.1f;    // all negative
  std::fill(x.begin() + 512, x.begin() + 768, 0.f);                        // zeros
  for (int64_t i = 768; i < 1024; ++i) x[i] *= (i % 32 == 0) ? 1000.f : 1e-3f;  // one big value per 32
  for (const DType dt : {DType::Q4_K, DType::Q6_K}) {
    std::vector<uint8_t> want((size_t)dtype_bytes(dt, n));
    ref::convert(x.data(), DType::F32, want.data(), dt, n);
    std::vector<float> back(n);
    ref::convert(want.data(), dt, back.data(), DType::F32, n);
    const int group = dt == DType::Q4_K ? 32 : 16;
    for (int64_t g = 0; g < n / group; ++g) {
      float lo = 0.f, hi = -INFINITY, amax = 0.f;
      for (int l = 0; l < group; ++l) {
        const float v = x[g * group + l];
        lo = std::min(lo, v), hi = std::max(hi, v), amax = std::max(amax, std::fabs(v));
      }
      // the super-block's largest group step bounds the rounding-up of this group's scale
      float big = 0.f;
      const int64_t sb = g * group / 256;
      for (int64_t h = sb * 256 / group; h < (sb + 1) * 256 / group; ++h) {
        float l2 = 0.f, h2 = -INFINITY, a2 = 0.f;
        for (int l = 0; l < group; ++l) {
          const float v = x[h * group + l];
          l2 = std::min(l2, v), h2 = std::max(h2, v), a2 = std::max(a2, std::fabs(v));
        }
        big = std::max(big, dt == DType::Q4_K ? (h2 - l2) / 15.f : a2 / 31.f);
      }
      const float step = dt == DType::Q4_K ? (hi - lo) / 15.f : amax / 31.f;
      const float tol = 0.5f * step + (dt == DType::Q4_K ? 8.f : 1.f) * big / 63.f + 1e-6f;
      for (int l = 0; l < group; ++l) {
        const int64_t i = g * group + l;
        EXPECT(std::fabs(back[i] - x[i]) <= tol, "%s element %lld: %g decodes to %g (tol %g)", dtype_info(dt).name,
               (long long)i, x[i], back[i], tol);
      }
    }
    for_each_backend([&](const std::string& be, ThreadPool& pool) {
      std::vector<uint8_t> got(want.size());
      cpu::convert(pool, x.data(), DType::F32, got.data(), dt, n);
      EXPECT(got == want, "%s f32 -> %s differs from the reference encoder", be.c_str(), dtype_info(dt).name);
    });
  }
}

void check_matmul_kquant_case(DType dt, int64_t m, int64_t n, int64_t k, Rng& r) {
  const std::vector<float> x = rand_vec(r, m * k);
  const std::vector<uint8_t> w = random_kquant(r, dt, n * k);
  const std::vector<float> wa = kquant_abs_weights(w, dt, n * k);
  std::vector<float> want = nan_vec(m * n);
  ref::matmul(x.data(), w.data(), dt, want.data(), m, n, k);
  std::vector<double> scale(m * n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0.0;
      for (int64_t l = 0; l < k; ++l) s += std::fabs((double)x[i * k + l]) * wa[j * k + l];
      scale[i * n + j] = s;
    }
  const std::string key = std::string("matmul_") + dtype_info(dt).name;
  for_each_backend([&](const std::string& be, ThreadPool& pool) {
    std::vector<float> y = nan_vec(m * n);
    cpu::matmul(pool, x.data(), w.data(), dt, y.data(), m, n, k);
    EXPECT_CLOSE(strf("%s matmul %s m=%lld n=%lld k=%lld", be.c_str(), dtype_info(dt).name,
                      (long long)m, (long long)n, (long long)k),
                 key, y.data(), want.data(), m * n, 5e-6, [&](int64_t i) { return scale[i]; });
  });
}

void matmul_kquant_sweep(DType dt, uint64_t seed) {
  Rng r(seed);
  for (const int64_t m : {1, 3, 5, 17, 64})
    for (const int64_t n : {1, 7, 33, 65})
      for (const int64_t k : {256, 512, 768}) check_matmul_kquant_case(dt, m, n, k, r);
  check_matmul_kquant_case(dt, 65, 131, 1024, r);  // crossing the panel and thread splits
}

TEST_CASE(matmul_q4_k) { matmul_kquant_sweep(DType::Q4_K, 26); }
TEST_CASE(matmul_q6_k) { matmul_kquant_sweep(DType::Q6_K, 27); }

// ---------------------------------------------------------------------------------------------
// The packed int8 path (native/cpu/qmatmul.h): VNNI tiles of q8_0 / q4_0 / q4_k / q6_k weights
// times q8_0-rounded activations.
// ---------------------------------------------------------------------------------------------

// Random weights of a packable type: q8_0 / q4_0 from random floats, k-quants from random bytes.
std::vector<uint8_t> random_packable(Rng& r, DType dt, int64_t n) {
  if (dt == DType::Q4_K || dt == DType::Q6_K) return random_kquant(r, dt, n);
  const std::vector<float> f = rand_vec(r, n);
  std::vector<uint8_t> w((size_t)dtype_bytes(dt, n));
  ref::convert(f.data(), DType::F32, w.data(), dt, n);
  return w;
}

std::vector<float> dequant_rows(const cpu::QuantRows& q) {
  std::vector<float> x(q.m * q.k);
  for (int64_t i = 0; i < q.m * q.k; i++) x[i] = q.d[i / 32] * (float)q.q[i];
  return x;
}

TEST_CASE(quantize_rows_exact) {
  Rng r(91);
  for (const int64_t k : {32, 64, 768}) {
    const int64_t m = 5;
    std::vector<float> x = rand_vec(r, m * k, -3.f, 3.f);
    // Block 0 of row 0 hits exact rounding ties: max 127 gives d = 1, and halves must round away
    // from zero like roundf; row 1 block 0 is all zero (d = 0).
    for (int j = 0; j < 32; j++) x[j] = j == 0 ? 127.f : (float)(j - 16) + 0.5f;
    for (int j = 0; j < 32; j++) x[k + j] = 0.f;
    cpu::QuantRows want, got;
    cpu::quantize_rows_ref(x.data(), m, k, want);
    for (const int32_t j : {1, 2, 15, 16, 17})
      EXPECT(want.q[j] == (int8_t)std::roundf(x[j]), "ref tie at %d: %d", j, (int)want.q[j]);
    for_each_backend([&](const std::string& be, ThreadPool& pool) {
      cpu::quantize_rows(&pool, x.data(), m, k, got);
      EXPECT(got.q == want.q, "%s k=%lld: codes differ", be.c_str(), (long long)k);
      EXPECT(got.d == want.d && got.s32 == want.s32 && got.s16 == want.s16 && got.ds == want.ds,
             "%s k=%lld: scales or sums differ", be.c_str(), (long long)k);
    });
  }
}

void check_packed_case(DType dt, int64_t m, int64_t n, int64_t k, Rng& r) {
  const std::string name = dtype_info(dt).name;
  const std::vector<float> x = rand_vec(r, m * k);
  const std::vector<uint8_t> w = random_packable(r, dt, n * k);
  std::unique_ptr<cpu::PackedWeight> pw = cpu::pack_weight(w.data(), dt, n, k);
  EXPECT(pw != nullptr, "pack %s n=%lld k=%lld failed", name.c_str(), (long long)n, (long long)k);
  if (!pw) return;
  cpu::QuantRows xq;
  cpu::quantize_rows_ref(x.data(), m, k, xq);
  const std::vector<float> xd = dequant_rows(xq);
  // 1. The layout: the values the packed bytes encode, times the rounded x, equal ref::matmul on
  //    the original rows (exactly for q8_0 / q4_0; k-quants round d*sc and dmin*m to f16).
  std::vector<float> want = nan_vec(m * n), packed_ref = nan_vec(m * n);
  ref::matmul(xd.data(), w.data(), dt, want.data(), m, n, k);
  cpu::packed_matmul_ref(*pw, xq, packed_ref.data(), n);
  std::vector<float> wf(n * k);
  ref::convert(w.data(), dt, wf.data(), DType::F32, n * k);
  std::vector<double> scale(m * n);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double s = 0.0;
      for (int64_t l = 0; l < k; ++l) s += std::fabs((double)xd[i * k + l] * wf[j * k + l]);
      scale[i * n + j] = s + 1e-12;
    }
  const bool kq = dt == DType::Q4_K || dt == DType::Q6_K;
  // k-quant mins make |w| a loose bound for q4_k: allow the f16 rounding of d*sc*q and dmin*m.
  EXPECT_CLOSE(strf("packed layout %s m=%lld n=%lld k=%lld", name.c_str(), (long long)m, (long long)n, (long long)k),
               "packed_layout_" + name, packed_ref.data(), want.data(), m * n, kq ? 2e-3 : 1e-6,
               [&](int64_t i) { return scale[i]; });
  // 2. The kernels, through matmul_multi with the original rows as well (the packed copy wins
  //    while the int8 path is active), next to an unpacked f16 job sharing x.
  if (!cpu::int8_path_supported()) return;
  const std::vector<float> wh = rand_vec(r, 24 * k);
  std::vector<uint16_t> wh16(24 * k);
  ref::convert(wh.data(), DType::F32, wh16.data(), DType::F16, 24 * k);
  std::vector<float> want_h(m * 24);
  ref::matmul(x.data(), wh16.data(), DType::F16, want_h.data(), m, 24, k);
  // Both kernels: VNNI, and AMX for 16+ rows where the CPU has it.
  for (const bool amx : {false, true}) {
    if (amx && !cpu::amx_supported()) continue;
    cpu::set_amx_enabled(amx);
    const std::string kern = amx && m >= 16 ? "amx" : "vnni";
    for (ThreadPool* pool : {g_pool1.get(), g_pool3.get()}) {
      set_active_isa(CpuIsa::Avx512);
      std::vector<float> y = nan_vec(m * n), yh = nan_vec(m * 24);
      const cpu::MatmulJob jobs[2] = {{w.data(), dt, y.data(), n, pw.get()}, {wh16.data(), DType::F16, yh.data(), 24}};
      cpu::matmul_multi(*pool, x.data(), m, k, jobs, 2, /*quantize_x=*/true);
      EXPECT_CLOSE(strf("packed kernel (%s) %s pool %d m=%lld n=%lld k=%lld", kern.c_str(), name.c_str(), pool->size(),
                        (long long)m, (long long)n, (long long)k),
                   "packed_" + kern + "_" + name, y.data(), packed_ref.data(), m * n, 2e-6, [&](int64_t i) { return scale[i]; });
      EXPECT_CLOSE(strf("f16 job beside packed m=%lld k=%lld", (long long)m, (long long)k), "packed_f16_beside", yh.data(),
                   want_h.data(), m * 24, 2e-5, [&](int64_t) { return (double)k; });
    }
  }
  cpu::set_amx_enabled(true);
  // With the int8 path off (AVX2 kernels), the same jobs use the original rows.
  set_active_isa(CpuIsa::Avx2);
  std::vector<float> y2 = nan_vec(m * n);
  const cpu::MatmulJob job{w.data(), dt, y2.data(), n, pw.get()};
  cpu::matmul_multi(*g_pool1, x.data(), m, k, &job, 1, true);
  std::vector<float> want2(m * n);
  ref::matmul((m <= 3 && !kq) ? xd.data() : x.data(), w.data(), dt, want2.data(), m, n, k);
  EXPECT_CLOSE(strf("packed weight, int8 path off, %s m=%lld", name.c_str(), (long long)m), "packed_off_" + name,
               y2.data(), want2.data(), m * n, 2e-5, [&](int64_t) { return (double)k; });
  set_active_isa(best_isa());
}

TEST_CASE(packed_matmul) {
  Rng r(92);
  for (const DType dt : {DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K}) {
    const bool kq = dt == DType::Q4_K || dt == DType::Q6_K;
    const std::vector<int64_t> ks = kq ? std::vector<int64_t>{256, 768} : std::vector<int64_t>{32, 96, 768};
    for (const int64_t m : {1, 2, 3, 4, 7, 8, 9, 20})
      for (const int64_t n : {1, 16, 33})
        for (const int64_t k : ks) check_packed_case(dt, m, n, k, r);
    check_packed_case(dt, 41, 300, 512, r);  // many tiles over several threads, several row blocks
    check_packed_case(dt, 16, 17, 256, r);   // exactly one AMX row block
  }
}

#if defined(__x86_64__) || defined(_M_X64)
TEST_CASE(amx_leaves_thread_tile_state) {
  if (!cpu::amx_supported()) {
    printf("  (skipped: no AMX on this CPU or OS)\n");
    return;
  }
  Rng r(93);
  const int64_t m = 16, n = 32, k = 256;
  const std::vector<float> x = rand_vec(r, m * k);
  const std::vector<uint8_t> w = random_packable(r, DType::Q8_0, n * k);
  std::unique_ptr<cpu::PackedWeight> pw = cpu::pack_weight(w.data(), DType::Q8_0, n, k);
  set_active_isa(CpuIsa::Avx512);
  cpu::set_amx_enabled(true);
  cpu::QuantRows xq;
  cpu::quantize_rows(nullptr, x.data(), m, k, xq);
  std::vector<float> y(m * n), want(m * n);
  EXPECT(cpu::amx_thread_state_kept(*pw, xq, y.data()), "the AMX kernel changed the thread's tile configuration");
  cpu::packed_matmul_ref(*pw, xq, want.data(), n);
  EXPECT_CLOSE("amx under a foreign configuration", "packed_amx_q8_0", y.data(), want.data(), m * n, 2e-6,
               [&](int64_t) { return (double)k * 0.1; });
  set_active_isa(best_isa());
}
#endif

// An exception inside a parallel loop (on a worker or the caller) reaches the caller, stops the
// loop from starting more chunks, and leaves the pool usable.
TEST_CASE(threadpool_exceptions) {
  for (ThreadPool* pool : {g_pool1.get(), g_pool3.get()}) {
    std::atomic<int64_t> ran{0};
    bool caught = false;
    try {
      pool->parallel_for(1000, 1, [&](int64_t b, int64_t e) {
        ran += e - b;
        if (b <= 500 && 500 < e) throw std::runtime_error("chunk 500");
      });
    } catch (const std::runtime_error& e) {
      caught = std::string(e.what()) == "chunk 500";
    }
    EXPECT(caught, "pool %d: the exception did not reach the caller", pool->size());
    EXPECT(ran.load() <= 1000, "pool %d: ran %lld items", pool->size(), (long long)ran.load());
    std::atomic<int64_t> sum{0};
    pool->parallel_for(1000, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; i++) sum += i;
    });
    EXPECT(sum.load() == 999 * 1000 / 2, "pool %d unusable after an exception: sum %lld", pool->size(), (long long)sum.load());
  }
}

// Work-size rule: a loop gets one thread per min_chunk_cost() units of work (at most the pool's
// size and its item count over grain); a small loop runs inline on the caller and wakes nobody,
// a large one is shared by the workers; either way every item runs exactly once.
TEST_CASE(threadpool_work_size) {
  const Cost kMin = ThreadPool::kDefaultMinChunkCost;
  ThreadPool pool(3, kMin);
  EXPECT(pool.threads_for(1000, 1, 1) == 1, "1000 units: %d threads", pool.threads_for(1000, 1, 1));
  EXPECT(pool.threads_for(1000, 1, -1) == 3, "unknown cost: %d threads", pool.threads_for(1000, 1, -1));
  EXPECT(pool.threads_for(1000, 1, 2 * kMin / 1000 + 1) == 2, "two chunks' worth: %d", pool.threads_for(1000, 1, 2 * kMin / 1000 + 1));
  EXPECT(pool.threads_for(1000, 1, kMin) == 3, "1000 chunks' worth: %d", pool.threads_for(1000, 1, kMin));
  EXPECT(pool.threads_for(2, 1, 100 * kMin) == 2, "2 items: %d", pool.threads_for(2, 1, 100 * kMin));
  EXPECT(pool.threads_for(1000, 600, kMin) == 2, "grain 600 of 1000: %d", pool.threads_for(1000, 600, kMin));
  EXPECT(pool.threads_for(1000, 1000, kMin) == 1, "one grain: %d", pool.threads_for(1000, 1000, kMin));
  ThreadPool split(3, 0);
  EXPECT(split.threads_for(1000, 1, 1) == 3, "min_chunk_cost 0 splits by grain alone: %d", split.threads_for(1000, 1, 1));
  ThreadPool one(1, kMin);
  EXPECT(one.threads_for(1000, 1, kMin) == 1, "pool of 1: %d", one.threads_for(1000, 1, kMin));

  // Runs a loop of n items, each sleeping `us` microseconds; returns the distinct threads that ran
  // chunks, after checking that the items summed to the right total.
  auto run = [&](int64_t n, Cost item_cost, int us, const char* what) {
    std::mutex mu;
    std::vector<std::thread::id> ids;
    std::atomic<int64_t> sum{0};
    pool.parallel_for(n, 1, item_cost, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; i++) {
        sum += i;
        if (us > 0) std::this_thread::sleep_for(std::chrono::microseconds(us));
      }
      std::lock_guard<std::mutex> lock(mu);
      if (std::find(ids.begin(), ids.end(), std::this_thread::get_id()) == ids.end()) ids.push_back(std::this_thread::get_id());
    });
    EXPECT(sum.load() == n * (n - 1) / 2, "%s: sum %lld", what, (long long)sum.load());
    return ids;
  };
  for (int rep = 0; rep < 3; rep++) {
    // Large: 64 items of 1 ms; the workers (asleep at first) take chunks while the caller works.
    const std::vector<std::thread::id> large = run(64, kMin, 1000, "large loop");
    EXPECT(large.size() >= 2, "large loop ran on %d thread(s)", (int)large.size());
    // Small: inline on the caller, even with the workers spinning right after a parallel loop.
    const std::vector<std::thread::id> small = run(1000, 1, 0, "small loop");
    EXPECT(small.size() == 1 && small[0] == std::this_thread::get_id(), "small loop ran on %d threads / not the caller",
           (int)small.size());
    // Two chunks' worth: the caller and worker 1 at most, whatever the load.
    const std::vector<std::thread::id> two = run(64, 2 * kMin / 64 + 1, 200, "two-chunk loop");
    EXPECT(two.size() <= 2, "two-chunk loop ran on %d threads", (int)two.size());
    std::this_thread::sleep_for(std::chrono::milliseconds(rep));  // 1 ms: the workers fall asleep
  }
  // Many short loops back to back on a pool that splits them all: workers arrive late, find a loop
  // finished or the next one started, and must claim nothing twice nor from the wrong loop.
  std::vector<std::atomic<int>> hits(97);
  for (int loop = 0; loop < 4000; loop++) {
    const int64_t n = 1 + loop % 97;
    for (int64_t i = 0; i < n; i++) hits[i].store(0, std::memory_order_relaxed);
    split.parallel_for(n, 1, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; i++) hits[i].fetch_add(loop + 1, std::memory_order_relaxed);
    });
    int64_t bad = 0;
    for (int64_t i = 0; i < n; i++) bad += hits[i].load() != loop + 1;
    EXPECT(bad == 0, "loop %d (n %lld): %lld items not run exactly once by this loop", loop, (long long)n, (long long)bad);
    if (bad != 0) break;
  }
}

TEST_CASE(pack_weight_refuses_unrepresentable_scales) {
  // q6_k with d = 65504 (f16 max) and a scale of 127: d*sc does not fit in f16.
  std::vector<BlockQ6_K> w(1);
  std::memset(w.data(), 0, sizeof(BlockQ6_K));
  w[0].d = 0x7bff;
  w[0].scales[3] = 127;
  EXPECT(cpu::pack_weight(w.data(), DType::Q6_K, 1, 256) == nullptr, "q6_k overflow packed");
  w[0].scales[3] = 1;
  EXPECT(cpu::pack_weight(w.data(), DType::Q6_K, 1, 256) != nullptr, "q6_k in range refused");
  EXPECT(cpu::pack_weight(w.data(), DType::F16, 1, 256) == nullptr, "f16 is not packable");
  EXPECT(cpu::pack_weight(w.data(), DType::Q6_K, 1, 255) == nullptr, "k not a multiple of 256 packed");
}

// ---------------------------------------------------------------------------------------------
// rmsnorm, softmax, swiglu
// ---------------------------------------------------------------------------------------------

TEST_CASE(rmsnorm) {
  Rng r(31);
  for (const int64_t rows : {1, 3, 7})
    for (const int64_t n : {1, 3, 17, 31, 33, 127, 4097})
      for (const float eps : {1e-5f, 1e-6f}) {
        std::vector<float> x = rand_vec(r, rows * n);
        if (rows > 1)  // rows of other magnitudes
          for (int64_t i = 0; i < n; ++i) x[n + i] *= 50.f;
        const std::vector<float> w = rand_vec(r, n, -2.f, 2.f);
        std::vector<float> want = nan_vec(rows * n);
        ref::rmsnorm(x.data(), w.data(), want.data(), rows, n, eps);
        std::vector<double> rowmax(rows);
        for (int64_t q = 0; q < rows; ++q) rowmax[q] = max_abs(want.data() + q * n, n);
        for_each_backend([&](const std::string& be, ThreadPool& pool) {
          std::vector<float> y = nan_vec(rows * n);
          cpu::rmsnorm(pool, x.data(), w.data(), y.data(), rows, n, eps);
          EXPECT_CLOSE(strf("%s rmsnorm rows=%lld n=%lld eps=%g", be.c_str(), (long long)rows,
                            (long long)n, eps),
                       "rmsnorm", y.data(), want.data(), rows * n, 1e-5,
                       [&](int64_t i) { return rowmax[i / n]; });
        });
      }
}

TEST_CASE(softmax) {
  Rng r(32);
  for (const int64_t n : {1, 2, 3, 7, 15, 16, 17, 33, 1000, 4097}) {
    const int64_t rows = 6;
    std::vector<float> x = rand_vec(r, rows * n, -3.f, 3.f);
    for (int64_t i = 0; i < n; ++i) {
      x[1 * n + i] = r.uni(80.f, 100.f);    // large values: needs max subtraction
      x[2 * n + i] = r.uni(-100.f, -80.f);  // large negative values
      x[3 * n + i] = 0.5f;                  // constant row
      x[4 * n + i] = r.uni(-1.f, 1.f);
    }
    x[4 * n + (n / 2)] = 60.f;  // one spike
    std::vector<float> want = nan_vec(rows * n);
    ref::softmax(x.data(), want.data(), rows, n);
    std::vector<double> rowmax(rows);
    for (int64_t q = 0; q < rows; ++q) rowmax[q] = max_abs(want.data() + q * n, n);
    for_each_backend([&](const std::string& be, ThreadPool& pool) {
      std::vector<float> y = nan_vec(rows * n);
      cpu::softmax(pool, x.data(), y.data(), rows, n);
      // Relative to each probability, with a floor of 1% of the row's largest one.
      EXPECT_CLOSE(strf("%s softmax rows=%lld n=%lld", be.c_str(), (long long)rows, (long long)n),
                   "softmax", y.data(), want.data(), rows * n, 1e-5, [&](int64_t i) {
                     return std::max((double)std::fabs(want[i]), 1e-2 * rowmax[i / n]);
                   });
    });
  }
}

TEST_CASE(swiglu) {
  Rng r(33);
  for (const int64_t n : {1, 3, 7, 8, 15, 17, 31, 33, 1000, 4099}) {
    std::vector<float> g = rand_vec(r, n);
    for (int64_t i = 0; i < n; i += 3) g[i] *= 12.f;  // exp over a wider range
    if (n >= 8) g[5] = 100.f, g[6] = -100.f, g[7] = -1e30f;  // past the exp clamps
    const std::vector<float> u = rand_vec(r, n);
    std::vector<float> want = nan_vec(n);
    ref::swiglu(g.data(), u.data(), want.data(), n);
    for_each_backend([&](const std::string& be, ThreadPool& pool) {
      std::vector<float> y = nan_vec(n);
      cpu::swiglu(pool, g.data(), u.data(), y.data(), n);
      EXPECT_CLOSE(strf("%s swiglu n=%lld", be.c_str(), (long long)n), "swiglu", y.data(),
                   want.data(), n, 1e-5, [&](int64_t i) {
                     return std::fabs(want[i]) + 1e-2 * std::fabs(g[i] * u[i]) + 1e-30;
                   });
    });
  }
}

// ---------------------------------------------------------------------------------------------
// rope
// ---------------------------------------------------------------------------------------------

void rope_sweep(RopeMode mode, uint64_t seed) {
  Rng r(seed);
  struct Shape {
    int32_t head_dim, n_rot;
  };
  const Shape shapes[] = {{64, 64}, {128, 128}, {128, 64}, {6, 6}, {6, 4}, {7, 6},
                          {80, 32}, {10, 2},    {96, 96},  {2, 2}, {64, 0}};
  const float bases[] = {10000.f, 1000000.f, 500000.f};
  const float fscales[] = {1.f, 0.25f, 2.5f};
  int variant = 0;
  for (const Shape& sh : shapes)
    for (const int64_t tokens : {1, 3, 9}) {
      const int32_t heads = 1 + (variant % 5);
      RopeParams p;
      p.n_rot = sh.n_rot;
      p.theta_base = bases[variant % 3];
      p.freq_scale = fscales[(variant / 3) % 3];
      p.mode = mode;
      ++variant;
      std::vector<int32_t> pos(tokens);
      for (int64_t t = 0; t < tokens; ++t) pos[t] = t == 0 ? 0 : r.range(0, 4000);
      if (tokens > 2) pos[tokens - 1] = 4000;
      const int64_t n = tokens * heads * sh.head_dim;
      const std::vector<float> x = rand_vec(r, n);
      std::vector<float> want = x;
      ref::rope(want.data(), pos.data(), tokens, heads, sh.head_dim, p);
      for_each_backend([&](const std::string& be, ThreadPool& pool) {
        std::vector<float> y = x;
        cpu::rope(pool, y.data(), pos.data(), tokens, heads, sh.head_dim, p);
        const std::string what =
            strf("%s rope %s head_dim=%d n_rot=%d tokens=%lld heads=%d base=%g fscale=%g",
                 be.c_str(), mode == RopeMode::NeoX ? "neox" : "normal", sh.head_dim, sh.n_rot,
                 (long long)tokens, heads, p.theta_base, p.freq_scale);
        // An angle computed in float carries ~pos * 2^-24 of absolute error.
        EXPECT_CLOSE(what, "rope", y.data(), want.data(), n, 1.0, [&](int64_t i) {
          const int64_t t = i / ((int64_t)heads * sh.head_dim);
          return 1e-5 + 5e-7 * pos[t] * p.freq_scale;
        });
        // Dims past n_rot pass through untouched.
        int64_t bad = -1;
        for (int64_t i = 0; i < n && bad < 0; ++i)
          if (i % sh.head_dim >= sh.n_rot && std::memcmp(&y[i], &x[i], 4) != 0) bad = i;
        EXPECT(bad < 0, "%s: pass-through dim changed at %lld", what.c_str(), (long long)bad);
      });
    }
}

TEST_CASE(rope_normal) { rope_sweep(RopeMode::Normal, 41); }
TEST_CASE(rope_neox) { rope_sweep(RopeMode::NeoX, 42); }

// ---------------------------------------------------------------------------------------------
// varlen attention
// ---------------------------------------------------------------------------------------------

struct HeadCfg {
  int32_t hq, hkv, d;
};
const HeadCfg kVarlenHeads[] = {{2, 2, 64}, {4, 2, 128}, {8, 2, 5},  {8, 1, 24},
                                {16, 2, 80}, {4, 4, 7},  {8, 1, 128}, {3, 3, 1}};

// Deliberately wrong attention over segments: causal=false lets every token see its whole
// segment. Used to prove the tolerances can tell such a bug apart.
void naive_attention(const float* q, const float* k, const float* v, float* o,
                     const std::vector<int32_t>& cu, const AttnShape& s, bool causal) {
  const int32_t Hq = s.n_heads, Hkv = s.n_kv_heads, D = s.head_dim, g = Hq / Hkv;
  for (size_t b = 0; b + 1 < cu.size(); ++b)
    for (int32_t t = cu[b]; t < cu[b + 1]; ++t)
      for (int32_t h = 0; h < Hq; ++h) {
        const int32_t end = causal ? t + 1 : cu[b + 1];
        std::vector<double> sc;
        double mx = -INFINITY;
        for (int32_t j = cu[b]; j < end; ++j) {
          double a = 0;
          for (int32_t d = 0; d < D; ++d)
            a += (double)q[(t * Hq + h) * D + d] * k[(j * Hkv + h / g) * D + d];
          sc.push_back(a * s.scale);
          mx = std::max(mx, sc.back());
        }
        double sum = 0;
        for (double& e : sc) sum += (e = std::exp(e - mx));
        for (int32_t d = 0; d < D; ++d) {
          double a = 0;
          for (int32_t j = cu[b]; j < end; ++j) a += sc[j - cu[b]] * v[(j * Hkv + h / g) * D + d];
          o[(t * Hq + h) * D + d] = (float)(a / sum);
        }
      }
}

struct VarlenCase {
  std::vector<int32_t> cu;
  AttnShape s;
  std::vector<float> q, k, v;
  int32_t T = 0;
};

VarlenCase make_varlen(Rng& r, const std::vector<int32_t>& lens, const HeadCfg& h, float scale) {
  VarlenCase c;
  c.cu.push_back(0);
  for (int32_t l : lens) c.cu.push_back(c.cu.back() + l);
  c.T = c.cu.back();
  c.s.n_heads = h.hq;
  c.s.n_kv_heads = h.hkv;
  c.s.head_dim = h.d;
  c.s.scale = scale;
  // q scaled up so the scores spread over a few units (a non-trivial softmax).
  c.q = rand_vec(r, (int64_t)c.T * h.hq * h.d, -3.f, 3.f);
  c.k = rand_vec(r, (int64_t)c.T * h.hkv * h.d);
  c.v = rand_vec(r, (int64_t)c.T * h.hkv * h.d);
  return c;
}

TEST_CASE(varlen_attention) {
  Rng r(51);
  const std::vector<std::vector<int32_t>> batches = {
      {0, 1, 7, 33, 100}, {1}, {0}, {5, 0, 0, 3}, {64}, {2, 129}, {17, 1, 0, 1, 9}, {300}};
  int variant = 0;
  for (const HeadCfg& h : kVarlenHeads)
    for (const auto& lens : batches) {
      const float scale = (variant++ % 3 == 2) ? 0.5f : (float)(1.0 / std::sqrt((double)h.d));
      VarlenCase c = make_varlen(r, lens, h, scale);
      const VarlenBatch batch{c.cu.data(), (int32_t)lens.size()};
      bool threw = false;
      try {
        check_varlen(batch, c.T);
        check_attn_shape(c.s);
      } catch (const std::exception& e) {
        threw = true;
        EXPECT(false, "valid varlen input rejected: %s", e.what());
      }
      if (threw) continue;
      const int64_t n = (int64_t)c.T * h.hq * h.d;
      std::vector<float> want = nan_vec(n);
      ref::varlen_attention(c.q.data(), c.k.data(), c.v.data(), want.data(), batch, c.s);
      for_each_backend([&](const std::string& be, ThreadPool& pool) {
        std::vector<float> o = nan_vec(n);
        cpu::varlen_attention(pool, c.q.data(), c.k.data(), c.v.data(), o.data(), batch, c.s);
        std::string ls;
        for (int32_t l : lens) ls += strf("%d ", l);
        // Outputs are convex combinations of v rows (|v| <= 1): absolute error.
        EXPECT_CLOSE(strf("%s varlen Hq=%d Hkv=%d D=%d scale=%g lens={ %s}", be.c_str(), h.hq,
                          h.hkv, h.d, scale, ls.c_str()),
                     "varlen_attention", o.data(), want.data(), n, 2e-5,
                     [](int64_t) { return 1.0; });
      });
    }
}

TEST_CASE(varlen_attention_mutation) {
  // The reference and the tolerance must tell apart a missing causal mask and a missing
  // segment boundary: a kernel with either bug cannot pass.
  Rng r(52);
  for (const HeadCfg& h : {HeadCfg{4, 2, 64}, HeadCfg{8, 1, 5}}) {
    const std::vector<int32_t> lens = {0, 1, 7, 33, 20};
    VarlenCase c = make_varlen(r, lens, h, (float)(1.0 / std::sqrt((double)h.d)));
    const VarlenBatch batch{c.cu.data(), (int32_t)lens.size()};
    const int64_t n = (int64_t)c.T * h.hq * h.d;
    std::vector<float> want(n), causal(n), noncausal(n), merged(n);
    ref::varlen_attention(c.q.data(), c.k.data(), c.v.data(), want.data(), batch, c.s);
    naive_attention(c.q.data(), c.k.data(), c.v.data(), causal.data(), c.cu, c.s, true);
    naive_attention(c.q.data(), c.k.data(), c.v.data(), noncausal.data(), c.cu, c.s, false);
    const std::vector<int32_t> one = {0, c.T};
    naive_attention(c.q.data(), c.k.data(), c.v.data(), merged.data(), one, c.s, true);
    double d_causal = 0, d_non = 0, d_merged = 0;
    for (int64_t i = 0; i < n; ++i) {
      d_causal = std::max(d_causal, (double)std::fabs(want[i] - causal[i]));
      d_non = std::max(d_non, (double)std::fabs(want[i] - noncausal[i]));
      d_merged = std::max(d_merged, (double)std::fabs(want[i] - merged[i]));
    }
    EXPECT(d_causal < 1e-6, "ref vs independent causal attention differ by %g", d_causal);
    EXPECT(d_non > 100 * 2e-5, "non-causal attention within %g of ref: mask not testable",
           d_non);
    EXPECT(d_merged > 100 * 2e-5, "attention across segments within %g of ref", d_merged);
    // And the cpu kernel agrees with the causal one, not the broken ones.
    for_each_backend([&](const std::string& be, ThreadPool& pool) {
      std::vector<float> o = nan_vec(n);
      cpu::varlen_attention(pool, c.q.data(), c.k.data(), c.v.data(), o.data(), batch, c.s);
      double dn = 0;
      for (int64_t i = 0; i < n; ++i) dn = std::max(dn, (double)std::fabs(o[i] - noncausal[i]));
      EXPECT(dn > 100 * 2e-5, "%s varlen output matches non-causal attention (%g)", be.c_str(),
             dn);
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Paged KV cache: kv_append and paged_attention
// ---------------------------------------------------------------------------------------------

struct PagedCase {
  int32_t page_size = 0, Hq = 0, Hkv = 0, D = 0;
  DType dt = DType::F32;
  std::vector<int32_t> lens, nqs;
  std::vector<int32_t> indptr, indices, last_page_len, qo_indptr;
  int32_t num_pages = 0;
  std::vector<uint8_t> garbage_k, garbage_v;  // initial page contents
  std::vector<uint8_t> k_pages, v_pages;      // filled by cpu::kv_append
  // Appended tokens in two calls (prefix, then the query tokens), shuffled.
  struct Append {
    std::vector<float> k, v;
    std::vector<int32_t> bidx, pos;
  } calls[2];
  std::vector<float> q;
  std::vector<uint8_t> mask;
  std::vector<int32_t> mask_indptr;
  AttnShape s;

  size_t elem_bytes() const { return dt == DType::F16 ? 2 : 4; }
  PagedKv kv(void* kp, void* vp) const {
    PagedKv p;
    p.k_pages = kp;
    p.v_pages = vp;
    p.kv_dtype = dt;
    p.num_pages = num_pages;
    p.page_size = page_size;
    p.n_kv_heads = Hkv;
    p.head_dim = D;
    p.indptr = indptr.data();
    p.indices = indices.data();
    p.last_page_len = last_page_len.data();
    p.batch = (int32_t)lens.size();
    return p;
  }
  int32_t total_q() const { return qo_indptr.back(); }
};

// A random valid tree over nq nodes: node j's parent is in [-1, j) (-1: hangs off the prefix);
// node i sees node j iff j is i or an ancestor of i. force_branch detaches node 1 so the mask
// differs from plain causal.
void make_tree(Rng& r, int32_t nq, bool force_branch, std::vector<uint8_t>& mask) {
  std::vector<int32_t> parent(nq);
  for (int32_t j = 0; j < nq; ++j) parent[j] = j == 0 ? -1 : r.range(-1, j - 1);
  if (force_branch && nq >= 2) parent[1] = -1;
  const size_t base = mask.size();
  mask.resize(base + (size_t)nq * nq, 0);
  for (int32_t i = 0; i < nq; ++i)
    for (int32_t a = i; a >= 0; a = parent[a]) mask[base + (size_t)i * nq + a] = 1;
}

PagedCase make_paged(Rng& r, int32_t page_size, DType dt, const HeadCfg& h,
                     const std::vector<int32_t>& lens, const std::vector<int32_t>& nqs,
                     bool tree) {
  PagedCase c;
  c.page_size = page_size;
  c.dt = dt;
  c.Hq = h.hq;
  c.Hkv = h.hkv;
  c.D = h.d;
  c.lens = lens;
  c.nqs = nqs;
  c.s.n_heads = h.hq;
  c.s.n_kv_heads = h.hkv;
  c.s.head_dim = h.d;
  c.s.scale = (float)(1.0 / std::sqrt((double)h.d));
  const int32_t B = (int32_t)lens.size();
  int32_t used = 0;
  c.indptr.push_back(0);
  c.qo_indptr.push_back(0);
  for (int32_t b = 0; b < B; ++b) {
    const int32_t np = (lens[b] + page_size - 1) / page_size;
    used += np;
    c.indptr.push_back(c.indptr.back() + np);
    c.last_page_len.push_back(np == 0 ? 0 : lens[b] - (np - 1) * page_size);
    c.qo_indptr.push_back(c.qo_indptr.back() + nqs[b]);
  }
  // Non-contiguous, shuffled page ids with spare pages left unused.
  c.num_pages = used + 5;
  std::vector<int32_t> ids(c.num_pages);
  std::iota(ids.begin(), ids.end(), 0);
  shuffle(ids, r);
  c.indices.assign(ids.begin(), ids.begin() + used);
  c.indices.push_back(-1);  // never read (keeps data() valid when used == 0)

  // Page contents start as large finite garbage: a kernel reading a wrong slot or page gets
  // scores and values far from the real ones.
  const int64_t elems = (int64_t)c.num_pages * page_size * h.hkv * h.d;
  c.garbage_k.resize(elems * c.elem_bytes());
  c.garbage_v.resize(elems * c.elem_bytes());
  for (int64_t i = 0; i < elems; ++i) {
    const float gk = r.uni(-30.f, 30.f), gv = r.uni(-1000.f, 1000.f);
    if (dt == DType::F16) {
      reinterpret_cast<uint16_t*>(c.garbage_k.data())[i] = f32_to_f16(gk);
      reinterpret_cast<uint16_t*>(c.garbage_v.data())[i] = f32_to_f16(gv);
    } else {
      reinterpret_cast<float*>(c.garbage_k.data())[i] = gk;
      reinterpret_cast<float*>(c.garbage_v.data())[i] = gv;
    }
  }
  // Tokens: the prefix of every sequence in one call, the query tokens in a second one.
  for (int call = 0; call < 2; ++call) {
    std::vector<std::pair<int32_t, int32_t>> toks;
    for (int32_t b = 0; b < B; ++b) {
      const int32_t prefix = lens[b] - nqs[b];
      for (int32_t p = call == 0 ? 0 : prefix; p < (call == 0 ? prefix : lens[b]); ++p)
        toks.push_back({b, p});
    }
    shuffle(toks, r);
    auto& a = c.calls[call];
    for (auto& t : toks) {
      a.bidx.push_back(t.first);
      a.pos.push_back(t.second);
    }
    a.k = rand_vec(r, (int64_t)toks.size() * h.hkv * h.d);
    a.v = rand_vec(r, (int64_t)toks.size() * h.hkv * h.d);
    a.bidx.push_back(0);
    a.pos.push_back(0);
  }
  c.q = rand_vec(r, (int64_t)c.total_q() * h.hq * h.d, -3.f, 3.f);
  if (tree) {
    c.mask_indptr.push_back(0);
    for (int32_t b = 0; b < B; ++b) {
      make_tree(r, nqs[b], true, c.mask);
      c.mask_indptr.push_back((int32_t)c.mask.size());
    }
    c.mask.push_back(0);
  }
  return c;
}

// Appends both token sets into (kp, vp) with ref or cpu.
void append_all(const PagedCase& c, void* kp, void* vp, ThreadPool* pool) {
  const PagedKv kv = c.kv(kp, vp);
  for (const auto& a : c.calls) {
    const int64_t T = (int64_t)a.bidx.size() - 1;
    if (pool)
      cpu::kv_append(*pool, a.k.data(), a.v.data(), a.bidx.data(), a.pos.data(), T, kv);
    else
      ref::kv_append(a.k.data(), a.v.data(), a.bidx.data(), a.pos.data(), T, kv);
  }
}

const std::vector<std::vector<int32_t>> kPagedLens = {
    {0, 1, 5, 17, 40, 3, 10, 33}, {7}, {0, 0}, {16, 2, 31}};

std::vector<int32_t> random_nqs(Rng& r, const std::vector<int32_t>& lens) {
  std::vector<int32_t> nqs;
  for (size_t b = 0; b < lens.size(); ++b) {
    int32_t nq = std::min(lens[b], r.range(1, 5));
    if (lens[b] == 10) nq = 0;        // a sequence without queries
    if (lens[b] == 3) nq = 3;         // empty prefix: every KV entry is a query
    nqs.push_back(nq);
  }
  return nqs;
}

const HeadCfg kPagedHeads[] = {{2, 2, 64}, {4, 2, 128}, {8, 2, 24}, {8, 1, 5}, {16, 2, 80}};

TEST_CASE(kv_append) {
  Rng r(61);
  for (const int32_t ps : {1, 3, 16})
    for (const DType dt : {DType::F32, DType::F16})
      for (const HeadCfg& h : {kPagedHeads[1], kPagedHeads[3]})
        for (const auto& lens : kPagedLens) {
          const std::vector<int32_t> nqs = random_nqs(r, lens);
          PagedCase c = make_paged(r, ps, dt, h, lens, nqs, false);
          const PagedKv kv0 = c.kv(c.garbage_k.data(), c.garbage_v.data());
          for (const auto& a : c.calls) {
            try {
              check_paged(kv0, (int64_t)c.indices.size() - 1);
              check_kv_append(a.bidx.data(), a.pos.data(), (int64_t)a.bidx.size() - 1, kv0);
            } catch (const std::exception& e) {
              EXPECT(false, "valid kv_append input rejected: %s", e.what());
            }
          }
          std::vector<uint8_t> kr = c.garbage_k, vr = c.garbage_v;
          append_all(c, kr.data(), vr.data(), nullptr);
          EXPECT(kr != c.garbage_k || lens[0] + lens.back() == 0, "ref kv_append wrote nothing");
          for_each_backend([&](const std::string& be, ThreadPool& pool) {
            std::vector<uint8_t> kc = c.garbage_k, vc = c.garbage_v;
            append_all(c, kc.data(), vc.data(), &pool);
            EXPECT(kc == kr && vc == vr,
                   "%s kv_append page_size=%d %s Hkv=%d D=%d: pages differ from ref (k %s, v %s)",
                   be.c_str(), ps, dtype_info(dt).name, h.hkv, h.d, kc == kr ? "ok" : "DIFF",
                   vc == vr ? "ok" : "DIFF");
          });
        }
}

void paged_sweep(bool tree, uint64_t seed) {
  Rng r(seed);
  for (const int32_t ps : {1, 3, 16})
    for (const DType dt : {DType::F32, DType::F16})
      for (const HeadCfg& h : kPagedHeads)
        for (size_t li = 0; li < kPagedLens.size(); ++li) {
          // Keep the sweep small: the big batch everywhere, the others on a subset.
          if (li != 0 && (h.d == 128 || h.d == 80) && ps != 3) continue;
          const auto& lens = kPagedLens[li];
          const std::vector<int32_t> nqs = random_nqs(r, lens);
          PagedCase c = make_paged(r, ps, dt, h, lens, nqs, tree);
          c.k_pages = c.garbage_k;
          c.v_pages = c.garbage_v;
          append_all(c, c.k_pages.data(), c.v_pages.data(), &default_pool());
          const PagedKv kv = c.kv(c.k_pages.data(), c.v_pages.data());
          TreeMask tm;
          tm.mask = c.mask.data();
          tm.indptr = c.mask_indptr.data();
          const TreeMask* tmp = tree ? &tm : nullptr;
          try {
            check_attn_shape(c.s);
            check_paged(kv, (int64_t)c.indices.size() - 1);
            check_paged_queries(c.qo_indptr.data(), c.total_q(), kv, tmp,
                                tree ? (int64_t)c.mask.size() - 1 : 0);
          } catch (const std::exception& e) {
            EXPECT(false, "valid paged input rejected: %s", e.what());
            continue;
          }
          const int64_t n = (int64_t)c.total_q() * h.hq * h.d;
          std::vector<float> want = nan_vec(n);
          ref::paged_attention(c.q.data(), c.qo_indptr.data(), kv, tmp, want.data(), c.s);
          std::string ls;
          for (size_t b = 0; b < lens.size(); ++b) ls += strf("%d/%d ", lens[b], nqs[b]);
          for_each_backend([&](const std::string& be, ThreadPool& pool) {
            std::vector<float> o = nan_vec(n);
            cpu::paged_attention(pool, c.q.data(), c.qo_indptr.data(), kv, tmp, o.data(), c.s);
            EXPECT_CLOSE(strf("%s paged%s page_size=%d %s Hq=%d Hkv=%d D=%d len/nq={ %s}",
                              be.c_str(), tree ? "+tree" : "", ps, dtype_info(dt).name, h.hq,
                              h.hkv, h.d, ls.c_str()),
                         tree ? "paged_attention_tree" : "paged_attention", o.data(),
                         want.data(), n, 2e-5, [](int64_t) { return 1.0; });
          });
        }
}

TEST_CASE(paged_attention) { paged_sweep(false, 71); }
TEST_CASE(paged_attention_tree) { paged_sweep(true, 72); }

TEST_CASE(paged_attention_zero_row) {
  // A tree row of zeros with an empty prefix sees no key at all: the output is zeros.
  Rng r(73);
  for (const DType dt : {DType::F32, DType::F16}) {
    const HeadCfg h{4, 2, 16};
    PagedCase c = make_paged(r, 16, dt, h, {3, 4}, {3, 2}, true);
    // Sequence 0: nodes 0..2, row 0 sees nothing, row 1 sees node 1, row 2 sees nodes 0 and 2.
    const uint8_t m0[9] = {0, 0, 0, 0, 1, 0, 1, 0, 1};
    std::copy(m0, m0 + 9, c.mask.begin());
    c.k_pages = c.garbage_k;
    c.v_pages = c.garbage_v;
    append_all(c, c.k_pages.data(), c.v_pages.data(), &default_pool());
    const PagedKv kv = c.kv(c.k_pages.data(), c.v_pages.data());
    TreeMask tm{c.mask.data(), c.mask_indptr.data()};
    const int64_t n = (int64_t)c.total_q() * h.hq * h.d;
    std::vector<float> want = nan_vec(n);
    ref::paged_attention(c.q.data(), c.qo_indptr.data(), kv, &tm, want.data(), c.s);
    for (int64_t i = 0; i < h.hq * h.d; ++i) EXPECT(want[i] == 0.f, "ref zero row: %g", want[i]);
    for_each_backend([&](const std::string& be, ThreadPool& pool) {
      std::vector<float> o = nan_vec(n);
      cpu::paged_attention(pool, c.q.data(), c.qo_indptr.data(), kv, &tm, o.data(), c.s);
      EXPECT_CLOSE(strf("%s paged zero row %s", be.c_str(), dtype_info(dt).name),
                   "paged_attention_tree", o.data(), want.data(), n, 2e-5,
                   [](int64_t) { return 1.0; });
    });
  }
}

TEST_CASE(paged_attention_mutation) {
  // An off-by-one in the page table, a missing causal mask or an ignored tree mask must all
  // move the result far outside the tolerance.
  Rng r(74);
  const HeadCfg h{4, 2, 32};
  for (const int32_t ps : {1, 3, 16}) {
    const std::vector<int32_t> lens = {20, 9, 40}, nqs = {4, 3, 5};
    PagedCase c = make_paged(r, ps, DType::F32, h, lens, nqs, true);
    c.k_pages = c.garbage_k;
    c.v_pages = c.garbage_v;
    append_all(c, c.k_pages.data(), c.v_pages.data(), nullptr);
    const int64_t n = (int64_t)c.total_q() * h.hq * h.d;
    const PagedKv kv = c.kv(c.k_pages.data(), c.v_pages.data());
    std::vector<float> want(n), other(n);
    auto diff = [&]() {
      double d = 0;
      for (int64_t i = 0; i < n; ++i) d = std::max(d, (double)std::fabs(want[i] - other[i]));
      return d;
    };
    ref::paged_attention(c.q.data(), c.qo_indptr.data(), kv, nullptr, want.data(), c.s);
    // Page table shifted by one entry.
    std::vector<int32_t> shifted = c.indices;
    std::rotate(shifted.begin(), shifted.begin() + 1, shifted.end() - 1);
    PagedKv kv2 = kv;
    kv2.indices = shifted.data();
    ref::paged_attention(c.q.data(), c.qo_indptr.data(), kv2, nullptr, other.data(), c.s);
    EXPECT(diff() > 100 * 2e-5, "page_size %d: shifted page table within %g", ps, diff());
    // Every query sees every node (a missing causal mask).
    std::vector<uint8_t> ones(c.mask.size(), 1);
    TreeMask all{ones.data(), c.mask_indptr.data()};
    ref::paged_attention(c.q.data(), c.qo_indptr.data(), kv, &all, other.data(), c.s);
    EXPECT(diff() > 100 * 2e-5, "page_size %d: non-causal within %g of causal", ps, diff());
    // Off-by-one in the causal limit: query i seeing nodes up to i+1, or only up to i-1.
    for (const int shift : {1, -1}) {
      std::vector<uint8_t> off(c.mask.size(), 0);
      for (size_t b = 0; b < nqs.size(); ++b)
        for (int32_t i = 0; i < nqs[b]; ++i)
          for (int32_t j = 0; j < nqs[b]; ++j)
            off[c.mask_indptr[b] + i * nqs[b] + j] = j <= i + shift;
      TreeMask om{off.data(), c.mask_indptr.data()};
      ref::paged_attention(c.q.data(), c.qo_indptr.data(), kv, &om, other.data(), c.s);
      EXPECT(diff() > 100 * 2e-5, "page_size %d: causal limit off by %d within %g", ps, shift,
             diff());
    }
    // Tree mask vs plain causal.
    TreeMask tm{c.mask.data(), c.mask_indptr.data()};
    ref::paged_attention(c.q.data(), c.qo_indptr.data(), kv, &tm, other.data(), c.s);
    EXPECT(diff() > 100 * 2e-5, "page_size %d: tree mask within %g of causal", ps, diff());
    // The cpu kernel: causal result, not the non-causal one.
    for_each_backend([&](const std::string& be, ThreadPool& pool) {
      std::vector<float> o = nan_vec(n);
      cpu::paged_attention(pool, c.q.data(), c.qo_indptr.data(), kv, nullptr, o.data(), c.s);
      EXPECT_CLOSE(strf("%s paged mutation case page_size=%d", be.c_str(), ps),
                   "paged_attention", o.data(), want.data(), n, 2e-5,
                   [](int64_t) { return 1.0; });
    });
  }
}

// ---------------------------------------------------------------------------------------------
// check.h
// ---------------------------------------------------------------------------------------------

// Runs fn, expecting an ArgError whose message contains one of `names`.
template <typename F>
void expect_arg_error_at(const char* file, int line, const char* what,
                         std::initializer_list<const char*> names, F fn) {
  ++g_checks;
  try {
    fn();
  } catch (const ArgError& e) {
    const std::string msg = e.what();
    for (const char* nm : names)
      if (msg.find(nm) != std::string::npos) return;
    std::string want;
    for (const char* nm : names) want += strf("\"%s\" ", nm);
    fail(file, line, strf("%s: ArgError message \"%s\" names none of %s", what, msg.c_str(),
                          want.c_str()));
    return;
  } catch (const std::exception& e) {
    fail(file, line, strf("%s: threw a non-ArgError exception: %s", what, e.what()));
    return;
  } catch (...) {
    fail(file, line, strf("%s: threw a non-standard exception", what));
    return;
  }
  fail(file, line, strf("%s: did not throw", what));
}
#define EXPECT_ARG_ERROR(what, names, ...) \
  expect_arg_error_at(__FILE__, __LINE__, what, names, __VA_ARGS__)

template <typename F>
void expect_no_throw_at(const char* file, int line, const char* what, F fn) {
  ++g_checks;
  try {
    fn();
  } catch (const std::exception& e) {
    fail(file, line, strf("%s: valid input rejected: %s", what, e.what()));
  }
}
#define EXPECT_NO_THROW(what, ...) expect_no_throw_at(__FILE__, __LINE__, what, __VA_ARGS__)

#define NAMES(...) std::initializer_list<const char*>({__VA_ARGS__})

TEST_CASE(check_varlen) {
  const int32_t good[] = {0, 3, 3, 8};
  EXPECT_NO_THROW("valid cu_seqlens", [&] { check_varlen(VarlenBatch{good, 3}, 8); });
  const int32_t empty[] = {0};
  EXPECT_NO_THROW("no sequences", [&] { check_varlen(VarlenBatch{empty, 0}, 0); });
  const int32_t nonmono[] = {0, 5, 3, 8};
  EXPECT_ARG_ERROR("non-monotonic cu_seqlens", NAMES("cu_seqlens"),
                   [&] { check_varlen(VarlenBatch{nonmono, 3}, 8); });
  const int32_t nonzero[] = {1, 3, 8};
  EXPECT_ARG_ERROR("cu_seqlens[0] != 0", NAMES("cu_seqlens"),
                   [&] { check_varlen(VarlenBatch{nonzero, 2}, 8); });
  EXPECT_ARG_ERROR("cu_seqlens end != total", NAMES("cu_seqlens"),
                   [&] { check_varlen(VarlenBatch{good, 3}, 9); });
}

TEST_CASE(check_attn_shape) {
  AttnShape s;
  s.n_heads = 8;
  s.n_kv_heads = 2;
  s.head_dim = 64;
  s.scale = 0.125f;
  EXPECT_NO_THROW("valid attn shape", [&] { check_attn_shape(s); });
  AttnShape bad = s;
  bad.n_heads = 6;
  bad.n_kv_heads = 4;
  EXPECT_ARG_ERROR("Hq % Hkv != 0", NAMES("n_kv_heads", "n_heads", "heads"),
                   [&] { check_attn_shape(bad); });
  bad = s;
  bad.n_kv_heads = 0;
  EXPECT_ARG_ERROR("Hkv == 0", NAMES("n_kv_heads", "heads"), [&] { check_attn_shape(bad); });
  bad = s;
  bad.head_dim = 0;
  EXPECT_ARG_ERROR("head_dim 0", NAMES("head_dim"), [&] { check_attn_shape(bad); });
}

struct SmallPaged {
  // Two sequences: seq 0 has pages {2, 0} (5 tokens, page_size 3), seq 1 has page {3} (1 token).
  int32_t indptr[3] = {0, 2, 3};
  int32_t indices[3] = {2, 0, 3};
  int32_t last_page_len[2] = {2, 1};
  PagedKv kv() {
    PagedKv p;
    p.kv_dtype = DType::F32;
    p.num_pages = 4;
    p.page_size = 3;
    p.n_kv_heads = 2;
    p.head_dim = 8;
    p.indptr = indptr;
    p.indices = indices;
    p.last_page_len = last_page_len;
    p.batch = 2;
    return p;
  }
};

TEST_CASE(check_paged) {
  {
    SmallPaged sp;
    EXPECT_NO_THROW("valid page table", [&] { check_paged(sp.kv(), 3); });
  }
  {
    SmallPaged sp;
    sp.indices[1] = 4;  // == num_pages
    EXPECT_ARG_ERROR("page index out of range", NAMES("indices", "page"),
                     [&] { check_paged(sp.kv(), 3); });
  }
  {
    SmallPaged sp;
    sp.indices[2] = -1;
    EXPECT_ARG_ERROR("negative page index", NAMES("indices", "page"),
                     [&] { check_paged(sp.kv(), 3); });
  }
  {
    SmallPaged sp;
    sp.last_page_len[0] = 0;
    EXPECT_ARG_ERROR("last_page_len 0", NAMES("last_page_len"), [&] { check_paged(sp.kv(), 3); });
  }
  {
    SmallPaged sp;
    sp.last_page_len[1] = 4;  // > page_size
    EXPECT_ARG_ERROR("last_page_len > page_size", NAMES("last_page_len"),
                     [&] { check_paged(sp.kv(), 3); });
  }
  {
    SmallPaged sp;
    sp.indptr[1] = 4;  // non-monotonic
    EXPECT_ARG_ERROR("non-monotonic indptr", NAMES("indptr"), [&] { check_paged(sp.kv(), 3); });
  }
  {
    SmallPaged sp;
    EXPECT_ARG_ERROR("indptr end != num_indices", NAMES("indptr", "indices"),
                     [&] { check_paged(sp.kv(), 5); });
  }
}

TEST_CASE(check_paged_queries) {
  SmallPaged sp;  // seq lens 5 and 1
  const PagedKv kv = sp.kv();
  const int32_t qo_ok[] = {0, 3, 4};
  EXPECT_NO_THROW("valid queries", [&] { check_paged_queries(qo_ok, 4, kv, nullptr, 0); });
  const uint8_t mask[10] = {1, 0, 0, 1, 1, 0, 1, 0, 1, 1};
  const int32_t mask_ok[] = {0, 9, 10};
  TreeMask tm{mask, mask_ok};
  EXPECT_NO_THROW("valid tree mask", [&] { check_paged_queries(qo_ok, 4, kv, &tm, 10); });
  const int32_t qo_long[] = {0, 3, 5};  // 2 queries, 1 KV entry in seq 1
  EXPECT_ARG_ERROR("nq > kv len", NAMES("qo_indptr", "quer"),
                   [&] { check_paged_queries(qo_long, 5, kv, nullptr, 0); });
  const int32_t qo_nonmono[] = {0, 3, 2};
  EXPECT_ARG_ERROR("non-monotonic qo_indptr", NAMES("qo_indptr"),
                   [&] { check_paged_queries(qo_nonmono, 2, kv, nullptr, 0); });
  const int32_t mask_bad[] = {0, 8, 9};  // seq 0 needs 3*3 entries
  TreeMask tb{mask, mask_bad};
  EXPECT_ARG_ERROR("tree mask wrongly sized per sequence", NAMES("tree", "mask"),
                   [&] { check_paged_queries(qo_ok, 4, kv, &tb, 9); });
  EXPECT_ARG_ERROR("tree mask length != indptr end", NAMES("tree", "mask"),
                   [&] { check_paged_queries(qo_ok, 4, kv, &tm, 7); });
}

TEST_CASE(check_kv_append) {
  SmallPaged sp;  // seq 0: 2 pages of 3 holding 5 tokens, seq 1: 1 page holding 1 token
  const PagedKv kv = sp.kv();
  // Appends target positions below the sequence length (last_page_len already counts them).
  const int32_t b_ok[] = {0, 0, 1}, p_ok[] = {4, 3, 0};
  EXPECT_NO_THROW("valid append", [&] { check_kv_append(b_ok, p_ok, 3, kv); });
  const int32_t p_bad[] = {4, 6, 0};  // seq 0 has 6 slots (5 used)
  EXPECT_ARG_ERROR("position beyond page table", NAMES("positions", "position"),
                   [&] { check_kv_append(b_ok, p_bad, 3, kv); });
  const int32_t p_neg[] = {0, -1, 0};
  EXPECT_ARG_ERROR("negative position", NAMES("positions", "position"),
                   [&] { check_kv_append(b_ok, p_neg, 3, kv); });
  const int32_t b_bad[] = {0, 2, 1};
  EXPECT_ARG_ERROR("batch index out of range", NAMES("batch_indices", "batch"),
                   [&] { check_kv_append(b_bad, p_ok, 3, kv); });
}

TEST_CASE(check_matmul_rope_convert) {
  EXPECT_NO_THROW("q8_0 k=64", [] { check_matmul(DType::Q8_0, 64); });
  EXPECT_NO_THROW("f32 k=5", [] { check_matmul(DType::F32, 5); });
  EXPECT_NO_THROW("f16 k=67", [] { check_matmul(DType::F16, 67); });
  EXPECT_ARG_ERROR("q8_0 k=33", NAMES("k"), [] { check_matmul(DType::Q8_0, 33); });
  EXPECT_ARG_ERROR("q4_0 k=48", NAMES("k"), [] { check_matmul(DType::Q4_0, 48); });
  EXPECT_ARG_ERROR("i32 weights", NAMES("dtype", "w_dtype", "i32"),
                   [] { check_matmul(DType::I32, 64); });
  RopeParams p;
  p.n_rot = 64;
  EXPECT_NO_THROW("rope n_rot 64 of 128", [&] { check_rope(p, 128); });
  p.n_rot = 3;
  EXPECT_ARG_ERROR("rope odd n_rot", NAMES("n_rot"), [&] { check_rope(p, 128); });
  p.n_rot = 130;
  EXPECT_ARG_ERROR("rope n_rot > head_dim", NAMES("n_rot", "head_dim"), [&] { check_rope(p, 128); });
  EXPECT_NO_THROW("convert f32->q4_0", [] { check_convert(DType::F32, DType::Q4_0, 64); });
  EXPECT_NO_THROW("convert q8_0->f32", [] { check_convert(DType::Q8_0, DType::F32, 64); });
  EXPECT_ARG_ERROR("convert f32->q8_0 n=33", NAMES("n", "block"),
                   [] { check_convert(DType::F32, DType::Q8_0, 33); });
  EXPECT_ARG_ERROR("convert f16->q8_0", NAMES("dtype", "f16", "q8_0", "convert"),
                   [] { check_convert(DType::F16, DType::Q8_0, 64); });
  // k-quants: matmul weights with k % 256 == 0; convert to and from f32 in whole super-blocks.
  EXPECT_NO_THROW("q4_k k=256", [] { check_matmul(DType::Q4_K, 256); });
  EXPECT_NO_THROW("q6_k k=768", [] { check_matmul(DType::Q6_K, 768); });
  EXPECT_ARG_ERROR("q4_k k=128", NAMES("k"), [] { check_matmul(DType::Q4_K, 128); });
  EXPECT_ARG_ERROR("q6_k k=288", NAMES("k"), [] { check_matmul(DType::Q6_K, 288); });
  EXPECT_NO_THROW("convert q4_k->f32", [] { check_convert(DType::Q4_K, DType::F32, 512); });
  EXPECT_NO_THROW("convert q6_k->f32", [] { check_convert(DType::Q6_K, DType::F32, 256); });
  EXPECT_ARG_ERROR("convert q6_k->f32 n=320", NAMES("n", "block"),
                   [] { check_convert(DType::Q6_K, DType::F32, 320); });
  EXPECT_NO_THROW("convert f32->q4_k", [] { check_convert(DType::F32, DType::Q4_K, 256); });
  EXPECT_ARG_ERROR("convert f32->q6_k n=32", NAMES("n", "256"), [] { check_convert(DType::F32, DType::Q6_K, 32); });
  EXPECT_ARG_ERROR("convert q4_k->f16", NAMES("dtype", "q4_k", "convert"),
                   [] { check_convert(DType::Q4_K, DType::F16, 256); });
  EXPECT_ARG_ERROR("convert q6_k->q4_k", NAMES("dtype", "q6_k", "convert"),
                   [] { check_convert(DType::Q6_K, DType::Q4_K, 256); });
}

}  // namespace

int main() {
  const auto t0 = std::chrono::steady_clock::now();
  const CpuIsa all[] = {CpuIsa::Scalar, CpuIsa::Avx2, CpuIsa::Avx512, CpuIsa::Neon};
  std::string ran, skipped;
  for (const CpuIsa isa : all) {
    if (set_active_isa(isa)) {
      g_isas.push_back(isa);
      ran += std::string(isa_name(isa)) + " ";
    } else {
      skipped += std::string(isa_name(isa)) + " ";
    }
  }
  set_active_isa(best_isa());
  g_pool1.reset(new ThreadPool(1));
  // Pool 3 splits every loop by its grain alone (min_chunk_cost 0), so the small shapes of these
  // tests still run the kernels' parallel paths; the default pool applies the work-size rule.
  g_pool3.reset(new ThreadPool(3, 0));
  ThreadPool& def = default_pool();
  for (const CpuIsa isa : g_isas) {
    g_backends.push_back({isa, &def, strf("[%s, default pool %d]", isa_name(isa), def.size())});
    g_backends.push_back({isa, g_pool1.get(), strf("[%s, pool 1]", isa_name(isa))});
    g_backends.push_back({isa, g_pool3.get(), strf("[%s, pool 3]", isa_name(isa))});
  }
  printf("native: cpu features: %s\n", cpu_feature_string().c_str());
  printf("native: ISAs run: %s(skipped, unsupported: %s)\n", ran.c_str(),
         skipped.empty() ? "none " : skipped.c_str());
  printf("native: thread pools: default (%d), 1, 3\n", def.size());

  const Tally tally = run_registered([] { set_active_isa(best_isa()); });
  printf("native: largest normalised errors (metric: max seen / tolerance)\n");
  for (const auto& kv : error_stats())
    printf("    %-24s %.3g / %.3g\n", kv.first.c_str(), kv.second.first, kv.second.second);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  printf("native: %lld checks in %.1f s\n", (long long)g_checks, secs);
  printf("native: %d passed, %d failed\n", tally.passed, tally.failed);
  return tally.failed == 0 ? 0 : 1;
}
