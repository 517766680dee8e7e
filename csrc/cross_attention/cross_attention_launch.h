// Input checks, output allocation and launch shapes of the cross-attention launchers, written once for
// the CUDA launcher (cross_attention_cuda.cu) and its host emulation (cross_attention_emu.cpp). A
// Policy supplies the two things that differ: `ptr<T>(tensor, name)` (a kernel pointer to the tensor's
// data) and `launch(kernel, grid_x, grid_y, threads, dynamic_shared_bytes, args...)`.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <tuple>
#include <utility>

#include "cross_attention/cross_attention_kernel.cuh"
#include "cross_attention/cross_attention_limits.h"
#include "fiber_kernels/checks.h"

namespace fiber_kernels {
namespace cross_attention {

template <class T>
struct TypeTag {
  using type = T;
};
template <int D>
struct DimTag {
  static constexpr int value = D;
};

inline Strides4 strides_of(const at::Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

// The checks every launcher makes (the Python wrapper cuda.py gives the user-facing messages first).
inline void check_inputs(const char* op, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                         const std::optional<at::Tensor>& mask) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, op, ": q (B, H, Nq, D), k and v (Bk, H, Nk, D) must be 4-D");
  TORCH_CHECK(q.scalar_type() == k.scalar_type() && q.scalar_type() == v.scalar_type(), op,
              ": q, k and v must share one dtype");
  TORCH_CHECK(is_one_of(q.scalar_type(), kDtypes), op, ": dtype must be ", one_of_text(kDtypes));
  TORCH_CHECK(k.sizes() == v.sizes(), op, ": k and v must have the same shape");
  TORCH_CHECK(q.size(1) == k.size(1) && q.size(3) == k.size(3), op, ": q and k must share H and D");
  TORCH_CHECK(is_one_of(q.size(3), kHeadDims), op, ": D must be ", one_of_text(kHeadDims));
  TORCH_CHECK(q.numel() > 0 && k.numel() > 0, op, ": q, k and v must not be empty");
  TORCH_CHECK(q.size(0) % k.size(0) == 0, op, ": the query batch B must be a multiple of the key batch Bk");
  TORCH_CHECK(k.size(0) * k.size(1) <= kMaxGridY, op, ": Bk * H must be <= ", kMaxGridY, " (grid y)");
  TORCH_CHECK(q.size(0) / k.size(0) * q.size(2) <= kMaxRows && k.size(2) <= kMaxRows, op, ": too many rows (at most ",
              kMaxRows, ")");
  if (mask.has_value()) {
    TORCH_CHECK(mask->scalar_type() == at::kBool && mask->dim() == 2 && mask->size(0) == k.size(0) &&
                    mask->size(1) == k.size(2),
                op, ": key_padding_mask must be bool (Bk, Nk)");
  }
  check_device(op, "k", k, q.device());
  check_device(op, "v", v, q.device());
  check_device(op, "key_padding_mask", mask, q.device());
}

// f(TypeTag<T>{}, DimTag<D>{}) for the kernels' element type and head dim.
template <class F>
void dispatch(at::ScalarType dtype, int64_t head_dim, F&& f) {
  auto by_dim = [&](auto tag) {
    switch (head_dim) {
      case 32: f(tag, DimTag<32>{}); break;
      case 64: f(tag, DimTag<64>{}); break;
      default: f(tag, DimTag<128>{}); break;
    }
  };
  if (dtype == at::kHalf) {
    by_dim(TypeTag<__half>{});
  } else if (dtype == at::kBFloat16) {
    by_dim(TypeTag<__nv_bfloat16>{});
  } else {
    by_dim(TypeTag<float>{});
  }
}

// {kernel: (threads per block, dynamic shared bytes)} the launchers use for this dtype and head dim.
inline std::map<std::string, std::pair<int64_t, int64_t>> kernel_shapes(at::ScalarType dtype, int64_t head_dim) {
  std::map<std::string, std::pair<int64_t, int64_t>> shapes;
  dispatch(dtype, head_dim, [&](auto type_tag, auto dim_tag) {
    using T = typename decltype(type_tag)::type;
    constexpr int D = decltype(dim_tag)::value;
    shapes["cross_attention_fwd_kernel"] = {32 * FwdLayout<T, D>::kWarps, FwdLayout<T, D>::bytes};
    shapes["cross_attention_bwd_preprocess_kernel"] = {32 * kPreprocessWarps, 0};
    shapes["cross_attention_bwd_dq_kernel"] = {32 * DqLayout<T, D>::kWarps, DqLayout<T, D>::bytes};
    shapes["cross_attention_bwd_dkdv_kernel"] = {32 * DkdvLayout<T, D>::kWarps, DkdvLayout<T, D>::bytes};
  });
  return shapes;
}

template <class Policy, class T>
AttentionParams<T> input_params(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                const std::optional<at::Tensor>& mask, double scale) {
  AttentionParams<T> p{};
  p.q = Policy::template ptr<const T>(q, "q");
  p.k = Policy::template ptr<const T>(k, "k");
  p.v = Policy::template ptr<const T>(v, "v");
  p.sq = strides_of(q);
  p.sk = strides_of(k);
  p.sv = strides_of(v);
  p.mask = nullptr;
  p.mask_b = p.mask_n = 0;
  if (mask.has_value()) {
    p.mask = Policy::template ptr<const bool>(*mask, "key_padding_mask");
    p.mask_b = mask->stride(0);
    p.mask_n = mask->stride(1);
  }
  p.heads = static_cast<int>(q.size(1));
  p.groups = static_cast<int>(q.size(0) / k.size(0));
  p.seqlen_q = static_cast<int>(q.size(2));
  p.seqlen_k = static_cast<int>(k.size(2));
  p.scale = static_cast<float>(scale);
  return p;
}

// out (B, H, Nq, D) in the dtype of q (stored as (B, Nq, H, D), like the Triton launcher), lse (B, H, Nq) fp32.
template <class Policy>
std::tuple<at::Tensor, at::Tensor> run_fwd(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                           const std::optional<at::Tensor>& mask, double scale) {
  check_inputs("cross_attention_fwd", q, k, v, mask);
  check_scale("cross_attention_fwd", scale);
  const int64_t batch = q.size(0), heads = q.size(1), seqlen_q = q.size(2), head_dim = q.size(3);
  at::Tensor out = at::empty({batch, seqlen_q, heads, head_dim}, q.options()).transpose(1, 2);
  at::Tensor lse = at::empty({batch, heads, seqlen_q}, q.options().dtype(at::kFloat));
  dispatch(q.scalar_type(), head_dim, [&](auto type_tag, auto dim_tag) {
    using T = typename decltype(type_tag)::type;
    constexpr int D = decltype(dim_tag)::value;
    using L = FwdLayout<T, D>;
    AttentionParams<T> p = input_params<Policy, T>(q, k, v, mask, scale);
    p.out = Policy::template ptr<T>(out, "out");
    p.lse = Policy::template ptr<float>(lse, "lse");
    p.so = strides_of(out);
    Policy::launch(cross_attention_fwd_kernel<T, D>, ceil_div((int64_t)p.groups * seqlen_q, L::kRows),
                   k.size(0) * heads, 32 * L::kWarps, L::bytes, p);
  });
  return {out, lse};
}

// dq, dk, dv (dtypes and layouts of q, k, v); dk/dv summed over the query groups sharing keys.
template <class Policy>
std::tuple<at::Tensor, at::Tensor, at::Tensor> run_bwd(const at::Tensor& grad_out, const at::Tensor& q,
                                                       const at::Tensor& k, const at::Tensor& v, const at::Tensor& out,
                                                       const at::Tensor& lse_in, const std::optional<at::Tensor>& mask,
                                                       double scale) {
  check_inputs("cross_attention_bwd", q, k, v, mask);
  check_scale("cross_attention_bwd", scale);
  check_device("cross_attention_bwd", "grad_out", grad_out, q.device());
  check_device("cross_attention_bwd", "out", out, q.device());
  check_device("cross_attention_bwd", "lse", lse_in, q.device());
  TORCH_CHECK(grad_out.sizes() == q.sizes() && out.sizes() == q.sizes(), "cross_attention_bwd: grad_out and out must "
              "have the shape of q (B, H, Nq, D)");
  TORCH_CHECK(grad_out.scalar_type() == q.scalar_type() && out.scalar_type() == q.scalar_type(),
              "cross_attention_bwd: grad_out and out must have the dtype of q");
  TORCH_CHECK(lse_in.scalar_type() == at::kFloat && lse_in.dim() == 3 && lse_in.size(0) == q.size(0) &&
                  lse_in.size(1) == q.size(1) && lse_in.size(2) == q.size(2),
              "cross_attention_bwd: lse must be float32 (B, H, Nq)");
  const at::Tensor lse = lse_in.contiguous();
  const int64_t batch = q.size(0), heads = q.size(1), seqlen_q = q.size(2), head_dim = q.size(3);
  at::Tensor delta = at::empty({batch, heads, seqlen_q}, q.options().dtype(at::kFloat));
  at::Tensor dq = at::empty_like(q), dk = at::empty_like(k), dv = at::empty_like(v);
  dispatch(q.scalar_type(), head_dim, [&](auto type_tag, auto dim_tag) {
    using T = typename decltype(type_tag)::type;
    constexpr int D = decltype(dim_tag)::value;
    AttentionParams<T> p = input_params<Policy, T>(q, k, v, mask, scale);
    p.dout = Policy::template ptr<const T>(grad_out, "grad_out");
    p.out = Policy::template ptr<T>(const_cast<at::Tensor&>(out), "out");
    p.lse = Policy::template ptr<float>(const_cast<at::Tensor&>(lse), "lse");
    p.delta = Policy::template ptr<float>(delta, "delta");
    p.dq = Policy::template ptr<T>(dq, "dq");
    p.dk = Policy::template ptr<T>(dk, "dk");
    p.dv = Policy::template ptr<T>(dv, "dv");
    p.sdo = strides_of(grad_out);
    p.so = strides_of(out);
    p.sdq = strides_of(dq);
    p.sdk = strides_of(dk);
    p.sdv = strides_of(dv);
    const int64_t total_rows = batch * heads * seqlen_q;
    Policy::launch(cross_attention_bwd_preprocess_kernel<T>, ceil_div(total_rows, kPreprocessWarps), 1,
                   32 * kPreprocessWarps, 0, p, static_cast<long long>(total_rows), static_cast<int>(head_dim));
    using Q = DqLayout<T, D>;
    Policy::launch(cross_attention_bwd_dq_kernel<T, D>, ceil_div((int64_t)p.groups * seqlen_q, Q::kRows),
                   k.size(0) * heads, 32 * Q::kWarps, Q::bytes, p);
    using KV = DkdvLayout<T, D>;
    Policy::launch(cross_attention_bwd_dkdv_kernel<T, D>, ceil_div(k.size(2), KV::kKeys), k.size(0) * heads,
                   32 * KV::kWarps, KV::bytes, p);
  });
  return {dq, dk, dv};
}

}  // namespace cross_attention
}  // namespace fiber_kernels
