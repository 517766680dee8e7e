// One warp's 16-row matrix product in shared memory, shared by the cross-attention and gated-linear
// kernels: fp16 through nvcuda::wmma m16n16k16 with fp32 accumulation (tensor cores from sm70), fp32 and
// bf16 through fp32 FMA (bf16 wmma needs sm80; one code path for every architecture).
#pragma once

#include "fiber_kernels/portable.cuh"

namespace fiber_kernels {
namespace cross_attention {

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

template <bool COL_MAJOR>
struct WmmaLayout {
  using type = nvcuda::wmma::row_major;
};
template <>
struct WmmaLayout<true> {
  using type = nvcuda::wmma::col_major;
};

// c (16 x N fp32, row-major, ldc) = [c +] a (16 x K, row-major, lda) @ b, where b(k, n) is b[n * ldb + k]
// (B_COL: b holds the transposed operand row by row, e.g. K for q kᵀ) or b[k * ldb + n]. One warp.
// fp16: wmma tiles of 16 x 16 x 16 with fp32 accumulation; other types: fp32 FMA per output element.
template <class T, int N, int K, bool B_COL, bool ACCUM>
__device__ __forceinline__ void warp_gemm(fk::Ptr<const T> a, int lda, fk::Ptr<const T> b, int ldb, fk::Ptr<float> c,
                                          int ldc) {
  static_assert(N % 16 == 0 && K % 16 == 0, "warp_gemm tiles are multiples of 16");
  __syncwarp();
  if constexpr (IsSame<T, __half>::value) {
    using namespace nvcuda;
    using BLayout = typename WmmaLayout<B_COL>::type;
    for (int n0 = 0; n0 < N; n0 += 16) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      if (ACCUM) {
        wmma::load_matrix_sync(acc, c + n0, ldc, wmma::mem_row_major);
      } else {
        wmma::fill_fragment(acc, 0.0f);
      }
      for (int k0 = 0; k0 < K; k0 += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a_frag;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, BLayout> b_frag;
        wmma::load_matrix_sync(a_frag, a + k0, lda);
        wmma::load_matrix_sync(b_frag, B_COL ? b + (long long)n0 * ldb + k0 : b + (long long)k0 * ldb + n0, ldb);
        wmma::mma_sync(acc, a_frag, b_frag, acc);
      }
      wmma::store_matrix_sync(c + n0, acc, ldc, wmma::mem_row_major);
    }
  } else {
    const int lane = threadIdx.x % 32;
    for (int e = lane; e < 16 * N; e += 32) {
      const int r = e / N, n = e % N;
      float sum = ACCUM ? c[r * ldc + n] : 0.0f;
      for (int k = 0; k < K; ++k) {
        const float bv = to_float(B_COL ? b[n * ldb + k] : b[k * ldb + n]);
        sum = fmaf(to_float(a[r * lda + k]), bv, sum);
      }
      c[r * ldc + n] = sum;
    }
  }
  __syncwarp();
}

#endif  // FK_DEVICE_CODE

}  // namespace cross_attention
}  // namespace fiber_kernels
