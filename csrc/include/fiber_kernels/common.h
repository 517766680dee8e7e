// Macros and exactly rounded fp32 arithmetic shared by the CPU (g++) and CUDA (nvcc) builds.
//
// FK_HOST_DEVICE marks helpers that both builds compile: `__host__ __device__` under nvcc, nothing
// under a plain C++ compiler. The fk_* functions are IEEE round-to-nearest operations that the
// compiler may not contract or approximate: under nvcc (where setup.py passes --use_fast_math and
// mul+add would otherwise fuse into FMA) they are the __f*_rn intrinsics, on the host they are the
// plain operators (the CPU build uses -std=c++20, i.e. -ffp-contract=off). Kernels whose results
// must equal a PyTorch reference bit for bit (selection by distance, thresholds) use them.
#pragma once

#if defined(__CUDACC_RTC__)
// NVRTC (the sm70 compile check) has no C++ standard headers; libcu++ gives the fixed-width types.
#include <cuda/std/cstdint>
using cuda::std::int64_t;
using cuda::std::uint32_t;
using cuda::std::uint64_t;
#else
#include <cstdint>
#endif

#if defined(__CUDACC__)
#define FK_HOST_DEVICE __host__ __device__
#define FK_INLINE __forceinline__
#else
#define FK_HOST_DEVICE
#define FK_INLINE inline
#endif

#if !defined(__CUDA_ARCH__)
#include <cmath>
#include <cstring>
#endif

namespace fiber_kernels {

FK_HOST_DEVICE FK_INLINE float fk_add(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}

FK_HOST_DEVICE FK_INLINE float fk_sub(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fsub_rn(a, b);
#else
  return a - b;
#endif
}

FK_HOST_DEVICE FK_INLINE float fk_mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}

FK_HOST_DEVICE FK_INLINE float fk_div(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}

FK_HOST_DEVICE FK_INLINE float fk_sqrt(float a) {
#if defined(__CUDA_ARCH__)
  return __fsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}

FK_HOST_DEVICE FK_INLINE double fk_sqrt(double a) {
#if defined(__CUDA_ARCH__)
  return __dsqrt_rn(a);
#else
  return std::sqrt(a);
#endif
}

// Bit pattern of a float as an unsigned int (order-preserving for non-negative floats).
FK_HOST_DEVICE FK_INLINE uint32_t fk_float_bits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof(bits));
  return bits;
#endif
}

FK_HOST_DEVICE FK_INLINE float fk_bits_float(uint32_t bits) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(bits);
#else
  float x;
  std::memcpy(&x, &bits, sizeof(x));
  return x;
#endif
}

}  // namespace fiber_kernels
