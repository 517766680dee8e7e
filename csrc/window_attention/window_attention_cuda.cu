// CUDA launcher of fused Swin window attention (kernels in window_attention_kernel.cuh; launch sequence
// and checks in window_attention_launch.h, shared with the emulation binding). Forward: one block per
// (window, head). Backward: dq blocks over fixed window ranges (table-gradient partials), dk/dv blocks
// over window chunks (qkv-bias partials), then two fixed-order folds. Dynamic shared memory above
// 48 KiB is opted into per kernel; a shape whose layout exceeds the device's opt-in limit is refused.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "window_attention/window_attention_kernel.cuh"
#include "window_attention/window_attention_launch.h"

namespace fiber_kernels {
namespace window_attention {
namespace {

struct CudaBackend {
  cudaStream_t stream;
  long long max_shared;

  template <class T>
  T* ptr(const at::Tensor& t, const char* /*name*/) const {
    return reinterpret_cast<T*>(t.data_ptr());
  }

  template <class... P, class... A>
  void launch(void (*kernel)(P...), dim3 grid, int threads, long long shared_bytes, A... args) const {
    TORCH_CHECK(shared_bytes <= max_shared, "window_attention (CUDA): the kernel needs ", shared_bytes,
                " bytes of shared memory, the device allows ", max_shared, " per block");
    if (shared_bytes > 48 * 1024)
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          static_cast<int>(shared_bytes)));
    kernel<<<grid, threads, static_cast<size_t>(shared_bytes), stream>>>(args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

CudaBackend backend() {
  return CudaBackend{at::cuda::getCurrentCUDAStream(),
                     static_cast<long long>(at::cuda::getCurrentDeviceProperties()->sharedMemPerBlockOptin)};
}

std::tuple<at::Tensor, at::Tensor> window_attention_fwd_cuda(const at::Tensor& qkv, const at::Tensor& rpb_table,
                                                             const std::optional<at::Tensor>& qkv_bias,
                                                             int64_t num_heads, int64_t window_h, int64_t window_w,
                                                             int64_t shift_h, int64_t shift_w, double scale,
                                                             double mask_value, bool shift_first) {
  const c10::cuda::CUDAGuard guard(qkv.device());
  return run_forward(backend(), qkv, rpb_table, qkv_bias, num_heads, window_h, window_w, shift_h, shift_w, scale,
                     mask_value, shift_first);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> window_attention_bwd_cuda(
    const at::Tensor& grad_out, const at::Tensor& qkv, const at::Tensor& rpb_table,
    const std::optional<at::Tensor>& qkv_bias, const at::Tensor& out, const at::Tensor& lse, int64_t num_heads,
    int64_t window_h, int64_t window_w, int64_t shift_h, int64_t shift_w, double scale, double mask_value,
    bool shift_first) {
  const c10::cuda::CUDAGuard guard(qkv.device());
  return run_backward(backend(), grad_out, qkv, rpb_table, qkv_bias, out, lse, num_heads, window_h, window_w, shift_h,
                      shift_w, scale, mask_value, shift_first);
}

}  // namespace

TORCH_LIBRARY_IMPL(fiber_kernels_C, CUDA, m) {
  m.impl("window_attention_fwd", &window_attention_fwd_cuda);
  m.impl("window_attention_bwd", &window_attention_bwd_cuda);
}

}  // namespace window_attention
}  // namespace fiber_kernels
