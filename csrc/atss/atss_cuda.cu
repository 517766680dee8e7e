// CUDA launcher of ATSS assignment (kernels in atss_kernel.cuh): one warp per (image, box) selects,
// thresholds and claims; an elementwise kernel unpacks the claims. Memory: the outputs, the (B, A)
// claims and the (B * G, L, 128) candidate rows; no (A, G) matrices.
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "atss/atss_kernel.cuh"
#include "atss/atss_launch.h"

namespace fiber_kernels {
namespace atss {
namespace {

std::tuple<at::Tensor, at::Tensor> atss_assign_fwd_cuda(const at::Tensor& anchors_in, const at::Tensor& level_starts_in,
                                                        const at::Tensor& gt_boxes_in, const at::Tensor& gt_mask_in,
                                                        int64_t topk_total, bool glip, bool fp32_statistics) {
  check_assign_inputs(anchors_in, level_starts_in, gt_boxes_in, gt_mask_in, topk_total);
  TORCH_CHECK(!fp32_statistics, "atss_assign_fwd (CUDA): fp32_statistics (torch's CPU fp32 mean) is served by the "
              "CPU kernel only; the CUDA kernel sums the statistics in float64");
  TORCH_CHECK(topk_total <= kMaxK, "atss_assign_fwd (CUDA): topk * anchors_per_location must be <= ", kMaxK,
              ", got ", topk_total);
  const c10::cuda::CUDAGuard guard(gt_boxes_in.device());
  const at::Tensor anchors = anchors_in.contiguous();
  const at::Tensor gt_boxes = gt_boxes_in.contiguous();
  const at::Tensor gt_mask = gt_mask_in.contiguous();
  const at::Tensor level_starts = level_starts_in.to(gt_boxes.device()).contiguous();
  const int64_t B = gt_boxes.size(0), G = gt_boxes.size(1), A = anchors.size(1);
  AssignBuffers buffers = make_assign_buffers(anchors, level_starts, gt_boxes, kMaxK);
  const cudaStream_t stream = at::cuda::getCurrentCUDAStream();
  if (B * G > 0 && A > 0) {
    atss_candidates_kernel<<<static_cast<unsigned>(candidate_blocks(B * G)), kCandidateThreads, 0, stream>>>(
        anchors.data_ptr<float>(), level_starts.data_ptr<int64_t>(), gt_boxes.data_ptr<float>(), gt_mask.data_ptr<bool>(),
        buffers.cand_anchor.data_ptr<int>(), buffers.cand_iou.data_ptr<float>(),
        reinterpret_cast<long long*>(buffers.claims.data_ptr<int64_t>()), B * G, G, A,
        static_cast<int>(level_starts.size(0) - 1), static_cast<int>(topk_total), anchors.size(0) == 1 ? 0 : A * 4, glip);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  if (B * A > 0) {
    atss_resolve_kernel<<<static_cast<unsigned>(resolve_blocks(B * A)), kResolveThreads, 0, stream>>>(
        reinterpret_cast<const long long*>(buffers.claims.data_ptr<int64_t>()), buffers.matched.data_ptr<int64_t>(),
        buffers.matched_iou.data_ptr<float>(), B * A);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return {buffers.matched, buffers.matched_iou};
}

}  // namespace

TORCH_LIBRARY_IMPL(fiber_kernels_C, CUDA, m) { m.impl("atss_assign_fwd", &atss_assign_fwd_cuda); }

}  // namespace atss
}  // namespace fiber_kernels
