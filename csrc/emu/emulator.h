// The host emulation of CUDA, in one include (csrc/include/fiber_kernels/portable.cuh includes it when
// FIBER_KERNELS_EMU is defined). In a binding, include torch first, then this: the CUDA qualifier
// macros defined here must not reach torch's own headers.
#pragma once

#include "emu/runtime.h"

// CUDA's qualifiers mean nothing on the host.
#define __global__
#define __device__
#define __host__
#define __constant__
#define __forceinline__ inline
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)

#include "emu/fp16.h"
#include "emu/memory.h"
#include "emu/builtins.h"
#include "emu/wmma.h"
