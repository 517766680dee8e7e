// ATSS assignment: index, selection and IoU helpers shared by the C++ CPU kernel (atss_cpu.cpp)
// and the CUDA kernels below (launched by atss_cuda.cu, and by atss_emu.cpp under the host
// emulation). Every helper is FK_HOST_DEVICE and uses the exactly rounded fk_* arithmetic of
// common.h, so all builds reproduce the PyTorch reference (kernels/fiber_kernels/atss/reference.py)
// bit for bit: same centres, distances, IoUs and thresholds.
//
// Conventions: "glip" (GLIP/FIBER/maskrcnn-benchmark, +1 on widths and heights) and "mmdet"
// (mmdetection BboxOverlaps2D, no +1, union clamped to eps = 1e-6).
#pragma once

#include "atss/atss_limits.h"
#include "fiber_kernels/portable.cuh"
#include "fiber_kernels/common.h"

namespace fiber_kernels {
namespace atss {

// The anchor centre must lie inside the box by more than this margin (GLIP and mmdet: 0.01).
constexpr float kInsideMargin = 0.01f;
// mmdetection's bbox_overlaps eps (union >= eps).
constexpr float kMmdetEps = 1e-6f;
// Claims are packed as (IoU bits << 32) | (kClaimIndexBase - box); a larger packed value wins.
constexpr int64_t kClaimIndexBase = 0x7FFFFFFF;
constexpr int64_t kNoClaim = -1;

struct Box {
  float x1, y1, x2, y2;
};

// Box i of an xyxy array; P is a raw pointer or an fk::Ptr (checked under the emulation).
template <class P>
FK_HOST_DEVICE FK_INLINE Box load_box(P boxes, int64_t i) {
  return Box{boxes[4 * i], boxes[4 * i + 1], boxes[4 * i + 2], boxes[4 * i + 3]};
}

// (x1 + x2) / 2, as torch computes (x2 + x1) / 2.0 (addition commutes; halving is exact).
FK_HOST_DEVICE FK_INLINE float center_x(const Box& b) { return fk_mul(fk_add(b.x2, b.x1), 0.5f); }
FK_HOST_DEVICE FK_INLINE float center_y(const Box& b) { return fk_mul(fk_add(b.y2, b.y1), 0.5f); }

// sqrt(dx * dx + dy * dy) with one rounding per operation, as (p - q).pow(2).sum(-1).sqrt().
FK_HOST_DEVICE FK_INLINE float squared_distance(float ax, float ay, float bx, float by) {
  const float dx = fk_sub(ax, bx);
  const float dy = fk_sub(ay, by);
  return fk_add(fk_mul(dx, dx), fk_mul(dy, dy));
}

// Selection key of an anchor for one box: distance bits (order-preserving, distance >= 0) in the
// high word, anchor index in the low word, so the k smallest keys are the k nearest anchors with
// ties broken by the lower anchor index.
FK_HOST_DEVICE FK_INLINE uint64_t distance_key(float distance, int64_t anchor) {
  return (static_cast<uint64_t>(fk_float_bits(distance)) << 32) | static_cast<uint64_t>(anchor);
}

FK_HOST_DEVICE FK_INLINE int64_t key_anchor(uint64_t key) { return static_cast<int64_t>(key & 0xFFFFFFFFull); }

FK_HOST_DEVICE FK_INLINE float fmax0(float x) { return x > 0.0f ? x : 0.0f; }
FK_HOST_DEVICE FK_INLINE float fminf2(float a, float b) { return b < a ? b : a; }
FK_HOST_DEVICE FK_INLINE float fmaxf2(float a, float b) { return b > a ? b : a; }

// IoU of anchor a and box g, in the order of operations of boxlist_iou (glip) or bbox_overlaps (mmdet).
FK_HOST_DEVICE FK_INLINE float box_iou(const Box& a, const Box& g, bool glip) {
  const float one = glip ? 1.0f : 0.0f;
  const float area_a = fk_mul(fk_add(fk_sub(a.x2, a.x1), one), fk_add(fk_sub(a.y2, a.y1), one));
  const float area_g = fk_mul(fk_add(fk_sub(g.x2, g.x1), one), fk_add(fk_sub(g.y2, g.y1), one));
  const float w = fmax0(fk_add(fk_sub(fminf2(a.x2, g.x2), fmaxf2(a.x1, g.x1)), one));
  const float h = fmax0(fk_add(fk_sub(fminf2(a.y2, g.y2), fmaxf2(a.y1, g.y1)), one));
  const float inter = fk_mul(w, h);
  float uni = fk_sub(fk_add(area_a, area_g), inter);
  if (!glip) uni = fmaxf2(uni, kMmdetEps);
  return fk_div(inter, uni);
}

// min(cx - x1, cy - y1, x2 - cx, y2 - cy) > 0.01: the anchor centre is inside the box.
FK_HOST_DEVICE FK_INLINE bool center_inside(float cx, float cy, const Box& g) {
  const float l = fk_sub(cx, g.x1);
  const float t = fk_sub(cy, g.y1);
  const float r = fk_sub(g.x2, cx);
  const float b = fk_sub(g.y2, cy);
  return fminf2(fminf2(l, t), fminf2(r, b)) > kInsideMargin;
}

// k = min(topk x anchors per location, anchors in the level).
FK_HOST_DEVICE FK_INLINE int64_t level_k(int64_t topk_total, int64_t level_size) {
  return topk_total < level_size ? topk_total : level_size;
}

// IoU threshold mean + std of the n candidate IoUs: std = sqrt(sum((iou - mean)^2) / (n - 1)) from the float64
// sum of squares (unbiased, NaN for n = 1 so nothing is positive; torch's CPU std of fp32 values also accumulates
// in float64 and rounds once), mean and std each rounded to fp32 and added in fp32, as GLIP's fp32 mean(0) + std(0).
// mean: the float64 sum / n, or an fp32 mean (torch's fp32 `mean(0)`, exact in a double) for the *_fp32 conventions.
FK_HOST_DEVICE FK_INLINE float iou_threshold(double mean, double centered_square_sum, int64_t n) {
  const double var = centered_square_sum / static_cast<double>(n - 1);
  return fk_add(static_cast<float>(mean), static_cast<float>(fk_sqrt(var)));
}

FK_HOST_DEVICE FK_INLINE int64_t claim_key(float iou, int64_t box) {
  return (static_cast<int64_t>(fk_float_bits(iou)) << 32) | (kClaimIndexBase - box);
}

FK_HOST_DEVICE FK_INLINE int64_t claim_box(int64_t key) {
  return key < 0 ? -1 : kClaimIndexBase - (key & 0xFFFFFFFFll);
}

FK_HOST_DEVICE FK_INLINE float claim_iou(int64_t key) {
  return key < 0 ? 0.0f : fk_bits_float(static_cast<uint32_t>(key >> 32));
}

// ---- CUDA kernels (one warp per image x box; launch shapes in the host helpers) -------------------

constexpr int kWarpsPerBlock = 4;
constexpr int kCandidateThreads = 32 * kWarpsPerBlock;
constexpr int kSlots = kMaxK / 32;      // candidate keys each lane keeps (kMaxK: atss_limits.h)
constexpr int kResolveThreads = 256;
constexpr int64_t kNoKey = 0x7FFFFFFFFFFFFFFFll;

FK_HOST_DEVICE FK_INLINE int64_t candidate_blocks(int64_t images_x_boxes) {
  return (images_x_boxes + kWarpsPerBlock - 1) / kWarpsPerBlock;
}

FK_HOST_DEVICE FK_INLINE int64_t resolve_blocks(int64_t total) {
  const int64_t blocks = (total + kResolveThreads - 1) / kResolveThreads;
  return blocks < 65535 ? blocks : 65535;
}

#if FK_DEVICE_CODE

__device__ __forceinline__ int64_t warp_min(int64_t v) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const int64_t other = __shfl_xor_sync(0xffffffffu, v, offset);
    v = other < v ? other : v;
  }
  return v;
}

__device__ __forceinline__ int64_t warp_max(int64_t v) {
  for (int offset = 16; offset > 0; offset >>= 1) {
    const int64_t other = __shfl_xor_sync(0xffffffffu, v, offset);
    v = other > v ? other : v;
  }
  return v;
}

__device__ __forceinline__ double warp_sum(double v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// One warp per (image, box) of the padded batch. Per level, a streaming top-k over 32 anchors at a
// time: while the tile's smallest key beats the worst of the kept k (unique keys), it replaces it.
// The k candidates of each level go to this box's scratch rows (anchor, IoU; written and read back
// by the same lane); then the float64 mean + std threshold, the centre-inside test, and an atomicMax
// of the packed claim into claims[image, anchor] (highest IoU wins, lower box index on ties).
__global__ void atss_candidates_kernel(fk::Ptr<const float> anchors, fk::Ptr<const int64_t> level_starts,
                                       fk::Ptr<const float> gt_boxes, fk::Ptr<const bool> gt_mask,
                                       fk::Ptr<int> cand_anchor, fk::Ptr<float> cand_iou, fk::Ptr<long long> claims,
                                       int64_t num_boxes_total, int64_t num_boxes, int64_t num_anchors,
                                       int num_levels, int topk_total, int64_t anchor_image_stride, bool glip) {
  const int lane = static_cast<int>(threadIdx.x) & 31;
  const int64_t bg = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (bg >= num_boxes_total || !gt_mask[bg]) return;  // uniform per warp
  const int64_t image = bg / num_boxes;
  const int64_t box = bg % num_boxes;
  fk::Ptr<const float> image_anchors = anchors + image * anchor_image_stride;
  const Box gt = load_box(gt_boxes, bg);
  const float gcx = center_x(gt);
  const float gcy = center_y(gt);
  fk::Ptr<int> my_anchor = cand_anchor + bg * num_levels * kMaxK;
  fk::Ptr<float> my_iou = cand_iou + bg * num_levels * kMaxK;

  int64_t count = 0;
  double sum = 0.0;
  for (int level = 0; level < num_levels; ++level) {
    const int64_t start = level_starts[level];
    const int64_t end = level_starts[level + 1];
    const int64_t k = level_k(topk_total, end - start);
    int64_t best[kSlots];
    int64_t local_worst = -1;
#pragma unroll
    for (int s = 0; s < kSlots; ++s) {
      const int64_t slot = s * 32 + lane;
      best[s] = slot < k ? kNoKey - slot : -1;  // slots >= k are never the worst
      local_worst = best[s] > local_worst ? best[s] : local_worst;
    }
    int64_t worst = warp_max(local_worst);
    for (int64_t tile = start; tile < end; tile += 32) {
      const int64_t a = tile + lane;
      int64_t key = kNoKey;
      if (a < end) {
        const Box anchor = load_box(image_anchors, a);
        const float sq = squared_distance(center_x(anchor), center_y(anchor), gcx, gcy);
        key = static_cast<int64_t>(distance_key(fk_sqrt(sq), a));
      }
      int64_t nearest = warp_min(key);
      while (nearest < worst) {
        local_worst = -1;
#pragma unroll
        for (int s = 0; s < kSlots; ++s) {
          if (best[s] == worst) best[s] = nearest;
          local_worst = best[s] > local_worst ? best[s] : local_worst;
        }
        if (key == nearest) key = kNoKey;
        worst = warp_max(local_worst);
        nearest = warp_min(key);
      }
    }
#pragma unroll
    for (int s = 0; s < kSlots; ++s) {
      const int64_t slot = s * 32 + lane;
      const int a = slot < k ? static_cast<int>(key_anchor(static_cast<uint64_t>(best[s]))) : -1;
      const float iou = a >= 0 ? box_iou(load_box(image_anchors, a), gt, glip) : 0.0f;
      my_anchor[level * kMaxK + slot] = a;
      my_iou[level * kMaxK + slot] = iou;
      if (a >= 0) sum += static_cast<double>(iou);
    }
    count += k;
  }
  if (count == 0) return;
  const double mean = warp_sum(sum) / static_cast<double>(count);
  double centered = 0.0;
  for (int level = 0; level < num_levels; ++level) {
#pragma unroll
    for (int s = 0; s < kSlots; ++s) {
      const int64_t idx = level * kMaxK + s * 32 + lane;
      if (my_anchor[idx] >= 0) {
        const double d = static_cast<double>(my_iou[idx]) - mean;
        centered += d * d;
      }
    }
  }
  const float threshold = iou_threshold(mean, warp_sum(centered), count);
  for (int level = 0; level < num_levels; ++level) {
#pragma unroll
    for (int s = 0; s < kSlots; ++s) {
      const int64_t idx = level * kMaxK + s * 32 + lane;
      const int a = my_anchor[idx];
      if (a < 0) continue;
      const float iou = my_iou[idx];
      const Box anchor = load_box(image_anchors, a);
      if (iou >= threshold && center_inside(center_x(anchor), center_y(anchor), gt)) {
        atomicMax(&claims[image * num_anchors + a], static_cast<long long>(claim_key(iou, box)));
      }
    }
  }
}

// Unpacks the winning claim of every (image, anchor): box index (-1 background) and IoU (0).
__global__ void atss_resolve_kernel(fk::Ptr<const long long> claims, fk::Ptr<int64_t> matched, fk::Ptr<float> matched_iou,
                                    int64_t total) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < total;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t claim = claims[i];
    matched[i] = claim_box(claim);
    matched_iou[i] = claim_iou(claim);
  }
}

#endif  // FK_DEVICE_CODE

}  // namespace atss
}  // namespace fiber_kernels
