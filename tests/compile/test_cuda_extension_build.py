"""The whole CUDA build of fiber_kernels._C (launchers with torch headers) compiles with nvcc here.

No GPU is needed to compile: setup.py builds the CUDA sources when ``FIBER_FAST_CUDA=1``. The built
``.so`` imports without a driver, reports its architectures, and every kernel in it is checked for
spills with cuobjdump. Several minutes on 2 cores, hence ``slow``.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from fiber_kernels.testing.nvcc import extension_report, nvcc_unavailable_reason

ROOT = Path(__file__).resolve().parents[2]
ARCHS = "8.0;9.0"


@pytest.mark.slow
@pytest.mark.compile
def test_cuda_build_of_the_extension(tmp_path: Path) -> None:
    if nvcc_unavailable_reason(80, compiler="nvcc"):
        pytest.skip(f"no nvcc for sm80: {nvcc_unavailable_reason(80, compiler='nvcc')}")
    env = dict(os.environ, FIBER_FAST_CUDA="1", TORCH_CUDA_ARCH_LIST=ARCHS, MAX_JOBS="2")
    result = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--build-lib", str(tmp_path / "lib"),
         "--build-temp", str(tmp_path / "tmp")],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=3000, check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "not built" not in result.stderr, result.stderr[-4000:]
    (library,) = (tmp_path / "lib" / "fiber_kernels").glob("_C*.so")

    probe = subprocess.run(
        [sys.executable, "-c",
         "import importlib.util, sys, torch; "
         f"spec = importlib.util.spec_from_file_location('fiber_kernels._C', {str(library)!r}); "
         "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m); print(m.build_info())"],
        capture_output=True, text=True, timeout=300, check=False)
    assert probe.returncode == 0, probe.stderr
    assert "'with_cuda': True" in probe.stdout and ARCHS in probe.stdout

    kernels = extension_report(library)
    assert kernels, "a CUDA build must contain kernels"
    assert {k.arch for k in kernels} == {80, 90}
    spilling = [f"{k.name} sm{k.arch}: stack {k.stack_bytes} B, local {k.local_bytes} B" for k in kernels if k.spills]
    assert not spilling, "kernels spill:\n" + "\n".join(spilling)
