// The test kernels of tests/emu compiled by nvcc (sm80/sm90) or NVRTC 12 (sm70) in the compile
// tests, so the emulated source is one a GPU compiler accepts. Non-template __global__ kernels are
// all emitted from the header; nothing else is needed here.
#include "emu_test_kernels.cuh"
#include "emu_fault_kernels.cuh"
