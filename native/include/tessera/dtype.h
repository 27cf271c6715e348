// Element types, GGUF block layouts and the scalar half/bfloat conversions shared by every backend.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define TS_HD __host__ __device__ __forceinline__
#else
#define TS_HD inline
#endif

namespace tessera {

// The numeric codes are part of the N-API contract (lib/dtype.ts mirrors them).
enum class DType : int32_t {
  F32 = 0,
  F16 = 1,
  BF16 = 2,
  I32 = 3,
  U8 = 4,
  Q8_0 = 5,  // blocks of 32: f16 scale + 32 x int8
  Q4_0 = 6,  // blocks of 32: f16 scale + 16 bytes of nibbles (offset 8)
  Q4_K = 7,  // super-blocks of 256 (opaque storage for now)
  Q6_K = 8,  // super-blocks of 256 (opaque storage for now)
};
constexpr int32_t kNumDTypes = 9;

struct DTypeInfo {
  const char* name;
  int32_t block_elems;  // elements per storage block (1 for plain types)
  int32_t block_bytes;  // bytes per storage block
};

TS_HD constexpr DTypeInfo dtype_info(DType t) {
  switch (t) {
    case DType::F32: return {"f32", 1, 4};
    case DType::F16: return {"f16", 1, 2};
    case DType::BF16: return {"bf16", 1, 2};
    case DType::I32: return {"i32", 1, 4};
    case DType::U8: return {"u8", 1, 1};
    case DType::Q8_0: return {"q8_0", 32, 34};
    case DType::Q4_0: return {"q4_0", 32, 18};
    case DType::Q4_K: return {"q4_k", 256, 144};
    case DType::Q6_K: return {"q6_k", 256, 210};
  }
  return {"invalid", 0, 0};
}

inline bool dtype_valid(int32_t code) { return code >= 0 && code < kNumDTypes; }

// Bytes needed for `n` elements of `t` (n must be a multiple of the block size).
inline int64_t dtype_bytes(DType t, int64_t n) {
  const DTypeInfo info = dtype_info(t);
  return n / info.block_elems * info.block_bytes;
}

// GGUF block structs (identical to ggml's).
struct BlockQ8_0 {
  uint16_t d;  // f16 scale
  int8_t qs[32];
};
struct BlockQ4_0 {
  uint16_t d;       // f16 scale
  uint8_t qs[16];   // element j in low nibble of qs[j], element j+16 in the high nibble
};
static_assert(sizeof(BlockQ8_0) == 34, "q8_0 block is 34 bytes");
static_assert(sizeof(BlockQ4_0) == 18, "q4_0 block is 18 bytes");

// k-quant super-blocks of 256 elements (ggml's block_q4_K / block_q6_K, byte for byte).
// Q4_K: 8 sub-blocks of 32, element = d * sc[j] * q - dmin * m[j] with q a 4-bit nibble and
// 6-bit sc/m packed into scales[12] (ggml's get_scale_min_k4):
//   j < 4:  sc[j] = scales[j] & 63,  m[j] = scales[j + 4] & 63
//   j >= 4: sc[j] = (scales[j + 4] & 15) | (scales[j - 4] >> 6) << 4,
//           m[j]  = (scales[j + 4] >> 4) | (scales[j] >> 6) << 4
// qs[32 c + l] holds element 64 c + l (sub-block 2c) in its low nibble and element 64 c + 32 + l
// (sub-block 2c+1) in its high nibble, c = 0..3, l = 0..31.
struct BlockQ4_K {
  uint16_t d;          // f16 super-block scale of the sub-block scales
  uint16_t dmin;       // f16 super-block scale of the sub-block mins
  uint8_t scales[12];  // 6-bit scales and mins, packed as above
  uint8_t qs[128];     // nibbles
};
// Q6_K: 16 sub-blocks of 16, element e = d * scales[e / 16] * (q - 32) with 6-bit q. In each half
// h (128 elements; ql += 64 h, qh += 32 h), for l = 0..31:
//   e = l:      low nibble of ql[l],       bits 0-1 of qh[l]
//   e = l + 32: low nibble of ql[l + 32],  bits 2-3 of qh[l]
//   e = l + 64: high nibble of ql[l],      bits 4-5 of qh[l]
//   e = l + 96: high nibble of ql[l + 32], bits 6-7 of qh[l]   (qh bits are q's bits 4-5)
struct BlockQ6_K {
  uint8_t ql[128];    // low 4 bits of q
  uint8_t qh[64];     // high 2 bits of q
  int8_t scales[16];  // 8-bit sub-block scales
  uint16_t d;         // f16 super-block scale
};
// The 6-bit scale and min of each Q4_K sub-block (ggml's get_scale_min_k4, as documented above).
TS_HD void q4_k_scales(const uint8_t* s, uint8_t sc[8], uint8_t m[8]) {
  for (int j = 0; j < 4; j++) {
    sc[j] = s[j] & 63;
    m[j] = s[j + 4] & 63;
    sc[j + 4] = (uint8_t)((s[j + 8] & 15) | ((s[j] >> 6) << 4));
    m[j + 4] = (uint8_t)((s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4));
  }
}
static_assert(sizeof(BlockQ4_K) == 144, "q4_k block is 144 bytes");
static_assert(sizeof(BlockQ6_K) == 210, "q6_k block is 210 bytes");

// IEEE half <-> float, exact for every half value (subnormals, inf, nan), round-to-nearest-even.
TS_HD float f16_to_f32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  uint32_t bits;
  if (exp == 0) {
    if (mant == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while ((mant & 0x400) == 0) {
        mant <<= 1;
        exp--;
      }
      mant &= 0x3ff;
      bits = sign | (exp << 23) | (mant << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

TS_HD uint16_t f32_to_f16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  const uint32_t sign = (x >> 16) & 0x8000;
  const uint32_t absx = x & 0x7fffffff;
  if (absx >= 0x7f800000u) {  // inf or nan
    return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
  }
  if (absx >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);  // rounds to inf
  if (absx < 0x38800000u) {                                   // result is subnormal or zero
    if (absx < 0x33000000u) return (uint16_t)sign;           // below half the smallest subnormal
    const uint32_t e = absx >> 23;
    const uint32_t m = (absx & 0x7fffff) | 0x800000;
    const uint32_t shift = 126 - e;  // 14..24
    uint32_t r = m >> shift;
    const uint32_t rem = m & ((1u << shift) - 1);
    const uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1))) r++;
    return (uint16_t)(sign | r);
  }
  uint32_t r = ((absx >> 13) - ((127 - 15) << 10));
  const uint32_t rem = absx & 0x1fff;
  if (rem > 0x1000 || (rem == 0x1000 && (r & 1))) r++;
  return (uint16_t)(sign | r);
}

TS_HD float bf16_to_f32(uint16_t h) {
  const uint32_t bits = (uint32_t)h << 16;
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

TS_HD uint16_t f32_to_bf16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  if ((x & 0x7fffffff) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);  // quiet nan
  const uint32_t rounding = 0x7fff + ((x >> 16) & 1);
  return (uint16_t)((x + rounding) >> 16);
}

}  // namespace tessera
