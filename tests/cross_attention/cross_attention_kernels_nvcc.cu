// Compile-check translation unit of csrc/cross_attention/*_kernel.cuh (tests only: setup.py compiles
// csrc/**.cu into _C; this file is compiled by tests/cross_attention/test_cuda_compile.py): every kernel
// the launchers can pick, for fp16 (wmma), fp32 and bf16 (FMA): attention for D in {32, 64, 128}, and
// the gated-linear matmul with output in the input dtype and in fp32 (dyᵀ a).
#include "cross_attention/cross_attention_kernel.cuh"
#include "cross_attention/gated_linear_kernel.cuh"

namespace fiber_kernels {
namespace cross_attention {

#define FK_CROSS_ATTENTION_INSTANTIATE(T, D)                                                   \
  template __global__ void cross_attention_fwd_kernel<T, D>(const AttentionParams<T>);      \
  template __global__ void cross_attention_bwd_dq_kernel<T, D>(const AttentionParams<T>);   \
  template __global__ void cross_attention_bwd_dkdv_kernel<T, D>(const AttentionParams<T>);

#define FK_CROSS_ATTENTION_INSTANTIATE_TYPE(T)                                                 \
  FK_CROSS_ATTENTION_INSTANTIATE(T, 32)                                                        \
  FK_CROSS_ATTENTION_INSTANTIATE(T, 64)                                                        \
  FK_CROSS_ATTENTION_INSTANTIATE(T, 128)                                                       \
  template __global__ void cross_attention_bwd_preprocess_kernel<T>(const AttentionParams<T>, long long, int); \
  template __global__ void gated_linear_kernel<T, T>(const LinearParams<T, T>);

FK_CROSS_ATTENTION_INSTANTIATE_TYPE(__half)
FK_CROSS_ATTENTION_INSTANTIATE_TYPE(float)
FK_CROSS_ATTENTION_INSTANTIATE_TYPE(__nv_bfloat16)
template __global__ void gated_linear_kernel<__half, float>(const LinearParams<__half, float>);
template __global__ void gated_linear_kernel<__nv_bfloat16, float>(const LinearParams<__nv_bfloat16, float>);

}  // namespace cross_attention
}  // namespace fiber_kernels
