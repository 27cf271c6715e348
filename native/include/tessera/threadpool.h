// A fixed pool of worker threads running one parallel loop at a time (the CPU backend's only
// source of parallelism). The calling thread takes part, so a pool of n threads has n-1 workers.
// Workers spin briefly between loops before sleeping, so the ~100 loops of a decode step do not
// each pay a futex wake-up.
//
// Each loop chooses how many of the pool's threads it uses from its work size: the caller says
// what one item costs (in cost units, below) and the loop gets one thread per min_chunk_cost()
// units of total work, at most size(); a loop worth less than two such chunks runs inline on the
// calling thread and wakes nobody. Waking and synchronising a thread costs a few microseconds
// (tens when it sleeps), which is more than the whole of a small model's loops are worth.
// Workers a loop does not use are not woken, and spin only for kSpin after the last loop they
// took part in, so a model whose loops all run inline leaves its workers asleep. The caller waits
// only for chunks that other threads claimed: a worker that wakes late (asleep, or descheduled on
// a busy machine) finds the work done and costs the loop nothing.
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

// Cost units: about one byte of data a kernel streams (weights, K/V, activations) or one f32
// multiply-add of a SIMD kernel, whichever dominates; roughly 0.05-0.1 ns of one core. Call sites
// estimate, e.g. a GEMV row: its weight bytes; attention: keys x head_dim x (bytes + MACs); an
// elementwise op: a few units per element.
using Cost = int64_t;

class ThreadPool {
 public:
  // Work per thread below which a loop uses fewer threads (TESSERA_MIN_CHUNK_COST overrides it):
  // ~20 us of one core, several times the cost of handing a chunk to a spinning worker.
  static constexpr Cost kDefaultMinChunkCost = 256 * 1024;

  // n_threads <= 0 means the number of cores this process may run on. min_chunk_cost < 0 means
  // the default (kDefaultMinChunkCost or the environment); 0 splits every loop by its grain alone
  // (tests use it to run the parallel paths of small shapes).
  explicit ThreadPool(int n_threads = 0, Cost min_chunk_cost = -1);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }
  Cost min_chunk_cost() const { return min_chunk_cost_; }

  // Calls fn(begin, end) over [0, n) split into contiguous chunks of at least `grain` items, on
  // threads_for(n, grain, item_cost) threads (the caller and the first workers). Blocks until
  // every chunk ran. Calls from several threads at once are serialised. If fn throws (on any
  // thread), no further chunks start and the first exception is rethrown here.
  void parallel_for(int64_t n, int64_t grain, Cost item_cost, const std::function<void(int64_t, int64_t)>& fn);
  // The same for a loop whose cost is unknown: split by grain alone, on every thread.
  void parallel_for(int64_t n, int64_t grain, const std::function<void(int64_t, int64_t)>& fn) {
    parallel_for(n, grain, -1, fn);
  }

  // Threads a loop of n items of item_cost units each runs on (1: inline on the caller):
  // min(size(), n / grain, n * item_cost / min_chunk_cost()), at least 1. item_cost < 0: unknown.
  int threads_for(int64_t n, int64_t grain, Cost item_cost) const;

  static int available_cores();

 private:
  void worker_loop(int index);
  void run_chunks(uint32_t tag);

  int n_threads_;
  Cost min_chunk_cost_;
  std::vector<std::thread> workers_;
  std::mutex call_mu_;  // one parallel_for at a time
  std::mutex mu_;
  std::condition_variable cv_start_;
  std::condition_variable cv_done_;
  // Bumped (under mu_) to start a loop: a count in the high bits, the loop's thread count in the
  // low kThreadBits (worker i takes part when i < that), read together in one load.
  std::atomic<uint64_t> generation_{0};
  static constexpr int kThreadBits = 16;
  std::atomic<bool> stop_{false};
  int sleeping_ = 0;  // workers waiting on cv_start_ (guarded by mu_)

  // The current loop. Chunks are claimed from claim_ = (the loop's tag: its count's low 32 bits)
  // << 32 | chunks not yet claimed, so a worker still holding an older loop's generation claims
  // nothing; the caller waits for done_ (chunks finished) to reach n_chunks_, not for every worker
  // to check in, so a worker slow to wake costs the loop nothing. The plain fields are read only
  // by a thread holding a claimed chunk (the loop cannot end meanwhile).
  const std::function<void(int64_t, int64_t)>* fn_ = nullptr;
  int64_t n_ = 0;
  int64_t chunk_ = 0;
  int64_t n_chunks_ = 0;
  std::atomic<uint64_t> claim_{0};
  std::atomic<int64_t> done_{0};
  std::mutex error_mu_;
  std::exception_ptr error_;  // first exception of the current loop (guarded by error_mu_)
};

// The pool used by tessera.ops and the native tests (sized on first use; resizable).
ThreadPool& default_pool();
void set_default_pool_threads(int n_threads);

}  // namespace tessera
