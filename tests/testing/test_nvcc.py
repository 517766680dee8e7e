"""nvcc / NVRTC resource reports of CUDA C++ kernels for sm70, sm80 and sm90."""

from pathlib import Path

import pytest
from fiber_kernels.testing import NoDeviceCodeError, extension_report, nvcc_report, nvcc_unavailable_reason

pytestmark = pytest.mark.compile

KERNELS = r"""
#include <cuda_fp16.h>

// One element per thread: a handful of registers, no local memory.
__global__ void axpy_kernel(float alpha, const float* __restrict__ x, float* __restrict__ y, int n) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = alpha * x[i] + y[i];
}

// A per-thread array indexed at run time cannot live in registers: it goes to the stack (local memory).
__global__ void local_array_kernel(const float* __restrict__ x, const int* __restrict__ index,
                                   float* __restrict__ y, int n) {
  float buffer[LOCAL_SIZE];
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  for (int j = 0; j < LOCAL_SIZE; ++j) buffer[j] = x[(i + j) % n];
  y[i] = buffer[index[i] % LOCAL_SIZE];
}
"""


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cuda") / "kernels.cu"
    path.write_text(KERNELS)
    return path


def _by_name(reports: list, part: str):  # noqa: ANN202
    (report,) = [r for r in reports if part in r.name]
    return report


@pytest.mark.parametrize("arch", [70, 80, 90])
def test_small_kernel_fits_and_local_array_spills(source: Path, arch: int) -> None:
    reason = nvcc_unavailable_reason(arch)
    if reason:
        pytest.skip(reason)
    reports = nvcc_report(source, arch, defines={"LOCAL_SIZE": 256})
    axpy = _by_name(reports, "axpy_kernel")
    assert axpy.arch == arch and axpy.registers > 0
    assert not axpy.spills and axpy.stack_bytes == 0 and axpy.local_bytes == 0
    local = _by_name(reports, "local_array_kernel")
    assert local.spills and local.stack_bytes >= 256 * 4
    assert axpy.compiler == ("nvrtc" if arch == 70 else "nvcc")


def test_wmma_kernel_compiles_for_v100(tmp_path: Path) -> None:
    """The V100 path: a tensor-core (WMMA) kernel compiled for sm70 by NVRTC 12 (mma.h needs the
    crt/ headers of the nvidia-cuda-nvcc-cu12 wheel)."""
    reason = nvcc_unavailable_reason(70)
    if reason:
        pytest.skip(reason)
    path = tmp_path / "wmma.cu"
    path.write_text(r"""
#include <mma.h>
#include <cuda_fp16.h>
using namespace nvcuda;
__global__ void wmma_tile_kernel(const __half* a, const __half* b, float* c) {
  wmma::fragment<wmma::matrix_a, 16, 16, 16, __half, wmma::row_major> fa;
  wmma::fragment<wmma::matrix_b, 16, 16, 16, __half, wmma::col_major> fb;
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc;
  wmma::fill_fragment(fc, 0.0f);
  wmma::load_matrix_sync(fa, a, 16);
  wmma::load_matrix_sync(fb, b, 16);
  wmma::mma_sync(fc, fa, fb, fc);
  wmma::store_matrix_sync(c, fc, 16, wmma::mem_row_major);
}
""")
    (report,) = nvcc_report(path, 70)
    assert "wmma_tile_kernel" in report.name and report.registers > 0 and not report.spills


def test_nvrtc_and_nvcc_agree_on_sm80(source: Path) -> None:
    for compiler in ("nvcc", "nvrtc"):
        reason = nvcc_unavailable_reason(80, compiler=compiler)
        if reason:
            pytest.skip(reason)
    by_nvcc = nvcc_report(source, 80, defines={"LOCAL_SIZE": 64}, compiler="nvcc")
    by_nvrtc = nvcc_report(source, 80, defines={"LOCAL_SIZE": 64}, compiler="nvrtc")
    assert {r.name: r.stack_bytes for r in by_nvcc} == {r.name: r.stack_bytes for r in by_nvrtc}


def test_compile_error_carries_the_log(source: Path, tmp_path: Path) -> None:
    if nvcc_unavailable_reason(80):
        pytest.skip(nvcc_unavailable_reason(80))
    broken = tmp_path / "broken.cu"
    broken.write_text("__global__ void k(float* x) { x[0] = undefined_name; }\n")
    with pytest.raises(RuntimeError, match="undefined_name"):
        nvcc_report(broken, 80)


def test_sm70_reason_names_the_wheel_when_only_nvcc_is_asked() -> None:
    reason = nvcc_unavailable_reason(70, compiler="nvcc")
    assert reason is not None and "sm_70" in reason


def test_cpu_only_extension_is_reported_clearly() -> None:
    from fiber_kernels import _extension

    if not _extension.is_built():
        with pytest.raises(FileNotFoundError, match="fiber_kernels._C is not built"):
            extension_report()
    elif _extension.build_info()["with_cuda"]:
        assert all(r.arch is not None and r.registers > 0 for r in extension_report())
    else:
        with pytest.raises(NoDeviceCodeError, match="contains no GPU code: it is a CPU-only build"):
            extension_report()


@pytest.mark.parametrize(("call", "error", "pattern"), [
    (lambda src: nvcc_report(3, 80), TypeError, "source must be a path to a .cu file"),
    (lambda src: nvcc_report("/nonexistent/k.cu", 80), ValueError, "source must be an existing .cu file"),
    (lambda src: nvcc_report(src, 72), ValueError, "arch must be one of"),
    (lambda src: nvcc_report(src, 80, include_dirs="/usr/include"), TypeError, "include_dirs must be a sequence"),
    (lambda src: nvcc_report(src, 80, extra_flags="-O3"), TypeError, "extra_flags must be a sequence of str"),
    (lambda src: nvcc_report(src, 80, defines=["A"]), TypeError, "defines must be a mapping"),
    (lambda src: nvcc_report(src, 80, defines={"1A": 2}), ValueError, "defines keys must be C identifiers"),
    (lambda src: nvcc_report(src, 80, compiler="clang"), ValueError, "compiler must be one of"),
    (lambda src: nvcc_unavailable_reason("80"), ValueError, "arch must be one of"),
    (lambda src: nvcc_unavailable_reason(80, compiler="gcc"), ValueError, "compiler must be one of"),
    (lambda src: extension_report(5), TypeError, "path must be a path to the extension's .so"),
    (lambda src: extension_report("/nonexistent/_C.so"), FileNotFoundError, "path must be an existing file"),
])
def test_bad_arguments(source: Path, call, error: type, pattern: str) -> None:  # noqa: ANN001
    with pytest.raises(error, match=pattern):
        call(source)
