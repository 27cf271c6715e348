// ThreadPool: persistent workers woken per parallel_for; chunks are claimed with an atomic
// counter so uneven work balances itself. Each loop runs on as many threads as its cost pays for
// (threads_for); the rest of the workers are neither woken nor waited for.
#include "tessera/threadpool.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>
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

namespace {
Cost default_min_chunk_cost() {
  static const Cost v = [] {
    const char* e = std::getenv("TESSERA_MIN_CHUNK_COST");
    if (e != nullptr && *e != 0) {
      char* end = nullptr;
      const long long x = std::strtoll(e, &end, 10);
      if (end != e && *end == 0 && x >= 0) return (Cost)x;
    }
    return ThreadPool::kDefaultMinChunkCost;
  }();
  return v;
}
}  // namespace

ThreadPool::ThreadPool(int n_threads, Cost min_chunk_cost) {
  n_threads_ = n_threads > 0 ? n_threads : available_cores();
  n_threads_ = std::min(n_threads_, (1 << kThreadBits) - 1);
  min_chunk_cost_ = min_chunk_cost >= 0 ? min_chunk_cost : default_min_chunk_cost();
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
// How long a thread spins for the next loop (or the end of one) before sleeping. A worker counts
// from the end of the last loop it took part in, so loops that do not use it do not keep it busy.
constexpr auto kSpin = std::chrono::microseconds(200);
}  // namespace

int ThreadPool::threads_for(int64_t n, int64_t grain, Cost item_cost) const {
  if (n_threads_ <= 1 || n <= 0) return 1;
  grain = std::max<int64_t>(grain, 1);
  int64_t t = std::min<int64_t>(n_threads_, (n + grain - 1) / grain);
  if (item_cost >= 0 && min_chunk_cost_ > 0) {
    const double total = (double)n * (double)item_cost;
    const double by_cost = total / (double)min_chunk_cost_;
    if (by_cost < (double)t) t = (int64_t)by_cost;
  }
  return (int)std::max<int64_t>(t, 1);
}

// Claims and runs chunks of loop `tag` until none are left (or the pool moved on to another loop:
// a worker that woke late finds the tag changed and touches nothing). claim_ counts the chunks
// left down to 0 (the claimer of count r runs chunk n_chunks_ - r), so a claim reads nothing but
// claim_.
void ThreadPool::run_chunks(uint32_t tag) {
  for (;;) {
    uint64_t c = claim_.load(std::memory_order_acquire);
    for (;;) {
      if ((uint32_t)(c >> 32) != tag || (c & 0xffffffffu) == 0) return;
      if (claim_.compare_exchange_weak(c, c - 1, std::memory_order_acq_rel, std::memory_order_acquire)) break;
    }
    // A chunk of loop `tag` is ours: the loop cannot end (nor fn_, n_, chunk_, n_chunks_ change)
    // before it is done.
    const int64_t total = n_chunks_;
    const int64_t idx = total - (int64_t)(c & 0xffffffffu);
    int64_t finished = 1;
    try {
      const int64_t begin = idx * chunk_;
      (*fn_)(begin, std::min(n_, begin + chunk_));
    } catch (...) {  // an exception must not escape a worker thread (std::terminate)
      {
        std::lock_guard<std::mutex> lock(error_mu_);
        if (!error_) error_ = std::current_exception();
      }
      // Hand out no more chunks; the ones never claimed count as finished.
      const uint64_t was = claim_.exchange((uint64_t)tag << 32, std::memory_order_acq_rel);
      finished += (int64_t)(was & 0xffffffffu);
    }
    if (done_.fetch_add(finished, std::memory_order_acq_rel) + finished == total) {
      std::lock_guard<std::mutex> lock(mu_);
      cv_done_.notify_one();
    }
  }
}

void ThreadPool::worker_loop(int index) {
  constexpr uint64_t kMask = (uint64_t(1) << kThreadBits) - 1;
  auto takes_part = [&](uint64_t g) { return (int)(g & kMask) > index; };
  uint64_t seen = 0;
  auto until = std::chrono::steady_clock::now() + kSpin;
  for (;;) {
    uint64_t g = generation_.load(std::memory_order_acquire);
    for (int i = 0; g == seen && !stop_.load(std::memory_order_relaxed); i++) {
      if ((i & 255) == 255 && std::chrono::steady_clock::now() > until) break;
      cpu_relax();
      g = generation_.load(std::memory_order_acquire);
    }
    if (g == seen && !stop_.load()) {
      std::unique_lock<std::mutex> lock(mu_);
      sleeping_++;
      // Woken only for a loop this worker takes part in (or to stop).
      cv_start_.wait(lock, [&] {
        g = generation_.load();
        return stop_.load() || (g != seen && takes_part(g));
      });
      sleeping_--;
    }
    if (stop_.load()) return;
    seen = g;
    if (!takes_part(g)) continue;  // a loop on fewer threads than this worker's index
    run_chunks((uint32_t)(g >> kThreadBits));
    until = std::chrono::steady_clock::now() + kSpin;
  }
}

void ThreadPool::parallel_for(int64_t n, int64_t grain, Cost item_cost,
                              const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int threads = threads_for(n, grain, item_cost);
  if (threads <= 1) {
    fn(0, n);
    return;
  }
  // Four chunks per thread balance uneven work without much claiming overhead.
  const int64_t chunk = std::max(grain, (n + 4 * threads - 1) / (4 * threads));
  const int64_t n_chunks = (n + chunk - 1) / chunk;
  std::lock_guard<std::mutex> call_lock(call_mu_);
  const uint64_t count = (generation_.load() >> kThreadBits) + 1;
  const uint32_t tag = (uint32_t)count;
  fn_ = &fn;
  n_ = n;
  chunk_ = chunk;
  n_chunks_ = n_chunks;
  done_.store(0, std::memory_order_relaxed);
  claim_.store(((uint64_t)tag << 32) | (uint64_t)n_chunks, std::memory_order_release);
  bool wake;
  {
    std::lock_guard<std::mutex> lock(mu_);
    generation_.store((count << kThreadBits) | (uint64_t)threads, std::memory_order_release);
    wake = sleeping_ > 0;
  }
  if (wake) cv_start_.notify_all();
  run_chunks(tag);
  // Wait for the chunks other threads claimed (not for workers that have not woken yet: they will
  // find nothing left of this loop).
  const auto until = std::chrono::steady_clock::now() + kSpin;
  for (int i = 0; done_.load(std::memory_order_acquire) != n_chunks; i++) {
    cpu_relax();
    if ((i & 255) == 255 && std::chrono::steady_clock::now() > until) {
      std::unique_lock<std::mutex> lock(mu_);
      cv_done_.wait(lock, [&] { return done_.load() == n_chunks; });
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
