// Work sharing of the C++ CPU kernel: chunks of a loop computed on the calling thread and on helpers from torch's
// inter-op pool (at::launch), each participant taking the next chunk; each chunk's result is published once, by
// whoever finishes it first.
//
// Why not at::parallel_for: fiber_kernels._C is compiled without -fopenmp (setup.py), so at::parallel_for, an
// OpenMP template in torch's headers, runs every range on the calling thread. With OpenMP it splits the range
// statically, one part per thread, and the caller waits for every part (built with -fopenmp, on the loaded 2-core
// development machine: 2 threads against 1 at 200 boxes per image, best 1.8 against 2.6 ms but median 7.3 against
// 2.7 ms).
// Here the caller never waits for a helper. Once no chunk is left to take, it computes itself every chunk whose
// result is not published yet: a helper that another job's thread preempted in the middle of a chunk would
// otherwise hold the caller for that job's time slice (measured: 2 threads ~8 ms against 2.5 ms for 1, every call,
// while another job held the second core). So 2 threads cost at most the helper's launch and one chunk more than
// 1 thread. A helper that finishes a chunk after the call has returned finds it published and discards its result;
// everything a chunk reads must be owned by the compute function, which the helpers share, never borrowed from
// the caller's frame.
#pragma once

#include <ATen/Parallel.h>
#if defined(__linux__)
#include <sched.h>

#include <cstdio>
#endif

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <utility>

namespace fiber_kernels {
namespace atss {

// Below this much estimated work a loop stays on the calling thread. On the shared 2-core development machine,
// with other jobs running, starting a helper cost the caller 20-40 us (at::launch), the helper started 50 us to
// several ms later, and the caller computed again up to one chunk per helper: in bench/bench_atss.py's ratio test
// (calls 50 ms apart) 2 threads were 4-13% slower than 1 at ~1.3 ms of selection (ATSS, 100 boxes per image) and
// 21-30% faster at ~2.7 ms (200 boxes).
constexpr double kMinParallelNs = 2000000.0;
// Work of one chunk: small, so a chunk the caller computes again because its helper is slow costs little.
constexpr double kChunkNs = 25000.0;

// How a loop of `items` items and total_ns estimated nanoseconds is cut (chunks) and how many threads share the
// chunks: at most at::get_num_threads() (torch.set_num_threads); one chunk on the calling thread when the work is
// below kMinParallelNs or no CPU is idle.
struct WorkPlan {
  int64_t chunks = 1, threads = 1;
};

// Whether a CPU this process may use is idle now: /proc/loadavg's count of runnable threads (this one included)
// below that number of CPUs. A helper started while every CPU is busy takes a CPU from the caller or waits for one
// (on the loaded development machine 2 threads were then up to 10% slower than 1 at 200 boxes per image). True
// where unknown.
inline bool idle_cpu_now() {
#if defined(__linux__)
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof(allowed), &allowed) != 0) return true;
  std::FILE* file = std::fopen("/proc/loadavg", "r");
  if (file == nullptr) return true;
  double one = 0, five = 0, fifteen = 0;
  int runnable = 0, threads = 0;
  const bool read = std::fscanf(file, "%lf %lf %lf %d/%d", &one, &five, &fifteen, &runnable, &threads) == 5;
  std::fclose(file);
  return !read || runnable < CPU_COUNT(&allowed);
#else
  return true;
#endif
}

inline WorkPlan plan_work(int64_t items, double total_ns) {
  const int64_t threads = at::get_num_threads();
  if (threads < 2 || items < 2 || !(total_ns >= kMinParallelNs) || !idle_cpu_now()) return WorkPlan{};
  const double by_work = std::max(2.0, std::min(static_cast<double>(items), total_ns / kChunkNs));
  const int64_t chunks = static_cast<int64_t>(by_work);
  return WorkPlan{chunks, std::min(threads, chunks)};
}

// The CPU the calling thread runs on, -1 where unknown.
inline int current_cpu() {
#if defined(__linux__)
  return sched_getcpu();
#else
  return -1;
#endif
}

// Items [begin, end) of chunk `chunk` when `items` items are cut into `chunks` contiguous chunks.
inline std::pair<int64_t, int64_t> chunk_range(int64_t chunk, int64_t chunks, int64_t items) {
  return {items * chunk / chunks, items * (chunk + 1) / chunks};
}

// The results of `chunks` chunks, each published once. Shared by the caller and its helpers.
template <class Result>
class ChunkResults {
 public:
  using Compute = std::function<std::unique_ptr<Result>(int64_t chunk)>;

  ChunkResults(int64_t chunks, Compute compute)
      : chunks_(chunks), compute_(std::move(compute)), results_(new std::atomic<Result*>[chunks]) {
    for (int64_t chunk = 0; chunk < chunks_; ++chunk) results_[chunk].store(nullptr, std::memory_order_relaxed);
  }
  ~ChunkResults() {
    for (int64_t chunk = 0; chunk < chunks_; ++chunk) delete results_[chunk].load(std::memory_order_acquire);
  }
  ChunkResults(const ChunkResults&) = delete;
  ChunkResults& operator=(const ChunkResults&) = delete;

  // Compute chunks nobody has taken, until none is left or the caller has all results.
  void take_chunks() {
    while (!finished_.load(std::memory_order_relaxed)) {
      const int64_t chunk = next_.fetch_add(1, std::memory_order_relaxed);
      if (chunk >= chunks_) return;
      publish(chunk, compute_(chunk));
    }
  }

  // The caller's part: take chunks, then compute every chunk not published yet; then tell the helpers to stop.
  void complete() {
    take_chunks();
    for (int64_t chunk = 0; chunk < chunks_; ++chunk) {
      if (results_[chunk].load(std::memory_order_acquire) == nullptr) publish(chunk, compute_(chunk));
    }
    finished_.store(true, std::memory_order_relaxed);
  }

  // After complete(): chunk's result.
  const Result& result(int64_t chunk) const { return *results_[chunk].load(std::memory_order_acquire); }

  void stop() { finished_.store(true, std::memory_order_relaxed); }

 private:
  void publish(int64_t chunk, std::unique_ptr<Result> result) {
    Result* expected = nullptr;
    if (results_[chunk].compare_exchange_strong(expected, result.get(), std::memory_order_acq_rel)) result.release();
  }

  const int64_t chunks_;
  const Compute compute_;
  const std::unique_ptr<std::atomic<Result*>[]> results_;
  std::atomic<int64_t> next_{0};
  std::atomic<bool> finished_{false};
};

// Every chunk's result of compute(chunk), chunk in [0, plan.chunks), computed on the calling thread and
// plan.threads - 1 helpers (a helper's exception is dropped: the caller computes that chunk again and gets it).
template <class Result>
std::shared_ptr<const ChunkResults<Result>> compute_chunks(const WorkPlan& plan,
                                                          typename ChunkResults<Result>::Compute compute) {
  auto results = std::make_shared<ChunkResults<Result>>(plan.chunks, std::move(compute));
  // A helper woken onto the caller's own CPU (the scheduler does so when the other CPUs are busy, and runs it in
  // the caller's place) steps aside at once: there it would take every chunk while the caller waits for the CPU
  // (measured: all 106 chunks by the helper, 2.3-6.8 ms against 2.5 ms on 1 thread).
  const int caller_cpu = current_cpu();
  for (int64_t helper = 1; helper < plan.threads; ++helper) {
    at::launch([results, caller_cpu] {
      if (caller_cpu >= 0 && current_cpu() == caller_cpu) return;
      try {
        results->take_chunks();
      } catch (...) {
      }
    });
  }
  try {
    results->complete();
  } catch (...) {
    results->stop();
    throw;
  }
  return results;
}

}  // namespace atss
}  // namespace fiber_kernels
