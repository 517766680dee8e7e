// Host-emulation binding of the window-attention CUDA kernels (window_attention_kernel.cuh): the same
// run_forward / run_backward as the CUDA launcher, on CPU tensors, launching with fk::emu::launch.
// Also exposes the __host__ __device__ index helpers for the tests. Tests only, never in _C.
#include "emu/torch.h"

#include "window_attention/window_attention_kernel.cuh"
#include "window_attention/window_attention_launch.h"

namespace {

namespace wa = fiber_kernels::window_attention;

struct EmuBackend {
  template <class T>
  fk::Ptr<T> ptr(const at::Tensor& t, const char* name) const {
    return fk::emu::global<T>(t, name);
  }
  template <class... P, class... A>
  void launch(void (*kernel)(P...), dim3 grid, int threads, long long shared_bytes, A... args) const {
    fk::emu::launch(kernel, grid, dim3(static_cast<unsigned>(threads)), static_cast<std::size_t>(shared_bytes), args...);
  }
};

std::tuple<at::Tensor, at::Tensor> window_attention_fwd(const at::Tensor& qkv, const at::Tensor& rpb_table,
                                                        const std::optional<at::Tensor>& qkv_bias, int64_t num_heads,
                                                        int64_t window_h, int64_t window_w, int64_t shift_h,
                                                        int64_t shift_w, double scale, double mask_value,
                                                        bool shift_first) {
  return wa::run_forward(EmuBackend{}, qkv, rpb_table, qkv_bias, num_heads, window_h, window_w, shift_h, shift_w, scale,
                         mask_value, shift_first);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> window_attention_bwd(
    const at::Tensor& grad_out, const at::Tensor& qkv, const at::Tensor& rpb_table,
    const std::optional<at::Tensor>& qkv_bias, const at::Tensor& out, const at::Tensor& lse, int64_t num_heads,
    int64_t window_h, int64_t window_w, int64_t shift_h, int64_t shift_w, double scale, double mask_value,
    bool shift_first) {
  return wa::run_backward(EmuBackend{}, grad_out, qkv, rpb_table, qkv_bias, out, lse, num_heads, window_h, window_w,
                          shift_h, shift_w, scale, mask_value, shift_first);
}

// The index helpers on the host: (source token (nW, N) as py * W + px, -1 for padded; region (nW, N);
// relative index (N, N)), for the tests against reference.py.
std::tuple<at::Tensor, at::Tensor, at::Tensor> window_attention_index_maps(int64_t H, int64_t W, int64_t window_h,
                                                                           int64_t window_w, int64_t shift_h,
                                                                           int64_t shift_w, bool shift_first) {
  const wa::WaShape s = wa::wa_make_shape(1, static_cast<int>(H), static_cast<int>(W), 1, 1, static_cast<int>(window_h),
                                          static_cast<int>(window_w), static_cast<int>(shift_h),
                                          static_cast<int>(shift_w), shift_first, 1.f, 0.f);
  at::Tensor source = at::empty({s.n_win, s.N}, at::kLong), region = at::empty({s.n_win, s.N}, at::kLong);
  at::Tensor relative = at::empty({s.N, s.N}, at::kLong);
  auto src = source.accessor<int64_t, 2>(), reg = region.accessor<int64_t, 2>(), rel = relative.accessor<int64_t, 2>();
  for (int w = 0; w < s.n_win; ++w)
    for (int t = 0; t < s.N; ++t) {
      const wa::WaToken tok = wa::wa_token(s, w, t);
      src[w][t] = tok.real ? int64_t{tok.py} * s.W + tok.px : -1;
      reg[w][t] = tok.region;
    }
  for (int i = 0; i < s.N; ++i)
    for (int j = 0; j < s.N; ++j) rel[i][j] = wa::wa_relative_index(s.wh, s.ww, i, j);
  return {source, region, relative};
}

// Dynamic shared bytes, threads and blocks of each kernel for one shape (the launch configuration).
std::tuple<int64_t, int64_t, int64_t, int64_t> window_attention_launch_config(int64_t B, int64_t H, int64_t W,
                                                                              int64_t C, int64_t num_heads,
                                                                              int64_t window_h, int64_t window_w,
                                                                              int64_t elem_bytes) {
  const wa::WaShape s = wa::wa_make_shape(static_cast<int>(B), static_cast<int>(H), static_cast<int>(W),
                                          static_cast<int>(C), static_cast<int>(num_heads), static_cast<int>(window_h),
                                          static_cast<int>(window_w), 0, 0, false, 1.f, 0.f);
  const long long total = 1LL * s.B * s.n_win;
  return {wa::wa_smem_layout(s, static_cast<int>(elem_bytes)).total, 32 * wa::wa_warps(s.n_pad),
          fiber_kernels::ceil_div(total, wa::wa_windows_per_split(total, s.heads)),
          fiber_kernels::ceil_div(total, wa::wa_windows_per_chunk(total, s.heads))};
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  fk::emu::bind_runtime(m);
  m.def("window_attention_fwd", &window_attention_fwd, "window attention forward by the CUDA kernel, emulated");
  m.def("window_attention_bwd", &window_attention_bwd, "window attention backward by the CUDA kernels, emulated");
  m.def("window_attention_index_maps", &window_attention_index_maps, "index helpers of the kernel, on the host");
  m.def("window_attention_launch_config", &window_attention_launch_config, "(shared bytes, threads, dq blocks, dkv blocks)");
}
