"""setup.py's build decisions: where CUDA is, which sources go into _C (emulation files never do)."""

import importlib.util
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup_module():
    spec = importlib.util.spec_from_file_location("fiber_fast_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # __name__ is not "__main__": setup() does not run
    return module


def _toolkit(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "include").mkdir()
    (root / "bin" / "nvcc").write_text("")
    (root / "include" / "cuda_runtime.h").write_text("")
    return root


def test_cuda_home_looks_through_an_nvcc_wrapper(setup_module, tmp_path: Path, monkeypatch) -> None:
    # /prefix/bin/nvcc is a wrapper script; the real toolkit is /prefix/cuda (the dev machines' layout)
    wrapper_bin = tmp_path / "prefix" / "bin"
    wrapper_bin.mkdir(parents=True)
    (wrapper_bin / "nvcc").write_text("#!/bin/sh\n")
    (wrapper_bin / "nvcc").chmod(0o755)
    toolkit = _toolkit(tmp_path / "prefix" / "cuda")
    monkeypatch.delenv("CUDA_HOME", raising=False)
    monkeypatch.delenv("CUDA_PATH", raising=False)
    monkeypatch.setenv("PATH", str(wrapper_bin))
    assert setup_module.find_cuda_home() == str(toolkit)


def test_cuda_home_environment_wins(setup_module, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("CUDA_HOME", str(tmp_path))
    assert setup_module.find_cuda_home() == str(tmp_path)


def test_sources_exclude_the_host_emulation(setup_module) -> None:
    cpu_sources = setup_module.extension_sources(with_cuda=False)
    assert os.path.join("csrc", "bindings.cpp") in cpu_sources
    assert all(not s.endswith(".cu") for s in cpu_sources)
    for sources in (cpu_sources, setup_module.extension_sources(with_cuda=True)):
        assert all(not s.startswith(os.path.join("csrc", "emu")) and not s.endswith("_emu.cpp") for s in sources)


def test_build_can_be_switched_off(setup_module, monkeypatch) -> None:
    monkeypatch.setenv("FIBER_FAST_BUILD_EXT", "0")
    assert setup_module.build_extensions() == ([], {})


def test_default_archs_follow_the_nvcc_release(setup_module, tmp_path: Path) -> None:
    for release, expected in (("13.0", "8.0;9.0"), ("12.9", "7.0;8.0;9.0")):
        toolkit = tmp_path / release
        (toolkit / "bin").mkdir(parents=True)
        nvcc = toolkit / "bin" / "nvcc"
        nvcc.write_text(f"#!/bin/sh\necho 'Cuda compilation tools, release {release}, V{release}.1'\n")
        nvcc.chmod(0o755)
        assert setup_module.default_cuda_archs(str(toolkit)) == expected
    assert setup_module.default_cuda_archs(str(tmp_path / "missing")) == "8.0;9.0"
