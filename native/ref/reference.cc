// Plain float64 reference implementations of the op set (namespace tessera::ref): the oracle
// every other backend is tested against. Single-threaded, simple loops, no SIMD; accumulation
// in double, outputs written as float. No argument validation (check.h runs before any backend).
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "tessera/dtype.h"
#include "tessera/kquant_encode.h"
#include "tessera/layouts.h"
#include "tessera/ops.h"

namespace tessera::ref {
namespace {

// Sub-block j (0..7) scale and min of a q4_k block: ggml's get_scale_min_k4. The first four
// pairs are the low 6 bits of bytes 0..3 / 4..7; the last four take their low 4 bits from the
// nibbles of bytes 8..11 and their top 2 bits from the top bits of bytes 0..3 / 4..7.
void q4_k_scale_min(const uint8_t* q, int j, int* sc, int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
  }
}

// Element e (0..255) of a q4_k super-block, from ggml's dequantize_row_q4_K: the block is four
// runs of 64 elements; run r reads qs[32 r .. 32 r + 31], low nibbles first (sub-block 2r),
// then high nibbles (sub-block 2r+1); value = d * sc * q - dmin * m. Every product is exact in
// double, and so is the difference (all terms are multiples of 2^-24 below 2^27).
double q4_k_elem(const BlockQ4_K& b, int e) {
  const int run = e / 64, r = e % 64, sub = e / 32;
  const uint8_t byte = b.qs[32 * run + (r % 32)];
  const int q = r < 32 ? (byte & 0xF) : (byte >> 4);
  int sc, m;
  q4_k_scale_min(b.scales, sub, &sc, &m);
  return (double)f16_to_f32(b.d) * sc * q - (double)f16_to_f32(b.dmin) * m;
}

// Element e (0..255) of a q6_k super-block, from ggml's dequantize_row_q6_K: two halves of 128;
// in half h, group g (0..3) of 32 elements takes its low 4 bits from ql[64 h + 32 (g & 1) + l]
// (low nibble for g < 2, high for g >= 2) and its top 2 bits from bits 2g, 2g+1 of
// qh[32 h + l]; value = d * scales[e / 16] * (q - 32).
double q6_k_elem(const BlockQ6_K& b, int e) {
  const int h = e / 128, g = (e % 128) / 32, l = e % 32;
  const uint8_t lo = b.ql[64 * h + 32 * (g & 1) + l];
  const int low4 = g < 2 ? (lo & 0xF) : (lo >> 4);
  const int high2 = (b.qh[32 * h + l] >> (2 * g)) & 3;
  const int q = (low4 | (high2 << 4)) - 32;
  return (double)f16_to_f32(b.d) * b.scales[e / 16] * q;
}

// Element `i` of a row stored in `t` (row holds at least i+1 elements; blocks start at the row).
double load_elem(const void* row, DType t, int64_t i) {
  switch (t) {
    case DType::F32: return (double)static_cast<const float*>(row)[i];
    case DType::F16: return (double)f16_to_f32(static_cast<const uint16_t*>(row)[i]);
    case DType::BF16: return (double)bf16_to_f32(static_cast<const uint16_t*>(row)[i]);
    case DType::Q8_0: {
      const BlockQ8_0& b = static_cast<const BlockQ8_0*>(row)[i / 32];
      return (double)f16_to_f32(b.d) * (double)b.qs[i % 32];
    }
    case DType::Q4_0: {
      const BlockQ4_0& b = static_cast<const BlockQ4_0*>(row)[i / 32];
      const int64_t j = i % 32;
      const int q = j < 16 ? (b.qs[j] & 0xF) : (b.qs[j - 16] >> 4);
      return (double)(q - 8) * (double)f16_to_f32(b.d);
    }
    case DType::Q4_K: return q4_k_elem(static_cast<const BlockQ4_K*>(row)[i / 256], (int)(i % 256));
    case DType::Q6_K: return q6_k_elem(static_cast<const BlockQ6_K*>(row)[i / 256], (int)(i % 256));
    default: return 0.0;
  }
}

// Dequantises n elements of `t` into doubles.
void dequant_row(const void* src, DType t, int64_t n, double* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = load_elem(src, t, i);
}

// ggml's quantize_row_q8_0_ref.
void quantize_q8_0(const float* x, BlockQ8_0* y, int64_t n) {
  for (int64_t b = 0; b < n / 32; ++b) {
    const float* xb = x + b * 32;
    float amax = 0.0f;
    for (int j = 0; j < 32; ++j) amax = std::fmax(amax, std::fabs(xb[j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = f32_to_f16(d);
    for (int j = 0; j < 32; ++j) y[b].qs[j] = (int8_t)std::roundf(xb[j] * id);
  }
}

// ggml's quantize_row_q4_0_ref.
void quantize_q4_0(const float* x, BlockQ4_0* y, int64_t n) {
  for (int64_t b = 0; b < n / 32; ++b) {
    const float* xb = x + b * 32;
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; ++j) {
      const float v = xb[j];
      if (amax < std::fabs(v)) {
        amax = std::fabs(v);
        max = v;
      }
    }
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[b].d = f32_to_f16(d);
    for (int j = 0; j < 16; ++j) {
      const float x0 = xb[j] * id;
      const float x1 = xb[16 + j] * id;
      int q0 = (int8_t)(x0 + 8.5f);
      int q1 = (int8_t)(x1 + 8.5f);
      if (q0 > 15) q0 = 15;
      if (q1 > 15) q1 = 15;
      y[b].qs[j] = (uint8_t)((uint8_t)q0 | ((uint8_t)q1 << 4));
    }
  }
}

// Softmax-weighted sum over the listed key rows; writes zeros when there are none.
// keys/vals: pointers to head_dim-long rows read through `load` (double).
template <typename LoadK, typename LoadV>
void attend(const float* q, int64_t n_keys, LoadK key, LoadV val, int32_t D, double scale,
            float* o) {
  if (n_keys == 0) {
    for (int32_t d = 0; d < D; ++d) o[d] = 0.0f;
    return;
  }
  std::vector<double> s(n_keys);
  double mx = -INFINITY;
  for (int64_t j = 0; j < n_keys; ++j) {
    double acc = 0.0;
    for (int32_t d = 0; d < D; ++d) acc += (double)q[d] * key(j, d);
    s[j] = acc * scale;
    if (s[j] > mx) mx = s[j];
  }
  double sum = 0.0;
  for (int64_t j = 0; j < n_keys; ++j) {
    s[j] = std::exp(s[j] - mx);
    sum += s[j];
  }
  for (int32_t d = 0; d < D; ++d) {
    double acc = 0.0;
    for (int64_t j = 0; j < n_keys; ++j) acc += s[j] * val(j, d);
    o[d] = (float)(acc / sum);
  }
}

double load_kv(const void* pages, DType t, int64_t off) {
  if (t == DType::F16) return (double)f16_to_f32(static_cast<const uint16_t*>(pages)[off]);
  return (double)static_cast<const float*>(pages)[off];
}

}  // namespace

void matmul(const float* x, const void* w, DType w_dtype, float* y, int64_t m, int64_t n,
            int64_t k) {
  const int64_t row_bytes = dtype_bytes(w_dtype, k);
  std::vector<double> wrow(k);
  for (int64_t j = 0; j < n; ++j) {
    dequant_row(static_cast<const uint8_t*>(w) + j * row_bytes, w_dtype, k, wrow.data());
    for (int64_t i = 0; i < m; ++i) {
      double acc = 0.0;
      for (int64_t l = 0; l < k; ++l) acc += (double)x[i * k + l] * wrow[l];
      y[i * n + j] = (float)acc;
    }
  }
}

void rmsnorm(const float* x, const float* weight, float* y, int64_t rows, int64_t n, float eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    double ss = 0.0;
    for (int64_t i = 0; i < n; ++i) ss += (double)xr[i] * (double)xr[i];
    const double inv = 1.0 / std::sqrt(ss / (double)n + (double)eps);
    for (int64_t i = 0; i < n; ++i) y[r * n + i] = (float)((double)xr[i] * inv * (double)weight[i]);
  }
}

void rope(float* x, const int32_t* positions, int64_t tokens, int32_t heads, int32_t head_dim,
          const RopeParams& p) {
  const int32_t half = p.n_rot / 2;
  for (int64_t t = 0; t < tokens; ++t) {
    const double pos = (double)positions[t];
    for (int32_t h = 0; h < heads; ++h) {
      float* v = x + (t * heads + h) * head_dim;
      for (int32_t i = 0; i < half; ++i) {
        const double freq = std::pow((double)p.theta_base, -2.0 * i / (double)p.n_rot);
        const double theta = pos * (double)p.freq_scale * freq;
        const double c = std::cos(theta), s = std::sin(theta);
        int32_t ia, ib;
        if (p.mode == RopeMode::NeoX) {
          ia = i;
          ib = i + half;
        } else {
          ia = 2 * i;
          ib = 2 * i + 1;
        }
        const double a = v[ia], b = v[ib];
        v[ia] = (float)(a * c - b * s);
        v[ib] = (float)(a * s + b * c);
      }
    }
  }
}

void swiglu(const float* gate, const float* up, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const double g = gate[i];
    y[i] = (float)(g / (1.0 + std::exp(-g)) * (double)up[i]);
  }
}

void softmax(const float* x, float* y, int64_t rows, int64_t n) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    double mx = -INFINITY;
    for (int64_t i = 0; i < n; ++i) mx = std::fmax(mx, (double)xr[i]);
    double sum = 0.0;
    for (int64_t i = 0; i < n; ++i) sum += std::exp((double)xr[i] - mx);
    for (int64_t i = 0; i < n; ++i) y[r * n + i] = (float)(std::exp((double)xr[i] - mx) / sum);
  }
}

void varlen_attention(const float* q, const float* k, const float* v, float* o,
                      const VarlenBatch& batch, const AttnShape& s) {
  const int32_t Hq = s.n_heads, Hkv = s.n_kv_heads, D = s.head_dim;
  const int32_t group = Hq / Hkv;
  for (int32_t b = 0; b < batch.num_seqs; ++b) {
    const int32_t begin = batch.begin(b), len = batch.len(b);
    for (int32_t i = 0; i < len; ++i) {
      const int64_t t = begin + i;
      for (int32_t h = 0; h < Hq; ++h) {
        const int32_t kh = h / group;
        auto key = [&](int64_t j, int32_t d) {
          return (double)k[((begin + j) * Hkv + kh) * D + d];
        };
        auto val = [&](int64_t j, int32_t d) {
          return (double)v[((begin + j) * Hkv + kh) * D + d];
        };
        attend(q + (t * Hq + h) * D, (int64_t)i + 1, key, val, D, (double)s.scale,
               o + (t * Hq + h) * D);
      }
    }
  }
}

void paged_attention(const float* q, const int32_t* qo_indptr, const PagedKv& kv,
                     const TreeMask* tree, float* o, const AttnShape& s) {
  const int32_t Hq = s.n_heads, Hkv = s.n_kv_heads, D = s.head_dim;
  const int32_t group = Hq / Hkv;
  for (int32_t b = 0; b < kv.batch; ++b) {
    const int32_t q0 = qo_indptr[b];
    const int32_t nq = qo_indptr[b + 1] - q0;
    const int32_t L = kv.seq_len(b);
    const int32_t prefix = L - nq;
    for (int32_t i = 0; i < nq; ++i) {
      // The KV positions query i sees.
      std::vector<int32_t> vis;
      for (int32_t p = 0; p < prefix; ++p) vis.push_back(p);
      for (int32_t j = 0; j < nq; ++j) {
        const bool sees =
            tree != nullptr ? tree->mask[tree->indptr[b] + (int64_t)i * nq + j] != 0 : j <= i;
        if (sees) vis.push_back(prefix + j);
      }
      const int64_t t = q0 + i;
      for (int32_t h = 0; h < Hq; ++h) {
        const int32_t kh = h / group;
        auto key = [&](int64_t j, int32_t d) {
          return load_kv(kv.k_pages, kv.kv_dtype, kv.offset(b, vis[j], kh) + d);
        };
        auto val = [&](int64_t j, int32_t d) {
          return load_kv(kv.v_pages, kv.kv_dtype, kv.offset(b, vis[j], kh) + d);
        };
        attend(q + (t * Hq + h) * D, (int64_t)vis.size(), key, val, D, (double)s.scale,
               o + (t * Hq + h) * D);
      }
    }
  }
}

void kv_append(const float* k, const float* v, const int32_t* batch_indices,
               const int32_t* positions, int64_t tokens, const PagedKv& kv) {
  const int32_t Hkv = kv.n_kv_heads, D = kv.head_dim;
  for (int64_t t = 0; t < tokens; ++t) {
    for (int32_t h = 0; h < Hkv; ++h) {
      const int64_t off = kv.offset(batch_indices[t], positions[t], h);
      const float* ks = k + (t * Hkv + h) * D;
      const float* vs = v + (t * Hkv + h) * D;
      for (int32_t d = 0; d < D; ++d) {
        if (kv.kv_dtype == DType::F16) {
          static_cast<uint16_t*>(kv.k_pages)[off + d] = f32_to_f16(ks[d]);
          static_cast<uint16_t*>(kv.v_pages)[off + d] = f32_to_f16(vs[d]);
        } else {
          static_cast<float*>(kv.k_pages)[off + d] = ks[d];
          static_cast<float*>(kv.v_pages)[off + d] = vs[d];
        }
      }
    }
  }
}

void convert(const void* src, DType src_dtype, void* dst, DType dst_dtype, int64_t n) {
  if (src_dtype == dst_dtype) {
    std::memcpy(dst, src, (size_t)dtype_bytes(src_dtype, n));
    return;
  }
  if (dst_dtype == DType::F32) {
    // Straight to float (no detour through double, which would quieten signalling NaNs).
    float* y = static_cast<float*>(dst);
    const uint16_t* h = static_cast<const uint16_t*>(src);
    if (src_dtype == DType::F16) {
      for (int64_t i = 0; i < n; ++i) y[i] = f16_to_f32(h[i]);
    } else if (src_dtype == DType::BF16) {
      for (int64_t i = 0; i < n; ++i) y[i] = bf16_to_f32(h[i]);
    } else {
      for (int64_t i = 0; i < n; ++i) y[i] = (float)load_elem(src, src_dtype, i);  // exact
    }
    return;
  }
  // src is f32.
  const float* x = static_cast<const float*>(src);
  switch (dst_dtype) {
    case DType::F16:
      for (int64_t i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[i] = f32_to_f16(x[i]);
      break;
    case DType::BF16:
      for (int64_t i = 0; i < n; ++i) static_cast<uint16_t*>(dst)[i] = f32_to_bf16(x[i]);
      break;
    case DType::Q8_0: quantize_q8_0(x, static_cast<BlockQ8_0*>(dst), n); break;
    case DType::Q4_0: quantize_q4_0(x, static_cast<BlockQ4_0*>(dst), n); break;
    case DType::Q4_K:
      for (int64_t b = 0; b < n / 256; ++b) quantize_q4_k_block(x + b * 256, static_cast<BlockQ4_K*>(dst) + b);
      break;
    case DType::Q6_K:
      for (int64_t b = 0; b < n / 256; ++b) quantize_q6_k_block(x + b * 256, static_cast<BlockQ6_K*>(dst) + b);
      break;
    default: break;
  }
}

}  // namespace tessera::ref
