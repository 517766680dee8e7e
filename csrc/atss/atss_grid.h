// Regular pyramids on the C++ CPU kernel: a level whose anchor centres form a grid (rows x columns x P
// anchors per location, location-major as GLIP's and mmdetection's generators lay them out) lets a box
// choose its k nearest anchors from a window of locations around its centre instead of scanning the level.
//
// Detection (detect_grid, O(level size), once per call and anchor set) reads P and the row length from
// where the centres first move, then takes each column's and row's centre range [lo, hi] from the anchors
// themselves; the level is regular when the ranges are strictly increasing and disjoint. Nothing is
// assumed of the generator, so any anchors are safe: the worst a wrong guess costs is the general scan.
//
// Exactness (select_in_grid): the window's k best keys are the level's k best when every anchor outside
// the window is provably farther than the k-th. Rounded fp32 subtraction, squaring, adding a square >= 0
// and sqrt are monotone, so an anchor in column x < left has |cx - gcx| >= fk_sub(gcx, hi[left - 1]) and
// distance >= fk_sqrt(fk_mul(d, d)) for that d (likewise right, top, bottom). A side whose bound is not
// strictly above the k-th distance grows by one location until none is (a tie at the k-th distance could
// go to a lower index outside, so equality grows too). Keys are offered in increasing anchor index, as
// NearestK requires. tests/atss/test_grid.py compares this path with the full scan.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "atss/atss_kernel.cuh"

namespace fiber_kernels {
namespace atss {

struct GridLevel {
  bool regular = false;
  int64_t start = 0, rows = 0, cols = 0, per_location = 0;
  std::vector<float> col_lo, col_hi, row_lo, row_hi;  // centre ranges of each column and row

  // Index of anchor p of location (y, x).
  int64_t anchor(int64_t y, int64_t x, int64_t p) const { return start + (y * cols + x) * per_location + p; }
};

// First index in [from, n) whose centre differs from `first`'s by more than tol in x or y (y only when
// only_y), n if none.
inline int64_t first_move(const float* cx, const float* cy, int64_t first, int64_t from, int64_t n, int64_t step,
                          bool only_y) {
  const float tol = 1e-4f * (1.0f + std::fabs(cx[first]) + std::fabs(cy[first]));
  for (int64_t a = from; a < n; a += step) {
    const bool moved_y = std::fabs(cy[first + a] - cy[first]) > tol;
    const bool moved_x = std::fabs(cx[first + a] - cx[first]) > tol;
    if (moved_y || (!only_y && moved_x)) return a;
  }
  return n;
}

inline GridLevel detect_grid(const float* cx, const float* cy, int64_t start, int64_t n) {
  GridLevel grid;
  grid.start = start;
  if (n < 2) return grid;
  const int64_t per_location = first_move(cx, cy, start, 1, n, 1, false);
  if (per_location == n || n % per_location != 0) return grid;
  const int64_t row_length = first_move(cx, cy, start, per_location, n, per_location, true);
  if (n % row_length != 0) return grid;
  grid.per_location = per_location;
  grid.cols = row_length / per_location;
  grid.rows = n / row_length;
  grid.col_lo.assign(grid.cols, INFINITY);
  grid.col_hi.assign(grid.cols, -INFINITY);
  grid.row_lo.assign(grid.rows, INFINITY);
  grid.row_hi.assign(grid.rows, -INFINITY);
  // ranges by comparison (NaN centres are skipped, as std::fmin / std::fmax would; those are library calls)
  float* col_lo = grid.col_lo.data();
  float* col_hi = grid.col_hi.data();
  for (int64_t y = 0; y < grid.rows; ++y) {
    float row_lo = INFINITY, row_hi = -INFINITY;
    for (int64_t x = 0; x < grid.cols; ++x) {
      for (int64_t p = 0; p < per_location; ++p) {
        const int64_t a = grid.anchor(y, x, p);
        col_lo[x] = fminf2(col_lo[x], cx[a]);
        col_hi[x] = fmaxf2(col_hi[x], cx[a]);
        row_lo = fminf2(row_lo, cy[a]);
        row_hi = fmaxf2(row_hi, cy[a]);
      }
    }
    grid.row_lo[y] = row_lo;
    grid.row_hi[y] = row_hi;
  }
  for (int64_t x = 0; x + 1 < grid.cols; ++x) {
    if (!(grid.col_hi[x] < grid.col_lo[x + 1])) return grid;
  }
  for (int64_t y = 0; y + 1 < grid.rows; ++y) {
    if (!(grid.row_hi[y] < grid.row_lo[y + 1])) return grid;
  }
  grid.regular = true;
  return grid;
}

// First range whose hi is >= c (the last one if none): the row or column nearest a centre coordinate.
inline int64_t nearest_range(const std::vector<float>& hi, float c) {
  int64_t lo = 0, up = static_cast<int64_t>(hi.size()) - 1;
  while (lo < up) {
    const int64_t mid = (lo + up) / 2;
    if (hi[mid] >= c) up = mid; else lo = mid + 1;
  }
  return lo;
}

// Lower bound of the distance from coordinate c to a centre coordinate beyond `edge` (on the far side of
// edge from c: 0 when c is not on the near side).
inline float side_bound(float c, float edge, bool below) {
  const float d = below ? (c >= edge ? fk_sub(c, edge) : 0.0f) : (edge >= c ? fk_sub(edge, c) : 0.0f);
  return fk_sqrt(fk_mul(d, d));
}

// Locations on each side of the box centre's location in the first window for k anchors (side x side locations
// hold the k; one more for the box centre's offset within its location).
inline int64_t grid_reach(int64_t k, int64_t per_location) {
  const int64_t cells = (k + per_location - 1) / per_location;
  int64_t side = 1;
  while (side * side < cells) ++side;
  return side / 2 + 1;
}

// The k nearest anchors of a regular level for the box centre (gcx, gcy) into `nearest` (as a full scan
// of the level would leave it). Window: the locations [left, right] x [top, bottom].
template <class Nearest>
void select_in_grid(const GridLevel& grid, const float* cx, const float* cy, float gcx, float gcy, int64_t k,
                    Nearest& nearest) {
  const int64_t reach = grid_reach(k, grid.per_location);
  const int64_t x0 = nearest_range(grid.col_hi, gcx);
  const int64_t y0 = nearest_range(grid.row_hi, gcy);
  int64_t left = x0 > reach ? x0 - reach : 0;
  int64_t right = x0 + reach < grid.cols ? x0 + reach : grid.cols - 1;
  int64_t top = y0 > reach ? y0 - reach : 0;
  int64_t bottom = y0 + reach < grid.rows ? y0 + reach : grid.rows - 1;
  while (true) {
    nearest.reset(k);
    for (int64_t y = top; y <= bottom; ++y) {
      for (int64_t x = left; x <= right; ++x) {
        for (int64_t p = 0; p < grid.per_location; ++p) {
          const int64_t a = grid.anchor(y, x, p);
          nearest.offer(squared_distance(cx[a], cy[a], gcx, gcy), a);
        }
      }
    }
    if (nearest.size() < k) {  // the window holds fewer than k anchors: widen every side that can
      left = left > 0 ? left - 1 : 0;
      right = right + 1 < grid.cols ? right + 1 : right;
      top = top > 0 ? top - 1 : 0;
      bottom = bottom + 1 < grid.rows ? bottom + 1 : bottom;
      continue;
    }
    const float kth = nearest.worst_distance();
    const bool grow_left = left > 0 && !(side_bound(gcx, grid.col_hi[left - 1], true) > kth);
    const bool grow_right = right + 1 < grid.cols && !(side_bound(gcx, grid.col_lo[right + 1], false) > kth);
    const bool grow_top = top > 0 && !(side_bound(gcy, grid.row_hi[top - 1], true) > kth);
    const bool grow_bottom = bottom + 1 < grid.rows && !(side_bound(gcy, grid.row_lo[bottom + 1], false) > kth);
    if (!(grow_left || grow_right || grow_top || grow_bottom)) return;
    left -= grow_left ? 1 : 0;
    right += grow_right ? 1 : 0;
    top -= grow_top ? 1 : 0;
    bottom += grow_bottom ? 1 : 0;
  }
}

}  // namespace atss
}  // namespace fiber_kernels
