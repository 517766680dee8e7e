// C++ CPU kernel of ATSS assignment, batched over images and boxes, without (A, G) matrices.
//
// Phase 1 (parallel over image x box): per level, the k nearest anchors by a bounded insertion
// into a sorted key list (keys of atss_kernel.cuh: distance bits, then anchor index), from a window of
// locations around the box centre when the level is a regular grid (atss_grid.h), else from a scan of
// the level; their IoUs, the mean + unbiased std threshold (float64 sums; or, with fp32_statistics,
// the mean as torch's CPU fp32 sum of the candidates in topk order: torch_cpu_sum.h), and the positive
// candidates. Memory B*G*sum_l min(k, n_l) (k = topk_total, n_l anchors in level l: candidate_offsets),
// so no topk allocates more than exists.
// Phase 2 (parallel over images): each positive candidate claims its anchor with a packed
// (IoU, box) key; the highest IoU wins, the lower box index on ties; each image's outputs are filled
// with background and only its claimed anchors written over. Memory B*A.
//
// Work below kSerialWork anchor visits runs on the calling thread: waking a pool costs more than it saves.
#include <ATen/Parallel.h>
#include <torch/library.h>
#include <torch/types.h>

#include <algorithm>
#include <vector>

#include "atss/atss_grid.h"
#include "atss/atss_kernel.cuh"
#include "atss/atss_launch.h"
#include "atss/torch_cpu_sum.h"

namespace fiber_kernels {
namespace atss {
namespace {

constexpr int64_t kSerialWork = 1 << 18;

struct Candidates {
  std::vector<int32_t> anchor;  // (B*G, L, K) anchor index, -1 where not positive
  std::vector<float> iou;       // (B*G, L, K)
};

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
  const float threshold = fp32_statistics
      ? iou_threshold_fp32(fk_div(torch_cpu_column_sum(out_iou, n, columns, column), static_cast<float>(n)),
                           centered, n)
      : iou_threshold(mean, centered, n);
  for (int64_t s = 0; s < slots; ++s) {
    const int32_t a = out_anchor[s];
    if (a < 0) continue;
    const bool positive = out_iou[s] >= threshold && center_inside(anchor_cx[a], anchor_cy[a], gt);
    if (!positive) out_anchor[s] = -1;
  }
}

std::tuple<at::Tensor, at::Tensor> atss_assign_fwd_cpu(const at::Tensor& anchors_in, const at::Tensor& level_starts_in,
                                                       const at::Tensor& gt_boxes_in, const at::Tensor& gt_mask_in,
                                                       int64_t topk_total, bool glip, bool fp32_statistics) {
  check_assign_inputs(anchors_in, level_starts_in, gt_boxes_in, gt_mask_in, topk_total);
  const at::Tensor anchors = anchors_in.contiguous();
  const at::Tensor gt_boxes = gt_boxes_in.contiguous();
  const at::Tensor gt_mask = gt_mask_in.contiguous();
  const at::Tensor level_starts = level_starts_in.contiguous();
  const int64_t B = gt_boxes.size(0), G = gt_boxes.size(1), A = anchors.size(1);
  const int64_t L = level_starts.size(0) - 1;
  const int64_t anchor_batch_stride = anchors.size(0) == 1 ? 0 : A;

  if (B == 0 || A == 0 || G == 0) {
    return {at::full({B, A}, -1, gt_boxes.options().dtype(at::kLong)), at::zeros({B, A}, gt_boxes.options())};
  }
  // filled by phase 2, image by image (at::full would fill them on the intra-op pool)
  at::Tensor matched = at::empty({B, A}, gt_boxes.options().dtype(at::kLong));
  at::Tensor matched_iou = at::empty({B, A}, gt_boxes.options());

  const float* anchors_ptr = anchors.data_ptr<float>();
  const float* gt_ptr = gt_boxes.data_ptr<float>();
  const bool* mask_ptr = gt_mask.data_ptr<bool>();
  const int64_t* starts = level_starts.data_ptr<int64_t>();

  // Anchor centres and each level's grid, computed once per distinct anchor set.
  const int64_t anchor_sets = anchors.size(0);
  std::vector<float> cx(anchor_sets * A), cy(anchor_sets * A);
  at::parallel_for(0, anchor_sets * A, kSerialWork, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const Box a = load_box(anchors_ptr, i);
      cx[i] = center_x(a);
      cy[i] = center_y(a);
    }
  });
  std::vector<GridLevel> grids(anchor_sets * L);
  at::parallel_for(0, anchor_sets * L, std::max<int64_t>(1, kSerialWork / std::max<int64_t>(1, A / L)),
                   [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t set = i / L, l = i % L;
      grids[i] = detect_grid(cx.data() + set * A, cy.data() + set * A, starts[l], starts[l + 1] - starts[l]);
    }
  });

  const std::vector<int64_t> offsets = candidate_offsets(starts, L, topk_total);
  const int64_t per_box = offsets[L];
  int64_t widest = 0;
  for (int64_t l = 0; l < L; ++l) widest = std::max(widest, offsets[l + 1] - offsets[l]);
  // each real box's place among its image's real boxes, and their count (the fp32 statistics' column)
  std::vector<int64_t> column(B * G), columns(B);
  for (int64_t b = 0; b < B; ++b) {
    int64_t count = 0;
    for (int64_t g = 0; g < G; ++g) column[b * G + g] = mask_ptr[b * G + g] ? count++ : -1;
    columns[b] = count;
  }
  // anchors one box visits: its windows on regular levels (about 25 locations), the whole of the others
  int64_t visits = 0;
  for (int64_t l = 0; l < L; ++l) {
    visits += grids[l].regular ? 25 * grids[l].per_location : starts[l + 1] - starts[l];
  }
  Candidates cand{std::vector<int32_t>(B * G * per_box, -1), std::vector<float>(B * G * per_box, 0.0f)};
  at::parallel_for(0, B * G, std::max<int64_t>(1, kSerialWork / std::max<int64_t>(1, visits)),
                   [&](int64_t begin, int64_t end) {
    NearestK nearest(widest);
    for (int64_t bg = begin; bg < end; ++bg) {
      if (!mask_ptr[bg]) continue;
      const int64_t b = bg / G;
      const int64_t set = b * (anchor_batch_stride ? 1 : 0);
      select_box(anchors_ptr + set * A * 4, cx.data() + set * A, cy.data() + set * A, starts, offsets,
                 grids.data() + set * L, load_box(gt_ptr, bg), glip, fp32_statistics, column[bg], columns[b],
                 nearest, cand.anchor.data() + bg * per_box, cand.iou.data() + bg * per_box);
    }
  });

  int64_t* matched_ptr = matched.data_ptr<int64_t>();
  float* iou_ptr = matched_iou.data_ptr<float>();
  at::parallel_for(0, B, std::max<int64_t>(1, kSerialWork / (A + G * per_box)), [&](int64_t begin, int64_t end) {
    std::vector<int64_t> claims(A, kNoClaim);
    std::vector<int32_t> claimed;
    for (int64_t b = begin; b < end; ++b) {
      std::fill(matched_ptr + b * A, matched_ptr + (b + 1) * A, int64_t{-1});
      std::fill(iou_ptr + b * A, iou_ptr + (b + 1) * A, 0.0f);
      for (int64_t g = 0; g < G; ++g) {
        const int64_t base = (b * G + g) * per_box;
        for (int64_t s = 0; s < per_box; ++s) {
          const int32_t a = cand.anchor[base + s];
          if (a < 0) continue;
          if (claims[a] == kNoClaim) claimed.push_back(a);
          claims[a] = std::max(claims[a], claim_key(cand.iou[base + s], g));
        }
      }
      for (const int32_t a : claimed) {
        matched_ptr[b * A + a] = claim_box(claims[a]);
        iou_ptr[b * A + a] = claim_iou(claims[a]);
        claims[a] = kNoClaim;
      }
      claimed.clear();
    }
  });
  return {matched, matched_iou};
}

}  // namespace

TORCH_LIBRARY_IMPL(fiber_kernels_C, CPU, m) { m.impl("atss_assign_fwd", &atss_assign_fwd_cpu); }

}  // namespace atss
}  // namespace fiber_kernels
