// What the cross-attention and gated-linear CUDA kernels take, stated once: the launchers' checks
// (cross_attention_launch.h) use these names, and tests/test_limits.py asserts they equal the Python
// declarations of kernels/fiber_kernels/cross_attention/cuda.py (fiber_kernels.testing.csrc_limits
// reads this file). Literal values only, so that reader needs no compiler; torch-free.
#pragma once

namespace fiber_kernels {
namespace cross_attention {

// Element types of q, k, v (torch's names).
constexpr const char* kDtypes[] = {"float32", "float16", "bfloat16"};
// Head dims D with a tile config (Tiles<elem, D> in cross_attention_kernel.cuh).
constexpr int kHeadDims[] = {32, 64, 128};
// Bk * H: the grid's y dimension of the attention kernels (CUDA's limit).
constexpr long long kMaxGridY = 65535;
// (B / Bk) * Nq shared query rows and Nk keys: indexed with int32.
constexpr long long kMaxRows = 2147483647;

}  // namespace cross_attention
}  // namespace fiber_kernels
