// Input checks, buffers and launch sequence of window_attention_fwd / window_attention_bwd, shared by
// the CUDA launcher (window_attention_cuda.cu) and the host-emulation binding (window_attention_emu.cpp):
// both call run_forward / run_backward with a Backend that turns tensors into kernel pointers and
// launches, so the two cannot drift. Schemas: window_attention_ops.cpp.
//
// Backend: `template <class T> fk::Ptr<T> ptr(const at::Tensor&, const char* name) const` (T const for
// inputs) and `template <class... P, class... A> void launch(void (*kernel)(P...), dim3 grid, int threads,
// long long shared_bytes, A... args) const`.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>

#include <cmath>
#include <cstdint>
#include <optional>
#include <tuple>

#include "window_attention/window_attention_kernel.cuh"
#include "window_attention/window_attention_limits.h"
#include "fiber_kernels/checks.h"

namespace fiber_kernels {
namespace window_attention {

template <class S>
struct WaDtype;
template <>
struct WaDtype<float> {
  using type = float;
};
template <>
struct WaDtype<c10::Half> {
  using type = __half;
};
template <>
struct WaDtype<c10::BFloat16> {
  using type = __nv_bfloat16;
};

// Runs body(WaDtype<scalar_t>{}) for float32, float16 and bfloat16 (the kernels' element types).
#define WA_DISPATCH(dtype, name, body)                                              \
  AT_DISPATCH_SWITCH(dtype, name, AT_DISPATCH_CASE(at::kFloat, [&] { body(WaDtype<scalar_t>{}); }) \
                     AT_DISPATCH_CASE(at::kHalf, [&] { body(WaDtype<scalar_t>{}); })            \
                     AT_DISPATCH_CASE(at::kBFloat16, [&] { body(WaDtype<scalar_t>{}); }))

inline WaShape check_inputs(const char* op, const at::Tensor& qkv, const at::Tensor& table,
                            const std::optional<at::Tensor>& qkv_bias, int64_t heads, int64_t wh, int64_t ww,
                            int64_t sh, int64_t sw, bool shift_first, double scale, double mask_value) {
  TORCH_CHECK(qkv.dim() == 4, op, ": qkv must be (B, H, W, 3C), got ", qkv.dim(), " dims");
  const auto dtype = qkv.scalar_type();
  TORCH_CHECK(is_one_of(dtype, kDtypes), op, ": qkv must be ", one_of_text(kDtypes));
  TORCH_CHECK(table.scalar_type() == dtype, op, ": rpb_table must have qkv's dtype");
  TORCH_CHECK(heads >= 1 && qkv.size(3) % (3 * heads) == 0, op, ": qkv channels ", qkv.size(3),
              " must be 3C with C divisible by num_heads ", heads);
  const int64_t C = qkv.size(3) / 3, D = C / heads;
  TORCH_CHECK(is_one_of(D, kHeadDims), op, ": head dim C/num_heads must be ", one_of_text(kHeadDims), ", got ", D);
  TORCH_CHECK(wh >= 1 && ww >= 1 && wh * ww <= kMaxTokens, op, ": window must have 1..", kMaxTokens, " tokens");
  TORCH_CHECK(sh >= 0 && sw >= 0 && sh < wh && sw < ww, op, ": shift must satisfy 0 <= shift < window");
  TORCH_CHECK(table.dim() == 2 && table.size(0) == (2 * wh - 1) * (2 * ww - 1) && table.size(1) == heads, op,
              ": rpb_table must be ((2Wh-1)(2Ww-1), num_heads)");
  if (qkv_bias.has_value())
    TORCH_CHECK(qkv_bias->dim() == 1 && qkv_bias->size(0) == 3 * C && qkv_bias->scalar_type() == dtype, op,
                ": qkv_bias must be (3C,) in qkv's dtype");
  TORCH_CHECK(qkv.numel() <= kMaxQkvElements, op, ": qkv too large (at most ", kMaxQkvElements, " elements)");
  check_device(op, "rpb_table", table, qkv.device());
  check_device(op, "qkv_bias", qkv_bias, qkv.device());
  check_scale(op, scale);
  TORCH_CHECK(std::isfinite(mask_value), op, ": mask_value must be finite, got ", mask_value);
  const int64_t windows = qkv.size(0) * ((qkv.size(1) + wh - 1) / wh) * ((qkv.size(2) + ww - 1) / ww);
  TORCH_CHECK(windows <= kMaxWindows, op, ": at most ", kMaxWindows, " windows");
  return wa_make_shape(static_cast<int>(qkv.size(0)), static_cast<int>(qkv.size(1)), static_cast<int>(qkv.size(2)),
                       static_cast<int>(C), static_cast<int>(heads), static_cast<int>(wh), static_cast<int>(ww),
                       static_cast<int>(sh), static_cast<int>(sw), shift_first, static_cast<float>(scale),
                       static_cast<float>(mask_value));
}

template <class Backend>
void launch_fold(const Backend& be, const at::Tensor& part, const at::Tensor& out, int parts) {
  const long long n = out.numel();
  if (n == 0) return;
  be.launch(wa_fold_kernel, dim3(static_cast<unsigned>(ceil_div(n, kFoldThreads))), kFoldThreads, 0,
            be.template ptr<const float>(part, "part"), be.template ptr<float>(out, "folded"), parts, n);
}

// -> (out (B, H, W, C) in qkv's dtype, lse (B·nW, nH, N) fp32)
template <class Backend>
std::tuple<at::Tensor, at::Tensor> run_forward(const Backend& be, const at::Tensor& qkv_in, const at::Tensor& table_in,
                                               const std::optional<at::Tensor>& bias_in, int64_t heads, int64_t wh,
                                               int64_t ww, int64_t sh, int64_t sw, double scale, double mask_value,
                                               bool shift_first) {
  const WaShape s = check_inputs("window_attention_fwd", qkv_in, table_in, bias_in, heads, wh, ww, sh, sw, shift_first,
                                 scale, mask_value);
  const at::Tensor qkv = qkv_in.contiguous(), table = table_in.contiguous();
  const at::Tensor bias = bias_in.has_value() ? bias_in->contiguous() : at::Tensor();
  const long long total = 1LL * s.B * s.n_win;
  at::Tensor out = at::empty({s.B, s.H, s.W, s.C}, qkv.options());
  at::Tensor lse = at::empty({total, s.heads, s.N}, qkv.options().dtype(at::kFloat));
  if (total == 0) return {out, lse};
  const auto body = [&](auto dtype) {
    using T = typename decltype(dtype)::type;
    using E = typename WaStorage<T>::type;
    WaFwdArgs<T> args{be.template ptr<const T>(qkv, "qkv"), be.template ptr<const T>(table, "rpb_table"),
                      bias.defined() ? be.template ptr<const T>(bias, "qkv_bias") : fk::Ptr<const T>(),
                      be.template ptr<T>(out, "out"), be.template ptr<float>(lse, "lse"), s};
    be.launch(wa_fwd_kernel<T>, dim3(static_cast<unsigned>(total), static_cast<unsigned>(s.heads)),
              32 * wa_warps(s.n_pad), wa_smem_layout(s, sizeof(E)).total, args);
  };
  WA_DISPATCH(qkv.scalar_type(), "window_attention_fwd", body);
  return {out, lse};
}

// -> (dqkv (B, H, W, 3C) qkv dtype, drpb_table (R, nH) table dtype, dqkv_bias (3C,) (q part 0; zeros
// without a bias))
template <class Backend>
std::tuple<at::Tensor, at::Tensor, at::Tensor> run_backward(
    const Backend& be, const at::Tensor& grad_out_in, const at::Tensor& qkv_in, const at::Tensor& table_in,
    const std::optional<at::Tensor>& bias_in, const at::Tensor& out_in, const at::Tensor& lse_in, int64_t heads,
    int64_t wh, int64_t ww, int64_t sh, int64_t sw, double scale, double mask_value, bool shift_first) {
  const WaShape s = check_inputs("window_attention_bwd", qkv_in, table_in, bias_in, heads, wh, ww, sh, sw, shift_first,
                                 scale, mask_value);
  const long long total = 1LL * s.B * s.n_win;
  const std::vector<int64_t> out_shape{s.B, s.H, s.W, s.C};
  TORCH_CHECK(out_in.sizes() == out_shape && grad_out_in.sizes() == out_shape, "window_attention_bwd: out and grad_out ",
              "must be (B, H, W, C)");
  TORCH_CHECK(out_in.scalar_type() == qkv_in.scalar_type(), "window_attention_bwd: out must have qkv's dtype");
  check_device("window_attention_bwd", "out", out_in, qkv_in.device());
  check_device("window_attention_bwd", "grad_out", grad_out_in, qkv_in.device());
  check_device("window_attention_bwd", "lse", lse_in, qkv_in.device());
  TORCH_CHECK(lse_in.scalar_type() == at::kFloat && lse_in.dim() == 3 && lse_in.size(0) == total &&
                  lse_in.size(1) == s.heads && lse_in.size(2) == s.N,
              "window_attention_bwd: lse must be float32 (B·nW, nH, N)");
  const at::Tensor qkv = qkv_in.contiguous(), table = table_in.contiguous(), out = out_in.contiguous();
  const at::Tensor grad_out = grad_out_in.to(qkv.scalar_type()).contiguous(), lse = lse_in.contiguous();
  const at::Tensor bias = bias_in.has_value() ? bias_in->contiguous() : at::Tensor();
  const auto f32 = qkv.options().dtype(at::kFloat);
  at::Tensor dqkv = at::empty(qkv.sizes(), qkv.options());
  at::Tensor dtable = at::zeros({s.R, s.heads}, f32);
  at::Tensor dbias = at::zeros({3 * s.C}, f32);
  if (total > 0) {
    const int per_split = wa_windows_per_split(total, s.heads), per_chunk = wa_windows_per_chunk(total, s.heads);
    const long long splits = ceil_div(total, per_split), chunks = ceil_div(total, per_chunk);
    at::Tensor table_part = at::empty({splits, s.R, s.heads}, f32);
    at::Tensor bias_part = at::empty({chunks, 3 * s.C}, f32);
    const auto body = [&](auto dtype) {
      using T = typename decltype(dtype)::type;
      using E = typename WaStorage<T>::type;
      WaBwdArgs<T> args{be.template ptr<const T>(qkv, "qkv"),
                        be.template ptr<const T>(table, "rpb_table"),
                        bias.defined() ? be.template ptr<const T>(bias, "qkv_bias") : fk::Ptr<const T>(),
                        be.template ptr<const T>(out, "out"),
                        be.template ptr<const T>(grad_out, "grad_out"),
                        be.template ptr<const float>(lse, "lse"),
                        be.template ptr<T>(dqkv, "dqkv"),
                        be.template ptr<float>(table_part, "dtable_part"),
                        s,
                        per_split};
      const int threads = 32 * wa_warps(s.n_pad);
      const long long shared = wa_smem_layout(s, sizeof(E)).total;
      be.launch(wa_bwd_dq_kernel<T>, dim3(static_cast<unsigned>(splits), static_cast<unsigned>(s.heads)), threads,
                shared, args);
      args.part = be.template ptr<float>(bias_part, "dbias_part");
      args.windows_per_block = per_chunk;
      be.launch(wa_bwd_dkv_kernel<T>, dim3(static_cast<unsigned>(chunks), static_cast<unsigned>(s.heads)), threads,
                shared, args);
    };
    WA_DISPATCH(qkv.scalar_type(), "window_attention_bwd", body);
    launch_fold(be, table_part, dtable, static_cast<int>(splits));
    launch_fold(be, bias_part, dbias, static_cast<int>(chunks));
  }
  const auto bias_dtype = bias.defined() ? bias.scalar_type() : qkv.scalar_type();
  return {dqkv, dtable.to(table.scalar_type()), dbias.to(bias_dtype)};
}

}  // namespace window_attention
}  // namespace fiber_kernels
