// Repacking of quantised weights into VNNI tiles, activation quantisation and the float64
// reference of the packed path (see qmatmul.h for the layout).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <new>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "qmatmul.h"
#include "tessera/cpu_features.h"
#include "tessera/check.h"
#include "tessera/ops.h"
#include "tessera/threadpool.h"

namespace tessera::cpu {
namespace {

struct TypeInfo {
  bool four_bit;   // codes are nibbles
  int32_t group;   // elements per scale group (32 or 16)
  int32_t off;     // code offset removed with the activation sums
  bool has_min;    // q4_k: per-group mins
  int32_t block;   // source block size (k must be a multiple)
};

TypeInfo type_info(DType t) {
  switch (t) {
    case DType::Q8_0: return {false, 32, 128, false, 32};
    case DType::Q4_0: return {true, 32, 8, false, 32};
    case DType::Q4_K: return {true, 32, 0, true, 256};
    case DType::Q6_K: return {false, 16, 32, false, 256};
    default: return {false, 0, 0, false, 0};
  }
}

// One source row -> unsigned codes u (k), group scales s and mins mn (k / group), in f32.
void decode_row(const uint8_t* row, DType t, int64_t k, uint8_t* u, float* s, float* mn) {
  switch (t) {
    case DType::Q8_0: {
      const BlockQ8_0* w = reinterpret_cast<const BlockQ8_0*>(row);
      for (int64_t b = 0; b < k / 32; b++) {
        s[b] = f16_to_f32(w[b].d);
        mn[b] = 0.f;
        for (int j = 0; j < 32; j++) u[b * 32 + j] = (uint8_t)(w[b].qs[j] + 128);
      }
      break;
    }
    case DType::Q4_0: {
      const BlockQ4_0* w = reinterpret_cast<const BlockQ4_0*>(row);
      for (int64_t b = 0; b < k / 32; b++) {
        s[b] = f16_to_f32(w[b].d);
        mn[b] = 0.f;
        for (int j = 0; j < 16; j++) {
          u[b * 32 + j] = w[b].qs[j] & 15;
          u[b * 32 + j + 16] = w[b].qs[j] >> 4;
        }
      }
      break;
    }
    case DType::Q4_K: {
      const BlockQ4_K* w = reinterpret_cast<const BlockQ4_K*>(row);
      for (int64_t b = 0; b < k / 256; b++) {
        uint8_t sc[8], m[8];
        q4_k_scales(w[b].scales, sc, m);
        const float d = f16_to_f32(w[b].d), dmin = f16_to_f32(w[b].dmin);
        for (int j = 0; j < 8; j++) {
          s[b * 8 + j] = d * sc[j];
          mn[b * 8 + j] = dmin * m[j];
        }
        uint8_t* ub = u + b * 256;
        for (int c = 0; c < 4; c++)
          for (int l = 0; l < 32; l++) {
            ub[64 * c + l] = w[b].qs[32 * c + l] & 15;
            ub[64 * c + 32 + l] = w[b].qs[32 * c + l] >> 4;
          }
      }
      break;
    }
    case DType::Q6_K: {
      const BlockQ6_K* w = reinterpret_cast<const BlockQ6_K*>(row);
      for (int64_t b = 0; b < k / 256; b++) {
        const float d = f16_to_f32(w[b].d);
        for (int j = 0; j < 16; j++) {
          s[b * 16 + j] = d * w[b].scales[j];
          mn[b * 16 + j] = 0.f;
        }
        uint8_t* ub = u + b * 256;
        for (int h = 0; h < 2; h++) {
          const uint8_t* ql = w[b].ql + 64 * h;
          const uint8_t* qh = w[b].qh + 32 * h;
          uint8_t* o = ub + 128 * h;
          for (int l = 0; l < 32; l++) {
            o[l] = (uint8_t)((ql[l] & 15) | ((qh[l] & 3) << 4));
            o[l + 32] = (uint8_t)((ql[l + 32] & 15) | (((qh[l] >> 2) & 3) << 4));
            o[l + 64] = (uint8_t)((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4));
            o[l + 96] = (uint8_t)((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4));
          }
        }
      }
      break;
    }
    default: break;
  }
}

// Packs tile t; returns false when a scale does not fit in f16.
bool pack_tile(const uint8_t* w, DType t, int64_t n, int64_t k, const PackedWeight& pw, int64_t tile) {
  const TypeInfo ti = type_info(t);
  const int64_t row_bytes = dtype_bytes(t, k), groups = k / ti.group;
  uint8_t* dst = pw.data + tile * pw.tile_bytes;
  std::memset(dst, 0, (size_t)pw.tile_bytes);
  uint16_t* S = reinterpret_cast<uint16_t*>(dst + pw.code_bytes);
  uint16_t* MN = S + groups * kTileRows;
  std::vector<uint8_t> u((size_t)k);
  std::vector<float> s((size_t)groups), mn((size_t)groups);
  for (int r = 0; r < kTileRows; r++) {
    const int64_t j = tile * kTileRows + r;
    if (j >= n) break;
    decode_row(w + j * row_bytes, t, k, u.data(), s.data(), mn.data());
    for (int64_t g = 0; g < groups; g++) {
      const uint16_t hs = f32_to_f16(s[g]), hm = f32_to_f16(mn[g]);
      if (std::isfinite(s[g]) && !std::isfinite(f16_to_f32(hs))) return false;
      if (std::isfinite(mn[g]) && !std::isfinite(f16_to_f32(hm))) return false;
      S[g * kTileRows + r] = hs;
      if (ti.has_min) MN[g * kTileRows + r] = hm;
    }
    for (int64_t b = 0; b < k / 32; b++) {
      const uint8_t* ub = u.data() + b * 32;
      if (ti.four_bit) {
        uint8_t* cb = dst + b * 256;
        for (int g = 0; g < 4; g++)
          for (int i = 0; i < 4; i++) cb[g * 64 + r * 4 + i] = (uint8_t)(ub[4 * g + i] | (ub[4 * (g + 4) + i] << 4));
      } else {
        uint8_t* cb = dst + b * 512;
        for (int g = 0; g < 8; g++)
          for (int i = 0; i < 4; i++) cb[g * 64 + r * 4 + i] = ub[4 * g + i];
      }
    }
  }
  return true;
}

// Code of weight (row r of the tile, column p) read back from the packed bytes.
int packed_code(const PackedWeight& pw, const uint8_t* tile, int r, int64_t p) {
  const int64_t b = p / 32, e = p % 32, g = e / 4, i = e % 4;
  if (type_info(pw.dtype).four_bit) {
    const uint8_t byte = tile[b * 256 + (g % 4) * 64 + r * 4 + i];
    return g < 4 ? (byte & 15) : (byte >> 4);
  }
  return tile[b * 512 + g * 64 + r * 4 + i];
}

}  // namespace

PackedWeight::~PackedWeight() { ::operator delete(data, std::align_val_t(64)); }

bool int8_path_supported() {
#if defined(__x86_64__) || defined(_M_X64)
  const CpuFeatures& f = cpu_features();
  return isa_supported(CpuIsa::Avx512) && f.avx512vnni;
#else
  return false;
#endif
}

bool int8_path_active() { return active_isa() == CpuIsa::Avx512 && int8_path_supported(); }

bool packable(DType t) { return type_info(t).group != 0; }

std::unique_ptr<PackedWeight> pack_weight(const void* w, DType t, int64_t n, int64_t k, ThreadPool* pool) {
  const TypeInfo ti = type_info(t);
  if (ti.group == 0 || n <= 0 || k <= 0 || k % ti.block != 0) return nullptr;
  auto pw = std::make_unique<PackedWeight>();
  pw->dtype = t;
  pw->n = n;
  pw->k = k;
  pw->n_tiles = (n + kTileRows - 1) / kTileRows;
  pw->code_bytes = k / 32 * (ti.four_bit ? 256 : 512);
  const int64_t scale_bytes = k / ti.group * kTileRows * 2 * (ti.has_min ? 2 : 1);
  pw->tile_bytes = (pw->code_bytes + scale_bytes + 63) / 64 * 64;
  pw->data = static_cast<uint8_t*>(::operator new((size_t)pw->bytes(), std::align_val_t(64)));
  std::atomic<bool> ok{true};
  auto run = [&](int64_t t0, int64_t t1) {
    for (int64_t tile = t0; tile < t1 && ok.load(std::memory_order_relaxed); tile++)
      if (!pack_tile(static_cast<const uint8_t*>(w), t, n, k, *pw, tile)) ok.store(false);
  };
  // Decoding a source block and re-laying its codes: ~16 cost units per value.
  if (pool != nullptr) pool->parallel_for(pw->n_tiles, 4, (Cost)kTileRows * k * 16, run);
  else run(0, pw->n_tiles);
  if (!ok.load()) return nullptr;
  return pw;
}

void QuantRows::resize(int64_t m_, int64_t k_) {
  m = m_;
  k = k_;
  // From 16 rows on, padded to a multiple of 16 rows of zeros (the AMX kernel computes whole
  // 16-row blocks); decode's few rows are not padded, so no zero-fill on that path.
  const int64_t mp = m >= 16 ? (m + 15) / 16 * 16 : m;
  auto fit = [&](auto& v, int64_t per_row) {
    v.resize((size_t)(mp * per_row));
    std::fill(v.begin() + m * per_row, v.end(), 0);
  };
  fit(q, k);
  fit(d, k / 32);
  fit(s32, k / 32);
  fit(s16, k / 16);
  fit(ds, k / 32);
  qa.clear();
}

void QuantRows::build_tiles() {
  const int64_t mp = (m + 15) / 16 * 16, nb = k / 32;
  qa.resize((size_t)(mp * k));
  for (int64_t rb = 0; rb < mp / 16; rb++)
    for (int64_t b = 0; b < nb; b++)
      for (int r = 0; r < 16; r++)
        std::memcpy(&qa[(size_t)((rb * nb + b) * 512 + 32 * r)], &q[(size_t)((16 * rb + r) * k + 32 * b)], 32);
}

void quantize_rows_ref(const float* x, int64_t m, int64_t k, QuantRows& out) {
  out.resize(m, k);
  std::vector<BlockQ8_0> blocks((size_t)(k / 32));
  for (int64_t i = 0; i < m; i++) {
    ref::convert(x + i * k, DType::F32, blocks.data(), DType::Q8_0, k);
    for (int64_t b = 0; b < k / 32; b++) {
      const int64_t gb = i * (k / 32) + b;
      out.d[gb] = f16_to_f32(blocks[b].d);
      int32_t s0 = 0, s1 = 0;
      for (int j = 0; j < 32; j++) {
        out.q[i * k + b * 32 + j] = blocks[b].qs[j];
        (j < 16 ? s0 : s1) += blocks[b].qs[j];
      }
      out.s16[2 * gb] = s0;
      out.s16[2 * gb + 1] = s1;
      out.s32[gb] = s0 + s1;
      out.ds[gb] = out.d[gb] * (float)(s0 + s1);
    }
  }
}

void quantize_rows(ThreadPool* pool, const float* x, int64_t m, int64_t k, QuantRows& out) {
#if defined(__x86_64__) || defined(_M_X64)
  if (int8_path_active()) {
    out.resize(m, k);
    if (pool != nullptr && m >= 8) pool->parallel_for(m, 4, (Cost)k * 4, [&](int64_t r0, int64_t r1) { quantize_rows_avx512(x, k, out, r0, r1); });
    else quantize_rows_avx512(x, k, out, 0, m);
    if (m >= 16 && amx_enabled()) out.build_tiles();
    return;
  }
#endif
  (void)pool;
  quantize_rows_ref(x, m, k, out);
}

namespace {
std::atomic<bool> g_amx_on{[] {
  const char* e = std::getenv("TESSERA_AMX");
  return !(e != nullptr && std::strcmp(e, "0") == 0);
}()};
}  // namespace

bool amx_enabled() { return g_amx_on.load(std::memory_order_relaxed) && amx_supported(); }
void set_amx_enabled(bool on) { g_amx_on.store(on); }

#if !(defined(__x86_64__) || defined(_M_X64))
bool amx_supported() { return false; }
#endif

void packed_matmul_tiles(const PackedWeight& w, const QuantRows& x, float* y, int64_t ldy, int64_t t0, int64_t t1) {
#if defined(__x86_64__) || defined(_M_X64)
  if (x.m >= 16 && amx_enabled() && (int64_t)x.qa.size() == (x.m + 15) / 16 * 16 * x.k) {
    packed_matmul_tiles_amx(w, x, y, ldy, t0, t1);
    return;
  }
  if (int8_path_supported()) {
    packed_matmul_tiles_vnni(w, x, y, ldy, t0, t1);
    return;
  }
#endif
  (void)w, (void)x, (void)y, (void)ldy, (void)t0, (void)t1;
  throw_range("packed matmul: this CPU has no AVX512-VNNI");
}

void packed_matmul_ref(const PackedWeight& w, const QuantRows& x, float* y, int64_t ldy) {
  const TypeInfo ti = type_info(w.dtype);
  const int64_t k = w.k, groups = k / ti.group;
  for (int64_t t = 0; t < w.n_tiles; t++) {
    const uint8_t* tile = w.data + t * w.tile_bytes;
    const uint16_t* S = reinterpret_cast<const uint16_t*>(tile + w.code_bytes);
    const uint16_t* MN = S + groups * kTileRows;
    for (int r = 0; r < kTileRows; r++) {
      const int64_t j = t * kTileRows + r;
      if (j >= w.n) break;
      for (int64_t i = 0; i < x.m; i++) {
        double acc = 0;
        for (int64_t p = 0; p < k; p++) {
          const int64_t g = p / ti.group;
          const double s = f16_to_f32(S[g * kTileRows + r]);
          const double mn = ti.has_min ? f16_to_f32(MN[g * kTileRows + r]) : 0.0;
          const double wv = s * (packed_code(w, tile, r, p) - ti.off) - mn;
          acc += wv * (double)x.d[i * (k / 32) + p / 32] * (double)x.q[i * k + p];
        }
        y[i * ldy + j] = (float)acc;
      }
    }
  }
}

}  // namespace tessera::cpu
