// Native test cases (linked into tessera_native_test) for the forward step's own ops in ops.h:
// embed, add_bias, add_rmsnorm, gather_rows, scatter_add_rows, top_k_rows, argmax_rows, kv_compact.
// tessera::cpu on a 1-thread and a 3-thread pool against the float64 references in tessera::ref.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <vector>

#include "harness.h"
#include "tessera/dtype.h"
#include "tessera/layouts.h"
#include "tessera/ops.h"
#include "tessera/threadpool.h"

using namespace tessera;
using namespace harness;

namespace {

std::vector<float> randv(std::mt19937_64& g, size_t n, float lo = -1.f, float hi = 1.f) {
  std::uniform_real_distribution<float> d(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = d(g);
  return v;
}

// max |a - b| / (1 + |b|)
double max_rel(const std::vector<float>& a, const std::vector<float>& b) {
  double e = 0;
  for (size_t i = 0; i < a.size(); i++) e = std::max(e, std::fabs((double)a[i] - b[i]) / (1.0 + std::fabs((double)b[i])));
  return e;
}

template <class F>
void for_pools(F f) {
  ThreadPool p1(1), p3(3, 0);
  f(p1, "pool 1");
  f(p3, "pool 3");
}

}  // namespace

TEST_CASE(model_ops_embed) {
  std::mt19937_64 g(81);
  for (DType dt : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K}) {
    const int64_t V = 9, E = 256;
    const std::vector<float> f = randv(g, V * E, -2.f, 2.f);
    std::vector<uint8_t> table((size_t)dtype_bytes(dt, V * E));
    ref::convert(f.data(), DType::F32, table.data(), dt, V * E);
    const std::vector<int32_t> tokens = {0, 8, 3, 3, 5};
    std::vector<float> want(tokens.size() * E), got(want.size(), NAN);
    ref::embed(table.data(), dt, E, tokens.data(), (int64_t)tokens.size(), want.data());
    for_pools([&](ThreadPool& p, const char* name) {
      std::fill(got.begin(), got.end(), NAN);
      cpu::embed(p, table.data(), dt, E, tokens.data(), (int64_t)tokens.size(), got.data());
      EXPECT(got == want, "%s %s: rows differ", dtype_info(dt).name, name);
    });
    // row 3 twice: the same row
    EXPECT(std::equal(want.begin() + 2 * E, want.begin() + 3 * E, want.begin() + 3 * E), "repeated token");
  }
}

TEST_CASE(model_ops_bias_and_add_rmsnorm) {
  std::mt19937_64 g(82);
  for (int64_t rows : {1, 5})
    for (int64_t n : {7, 768}) {
      const std::vector<float> y = randv(g, rows * n), b = randv(g, n), w = randv(g, n), x0 = randv(g, rows * n, -4.f, 4.f);
      std::vector<float> rb = y, rx = x0, rxn(rows * n);
      ref::add_bias(rb.data(), b.data(), rows, n);
      ref::add_rmsnorm(rx.data(), y.data(), w.data(), rxn.data(), rows, n, 1e-5f);
      for_pools([&](ThreadPool& p, const char* name) {
        std::vector<float> cb = y, cx = x0, cxn(rows * n, NAN);
        cpu::add_bias(p, cb.data(), b.data(), rows, n);
        cpu::add_rmsnorm(p, cx.data(), y.data(), w.data(), cxn.data(), rows, n, 1e-5f);
        EXPECT(max_rel(cb, rb) <= 1e-7, "add_bias %s rows=%lld n=%lld: %g", name, (long long)rows, (long long)n, max_rel(cb, rb));
        EXPECT(max_rel(cx, rx) <= 1e-7, "add_rmsnorm sum %s: %g", name, max_rel(cx, rx));
        EXPECT(max_rel(cxn, rxn) <= 2e-6, "add_rmsnorm norm %s rows=%lld n=%lld: %g", name, (long long)rows, (long long)n,
               max_rel(cxn, rxn));
      });
    }
}

TEST_CASE(model_ops_gather_scatter_rows) {
  std::mt19937_64 g(83);
  const int64_t rows = 6, n = 33;
  const std::vector<float> x = randv(g, rows * n);
  const std::vector<int32_t> sel = {5, 0, 2};
  const std::vector<float> y = randv(g, sel.size() * n);
  std::vector<float> rg(sel.size() * n), rs = x;
  ref::gather_rows(x.data(), sel.data(), (int64_t)sel.size(), n, rg.data());
  ref::scatter_add_rows(rs.data(), y.data(), sel.data(), (int64_t)sel.size(), n);
  EXPECT(std::equal(rg.begin(), rg.begin() + n, x.begin() + 5 * n), "ref gather row 5");
  EXPECT(std::equal(rs.begin() + n, rs.begin() + 2 * n, x.begin() + n), "ref scatter leaves row 1");
  for_pools([&](ThreadPool& p, const char* name) {
    std::vector<float> cg(rg.size(), NAN), cs = x;
    cpu::gather_rows(p, x.data(), sel.data(), (int64_t)sel.size(), n, cg.data());
    cpu::scatter_add_rows(p, cs.data(), y.data(), sel.data(), (int64_t)sel.size(), n);
    EXPECT(cg == rg, "gather %s", name);
    EXPECT(cs == rs, "scatter_add %s", name);
    // gather then scatter of (gathered - x) gives zeros back on those rows: the two are inverses
    std::vector<float> z = x, neg(cg.size());
    for (size_t i = 0; i < cg.size(); i++) neg[i] = -cg[i];
    cpu::scatter_add_rows(p, z.data(), neg.data(), sel.data(), (int64_t)sel.size(), n);
    bool zero = true;
    for (int32_t r : sel)
      for (int64_t i = 0; i < n; i++) zero = zero && z[r * n + i] == 0.f;
    EXPECT(zero, "scatter_add of -gather zeroes the rows (%s)", name);
  });
}

TEST_CASE(model_ops_top_k_argmax) {
  std::mt19937_64 g(84);
  for (int64_t n : {1, 7, 1000, 32000})
    for (int k : {1, 5, 40}) {
      const int64_t rows = 3;
      std::vector<float> x = randv(g, rows * n, -5.f, 5.f);
      if (n >= 1000) {  // ties, infinities and NaN in row 1
        x[n + 3] = x[n + 9] = x[n + 500] = 7.f;
        x[n + 10] = INFINITY, x[n + 11] = -INFINITY, x[n + 12] = NAN;
      }
      if (n == 7) x[0] = x[1] = NAN;  // row 0: five values for k up to 40
      std::vector<int32_t> ri(rows * k), ai(rows);
      std::vector<float> rv(rows * k), av(rows);
      ref::top_k_rows(x.data(), rows, n, k, ri.data(), rv.data());
      ref::argmax_rows(x.data(), rows, n, ai.data(), av.data());
      if (n >= 1000 && k >= 5) EXPECT(ri[k] == 10 && ri[k + 1] == 3 && ri[k + 2] == 9 && ri[k + 3] == 500,
                                      "ref ties by index: %d %d %d %d", ri[k], ri[k + 1], ri[k + 2], ri[k + 3]);
      for_pools([&](ThreadPool& p, const char* name) {
        std::vector<int32_t> ci(rows * k, -7), ca(rows, -7);
        std::vector<float> cv(rows * k, 0.f), cav(rows, 0.f);
        cpu::top_k_rows(p, x.data(), rows, n, k, ci.data(), cv.data());
        cpu::argmax_rows(p, x.data(), rows, n, ca.data(), cav.data());
        bool same = ci == ri;
        for (size_t i = 0; i < cv.size(); i++) same = same && (cv[i] == rv[i]);
        EXPECT(same, "top_k n=%lld k=%d %s", (long long)n, k, name);
        EXPECT(ca == ai, "argmax n=%lld %s", (long long)n, name);
      });
    }
}

TEST_CASE(model_ops_kv_compact) {
  std::mt19937_64 g(85);
  for (DType dt : {DType::F32, DType::F16})
    for (int32_t page_size : {1, 3, 16}) {
      // two sequences of 11 and 7 entries over shuffled pages; (Hkv, D) = (2, 8)
      const int32_t H = 2, D = 8, P = 20;
      const std::vector<int32_t> lens = {11, 7};
      std::vector<int32_t> pages(P);
      for (int32_t i = 0; i < P; i++) pages[i] = i;
      std::shuffle(pages.begin(), pages.end(), g);
      std::vector<int32_t> indptr = {0}, indices, last;
      int32_t next = 0;
      for (int32_t len : lens) {
        const int32_t np = (len + page_size - 1) / page_size;
        for (int32_t i = 0; i < np; i++) indices.push_back(pages[next++ % P]);
        indptr.push_back((int32_t)indices.size());
        last.push_back(len - (np - 1) * page_size);
      }
      const int64_t elems = (int64_t)P * page_size * H * D;
      std::vector<uint8_t> k0((size_t)dtype_bytes(dt, elems)), v0(k0.size());
      const std::vector<float> fk = randv(g, elems), fv = randv(g, elems);
      ref::convert(fk.data(), DType::F32, k0.data(), dt, elems);
      ref::convert(fv.data(), DType::F32, v0.data(), dt, elems);
      // sequence 0: path slots 4, 6, 9, 10 -> 4, 5, 6, 7 (6 is read before it is written);
      // sequence 1: 3 -> 2, then 5 -> 3 (3 is written after it was read)
      const std::vector<int32_t> bidx = {0, 0, 0, 1, 1}, src = {6, 9, 10, 3, 5}, dst = {5, 6, 7, 2, 3};
      auto run = [&](auto op, std::vector<uint8_t>& k, std::vector<uint8_t>& v) {
        k = k0, v = v0;
        PagedKv kv;
        kv.k_pages = k.data(), kv.v_pages = v.data(), kv.kv_dtype = dt, kv.num_pages = P, kv.page_size = page_size;
        kv.n_kv_heads = H, kv.head_dim = D, kv.indptr = indptr.data(), kv.indices = indices.data();
        kv.last_page_len = last.data(), kv.batch = 2;
        op(kv);
        return kv;
      };
      std::vector<uint8_t> rk, rv, ck, cv;
      const PagedKv rkv = run([&](const PagedKv& kv) { ref::kv_compact(bidx.data(), src.data(), dst.data(), 5, kv); }, rk, rv);
      // the reference against the definition: slot 6 of sequence 0 holds what slot 9 held, etc.
      const int64_t row = dtype_bytes(dt, H * D), eb = dtype_bytes(dt, 1);
      auto same_row = [&](const std::vector<uint8_t>& a, int32_t b, int32_t slot, const std::vector<uint8_t>& o, int32_t ob,
                          int32_t oslot) {
        return std::memcmp(a.data() + rkv.offset(b, slot, 0) * eb, o.data() + rkv.offset(ob, oslot, 0) * eb, row) == 0;
      };
      EXPECT(same_row(rk, 0, 5, k0, 0, 6) && same_row(rk, 0, 6, k0, 0, 9) && same_row(rv, 0, 7, v0, 0, 10) &&
                 same_row(rk, 0, 4, k0, 0, 4) && same_row(rk, 1, 2, k0, 1, 3) && same_row(rv, 1, 3, v0, 1, 5) &&
                 same_row(rk, 1, 0, k0, 1, 0),
             "ref kv_compact moves %s page %d", dtype_info(dt).name, page_size);
      for_pools([&](ThreadPool& p, const char* name) {
        run([&](const PagedKv& kv) { cpu::kv_compact(p, bidx.data(), src.data(), dst.data(), 5, kv); }, ck, cv);
        EXPECT(ck == rk && cv == rv, "cpu kv_compact %s page %d %s", dtype_info(dt).name, page_size, name);
      });
    }
}
