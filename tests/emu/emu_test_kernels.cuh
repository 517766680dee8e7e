// Test-only CUDA kernels for the host emulation (tests/emu): small kernels whose right answer is
// known, each exercising one feature of the emulator. The same source compiles with nvcc
// (emu_test_kernels.cu, compile tests) and with g++ under the emulator (emu_test_emu.cpp).
// Not shipped: nothing here is part of fiber_kernels._C.
#pragma once

#include "fiber_kernels/portable.cuh"

namespace fk_test {

constexpr unsigned kFullMask = 0xFFFFFFFFu;

// ---- block reduction in shared memory ---------------------------------------------------------------
// One partial sum per block of blockDim.x (a power of two <= 256) elements. kSkipBarrier leaves out the
// barrier between the loads into shared memory and the tree: a real race, which the emulator's
// seeded thread order must expose.
template <bool kSkipBarrier>
__device__ void block_sum_body(fk::Ptr<const float> x, fk::Ptr<float> out, int n) {
  FK_SHARED(float, partial, 256);
  const int tid = static_cast<int>(threadIdx.x);
  const int i = static_cast<int>(blockIdx.x * blockDim.x) + tid;
  partial[tid] = i < n ? x[i] : 0.0f;
  if (!kSkipBarrier) __syncthreads();
  for (int stride = static_cast<int>(blockDim.x) / 2; stride > 0; stride /= 2) {
    if (tid < stride) partial[tid] += partial[tid + stride];
    __syncthreads();
  }
  if (tid == 0) out[blockIdx.x] = partial[0];
}

__global__ void block_sum_kernel(fk::Ptr<const float> x, fk::Ptr<float> out, int n) { block_sum_body<false>(x, out, n); }

__global__ void block_sum_racy_kernel(fk::Ptr<const float> x, fk::Ptr<float> out, int n) { block_sum_body<true>(x, out, n); }

// The same tree over dynamic shared memory (blockDim.x floats, given at launch).
__global__ void block_sum_dynamic_kernel(fk::Ptr<const float> x, fk::Ptr<float> out, int n) {
  FK_DYNAMIC_SHARED(float, partial);
  const int tid = static_cast<int>(threadIdx.x);
  const int i = static_cast<int>(blockIdx.x * blockDim.x) + tid;
  partial[tid] = i < n ? x[i] : 0.0f;
  __syncthreads();
  for (int stride = static_cast<int>(blockDim.x) / 2; stride > 0; stride /= 2) {
    if (tid < stride) partial[tid] += partial[tid + stride];
    __syncthreads();
  }
  if (tid == 0) out[blockIdx.x] = partial[0];
}

// ---- warp shuffles -----------------------------------------------------------------------------------
__device__ __forceinline__ float warp_sum(float v) {
  for (int offset = 16; offset > 0; offset /= 2) v += __shfl_down_sync(kFullMask, v, offset);
  return v;  // lane 0 holds the warp's sum
}

// Two-level block sum: shuffles inside each warp, one partial per warp in shared memory, then warp 0.
__global__ void block_sum_shfl_kernel(fk::Ptr<const float> x, fk::Ptr<float> out, int n) {
  FK_SHARED(float, warp_partials, 32);
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid % 32, warp = tid / 32, warps = static_cast<int>(blockDim.x) / 32;
  const int i = static_cast<int>(blockIdx.x * blockDim.x) + tid;
  float v = warp_sum(i < n ? x[i] : 0.0f);
  if (lane == 0) warp_partials[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = warp_sum(lane < warps ? warp_partials[lane] : 0.0f);
    if (lane == 0) out[blockIdx.x] = v;
  }
}

// Every shuffle and vote, 8 results per thread: xor-butterfly sum, shfl_down sum (lane 0), inclusive
// shfl_up scan, broadcast of lane 3, ballot(v > 0), any(v > 5), all(v > -100), xor sum within 8 lanes.
__global__ void warp_ops_kernel(fk::Ptr<const int> x, fk::Ptr<int> out) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const int v = x[i];
  int butterfly = v, down = v, scan = v, group = v;
  for (int offset = 16; offset > 0; offset /= 2) butterfly += __shfl_xor_sync(kFullMask, butterfly, offset);
  for (int offset = 16; offset > 0; offset /= 2) down += __shfl_down_sync(kFullMask, down, offset);
  for (int offset = 1; offset < 32; offset *= 2) {
    int up = __shfl_up_sync(kFullMask, scan, offset);
    if (lane >= offset) scan += up;
  }
  for (int offset = 4; offset > 0; offset /= 2) group += __shfl_xor_sync(kFullMask, group, offset, 8);
  fk::Ptr<int> o = out + 8 * i;
  o[0] = butterfly;
  o[1] = down;
  o[2] = scan;
  o[3] = __shfl_sync(kFullMask, v, 3);
  o[4] = static_cast<int>(__ballot_sync(kFullMask, v > 0));
  o[5] = __any_sync(kFullMask, v > 5);
  o[6] = __all_sync(kFullMask, v > -100);
  o[7] = group;
}

// ---- atomics from many blocks ------------------------------------------------------------------------
// sums[0] += x (float), sums[1] += x (double as float bits elsewhere), hist[x mod bins] += 1, extrema,
// a ticket per element (atomicAdd's return value must be unique), and a float max by atomicCAS.
__global__ void atomics_kernel(fk::Ptr<const int> x, int n, fk::Ptr<float> fsum, fk::Ptr<double> dsum,
                               fk::Ptr<int> hist, int bins, fk::Ptr<int> extrema, fk::Ptr<unsigned int> next_ticket,
                               fk::Ptr<int> owner, fk::Ptr<float> fmax) {
  const int stride = static_cast<int>(gridDim.x * blockDim.x);
  for (int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x); i < n; i += stride) {
    const int v = x[i];
    atomicAdd(fsum, static_cast<float>(v));
    atomicAdd(dsum, static_cast<double>(v));
    atomicAdd(hist + ((v % bins) + bins) % bins, 1);
    atomicMax(extrema, v);
    atomicMin(extrema + 1, v);
    const unsigned ticket = atomicAdd(next_ticket, 1u);
    owner[ticket] = i;
    // float max through a CAS loop on the bits (the usual pattern; there is no float atomicMax)
    fk::Ptr<int> bits = fk::ptr_cast<int>(fmax);
    const float f = 0.5f * static_cast<float>(v);
    int old = *bits;
    while (__int_as_float(old) < f) {
      const int assumed = old;
      old = atomicCAS(bits, assumed, __float_as_int(f));
      if (old == assumed) break;
    }
  }
}

// ---- tensor cores --------------------------------------------------------------------------------------
// One 16x16x16 tile per block (one warp): d = a b + c, a staged through shared memory, b row- or
// column-major, d stored row- or column-major. a, b: fp16; c, d: fp32.
__global__ void wmma_tile_kernel(fk::Ptr<const __half> a, fk::Ptr<const __half> b, fk::Ptr<const float> c,
                                 fk::Ptr<float> d, int b_col_major, int d_col_major) {
  using namespace nvcuda;
  FK_SHARED_ALIGNED(__half, a_tile, 256, 32);
  const int tile = static_cast<int>(blockIdx.x) * 256;
  for (int i = static_cast<int>(threadIdx.x); i < 256; i += static_cast<int>(blockDim.x)) a_tile[i] = a[tile + i];
  __syncthreads();
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::load_matrix_sync(fa, a_tile, 16);
  wmma::load_matrix_sync(acc, c + tile, 16, wmma::mem_row_major);
  if (b_col_major) {
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> fb;
    wmma::load_matrix_sync(fb, b + tile, 16);
    wmma::mma_sync(acc, fa, fb, acc);
  } else {
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::row_major> fb;
    wmma::load_matrix_sync(fb, b + tile, 16);
    wmma::mma_sync(acc, fa, fb, acc);
  }
  wmma::store_matrix_sync(d + tile, acc, 16, d_col_major ? wmma::mem_col_major : wmma::mem_row_major);
}

// ---- faults the emulator must report ---------------------------------------------------------------------
// out[i] = x[i + shift]: shift = 1 reads one element past the end of x.
__global__ void shifted_read_kernel(fk::Ptr<const float> x, fk::Ptr<float> out, int n, int shift) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i < n) out[i] = x[i + shift];
}

// The same through a 64-element shared tile (blockDim.x = 64): shift = 1 reads tile[64].
__global__ void shared_shifted_read_kernel(fk::Ptr<const float> x, fk::Ptr<float> out, int shift) {
  FK_SHARED(float, tile, 64);
  const int tid = static_cast<int>(threadIdx.x);
  const int i = static_cast<int>(blockIdx.x * blockDim.x) + tid;
  tile[tid] = x[i];
  __syncthreads();
  out[i] = tile[tid + shift];
}

// A barrier only threads below `active` reach: a deadlock unless active >= blockDim.x.
__global__ void divergent_barrier_kernel(fk::Ptr<float> out, int active) {
  const int tid = static_cast<int>(threadIdx.x);
  if (tid < active) __syncthreads();
  out[blockIdx.x * blockDim.x + tid] = 1.0f;
}

// A full-mask shuffle only lanes below `active` reach: a deadlock unless active >= 32.
__global__ void divergent_shuffle_kernel(fk::Ptr<float> out, int active) {
  const int tid = static_cast<int>(threadIdx.x);
  float v = static_cast<float>(tid);
  if (tid % 32 < active) v = __shfl_xor_sync(kFullMask, v, 1);
  out[blockIdx.x * blockDim.x + tid] = v;
}

// ---- indices, barrier variants, fp16/bf16 and math ----------------------------------------------------
// Per thread: (threadIdx packed, blockIdx packed, blockDim volume, gridDim volume, __syncthreads_count
// of even x, __syncthreads_or of x == 1, __syncthreads_and of x < 1024), at the global linear id.
__global__ void index_kernel(fk::Ptr<int> out) {
  const int threads = static_cast<int>(blockDim.x * blockDim.y * blockDim.z);
  const int block = static_cast<int>(blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z));
  const int thread = static_cast<int>(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
  fk::Ptr<int> o = out + 7 * (block * threads + thread);
  o[0] = static_cast<int>(threadIdx.x + 10 * threadIdx.y + 100 * threadIdx.z);
  o[1] = static_cast<int>(blockIdx.x + 10 * blockIdx.y + 100 * blockIdx.z);
  o[2] = threads;
  o[3] = static_cast<int>(gridDim.x * gridDim.y * gridDim.z);
  o[4] = __syncthreads_count(threadIdx.x % 2 == 0);
  o[5] = __syncthreads_or(threadIdx.x == 1);
  o[6] = __syncthreads_and(threadIdx.x < 1024);
}

// fp16/bf16 round trips and fp16 arithmetic: h = half(x), bf = bf16(x), back to float; per element
// of (a, b) the fp16 sum, difference, product, quotient and fma(a, b, a).
__global__ void convert_kernel(fk::Ptr<const float> x, fk::Ptr<__half> h, fk::Ptr<__nv_bfloat16> bf,
                               fk::Ptr<float> h_back, fk::Ptr<float> bf_back, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i >= n) return;
  h[i] = __float2half(x[i]);
  bf[i] = __float2bfloat16(x[i]);
  h_back[i] = __half2float(h[i]);
  bf_back[i] = __bfloat162float(bf[i]);
}

__global__ void half_math_kernel(fk::Ptr<const __half> a, fk::Ptr<const __half> b, fk::Ptr<__half> out, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i >= n) return;
  out[5 * i + 0] = __hadd(a[i], b[i]);
  out[5 * i + 1] = __hsub(a[i], b[i]);
  out[5 * i + 2] = __hmul(a[i], b[i]);
  out[5 * i + 3] = __hdiv(a[i], b[i]);
  out[5 * i + 4] = __hfma(a[i], b[i], a[i]);
}

// out = (__expf(x), rsqrtf(|x| + 1), __fdividef(x, 3), fmaxf(x, 0), __saturatef(x), tanhf(x)) per element.
__global__ void math_kernel(fk::Ptr<const float> x, fk::Ptr<float> out, int n) {
  const int i = static_cast<int>(blockIdx.x * blockDim.x + threadIdx.x);
  if (i >= n) return;
  const float v = x[i];
  out[6 * i + 0] = __expf(v);
  out[6 * i + 1] = rsqrtf(fabsf(v) + 1.0f);
  out[6 * i + 2] = __fdividef(v, 3.0f);
  out[6 * i + 3] = fmaxf(v, 0.0f);
  out[6 * i + 4] = __saturatef(v);
  out[6 * i + 5] = tanhf(v);
}

}  // namespace fk_test
