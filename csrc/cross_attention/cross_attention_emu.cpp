// Host-emulation binding of the cross-attention and gated-linear CUDA kernels: the same launchers as
// cross_attention_cuda.cu (cross_attention_launch.h, gated_linear_launch.h), on CPU tensors through fk::emu::launch.
// Tests only, never in _C.
#include "emu/torch.h"

#include "cross_attention/cross_attention_launch.h"
#include "cross_attention/gated_linear_launch.h"

namespace {

namespace ca = fiber_kernels::cross_attention;

struct EmuPolicy {
  template <class T>
  static fk::Ptr<T> ptr(const at::Tensor& t, const char* name) {
    return fk::emu::global<T>(t, name);
  }
  template <class... Params, class... Args>
  static void launch(void (*kernel)(Params...), int64_t grid_x, int64_t grid_y, int threads, long long shared_bytes,
                     Args&&... args) {
    fk::emu::launch(kernel, dim3(static_cast<unsigned>(grid_x), static_cast<unsigned>(grid_y)),
                    dim3(static_cast<unsigned>(threads)), static_cast<std::size_t>(shared_bytes),
                    std::forward<Args>(args)...);
  }
};

std::tuple<at::Tensor, at::Tensor> cross_attention_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                       const std::optional<at::Tensor>& key_padding_mask,
                                                       double scale) {
  return ca::run_fwd<EmuPolicy>(q, k, v, key_padding_mask, scale);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> cross_attention_bwd(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
    const at::Tensor& lse, const std::optional<at::Tensor>& key_padding_mask, double scale) {
  return ca::run_bwd<EmuPolicy>(grad_out, q, k, v, out, lse, key_padding_mask, scale);
}

at::Tensor gated_residual_linear_fwd(const at::Tensor& x, const at::Tensor& a, const at::Tensor& weight,
                                     const std::optional<at::Tensor>& bias, const at::Tensor& gate) {
  return ca::run_linear_fwd<EmuPolicy>(x, a, weight, bias, gate);
}

std::tuple<at::Tensor, at::Tensor> gated_residual_linear_bwd(const at::Tensor& grad_out, const at::Tensor& a,
                                                             const at::Tensor& weight, const at::Tensor& gate) {
  return ca::run_linear_bwd<EmuPolicy>(grad_out, a, weight, gate);
}

std::map<std::string, std::pair<int64_t, int64_t>> kernel_shapes(const at::Tensor& like) {
  return ca::kernel_shapes(like.scalar_type(), like.size(-1));
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  fk::emu::bind_runtime(m);
  m.def("cross_attention_fwd", &cross_attention_fwd, "cross-attention forward by the CUDA kernels, emulated");
  m.def("cross_attention_bwd", &cross_attention_bwd, "cross-attention backward by the CUDA kernels, emulated");
  m.def("gated_residual_linear_fwd", &gated_residual_linear_fwd, "gated residual linear by the CUDA kernel, emulated");
  m.def("gated_residual_linear_bwd", &gated_residual_linear_bwd, "its backward (da, dyᵀ a), emulated");
  m.def("kernel_shapes", &kernel_shapes,
        "{kernel: (threads, dynamic shared bytes)} the launchers use for the dtype and head dim (last dim) of `like`");
}
