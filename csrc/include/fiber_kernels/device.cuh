// Small device helpers of every csrc/ kernel family: element conversions to and from the fp32 the
// kernels compute in, +inf, the aligned start of the dynamic shared buffer, and the host/device
// ceil_div of launch shapes. Included through fiber_kernels/warp_gemm.cuh or on its own.
#pragma once

#include "fiber_kernels/portable.cuh"

namespace fiber_kernels {

// ceil(items / per): blocks of a launch, tiles of a dimension (host and device).
__host__ __device__ inline long long ceil_div(long long items, long long per) { return (items + per - 1) / per; }

template <class A, class B>
struct IsSame {
  static constexpr bool value = false;
};
template <class A>
struct IsSame<A, A> {
  static constexpr bool value = true;
};

#if FK_DEVICE_CODE

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }

template <class T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16(x); }

__device__ __forceinline__ float infinity() { return __int_as_float(0x7f800000); }

// The dynamic shared buffer is only declared 16-byte aligned (FK_DYNAMIC_SHARED); wmma tiles need 32:
// the first ALIGN-byte boundary at or after `smem`. The launcher's byte count includes the ALIGN slack.
template <int ALIGN>
__device__ __forceinline__ fk::Ptr<unsigned char> align_shared(fk::Ptr<unsigned char> smem) {
  static_assert(ALIGN > 0 && (ALIGN & (ALIGN - 1)) == 0, "ALIGN must be a power of two");
  const unsigned long long address = reinterpret_cast<unsigned long long>(fk::raw(smem));
  return smem + static_cast<int>((ALIGN - (address & (ALIGN - 1))) & (ALIGN - 1));
}

#endif  // FK_DEVICE_CODE

}  // namespace fiber_kernels
