// Fused Swin window attention, forward and backward, for the CUDA backend (sm70 wmma fp16, FMA fp32/bf16).
//
// Same contract as the Triton kernels of kernels/fiber_kernels/window_attention/: qkv (B, H, W, 3C)
// channels-last is read at the original token positions; cyclic shift and window partition are index
// math (wa_token); the relative-position bias is gathered per element from the ((2Wh-1)(2Ww-1), nH)
// table (wa_relative_index) and the shift mask comes from region ids (wa_token().region); out
// (B, H, W, C) is written at the original positions of real tokens. Padded tokens (H, W not multiples
// of the window) have k, v = qkv_bias parts (0 without a bias) and their query outputs are dropped.
//
// Tiles. A block handles one head and whole windows; each warp owns 16-row strips (strip m for warp
// m % warps) and runs every product of its strip against the whole window held in shared memory:
// N = 49 is padded to 64 (4 strips, 77% of rows and key columns used), N = 144 to 144 (9 strips, no
// padding). Padding, not packing: packed 49-token windows would make strips straddle two windows, and
// such a strip needs both windows' keys (twice the columns, half of them masked), no saving over 64.
// Storage type E in shared memory: __half for fp16 inputs, which go through nvcuda::wmma m16n16k16
// (fp32 accumulate; the sm70 tensor-core path); float for fp32 and bf16 inputs, multiplied with FMA
// loops (bf16 storage read and written as bf16, math in fp32: no bf16 wmma, which would need sm80).
//
// Kernels:
//   wa_fwd_kernel    grid (windows, heads): S = Q Kᵀ·scale + bias + mask, exact softmax, O = P V / l;
//                    writes out and lse (B·nW, nH, N) fp32.
//   wa_bwd_dq_kernel grid (splits, heads): windows of a fixed contiguous range in order; per query
//                    strip P = exp(S - lse), dS = P (dO Vᵀ - delta), dQ = dS K·scale, and the table
//                    gradient of the strip: for each relative offset r (a lane per r) the pairs of that
//                    offset in row order, into a per-warp (R,) accumulator; at the end the warps are
//                    summed in order into dtable_part (splits, R, nH).
//   wa_bwd_dkv_kernel grid (chunks, heads): per key strip Pᵀ, dV = Pᵀ dO, dSᵀ, dK = dSᵀ Q·scale; padded
//                    keys' dK/dV summed (rows in order, warps in order) into dbias_part (chunks, 3C).
//   wa_fold_kernel   out[e] = sum over parts p in order of part[p, e] (the table and qkv-bias grads).
// No float atomics anywhere and every sum has a fixed order depending on the shape only, so the
// gradients are bitwise equal across runs and schedules; (windows, heads, N, N) is never stored.
#pragma once

#include "fiber_kernels/warp_gemm.cuh"

namespace fiber_kernels {
namespace window_attention {

constexpr int kStrip = 16;        // rows of a warp strip = the wmma tile edge
constexpr int kFoldThreads = 256;

// ---- index math (host and device; unit-tested against reference.py on the host) ----------------

// Problem geometry: padded map Hp x Wp, n_win windows per image, n_win_w per window row.
struct WaShape {
  int B, H, W, C, heads, head_dim;
  int wh, ww, sh, sw, Hp, Wp, n_win_w, n_win, N, n_pad, R;
  bool shift_first;
  float scale, mask_value;
};

__host__ __device__ inline WaShape wa_make_shape(int B, int H, int W, int C, int heads, int wh, int ww, int sh, int sw,
                                                 bool shift_first, float scale, float mask_value) {
  WaShape s{};
  s.B = B;
  s.H = H;
  s.W = W;
  s.C = C;
  s.heads = heads;
  s.head_dim = C / heads;
  s.wh = wh;
  s.ww = ww;
  s.sh = sh;
  s.sw = sw;
  s.Hp = (H + wh - 1) / wh * wh;
  s.Wp = (W + ww - 1) / ww * ww;
  s.n_win_w = s.Wp / ww;
  s.n_win = (s.Hp / wh) * s.n_win_w;
  s.N = wh * ww;
  s.n_pad = (s.N + kStrip - 1) / kStrip * kStrip;
  s.R = (2 * wh - 1) * (2 * ww - 1);
  s.shift_first = shift_first;
  s.scale = scale;
  s.mask_value = mask_value;
  return s;
}

// Swin's shift regions along one axis of the shifted padded map: slices [0, size-window),
// [size-window, size-shift), [size-shift, size); a single region without a shift.
__host__ __device__ inline int wa_axis_region(int coord, int size, int window, int shift) {
  if (shift == 0) return 0;
  return (coord >= size - window ? 1 : 0) + (coord >= size - shift ? 1 : 0);
}

// Token t of window w_in (of one image): source (py, px) in the original (H, W) map, whether it is a
// real token (else padded: k, v = qkv bias, output dropped), and its shift-mask region id.
struct WaToken {
  int py, px;
  bool real;
  int region;
};

__host__ __device__ inline WaToken wa_token(const WaShape& s, int w_in, int t) {
  const int sy = (w_in / s.n_win_w) * s.wh + t / s.ww;  // position in the shifted padded map
  const int sx = (w_in % s.n_win_w) * s.ww + t % s.ww;
  WaToken tok;
  if (s.shift_first) {  // timm: shift the unpadded map, then pad
    tok.real = sy < s.H && sx < s.W;
    tok.py = (sy + s.sh) % s.H;
    tok.px = (sx + s.sw) % s.W;
  } else {  // official Swin / FIBER / torchvision: pad, then shift
    tok.py = (sy + s.sh) % s.Hp;
    tok.px = (sx + s.sw) % s.Wp;
    tok.real = tok.py < s.H && tok.px < s.W;
  }
  tok.real = tok.real && t < s.N;
  tok.region = 3 * wa_axis_region(sy, s.Hp, s.wh, s.sh) + wa_axis_region(sx, s.Wp, s.ww, s.sw);
  return tok;
}

// Row of the bias table for query i and key j of a window (Swin's relative_position_index).
__host__ __device__ inline int wa_relative_index(int wh, int ww, int i, int j) {
  return (i / ww - j / ww + wh - 1) * (2 * ww - 1) + (i % ww - j % ww + ww - 1);
}

// ---- launch shapes (shared by the CUDA launcher and the emulation binding) ------------------------

// Warps per block: 4 for windows up to 64 (padded) tokens, 2 above (to fit sm70's shared memory per block:
// tests/window_attention/test_cuda_compile.py::test_shared_memory_fits_each_card).
__host__ __device__ inline int wa_warps(int n_pad) { return n_pad <= 64 ? 4 : 2; }

// Byte offsets of the shared-memory regions; per-warp regions at warp_base + warp * warp_bytes.
struct WaSmem {
  int ld_x, ld_s, ld_p, ld_o;
  long long x0, x1, stat0, stat1, warp_base, warp_bytes;
  long long a0, a1, s, p, tile, o, rowstat, dbias, table;  // within a warp's region
  long long total;
};

__host__ __device__ inline long long wa_align(long long bytes) { return (bytes + 127) / 128 * 128; }

// elem: bytes of the storage type (2: __half with wmma, 4: float with FMA; then P aliases S).
__host__ __device__ inline WaSmem wa_smem_layout(const WaShape& s, int elem) {
  WaSmem m{};
  const bool wmma = elem == 2;
  m.ld_x = s.head_dim + (wmma ? 8 : 4);  // rows of 16 B multiples (wmma ldm), staggered banks
  m.ld_s = s.n_pad + 4;
  m.ld_p = wmma ? s.n_pad + 8 : m.ld_s;
  m.ld_o = s.head_dim + 4;
  long long at = 0;
  m.x0 = at;
  at += wa_align(1LL * s.n_pad * m.ld_x * elem);
  m.x1 = at;
  at += wa_align(1LL * s.n_pad * m.ld_x * elem);
  m.stat0 = at;
  at += wa_align(4LL * s.n_pad);
  m.stat1 = at;
  at += wa_align(4LL * s.n_pad);
  m.warp_base = at;
  long long w = 0;
  m.a0 = w;
  w += wa_align(1LL * kStrip * m.ld_x * elem);
  m.a1 = w;
  w += wa_align(1LL * kStrip * m.ld_x * elem);
  m.s = w;
  w += wa_align(4LL * kStrip * m.ld_s);
  m.p = m.s;
  if (wmma) {
    m.p = w;
    w += wa_align(1LL * kStrip * m.ld_p * elem);
  }
  m.tile = w;
  w += wa_align(4LL * kStrip * kStrip);
  m.o = w;
  w += wa_align(4LL * kStrip * m.ld_o);
  m.rowstat = w;
  w += wa_align(4LL * kStrip);
  m.dbias = w;
  w += wa_align(4LL * 2 * s.head_dim);
  m.table = w;
  w += wa_align(4LL * s.R);
  m.warp_bytes = w;
  m.total = at + w * wa_warps(s.n_pad) + 128;  // + slack to align the 16-byte aligned dynamic base
  return m;
}

// Windows per dq block: about 256 dq blocks whatever the batch (as the Triton launcher).
__host__ __device__ inline int wa_windows_per_split(long long total_windows, int heads) {
  long long wanted = (256 + heads - 1) / heads;
  wanted = wanted < 1 ? 1 : (wanted > total_windows ? total_windows : wanted);
  return static_cast<int>((total_windows + wanted - 1) / wanted);
}

// Windows per dk/dv block: the largest of 1, 2, 4, 8 that keeps about 1024 blocks.
__host__ __device__ inline int wa_windows_per_chunk(long long total_windows, int heads) {
  int per = 1;
  while (per < 8 && (total_windows + 2 * per - 1) / (2 * per) * heads >= 1024) per *= 2;
  return per;
}

#if FK_DEVICE_CODE

// Shared-memory storage of a global dtype: __half runs on tensor cores, the rest on FMA in fp32.
template <class T>
struct WaStorage {
  using type = float;
  static constexpr bool kWmma = false;
};
template <>
struct WaStorage<__half> {
  using type = __half;
  static constexpr bool kWmma = true;
};

// ---- block-level loads -----------------------------------------------------------------------------

struct WaWindow {
  long long image;  // batch index b
  int w_in;         // window index within the image
};

__device__ __forceinline__ WaWindow wa_window(const WaShape& s, long long wid) {
  WaWindow w;
  w.image = wid / s.n_win;
  w.w_in = static_cast<int>(wid - w.image * s.n_win);
  return w;
}

// Element offset of token (py, px) of image b in a (B, H, W, channels) contiguous tensor.
__device__ __forceinline__ long long wa_row(const WaShape& s, long long b, int py, int px, int channels) {
  return ((b * s.H + py) * s.W + px) * static_cast<long long>(channels);
}

// rows [first, first + count) of a window into dst[count][ld]: channel block `chan` of `src` (a
// (B, H, W, channels) tensor) for real tokens, `fill` (or 0) for padded ones, 0 past N. Threads
// `tid` of `nthreads` share the work.
template <class T, class E>
__device__ __forceinline__ void wa_load_rows(const WaShape& s, const WaWindow& w, fk::Ptr<const T> src, int channels,
                                             int chan, fk::Ptr<const T> fill, fk::Ptr<E> dst, int ld, int first,
                                             int count, int tid, int nthreads) {
  const int D = s.head_dim;
  for (int e = tid; e < count * D; e += nthreads) {
    const int r = e / D, d = e % D, t = first + r;
    float v = 0.f;
    if (t < s.N) {
      const WaToken tok = wa_token(s, w.w_in, t);
      if (tok.real)
        v = to_float(src[wa_row(s, w.image, tok.py, tok.px, channels) + chan + d]);
      else if (fill)
        v = to_float(fill[chan + d]);
    }
    dst[r * ld + d] = from_float<E>(v);
  }
}

// Score of query i, key j from the raw product: ·scale + table[rel(i, j), head] + shift mask.
template <class T>
__device__ __forceinline__ float wa_score(const WaShape& s, float dot, fk::Ptr<const T> table, int head, int i, int j,
                                          int region_i, int region_j) {
  float x = dot * s.scale + to_float(table[wa_relative_index(s.wh, s.ww, i, j) * s.heads + head]);
  if (region_i != region_j) x += s.mask_value;
  return x;
}

// ---- kernels -------------------------------------------------------------------------------------------

template <class T>
struct WaFwdArgs {
  fk::Ptr<const T> qkv, table, qkv_bias;  // qkv_bias may be null
  fk::Ptr<T> out;
  fk::Ptr<float> lse;
  WaShape shape;
};

template <class T>
__global__ void wa_fwd_kernel(WaFwdArgs<T> args) {
  using E = typename WaStorage<T>::type;
  const WaShape& s = args.shape;
  const WaSmem m = wa_smem_layout(s, sizeof(E));
  FK_DYNAMIC_SHARED(unsigned char, dynamic_smem);
  const fk::Ptr<unsigned char> smem = align_shared<128>(dynamic_smem);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, warps = blockDim.x / 32;
  const long long wid = blockIdx.x;
  const int head = blockIdx.y, D = s.head_dim, C = s.C;
  const WaWindow w = wa_window(s, wid);
  fk::Ptr<E> k_s = fk::ptr_cast<E>(smem + m.x0), v_s = fk::ptr_cast<E>(smem + m.x1);
  wa_load_rows(s, w, args.qkv, 3 * C, C + head * D, args.qkv_bias, k_s, m.ld_x, 0, s.n_pad, tid, blockDim.x);
  wa_load_rows(s, w, args.qkv, 3 * C, 2 * C + head * D, args.qkv_bias, v_s, m.ld_x, 0, s.n_pad, tid, blockDim.x);
  __syncthreads();
  fk::Ptr<unsigned char> mine = smem + m.warp_base + warp * m.warp_bytes;
  fk::Ptr<E> q_s = fk::ptr_cast<E>(mine + m.a0), p_s = fk::ptr_cast<E>(mine + m.p);
  fk::Ptr<float> s_s = fk::ptr_cast<float>(mine + m.s), o_s = fk::ptr_cast<float>(mine + m.o);
  fk::Ptr<float> row_sum = fk::ptr_cast<float>(mine + m.rowstat);
  const int r = lane / 2, col0 = lane % 2;  // softmax: two lanes per row
  for (int m0 = warp * kStrip; m0 < s.n_pad; m0 += warps * kStrip) {
    wa_load_rows(s, w, args.qkv, 3 * C, head * D, args.qkv_bias, q_s, m.ld_x, m0, kStrip, lane, 32);
    __syncwarp();
    warp_strip_gemm<E, true, false, false>(q_s, m.ld_x, k_s, m.ld_x, s_s, m.ld_s, s.n_pad, D, lane);
    __syncwarp();
    const int i = m0 + r;
    const int region_i = i < s.N ? wa_token(s, w.w_in, i).region : 0;
    float row_max = -infinity();
    for (int j = col0; j < s.N; j += 2) {
      const float x = wa_score(s, s_s[r * m.ld_s + j], args.table, head, i < s.N ? i : 0, j, region_i,
                               wa_token(s, w.w_in, j).region);
      s_s[r * m.ld_s + j] = x;
      row_max = fmaxf(row_max, x);
    }
    row_max = fmaxf(row_max, __shfl_xor_sync(0xffffffffu, row_max, 1));
    float sum = 0.f;
    for (int j = col0; j < s.n_pad; j += 2) {
      const float p = j < s.N ? __expf(s_s[r * m.ld_s + j] - row_max) : 0.f;
      sum += p;
      p_s[r * m.ld_p + j] = from_float<E>(p);
    }
    sum += __shfl_xor_sync(0xffffffffu, sum, 1);
    if (col0 == 0) {
      row_sum[r] = sum;
      if (i < s.N) args.lse[(wid * s.heads + head) * s.N + i] = row_max + __logf(sum);
    }
    __syncwarp();
    warp_strip_gemm<E, false, false, false>(p_s, m.ld_p, v_s, m.ld_x, o_s, m.ld_o, D, s.n_pad, lane);
    __syncwarp();
    for (int e = lane; e < kStrip * D; e += 32) {
      const int rr = e / D, d = e % D, t = m0 + rr;
      if (t >= s.N) continue;
      const WaToken tok = wa_token(s, w.w_in, t);
      if (tok.real)
        args.out[wa_row(s, w.image, tok.py, tok.px, C) + head * D + d] =
            from_float<T>(o_s[rr * m.ld_o + d] / row_sum[rr]);
    }
    __syncwarp();
  }
}

template <class T>
struct WaBwdArgs {
  fk::Ptr<const T> qkv, table, qkv_bias, out, grad_out;  // qkv_bias may be null
  fk::Ptr<const float> lse;
  fk::Ptr<T> dqkv;
  fk::Ptr<float> part;  // dq: dtable partials (splits, R, nH); dkv: dbias partials (chunks, 3C)
  WaShape shape;
  int windows_per_block;
};

// delta_i = sum_d dO[i, d] O[i, d] of a real query token (0 for a padded one).
template <class T>
__device__ __forceinline__ float wa_delta(const WaBwdArgs<T>& a, const WaWindow& w, int head, int t) {
  const WaShape& s = a.shape;
  if (t >= s.N) return 0.f;
  const WaToken tok = wa_token(s, w.w_in, t);
  if (!tok.real) return 0.f;
  const long long row = wa_row(s, w.image, tok.py, tok.px, s.C) + head * s.head_dim;
  float acc = 0.f;
  for (int d = 0; d < s.head_dim; ++d) acc += to_float(a.grad_out[row + d]) * to_float(a.out[row + d]);
  return acc;
}

template <class T>
__global__ void wa_bwd_dq_kernel(WaBwdArgs<T> args) {
  using E = typename WaStorage<T>::type;
  const WaShape& s = args.shape;
  const WaSmem m = wa_smem_layout(s, sizeof(E));
  FK_DYNAMIC_SHARED(unsigned char, dynamic_smem);
  const fk::Ptr<unsigned char> smem = align_shared<128>(dynamic_smem);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, warps = blockDim.x / 32;
  const int head = blockIdx.y, D = s.head_dim, C = s.C;
  const long long total = 1LL * s.B * s.n_win;
  const long long first = 1LL * blockIdx.x * args.windows_per_block;
  const long long last = first + args.windows_per_block < total ? first + args.windows_per_block : total;
  fk::Ptr<E> k_s = fk::ptr_cast<E>(smem + m.x0), v_s = fk::ptr_cast<E>(smem + m.x1);
  fk::Ptr<unsigned char> mine = smem + m.warp_base + warp * m.warp_bytes;
  fk::Ptr<E> q_s = fk::ptr_cast<E>(mine + m.a0), do_s = fk::ptr_cast<E>(mine + m.a1), p_s = fk::ptr_cast<E>(mine + m.p);
  fk::Ptr<float> s_s = fk::ptr_cast<float>(mine + m.s), tile = fk::ptr_cast<float>(mine + m.tile);
  fk::Ptr<float> o_s = fk::ptr_cast<float>(mine + m.o), delta = fk::ptr_cast<float>(mine + m.rowstat);
  fk::Ptr<float> table_acc = fk::ptr_cast<float>(mine + m.table);
  for (int r = lane; r < s.R; r += 32) table_acc[r] = 0.f;
  const int r = lane / 2, col0 = lane % 2;
  for (long long wid = first; wid < last; ++wid) {
    const WaWindow w = wa_window(s, wid);
    __syncthreads();  // the previous window's K, V are no longer read
    wa_load_rows(s, w, args.qkv, 3 * C, C + head * D, args.qkv_bias, k_s, m.ld_x, 0, s.n_pad, tid, blockDim.x);
    wa_load_rows(s, w, args.qkv, 3 * C, 2 * C + head * D, args.qkv_bias, v_s, m.ld_x, 0, s.n_pad, tid, blockDim.x);
    __syncthreads();
    for (int m0 = warp * kStrip; m0 < s.n_pad; m0 += warps * kStrip) {
      wa_load_rows(s, w, args.qkv, 3 * C, head * D, fk::Ptr<const T>(), q_s, m.ld_x, m0, kStrip, lane, 32);
      wa_load_rows(s, w, args.grad_out, C, head * D, fk::Ptr<const T>(), do_s, m.ld_x, m0, kStrip, lane, 32);
      if (lane < kStrip) delta[lane] = wa_delta(args, w, head, m0 + lane);
      __syncwarp();
      warp_strip_gemm<E, true, false, false>(q_s, m.ld_x, k_s, m.ld_x, s_s, m.ld_s, s.n_pad, D, lane);
      __syncwarp();
      const int i = m0 + r;
      const WaToken tok_i = wa_token(s, w.w_in, i < s.N ? i : 0);
      const bool live = i < s.N && tok_i.real;
      const float lse = live ? args.lse[(wid * s.heads + head) * s.N + i] : 0.f;
      for (int j = col0; j < s.n_pad; j += 2) {
        float p = 0.f;
        if (live && j < s.N)
          p = __expf(wa_score(s, s_s[r * m.ld_s + j], args.table, head, i, j, tok_i.region,
                              wa_token(s, w.w_in, j).region) - lse);
        s_s[r * m.ld_s + j] = p;
      }
      __syncwarp();
      for (int n0 = 0; n0 < s.n_pad; n0 += kStrip) {  // dP tile = dO V[n0:n0+16]ᵀ, then dS = P (dP - delta)
        warp_strip_gemm<E, true, false, false>(do_s, m.ld_x, v_s + n0 * m.ld_x, m.ld_x, tile, kStrip, kStrip, D, lane);
        __syncwarp();
        for (int e = lane; e < kStrip * kStrip; e += 32) {
          const int rr = e / kStrip, j = n0 + e % kStrip;
          const float ds = s_s[rr * m.ld_s + j] * (tile[e] - delta[rr]);
          s_s[rr * m.ld_s + j] = ds;
          p_s[rr * m.ld_p + j] = from_float<E>(ds);
        }
        __syncwarp();
      }
      warp_strip_gemm<E, false, false, false>(p_s, m.ld_p, k_s, m.ld_x, o_s, m.ld_o, D, s.n_pad, lane);
      // Table gradient of this strip: lane-owned offsets, rows in order.
      for (int rel = lane; rel < s.R; rel += 32) {
        const int dy = rel / (2 * s.ww - 1) - (s.wh - 1), dx = rel % (2 * s.ww - 1) - (s.ww - 1);
        float acc = table_acc[rel];
        for (int rr = 0; rr < kStrip && m0 + rr < s.N; ++rr) {
          const int yi = (m0 + rr) / s.ww, xi = (m0 + rr) % s.ww, yj = yi - dy, xj = xi - dx;
          if (yj >= 0 && yj < s.wh && xj >= 0 && xj < s.ww) acc += s_s[rr * m.ld_s + yj * s.ww + xj];
        }
        table_acc[rel] = acc;
      }
      __syncwarp();
      for (int e = lane; e < kStrip * D; e += 32) {
        const int rr = e / D, d = e % D, t = m0 + rr;
        if (t >= s.N) continue;
        const WaToken tok = wa_token(s, w.w_in, t);
        if (tok.real)
          args.dqkv[wa_row(s, w.image, tok.py, tok.px, 3 * C) + head * D + d] =
              from_float<T>(o_s[rr * m.ld_o + d] * s.scale);
      }
      __syncwarp();
    }
  }
  __syncthreads();
  for (int rel = tid; rel < s.R; rel += blockDim.x) {  // warps summed in order
    float acc = 0.f;
    for (int k = 0; k < warps; ++k)
      acc += fk::ptr_cast<float>(smem + m.warp_base + k * m.warp_bytes + m.table)[rel];
    args.part[(1LL * blockIdx.x * s.R + rel) * s.heads + head] = acc;
  }
}

template <class T>
__global__ void wa_bwd_dkv_kernel(WaBwdArgs<T> args) {
  using E = typename WaStorage<T>::type;
  const WaShape& s = args.shape;
  const WaSmem m = wa_smem_layout(s, sizeof(E));
  FK_DYNAMIC_SHARED(unsigned char, dynamic_smem);
  const fk::Ptr<unsigned char> smem = align_shared<128>(dynamic_smem);
  const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, warps = blockDim.x / 32;
  const int head = blockIdx.y, D = s.head_dim, C = s.C;
  const long long total = 1LL * s.B * s.n_win;
  const long long first = 1LL * blockIdx.x * args.windows_per_block;
  const long long last = first + args.windows_per_block < total ? first + args.windows_per_block : total;
  fk::Ptr<E> q_s = fk::ptr_cast<E>(smem + m.x0), do_s = fk::ptr_cast<E>(smem + m.x1);
  fk::Ptr<float> lse_s = fk::ptr_cast<float>(smem + m.stat0), delta_s = fk::ptr_cast<float>(smem + m.stat1);
  fk::Ptr<unsigned char> mine = smem + m.warp_base + warp * m.warp_bytes;
  fk::Ptr<E> k_s = fk::ptr_cast<E>(mine + m.a0), v_s = fk::ptr_cast<E>(mine + m.a1), p_s = fk::ptr_cast<E>(mine + m.p);
  fk::Ptr<float> s_s = fk::ptr_cast<float>(mine + m.s), tile = fk::ptr_cast<float>(mine + m.tile);
  fk::Ptr<float> o_s = fk::ptr_cast<float>(mine + m.o), dbias = fk::ptr_cast<float>(mine + m.dbias);
  for (int d = lane; d < 2 * D; d += 32) dbias[d] = 0.f;
  const int r = lane / 2, col0 = lane % 2;
  for (long long wid = first; wid < last; ++wid) {
    const WaWindow w = wa_window(s, wid);
    __syncthreads();  // the previous window's Q, dO, stats are no longer read
    wa_load_rows(s, w, args.qkv, 3 * C, head * D, fk::Ptr<const T>(), q_s, m.ld_x, 0, s.n_pad, tid, blockDim.x);
    wa_load_rows(s, w, args.grad_out, C, head * D, fk::Ptr<const T>(), do_s, m.ld_x, 0, s.n_pad, tid, blockDim.x);
    for (int i = tid; i < s.n_pad; i += blockDim.x) {
      const bool live = i < s.N && wa_token(s, w.w_in, i).real;
      lse_s[i] = live ? args.lse[(wid * s.heads + head) * s.N + i] : infinity();  // exp(x - inf) = 0
      delta_s[i] = wa_delta(args, w, head, i);
    }
    __syncthreads();
    for (int j0 = warp * kStrip; j0 < s.n_pad; j0 += warps * kStrip) {
      wa_load_rows(s, w, args.qkv, 3 * C, C + head * D, args.qkv_bias, k_s, m.ld_x, j0, kStrip, lane, 32);
      wa_load_rows(s, w, args.qkv, 3 * C, 2 * C + head * D, args.qkv_bias, v_s, m.ld_x, j0, kStrip, lane, 32);
      __syncwarp();
      // Sᵀ strip [key][query]
      warp_strip_gemm<E, true, false, false>(k_s, m.ld_x, q_s, m.ld_x, s_s, m.ld_s, s.n_pad, D, lane);
      __syncwarp();
      const int j = j0 + r;
      const int region_j = wa_token(s, w.w_in, j < s.N ? j : 0).region;
      for (int i = col0; i < s.n_pad; i += 2) {
        float p = 0.f;
        if (j < s.N && i < s.N)
          p = __expf(wa_score(s, s_s[r * m.ld_s + i], args.table, head, i, j, wa_token(s, w.w_in, i).region,
                              region_j) - lse_s[i]);
        s_s[r * m.ld_s + i] = p;
        p_s[r * m.ld_p + i] = from_float<E>(p);
      }
      __syncwarp();
      warp_strip_gemm<E, false, false, false>(p_s, m.ld_p, do_s, m.ld_x, o_s, m.ld_o, D, s.n_pad, lane);  // dV = Pᵀ dO
      __syncwarp();
      for (int e = lane; e < kStrip * D; e += 32) {  // write dV (real keys), sum padded keys' dV
        const int rr = e / D, d = e % D, t = j0 + rr;
        if (t >= s.N) continue;
        const WaToken tok = wa_token(s, w.w_in, t);
        if (tok.real)
          args.dqkv[wa_row(s, w.image, tok.py, tok.px, 3 * C) + 2 * C + head * D + d] =
              from_float<T>(o_s[rr * m.ld_o + d]);
      }
      for (int d = lane; d < D; d += 32)  // a lane per channel, rows in order
        for (int rr = 0; rr < kStrip && j0 + rr < s.N; ++rr)
          if (!wa_token(s, w.w_in, j0 + rr).real) dbias[D + d] += o_s[rr * m.ld_o + d];
      __syncwarp();
      for (int i0 = 0; i0 < s.n_pad; i0 += kStrip) {  // dPᵀ tile = V dO[i0:i0+16]ᵀ, dSᵀ = Pᵀ (dPᵀ - delta)
        warp_strip_gemm<E, true, false, false>(v_s, m.ld_x, do_s + i0 * m.ld_x, m.ld_x, tile, kStrip, kStrip, D, lane);
        __syncwarp();
        for (int e = lane; e < kStrip * kStrip; e += 32) {
          const int rr = e / kStrip, i = i0 + e % kStrip;
          const float ds = s_s[rr * m.ld_s + i] * (tile[e] - delta_s[i]);
          s_s[rr * m.ld_s + i] = ds;
          p_s[rr * m.ld_p + i] = from_float<E>(ds);
        }
        __syncwarp();
      }
      // dK = dSᵀ Q (·scale)
      warp_strip_gemm<E, false, false, false>(p_s, m.ld_p, q_s, m.ld_x, o_s, m.ld_o, D, s.n_pad, lane);
      __syncwarp();
      for (int e = lane; e < kStrip * D; e += 32) {
        const int rr = e / D, d = e % D, t = j0 + rr;
        if (t >= s.N) continue;
        const WaToken tok = wa_token(s, w.w_in, t);
        if (tok.real)
          args.dqkv[wa_row(s, w.image, tok.py, tok.px, 3 * C) + C + head * D + d] =
              from_float<T>(o_s[rr * m.ld_o + d] * s.scale);
      }
      for (int d = lane; d < D; d += 32)
        for (int rr = 0; rr < kStrip && j0 + rr < s.N; ++rr)
          if (!wa_token(s, w.w_in, j0 + rr).real) dbias[d] += o_s[rr * m.ld_o + d] * s.scale;
      __syncwarp();
    }
  }
  __syncthreads();
  for (int e = tid; e < 3 * D; e += blockDim.x) {  // (q: 0 | k | v) channels of this head, warps in order
    const int part = e / D, d = e % D;
    float acc = 0.f;
    if (part > 0)
      for (int k = 0; k < warps; ++k)
        acc += fk::ptr_cast<float>(smem + m.warp_base + k * m.warp_bytes + m.dbias)[(part - 1) * D + d];
    args.part[1LL * blockIdx.x * 3 * C + part * C + head * D + d] = acc;
  }
}

// out[e] = sum_{p < parts} part[p * n + e], in order of p (fp32).
__global__ void wa_fold_kernel(fk::Ptr<const float> part, fk::Ptr<float> out, int parts, long long n) {
  const long long e = 1LL * blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= n) return;
  float acc = 0.f;
  for (int p = 0; p < parts; ++p) acc += part[p * n + e];
  out[e] = acc;
}

#endif  // FK_DEVICE_CODE

}  // namespace window_attention
}  // namespace fiber_kernels
