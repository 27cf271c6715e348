// Shared helpers of the CUDA backend: error checks, the RAII device buffer, warp/block reductions
// and the element loaders (f32 / f16 / bf16 / q8_0 / q4_0 / q4_k / q6_k) used inside the kernels.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "tessera/dtype.h"
#include "tessera/ops.h"

namespace tessera::cuda {

// ---- errors (implemented in runtime.cu) ---------------------------------------------------------

// Throws std::runtime_error("<what> failed at file:line: <cudaGetErrorString(err)>").
[[noreturn]] void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line);
// Throws if the last launch on this thread failed (cudaGetLastError), naming the kernel.
void check_launch(const char* kernel);
// Streaming multiprocessors of the current device (cached per device).
int sm_count();
// Most dynamic shared memory one block may opt into on the current device (cached per device).
size_t max_smem_optin();

// Raises `kernel`'s dynamic shared memory limit to `bytes` on the current device, once (later calls
// with no more bytes do nothing, so they are safe inside a CUDA graph capture). Throws naming
// `name` when the device cannot.
void set_max_dynamic_smem(const void* kernel, size_t bytes, const char* name);

// Scratch memory of `stream` on the current device (at least `bytes`, reused by the next call on the
// same stream; growing it waits for the stream first): split-KV partial results, tile lists. One
// host thread per stream. release_stream_workspace frees it; call it before destroying the stream.
void* stream_workspace(cudaStream_t stream, size_t bytes);
void release_stream_workspace(cudaStream_t stream);

// Tensor-core paths (matmul_tc.cu): on unless TESSERA_CUDA_TC=0 in the environment or turned off
// with set_tensor_cores(false) (benchmarks and tests compare both paths).
bool tensor_cores_enabled();
void set_tensor_cores(bool on);
// matmul with m >= kTcMinRows on tensor cores when the weight type and alignment allow; returns
// false (having done nothing) otherwise.
constexpr int64_t kTcMinRows = 32;
bool matmul_tensor_cores(cudaStream_t stream, const float* x, const void* w, DType dt, float* y, int64_t m,
                         int64_t n, int64_t k);
// paged_attention's rows of sequences with at least min_nq queries (no tree mask) on tensor cores
// (varlen_attention_tc.cu); total_q = qo_indptr[batch] exactly. False (nothing launched) where
// the shape, dtype, alignment or shared memory do not allow it.
bool paged_prefill_tensor_cores(cudaStream_t stream, const float* q, const int32_t* qo_indptr, const PagedKv& kv,
                                float* o, const AttnShape& s, int64_t total_q, int32_t min_nq);

#define TS_CUDA_CHECK(expr)                                                    \
  do {                                                                         \
    const cudaError_t ts_cuda_err_ = (expr);                                   \
    if (ts_cuda_err_ != cudaSuccess)                                           \
      ::tessera::cuda::throw_cuda_error(ts_cuda_err_, #expr, __FILE__, __LINE__); \
  } while (0)

// ---- RAII device memory (implemented in runtime.cu) ---------------------------------------------

class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes);
  ~DeviceBuffer();
  DeviceBuffer(DeviceBuffer&& o) noexcept;
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;

  void* get() const { return ptr_; }
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }
  size_t size() const { return bytes_; }

  void reset();                                                  // frees now
  void upload(const void* host, size_t bytes);                   // synchronous, bytes <= size()
  void download(void* host, size_t bytes) const;                 // synchronous
  void fill(int byte_value);                                     // synchronous memset

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

// ---- launch helpers ------------------------------------------------------------------------------

inline unsigned grid_for(int64_t items, int threads, int64_t cap = (int64_t)1 << 20) {
  int64_t blocks = (items + threads - 1) / threads;
  if (blocks < 1) blocks = 1;
  if (blocks > cap) blocks = cap;
  return (unsigned)blocks;
}

constexpr unsigned kFullMask = 0xffffffffu;

// ---- reductions ----------------------------------------------------------------------------------

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
  return v;
}

__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(kFullMask, v, o));
  return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, <= 1024). `scratch` holds 32 floats.
// Every thread gets the result. Contains __syncthreads(): call from all threads.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
  v = warp_sum(v);
  __syncthreads();  // scratch may still be read by a previous reduction
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nwarps ? scratch[lane] : 0.f;
  return warp_sum(v);
}

// ---- element loads -------------------------------------------------------------------------------

__device__ __forceinline__ float h2f(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ float bf2f(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }

// Element type of a KV page: float or half bits.
__device__ __forceinline__ float load_elem(const float* p, int64_t i) { return p[i]; }
__device__ __forceinline__ float load_elem(const uint16_t* p, int64_t i) { return h2f(p[i]); }
__device__ __forceinline__ void store_elem(float* p, int64_t i, float v) { p[i] = v; }
__device__ __forceinline__ void store_elem(uint16_t* p, int64_t i, float v) {
  p[i] = ::tessera::f32_to_f16(v);
}

// Dequantisation of VEC consecutive elements [kk, kk+VEC) of one weight row (row pointer `row`
// already points at element 0 of the row). VEC is 1 or 4; with 4, kk % 4 == 0 and the row is
// aligned for the vector load (checked by the host before picking the vector path).
template <DType WT, int VEC>
struct WeightLoader;

template <>
struct WeightLoader<DType::F32, 1> {
  __device__ __forceinline__ static void load(const void* row, int64_t kk, float* out) {
    out[0] = __ldg(static_cast<const float*>(row) + kk);
  }
};
template <>
struct WeightLoader<DType::F32, 4> {
  __device__ __forceinline__ static void load(const void* row, int64_t kk, float* out) {
    const float4 v = __ldg(reinterpret_cast<const float4*>(static_cast<const float*>(row) + kk));
    out[0] = v.x, out[1] = v.y, out[2] = v.z, out[3] = v.w;
  }
};
template <>
struct WeightLoader<DType::F16, 1> {
  __device__ __forceinline__ static void load(const void* row, int64_t kk, float* out) {
    out[0] = h2f(__ldg(static_cast<const unsigned short*>(row) + kk));
  }
};
template <>
struct WeightLoader<DType::F16, 4> {
  __device__ __forceinline__ static void load(const void* row, int64_t kk, float* out) {
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(static_cast<const uint16_t*>(row) + kk));
    out[0] = h2f((uint16_t)(v.x & 0xffff)), out[1] = h2f((uint16_t)(v.x >> 16));
    out[2] = h2f((uint16_t)(v.y & 0xffff)), out[3] = h2f((uint16_t)(v.y >> 16));
  }
};
template <>
struct WeightLoader<DType::BF16, 1> {
  __device__ __forceinline__ static void load(const void* row, int64_t kk, float* out) {
    out[0] = bf2f(__ldg(static_cast<const unsigned short*>(row) + kk));
  }
};
template <>
struct WeightLoader<DType::BF16, 4> {
  __device__ __forceinline__ static void load(const void* row, int64_t kk, float* out) {
    const uint2 v = __ldg(reinterpret_cast<const uint2*>(static_cast<const uint16_t*>(row) + kk));
    out[0] = __uint_as_float(v.x << 16), out[1] = __uint_as_float(v.x & 0xffff0000u);
    out[2] = __uint_as_float(v.y << 16), out[3] = __uint_as_float(v.y & 0xffff0000u);
  }
};

// Two bytes at a 2-byte aligned address (the quant blocks are only 2-byte aligned).
__device__ __forceinline__ uint32_t ldg_u16(const uint8_t* p) {
  return __ldg(reinterpret_cast<const unsigned short*>(p));
}

template <int VEC>
struct WeightLoader<DType::Q8_0, VEC> {
  __device__ __forceinline__ static void load(const void* row, int64_t kk, float* out) {
    const BlockQ8_0* b = static_cast<const BlockQ8_0*>(row) + (kk >> 5);
    const int j = (int)(kk & 31);
    const float d = h2f(__ldg(&b->d));
    const uint8_t* qs = reinterpret_cast<const uint8_t*>(b->qs);
    if constexpr (VEC == 4) {  // j % 4 == 0: qs + j is 2-byte aligned
      const uint32_t lo = ldg_u16(qs + j), hi = ldg_u16(qs + j + 2);
      out[0] = (float)(int8_t)(lo & 0xff) * d;
      out[1] = (float)(int8_t)(lo >> 8) * d;
      out[2] = (float)(int8_t)(hi & 0xff) * d;
      out[3] = (float)(int8_t)(hi >> 8) * d;
    } else {
      out[0] = (float)(int8_t)__ldg(qs + j) * d;
    }
  }
};

template <int VEC>
struct WeightLoader<DType::Q4_0, VEC> {
  __device__ __forceinline__ static void load(const void* row, int64_t kk, float* out) {
    const BlockQ4_0* b = static_cast<const BlockQ4_0*>(row) + (kk >> 5);
    const int j = (int)(kk & 31);
    const float d = h2f(__ldg(&b->d));
    const int shift = j < 16 ? 0 : 4;
    const uint8_t* qs = b->qs + (j & 15);
    if constexpr (VEC == 4) {  // 4 elements never straddle the nibble halves (j % 4 == 0)
      const uint32_t lo = ldg_u16(qs), hi = ldg_u16(qs + 2);
      out[0] = (float)((int)((lo >> shift) & 0xf) - 8) * d;
      out[1] = (float)((int)((lo >> (8 + shift)) & 0xf) - 8) * d;
      out[2] = (float)((int)((hi >> shift) & 0xf) - 8) * d;
      out[3] = (float)((int)((hi >> (8 + shift)) & 0xf) - 8) * d;
    } else {
      out[0] = (float)((int)((__ldg(qs) >> shift) & 0xf) - 8) * d;
    }
  }
};

// k-quants (256-element super-blocks, 2-byte aligned). With VEC = 4 the four elements share a
// sub-block and a nibble half (kk % 4 == 0), so one scale / min pair serves them all.
// q4_k: element e of a block: run c = e / 64 reads qs[32 c + e % 32], low nibble when e % 64 < 32;
// value = d * sc[e / 32] * q - dmin * m[e / 32] (6-bit sc / m unpacked as in tessera/dtype.h).
__device__ __forceinline__ void q4_k_scale_min(const uint8_t* s, int j, float* sc, float* m) {
  if (j < 4) {
    *sc = (float)(__ldg(s + j) & 63);
    *m = (float)(__ldg(s + j + 4) & 63);
  } else {
    const uint32_t b = __ldg(s + j + 4);
    *sc = (float)((b & 15) | ((__ldg(s + j - 4) >> 6) << 4));
    *m = (float)((b >> 4) | ((__ldg(s + j) >> 6) << 4));
  }
}

template <int VEC>
struct WeightLoader<DType::Q4_K, VEC> {
  __device__ __forceinline__ static void load(const void* row, int64_t kk, float* out) {
    const BlockQ4_K* b = static_cast<const BlockQ4_K*>(row) + (kk >> 8);
    const int e = (int)(kk & 255);
    float sc, mn;
    q4_k_scale_min(b->scales, e >> 5, &sc, &mn);
    const float d = h2f(__ldg(&b->d)) * sc, dm = h2f(__ldg(&b->dmin)) * mn;
    const int shift = (e & 32) ? 4 : 0;
    const uint8_t* qs = b->qs + 32 * (e >> 6) + (e & 31);
    if constexpr (VEC == 4) {
      const uint32_t lo = ldg_u16(qs), hi = ldg_u16(qs + 2);
      out[0] = d * (float)((lo >> shift) & 15) - dm;
      out[1] = d * (float)((lo >> (8 + shift)) & 15) - dm;
      out[2] = d * (float)((hi >> shift) & 15) - dm;
      out[3] = d * (float)((hi >> (8 + shift)) & 15) - dm;
    } else {
      out[0] = d * (float)((__ldg(qs) >> shift) & 15) - dm;
    }
  }
};

// q6_k: in half h = e / 128, group g = (e % 128) / 32, l = e % 32: low 4 bits from
// ql[64 h + 32 (g & 1) + l] (high nibble when g >= 2), top 2 bits from bits 2g..2g+1 of
// qh[32 h + l]; value = d * scales[e / 16] * (q - 32).
template <int VEC>
struct WeightLoader<DType::Q6_K, VEC> {
  __device__ __forceinline__ static void load(const void* row, int64_t kk, float* out) {
    const BlockQ6_K* b = static_cast<const BlockQ6_K*>(row) + (kk >> 8);
    const int e = (int)(kk & 255);
    const int h = e >> 7, g = (e >> 5) & 3, l = e & 31;
    const float d = h2f(__ldg(&b->d)) * (float)(int8_t)__ldg(reinterpret_cast<const uint8_t*>(b->scales) + (e >> 4));
    const uint8_t* ql = b->ql + 64 * h + 32 * (g & 1) + l;
    const uint8_t* qh = b->qh + 32 * h + l;
    const int lshift = g >= 2 ? 4 : 0, hshift = 2 * g;
    if constexpr (VEC == 4) {
      const uint32_t lq = ldg_u16(ql) | (ldg_u16(ql + 2) << 16);
      const uint32_t hq = ldg_u16(qh) | (ldg_u16(qh + 2) << 16);
#pragma unroll
      for (int i = 0; i < 4; ++i) {
        const int q = (int)(((lq >> (8 * i + lshift)) & 15) | (((hq >> (8 * i + hshift)) & 3) << 4));
        out[i] = d * (float)(q - 32);
      }
    } else {
      const int q = (int)(((__ldg(ql) >> lshift) & 15) | (((__ldg(qh) >> hshift) & 3) << 4));
      out[0] = d * (float)(q - 32);
    }
  }
};

// Bytes of one weight row of k elements.
inline int64_t row_bytes(DType t, int64_t k) { return dtype_bytes(t, k); }

}  // namespace tessera::cuda
