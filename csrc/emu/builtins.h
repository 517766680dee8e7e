// CUDA built-ins for the host build: qualifiers, thread indices, barriers, warp shuffles and votes,
// atomics, math intrinsics and the small vector types.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <source_location>
#include <type_traits>

#include "emu/fp16.h"
#include "emu/memory.h"
#include "emu/runtime.h"

constexpr int warpSize = 32;

// ---- indices: the running fiber's (threadIdx) and its launch's (blockIdx, blockDim, gridDim) -------
namespace fk::emu {
inline const uint3& thread_idx() { return current_thread("threadIdx").index; }
inline const uint3& block_idx() { return launch_state("blockIdx").blk.index; }
inline const dim3& block_dim() { return launch_state("blockDim").block; }
inline const dim3& grid_dim() { return launch_state("gridDim").grid; }

template <class T>
std::uint64_t to_bits(const T& v) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "warp shuffles move at most 8 bytes");
  std::uint64_t u = 0;
  std::memcpy(&u, &v, sizeof(T));
  return u;
}

template <class T>
T from_bits(std::uint64_t u) {
  T v;
  std::memcpy(&v, &u, sizeof(T));
  return v;
}

inline std::uint64_t collective(Op op, const char* name, unsigned mask, std::uint64_t value, int param, int width,
                                const std::source_location& where) {
  LaneCall c;
  c.op = op;
  c.name = name;
  c.mask = mask;
  c.value = value;
  c.param = param;
  c.width = width;
  c.where = where;
  return warp_collective(c);
}
}  // namespace fk::emu

#define threadIdx (::fk::emu::thread_idx())
#define blockIdx (::fk::emu::block_idx())
#define blockDim (::fk::emu::block_dim())
#define gridDim (::fk::emu::grid_dim())

// ---- barriers ----------------------------------------------------------------------------------
inline void __syncthreads(std::source_location where = std::source_location::current()) {
  fk::emu::block_barrier(fk::emu::BarrierKind::kSync, 0, where);
}
inline int __syncthreads_count(int predicate, std::source_location where = std::source_location::current()) {
  return fk::emu::block_barrier(fk::emu::BarrierKind::kCount, predicate, where);
}
inline int __syncthreads_and(int predicate, std::source_location where = std::source_location::current()) {
  return fk::emu::block_barrier(fk::emu::BarrierKind::kAnd, predicate, where);
}
inline int __syncthreads_or(int predicate, std::source_location where = std::source_location::current()) {
  return fk::emu::block_barrier(fk::emu::BarrierKind::kOr, predicate, where);
}
inline void __syncwarp(unsigned mask = 0xFFFFFFFFu, std::source_location where = std::source_location::current()) {
  fk::emu::collective(fk::emu::Op::kSyncwarp, "__syncwarp", mask, 0, 0, 32, where);
}
// One host thread runs the whole grid in program order between fiber switches: fences are no-ops.
inline void __threadfence() {}
inline void __threadfence_block() {}
inline void __nanosleep(unsigned) {}

// ---- warp shuffles and votes ---------------------------------------------------------------------
template <class T>
T __shfl_sync(unsigned mask, T var, int src_lane, int width = 32, std::source_location where = std::source_location::current()) {
  return fk::emu::from_bits<T>(fk::emu::collective(fk::emu::Op::kShflIdx, "__shfl_sync", mask, fk::emu::to_bits(var), src_lane, width, where));
}
template <class T>
T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = 32, std::source_location where = std::source_location::current()) {
  return fk::emu::from_bits<T>(fk::emu::collective(fk::emu::Op::kShflUp, "__shfl_up_sync", mask, fk::emu::to_bits(var), static_cast<int>(delta), width, where));
}
template <class T>
T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = 32, std::source_location where = std::source_location::current()) {
  return fk::emu::from_bits<T>(fk::emu::collective(fk::emu::Op::kShflDown, "__shfl_down_sync", mask, fk::emu::to_bits(var), static_cast<int>(delta), width, where));
}
template <class T>
T __shfl_xor_sync(unsigned mask, T var, int lane_mask, int width = 32, std::source_location where = std::source_location::current()) {
  return fk::emu::from_bits<T>(fk::emu::collective(fk::emu::Op::kShflXor, "__shfl_xor_sync", mask, fk::emu::to_bits(var), lane_mask, width, where));
}
inline unsigned __ballot_sync(unsigned mask, int predicate, std::source_location where = std::source_location::current()) {
  return static_cast<unsigned>(fk::emu::collective(fk::emu::Op::kBallot, "__ballot_sync", mask, predicate != 0, 0, 32, where));
}
inline int __any_sync(unsigned mask, int predicate, std::source_location where = std::source_location::current()) {
  return static_cast<int>(fk::emu::collective(fk::emu::Op::kAny, "__any_sync", mask, predicate != 0, 0, 32, where));
}
inline int __all_sync(unsigned mask, int predicate, std::source_location where = std::source_location::current()) {
  return static_cast<int>(fk::emu::collective(fk::emu::Op::kAll, "__all_sync", mask, predicate != 0, 0, 32, where));
}

// ---- atomics -------------------------------------------------------------------------------------
// Fibers switch only at barriers and collectives, so a read-modify-write here is indivisible, as an
// atomic must be. (The flip side: a *missing* atomic is not caught, see docs/emulation.md.)
#define FK_EMU_ATOMIC(name, T, expr)      \
  inline T name(T* address, T val) {      \
    T old = *address;                     \
    *address = (expr);                    \
    return old;                           \
  }
FK_EMU_ATOMIC(atomicAdd, int, old + val)
FK_EMU_ATOMIC(atomicAdd, unsigned int, old + val)
FK_EMU_ATOMIC(atomicAdd, unsigned long long, old + val)
FK_EMU_ATOMIC(atomicAdd, float, old + val)
FK_EMU_ATOMIC(atomicAdd, double, old + val)
FK_EMU_ATOMIC(atomicAdd, __half, __hadd(old, val))
FK_EMU_ATOMIC(atomicAdd, __nv_bfloat16, __hadd(old, val))
FK_EMU_ATOMIC(atomicSub, int, old - val)
FK_EMU_ATOMIC(atomicSub, unsigned int, old - val)
FK_EMU_ATOMIC(atomicExch, int, val)
FK_EMU_ATOMIC(atomicExch, unsigned int, val)
FK_EMU_ATOMIC(atomicExch, unsigned long long, val)
FK_EMU_ATOMIC(atomicExch, float, val)
FK_EMU_ATOMIC(atomicMax, int, old < val ? val : old)
FK_EMU_ATOMIC(atomicMax, unsigned int, old < val ? val : old)
FK_EMU_ATOMIC(atomicMax, long long, old < val ? val : old)
FK_EMU_ATOMIC(atomicMax, unsigned long long, old < val ? val : old)
FK_EMU_ATOMIC(atomicMin, int, val < old ? val : old)
FK_EMU_ATOMIC(atomicMin, unsigned int, val < old ? val : old)
FK_EMU_ATOMIC(atomicMin, long long, val < old ? val : old)
FK_EMU_ATOMIC(atomicMin, unsigned long long, val < old ? val : old)
FK_EMU_ATOMIC(atomicAnd, int, old & val)
FK_EMU_ATOMIC(atomicAnd, unsigned int, old & val)
FK_EMU_ATOMIC(atomicOr, int, old | val)
FK_EMU_ATOMIC(atomicOr, unsigned int, old | val)
FK_EMU_ATOMIC(atomicXor, int, old ^ val)
FK_EMU_ATOMIC(atomicXor, unsigned int, old ^ val)
#undef FK_EMU_ATOMIC

// A failed compare-and-swap yields (fk::emu::spin_yield): CAS loops are how threads wait for each other.
#define FK_EMU_ATOMIC_CAS(T)                          \
  inline T atomicCAS(T* address, T compare, T val) {  \
    T old = *address;                                 \
    if (old == compare)                               \
      *address = val;                                 \
    else                                              \
      fk::emu::spin_yield("atomicCAS");               \
    return old;                                       \
  }
FK_EMU_ATOMIC_CAS(int)
FK_EMU_ATOMIC_CAS(unsigned int)
FK_EMU_ATOMIC_CAS(unsigned long long)
FK_EMU_ATOMIC_CAS(unsigned short)
#undef FK_EMU_ATOMIC_CAS

// The same atomics on a checked pointer: the target element is bounds-checked first.
#define FK_EMU_ATOMIC_PTR(name)                                     \
  template <class T, class V>                                       \
  auto name(const fk::Ptr<T>& address, V val) {                     \
    return name(address.checked(), static_cast<std::remove_cv_t<T>>(val)); \
  }
FK_EMU_ATOMIC_PTR(atomicAdd)
FK_EMU_ATOMIC_PTR(atomicSub)
FK_EMU_ATOMIC_PTR(atomicExch)
FK_EMU_ATOMIC_PTR(atomicMax)
FK_EMU_ATOMIC_PTR(atomicMin)
FK_EMU_ATOMIC_PTR(atomicAnd)
FK_EMU_ATOMIC_PTR(atomicOr)
FK_EMU_ATOMIC_PTR(atomicXor)
#undef FK_EMU_ATOMIC_PTR
template <class T, class C, class V>
T atomicCAS(const fk::Ptr<T>& address, C compare, V val) {
  return atomicCAS(address.checked(), static_cast<T>(compare), static_cast<T>(val));
}

// ---- loads -----------------------------------------------------------------------------------------
template <class T>
T __ldg(const T* p) {
  return *p;
}
template <class T>
std::remove_cv_t<T> __ldg(const fk::Ptr<T>& p) {
  return *p;
}

// ---- math intrinsics ---------------------------------------------------------------------------------
// The fast-math intrinsics are computed at full precision here; the GPU's are approximate (__expf:
// 2 + 1.16|x| ulp). Tolerances of tests must allow for the GPU's error, not the emulator's.
inline float __expf(float x) { return std::exp(x); }
inline float __exp10f(float x) { return std::pow(10.0f, x); }
inline float __logf(float x) { return std::log(x); }
inline float __log2f(float x) { return std::log2(x); }
inline float __log10f(float x) { return std::log10(x); }
inline float __powf(float x, float y) { return std::pow(x, y); }
inline float __sinf(float x) { return std::sin(x); }
inline float __cosf(float x) { return std::cos(x); }
inline float __tanf(float x) { return std::tan(x); }
inline float __tanhf(float x) { return std::tanh(x); }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
inline double rsqrt(double x) { return 1.0 / std::sqrt(x); }
inline float __frsqrt_rn(float x) { return 1.0f / std::sqrt(x); }
inline float __fsqrt_rn(float x) { return std::sqrt(x); }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
// The GPU's __fdividef returns 0 for 2^126 < |y| < 2^128 (and finite x); keep that trap visible.
inline float __fdividef(float x, float y) {
  float ay = std::fabs(y);
  if (ay > 8.507059e+37f && ay < INFINITY && std::isfinite(x)) return 0.0f;
  return x / y;
}
inline float __saturatef(float x) { return std::isnan(x) ? 0.0f : std::fmin(std::fmax(x, 0.0f), 1.0f); }
inline int __float2int_rn(float x) { return static_cast<int>(std::nearbyint(x)); }
inline int __float2int_rz(float x) { return static_cast<int>(x); }
inline int __float2int_rd(float x) { return static_cast<int>(std::floor(x)); }
inline int __float2int_ru(float x) { return static_cast<int>(std::ceil(x)); }
inline float __int2float_rn(int x) { return static_cast<float>(x); }
inline int __float_as_int(float x) { return static_cast<int>(fk::emu::float_bits(x)); }
inline unsigned __float_as_uint(float x) { return fk::emu::float_bits(x); }
inline float __int_as_float(int x) { return fk::emu::bits_float(static_cast<std::uint32_t>(x)); }
inline float __uint_as_float(unsigned x) { return fk::emu::bits_float(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll(static_cast<unsigned long long>(x)); }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
  return r;
}
// CUDA's device min/max overloads (unqualified in kernels).
template <class A, class B, class = std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>>>
inline std::common_type_t<A, B> min(A a, B b) {
  return b < a ? b : a;
}
template <class A, class B, class = std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>>>
inline std::common_type_t<A, B> max(A a, B b) {
  return a < b ? b : a;
}
// fmaxf, fminf, expf, sqrtf, fabsf, ... come from <cmath> with the same names and semantics.

// ---- vector types ----------------------------------------------------------------------------------
#define FK_EMU_VEC2(T, name, align) \
  struct __align__(align) name {    \
    T x, y;                         \
  };                                \
  inline name make_##name(T x, T y) { return name{x, y}; }
#define FK_EMU_VEC4(T, name, align) \
  struct __align__(align) name {    \
    T x, y, z, w;                   \
  };                                \
  inline name make_##name(T x, T y, T z, T w) { return name{x, y, z, w}; }
FK_EMU_VEC2(float, float2, 8)
FK_EMU_VEC4(float, float4, 16)
FK_EMU_VEC2(int, int2, 8)
FK_EMU_VEC4(int, int4, 16)
FK_EMU_VEC2(unsigned int, uint2, 8)
FK_EMU_VEC4(unsigned int, uint4, 16)
#undef FK_EMU_VEC2
#undef FK_EMU_VEC4
inline uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return uint3{x, y, z}; }
inline dim3 make_dim3(unsigned x, unsigned y, unsigned z) { return dim3(x, y, z); }
