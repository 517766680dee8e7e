"""`python -m fiber_kernels.info` never crashes and reports this machine's facts."""

import os
import subprocess
import sys

import pytest
import torch
from fiber_kernels import _extension, dispatch, info


def test_info_runs_as_a_module() -> None:
    result = subprocess.run([sys.executable, "-m", "fiber_kernels.info"], capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"torch       {torch.__version__}" in out
    assert "_C " in out and "auto backend per op and device:" in out
    if not torch.cuda.is_available():
        assert "gpu         none" in out and "cuda sm70" in out and "cuda sm90" in out


def test_info_reports_a_missing_extension(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_extension, "build_info", lambda: {"built": False, "with_cuda": False,
                                                           "cuda_archs": [], "error": "ImportError: no _C"})
    assert "_C          not built (ImportError: no _C)" in info.report()


def test_capability_table_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch, "_REGISTRY", dispatch._Registry())
    dispatch.register_backend("toy", "torch", lambda: None)
    dispatch.register_backend("toy", "cuda", lambda: None)
    monkeypatch.setattr(_extension, "is_built", lambda: True)
    monkeypatch.setattr(_extension, "has_kernel", lambda op, key: key == "CUDA")
    rows = info.capability_table([dispatch.DeviceInfo("cuda", (7, 0))])
    assert rows[0].split()[:4] == ["op", "cpu", "cuda", "sm70"]
    assert rows[1].split() == ["toy", "torch", "cuda", "cuda,", "torch"]


def test_extension_build_info_is_consistent() -> None:
    facts = _extension.build_info()
    assert facts["built"] == _extension.is_built()
    if facts["built"]:
        assert facts["with_cuda"] == bool(facts["cuda_archs"])
    else:
        assert facts["error"]


@pytest.mark.skipif(os.environ.get("FIBER_FAST_REQUIRE_EXT") != "1",
                    reason="set FIBER_FAST_REQUIRE_EXT=1 (as .ci/run does) to require the compiled extension")
def test_extension_is_built_with_its_cpu_kernels() -> None:
    """CI must not silently skip the C++ kernels' tests: the install there has to build ``_C``."""
    assert _extension.is_built(), _extension.load_error()
    assert _extension.has_kernel("atss_assign", "CPU")
