// Checks, outputs and launches of the gated residual linear (gated_linear_kernel.cuh), written once for
// the CUDA launcher and its host emulation; the Policy is the one of cross_attention_launch.h.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "cross_attention/cross_attention_launch.h"
#include "cross_attention/gated_linear_kernel.cuh"

namespace fiber_kernels {
namespace cross_attention {

inline void check_gate(const char* op, const at::Tensor& gate, const at::Device& device) {
  TORCH_CHECK(gate.scalar_type() == at::kFloat && gate.numel() == 1, op, ": gate must be one float32 element");
  check_device(op, "gate", gate, device);
}

// out = [x +] [gate *] (a @ b [+ bias]) for 2-D strided a (M, K), b (K, N); out (M, N) already allocated.
template <class Policy, class T, class OutT>
void launch_linear(const at::Tensor& a, const at::Tensor& b, const std::optional<at::Tensor>& bias,
                   const std::optional<at::Tensor>& x, const std::optional<at::Tensor>& gate, at::Tensor& out) {
  LinearParams<T, OutT> p{};
  p.a = Policy::template ptr<const T>(a, "a");
  p.b = Policy::template ptr<const T>(b, "b");
  p.bias = nullptr;
  p.x = nullptr;
  p.gate = nullptr;
  p.stride_bias = p.stride_xm = p.stride_xn = 0;
  if (bias.has_value()) {
    p.bias = Policy::template ptr<const T>(*bias, "bias");
    p.stride_bias = bias->stride(0);
  }
  if (x.has_value()) {
    p.x = Policy::template ptr<const T>(*x, "x");
    p.stride_xm = x->stride(0);
    p.stride_xn = x->stride(1);
  }
  if (gate.has_value()) p.gate = Policy::template ptr<const float>(*gate, "gate");
  p.out = Policy::template ptr<OutT>(out, "out");
  p.rows = a.size(0);
  p.cols = b.size(1);
  p.inner = a.size(1);
  p.stride_am = a.stride(0);
  p.stride_ak = a.stride(1);
  p.stride_bk = b.stride(0);
  p.stride_bn = b.stride(1);
  p.stride_om = out.stride(0);
  p.stride_on = out.stride(1);
  if (p.rows == 0 || p.cols == 0) return;
  Policy::launch(gated_linear_kernel<T, OutT>, ceil_div(p.rows, kLinearBlockM), ceil_div(p.cols, kLinearBlockN),
                 32 * kLinearWarps, 0, p);
}

template <class F>
void dispatch_type(at::ScalarType dtype, F&& f) {
  if (dtype == at::kHalf) {
    f(TypeTag<__half>{});
  } else if (dtype == at::kBFloat16) {
    f(TypeTag<__nv_bfloat16>{});
  } else {
    f(TypeTag<float>{});
  }
}

// x (M, O), a (M, I), weight (O, I), bias (O,) or None, gate one fp32 element -> x + gate * (a @ weightᵀ + bias).
template <class Policy>
at::Tensor run_linear_fwd(const at::Tensor& x, const at::Tensor& a, const at::Tensor& weight,
                          const std::optional<at::Tensor>& bias, const at::Tensor& gate) {
  const char* op = "gated_residual_linear_fwd";
  TORCH_CHECK(x.dim() == 2 && a.dim() == 2 && weight.dim() == 2 && x.size(0) == a.size(0) &&
                  weight.size(0) == x.size(1) && weight.size(1) == a.size(1),
              op, ": x (M, O), a (M, I), weight (O, I) expected");
  TORCH_CHECK(x.scalar_type() == a.scalar_type() && weight.scalar_type() == a.scalar_type() &&
                  (!bias.has_value() || (bias->scalar_type() == a.scalar_type() && bias->dim() == 1 &&
                                         bias->size(0) == weight.size(0))),
              op, ": x, a, weight and bias (O,) must share one dtype");
  check_device(op, "x", x, a.device());
  check_device(op, "weight", weight, a.device());
  check_device(op, "bias", bias, a.device());
  check_gate(op, gate, a.device());
  at::Tensor out = at::empty(x.sizes(), x.options());
  dispatch_type(a.scalar_type(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_linear<Policy, T, T>(a, weight.t(), bias, x, gate, out);
  });
  return out;
}

// (da = gate * grad_out @ weight (M, I) in the dtype of a, G = grad_outᵀ @ a (O, I) fp32).
template <class Policy>
std::tuple<at::Tensor, at::Tensor> run_linear_bwd(const at::Tensor& grad_out, const at::Tensor& a,
                                                  const at::Tensor& weight, const at::Tensor& gate) {
  const char* op = "gated_residual_linear_bwd";
  TORCH_CHECK(grad_out.dim() == 2 && a.dim() == 2 && weight.dim() == 2 && grad_out.size(0) == a.size(0) &&
                  weight.size(0) == grad_out.size(1) && weight.size(1) == a.size(1),
              op, ": grad_out (M, O), a (M, I), weight (O, I) expected");
  TORCH_CHECK(grad_out.scalar_type() == a.scalar_type() && weight.scalar_type() == a.scalar_type(), op,
              ": grad_out, a and weight must share one dtype");
  check_device(op, "grad_out", grad_out, a.device());
  check_device(op, "weight", weight, a.device());
  check_gate(op, gate, a.device());
  at::Tensor grad_a = at::empty(a.sizes(), a.options());
  at::Tensor outer = at::empty(weight.sizes(), a.options().dtype(at::kFloat));
  dispatch_type(a.scalar_type(), [&](auto tag) {
    using T = typename decltype(tag)::type;
    launch_linear<Policy, T, T>(grad_out, weight, std::nullopt, std::nullopt, gate, grad_a);
    launch_linear<Policy, T, float>(grad_out.t(), a, std::nullopt, std::nullopt, std::nullopt, outer);
  });
  return {grad_a, outer};
}

}  // namespace cross_attention
}  // namespace fiber_kernels
