// Host-emulation binding of the ATSS CUDA kernels (atss_kernel.cuh): atss_assign_fwd mirrors the CUDA
// launcher of atss_cuda.cu on CPU tensors, launching with fk::emu::launch; torch_cpu_column_sum exposes the
// CPU kernel's emulation of torch's fp32 sum order (torch_cpu_sum.h) to its test. Tests only, never in _C.
#include "emu/torch.h"

#include "atss/atss_kernel.cuh"
#include "atss/atss_launch.h"
#include "atss/torch_cpu_sum.h"

namespace {

using fiber_kernels::atss::AssignBuffers;
using fk::emu::global;

std::tuple<at::Tensor, at::Tensor> atss_assign_fwd(const at::Tensor& anchors_in, const at::Tensor& level_starts_in,
                                                   const at::Tensor& gt_boxes_in, const at::Tensor& gt_mask_in,
                                                   int64_t topk_total, bool glip) {
  namespace atss = fiber_kernels::atss;
  atss::check_assign_inputs(anchors_in, level_starts_in, gt_boxes_in, gt_mask_in, topk_total);
  TORCH_CHECK(topk_total <= atss::kMaxK, "atss_assign_fwd (CUDA): topk * anchors_per_location must be <= ",
              atss::kMaxK, ", got ", topk_total);
  const at::Tensor anchors = anchors_in.contiguous();
  const at::Tensor gt_boxes = gt_boxes_in.contiguous();
  const at::Tensor gt_mask = gt_mask_in.contiguous();
  const at::Tensor level_starts = level_starts_in.contiguous();
  const int64_t B = gt_boxes.size(0), G = gt_boxes.size(1), A = anchors.size(1);
  AssignBuffers buffers = atss::make_assign_buffers(anchors, level_starts, gt_boxes, atss::kMaxK);
  if (B * G > 0 && A > 0) {
    fk::emu::launch(atss::atss_candidates_kernel, static_cast<unsigned>(atss::candidate_blocks(B * G)),
                    static_cast<unsigned>(atss::kCandidateThreads), 0, global<const float>(anchors, "anchors"),
                    global<const int64_t>(level_starts, "level_starts"), global<const float>(gt_boxes, "gt_boxes"),
                    global<const bool>(gt_mask, "gt_mask"), global<int>(buffers.cand_anchor, "cand_anchor"),
                    global<float>(buffers.cand_iou, "cand_iou"), global<long long>(buffers.claims, "claims"), B * G, G,
                    A, static_cast<int>(level_starts.size(0) - 1), static_cast<int>(topk_total),
                    anchors.size(0) == 1 ? int64_t{0} : A * 4, glip);
  }
  if (B * A > 0) {
    fk::emu::launch(atss::atss_resolve_kernel, static_cast<unsigned>(atss::resolve_blocks(B * A)),
                    static_cast<unsigned>(atss::kResolveThreads), 0, global<const long long>(buffers.claims, "claims"),
                    global<int64_t>(buffers.matched, "matched"), global<float>(buffers.matched_iou, "matched_iou"), B * A);
  }
  return {buffers.matched, buffers.matched_iou};
}

// Column `column` of a (n, columns) fp32 tensor summed in torch's CPU order; values (n,) float32.
double torch_cpu_column_sum(const at::Tensor& values, int64_t columns, int64_t column) {
  TORCH_CHECK(values.dim() == 1 && values.scalar_type() == at::kFloat && values.device().is_cpu(),
              "torch_cpu_column_sum: values must be a 1-D float32 CPU tensor");
  TORCH_CHECK(columns >= 1 && column >= 0 && column < columns, "torch_cpu_column_sum: need 0 <= column < columns");
  const at::Tensor v = values.contiguous();
  return fiber_kernels::atss::torch_cpu_column_sum(v.data_ptr<float>(), v.numel(), columns, column);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  fk::emu::bind_runtime(m);
  m.def("atss_assign_fwd", &atss_assign_fwd, "ATSS assignment by the CUDA kernels under the host emulation");
  m.def("torch_cpu_column_sum", &torch_cpu_column_sum, "torch's CPU fp32 sum of one column, as the C++ kernel does it");
}
