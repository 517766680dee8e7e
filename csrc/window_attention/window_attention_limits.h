// What the window-attention CUDA kernels take, stated once: the launchers' checks
// (window_attention_launch.h) use these names, and tests/test_limits.py asserts they equal the Python
// declarations of kernels/fiber_kernels/window_attention/cuda.py (fiber_kernels.testing.csrc_limits
// reads this file). Literal values only, so that reader needs no compiler; torch-free.
#pragma once

namespace fiber_kernels {
namespace window_attention {

// Element types of qkv, rpb_table and qkv_bias (torch's names).
constexpr const char* kDtypes[] = {"float32", "float16", "bfloat16"};
// Head dims C / num_heads (multiples of the 16-wide wmma tile).
constexpr int kHeadDims[] = {16, 32, 64};
// Tokens of one window, wh * ww (12 x 12, FIBER's window).
constexpr int kMaxTokens = 144;
// B * windows per image: the grid's x dimension of the forward, indexed with int32.
constexpr long long kMaxWindows = 2147483647;
// qkv.numel(), 2^40 - 1.
constexpr long long kMaxQkvElements = 1099511627775;

}  // namespace window_attention
}  // namespace fiber_kernels
