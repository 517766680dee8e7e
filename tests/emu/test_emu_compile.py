"""The emulated test kernels are a source GPU compilers accept: nvcc 13 for sm80/sm90, NVRTC 12 for sm70.

Compiled with the ``__CUDA_NO_HALF_*`` macros torch's CUDAExtension gives nvcc (and emu.build gives
g++), so the source checked here is the one the emulator ran. The static shared memory nvcc reports
must also be what the kernels declare through FK_SHARED (the emulator allocates the same bytes).
"""

import importlib.util
import os

import pytest
from fiber_kernels.testing import emu, nvcc_report, nvcc_unavailable_reason

SOURCE = emu.REPO_ROOT / "tests" / "emu" / "emu_test_kernels.cu"
KERNELS = ["block_sum_kernel", "block_sum_racy_kernel", "block_sum_dynamic_kernel", "block_sum_shfl_kernel",
           "warp_ops_kernel", "atomics_kernel", "wmma_tile_kernel", "shifted_read_kernel",
           "shared_shifted_read_kernel", "divergent_barrier_kernel", "divergent_shuffle_kernel", "index_kernel",
           "convert_kernel", "half_math_kernel", "math_kernel",
           # emu_fault_kernels.cuh
           "vector_load_kernel", "split_barrier_kernel", "mixed_collectives_kernel", "half_warp_shuffle_kernel",
           "warp_exchange_kernel", "wmma_offset_kernel", "handoff_kernel",
           "shared_counter_kernel", "uninitialised_shared_kernel"]


def crt_include_dir() -> str | None:
    """NVRTC 12 (sm70) finds cuda_fp16.h in the runtime wheel, but mma.h there includes crt/mma.h,
    which only the nvidia-cuda-nvcc-cu12 wheel ships: its include/ folder, if installed."""
    spec = importlib.util.find_spec("nvidia.cuda_nvcc")
    for root in (spec.submodule_search_locations or []) if spec else []:
        if os.path.isfile(os.path.join(root, "include", "crt", "mma.h")):
            return os.path.join(root, "include")
    return None


@pytest.mark.compile
@pytest.mark.parametrize("arch", [70, 80, 90])
def test_emulated_kernels_compile_for_the_gpu(arch):
    reason = nvcc_unavailable_reason(arch)
    if reason:
        pytest.skip(reason)
    include_dirs = list(emu.CSRC_INCLUDE_DIRS)
    if nvcc_unavailable_reason(arch, compiler="nvcc"):  # NVRTC 12 will compile it
        if crt_include_dir() is None:
            pytest.skip("NVRTC 12 needs crt/mma.h for wmma: pip install nvidia-cuda-nvcc-cu12")
        include_dirs.append(crt_include_dir())
    defines = {flag[2:]: None for flag in emu.compile_flags() if flag.startswith("-D__CUDA_NO_")}
    reports = {r.name: r for r in nvcc_report(SOURCE, arch, include_dirs=include_dirs, defines=defines)}

    def report(kernel: str):
        matches = [r for name, r in reports.items() if f"{len(kernel)}{kernel}E" in name]
        assert len(matches) == 1, f"{kernel} not (uniquely) in {sorted(reports)}"
        return matches[0]

    for kernel in KERNELS:
        assert not report(kernel).spills, f"{kernel} spills on sm_{arch}"
    # sm90 reserves 1 KiB of shared memory per block: compare with a kernel that declares none.
    base = report("shifted_read_kernel").shared_bytes
    assert report("block_sum_kernel").shared_bytes - base == 256 * 4       # FK_SHARED(float, partial, 256)
    assert report("block_sum_shfl_kernel").shared_bytes - base == 32 * 4   # FK_SHARED(float, warp_partials, 32)
    assert report("wmma_tile_kernel").shared_bytes - base == 256 * 2       # FK_SHARED_ALIGNED(__half, a_tile, 256, 32)
    assert report("block_sum_dynamic_kernel").shared_bytes == base         # dynamic: sized at launch
