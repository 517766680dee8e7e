// What the ATSS kernels take, stated once: the CUDA kernel (atss_kernel.cuh) and the launchers' checks
// (atss_launch.h, atss_cuda.cu) use these names, and tests/atss/test_limits.py asserts they equal the Python
// declarations of kernels/fiber_kernels/atss/limits.py (fiber_kernels.testing.csrc_limits reads this file).
// Literal values only, so that reader needs no compiler; torch-free.
#pragma once

namespace fiber_kernels {
namespace atss {

// topk x anchors per location: the candidates per level the CUDA kernel keeps (kMaxK / 32 per lane of a warp).
constexpr int kMaxK = 128;
// Anchors per image (A): every kernel indexes them with int32.
constexpr long long kMaxAnchors = 2147483647;

}  // namespace atss
}  // namespace fiber_kernels
