// Native token sampling: lib/sampling.ts's Sampler.sample ported line for line (the same passes,
// the same candidate orders, float32 working logits and float64 weights, the same exp
// polynomial and generator), so a row sampled here and in JavaScript picks the same token.
// Comments name the reference's functions; see lib/sampling.ts for the reasoning behind them.
#include "sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

#include "tessera/threadpool.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#endif

// Exact agreement with V8 needs every multiply and add rounded on its own: no fused multiply-add.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace tessera {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// ---- expNeg: exp(x) for x <= 0 through a 64-entry table and a degree-5 polynomial.

constexpr double kLn2 = 0.6931471805599453;  // Math.LN2
const double kExpK = 64 / kLn2;
constexpr double kExpC1 = 0.010830424696223417;
const double kExpC2 = kLn2 / 64 - kExpC1;
// Math.pow(2, j / 64) as V8 computes it (printed by node, so the doubles are the same).
const double kExpFrac[64] = {
    1, 1.0108892860517005, 1.0218971486541166, 1.0330248790212284,
    1.0442737824274138, 1.0556451783605572, 1.0671404006768237, 1.0787607977571199,
    1.0905077326652577, 1.102382583307841, 1.1143867425958924, 1.1265216186082418,
    1.1387886347566916, 1.1511892299529827, 1.1637248587775775, 1.1763969916502812,
    1.189207115002721, 1.202156731452703, 1.215247359980469, 1.22848053610687,
    1.241857812073484, 1.255380757024691, 1.2690509571917332, 1.2828700160787783,
    1.2968395546510096, 1.3109612115247644, 1.3252366431597413, 1.339667524053303,
    1.3542555469368927, 1.3690024229745905, 1.3839098819638318, 1.398979672538311,
    1.4142135623730951, 1.42961333839197, 1.4451808069770467, 1.4609177941806468,
    1.4768261459394993, 1.4929077282912648, 1.5091644275934228, 1.5255981507445382,
    1.542210825407941, 1.559004400237837, 1.5759808451078865, 1.593142151342267,
    1.6104903319492543, 1.6280274218573478, 1.6457554781539647, 1.6636765803267364,
    1.6817928305074292, 1.7001063537185235, 1.718619298122478, 1.7373338352737062,
    1.7562521603732995, 1.7753764925265212, 1.7947090750031072, 1.8142521755003989,
    1.8340080864093424, 1.8539791250833857, 1.8741676341103, 1.8945759815869656,
    1.9152065613971474, 1.9360617934922946, 1.9571441241754002, 1.978456026387951,
};
// 2^k for k in [-1022, 0] (exp_neg's range: x > -708), built from its exponent bits.
inline double pow2(int32_t k) {
  const uint64_t bits = (uint64_t)(k + 1023) << 52;
  double d;
  std::memcpy(&d, &bits, sizeof d);
  return d;
}

inline double exp_neg(double x) {
  if (!(x > -708)) return 0;
  const int32_t n = -(int32_t)(0.5 - x * kExpK);  // round(x * 64 / ln2)
  const double dn = (double)n;
  const double r = x - dn * kExpC1 - dn * kExpC2;
  const double p = 1 + r * (1 + r * (0.5 + r * (1.0 / 6 + r * (1.0 / 24 + r * (1.0 / 120)))));
  return pow2(n >> 6) * kExpFrac[n & 63] * p;
}

// out[i] = exp_neg(((double)L[i] - max) * inv_t) for i < n (or for the ids of a candidate list):
// the same operations, four lanes at a
// time with AVX2 where the CPU has it (each lane rounds exactly as the scalar code does: no FMA).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
template <bool kList>
__attribute__((target("avx2"))) void exp_neg_avx2(const float* L, const int32_t* ids, int64_t n, double max, double inv_t,
                                                  double* out) {
  const __m256d vmax = _mm256_set1_pd(max), vinv = _mm256_set1_pd(inv_t), lim = _mm256_set1_pd(-708.0);
  const __m256d k = _mm256_set1_pd(kExpK), half = _mm256_set1_pd(0.5), c1 = _mm256_set1_pd(kExpC1), c2 = _mm256_set1_pd(kExpC2);
  const __m256d one = _mm256_set1_pd(1.0), p2 = _mm256_set1_pd(0.5), p3 = _mm256_set1_pd(1.0 / 6), p4 = _mm256_set1_pd(1.0 / 24),
                p5 = _mm256_set1_pd(1.0 / 120), zero = _mm256_setzero_pd();
  const __m128i bias = _mm_set1_epi32(1023), low6 = _mm_set1_epi32(63);
  const __m256d all = _mm256_castsi256_pd(_mm256_set1_epi64x(-1));
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    __m128 v;
    __m128i id;
    if (kList) {
      id = _mm_loadu_si128((const __m128i*)(ids + i));
      v = _mm_i32gather_ps(L, id, 4);
    } else {
      v = _mm_loadu_ps(L + i);
    }
    __m256d x = _mm256_mul_pd(_mm256_sub_pd(_mm256_cvtps_pd(v), vmax), vinv);
    const __m256d ok = _mm256_cmp_pd(x, lim, _CMP_GT_OQ);  // false for NaN, as !(x > -708)
    x = _mm256_blendv_pd(zero, x, ok);
    const __m128i t = _mm256_cvttpd_epi32(_mm256_sub_pd(half, _mm256_mul_pd(x, k)));
    const __m128i nn = _mm_sub_epi32(_mm_setzero_si128(), t);
    const __m256d dn = _mm256_cvtepi32_pd(nn);
    const __m256d r = _mm256_sub_pd(_mm256_sub_pd(x, _mm256_mul_pd(dn, c1)), _mm256_mul_pd(dn, c2));
    __m256d p = _mm256_add_pd(p4, _mm256_mul_pd(r, p5));
    p = _mm256_add_pd(p3, _mm256_mul_pd(r, p));
    p = _mm256_add_pd(p2, _mm256_mul_pd(r, p));
    p = _mm256_add_pd(one, _mm256_mul_pd(r, p));
    p = _mm256_add_pd(one, _mm256_mul_pd(r, p));
    const __m256i e = _mm256_slli_epi64(_mm256_cvtepi32_epi64(_mm_add_epi32(_mm_srai_epi32(nn, 6), bias)), 52);
    const __m256d frac = _mm256_mask_i32gather_pd(zero, kExpFrac, _mm_and_si128(nn, low6), all, 8);
    const __m256d y = _mm256_mul_pd(_mm256_mul_pd(_mm256_castsi256_pd(e), frac), p);
    if (kList) {
      alignas(32) double lanes[4];
      alignas(16) int32_t at[4];
      _mm256_store_pd(lanes, _mm256_blendv_pd(zero, y, ok));
      _mm_store_si128((__m128i*)at, id);
      for (int l = 0; l < 4; l++) out[at[l]] = lanes[l];
    } else {
      _mm256_storeu_pd(out + i, _mm256_blendv_pd(zero, y, ok));
    }
  }
  for (; i < n; i++) {
    const int64_t j = kList ? ids[i] : i;
    out[j] = exp_neg(((double)L[j] - max) * inv_t);
  }
}
const bool kHaveAvx2 = __builtin_cpu_supports("avx2");
#endif

void exp_neg_rows(const float* L, int64_t n, double max, double inv_t, double* out) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (kHaveAvx2) return exp_neg_avx2<false>(L, nullptr, n, max, inv_t, out);
#endif
  for (int64_t i = 0; i < n; i++) out[i] = exp_neg(((double)L[i] - max) * inv_t);
}

// The same over a candidate list: out[ids[j]] = exp_neg(((double)L[ids[j]] - max) * inv_t).
void exp_neg_list(const float* L, const int32_t* ids, int64_t n, double max, double inv_t, double* out) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (kHaveAvx2) return exp_neg_avx2<true>(L, ids, n, max, inv_t, out);
#endif
  for (int64_t j = 0; j < n; j++) out[ids[j]] = exp_neg(((double)L[ids[j]] - max) * inv_t);
}

// ---- scratch space: one per thread, grown to the largest vocabulary seen (Workspace).

constexpr int kBuckets = 2048;
constexpr int kSortBelow = 64;
constexpr int kMaxLevels = 6;
constexpr int kHeapMax = 128;
constexpr double kMassSpan = 64;

struct Ws {
  int64_t capacity = 0;
  std::vector<float> logits;      // (V,) working logits
  std::vector<double> ex;         // (V,) weights by token id
  std::vector<int32_t> cand, spare, touched;
  std::vector<uint16_t> bucket_of;
  std::vector<uint32_t> counts;   // all zero between calls
  double weight[kBuckets + 1];
  // result registers of the loops
  double reg_max = 0, reg_min = 0, reg_acc = 0;
  int64_t reg_bad = -1, reg_rest = 0;

  void ensure(int64_t n) {
    if (n <= capacity) return;
    capacity = n;
    logits.assign(n, 0.0f);
    ex.assign(n, 0.0);
    cand.assign(n, 0);
    spare.assign(n, 0);
    touched.assign(n, 0);
    bucket_of.assign(n, 0);
    counts.assign(n, 0);
  }
};

Ws& workspace() {
  thread_local Ws ws;
  return ws;
}

struct ByLogitThenId {
  const float* L;
  bool operator()(int32_t a, int32_t b) const { return L[a] > L[b] || (L[a] == L[b] && a < b); }
};

// ---- loops over the whole vocabulary

int32_t scan_greedy(Ws& w, const float* L, int32_t V) {
  int32_t token = -1;
  double max = -kInf, z = 0;
  for (int32_t i = 0; i < V; i++) {
    const double v = L[i];
    if (v > max) {
      if (v == kInf) {
        w.reg_bad = i;
        return -2;
      }
      z = z * exp_neg(max - v) + 1;
      max = v;
      token = i;
    } else if (v == v) {
      z += exp_neg(v - max);
    } else {
      w.reg_bad = i;
      return -2;
    }
  }
  w.reg_max = max;
  w.reg_acc = z;
  return token;
}

int32_t scan_argmax(Ws& w, const float* L, int32_t V) {
  int32_t token = -1;
  float max = -INFINITY;
  for (int32_t i = 0; i < V; i++) {
    const float v = L[i];
    if (v > max) {
      if (v == INFINITY) {
        w.reg_bad = i;
        return -2;
      }
      max = v;
      token = i;
    } else if (v != v) {
      w.reg_bad = i;
      return -2;
    }
  }
  return token;
}

int64_t scan_max_min_scalar(Ws& w, const float* L, int32_t V);

// scan_max_min eight logits at a time with AVX2 (max and min are exact, so the results are the
// scalar loop's); a row with a NaN or +inf goes to the scalar loop, which names the first one.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
__attribute__((target("avx2"))) int64_t scan_max_min_avx2(Ws& w, const float* L, int32_t V) {
  const __m256 ninf = _mm256_set1_ps(-INFINITY), pinf = _mm256_set1_ps(INFINITY);
  __m256 hi = ninf, lo = pinf, bad = _mm256_setzero_ps();
  __m256i count = _mm256_setzero_si256();
  int32_t i = 0;
  for (; i + 8 <= V; i += 8) {
    const __m256 v = _mm256_loadu_ps(L + i);
    bad = _mm256_or_ps(bad, _mm256_or_ps(_mm256_cmp_ps(v, v, _CMP_UNORD_Q), _mm256_cmp_ps(v, pinf, _CMP_EQ_OQ)));
    const __m256 finite = _mm256_cmp_ps(v, ninf, _CMP_NEQ_OQ);
    count = _mm256_sub_epi32(count, _mm256_castps_si256(finite));
    hi = _mm256_max_ps(hi, v);
    lo = _mm256_min_ps(lo, _mm256_blendv_ps(pinf, v, finite));
  }
  if (_mm256_movemask_ps(bad)) return scan_max_min_scalar(w, L, V);
  alignas(32) float h[8], l[8];
  alignas(32) int32_t c[8];
  _mm256_store_ps(h, hi), _mm256_store_ps(l, lo), _mm256_store_si256((__m256i*)c, count);
  float max = -INFINITY, min = INFINITY;
  int64_t n = 0;
  for (int k = 0; k < 8; k++) {
    if (h[k] > max) max = h[k];
    if (l[k] < min) min = l[k];
    n += c[k];
  }
  for (; i < V; i++) {
    const float v = L[i];
    if (v == -INFINITY) continue;
    if (!(v < INFINITY)) return scan_max_min_scalar(w, L, V);
    n++;
    if (v > max) max = v;
    if (v < min) min = v;
  }
  w.reg_max = max;
  w.reg_min = min;
  return n;
}
#endif

int64_t scan_max_min(Ws& w, const float* L, int32_t V) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (kHaveAvx2) return scan_max_min_avx2(w, L, V);
#endif
  return scan_max_min_scalar(w, L, V);
}

int64_t scan_max_min_scalar(Ws& w, const float* L, int32_t V) {
  int64_t n = 0;
  float max = -INFINITY, min = INFINITY;
  for (int32_t i = 0; i < V; i++) {
    const float v = L[i];
    if (v == -INFINITY) continue;
    if (!(v < INFINITY)) {
      w.reg_bad = i;
      return -1;
    }
    n++;
    if (v > max) max = v;
    if (v < min) min = v;
  }
  w.reg_max = max;
  w.reg_min = min;
  return n;
}

int64_t collect_finite(const float* L, int32_t V, int32_t* cand) {
  int64_t n = 0;
  for (int32_t i = 0; i < V; i++)
    if (L[i] != -INFINITY) cand[n++] = i;
  return n;
}

int64_t heap_fill(Ws& w, const float* L, int32_t V, int64_t k, int32_t* heap) {
  int64_t size = 0;
  int32_t i = 0;
  for (; i < V && size < k; i++) {
    const float v = L[i];
    if (v == -INFINITY) continue;
    if (!(v < INFINITY)) {
      w.reg_bad = i;
      return -1;
    }
    heap[size++] = i;
  }
  w.reg_acc = (double)size;
  return i;
}

// A min-heap on goodness (logit desc, id asc): the root is the worst kept token.
inline bool worse(const float* L, int32_t a, int32_t b) { return L[a] < L[b] || (L[a] == L[b] && a > b); }

void sift_down(const float* L, int32_t* heap, int64_t i, int64_t size) {
  const int32_t x = heap[i];
  for (;;) {
    int64_t c = 2 * i + 1;
    if (c >= size) break;
    if (c + 1 < size && worse(L, heap[c + 1], heap[c])) c++;
    if (!worse(L, heap[c], x)) break;
    heap[i] = heap[c];
    i = c;
  }
  heap[i] = x;
}

void heapify(const float* L, int32_t* heap, int64_t size) {
  for (int64_t i = (size >> 1) - 1; i >= 0; i--) sift_down(L, heap, i, size);
}

void heap_sort(const float* L, int32_t* heap, int64_t size) {
  for (int64_t end = size - 1; end > 0; end--) {
    std::swap(heap[0], heap[end]);
    sift_down(L, heap, 0, end);
  }
}

int heap_scan(Ws& w, const float* L, int32_t V, int32_t start, int64_t k, int32_t* heap) {
  float root_value = L[heap[0]];
  for (int32_t i = start; i < V; i++) {
    const float v = L[i];
    if (v <= root_value) continue;
    if (!(v < INFINITY)) {
      w.reg_bad = i;
      return -1;
    }
    heap[0] = i;
    sift_down(L, heap, 0, k);
    root_value = L[heap[0]];
  }
  return 0;
}

void heap_scan_list(const float* L, const int32_t* src, int64_t start, int64_t n, int64_t k, int32_t* heap) {
  int32_t root = heap[0];
  float root_value = L[root];
  for (int64_t j = start; j < n; j++) {
    const int32_t id = src[j];
    const float v = L[id];
    if (v < root_value || (v == root_value && id > root)) continue;
    heap[0] = id;
    sift_down(L, heap, 0, k);
    root = heap[0];
    root_value = L[root];
  }
}

void heap_best(const float* L, const int32_t* src, int64_t n, int64_t k, int32_t* dst) {
  std::memcpy(dst, src, sizeof(int32_t) * k);
  heapify(L, dst, k);
  heap_scan_list(L, src, k, n, k, dst);
  heap_sort(L, dst, k);
}

int64_t heap_top_k(Ws& w, const float* L, int32_t V, int64_t k, int32_t* dst) {
  const int64_t next = heap_fill(w, L, V, k, dst);
  if (next < 0) return -1;
  const int64_t size = (int64_t)w.reg_acc;
  if (size < k) {
    std::sort(dst, dst + size, ByLogitThenId{L});
    return size;
  }
  heapify(L, dst, k);
  if (heap_scan(w, L, V, (int32_t)next, k, dst) < 0) return -1;
  heap_sort(L, dst, k);
  return k;
}

// ---- loops over candidate lists

void min_max_of(Ws& w, const float* L, const int32_t* src, int64_t n) {
  float hi = -INFINITY, lo = INFINITY;
  for (int64_t j = 0; j < n; j++) {
    const float v = L[src[j]];
    if (v > hi) hi = v;
    if (v < lo) lo = v;
  }
  w.reg_max = hi;
  w.reg_min = lo;
}

inline int bucket_index(double t) { return t < kBuckets ? (int)t : kBuckets - 1; }

void bucketize(Ws& w, const float* L, const int32_t* src, int64_t n, double hi, double scale, bool mass) {
  std::fill(w.weight, w.weight + kBuckets + 1, 0.0);
  for (int64_t j = 0; j < n; j++) {
    const int32_t id = src[j];
    const double t = (hi - (double)L[id]) * scale;
    const int b = bucket_index(t);
    w.bucket_of[j] = (uint16_t)b;
    w.weight[b] += mass ? w.ex[id] : 1;
  }
}

double bucketize_mass(Ws& w, const float* L, const int32_t* src, int64_t n, double max, double scale) {
  std::fill(w.weight, w.weight + kBuckets + 1, 0.0);
  exp_neg_list(L, src, n, max, 1, w.ex.data());  // exp_neg(-(max - l)) (see bucketize_mass_all)
  double z = 0;
  for (int64_t j = 0; j < n; j++) {
    const int32_t id = src[j];
    const double d = max - (double)L[id];
    const double e = w.ex[id];
    z += e;
    const int b = bucket_index(d * scale);
    w.bucket_of[j] = (uint16_t)b;
    w.weight[b] += e;
  }
  return z;
}

int find_cut(Ws& w, double quota) {
  double acc = 0;
  for (int b = 0; b < kBuckets; b++) {
    const double next = acc + w.weight[b];
    if (next >= quota) {
      w.reg_acc = acc;
      return b;
    }
    acc = next;
  }
  w.reg_acc = acc;
  return -1;
}

int64_t emit_buckets(Ws& w, int32_t* src, int64_t n, int cut, int32_t* dst, int64_t out) {
  int64_t m = 0;
  for (int64_t j = 0; j < n; j++) {
    const int b = w.bucket_of[j];
    const int32_t id = src[j];
    dst[out] = id;
    out += b < cut;
    src[m] = id;
    m += b == cut;
  }
  w.reg_rest = m;
  return out;
}

double bucketize_mass_all(Ws& w, const float* L, int32_t V, double max, double scale) {
  std::fill(w.weight, w.weight + kBuckets + 1, 0.0);
  exp_neg_rows(L, V, max, 1, w.ex.data());  // exp_neg(-(max - v)): v - max is exactly -(max - v)
  double z = 0;
  for (int32_t i = 0; i < V; i++) {
    const double v = L[i];
    const double d = max - v;
    const double e = w.ex[i];
    z += e;
    const double t = d * scale;
    const int b = t < kBuckets ? (int)t : v == -kInf ? kBuckets : kBuckets - 1;
    w.bucket_of[i] = (uint16_t)b;
    w.weight[b] += e;
  }
  return z;
}

// emit_buckets_all sixteen ids at a time with AVX-512 (compress of the ids below / at the cut).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
const bool kHaveAvx512 = __builtin_cpu_supports("avx512f");
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"  // inside GCC's own intrinsics header
__attribute__((target("avx512f"))) int64_t emit_buckets_all_avx512(Ws& w, int32_t V, int cut, int32_t* dst, int32_t* rest) {
  int64_t out = 0, m = 0;
  const __m512i vcut = _mm512_set1_epi32(cut), step = _mm512_set1_epi32(16);
  __m512i ids = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  int32_t i = 0;
  for (; i + 16 <= V; i += 16) {
    const __m512i b = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i*)(w.bucket_of.data() + i)));
    const __mmask16 below = _mm512_cmplt_epi32_mask(b, vcut), at = _mm512_cmpeq_epi32_mask(b, vcut);
    _mm512_storeu_si512(dst + out, _mm512_maskz_compress_epi32(below, ids));
    _mm512_storeu_si512(rest + m, _mm512_maskz_compress_epi32(at, ids));
    out += __builtin_popcount(below);
    m += __builtin_popcount(at);
    ids = _mm512_add_epi32(ids, step);
  }
  for (; i < V; i++) {
    const int b = w.bucket_of[i];
    if (b < cut) dst[out++] = i;
    if (b == cut) rest[m++] = i;
  }
  w.reg_rest = m;
  return out;
}
#pragma GCC diagnostic pop
#endif

int64_t emit_buckets_all(Ws& w, int32_t V, int cut, int32_t* dst, int32_t* rest) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  if (kHaveAvx512) return emit_buckets_all_avx512(w, V, cut, dst, rest);
#endif
  int64_t out = 0, m = 0;
  for (int32_t i = 0; i < V; i++) {
    const int b = w.bucket_of[i];
    dst[out] = i;
    out += b < cut;
    rest[m] = i;
    m += b == cut;
  }
  w.reg_rest = m;
  return out;
}

double softmax_all(Ws& w, const float* L, int32_t V, double max, double inv_t) {
  exp_neg_rows(L, V, max, inv_t, w.ex.data());
  double z = 0;
  for (int32_t i = 0; i < V; i++) z += w.ex[i];
  return z;
}

int32_t draw_all(const Ws& w, int32_t V, double r) {
  double acc = 0;
  for (int32_t i = 0; i < V; i++) {
    acc += w.ex[i];
    if (acc > r) return i;
  }
  return -1;
}

int64_t collect_at_least(const float* L, int32_t V, double threshold, int32_t* cand) {
  int64_t n = 0;
  for (int32_t i = 0; i < V; i++)
    if ((double)L[i] >= threshold) cand[n++] = i;
  return n;
}

int64_t filter_at_least(const float* L, int32_t* cur, int64_t n, double threshold) {
  int64_t m = 0;
  for (int64_t j = 0; j < n; j++)
    if ((double)L[cur[j]] >= threshold) cur[m++] = cur[j];
  return m;
}

double softmax_weights(Ws& w, const float* L, const int32_t* cur, int64_t n, double max, double inv_t) {
  exp_neg_list(L, cur, n, max, inv_t, w.ex.data());
  double z = 0;
  for (int64_t j = 0; j < n; j++) z += w.ex[cur[j]];
  return z;
}

double sum_weights(const Ws& w, const int32_t* cur, int64_t n) {
  double z = 0;
  for (int64_t j = 0; j < n; j++) z += w.ex[cur[j]];
  return z;
}

int64_t draw_index(const Ws& w, const int32_t* cur, int64_t n, double r) {
  double acc = 0;
  for (int64_t j = 0; j < n; j++) {
    acc += w.ex[cur[j]];
    if (acc > r) return j;
  }
  return -1;
}

int64_t prefix_reaching(const Ws& w, const int32_t* cur, int64_t n, double quota) {
  double acc = 0;
  for (int64_t j = 0; j < n; j++) {
    acc += w.ex[cur[j]];
    if (acc >= quota) return j + 1;
  }
  return n;
}

// ---- selection (selectBest, topPSelect, topPAll)

int64_t select_best(Ws& w, const float* L, int32_t* src, int64_t n, int32_t* dst, int64_t out, bool mass, double quota) {
  int64_t sn = n;
  for (int level = 0; sn > kSortBelow && level < kMaxLevels; level++) {
    min_max_of(w, L, src, sn);
    const double hi = w.reg_max;
    const double span = hi - w.reg_min;
    if (!(span > 0 && span < kInf)) break;
    bucketize(w, L, src, sn, hi, kBuckets / span, mass);
    const int cut = find_cut(w, quota);
    if (cut < 0) {
      std::memcpy(dst + out, src, sizeof(int32_t) * sn);
      return out + sn;
    }
    out = emit_buckets(w, src, sn, cut, dst, out);
    sn = w.reg_rest;
    quota -= w.reg_acc;
  }
  std::sort(src, src + sn, ByLogitThenId{L});
  const int64_t take = mass ? prefix_reaching(w, src, sn, quota) : (int64_t)quota;
  std::memcpy(dst + out, src, sizeof(int32_t) * std::min(take, sn));
  return out + take;
}

int64_t top_p_select(Ws& w, const float* L, int32_t* src, int64_t n, int32_t* dst, double p, double max, double lo) {
  const double span = std::min(max - lo, kMassSpan);
  const double z = bucketize_mass(w, L, src, n, max, span > 0 ? kBuckets / span : 0);
  const double target = p * z;
  const int cut = find_cut(w, target);
  if (cut < 0) {
    std::memcpy(dst, src, sizeof(int32_t) * n);
    return n;
  }
  const int64_t out = emit_buckets(w, src, n, cut, dst, 0);
  return select_best(w, L, src, w.reg_rest, dst, out, true, target - w.reg_acc);
}

int64_t top_p_all(Ws& w, const float* L, int32_t V, int32_t* dst, int32_t* rest, double p, double max, double lo) {
  const double span = std::min(max - lo, kMassSpan);
  const double z = bucketize_mass_all(w, L, V, max, span > 0 ? kBuckets / span : 0);
  const double target = p * z;
  const int cut = find_cut(w, target);
  if (cut < 0) return collect_finite(L, V, dst);
  const int64_t out = emit_buckets_all(w, V, cut, dst, rest);
  return select_best(w, L, rest, w.reg_rest, dst, out, true, target - w.reg_acc);
}

// ---- results and errors

std::vector<TokenLogprob> top_tokens(Ws& w, const float* L, int32_t* cur, int64_t n, bool sorted, int32_t* spare, int64_t N,
                                     double max, double inv_t, double log_z) {
  const int64_t k = std::min(N, n);
  const int32_t* ids;
  if (sorted) {
    ids = cur;
  } else if (k <= kHeapMax) {
    heap_best(L, cur, n, k, spare);
    ids = spare;
  } else {
    int64_t m = n;
    if (k < n) m = select_best(w, L, cur, n, spare, 0, false, (double)k);
    else std::memcpy(spare, cur, sizeof(int32_t) * n);
    std::sort(spare, spare + m, ByLogitThenId{L});
    ids = spare;
  }
  std::vector<TokenLogprob> top((size_t)k);
  for (int64_t j = 0; j < k; j++) {
    const int32_t id = ids[j];
    top[j] = {id, ((double)L[id] - max) * inv_t - log_z};
  }
  return top;
}

// JS's String(number) for the values a logit can hold in an error message.
std::string js_number(double v) {
  if (v != v) return "NaN";
  if (v == kInf) return "Infinity";
  if (v == -kInf) return "-Infinity";
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

std::string bad_logit(const float* original, const float* L, int64_t i) {
  const float o = original[i];
  if (!(o < INFINITY) && o != -INFINITY)
    return "sample: logits[" + std::to_string(i) + "] is " + js_number(o) +
           " of type number; expected finite numbers or -Infinity in logits";
  return "sample: the logit of token " + std::to_string(i) + " (" + js_number(o) + ") became " + js_number(L[i]) +
         " of type number after logitBias and penalties; logits must stay finite";
}

std::string no_token_left(int32_t V) {
  return "sample: no token left to sample: all " + std::to_string(V) +
         " logits are -Infinity after logitBias and penalties";
}

bool penalties_on(const SamplingParams& o) {
  return o.penalty_last_n != 0 && (o.repeat_penalty != 1 || o.presence_penalty != 0 || o.frequency_penalty != 0);
}

// The first history entry the penalties read.
int64_t penalty_start(const SamplingParams& o, int64_t len) {
  return o.penalty_last_n < 0 ? 0 : std::max<int64_t>(0, len - o.penalty_last_n);
}

// Sampler.applyPenalties; "" or the error.
std::string apply_penalties(Ws& w, float* L, const SamplingParams& o, const int32_t* history, int64_t len, int32_t V) {
  if (!penalties_on(o)) return "";
  const std::string bad = check_history(o, history, len, V);
  if (!bad.empty()) return bad;
  const int64_t start = penalty_start(o, len);
  int64_t n_touched = 0;
  for (int64_t i = start; i < len; i++) {
    const int32_t t = history[i];
    if (w.counts[t]++ == 0) w.touched[n_touched++] = t;
  }
  for (int64_t j = 0; j < n_touched; j++) {
    const int32_t t = w.touched[j];
    const double c = w.counts[t];
    w.counts[t] = 0;
    double l = L[t];
    if (o.repeat_penalty != 1) l = l > 0 ? l / o.repeat_penalty : l * o.repeat_penalty;
    L[t] = (float)(l - (c * o.frequency_penalty + o.presence_penalty));
  }
  return "";
}

}  // namespace

std::string check_history(const SamplingParams& o, const int32_t* history, int64_t len, int32_t V) {
  if (!penalties_on(o)) return "";
  for (int64_t i = penalty_start(o, len); i < len; i++) {
    const int32_t t = history[i];
    if (t < 0 || t >= V)
      return "sample: expected a token id in [0, " + std::to_string(V) + ") for history[" + std::to_string(i) +
             "] but received " + std::to_string(t) + " of type number";
  }
  return "";
}

SamplerRng SamplerRng::from_seed(int64_t seed) {
  SamplerRng r;
  uint64_t x = (uint64_t)seed;
  for (int i = 0; i < 2; i++) {
    x += 0x9e3779b97f4a7c15ull;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    r.s[2 * i] = (uint32_t)z;
    r.s[2 * i + 1] = (uint32_t)(z >> 32);
  }
  if ((r.s[0] | r.s[1] | r.s[2] | r.s[3]) == 0) r.s[0] = 0x9e3779b9u;
  return r;
}

uint32_t SamplerRng::next_u32() {
  const uint32_t s1 = s[1];
  const uint32_t x = s1 * 5u;
  const uint32_t result = ((x << 7) | (x >> 25)) * 9u;
  const uint32_t t = s1 << 9;
  s[2] ^= s[0];
  s[3] ^= s1;
  s[1] = s1 ^ s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = (s[3] << 11) | (s[3] >> 21);
  return result;
}

double SamplerRng::next_double() {
  const uint32_t hi = next_u32() >> 5;
  const uint32_t lo = next_u32() >> 6;
  return ((double)hi * 67108864.0 + (double)lo) / 9007199254740992.0;
}

std::string check_sampling_params(const SamplingParams& p, int32_t vocab) {
  auto bad = [](const char* name, const char* expected, double v) {
    return std::string("sample: expected ") + expected + " for " + name + " but received " + js_number(v) + " of type number";
  };
  if (!(std::isfinite(p.temperature) && p.temperature >= 0)) return bad("temperature", "a finite number >= 0", p.temperature);
  if (p.top_k < 0) return bad("topK", "an integer >= 0", (double)p.top_k);
  if (!(p.top_p > 0 && p.top_p <= 1)) return bad("topP", "a number in (0, 1]", p.top_p);
  if (!(p.min_p >= 0 && p.min_p <= 1)) return bad("minP", "a number in [0, 1]", p.min_p);
  if (!(std::isfinite(p.repeat_penalty) && p.repeat_penalty > 0)) return bad("repeatPenalty", "a finite number > 0", p.repeat_penalty);
  if (!std::isfinite(p.presence_penalty)) return bad("presencePenalty", "a finite number", p.presence_penalty);
  if (!std::isfinite(p.frequency_penalty)) return bad("frequencyPenalty", "a finite number", p.frequency_penalty);
  if (p.penalty_last_n < -1) return bad("penaltyLastN", "an integer >= -1", (double)p.penalty_last_n);
  if (p.bias_ids.size() != p.bias_values.size()) return "sample: logit bias ids and values differ in length";
  for (size_t j = 0; j < p.bias_ids.size(); j++) {
    if (p.bias_ids[j] < 0 || p.bias_ids[j] >= vocab)
      return "sample: expected a token id below vocabSize (" + std::to_string(vocab) + ") for a logitBias key but received " +
             std::to_string(p.bias_ids[j]) + " of type number";
    const double v = p.bias_values[j];
    if (v != v || v == kInf)
      return "sample: expected a finite number or -Infinity for logitBias[" + std::to_string(p.bias_ids[j]) + "] but received " +
             js_number(v) + " of type number";
  }
  return "";
}

SampleResult sample_row(const SampleRequest& req, int32_t V) {
  SampleResult res;
  const SamplingParams& o = *req.params;
  const int64_t n_top = req.top_n > 0 ? req.top_n : 0;
  const bool want_logprob = req.top_n >= 0;
  Ws& w = workspace();
  w.ensure(V);
  float* L = w.logits.data();
  std::memcpy(L, req.logits, sizeof(float) * V);
  for (size_t j = 0; j < o.bias_ids.size(); j++) L[o.bias_ids[j]] = (float)((double)L[o.bias_ids[j]] + o.bias_values[j]);
  res.error = apply_penalties(w, L, o, req.history, req.history_len, V);
  if (!res.error.empty()) return res;

  if (o.temperature == 0 && !want_logprob) {
    const int32_t token = scan_argmax(w, L, V);
    if (token == -2) res.error = bad_logit(req.logits, L, w.reg_bad);
    else if (token < 0) res.error = no_token_left(V);
    res.token = token;
    res.logprob = std::numeric_limits<double>::quiet_NaN();
    return res;
  }
  int32_t* cur = w.cand.data();
  int32_t* spare = w.spare.data();
  if (o.temperature == 0) {
    const int32_t token = scan_greedy(w, L, V);
    if (token == -2) {
      res.error = bad_logit(req.logits, L, w.reg_bad);
      return res;
    }
    if (token < 0) {
      res.error = no_token_left(V);
      return res;
    }
    const double max = w.reg_max;
    const double log_z = std::log(w.reg_acc);
    res.token = token;
    res.logprob = 0 - log_z;
    if (n_top > 0) {
      const int64_t n = collect_finite(L, V, cur);
      res.top = top_tokens(w, L, cur, n, false, spare, n_top, max, 1, log_z);
    }
    return res;
  }

  int64_t n;
  double max;
  bool sorted = false, have_weights = false, all = false;
  const int64_t top_k = o.top_k;
  const double top_p = o.top_p, min_p = o.min_p;
  if (top_k > 0 && top_k <= kHeapMax && top_k < V) {
    n = heap_top_k(w, L, V, top_k, cur);
    if (n < 0) {
      res.error = bad_logit(req.logits, L, w.reg_bad);
      return res;
    }
    if (n == 0) {
      res.error = no_token_left(V);
      return res;
    }
    max = L[cur[0]];
    sorted = true;
    if (top_p < 1 && n > 1) {
      const double z = softmax_weights(w, L, cur, n, max, 1);
      n = prefix_reaching(w, cur, n, top_p * z);
      have_weights = true;
    }
  } else {
    n = scan_max_min(w, L, V);
    if (n < 0) {
      res.error = bad_logit(req.logits, L, w.reg_bad);
      return res;
    }
    if (n == 0) {
      res.error = no_token_left(V);
      return res;
    }
    max = w.reg_max;
    double lo = w.reg_min;
    all = true;
    if (top_k > 0 && top_k < n) {
      collect_finite(L, V, spare);
      n = select_best(w, L, spare, n, cur, 0, false, (double)top_k);
      all = false;
      min_max_of(w, L, cur, n);
      lo = w.reg_min;
    }
    if (top_p < 1 && n > 1) {
      if (all) {
        n = top_p_all(w, L, V, cur, spare, top_p, max, lo);
        all = false;
      } else {
        n = top_p_select(w, L, cur, n, spare, top_p, max, lo);
        std::swap(cur, spare);
      }
      have_weights = true;
    }
  }
  if (min_p > 0 && n > 1) {
    const double threshold = max + std::log(min_p);
    if (all) n = collect_at_least(L, V, threshold, cur);
    else n = filter_at_least(L, cur, n, threshold);
    all = false;
  }

  const double inv_t = 1 / o.temperature;
  const double r = req.rng->next_double();
  int32_t token;
  double z;
  if (all) {
    z = softmax_all(w, L, V, max, inv_t);
    token = draw_all(w, V, r * z);
    if (token < 0) {
      token = V - 1;
      while (token > 0 && !(w.ex[token] > 0)) token--;
    }
    if (n_top > 0) n = collect_finite(L, V, cur);
  } else {
    z = inv_t == 1 && have_weights ? sum_weights(w, cur, n) : softmax_weights(w, L, cur, n, max, inv_t);
    int64_t j = draw_index(w, cur, n, r * z);
    if (j < 0) {
      j = n - 1;
      while (j > 0 && !(w.ex[cur[j]] > 0)) j--;
    }
    token = cur[j];
  }
  const double log_z = std::log(z);
  res.token = token;
  res.logprob = ((double)L[token] - max) * inv_t - log_z;
  if (n_top > 0) res.top = top_tokens(w, L, cur, n, sorted, spare, n_top, max, inv_t, log_z);
  return res;
}

void sample_rows(const SampleRequest* reqs, int64_t n, int32_t vocab, SampleResult* out, ThreadPool* pool) {
  auto run = [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; i++) out[i] = sample_row(reqs[i], vocab);
  };
  // A row costs a few passes over its logits (~1 ns a token): rows go to the pool's threads
  // when there are several and each chunk is worth more than waking a thread (~20 us).
  const int64_t grain = std::max<int64_t>(1, (int64_t)20000 / std::max<int32_t>(vocab, 1));
  if (pool && pool->size() > 1 && n >= 2 * grain) pool->parallel_for(n, grain, run);
  else run(0, n);
}

}  // namespace tessera
