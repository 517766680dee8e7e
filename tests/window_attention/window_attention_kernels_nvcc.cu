// The window-attention kernels of csrc/window_attention/window_attention_kernel.cuh compiled on their own
// (no torch headers) by nvcc 13 (sm80/sm90) or NVRTC 12 (sm70) in test_cuda_compile.py: the source the
// emulator runs is one a GPU compiler accepts, for every element type the launcher dispatches.
#include "window_attention/window_attention_kernel.cuh"

namespace fiber_kernels {
namespace window_attention {

template __global__ void wa_fwd_kernel<float>(WaFwdArgs<float>);
template __global__ void wa_fwd_kernel<__half>(WaFwdArgs<__half>);
template __global__ void wa_fwd_kernel<__nv_bfloat16>(WaFwdArgs<__nv_bfloat16>);
template __global__ void wa_bwd_dq_kernel<float>(WaBwdArgs<float>);
template __global__ void wa_bwd_dq_kernel<__half>(WaBwdArgs<__half>);
template __global__ void wa_bwd_dq_kernel<__nv_bfloat16>(WaBwdArgs<__nv_bfloat16>);
template __global__ void wa_bwd_dkv_kernel<float>(WaBwdArgs<float>);
template __global__ void wa_bwd_dkv_kernel<__half>(WaBwdArgs<__half>);
template __global__ void wa_bwd_dkv_kernel<__nv_bfloat16>(WaBwdArgs<__nv_bfloat16>);

}  // namespace window_attention
}  // namespace fiber_kernels
