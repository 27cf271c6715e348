// A fixed pool of worker threads running one parallel loop at a time (the CPU backend's only
// source of parallelism). The calling thread takes part, so a pool of n threads has n-1 workers.
// Workers spin briefly between loops before sleeping, so the ~100 loops of a decode step do not
// each pay a futex wake-up.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tessera {

class ThreadPool {
 public:
  // n_threads <= 0 means the number of cores this process may run on.
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Calls fn(begin, end) over [0, n) split into contiguous chunks of at least `grain` items.
  // Blocks until every chunk ran. Calls from several threads at once are serialised. If fn
  // throws (on any thread), no further chunks start and the first exception is rethrown here.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn);

  static int available_cores();

 private:
  void worker_loop(int index);
  void run_chunks();

  int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex call_mu_;  // one parallel_for at a time
  std::mutex mu_;
  std::condition_variable cv_start_;
  std::condition_variable cv_done_;
  std::atomic<uint64_t> generation_{0};  // bumped (under mu_) to start a loop
  std::atomic<bool> stop_{false};
  std::atomic<int> active_{0};  // workers still running the current loop
  int sleeping_ = 0;            // workers waiting on cv_start_ (guarded by mu_)

  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  int64_t chunk_ = 0;
  std::atomic<int64_t> next_{0};
  std::mutex error_mu_;
  std::exception_ptr error_;  // first exception of the current loop (guarded by error_mu_)
};

// The pool used by tessera.ops and the native tests (sized on first use; resizable).
ThreadPool& default_pool();
void set_default_pool_threads(int n_threads);

}  // namespace tessera
