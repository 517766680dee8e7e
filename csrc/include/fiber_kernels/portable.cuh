// The one header every csrc/ kernel (.cuh) includes. It gives the kernel source three builds:
//
//   nvcc (__CUDACC__)            the real CUDA headers; fk::Ptr<T> is T*, FK_SHARED is __shared__.
//   g++ with FIBER_KERNELS_EMU   the host emulation of csrc/emu/ (threads as fibers, checked memory);
//                                fiber_kernels.testing.emu.build() defines the macro.
//   any other host compiler      only __host__/__device__/__forceinline__ (empty), so a C++ CPU
//                                kernel of _C can include the .cuh for its __host__ __device__
//                                helpers; FK_DEVICE_CODE is 0 and kernels are left out.
//
// Kernels written against this header use, instead of the raw CUDA spellings (docs/emulation.md):
//   fk::Ptr<T>                      global/shared pointers in kernel parameters and locals
//   FK_SHARED(T, name, count)       __shared__ T name[count]
//   FK_SHARED_ALIGNED(T, name, count, align)   same with __align__(align) (wmma tiles: 32)
//   FK_SHARED_VAR(T, name)          __shared__ T name   (a scalar; name is a T&)
//   FK_DYNAMIC_SHARED(T, name)      extern __shared__ dynamic memory viewed as T
//   fk::ptr_cast<U>(p)              reinterpret_cast<U*>(p) (vector loads; alignment checked)
// and wrap their __global__ kernels in `#if FK_DEVICE_CODE` when a plain host .cpp includes them.
#pragma once

#if defined(__CUDACC__)

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#define FK_DEVICE_CODE 1
#define FK_EMU 0

namespace fk {
// Under nvcc a checked pointer is a raw pointer: no cost, same kernel ABI as T*.
template <class T>
using Ptr = T*;

template <class U, class T>
__host__ __device__ __forceinline__ U* ptr_cast(T* p) {
  return reinterpret_cast<U*>(p);
}

template <class T>
__host__ __device__ __forceinline__ T* raw(T* p) {
  return p;
}
}  // namespace fk

#define FK_SHARED(T, name, count) __shared__ T name[count]
#define FK_SHARED_ALIGNED(T, name, count, align) __shared__ __align__(align) T name[count]
#define FK_SHARED_VAR(T, name) __shared__ T name
// One untyped extern array for all kernels of a translation unit (typed `extern __shared__ T x[]`
// with different T in one file is a redeclaration error), viewed as T.
#define FK_DYNAMIC_SHARED(T, name)                                   \
  extern __shared__ __align__(16) unsigned char fk_dynamic_shared_[]; \
  T* name = reinterpret_cast<T*>(fk_dynamic_shared_)

#elif defined(FIBER_KERNELS_EMU)

#define FK_DEVICE_CODE 1
#define FK_EMU 1
#include "emu/emulator.h"

#else

#define FK_DEVICE_CODE 0
#define FK_EMU 0
#ifndef __host__
#define __host__
#endif
#ifndef __device__
#define __device__
#endif
#ifndef __forceinline__
#define __forceinline__ inline
#endif

#endif
