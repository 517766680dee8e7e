// Input checks and buffers of the atss_assign_fwd launchers (CPU kernel, CUDA launcher, emulation
// binding), so the three accept exactly the same arguments (schema in atss_ops.cpp; limits in atss_limits.h)
// and the CUDA launcher and its emulation allocate the same buffers.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "atss/atss_limits.h"
#include "fiber_kernels/checks.h"

namespace fiber_kernels {
namespace atss {

inline void check_assign_inputs(const at::Tensor& anchors, const at::Tensor& level_starts, const at::Tensor& gt_boxes,
                                const at::Tensor& gt_mask, int64_t topk_total) {
  TORCH_CHECK(anchors.dim() == 3 && anchors.size(2) == 4 && anchors.scalar_type() == at::kFloat,
              "atss_assign_fwd: anchors must be float32 (1 or B, A, 4)");
  TORCH_CHECK(gt_boxes.dim() == 3 && gt_boxes.size(2) == 4 && gt_boxes.scalar_type() == at::kFloat,
              "atss_assign_fwd: gt_boxes must be float32 (B, G, 4)");
  TORCH_CHECK(gt_mask.dim() == 2 && gt_mask.scalar_type() == at::kBool && gt_mask.size(0) == gt_boxes.size(0) &&
                  gt_mask.size(1) == gt_boxes.size(1),
              "atss_assign_fwd: gt_mask must be bool (B, G)");
  TORCH_CHECK(level_starts.dim() == 1 && level_starts.size(0) >= 2 && level_starts.scalar_type() == at::kLong,
              "atss_assign_fwd: level_starts must be int64 (L + 1,)");
  TORCH_CHECK(topk_total >= 1, "atss_assign_fwd: topk_total must be >= 1");
  TORCH_CHECK(anchors.size(0) == 1 || anchors.size(0) == gt_boxes.size(0), "atss_assign_fwd: anchors batch must be 1 or B");
  TORCH_CHECK(anchors.size(1) <= kMaxAnchors, "atss_assign_fwd: at most ", kMaxAnchors, " anchors, got ",
              anchors.size(1));
  check_device("atss_assign_fwd", "gt_boxes", gt_boxes, anchors.device());
  check_device("atss_assign_fwd", "gt_mask", gt_mask, anchors.device());
  TORCH_CHECK(level_starts.device() == anchors.device() || level_starts.device().is_cpu(),
              "atss_assign_fwd: level_starts must be on the CPU or on ", anchors.device(), ", got ",
              level_starts.device());
  // The kernels index anchors by these values: 0 = start_0 <= start_1 <= ... <= start_L = A.
  const at::Tensor starts = level_starts.to(at::kCPU).contiguous();
  const int64_t* s = starts.data_ptr<int64_t>();
  const int64_t levels = starts.size(0) - 1;
  TORCH_CHECK(s[0] == 0 && s[levels] == anchors.size(1), "atss_assign_fwd: level_starts must run from 0 to the ",
              "anchor count A = ", anchors.size(1), ", got ", s[0], " .. ", s[levels]);
  for (int64_t l = 0; l < levels; ++l) {
    TORCH_CHECK(s[l] <= s[l + 1], "atss_assign_fwd: level_starts must be non-decreasing, got ", s[l], " before ",
                s[l + 1]);
  }
}

// Candidate slots of one box: level l keeps min(topk_total, anchors in l) of them, at offsets[l] of a row of
// offsets[L] slots (sized by what exists, so a huge topk_total on a small pyramid costs nothing).
inline std::vector<int64_t> candidate_offsets(const int64_t* level_starts, int64_t levels, int64_t topk_total) {
  std::vector<int64_t> offsets(levels + 1, 0);
  for (int64_t l = 0; l < levels; ++l) {
    offsets[l + 1] = offsets[l] + std::min(topk_total, level_starts[l + 1] - level_starts[l]);
  }
  return offsets;
}

// Outputs and workspace of the CUDA kernels: matched (B, A) i64, matched_iou (B, A) f32, claims
// (B, A) i64 filled with -1, and the per-box candidate rows (B * G, L, kMaxK) of anchor i32 and IoU f32.
struct AssignBuffers {
  at::Tensor matched, matched_iou, claims, cand_anchor, cand_iou;
};

inline AssignBuffers make_assign_buffers(const at::Tensor& anchors, const at::Tensor& level_starts,
                                         const at::Tensor& gt_boxes, int64_t max_k) {
  const int64_t B = gt_boxes.size(0), G = gt_boxes.size(1), A = anchors.size(1), L = level_starts.size(0) - 1;
  const auto options = gt_boxes.options();
  return AssignBuffers{at::empty({B, A}, options.dtype(at::kLong)), at::empty({B, A}, options),
                       at::full({B, A}, -1, options.dtype(at::kLong)), at::empty({B * G, L, max_k}, options.dtype(at::kInt)),
                       at::empty({B * G, L, max_k}, options)};
}

}  // namespace atss
}  // namespace fiber_kernels
