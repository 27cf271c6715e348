// The small test harness of the native test binaries (no framework): named test cases registered
// with TEST_CASE (or run directly with run_case), EXPECT checks that count and print failures, and
// one "ok/FAIL name  checks  ms" line per case. Each binary includes it once.
#pragma once

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <functional>
#include <string>
#include <vector>

namespace harness {

inline int g_failures = 0;       // failed checks in the running test case
inline int64_t g_checks = 0;     // checks run in total
inline bool g_quiet = false;     // count failures without printing them (harness self-test)
constexpr int kMaxPrinted = 10;  // failure messages printed per test case

inline std::string strf(const char* fmt, ...) {
  char buf[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

inline void fail(const char* file, int line, const std::string& msg) {
  ++g_failures;
  if (g_quiet) return;
  if (g_failures <= kMaxPrinted) {
    printf("    FAIL %s:%d: %s\n", file, line, msg.c_str());
  } else if (g_failures == kMaxPrinted + 1) {
    printf("    (further failures of this test case not printed)\n");
  }
}

#define EXPECT(cond, ...)                                                                                    \
  do {                                                                                                       \
    ++::harness::g_checks;                                                                                   \
    if (!(cond)) ::harness::fail(__FILE__, __LINE__, std::string(#cond) + ": " + ::harness::strf(__VA_ARGS__)); \
  } while (0)

struct TestCase {
  const char* name;
  void (*fn)();
};

inline std::vector<TestCase>& registry() {
  static std::vector<TestCase> tests;
  return tests;
}

struct Registrar {
  Registrar(const char* name, void (*fn)()) { registry().push_back({name, fn}); }
};

#define TEST_CASE(name)                                             \
  void test_##name();                                               \
  const ::harness::Registrar registrar_##name(#name, &test_##name); \
  void test_##name()

struct Tally {
  int passed = 0, failed = 0;
};

// Runs one case (an uncaught exception is a failure) and prints its line; `after` runs after the
// case whatever happened (e.g. to restore global state).
inline bool run_case(Tally& tally, const std::string& name, const std::function<void()>& fn,
                     const std::function<void()>& after = nullptr) {
  g_failures = 0;
  const auto s0 = std::chrono::steady_clock::now();
  const int64_t c0 = g_checks;
  try {
    fn();
  } catch (const std::exception& e) {
    fail(__FILE__, __LINE__, strf("uncaught exception: %s", e.what()));
  } catch (...) {
    fail(__FILE__, __LINE__, "uncaught non-standard exception");
  }
  if (after) after();
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - s0).count();
  const bool ok = g_failures == 0;
  if (ok) {
    ++tally.passed;
    printf("  ok   %-32s %7lld checks %8.1f ms\n", name.c_str(), (long long)(g_checks - c0), ms);
  } else {
    ++tally.failed;
    printf("  FAIL %-32s %d of %lld checks failed %8.1f ms\n", name.c_str(), g_failures, (long long)(g_checks - c0), ms);
  }
  fflush(stdout);
  return ok;
}

// Whether f() throws a std::exception.
template <typename F>
bool throws(F&& f) {
  try {
    f();
  } catch (const std::exception&) {
    return true;
  }
  return false;
}

// Logit rows: the greedy token, and the gap between the two largest values (near-ties).
inline int32_t argmax(const float* x, int32_t n) { return (int32_t)(std::max_element(x, x + n) - x); }
inline float top2_margin(const float* x, int32_t n) {
  float a = -INFINITY, b = -INFINITY;
  for (int32_t i = 0; i < n; i++) {
    if (x[i] > a) b = a, a = x[i];
    else if (x[i] > b) b = x[i];
  }
  return a - b;
}

// Runs every TEST_CASE of the binary.
inline Tally run_registered(const std::function<void()>& after = nullptr) {
  Tally tally;
  for (const TestCase& t : registry()) run_case(tally, t.name, t.fn, after);
  return tally;
}

}  // namespace harness
