// Schema of the window-attention ops of fiber_kernels._C (CUDA implementation: window_attention_cuda.cu;
// the same functions under host emulation: window_attention_emu.cpp). Python side:
// fiber_kernels.window_attention.cuda.
//
// window_attention_fwd(qkv (B, H, W, 3C), rpb_table ((2Wh-1)(2Ww-1), nH), qkv_bias (3C,)?, ...)
//   -> (out (B, H, W, C) qkv dtype, lse (B·nW, nH, N) f32)
// window_attention_bwd(grad_out (B, H, W, C), qkv, rpb_table, qkv_bias?, out, lse, ...)
//   -> (dqkv (B, H, W, 3C), drpb_table (R, nH), dqkv_bias (3C,): q part and no-bias case zero)
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fiber_kernels_C, m) {
  m.def("window_attention_fwd(Tensor qkv, Tensor rpb_table, Tensor? qkv_bias, int num_heads, int window_h, "
        "int window_w, int shift_h, int shift_w, float scale, float mask_value, bool shift_first) -> (Tensor, Tensor)");
  m.def("window_attention_bwd(Tensor grad_out, Tensor qkv, Tensor rpb_table, Tensor? qkv_bias, Tensor out, "
        "Tensor lse, int num_heads, int window_h, int window_w, int shift_h, int shift_w, float scale, "
        "float mask_value, bool shift_first) -> (Tensor, Tensor, Tensor)");
}
