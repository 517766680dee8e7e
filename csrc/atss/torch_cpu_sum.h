// The fp32 column sums of torch.mean(0) on the CPU, in torch's own order of additions, so the "glip_fp32" /
// "mmdet_fp32" statistics reproduce GLIP's and mmdetection's `candidate_ious.mean(0)` bit for bit.
//
// The originals reduce a contiguous (C, G) fp32 tensor (C candidates in topk order, one column per box) over
// dim 0; on the CPU at::mean is at::sum(...) / C, and at::sum (ATen/native/cpu/SumKernel.cpp, cascade_sum)
// adds in one of two orders per column, by the column's place in the tensor:
//   * cascade: acc0 += v[i] sequentially, every 16 values carried into acc1 (and acc1 into acc2 each 16 * 16),
//     the rest added to acc0 at the end, then acc0 + acc1 + acc2 + acc3;
//   * ilp4: four interleaved cascades (values 4i + k into partial k), the C % 4 leftovers into partial 0,
//     then partial 0 + 1 + 2 + 3.
// Columns take cascade when they fill a block of 4 (G < 8) or of 4 x 8 lanes (G >= 8), ilp4 otherwise; a
// single column (G = 1) is one contiguous reduction over 8-lane vectors: per lane ilp4 over the C / 8 vectors,
// then 0 + the C % 8 leftovers + lanes 0..7. Sizes are exact for C x G < 32768 (torch then splits the reduction
// over threads); tests/atss/test_statistics.py compares every order with torch.sum.
#pragma once

#include <cstdint>

#include "fiber_kernels/common.h"

namespace fiber_kernels {
namespace atss {

constexpr int64_t kTorchSumLanes = 8;  // Vectorized<float>::size() of torch's CPU sum kernel on x86

// at::native multi_row_sum for one column: values v[first + i * step], i < size.
inline float torch_cascade_sum(const float* v, int64_t first, int64_t step, int64_t size) {
  constexpr int kLevels = 4;
  int64_t ceil_log2 = 1;
  if (size > 2) {
    ceil_log2 = 0;
    while ((int64_t{1} << ceil_log2) < size) ++ceil_log2;
  }
  const int64_t level_power = ceil_log2 / kLevels > 4 ? ceil_log2 / kLevels : 4;
  const int64_t level_step = int64_t{1} << level_power;
  const int64_t level_mask = level_step - 1;
  float acc[kLevels] = {0.0f, 0.0f, 0.0f, 0.0f};
  int64_t i = 0;
  while (i + level_step <= size) {
    for (int64_t j = 0; j < level_step; ++j, ++i) acc[0] = fk_add(acc[0], v[first + i * step]);
    for (int j = 1; j < kLevels; ++j) {
      acc[j] = fk_add(acc[j], acc[j - 1]);
      acc[j - 1] = 0.0f;
      if ((i & (level_mask << (j * level_power))) != 0) break;
    }
  }
  for (; i < size; ++i) acc[0] = fk_add(acc[0], v[first + i * step]);
  for (int j = 1; j < kLevels; ++j) acc[0] = fk_add(acc[0], acc[j]);
  return acc[0];
}

// at::native row_sum (4 interleaved cascades) of v[first + i * step], i < size.
inline float torch_ilp4_sum(const float* v, int64_t first, int64_t step, int64_t size) {
  const int64_t rows = size / 4;
  float partial[4];
  for (int64_t k = 0; k < 4; ++k) partial[k] = torch_cascade_sum(v, first + k * step, 4 * step, rows);
  for (int64_t i = rows * 4; i < size; ++i) partial[0] = fk_add(partial[0], v[first + i * step]);
  return fk_add(fk_add(fk_add(partial[0], partial[1]), partial[2]), partial[3]);
}

// torch's CPU fp32 sum of the n values of column `column` of a (n, columns) tensor (values in row order).
inline float torch_cpu_column_sum(const float* values, int64_t n, int64_t columns, int64_t column) {
  if (columns == 1) {
    if (n < kTorchSumLanes) return torch_ilp4_sum(values, 0, 1, n);
    const int64_t vectors = n / kTorchSumLanes;
    float total = 0.0f;
    for (int64_t i = vectors * kTorchSumLanes; i < n; ++i) total = fk_add(total, values[i]);
    for (int64_t lane = 0; lane < kTorchSumLanes; ++lane) {
      total = fk_add(total, torch_ilp4_sum(values, lane, kTorchSumLanes, vectors));
    }
    return total;
  }
  const int64_t block = columns < kTorchSumLanes ? 4 : 4 * kTorchSumLanes;
  const bool cascade = column < (columns / block) * block;
  return cascade ? torch_cascade_sum(values, 0, 1, n) : torch_ilp4_sum(values, 0, 1, n);
}

}  // namespace atss
}  // namespace fiber_kernels
