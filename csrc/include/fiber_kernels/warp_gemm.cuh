// One warp's 16-row matrix product in shared memory, used by the cross-attention, gated-linear and
// window-attention kernels: fp16 through nvcuda::wmma m16n16k16 with fp32 accumulation (tensor cores
// from sm70), every other element type through fp32 FMA (bf16 wmma needs sm80; one code path for
// every architecture).
#pragma once

#include "fiber_kernels/device.cuh"

namespace fiber_kernels {

#if FK_DEVICE_CODE

template <bool COL_MAJOR>
struct WmmaLayout {
  using type = nvcuda::wmma::row_major;
};
template <>
struct WmmaLayout<true> {
  using type = nvcuda::wmma::col_major;
};

// c (16 x ncols fp32, row-major, ldc) = [c +] a (16 x depth, row-major, lda) @ b, where b(k, n) is
// b[n * ldb + k] (B_COL: b holds the transposed operand row by row, e.g. K for Q Kᵀ) or b[k * ldb + n].
// Every lane of one warp calls it; ncols and depth are multiples of 16 (compile-time constants where
// the caller has them, so nvcc unrolls). T = __half: wmma tiles of 16 x 16 x 16 with fp32
// accumulation; any other T: fp32 per output element, `lane` (0..31) computing elements lane, lane + 32,
// ... with sum = fmaf(a, b, sum) (FUSED: one rounding in every build) or sum += a * b (nvcc contracts
// it to the same FMA; the host emulator rounds twice). FUSED is the caller's spelling kept as it was
// (cross attention and gated linear: true; window attention: false), so no kernel's code changed.
// No __syncwarp: the caller orders the warp's shared-memory accesses around it.
template <class T, bool B_COL, bool ACCUM, bool FUSED>
__device__ __forceinline__ void warp_strip_gemm(fk::Ptr<const T> a, int lda, fk::Ptr<const T> b, int ldb,
                                                fk::Ptr<float> c, int ldc, int ncols, int depth, int lane) {
  if constexpr (IsSame<T, __half>::value) {
    using namespace nvcuda;
    using BLayout = typename WmmaLayout<B_COL>::type;
    for (int n0 = 0; n0 < ncols; n0 += 16) {
      wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
      if (ACCUM) {
        wmma::load_matrix_sync(acc, c + n0, ldc, wmma::mem_row_major);
      } else {
        wmma::fill_fragment(acc, 0.0f);
      }
      for (int k0 = 0; k0 < depth; k0 += 16) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a_frag;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, BLayout> b_frag;
        wmma::load_matrix_sync(a_frag, a + k0, lda);
        wmma::load_matrix_sync(b_frag, B_COL ? b + n0 * ldb + k0 : b + k0 * ldb + n0, ldb);
        wmma::mma_sync(acc, a_frag, b_frag, acc);
      }
      wmma::store_matrix_sync(c + n0, acc, ldc, wmma::mem_row_major);
    }
  } else {
    for (int e = lane; e < 16 * ncols; e += 32) {
      const int r = e / ncols, n = e % ncols;
      float sum = ACCUM ? c[r * ldc + n] : 0.0f;
      for (int k = 0; k < depth; ++k) {
        if constexpr (FUSED) {
          const float bv = to_float(B_COL ? b[n * ldb + k] : b[k * ldb + n]);
          sum = fmaf(to_float(a[r * lda + k]), bv, sum);
        } else {
          sum += to_float(a[r * lda + k]) * to_float(B_COL ? b[n * ldb + k] : b[k * ldb + n]);
        }
      }
      c[r * ldc + n] = sum;
    }
  }
}

// warp_strip_gemm with compile-time N = ncols and K = depth, between two __syncwarp (the tile loads
// before it and the reads of c after it need no further barrier).
template <class T, int N, int K, bool B_COL, bool ACCUM>
__device__ __forceinline__ void warp_gemm(fk::Ptr<const T> a, int lda, fk::Ptr<const T> b, int ldb, fk::Ptr<float> c,
                                          int ldc) {
  static_assert(N % 16 == 0 && K % 16 == 0, "warp_gemm tiles are multiples of 16");
  __syncwarp();
  warp_strip_gemm<T, B_COL, ACCUM, true>(a, lda, b, ldb, c, ldc, N, K, threadIdx.x % 32);
  __syncwarp();
}

#endif  // FK_DEVICE_CODE

}  // namespace fiber_kernels
