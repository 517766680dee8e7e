// Host emulation of a CUDA grid: the scheduler, its fibers, block barriers and warp collectives.
//
// A launch runs the blocks of the grid one after another (in an order drawn from the seed). Inside a
// block every CUDA thread is a cooperative fiber (emu/context.h) with its own stack; a fiber runs until it
// reaches a barrier or a warp collective, where it parks and yields. The scheduler then resumes a
// ready fiber drawn at random (seeded), so the order of threads between two barriers changes with
// the seed, which is what makes a missing __syncthreads show up as a wrong result.
// A barrier completes only when every thread of the block has arrived at it, a warp collective only
// when every lane of its mask has; when no fiber is ready but some are parked, that is a deadlock
// and the launch throws fk::emu::Error describing who waits where.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <memory>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <random>
#include <source_location>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "emu/context.h"

// CUDA's index types live in the global namespace.
struct uint3 {
  unsigned int x, y, z;
};

struct dim3 {
  unsigned int x, y, z;
  constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}  // NOLINT: implicit like CUDA's
  constexpr operator uint3() const { return uint3{x, y, z}; }
};

namespace fk::emu {

// Every error of the emulation (out-of-bounds access, deadlock, bad launch); surfaces in Python as
// RuntimeError with this message.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

constexpr unsigned kWarpSize = 32;
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr std::size_t kMaxStaticShared = 48 * 1024;    // CUDA's static __shared__ limit per block
constexpr std::size_t kMaxDynamicShared = 227 * 1024;  // sm90 opt-in maximum (A100: 163 KiB, V100: 96 KiB)

enum class State { kReady, kRunning, kBarrier, kWarp, kDone };

enum class Op { kNone, kSyncwarp, kShflIdx, kShflUp, kShflDown, kShflXor, kBallot, kAny, kAll, kCustom };

struct Block;

// What one lane brings to a warp collective, and what it takes back.
struct LaneCall {
  Op op = Op::kNone;
  unsigned mask = 0;
  const char* name = "";
  std::source_location where;
  std::uint64_t value = 0;  // shuffled bits or vote predicate
  int param = 0;            // source lane / delta / lane mask
  int width = 32;
  void* args[4] = {nullptr, nullptr, nullptr, nullptr};  // kCustom: operands (wmma fragments, pointers)
  unsigned ldm = 0;
  int layout = 0;
  void (*complete)(Block&, unsigned warp, unsigned mask) = nullptr;  // kCustom: runs once, all lanes in
  std::uint64_t result = 0;
};

struct Thread {
  Context context;
  void* stack = nullptr;
  State state = State::kReady;
  uint3 index{0, 0, 0};
  unsigned linear = 0;  // x + y*Dx + z*Dx*Dy: the CUDA linear thread id, which fixes warp membership
  unsigned lane = 0, warp = 0;
  LaneCall call;
  std::source_location barrier_site;
  int barrier_value = 0;
};

// A warp collective some lanes of `mask` have reached and others not yet.
struct Pending {
  unsigned warp = 0;
  unsigned mask = 0;
  unsigned arrived = 0;
  Op op = Op::kNone;
  void (*complete)(Block&, unsigned, unsigned) = nullptr;
  const char* name = "";
  std::source_location where;  // of the first lane in
};

enum class BarrierKind { kSync, kCount, kAnd, kOr };

// A block's shared memory: one bump arena for static declarations (FK_SHARED, keyed by declaration
// site) and one buffer for the dynamic part. Both are filled with 0xFF at block start (NaN as float,
// -1 as int), the GPU's "uninitialised" made visible.
struct SharedMemory {
  struct Site {
    const void* key;
    std::size_t offset, bytes;
  };
  alignas(128) unsigned char arena[kMaxStaticShared];
  std::size_t used = 0;
  std::vector<Site> sites;
  std::vector<unsigned char> dynamic;  // 16-byte aligned view starts at dynamic_base
  unsigned char* dynamic_base = nullptr;
  std::size_t dynamic_bytes = 0;

  void reset(std::size_t dyn_bytes) {
    used = 0;  // each static array is poisoned when a block allocates it (fk::emu::shared_array)
    sites.clear();
    dynamic_bytes = dyn_bytes;
    dynamic.assign(dyn_bytes + 16, 0xFF);
    auto base = reinterpret_cast<std::uintptr_t>(dynamic.data());
    dynamic_base = reinterpret_cast<unsigned char*>((base + 15) & ~std::uintptr_t(15));
  }
};

struct Block {
  uint3 index{0, 0, 0};
  std::vector<Thread> threads;
  std::vector<Pending> pending;  // open warp collectives (few at a time)
  std::vector<unsigned> ready;   // threads that can run
  unsigned done = 0;
  std::uint64_t spins = 0;  // spin yields (failed atomicCAS) since a thread last reached a barrier or exited
  unsigned barrier_arrived = 0;
  BarrierKind barrier_kind = BarrierKind::kSync;
  int barrier_acc = 0;
  std::source_location barrier_site;
  SharedMemory shared;
};

// Stacks are mmap'ed with a PROT_NONE guard page below each, so a fiber that overflows its stack
// faults at once instead of corrupting a neighbour, and are reused across blocks and launches.
class StackPool {
 public:
  ~StackPool() {
    for (void* s : stacks_) munmap(static_cast<char*>(s) - page(), bytes_ + page());
  }
  void* get(std::size_t i, std::size_t bytes) {
    if (bytes != bytes_) {
      for (void* s : stacks_) munmap(static_cast<char*>(s) - page(), bytes_ + page());
      stacks_.clear();
      bytes_ = bytes;
    }
    while (stacks_.size() <= i) {
      void* mem = mmap(nullptr, bytes_ + page(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
      if (mem == MAP_FAILED) throw Error("fk::emu: cannot map a fiber stack");
      mprotect(mem, page(), PROT_NONE);
      stacks_.push_back(static_cast<char*>(mem) + page());
    }
    return stacks_[i];
  }

 private:
  static std::size_t page() { return static_cast<std::size_t>(sysconf(_SC_PAGESIZE)); }
  std::vector<void*> stacks_;
  std::size_t bytes_ = 0;
};

// Knobs, settable from Python through the binding (fk::emu::bind_runtime).
struct Settings {
  std::uint64_t seed = 0;
  std::size_t stack_bytes = 128 * 1024;
  std::uint64_t launches = 0;  // launches run so far (tests use it to see that a kernel really ran)
};

inline Settings& settings() {
  static Settings s;
  return s;
}

struct Launch {
  dim3 grid, block;
  std::size_t dynamic_shared = 0;
  std::mt19937_64 rng;
  Block blk;
  Thread* current = nullptr;
  Context scheduler;
  std::exception_ptr error;
  void (*body)(void*) = nullptr;
  void* body_arg = nullptr;
};

inline thread_local Launch* tl_launch = nullptr;

inline std::string format_site(const std::source_location& s) {
  std::string file = s.file_name();
  auto slash = file.find_last_of('/');
  if (slash != std::string::npos) file = file.substr(slash + 1);
  return file + ":" + std::to_string(s.line());
}

inline std::string format3(uint3 v) {
  return "(" + std::to_string(v.x) + "," + std::to_string(v.y) + "," + std::to_string(v.z) + ")";
}

inline Launch& launch_state(const char* what) {
  if (tl_launch == nullptr || tl_launch->current == nullptr)
    throw Error(std::string("fk::emu: ") + what + " used outside a kernel launched by fk::emu::launch");
  return *tl_launch;
}

inline Thread& current_thread(const char* what = "a CUDA built-in") { return *launch_state(what).current; }

// "thread (t) of block (b)": where an error happened, for messages.
inline std::string where_now() {
  if (tl_launch == nullptr || tl_launch->current == nullptr) return "host code";
  return "thread " + format3(tl_launch->current->index) + " of block " + format3(tl_launch->blk.index);
}

[[noreturn]] inline void fail(const std::string& message) { throw Error("fk::emu: " + message); }

// Park the running fiber and return to the scheduler; returns when the scheduler resumes it.
inline void yield_to_scheduler() {
  Launch& l = *tl_launch;
  Thread* self = l.current;
  switch_context(self->context, l.scheduler);
}

inline void make_ready(Block& b, Thread& t) {
  t.state = State::kReady;
  b.ready.push_back(t.linear);
}

// ---- block barrier -----------------------------------------------------------------------------
// Every thread of the block must arrive, at the same call site: CUDA leaves a barrier in divergent
// code undefined (it hangs or silently mis-synchronises on real GPUs); here it is an error.
inline int block_barrier(BarrierKind kind, int predicate, const std::source_location& site) {
  Launch& l = launch_state("__syncthreads");
  Block& b = l.blk;
  Thread& self = *l.current;
  if (b.barrier_arrived == 0) {
    b.barrier_site = site;
    b.barrier_kind = kind;
    b.barrier_acc = kind == BarrierKind::kAnd ? 1 : 0;
  } else if (site.line() != b.barrier_site.line() || std::strcmp(site.file_name(), b.barrier_site.file_name()) != 0) {
    fail("block " + format3(b.index) + ": threads meet at different barriers (" + format_site(b.barrier_site) +
         " and " + format_site(site) + " reached by " + where_now() +
         "): __syncthreads in divergent code is undefined behaviour");
  }
  switch (kind) {
    case BarrierKind::kCount: b.barrier_acc += predicate != 0; break;
    case BarrierKind::kAnd: b.barrier_acc = b.barrier_acc && predicate != 0; break;
    case BarrierKind::kOr: b.barrier_acc = b.barrier_acc || predicate != 0; break;
    case BarrierKind::kSync: break;
  }
  self.state = State::kBarrier;
  self.barrier_site = site;
  b.spins = 0;
  if (++b.barrier_arrived == b.threads.size()) {
    for (Thread& t : b.threads) {
      t.barrier_value = b.barrier_acc;
      make_ready(b, t);
    }
    b.barrier_arrived = 0;
  }
  yield_to_scheduler();
  return self.barrier_value;
}

// ---- warp collectives --------------------------------------------------------------------------
inline unsigned warp_lanes(const Block& b, unsigned warp) {
  unsigned first = warp * kWarpSize;
  unsigned n = static_cast<unsigned>(b.threads.size()) - first;
  return n >= kWarpSize ? 0xFFFFFFFFu : ((1u << n) - 1u);
}

inline Thread& lane_thread(Block& b, unsigned warp, unsigned lane) { return b.threads[warp * kWarpSize + lane]; }

inline const char* op_name(Op op) {
  switch (op) {
    case Op::kSyncwarp: return "__syncwarp";
    case Op::kShflIdx: return "__shfl_sync";
    case Op::kShflUp: return "__shfl_up_sync";
    case Op::kShflDown: return "__shfl_down_sync";
    case Op::kShflXor: return "__shfl_xor_sync";
    case Op::kBallot: return "__ballot_sync";
    case Op::kAny: return "__any_sync";
    case Op::kAll: return "__all_sync";
    default: return "warp collective";
  }
}

// Results of a built-in collective, once all lanes of the mask are in.
inline void complete_builtin(Block& b, unsigned warp, unsigned mask, Op op) {
  if (op == Op::kSyncwarp) return;
  if (op == Op::kBallot || op == Op::kAny || op == Op::kAll) {
    unsigned ballot = 0;
    for (unsigned lane = 0; lane < kWarpSize; ++lane)
      if (((mask >> lane) & 1u) && lane_thread(b, warp, lane).call.value != 0) ballot |= 1u << lane;
    std::uint64_t r = op == Op::kBallot ? ballot : op == Op::kAny ? ballot != 0 : ballot == mask;
    for (unsigned lane = 0; lane < kWarpSize; ++lane)
      if ((mask >> lane) & 1u) lane_thread(b, warp, lane).call.result = r;
    return;
  }
  for (unsigned lane = 0; lane < kWarpSize; ++lane) {
    if (!((mask >> lane) & 1u)) continue;
    LaneCall& c = lane_thread(b, warp, lane).call;
    int w = c.width;
    if (w <= 0 || w > 32 || (w & (w - 1)) != 0) fail(std::string(op_name(op)) + ": width " + std::to_string(w) + " is not a power of two <= 32");
    int l = static_cast<int>(lane), segment = l & ~(w - 1), src = l;
    switch (op) {
      case Op::kShflIdx: src = segment + (c.param & (w - 1)); break;
      case Op::kShflUp: src = l - c.param < segment ? l : l - c.param; break;
      case Op::kShflDown: src = l + c.param >= segment + w ? l : l + c.param; break;
      case Op::kShflXor: src = (l ^ c.param) >= segment + w ? l : (l ^ c.param); break;
      default: break;
    }
    if (src < 0 || src >= 32 || !((mask >> src) & 1u))
      fail(std::string(op_name(op)) + ": lane " + std::to_string(l) + " of warp " + std::to_string(warp) + " in block " +
           format3(b.index) + " reads lane " + std::to_string(src) + ", which is not in the mask (undefined on a GPU)");
    c.result = lane_thread(b, warp, static_cast<unsigned>(src)).call.value;
  }
}

// Arrive at a warp collective with `call` filled in; returns this lane's result once every lane of
// call.mask has arrived at the same kind of collective.
inline std::uint64_t warp_collective(LaneCall call) {
  Launch& l = launch_state(call.name);
  Block& b = l.blk;
  Thread& self = *l.current;
  unsigned bit = 1u << self.lane;
  unsigned existing = warp_lanes(b, self.warp);
  if (!(call.mask & bit))
    fail(std::string(call.name) + " at " + format_site(call.where) + ": mask 0x" + [&] {
      std::ostringstream s;
      s << std::hex << call.mask;
      return s.str();
    }() + " does not name the calling lane (" + where_now() + ")");
  if (call.mask & ~existing)
    fail(std::string(call.name) + " at " + format_site(call.where) + ": mask names lanes that do not exist (warp " +
         std::to_string(self.warp) + " of block " + format3(b.index) + " has " + std::to_string(std::popcount(existing)) +
         " threads; blockDim is not a multiple of 32)");
  Pending* p = nullptr;
  for (Pending& q : b.pending) {
    if (q.warp != self.warp || (q.mask & call.mask) == 0) continue;
    if (q.mask != call.mask || q.op != call.op || q.complete != call.complete)
      fail("warp " + std::to_string(self.warp) + " of block " + format3(b.index) + ": lanes meet at different collectives (" +
           q.name + " at " + format_site(q.where) + " and " + call.name + " at " + format_site(call.where) +
           ", with different masks or operations): undefined on a GPU");
    p = &q;
    break;
  }
  if (p == nullptr) {
    b.pending.push_back(Pending{self.warp, call.mask, 0, call.op, call.complete, call.name, call.where});
    p = &b.pending.back();
  }
  self.call = call;
  self.state = State::kWarp;
  b.spins = 0;
  p->arrived |= bit;
  if (p->arrived == p->mask) {
    Pending done = *p;
    b.pending.erase(b.pending.begin() + (p - b.pending.data()));
    if (done.op == Op::kCustom)
      done.complete(b, self.warp, done.mask);
    else
      complete_builtin(b, self.warp, done.mask, done.op);
    for (unsigned lane = 0; lane < kWarpSize; ++lane)
      if ((done.mask >> lane) & 1u) make_ready(b, lane_thread(b, self.warp, lane));
  }
  yield_to_scheduler();
  return self.call.result;
}

// ---- spin waits ----------------------------------------------------------------------------------
// A failed atomicCAS is how a thread spins on a flag another thread will set. Fibers are never
// preempted, so the spinner yields here (staying ready) to let the others run. A spinner that is the
// only thread of its block able to run can never be released (blocks run one at a time here, and a
// GPU does not promise that another block runs concurrently either): that is reported, as is a spin
// that lasts a million yields with no thread reaching a barrier or exiting.
constexpr std::uint64_t kMaxSpins = 1000000;

inline void spin_yield(const char* what) {
  if (tl_launch == nullptr || tl_launch->current == nullptr) return;
  Launch& l = *tl_launch;
  Block& b = l.blk;
  if (b.ready.empty())
    fail(std::string(what) + " spins in " + where_now() + " while no other thread of its block can run: the value it waits "
         "for can never change (a wait on another block, or on a thread parked at a barrier)");
  if (++b.spins > kMaxSpins)
    fail(std::string(what) + ": livelock in block " + format3(b.index) + " (a million spin iterations without any thread "
         "reaching a barrier or exiting)");
  make_ready(b, *l.current);
  yield_to_scheduler();
}

// ---- the launch ----------------------------------------------------------------------------------
inline void fiber_main() {
  Launch& l = *tl_launch;
  try {
    l.body(l.body_arg);
  } catch (...) {
    l.error = std::current_exception();
  }
  Thread* self = l.current;
  self->state = State::kDone;
  l.blk.spins = 0;
  switch_context(self->context, l.scheduler);  // never resumed
  __builtin_unreachable();
}

// No thread can run but some have not finished: describe who waits where.
[[noreturn]] inline void report_deadlock(const Block& b) {
  std::ostringstream s;
  s << "fk::emu: deadlock in block " << format3(b.index) << ": ";
  unsigned at_barrier = 0, at_warp = 0, exited = 0;
  for (const Thread& t : b.threads) {
    at_barrier += t.state == State::kBarrier;
    at_warp += t.state == State::kWarp;
    exited += t.state == State::kDone;
  }
  if (at_barrier)
    s << at_barrier << " of " << b.threads.size() << " threads wait at __syncthreads (" << format_site(b.barrier_site)
      << ")";
  if (at_warp) {
    if (at_barrier) s << "; ";
    s << at_warp << " threads wait at warp collectives:";
    for (const Pending& p : b.pending) {
      std::ostringstream m;
      m << std::hex << "0x" << p.mask << ", arrived 0x" << p.arrived;
      s << " " << p.name << " at " << format_site(p.where) << " in warp " << p.warp << " (mask " << m.str() << ")";
    }
  }
  s << "; " << exited << " threads have exited. A barrier or collective that not every thread (lane of the mask) "
    << "reaches never completes on a GPU either.";
  throw Error(s.str());
}

inline void run_block(Launch& l) {
  Block& b = l.blk;
  std::size_t stack_bytes = settings().stack_bytes;
  static thread_local StackPool pool;
  b.ready.clear();
  b.pending.clear();
  b.done = 0;
  b.spins = 0;
  b.barrier_arrived = 0;
  b.shared.reset(l.dynamic_shared);
  unsigned n = static_cast<unsigned>(b.threads.size());
  for (unsigned i = 0; i < n; ++i) {
    Thread& t = b.threads[i];
    t.state = State::kReady;
    t.call = LaneCall{};
    t.stack = pool.get(i, stack_bytes);
    start_context(t.context, t.stack, stack_bytes, fiber_main);
    b.ready.push_back(i);
  }
  unsigned finished = 0;
  while (finished < n) {
    if (b.ready.empty()) report_deadlock(b);
    std::size_t pick = static_cast<std::size_t>(l.rng() % b.ready.size());
    Thread& t = b.threads[b.ready[pick]];
    b.ready[pick] = b.ready.back();
    b.ready.pop_back();
    t.state = State::kRunning;
    l.current = &t;
    switch_context(l.scheduler, t.context);
    l.current = nullptr;
    if (l.error) std::rethrow_exception(l.error);
    if (t.state == State::kDone) ++finished;
  }
  if (b.barrier_arrived != 0 || !b.pending.empty()) report_deadlock(b);
}

inline void check_launch_config(dim3 grid, dim3 block, std::size_t dynamic_shared) {
  auto bad = [](const std::string& why) { fail("invalid launch configuration: " + why); };
  if (grid.x == 0 || grid.y == 0 || grid.z == 0) bad("grid " + format3(grid) + " has a zero dimension");
  if (block.x == 0 || block.y == 0 || block.z == 0) bad("block " + format3(block) + " has a zero dimension");
  if (grid.x > 2147483647u || grid.y > 65535u || grid.z > 65535u) bad("grid " + format3(grid) + " exceeds (2^31-1, 65535, 65535)");
  if (block.x > 1024u || block.y > 1024u || block.z > 64u) bad("block " + format3(block) + " exceeds (1024, 1024, 64)");
  if (std::uint64_t(block.x) * block.y * block.z > kMaxThreadsPerBlock)
    bad("block " + format3(block) + " has more than 1024 threads");
  if (dynamic_shared > kMaxDynamicShared)
    bad(std::to_string(dynamic_shared) + " bytes of dynamic shared memory exceed the 227 KiB of any GPU");
}

// Run body(arg) as every thread of every block of the grid.
inline void run_grid(dim3 grid, dim3 block, std::size_t dynamic_shared, void (*body)(void*), void* arg) {
  if (tl_launch != nullptr) fail("a kernel launched another kernel (dynamic parallelism is not emulated)");
  check_launch_config(grid, block, dynamic_shared);
  auto owner = std::make_unique<Launch>();  // holds 48 KiB of shared arena: keep it off the caller's stack
  Launch& l = *owner;
  l.grid = grid;
  l.block = block;
  l.dynamic_shared = dynamic_shared;
  l.rng.seed(settings().seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull);
  l.body = body;
  l.body_arg = arg;
  unsigned n = block.x * block.y * block.z;
  l.blk.threads.resize(n);
  for (unsigned i = 0; i < n; ++i) {
    Thread& t = l.blk.threads[i];
    t.linear = i;
    t.index = uint3{i % block.x, (i / block.x) % block.y, i / (block.x * block.y)};
    t.lane = i % kWarpSize;
    t.warp = i / kWarpSize;
  }
  // Blocks run in a seeded random order: kernels must not depend on the order of blocks.
  std::uint64_t blocks = std::uint64_t(grid.x) * grid.y * grid.z;
  std::vector<std::uint64_t> order(blocks);
  for (std::uint64_t i = 0; i < blocks; ++i) order[i] = i;
  std::shuffle(order.begin(), order.end(), l.rng);
  tl_launch = &l;
  try {
    for (std::uint64_t id : order) {
      l.blk.index = uint3{static_cast<unsigned>(id % grid.x), static_cast<unsigned>((id / grid.x) % grid.y),
                          static_cast<unsigned>(id / (std::uint64_t(grid.x) * grid.y))};
      run_block(l);
    }
  } catch (...) {
    tl_launch = nullptr;
    throw;
  }
  tl_launch = nullptr;
  ++settings().launches;
}

// Kernel parameters are copied once (CUDA passes them by value), then every thread calls the kernel.
template <class... Params>
struct KernelCall {
  void (*kernel)(Params...);
  std::tuple<std::decay_t<Params>...> params;
  static void run(void* self) {
    auto* call = static_cast<KernelCall*>(self);
    std::apply(call->kernel, call->params);
  }
};

}  // namespace fk::emu

namespace fk::emu {

// emu::launch(kernel, grid, block, dynamic_shared_bytes, args...): the host spelling of
// kernel<<<grid, block, dynamic_shared_bytes>>>(args...). Blocks run sequentially on the calling
// thread; returns when the grid is done; throws fk::emu::Error on any fault found.
template <class... Params, class... Args>
void launch(void (*kernel)(Params...), dim3 grid, dim3 block, std::size_t dynamic_shared_bytes, Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "fk::emu::launch: wrong number of kernel arguments");
  KernelCall<Params...> call{kernel, std::tuple<std::decay_t<Params>...>(std::forward<Args>(args)...)};
  run_grid(grid, block, dynamic_shared_bytes, &KernelCall<Params...>::run, &call);
}

}  // namespace fk::emu
