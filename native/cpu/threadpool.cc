// ThreadPool: persistent workers woken per parallel_for; chunks are claimed with an atomic
// counter so uneven work balances itself.
#include "tessera/threadpool.h"

#include <algorithm>
#include <chrono>
#include <memory>

#if defined(__linux__)
#include <sched.h>
#endif

namespace tessera {

int ThreadPool::available_cores() {
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
#endif
  const unsigned n = std::thread::hardware_concurrency();
  return n > 0 ? (int)n : 1;
}

ThreadPool::ThreadPool(int n_threads) {
  n_threads_ = n_threads > 0 ? n_threads : available_cores();
  for (int i = 1; i < n_threads_; i++) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_.store(true);
  }
  cv_start_.notify_all();
  for (auto& t : workers_) t.join();
}

namespace {
inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}
// How long a thread spins for the next loop (or the end of one) before sleeping.
constexpr auto kSpin = std::chrono::microseconds(200);
}  // namespace

void ThreadPool::run_chunks() {
  for (;;) {
    const int64_t begin = next_.fetch_add(chunk_);
    if (begin >= n_) break;
    try {
      (*fn_)(begin, std::min(n_, begin + chunk_));
    } catch (...) {  // an exception must not escape a worker thread (std::terminate)
      std::lock_guard<std::mutex> lock(error_mu_);
      if (!error_) error_ = std::current_exception();
      next_.store(n_);  // hand out no more chunks
    }
  }
}

void ThreadPool::worker_loop(int) {
  uint64_t seen = 0;
  for (;;) {
    uint64_t g = generation_.load(std::memory_order_acquire);
    if (g == seen && !stop_.load(std::memory_order_relaxed)) {
      const auto until = std::chrono::steady_clock::now() + kSpin;
      for (int i = 0; (g = generation_.load(std::memory_order_acquire)) == seen && !stop_.load(std::memory_order_relaxed); i++) {
        cpu_relax();
        if ((i & 255) == 255 && std::chrono::steady_clock::now() > until) break;
      }
    }
    if (g == seen) {
      std::unique_lock<std::mutex> lock(mu_);
      sleeping_++;
      cv_start_.wait(lock, [&] { return stop_.load() || generation_.load() != seen; });
      sleeping_--;
      g = generation_.load();
    }
    if (stop_.load()) return;
    seen = g;
    run_chunks();
    if (active_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(mu_);
      cv_done_.notify_one();
    }
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain,
                              const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  // Four chunks per thread balance uneven work without much claiming overhead.
  const int64_t chunk = std::max(grain, (n + 4 * n_threads_ - 1) / (4 * n_threads_));
  if (n_threads_ == 1 || n <= chunk) {
    fn(0, n);
    return;
  }
  std::lock_guard<std::mutex> call_lock(call_mu_);
  fn_ = &fn;
  n_ = n;
  chunk_ = chunk;
  next_.store(0);
  active_.store((int)workers_.size());
  bool wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation_.fetch_add(1, std::memory_order_release);
    wake = sleeping_ > 0;
  }
  if (wake) cv_start_.notify_all();
  run_chunks();
  const auto until = std::chrono::steady_clock::now() + kSpin;
  for (int i = 0; active_.load(std::memory_order_acquire) != 0; i++) {
    cpu_relax();
    if ((i & 255) == 255 && std::chrono::steady_clock::now() > until) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_done_.wait(lock, [&] { return active_.load() == 0; });
      break;
    }
  }
  fn_ = nullptr;
  if (error_) {
    std::exception_ptr e;
    std::swap(e, error_);
    std::rethrow_exception(e);
  }
}

namespace {
std::mutex g_default_mu;
std::unique_ptr<ThreadPool> g_default;
}  // namespace

ThreadPool& default_pool() {
  std::lock_guard<std::mutex> lock(g_default_mu);
  if (!g_default) g_default = std::make_unique<ThreadPool>(0);
  return *g_default;
}

void set_default_pool_threads(int n_threads) {
  std::lock_guard<std::mutex> lock(g_default_mu);
  g_default = std::make_unique<ThreadPool>(n_threads);
}

}  // namespace tessera
