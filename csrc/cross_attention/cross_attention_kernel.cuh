// Flash-style grouped cross-attention (FIBER's fusion core), forward and backward, for the CUDA
// backend: q (B, H, Nq, D), k/v (Bk, H, Nk, D), query batch b reads key batch b / G (G = B / Bk), so
// the G * Nq query rows of one key batch are one flattened row space and keys are never copied.
// Padded keys get FIBER's additive -10000 on the logit; a row with no unpadded key returns zeros and
// stores lse = +inf, so its backward probabilities exp(s - lse) are exactly zero (the Triton
// launcher's convention: lse (B, H, Nq) fp32, natural log).
//
// Every block is 16-row warp slices: a warp owns 16 rows (forward, dq) or 16 keys (dk/dv) and
// multiplies its tiles in shared memory with warp_gemm: fp16 through nvcuda::wmma m16n16k16 with fp32
// accumulation (tensor cores from sm70), fp32 and bf16 through fp32 FMA (no bf16 wmma below sm80, and
// the same code on every architecture). Softmax statistics, accumulators and the backward are fp32.
// Backward: delta = rowsum(o * do); dq by row tiles; dk/dv by key tiles, each block summing over all
// G * Nq shared rows in a fixed order (deterministic, no atomics).
#pragma once

#include "fiber_kernels/warp_gemm.cuh"

namespace fiber_kernels {
namespace cross_attention {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kMaskValue = -10000.0f;  // FIBER / HF extended attention mask
constexpr int kPreprocessWarps = 4;

// Element strides of a (batch, head, row, dim) tensor.
struct Strides4 {
  long long b, h, n, d;
};

// Tiles by element size and head dim: kWarps warps of 16 rows (or keys) per block, and kTile keys
// (forward, dq) or query rows (dk/dv) per inner step. Chosen so every kernel fits V100's shared memory
// per block (tests/cross_attention/test_cuda_compile.py checks each against every card's limit).
template <int ElemBytes, int D>
struct Tiles;
template <> struct Tiles<2, 32> { static constexpr int kWarps = 4, kTile = 64; };
template <> struct Tiles<2, 64> { static constexpr int kWarps = 4, kTile = 32; };
template <> struct Tiles<2, 128> { static constexpr int kWarps = 2, kTile = 32; };
template <> struct Tiles<4, 32> { static constexpr int kWarps = 4, kTile = 32; };
template <> struct Tiles<4, 64> { static constexpr int kWarps = 2, kTile = 32; };
template <> struct Tiles<4, 128> { static constexpr int kWarps = 2, kTile = 16; };

__host__ __device__ constexpr long long align32(long long bytes) { return (bytes + 31) / 32 * 32; }

// Dynamic shared memory layouts (byte offsets), shared by the kernels and their launchers.
template <class T, int D>
struct FwdLayout {
  static constexpr int kWarps = Tiles<sizeof(T), D>::kWarps, kRows = 16 * kWarps, kKeys = Tiles<sizeof(T), D>::kTile;
  static constexpr long long q = 0;
  static constexpr long long k = q + align32(kRows * D * sizeof(T));
  static constexpr long long v = k + align32(kKeys * D * sizeof(T));
  static constexpr long long s = v + align32(kKeys * D * sizeof(T));
  static constexpr long long p = s + align32(kRows * kKeys * 4);
  static constexpr long long o = p + align32(kRows * kKeys * sizeof(T));
  static constexpr long long bias = o + align32(kRows * D * 4);
  static constexpr long long m = bias + align32(kKeys * 4);
  static constexpr long long l = m + align32(kRows * 4);
  static constexpr long long bytes = l + align32(kRows * 4) + 32;  // + the base's alignment slack
};

template <class T, int D>
struct DqLayout {
  static constexpr int kWarps = Tiles<sizeof(T), D>::kWarps, kRows = 16 * kWarps, kKeys = Tiles<sizeof(T), D>::kTile;
  static constexpr long long q = 0;
  static constexpr long long dout = q + align32(kRows * D * sizeof(T));
  static constexpr long long k = dout + align32(kRows * D * sizeof(T));
  static constexpr long long v = k + align32(kKeys * D * sizeof(T));
  static constexpr long long s = v + align32(kKeys * D * sizeof(T));
  static constexpr long long dp = s + align32(kRows * kKeys * 4);
  static constexpr long long ds = dp + align32(kRows * kKeys * 4);
  static constexpr long long dq = ds + align32(kRows * kKeys * sizeof(T));
  static constexpr long long bias = dq + align32(kRows * D * 4);
  static constexpr long long lse = bias + align32(kKeys * 4);
  static constexpr long long delta = lse + align32(kRows * 4);
  static constexpr long long bytes = delta + align32(kRows * 4) + 32;  // + the base's alignment slack
};

template <class T, int D>
struct DkdvLayout {
  static constexpr int kWarps = Tiles<sizeof(T), D>::kWarps, kKeys = 16 * kWarps, kRows = Tiles<sizeof(T), D>::kTile;
  static constexpr long long k = 0;
  static constexpr long long v = k + align32(kKeys * D * sizeof(T));
  static constexpr long long q = v + align32(kKeys * D * sizeof(T));
  static constexpr long long dout = q + align32(kRows * D * sizeof(T));
  static constexpr long long s = dout + align32(kRows * D * sizeof(T));
  static constexpr long long dp = s + align32(kKeys * kRows * 4);
  static constexpr long long p = dp + align32(kKeys * kRows * 4);
  static constexpr long long ds = p + align32(kKeys * kRows * sizeof(T));
  static constexpr long long dk = ds + align32(kKeys * kRows * sizeof(T));
  static constexpr long long dv = dk + align32(kKeys * D * 4);
  static constexpr long long bias = dv + align32(kKeys * D * 4);
  static constexpr long long lse = bias + align32(kKeys * 4);
  static constexpr long long delta = lse + align32(kRows * 4);
  static constexpr long long bytes = delta + align32(kRows * 4) + 32;  // + the base's alignment slack
};

// Arguments of the three attention kernels (by value; pointers are fk::Ptr so the emulation checks them).
template <class T>
struct AttentionParams {
  fk::Ptr<const T> q, k, v, dout;
  fk::Ptr<const bool> mask;  // nullptr: no key padding
  fk::Ptr<T> out, dq, dk, dv;
  fk::Ptr<float> lse, delta;  // (B, H, Nq) contiguous
  Strides4 sq, sk, sv, sdo, so, sdq, sdk, sdv;
  long long mask_b, mask_n;
  int heads, groups, seqlen_q, seqlen_k;
  float scale;
};

#if FK_DEVICE_CODE

template <class T>
__device__ __forceinline__ fk::Ptr<T> carve(fk::Ptr<unsigned char> smem, long long offset) {
  return fk::ptr_cast<T>(smem + offset);
}

// Offset of element (row, d) of the flattened rows of one key batch: row -> (first_batch + row / Nq, row % Nq).
__device__ __forceinline__ long long row_offset(const Strides4& s, long long first_batch, int head, long long row,
                                                int seqlen_q) {
  return (first_batch + row / seqlen_q) * s.b + head * s.h + (row % seqlen_q) * s.n;
}

// Row index into the (B, H, Nq) statistics of flattened row `row`.
__device__ __forceinline__ long long stat_index(long long first_batch, int heads, int head, long long row, int seqlen_q) {
  return ((first_batch + row / seqlen_q) * heads + head) * seqlen_q + row % seqlen_q;
}

// tile[r * D + d] = x[row0 + r][d] for the `rows` rows of a tile (zeros past `limit`). Whole block.
template <class T, int D>
__device__ __forceinline__ void load_rows(fk::Ptr<T> tile, int rows, fk::Ptr<const T> x, const Strides4& s,
                                          long long first_batch, int head, long long row0, long long limit,
                                          int seqlen_q) {
  for (int idx = threadIdx.x; idx < rows * D; idx += blockDim.x) {
    const long long row = row0 + idx / D;
    const int d = idx % D;
    tile[idx] = row < limit ? x[row_offset(s, first_batch, head, row, seqlen_q) + d * s.d] : from_float<T>(0.0f);
  }
}

// Logit bias of key `col` (log2 domain): -inf past Nk, FIBER's -10000 on padding, else 0.
template <class T>
__device__ __forceinline__ float key_bias(const AttentionParams<T>& p, long long key_batch, int col) {
  if (col >= p.seqlen_k) return -infinity();
  if (p.mask != nullptr && p.mask[key_batch * p.mask_b + col * p.mask_n]) return kMaskValue * kLog2e;
  return 0.0f;
}

// True when key batch `key_batch` has at least one unpadded key (whole block; contains a barrier).
template <class T>
__device__ __forceinline__ bool any_key(const AttentionParams<T>& p, long long key_batch) {
  int found = p.mask == nullptr ? 1 : 0;
  if (p.mask != nullptr) {
    for (int col = threadIdx.x; col < p.seqlen_k; col += blockDim.x) found |= p.mask[key_batch * p.mask_b + col * p.mask_n] ? 0 : 1;
  }
  return __syncthreads_or(found) != 0;
}

// grid (row tiles of G * Nq, Bk * H), block 32 * kWarps, dynamic shared FwdLayout::bytes.
template <class T, int D>
__global__ void cross_attention_fwd_kernel(const AttentionParams<T> p) {
  using L = FwdLayout<T, D>;
  constexpr int kRows = L::kRows, kKeys = L::kKeys;
  FK_DYNAMIC_SHARED(unsigned char, smem_raw);
  const fk::Ptr<unsigned char> smem = align_shared<32>(smem_raw);
  fk::Ptr<T> q_s = carve<T>(smem, L::q), k_s = carve<T>(smem, L::k), v_s = carve<T>(smem, L::v);
  fk::Ptr<T> p_s = carve<T>(smem, L::p);
  fk::Ptr<float> s_s = carve<float>(smem, L::s), o_s = carve<float>(smem, L::o), bias_s = carve<float>(smem, L::bias);
  fk::Ptr<float> m_s = carve<float>(smem, L::m), l_s = carve<float>(smem, L::l);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const long long key_batch = blockIdx.y / p.heads, first_batch = key_batch * p.groups;
  const int head = blockIdx.y % p.heads;
  const long long shared_rows = (long long)p.groups * p.seqlen_q, row0 = (long long)blockIdx.x * kRows;
  const float qk_scale = p.scale * kLog2e;

  load_rows<T, D>(q_s, kRows, p.q, p.sq, first_batch, head, row0, shared_rows, p.seqlen_q);
  for (int idx = threadIdx.x; idx < kRows * D; idx += blockDim.x) o_s[idx] = 0.0f;
  for (int r = threadIdx.x; r < kRows; r += blockDim.x) {
    m_s[r] = -infinity();
    l_s[r] = 0.0f;
  }
  const bool has_key = any_key(p, key_batch);

  fk::Ptr<float> s_w = s_s + warp * 16 * kKeys, o_w = o_s + warp * 16 * D;
  fk::Ptr<T> p_w = p_s + warp * 16 * kKeys;
  const int r = lane % 16, half = lane / 16;  // two lanes per row, each half of the columns
  const long long k_base = key_batch * p.sk.b + head * p.sk.h, v_base = key_batch * p.sv.b + head * p.sv.h;
  for (int start = 0; start < p.seqlen_k; start += kKeys) {
    __syncthreads();  // the previous key tile is consumed
    for (int idx = threadIdx.x; idx < kKeys * D; idx += blockDim.x) {
      const int col = start + idx / D, d = idx % D;
      const bool valid = col < p.seqlen_k;
      k_s[idx] = valid ? p.k[k_base + col * p.sk.n + d * p.sk.d] : from_float<T>(0.0f);
      v_s[idx] = valid ? p.v[v_base + col * p.sv.n + d * p.sv.d] : from_float<T>(0.0f);
    }
    for (int c = threadIdx.x; c < kKeys; c += blockDim.x) bias_s[c] = key_bias(p, key_batch, start + c);
    __syncthreads();

    warp_gemm<T, kKeys, D, true, false>(q_s + warp * 16 * D, D, k_s, D, s_w, kKeys);
    float row_max = -infinity();
    for (int c = half * kKeys / 2; c < (half + 1) * kKeys / 2; ++c) {
      const float s = s_w[r * kKeys + c] * qk_scale + bias_s[c];
      s_w[r * kKeys + c] = s;
      row_max = fmaxf(row_max, s);
    }
    row_max = fmaxf(row_max, __shfl_xor_sync(0xffffffffu, row_max, 16));
    const float m_old = m_s[warp * 16 + r];
    const float m_new = fmaxf(m_old, row_max);  // finite: every tile holds a key < Nk
    const float correction = exp2f(m_old - m_new);
    float row_sum = 0.0f;
    for (int c = half * kKeys / 2; c < (half + 1) * kKeys / 2; ++c) {
      const float prob = exp2f(s_w[r * kKeys + c] - m_new);
      p_w[r * kKeys + c] = from_float<T>(prob);
      row_sum += prob;
    }
    row_sum += __shfl_xor_sync(0xffffffffu, row_sum, 16);
    for (int d = half * D / 2; d < (half + 1) * D / 2; ++d) o_w[r * D + d] *= correction;
    __syncwarp();  // both lanes of the row read m_old before it changes
    if (half == 0) {
      m_s[warp * 16 + r] = m_new;
      l_s[warp * 16 + r] = l_s[warp * 16 + r] * correction + row_sum;
    }
    warp_gemm<T, D, kKeys, false, true>(p_w, kKeys, v_s, D, o_w, D);
  }

  __syncwarp();
  const long long row = row0 + warp * 16 + r;
  if (row < shared_rows) {
    const float l = l_s[warp * 16 + r];
    const long long o_off = row_offset(p.so, first_batch, head, row, p.seqlen_q);
    for (int d = half * D / 2; d < (half + 1) * D / 2; ++d) {
      p.out[o_off + d * p.so.d] = from_float<T>(has_key ? o_w[r * D + d] / l : 0.0f);
    }
    if (half == 0) {
      p.lse[stat_index(first_batch, p.heads, head, row, p.seqlen_q)] =
          has_key ? (m_s[warp * 16 + r] + log2f(l)) / kLog2e : infinity();
    }
  }
}

// delta = rowsum(out * dout) (B, H, Nq) fp32: one warp per row; grid ceil(B * H * Nq / kPreprocessWarps).
template <class T>
__global__ void cross_attention_bwd_preprocess_kernel(const AttentionParams<T> p, long long total_rows, int head_dim) {
  const long long row = (long long)blockIdx.x * kPreprocessWarps + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (row >= total_rows) return;
  const long long n = row % p.seqlen_q, bh = row / p.seqlen_q;
  const long long batch = bh / p.heads, head = bh % p.heads;
  const long long o_off = batch * p.so.b + head * p.so.h + n * p.so.n;
  const long long do_off = batch * p.sdo.b + head * p.sdo.h + n * p.sdo.n;
  float sum = 0.0f;
  for (int d = lane; d < head_dim; d += 32) sum += to_float(p.out[o_off + d * p.so.d]) * to_float(p.dout[do_off + d * p.sdo.d]);
  for (int offset = 16; offset > 0; offset /= 2) sum += __shfl_xor_sync(0xffffffffu, sum, offset);
  if (lane == 0) p.delta[row] = sum;
}

// dq: grid (row tiles of G * Nq, Bk * H), block 32 * kWarps, dynamic shared DqLayout::bytes.
template <class T, int D>
__global__ void cross_attention_bwd_dq_kernel(const AttentionParams<T> p) {
  using L = DqLayout<T, D>;
  constexpr int kRows = L::kRows, kKeys = L::kKeys;
  FK_DYNAMIC_SHARED(unsigned char, smem_raw);
  const fk::Ptr<unsigned char> smem = align_shared<32>(smem_raw);
  fk::Ptr<T> q_s = carve<T>(smem, L::q), do_s = carve<T>(smem, L::dout), k_s = carve<T>(smem, L::k);
  fk::Ptr<T> v_s = carve<T>(smem, L::v), ds_s = carve<T>(smem, L::ds);
  fk::Ptr<float> s_s = carve<float>(smem, L::s), dp_s = carve<float>(smem, L::dp), dq_s = carve<float>(smem, L::dq);
  fk::Ptr<float> bias_s = carve<float>(smem, L::bias), lse_s = carve<float>(smem, L::lse);
  fk::Ptr<float> delta_s = carve<float>(smem, L::delta);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const long long key_batch = blockIdx.y / p.heads, first_batch = key_batch * p.groups;
  const int head = blockIdx.y % p.heads;
  const long long shared_rows = (long long)p.groups * p.seqlen_q, row0 = (long long)blockIdx.x * kRows;
  const float qk_scale = p.scale * kLog2e;

  load_rows<T, D>(q_s, kRows, p.q, p.sq, first_batch, head, row0, shared_rows, p.seqlen_q);
  load_rows<T, D>(do_s, kRows, p.dout, p.sdo, first_batch, head, row0, shared_rows, p.seqlen_q);
  for (int idx = threadIdx.x; idx < kRows * D; idx += blockDim.x) dq_s[idx] = 0.0f;
  for (int r = threadIdx.x; r < kRows; r += blockDim.x) {
    const long long row = row0 + r;
    const bool valid = row < shared_rows;
    const long long stat = valid ? stat_index(first_batch, p.heads, head, row, p.seqlen_q) : 0;
    lse_s[r] = valid ? p.lse[stat] * kLog2e : infinity();
    delta_s[r] = valid ? p.delta[stat] : 0.0f;
  }

  fk::Ptr<float> s_w = s_s + warp * 16 * kKeys, dp_w = dp_s + warp * 16 * kKeys, dq_w = dq_s + warp * 16 * D;
  fk::Ptr<T> ds_w = ds_s + warp * 16 * kKeys;
  const long long k_base = key_batch * p.sk.b + head * p.sk.h, v_base = key_batch * p.sv.b + head * p.sv.h;
  for (int start = 0; start < p.seqlen_k; start += kKeys) {
    __syncthreads();
    for (int idx = threadIdx.x; idx < kKeys * D; idx += blockDim.x) {
      const int col = start + idx / D, d = idx % D;
      const bool valid = col < p.seqlen_k;
      k_s[idx] = valid ? p.k[k_base + col * p.sk.n + d * p.sk.d] : from_float<T>(0.0f);
      v_s[idx] = valid ? p.v[v_base + col * p.sv.n + d * p.sv.d] : from_float<T>(0.0f);
    }
    for (int c = threadIdx.x; c < kKeys; c += blockDim.x) bias_s[c] = key_bias(p, key_batch, start + c);
    __syncthreads();

    warp_gemm<T, kKeys, D, true, false>(q_s + warp * 16 * D, D, k_s, D, s_w, kKeys);
    warp_gemm<T, kKeys, D, true, false>(do_s + warp * 16 * D, D, v_s, D, dp_w, kKeys);
    for (int e = lane; e < 16 * kKeys; e += 32) {
      const int r = e / kKeys, c = e % kKeys;
      const float prob = exp2f(s_w[e] * qk_scale + bias_s[c] - lse_s[warp * 16 + r]);
      ds_w[e] = from_float<T>(prob * (dp_w[e] - delta_s[warp * 16 + r]));
    }
    warp_gemm<T, D, kKeys, false, true>(ds_w, kKeys, k_s, D, dq_w, D);
  }

  __syncwarp();
  for (int e = lane; e < 16 * D; e += 32) {
    const long long row = row0 + warp * 16 + e / D;
    if (row < shared_rows) {
      p.dq[row_offset(p.sdq, first_batch, head, row, p.seqlen_q) + (e % D) * p.sdq.d] = from_float<T>(dq_w[e] * p.scale);
    }
  }
}

// dk, dv: grid (key tiles of Nk, Bk * H), block 32 * kWarps, dynamic shared DkdvLayout::bytes. Each
// block sums over all G * Nq rows sharing its key batch, in order.
template <class T, int D>
__global__ void cross_attention_bwd_dkdv_kernel(const AttentionParams<T> p) {
  using L = DkdvLayout<T, D>;
  constexpr int kRows = L::kRows, kKeys = L::kKeys;
  FK_DYNAMIC_SHARED(unsigned char, smem_raw);
  const fk::Ptr<unsigned char> smem = align_shared<32>(smem_raw);
  fk::Ptr<T> k_s = carve<T>(smem, L::k), v_s = carve<T>(smem, L::v), q_s = carve<T>(smem, L::q);
  fk::Ptr<T> do_s = carve<T>(smem, L::dout), p_s = carve<T>(smem, L::p), ds_s = carve<T>(smem, L::ds);
  fk::Ptr<float> s_s = carve<float>(smem, L::s), dp_s = carve<float>(smem, L::dp), dk_s = carve<float>(smem, L::dk);
  fk::Ptr<float> dv_s = carve<float>(smem, L::dv), bias_s = carve<float>(smem, L::bias);
  fk::Ptr<float> lse_s = carve<float>(smem, L::lse), delta_s = carve<float>(smem, L::delta);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const long long key_batch = blockIdx.y / p.heads, first_batch = key_batch * p.groups;
  const int head = blockIdx.y % p.heads;
  const long long shared_rows = (long long)p.groups * p.seqlen_q;
  const int col0 = blockIdx.x * kKeys;
  const float qk_scale = p.scale * kLog2e;

  const long long k_base = key_batch * p.sk.b + head * p.sk.h, v_base = key_batch * p.sv.b + head * p.sv.h;
  for (int idx = threadIdx.x; idx < kKeys * D; idx += blockDim.x) {
    const int col = col0 + idx / D, d = idx % D;
    const bool valid = col < p.seqlen_k;
    k_s[idx] = valid ? p.k[k_base + col * p.sk.n + d * p.sk.d] : from_float<T>(0.0f);
    v_s[idx] = valid ? p.v[v_base + col * p.sv.n + d * p.sv.d] : from_float<T>(0.0f);
    dk_s[idx] = 0.0f;
    dv_s[idx] = 0.0f;
  }
  for (int c = threadIdx.x; c < kKeys; c += blockDim.x) bias_s[c] = key_bias(p, key_batch, col0 + c);

  fk::Ptr<float> s_w = s_s + warp * 16 * kRows, dp_w = dp_s + warp * 16 * kRows;
  fk::Ptr<float> dk_w = dk_s + warp * 16 * D, dv_w = dv_s + warp * 16 * D;
  fk::Ptr<T> p_w = p_s + warp * 16 * kRows, ds_w = ds_s + warp * 16 * kRows;
  for (long long row0 = 0; row0 < shared_rows; row0 += kRows) {
    __syncthreads();
    load_rows<T, D>(q_s, kRows, p.q, p.sq, first_batch, head, row0, shared_rows, p.seqlen_q);
    load_rows<T, D>(do_s, kRows, p.dout, p.sdo, first_batch, head, row0, shared_rows, p.seqlen_q);
    for (int r = threadIdx.x; r < kRows; r += blockDim.x) {
      const long long row = row0 + r;
      const bool valid = row < shared_rows;
      const long long stat = valid ? stat_index(first_batch, p.heads, head, row, p.seqlen_q) : 0;
      lse_s[r] = valid ? p.lse[stat] * kLog2e : infinity();
      delta_s[r] = valid ? p.delta[stat] : 0.0f;
    }
    __syncthreads();

    warp_gemm<T, kRows, D, true, false>(k_s + warp * 16 * D, D, q_s, D, s_w, kRows);    // k qᵀ
    warp_gemm<T, kRows, D, true, false>(v_s + warp * 16 * D, D, do_s, D, dp_w, kRows);  // v doᵀ
    for (int e = lane; e < 16 * kRows; e += 32) {
      const int kr = e / kRows, c = e % kRows;
      const float prob = exp2f(s_w[e] * qk_scale + bias_s[warp * 16 + kr] - lse_s[c]);
      p_w[e] = from_float<T>(prob);
      ds_w[e] = from_float<T>(prob * (dp_w[e] - delta_s[c]));
    }
    warp_gemm<T, D, kRows, false, true>(p_w, kRows, do_s, D, dv_w, D);   // pᵀ do
    warp_gemm<T, D, kRows, false, true>(ds_w, kRows, q_s, D, dk_w, D);   // dsᵀ q
  }

  __syncwarp();
  for (int e = lane; e < 16 * D; e += 32) {
    const int col = col0 + warp * 16 + e / D, d = e % D;
    if (col < p.seqlen_k) {
      p.dk[key_batch * p.sdk.b + head * p.sdk.h + col * p.sdk.n + d * p.sdk.d] = from_float<T>(dk_w[e] * p.scale);
      p.dv[key_batch * p.sdv.b + head * p.sdv.h + col * p.sdv.n + d * p.sdv.d] = from_float<T>(dv_w[e]);
    }
  }
}

#endif  // FK_DEVICE_CODE

}  // namespace cross_attention
}  // namespace fiber_kernels
