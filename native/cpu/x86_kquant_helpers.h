// k-quant unpacking helpers (SSE2 / AVX2) shared by kernels_avx2.cc and kernels_avx512.cc. Included
// inside each file's anonymous namespace, after its target pragma: every file gets its own
// internal-linkage copy compiled for its own target (a shared inline function could be linked as
// the AVX-512 build into the AVX2 kernel set).
#pragma once

// The sub-block scales (bytes 0..7) and mins (bytes 8..15) of a q4_k block, unpacked from the 12
// packed bytes with 32-bit masks (ggml's get_scale_min_k4, all eight at once).
inline __m128i q4_k_scale_bytes(const uint8_t* s) {
  uint32_t u[4];
  std::memcpy(u, s, 12);
  const uint32_t k1 = 0x3f3f3f3f, k2 = 0x0f0f0f0f, k3 = 0x03030303;
  u[3] = ((u[2] >> 4) & k2) | (((u[1] >> 6) & k3) << 4);  // m[4..7]
  const uint32_t m_lo = u[1] & k1;                          // m[0..3]
  u[1] = (u[2] & k2) | (((u[0] >> 6) & k3) << 4);           // sc[4..7]
  u[2] = m_lo;
  u[0] &= k1;                                               // sc[0..3]
  return _mm_loadu_si128((const __m128i*)u);
}

// The 128 6-bit values of one q6_k half (ql: 64 bytes, qh: 32 bytes) as 128 signed bytes
// q - 32, in element order.
inline void unpack_q6_k_half(const uint8_t* ql, const uint8_t* qh, int8_t* out) {
  const __m256i m4 = _mm256_set1_epi8(0x0f), m2 = _mm256_set1_epi8(0x30), k32 = _mm256_set1_epi8(32);
  const __m256i l0 = _mm256_loadu_si256((const __m256i*)ql);
  const __m256i l1 = _mm256_loadu_si256((const __m256i*)(ql + 32));
  const __m256i h = _mm256_loadu_si256((const __m256i*)qh);
  // 16-bit shifts move bits across bytes; the masks keep only each byte's own bits.
  const __m256i q[4] = {
      _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_and_si256(_mm256_slli_epi16(h, 4), m2)),
      _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_and_si256(_mm256_slli_epi16(h, 2), m2)),
      _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(h, m2)),
      _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                      _mm256_and_si256(_mm256_srli_epi16(h, 2), m2))};
  for (int k = 0; k < 4; k++) _mm256_store_si256((__m256i*)(out + 32 * k), _mm256_sub_epi8(q[k], k32));
}

