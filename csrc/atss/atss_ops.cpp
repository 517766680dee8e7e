// Schema of the ATSS ops of fiber_kernels._C (implementations: atss_cpu.cpp, and the CUDA launcher).
//
// atss_assign_fwd(anchors (1 or B, A, 4) f32, level_starts (L + 1,) i64, gt_boxes (B, G, 4) f32,
//                 gt_mask (B, G) bool, topk_total = topk x anchors per location, glip = +1 convention,
//                 fp32_statistics = the threshold's mean as torch's CPU fp32 mean(0) (CPU kernel only))
//   -> (matched_gt (B, A) i64, -1 background; matched_iou (B, A) f32, 0 background)
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(fiber_kernels_C, m) {
  m.def("atss_assign_fwd(Tensor anchors, Tensor level_starts, Tensor gt_boxes, Tensor gt_mask, int topk_total, "
        "bool glip, bool fp32_statistics=False) -> (Tensor, Tensor)");
}
