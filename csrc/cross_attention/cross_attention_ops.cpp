// Schema of the cross-attention and gated-linear ops of fiber_kernels._C (CUDA: cross_attention_cuda.cu).
//
// cross_attention_fwd(q (B, H, Nq, D), k, v (Bk, H, Nk, D), key_padding_mask bool (Bk, Nk) or None, scale)
//   -> (out (B, H, Nq, D) dtype of q, lse (B, H, Nq) fp32, +inf on rows with no unpadded key)
// cross_attention_bwd(grad_out, q, k, v, out, lse, key_padding_mask, scale) -> (dq, dk, dv)
// gated_residual_linear_fwd(x (M, O), a (M, I), weight (O, I), bias (O,) or None, gate fp32 one element)
//   -> x + gate * (a @ weightᵀ + bias) (M, O)
// gated_residual_linear_bwd(grad_out (M, O), a, weight, gate) -> (da (M, I), grad_outᵀ @ a (O, I) fp32)
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fiber_kernels_C, m) {
  m.def("cross_attention_fwd(Tensor q, Tensor k, Tensor v, Tensor? key_padding_mask, float scale) -> (Tensor, Tensor)");
  m.def("cross_attention_bwd(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
        "Tensor? key_padding_mask, float scale) -> (Tensor, Tensor, Tensor)");
  m.def("gated_residual_linear_fwd(Tensor x, Tensor a, Tensor weight, Tensor? bias, Tensor gate) -> Tensor");
  m.def("gated_residual_linear_bwd(Tensor grad_out, Tensor a, Tensor weight, Tensor gate) -> (Tensor, Tensor)");
}
