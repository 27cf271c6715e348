// CUDA runtime glue: error helpers, the RAII device buffer and the one-time capability probe.
#include <cuda_runtime.h>

#include <atomic>
#include <mutex>
#include <map>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include "common.cuh"
#include "tessera/cuda_api.h"

namespace tessera::cuda {

void throw_cuda_error(cudaError_t err, const char* what, const char* file, int line) {
  std::ostringstream os;
  os << "CUDA error: " << what << " failed at " << file << ":" << line << ": "
     << cudaGetErrorString(err) << " (" << cudaGetErrorName(err) << ")";
  throw std::runtime_error(os.str());
}

void check_launch(const char* kernel) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("CUDA error: launch of ") + kernel +
                             " failed: " + cudaGetErrorString(err));
  }
}

namespace {
std::atomic<int> g_tc{-1};  // -1: not read from the environment yet
}

bool tensor_cores_enabled() {
  int v = g_tc.load(std::memory_order_relaxed);
  if (v < 0) {
    const char* e = std::getenv("TESSERA_CUDA_TC");
    v = (e != nullptr && std::string(e) == "0") ? 0 : 1;
    g_tc.store(v, std::memory_order_relaxed);
  }
  return v == 1;
}

void set_tensor_cores(bool on) { g_tc.store(on ? 1 : 0, std::memory_order_relaxed); }

namespace {
// Scratch buffers per (device, stream). Leaked on purpose at exit (static destruction order vs the
// CUDA runtime's own teardown); release_stream_workspace frees one when its stream goes away.
std::mutex g_ws_mu;
std::map<std::pair<int, cudaStream_t>, DeviceBuffer>& workspaces() {
  static auto* m = new std::map<std::pair<int, cudaStream_t>, DeviceBuffer>();
  return *m;
}
}  // namespace

void* stream_workspace(cudaStream_t stream, size_t bytes) {
  int dev = 0;
  TS_CUDA_CHECK(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(g_ws_mu);
  DeviceBuffer& b = workspaces()[{dev, stream}];
  if (b.size() < bytes) {
    TS_CUDA_CHECK(cudaStreamSynchronize(stream));  // queued kernels may still use the old buffer
    b.reset();
    b = DeviceBuffer(bytes + bytes / 4);
  }
  return b.get();
}

void set_max_dynamic_smem(const void* kernel, size_t bytes, const char* name) {
  static std::mutex mu;
  static auto* done = new std::map<std::pair<const void*, int>, size_t>();
  int dev = 0;
  TS_CUDA_CHECK(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(mu);
  size_t& have = (*done)[{kernel, dev}];
  if (have >= bytes) return;
  const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw std::runtime_error(std::string("CUDA error: ") + name + ": needs " + std::to_string(bytes) +
                             " bytes of shared memory per block: " + cudaGetErrorString(err));
  }
  have = bytes;
}

void release_stream_workspace(cudaStream_t stream) {
  int dev = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return;
  cudaStreamSynchronize(stream);
  std::lock_guard<std::mutex> lock(g_ws_mu);
  workspaces().erase({dev, stream});
}

namespace {
// One cached device attribute per device (queried once: callers sit on per-layer paths).
int device_attr(std::atomic<int>* cache, cudaDeviceAttr attr) {
  constexpr int kMaxDevices = 64;
  int dev = 0;
  TS_CUDA_CHECK(cudaGetDevice(&dev));
  if (dev >= 0 && dev < kMaxDevices) {
    const int cached = cache[dev].load(std::memory_order_relaxed);
    if (cached > 0) return cached;
  }
  int v = 0;
  TS_CUDA_CHECK(cudaDeviceGetAttribute(&v, attr, dev));
  if (v < 1) v = 1;
  if (dev >= 0 && dev < kMaxDevices) cache[dev].store(v, std::memory_order_relaxed);
  return v;
}
std::atomic<int> g_sm_cache[64], g_smem_cache[64];  // zero-initialised (static storage)
}  // namespace

int sm_count() { return device_attr(g_sm_cache, cudaDevAttrMultiProcessorCount); }

size_t max_smem_optin() { return (size_t)device_attr(g_smem_cache, cudaDevAttrMaxSharedMemoryPerBlockOptin); }

// ---- DeviceBuffer --------------------------------------------------------------------------------

DeviceBuffer::DeviceBuffer(size_t bytes) : bytes_(bytes) {
  if (bytes > 0) TS_CUDA_CHECK(cudaMalloc(&ptr_, bytes));
}

DeviceBuffer::~DeviceBuffer() { reset(); }

DeviceBuffer::DeviceBuffer(DeviceBuffer&& o) noexcept
    : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}

DeviceBuffer& DeviceBuffer::operator=(DeviceBuffer&& o) noexcept {
  if (this != &o) {
    reset();
    ptr_ = std::exchange(o.ptr_, nullptr);
    bytes_ = std::exchange(o.bytes_, 0);
  }
  return *this;
}

void DeviceBuffer::reset() {
  if (ptr_ != nullptr) cudaFree(ptr_);  // errors at teardown are not actionable
  ptr_ = nullptr;
  bytes_ = 0;
}

void DeviceBuffer::upload(const void* host, size_t bytes) {
  if (bytes > bytes_) throw std::out_of_range("DeviceBuffer::upload: more bytes than the buffer holds");
  if (bytes > 0) TS_CUDA_CHECK(cudaMemcpy(ptr_, host, bytes, cudaMemcpyHostToDevice));
}

void DeviceBuffer::download(void* host, size_t bytes) const {
  if (bytes > bytes_) throw std::out_of_range("DeviceBuffer::download: more bytes than the buffer holds");
  if (bytes > 0) TS_CUDA_CHECK(cudaMemcpy(host, ptr_, bytes, cudaMemcpyDeviceToHost));
}

void DeviceBuffer::fill(int byte_value) {
  if (bytes_ > 0) {
    TS_CUDA_CHECK(cudaMemset(ptr_, byte_value, bytes_));
    TS_CUDA_CHECK(cudaDeviceSynchronize());
  }
}

// ---- probe ---------------------------------------------------------------------------------------

namespace {

__global__ void probe_kernel(int* out, int a, int b) {
  const int i = threadIdx.x;
  out[i] = a * i + b;
}

std::string err_text(cudaError_t err) {
  return std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err);
}

CudaProbe run_probe() {
  CudaProbe p;
  cudaDriverGetVersion(&p.driver_version);  // 0 when no driver is installed
  cudaRuntimeGetVersion(&p.runtime_version);

  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();  // clear the (non-sticky) error of this thread
    p.reason = (err == cudaErrorNoDevice ? "no CUDA device: " : "no CUDA driver: ") + err_text(err);
    return p;
  }
  if (count <= 0) {
    p.reason = "no CUDA device: cudaGetDeviceCount returned 0";
    return p;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    err = cudaGetDeviceProperties(&prop, i);
    if (err != cudaSuccess) {
      cudaGetLastError();
      p.reason = "cannot query CUDA device " + std::to_string(i) + ": " + err_text(err);
      return p;
    }
    CudaDeviceInfo d;
    d.index = i;
    d.name = prop.name;
    d.cc_major = prop.major;
    d.cc_minor = prop.minor;
    d.total_mem = prop.totalGlobalMem;
    p.devices.push_back(std::move(d));
  }

  int dev = 0;
  err = cudaGetDevice(&dev);
  if (err != cudaSuccess || dev < 0 || dev >= count) {
    cudaGetLastError();
    p.reason = "cannot select a CUDA device: " + err_text(err);
    return p;
  }
  const CudaDeviceInfo& d = p.devices[dev];
  if (d.cc_major * 10 + d.cc_minor < 75) {
    p.reason = "CUDA device " + std::to_string(dev) + " (" + d.name + ") has compute capability " +
               std::to_string(d.cc_major) + "." + std::to_string(d.cc_minor) +
               "; tessera needs 7.5 or newer";
    return p;
  }

  // A real launch: catches a driver too old for this binary, missing kernel images for this
  // architecture, or a device that is busy / in a prohibited compute mode.
  constexpr int kN = 64;
  int* buf = nullptr;
  err = cudaMalloc(&buf, kN * sizeof(int));
  if (err != cudaSuccess) {
    cudaGetLastError();
    p.reason = "cudaMalloc failed on device " + std::to_string(dev) + ": " + err_text(err);
    return p;
  }
  probe_kernel<<<1, kN>>>(buf, 3, 7);
  err = cudaGetLastError();
  if (err == cudaSuccess) err = cudaDeviceSynchronize();
  int host[kN] = {};
  if (err == cudaSuccess) err = cudaMemcpy(host, buf, sizeof(host), cudaMemcpyDeviceToHost);
  cudaFree(buf);
  if (err != cudaSuccess) {
    cudaGetLastError();
    p.reason = "test kernel failed on device " + std::to_string(dev) + " (" + d.name + "): " +
               err_text(err);
    return p;
  }
  for (int i = 0; i < kN; ++i) {
    if (host[i] != 3 * i + 7) {
      p.reason = "test kernel returned wrong results on device " + std::to_string(dev) + " (" +
                 d.name + ")";
      return p;
    }
  }
  p.usable = true;
  return p;
}

}  // namespace

}  // namespace tessera::cuda

namespace tessera {

CudaProbe cuda_probe() {
  static const CudaProbe probe = cuda::run_probe();  // thread-safe one-time initialisation
  return probe;
}

}  // namespace tessera
