"""The csrc/ cross-attention kernels compile for the GPU: nvcc 13 for sm80 (A100) and sm90 (H100), NVRTC 12
for sm70 (V100), every kernel the launchers can pick (fp16 / fp32 / bf16 x D 32 / 64 / 128), with no
spills, registers reported, and the static shared memory plus the launchers' dynamic shared memory
within the card's per-block limit; the gated-linear matmul (static shared memory only) likewise. The
fp16 kernels use tensor cores (wmma.mma.sync in the PTX), the fp32 and bf16 ones do not.

The translation unit is tests/cross_attention/cross_attention_kernels_nvcc.cu (setup.py compiles every
.cu under csrc/ into _C, so the kernel-only instantiation lives here), compiled with torch's
``__CUDA_NO_HALF*`` macros like _C and the emulation.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess

import pytest
import torch
from fiber_kernels.cross_attention import cuda
from fiber_kernels.testing import CARD_LIMITS, emu, nvcc_report, nvcc_unavailable_reason

SOURCE = emu.REPO_ROOT / "tests" / "cross_attention" / "cross_attention_kernels_nvcc.cu"
CARDS = {70: "V100", 80: "A100", 90: "H100"}
DTYPES = {"6__half": torch.float16, "f": torch.float32, "13__nv_bfloat16": torch.bfloat16}
KERNELS = ("cross_attention_fwd_kernel", "cross_attention_bwd_dq_kernel", "cross_attention_bwd_dkdv_kernel")
HEAD_DIMS = cuda.LIMITS.head_dims  # every head dim the launchers take (tests/test_limits.py: the C++ kHeadDims)
DEFINES = {flag[2:]: None for flag in emu.compile_flags() if flag.startswith("-D__CUDA_NO_")}


def crt_include_dir() -> str | None:
    """NVRTC 12 needs crt/mma.h for wmma, shipped only by the nvidia-cuda-nvcc-cu12 wheel: its include/."""
    spec = importlib.util.find_spec("nvidia.cuda_nvcc")
    for root in (spec.submodule_search_locations or []) if spec else []:
        if os.path.isfile(os.path.join(root, "include", "crt", "mma.h")):
            return os.path.join(root, "include")
    return None


def mangled(kernel: str, type_code: str, head_dim: int | None) -> str:
    """Itanium mangling of fiber_kernels::cross_attention::<kernel><T[, D]>."""
    args = f"I{type_code}Li{head_dim}EE" if head_dim is not None else f"I{type_code}EE"
    return f"_ZN13fiber_kernels15cross_attention{len(kernel)}{kernel}{args}"


@pytest.mark.compile
@pytest.mark.parametrize("arch", [70, 80, 90])
def test_kernels_compile_without_spills_within_the_shared_memory_limit(ops, arch):
    reason = nvcc_unavailable_reason(arch)
    if reason:
        pytest.skip(reason)
    include_dirs = list(emu.CSRC_INCLUDE_DIRS)
    if nvcc_unavailable_reason(arch, compiler="nvcc"):  # NVRTC 12 compiles sm70
        if crt_include_dir() is None:
            pytest.skip("NVRTC 12 needs crt/mma.h for wmma: pip install nvidia-cuda-nvcc-cu12")
        include_dirs.append(crt_include_dir())
    reports = {r.name: r for r in nvcc_report(SOURCE, arch, include_dirs=include_dirs, defines=DEFINES)}
    limit = CARD_LIMITS[CARDS[arch]]
    expected = {mangled("cross_attention_bwd_preprocess_kernel", code, None) for code in DTYPES}
    for code, dtype in DTYPES.items():
        for head_dim in HEAD_DIMS:
            shapes = ops.kernel_shapes(torch.empty(1, head_dim, dtype=dtype))
            for kernel in KERNELS:
                matches = [name for name in reports if name.startswith(mangled(kernel, code, head_dim))]
                assert len(matches) == 1, f"{kernel}<{dtype}, {head_dim}> not (uniquely) in {sorted(reports)}"
                report = reports[matches[0]]
                expected.add(matches[0][:len(mangled(kernel, code, head_dim))])
                threads, dynamic_shared = shapes[kernel]
                assert not report.spills, f"{report.name} spills on sm_{arch}: {report}"
                assert 0 < report.registers <= limit.max_registers_per_thread
                assert report.registers * threads <= limit.max_registers_per_block, report
                assert report.shared_bytes + dynamic_shared <= limit.max_shared_bytes_per_block, (
                    f"{report.name}: {report.shared_bytes} static + {dynamic_shared} dynamic shared bytes exceed "
                    f"{CARDS[arch]}'s {limit.max_shared_bytes_per_block}")
    linear = [name for name in reports if "19gated_linear_kernel" in name]
    assert len(linear) == 2 * len(DTYPES) - 1, sorted(reports)  # output in the input dtype, and in fp32
    for name in linear:
        assert not reports[name].spills, f"{name} spills on sm_{arch}: {reports[name]}"
        assert 0 < reports[name].registers * 128 <= limit.max_registers_per_block  # kLinearWarps = 4
        assert reports[name].shared_bytes <= limit.max_shared_bytes_per_block
    assert {name for name in reports if not any(name.startswith(e) for e in expected)} == set(linear)


def _ptx_functions(ptx: str) -> dict[str, str]:
    """{mangled kernel name: its PTX body}."""
    parts = re.split(r"\.visible \.entry (\w+)\(", ptx)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


@pytest.mark.compile
@pytest.mark.parametrize("arch", [80, 90])
def test_fp16_kernels_use_tensor_cores(arch, tmp_path):
    if nvcc_unavailable_reason(arch, compiler="nvcc"):
        pytest.skip(nvcc_unavailable_reason(arch, compiler="nvcc"))
    ptx = tmp_path / "kernels.ptx"
    defines = [f"-D{name}" for name in DEFINES]
    includes = [f"-I{d}" for d in emu.CSRC_INCLUDE_DIRS]
    subprocess.run([shutil.which("nvcc") or "nvcc", "-ptx", f"-arch=sm_{arch}", *includes,
                    *defines, "-o", str(ptx), str(SOURCE)], check=True, capture_output=True, text=True, timeout=300)
    functions = _ptx_functions(ptx.read_text())
    for code in DTYPES:
        for head_dim in HEAD_DIMS:
            for kernel in KERNELS:
                (body,) = [b for name, b in functions.items() if name.startswith(mangled(kernel, code, head_dim))]
                uses_wmma = "wmma.mma.sync" in body
                assert uses_wmma == (code == "6__half"), f"{kernel}<{code}, {head_dim}>: wmma {uses_wmma}"
    for name, body in functions.items():
        if "19gated_linear_kernel" in name:
            assert ("wmma.mma.sync" in body) == ("gated_linear_kernelI6__half" in name), name
