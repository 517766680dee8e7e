// CUDA launchers of the grouped cross-attention (cross_attention_kernel.cuh) and the gated residual linear
// (gated_linear_kernel.cuh); launch logic shared with the emulation in *_launch.h: fp16 on tensor cores through wmma (sm70+),
// fp32 and bf16 through fp32 FMA. Memory: out, the (B, H, Nq) lse and delta, and the gradients.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "cross_attention/cross_attention_launch.h"
#include "cross_attention/gated_linear_launch.h"

namespace fiber_kernels {
namespace cross_attention {
namespace {

constexpr long long kDefaultSharedLimit = 48 * 1024;

struct CudaPolicy {
  template <class T>
  static T* ptr(const at::Tensor& t, const char*) {
    return reinterpret_cast<T*>(t.data_ptr());
  }
  template <class... Params, class... Args>
  static void launch(void (*kernel)(Params...), int64_t grid_x, int64_t grid_y, int threads, long long shared_bytes,
                     Args&&... args) {
    if (shared_bytes > kDefaultSharedLimit) {
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(shared_bytes)));
    }
    const dim3 grid(static_cast<unsigned>(grid_x), static_cast<unsigned>(grid_y));
    kernel<<<grid, threads, static_cast<size_t>(shared_bytes), at::cuda::getCurrentCUDAStream()>>>(
        std::forward<Args>(args)...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

std::tuple<at::Tensor, at::Tensor> cross_attention_fwd_cuda(const at::Tensor& q, const at::Tensor& k,
                                                            const at::Tensor& v,
                                                            const std::optional<at::Tensor>& key_padding_mask,
                                                            double scale) {
  const c10::cuda::CUDAGuard guard(q.device());
  return run_fwd<CudaPolicy>(q, k, v, key_padding_mask, scale);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cross_attention_bwd_cuda(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const std::optional<at::Tensor>& key_padding_mask, double scale) {
  const c10::cuda::CUDAGuard guard(q.device());
  return run_bwd<CudaPolicy>(grad_out, q, k, v, out, lse, key_padding_mask, scale);
}

at::Tensor gated_residual_linear_fwd_cuda(const at::Tensor& x, const at::Tensor& a, const at::Tensor& weight,
                                          const std::optional<at::Tensor>& bias, const at::Tensor& gate) {
  const c10::cuda::CUDAGuard guard(a.device());
  return run_linear_fwd<CudaPolicy>(x, a, weight, bias, gate);
}

std::tuple<at::Tensor, at::Tensor> gated_residual_linear_bwd_cuda(const at::Tensor& grad_out, const at::Tensor& a,
                                                                  const at::Tensor& weight, const at::Tensor& gate) {
  const c10::cuda::CUDAGuard guard(a.device());
  return run_linear_bwd<CudaPolicy>(grad_out, a, weight, gate);
}

}  // namespace

TORCH_LIBRARY_IMPL(fiber_kernels_C, CUDA, m) {
  m.impl("cross_attention_fwd", &cross_attention_fwd_cuda);
  m.impl("cross_attention_bwd", &cross_attention_bwd_cuda);
  m.impl("gated_residual_linear_fwd", &gated_residual_linear_fwd_cuda);
  m.impl("gated_residual_linear_bwd", &gated_residual_linear_bwd_cuda);
}

}  // namespace cross_attention
}  // namespace fiber_kernels
