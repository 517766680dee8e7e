// Test-only kernels with deliberate faults (or subtle legal patterns) that the emulator must report
// (or run). Compiled by nvcc in the compile tests (emu_test_kernels.cu) and run by the torch-free
// self-test (emu_selftest.cpp).
#pragma once

#include "fiber_kernels/portable.cuh"

namespace fk_test {

// out[i] = sum of the float4 at x + 4 * i + offset: offset 1 is a misaligned 16-byte load.
__global__ void vector_load_kernel(fk::Ptr<const float> x, fk::Ptr<float> out, int offset) {
  const int i = static_cast<int>(threadIdx.x);
  const float4 v = fk::ptr_cast<const float4>(x + 4 * i + offset)[0];
  out[i] = v.x + v.y + v.z + v.w;
}

// Odd and even threads reach different __syncthreads calls: undefined on a GPU.
__global__ void split_barrier_kernel(fk::Ptr<int> out) {
  const int tid = static_cast<int>(threadIdx.x);
  if (tid % 2) {
    __syncthreads();
  } else {
    __syncthreads();
  }
  out[tid] = tid;
}

// Half the warp shuffles while the other half votes, with the same full mask.
__global__ void mixed_collectives_kernel(fk::Ptr<int> out) {
  const int tid = static_cast<int>(threadIdx.x);
  int v = tid;
  if (tid < 16)
    v = __shfl_xor_sync(0xFFFFFFFFu, v, 1);
  else
    v = static_cast<int>(__ballot_sync(0xFFFFFFFFu, v > 20));
  out[tid] = v;
}

// Two half-warps shuffle independently, each with its own mask (legal): lane l reads lane
// (l + 1) % 16 of its half. bad = 1 makes the low half read from the high half: outside its mask.
__global__ void half_warp_shuffle_kernel(fk::Ptr<int> out, int bad) {
  const int lane = static_cast<int>(threadIdx.x) % 32;
  const unsigned mask = lane < 16 ? 0x0000FFFFu : 0xFFFF0000u;
  const int src = bad && lane < 16 ? lane + 16 : (lane & 16) + (lane + 1) % 16;
  out[threadIdx.x] = __shfl_sync(mask, lane * 10, src);
}

// Neighbour exchange through shared memory inside one warp; __syncwarp orders it (sync = 1).
__global__ void warp_exchange_kernel(fk::Ptr<int> out, int sync) {
  FK_SHARED(int, slots, 32);
  const int lane = static_cast<int>(threadIdx.x);
  slots[lane] = lane * 3;
  if (sync) __syncwarp();
  out[lane] = slots[(lane + 1) % 32];
}

// wmma load from a shared tile at `offset` halves: offset 8 (16 bytes) breaks the 256-bit alignment.
__global__ void wmma_offset_kernel(fk::Ptr<float> out, int offset) {
  using namespace nvcuda;
  FK_SHARED_ALIGNED(__half, tile, 512, 32);
  for (int i = static_cast<int>(threadIdx.x); i < 512; i += 32) tile[i] = __float2half(1.0f);
  __syncwarp();
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> a;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> b;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
  wmma::fill_fragment(acc, 0.0f);
  wmma::load_matrix_sync(a, tile + offset, 16);
  wmma::load_matrix_sync(b, tile + offset, 16);
  wmma::mma_sync(acc, a, b, acc);
  wmma::store_matrix_sync(out, acc, 16, wmma::mem_row_major);
}

}  // namespace fk_test

namespace fk_test {

// The last thread publishes data[0] = 42 and raises a flag; thread 0 spins on the flag with
// atomicCAS, then reads the data (legal within a block on sm70+, whose threads make independent
// progress). Launched with wait_for_block = 1, thread 0 of block 0 waits for a flag only block 1
// raises: blocks are not guaranteed to run concurrently, and the emulator reports the endless spin.
__global__ void handoff_kernel(fk::Ptr<int> flag, fk::Ptr<int> data, fk::Ptr<int> out, int wait_for_block) {
  const bool publisher = threadIdx.x == blockDim.x - 1 && blockIdx.x == (wait_for_block ? 1u : 0u);
  if (publisher) {
    data[0] = 42;
    __threadfence();
    atomicExch(flag, 1);
  }
  if (threadIdx.x == 0 && blockIdx.x == 0) {
    while (atomicCAS(flag, 1, 1) != 1) {
    }
    __threadfence();
    out[0] = data[0];
  }
}

}  // namespace fk_test

namespace fk_test {

// A shared scalar counted up by every thread of the block: out[block] = threads * scale[0].
__global__ void shared_counter_kernel(fk::Ptr<const int> scale, fk::Ptr<int> out) {
  FK_SHARED_VAR(int, count);
  if (threadIdx.x == 0) count = 0;
  __syncthreads();
  atomicAdd(&count, 1);
  __syncthreads();
  if (threadIdx.x == 0) out[blockIdx.x] = count * __ldg(scale);
}

}  // namespace fk_test

namespace fk_test {

// Reads a shared array before any thread wrote it, then writes it: every block, the first included,
// must read the emulator's poison (0xFFFFFFFF = -1), never a previous block's values.
__global__ void uninitialised_shared_kernel(fk::Ptr<int> out) {
  FK_SHARED(int, slots, 32);
  const int tid = static_cast<int>(threadIdx.x);
  out[blockIdx.x * blockDim.x + tid] = slots[tid];
  __syncthreads();
  slots[tid] = 7;
}

}  // namespace fk_test
