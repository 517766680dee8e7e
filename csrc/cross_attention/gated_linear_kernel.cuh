// Gated residual linear of FIBER's fusion output (x + g(alpha) * (a @ Wᵀ + b)) for the CUDA backend: one
// strided tiled matmul whose epilogue adds the bias, scales by the gate and adds the residual, used for
// the forward and for both backward products (da = g * dy @ W, G = dyᵀ @ a in fp32), as the Triton
// launchers do. fp16 multiplies through wmma (warp_gemm), fp32 and bf16 through fp32 FMA.
#pragma once

#include "fiber_kernels/warp_gemm.cuh"

namespace fiber_kernels {
namespace cross_attention {

constexpr int kLinearWarps = 4;
constexpr int kLinearBlockM = 16 * kLinearWarps, kLinearBlockN = 64, kLinearBlockK = 32;

// out(m, n) = [x(m, n) +] [gate *] (sum_k a(m, k) b(k, n) [+ bias(n)]), every operand strided.
template <class T, class OutT>
struct LinearParams {
  fk::Ptr<const T> a, b, bias, x;  // bias, x: nullptr when absent
  fk::Ptr<const float> gate;       // one fp32 element, or nullptr
  fk::Ptr<OutT> out;
  long long rows, cols, inner;
  long long stride_am, stride_ak, stride_bk, stride_bn, stride_bias, stride_xm, stride_xn, stride_om, stride_on;
};

#if FK_DEVICE_CODE

// grid (ceil(rows / 64), ceil(cols / 64)), block 32 * kLinearWarps; each warp owns 16 rows of the tile.
template <class T, class OutT>
__global__ void gated_linear_kernel(const LinearParams<T, OutT> p) {
  FK_SHARED_ALIGNED(T, a_s, kLinearBlockM * kLinearBlockK, 32);
  FK_SHARED_ALIGNED(T, b_s, kLinearBlockK * kLinearBlockN, 32);
  FK_SHARED_ALIGNED(float, c_s, kLinearBlockM * kLinearBlockN, 32);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const long long row0 = (long long)blockIdx.x * kLinearBlockM, col0 = (long long)blockIdx.y * kLinearBlockN;
  for (int idx = threadIdx.x; idx < kLinearBlockM * kLinearBlockN; idx += blockDim.x) c_s[idx] = 0.0f;
  for (long long k0 = 0; k0 < p.inner; k0 += kLinearBlockK) {
    __syncthreads();  // the previous tiles are consumed (and c_s is initialised)
    for (int idx = threadIdx.x; idx < kLinearBlockM * kLinearBlockK; idx += blockDim.x) {
      const long long m = row0 + idx / kLinearBlockK, k = k0 + idx % kLinearBlockK;
      a_s[idx] = m < p.rows && k < p.inner ? p.a[m * p.stride_am + k * p.stride_ak] : from_float<T>(0.0f);
    }
    for (int idx = threadIdx.x; idx < kLinearBlockK * kLinearBlockN; idx += blockDim.x) {
      const long long k = k0 + idx / kLinearBlockN, n = col0 + idx % kLinearBlockN;
      b_s[idx] = k < p.inner && n < p.cols ? p.b[k * p.stride_bk + n * p.stride_bn] : from_float<T>(0.0f);
    }
    __syncthreads();
    warp_gemm<T, kLinearBlockN, kLinearBlockK, false, true>(a_s + warp * 16 * kLinearBlockK, kLinearBlockK, b_s,
                                                            kLinearBlockN, c_s + warp * 16 * kLinearBlockN,
                                                            kLinearBlockN);
  }
  __syncwarp();
  const float gate = p.gate != nullptr ? p.gate[0] : 1.0f;
  for (int e = lane; e < 16 * kLinearBlockN; e += 32) {
    const long long m = row0 + warp * 16 + e / kLinearBlockN, n = col0 + e % kLinearBlockN;
    if (m < p.rows && n < p.cols) {
      float value = c_s[warp * 16 * kLinearBlockN + e];
      if (p.bias != nullptr) value += to_float(p.bias[n * p.stride_bias]);
      value *= gate;
      if (p.x != nullptr) value += to_float(p.x[m * p.stride_xm + n * p.stride_xn]);
      p.out[m * p.stride_om + n * p.stride_on] = from_float<OutT>(value);
    }
  }
}

#endif  // FK_DEVICE_CODE

}  // namespace cross_attention
}  // namespace fiber_kernels
