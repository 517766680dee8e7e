// C++ CPU kernel of ATSS assignment, batched over images and boxes, without (A, G) matrices.
//
// Anchor centres and each level's grid (atss_grid.h) are computed once per distinct anchor set. Then:
//   * select (select_box), in chunks of contiguous boxes shared by the threads (atss_parallel.h): per level, the
//     k nearest anchors by a bounded insertion into a sorted key list (keys of atss_kernel.cuh: distance bits,
//     then anchor index), from a window of locations around the box centre when the level is a regular grid
//     (atss_grid.h), else from a scan of the level; their IoUs, the mean + unbiased std threshold (float64 sums;
//     or, with fp32_statistics, the mean as torch's CPU fp32 sum of the candidates in topk order:
//     torch_cpu_sum.h), and the positive candidates. Memory B*G*sum_l min(k, n_l) (k = topk_total, n_l anchors
//     in level l: candidate_offsets), so no topk allocates more than exists.
//   * claim (claim), on the calling thread: each positive candidate claims its anchor with a packed (IoU, box)
//     key, kept in the int64 output itself; the highest IoU wins, the lower box index on ties; then the keys are
//     unpacked. The maximum does not depend on the order of the claims, so the result is the same for any number
//     of threads.
//
// Threads: a selection with less estimated work than kMinParallelNs (atss_parallel.h; the k*Ns costs below,
// measured on the 800x1344 pyramid of bench/bench_atss.py) stays on the calling thread: starting a helper costs
// more than it saves. bench/bench_atss.py (test_cpu_ratio_vs_glip_loop) records 1- and 2-thread times.
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <vector>

#include "atss/atss_grid.h"
#include "atss/atss_kernel.cuh"
#include "atss/atss_launch.h"
#include "atss/atss_parallel.h"
#include "atss/torch_cpu_sum.h"

namespace fiber_kernels {
namespace atss {
namespace {

// Estimated costs (ns) of a box's selection on the development machine: per anchor offered by a grid window and
// by a scan; per candidate (IoU, statistics, positives). They decide only how the work is shared
// (atss_parallel.h), never the result.
constexpr double kWindowNs = 10.0;
constexpr double kScanNs = 1.5;
constexpr double kCandidateNs = 10.0;

// Keeps the k smallest keys seen so far, sorted ascending. Anchors arrive in increasing index
// order, so a squared distance strictly above the current worst's cannot enter (its key is larger).
class NearestK {
 public:
  explicit NearestK(int64_t capacity) : k_(capacity) { keys_.reserve(capacity); worst_sq_.reserve(capacity); }

  // Keep the k smallest keys of the next level (k <= the capacity given at construction).
  void reset(int64_t k) {
    k_ = k;
    keys_.clear();
    worst_sq_.clear();
  }

  void offer(float sq, int64_t anchor) {
    const bool full = static_cast<int64_t>(keys_.size()) == k_;
    if (full && sq > worst_sq_.back()) return;
    const uint64_t key = distance_key(fk_sqrt(sq), anchor);
    if (full && key >= keys_.back()) return;
    if (full) { keys_.pop_back(); worst_sq_.pop_back(); }
    const auto pos = std::upper_bound(keys_.begin(), keys_.end(), key) - keys_.begin();
    keys_.insert(keys_.begin() + pos, key);
    worst_sq_.insert(worst_sq_.begin() + pos, sq);
  }

  const std::vector<uint64_t>& keys() const { return keys_; }
  int64_t size() const { return static_cast<int64_t>(keys_.size()); }
  // Distance of the worst kept key (the k-th nearest once full).
  float worst_distance() const { return fk_bits_float(static_cast<uint32_t>(keys_.back() >> 32)); }

 private:
  int64_t k_;
  std::vector<uint64_t> keys_;
  std::vector<float> worst_sq_;  // squared distance of each kept key, same order
};

// Candidates of one box into out_anchor / out_iou (offsets[L] slots, level l from offsets[l]: see
// candidate_offsets), positives kept and the rest set to -1.
// column / columns: the box's place among its image's real boxes (the originals' (C, G) IoU tensor), read by
// the fp32 statistics only.
void select_box(const float* anchors, const float* anchor_cx, const float* anchor_cy, const int64_t* level_starts,
                const std::vector<int64_t>& offsets, const GridLevel* grids, const Box& gt, bool glip,
                bool fp32_statistics, int64_t column, int64_t columns, NearestK& nearest, int32_t* out_anchor,
                float* out_iou) {
  const int64_t num_levels = static_cast<int64_t>(offsets.size()) - 1;
  const int64_t slots = offsets[num_levels];
  const float gcx = center_x(gt);
  const float gcy = center_y(gt);
  int64_t n = 0;
  double sum = 0.0;
  for (int64_t l = 0; l < num_levels; ++l) {
    const int64_t k = offsets[l + 1] - offsets[l];
    if (grids[l].regular) {
      select_in_grid(grids[l], anchor_cx, anchor_cy, gcx, gcy, k, nearest);
    } else {
      nearest.reset(k);
      for (int64_t a = level_starts[l]; a < level_starts[l + 1]; ++a) {
        nearest.offer(squared_distance(anchor_cx[a], anchor_cy[a], gcx, gcy), a);
      }
    }
    const auto& keys = nearest.keys();
    for (size_t j = 0; j < keys.size(); ++j) {
      const int64_t a = key_anchor(keys[j]);
      const float iou = box_iou(load_box(anchors, a), gt, glip);
      out_anchor[offsets[l] + j] = static_cast<int32_t>(a);
      out_iou[offsets[l] + j] = iou;
      sum += static_cast<double>(iou);
      ++n;
    }
    for (int64_t j = static_cast<int64_t>(keys.size()); j < k; ++j) out_anchor[offsets[l] + j] = -1;
  }
  if (n == 0) return;
  const double mean = sum / static_cast<double>(n);
  double centered = 0.0;
  for (int64_t s = 0; s < slots; ++s) {
    if (out_anchor[s] < 0) continue;
    const double d = static_cast<double>(out_iou[s]) - mean;
    centered += d * d;
  }
  // the candidates fill the first n slots (every level keeps k = min(topk_total, n_l) of them), in topk order
  const double threshold_mean =
      fp32_statistics ? fk_div(torch_cpu_column_sum(out_iou, n, columns, column), static_cast<float>(n)) : mean;
  const float threshold = iou_threshold(threshold_mean, centered, n);
  for (int64_t s = 0; s < slots; ++s) {
    const int32_t a = out_anchor[s];
    if (a < 0) continue;
    const bool positive = out_iou[s] >= threshold && center_inside(anchor_cx[a], anchor_cy[a], gt);
    if (!positive) out_anchor[s] = -1;
  }
}

// Estimated cost of one box's selection (ns): per regular level its window of locations (select_in_grid's
// first window, clipped to the grid), per other level a scan of the level; then its candidates' IoUs.
double box_cost_ns(const GridLevel* grids, const int64_t* level_starts, const std::vector<int64_t>& offsets) {
  const int64_t num_levels = static_cast<int64_t>(offsets.size()) - 1;
  double ns = kCandidateNs * static_cast<double>(offsets[num_levels]);
  for (int64_t l = 0; l < num_levels; ++l) {
    const GridLevel& grid = grids[l];
    if (grid.regular) {
      const int64_t k = offsets[l + 1] - offsets[l];
      const int64_t width = 2 * grid_reach(k, grid.per_location) + 1;
      ns += kWindowNs * static_cast<double>(std::min(width, grid.rows) * std::min(width, grid.cols) *
                                            grid.per_location);
    } else {
      ns += kScanNs * static_cast<double>(level_starts[l + 1] - level_starts[l]);
    }
  }
  return ns;
}

// Everything the selection of a chunk of boxes reads, owned by the job (a helper may finish a chunk after the
// call has returned: atss_parallel.h): the contiguous inputs, the anchor centres and grids of each anchor set,
// the candidate slots (candidate_offsets) and each box's place among its image's real boxes (the fp32
// statistics' column).
struct Job {
  at::Tensor anchors, gt_boxes, gt_mask;
  int64_t B = 0, G = 0, A = 0, L = 0, anchor_sets = 1, per_box = 0, widest = 0;
  bool glip = true, fp32_statistics = false;
  std::vector<int64_t> starts, offsets, column, columns;
  std::vector<float> cx, cy;        // (anchor_sets, A)
  std::vector<GridLevel> grids;     // (anchor_sets, L)
};

// Candidate rows of the boxes [begin, end) of the padded batch, per_box slots each: anchor int32 (-1 where not
// positive) and IoU fp32; the rows of padding boxes are left unwritten.
struct Rows {
  int64_t begin = 0, end = 0;
  std::unique_ptr<int32_t[]> anchor;
  std::unique_ptr<float[]> iou;
};

std::unique_ptr<Rows> select_boxes(const Job& job, int64_t begin, int64_t end) {
  auto rows = std::make_unique<Rows>();
  rows->begin = begin;
  rows->end = end;
  rows->anchor.reset(new int32_t[(end - begin) * job.per_box]);
  rows->iou.reset(new float[(end - begin) * job.per_box]);
  const float* anchors = job.anchors.data_ptr<float>();
  const float* gt = job.gt_boxes.data_ptr<float>();
  const bool* mask = job.gt_mask.data_ptr<bool>();
  NearestK nearest(job.widest);
  for (int64_t bg = begin; bg < end; ++bg) {
    if (!mask[bg]) continue;
    const int64_t b = bg / job.G;
    const int64_t set = job.anchor_sets == 1 ? 0 : b;
    select_box(anchors + set * job.A * 4, job.cx.data() + set * job.A, job.cy.data() + set * job.A,
               job.starts.data(), job.offsets, job.grids.data() + set * job.L, load_box(gt, bg), job.glip,
               job.fp32_statistics, job.column[bg], job.columns[b], nearest, rows->anchor.get() + (bg - begin) * job.per_box,
               rows->iou.get() + (bg - begin) * job.per_box);
  }
  return rows;
}

// Each positive candidate of `rows` claims its anchor in the int64 output `matched` (B, A), filled with kNoClaim
// (= -1, background) beforehand: the packed (IoU, box) key, the largest kept; the flat index of each anchor claimed
// for the first time goes to `claimed`.
void claim(const Job& job, const Rows& rows, int64_t* matched, std::vector<int64_t>& claimed) {
  const bool* mask = job.gt_mask.data_ptr<bool>();
  for (int64_t bg = rows.begin; bg < rows.end; ++bg) {
    if (!mask[bg]) continue;
    const int64_t image = (bg / job.G) * job.A;
    const int64_t g = bg % job.G;
    for (int64_t s = (bg - rows.begin) * job.per_box; s < (bg - rows.begin + 1) * job.per_box; ++s) {
      const int32_t a = rows.anchor[s];
      if (a < 0) continue;
      int64_t& key = matched[image + a];
      if (key == kNoClaim) claimed.push_back(image + a);
      key = std::max(key, claim_key(rows.iou[s], g));
    }
  }
}

std::tuple<at::Tensor, at::Tensor> atss_assign_fwd_cpu(const at::Tensor& anchors_in, const at::Tensor& level_starts_in,
                                                       const at::Tensor& gt_boxes_in, const at::Tensor& gt_mask_in,
                                                       int64_t topk_total, bool glip, bool fp32_statistics) {
  check_assign_inputs(anchors_in, level_starts_in, gt_boxes_in, gt_mask_in, topk_total);
  auto job = std::make_shared<Job>();
  job->anchors = anchors_in.contiguous();
  job->gt_boxes = gt_boxes_in.contiguous();
  job->gt_mask = gt_mask_in.contiguous();
  const at::Tensor level_starts = level_starts_in.contiguous();
  const int64_t B = job->gt_boxes.size(0), G = job->gt_boxes.size(1), A = job->anchors.size(1);
  const int64_t L = level_starts.size(0) - 1;
  if (B == 0 || A == 0 || G == 0) {
    return {at::full({B, A}, -1, job->gt_boxes.options().dtype(at::kLong)), at::zeros({B, A}, job->gt_boxes.options())};
  }
  job->B = B, job->G = G, job->A = A, job->L = L, job->glip = glip, job->fp32_statistics = fp32_statistics;
  job->anchor_sets = job->anchors.size(0);
  const int64_t* starts = level_starts.data_ptr<int64_t>();
  job->starts.assign(starts, starts + L + 1);

  // Anchor centres and each level's grid, once per distinct anchor set (1, or B when each image has its own).
  const float* anchors_ptr = job->anchors.data_ptr<float>();
  job->cx.resize(job->anchor_sets * A);
  job->cy.resize(job->anchor_sets * A);
  job->grids.resize(job->anchor_sets * L);
  for (int64_t set = 0; set < job->anchor_sets; ++set) {
    for (int64_t i = set * A; i < (set + 1) * A; ++i) {
      const Box a = load_box(anchors_ptr, i);
      job->cx[i] = center_x(a);
      job->cy[i] = center_y(a);
    }
    for (int64_t l = 0; l < L; ++l) {
      job->grids[set * L + l] = detect_grid(job->cx.data() + set * A, job->cy.data() + set * A, starts[l],
                                            starts[l + 1] - starts[l]);
    }
  }

  job->offsets = candidate_offsets(starts, L, topk_total);
  job->per_box = job->offsets[L];
  for (int64_t l = 0; l < L; ++l) job->widest = std::max(job->widest, job->offsets[l + 1] - job->offsets[l]);
  const bool* mask = job->gt_mask.data_ptr<bool>();
  job->column.resize(B * G);
  job->columns.resize(B);
  int64_t real_boxes = 0;
  for (int64_t b = 0; b < B; ++b) {
    int64_t count = 0;
    for (int64_t g = 0; g < G; ++g) job->column[b * G + g] = mask[b * G + g] ? count++ : -1;
    job->columns[b] = count;
    real_boxes += count;
  }

  // Selection, in chunks of contiguous boxes shared by the threads.
  const double select_ns = box_cost_ns(job->grids.data(), starts, job->offsets) * static_cast<double>(real_boxes);
  const WorkPlan plan = plan_work(B * G, select_ns);
  const int64_t chunks = plan.chunks;
  const auto rows = compute_chunks<Rows>(plan, [job, chunks](int64_t chunk) {
    const auto [begin, end] = chunk_range(chunk, chunks, job->B * job->G);
    return select_boxes(*job, begin, end);
  });

  // Claims on the calling thread; then the keys are unpacked into box indices and IoUs.
  // (filled here: at::full would fill them on the intra-op pool)
  at::Tensor matched = at::empty({B, A}, job->gt_boxes.options().dtype(at::kLong));
  at::Tensor matched_iou = at::empty({B, A}, job->gt_boxes.options());
  int64_t* matched_ptr = matched.data_ptr<int64_t>();
  float* iou_ptr = matched_iou.data_ptr<float>();
  std::fill(matched_ptr, matched_ptr + B * A, kNoClaim);
  std::fill(iou_ptr, iou_ptr + B * A, 0.0f);
  std::vector<int64_t> claimed;
  for (int64_t chunk = 0; chunk < chunks; ++chunk) claim(*job, rows->result(chunk), matched_ptr, claimed);
  for (const int64_t i : claimed) {
    const int64_t key = matched_ptr[i];
    matched_ptr[i] = claim_box(key);
    iou_ptr[i] = claim_iou(key);
  }
  return {matched, matched_iou};
}

}  // namespace

TORCH_LIBRARY_IMPL(fiber_kernels_C, CPU, m) { m.impl("atss_assign_fwd", &atss_assign_fwd_cpu); }

}  // namespace atss
}  // namespace fiber_kernels
