"""Build script for fiber-fast: two import packages and an optional compiled extension.

``fiber_kernels`` (the drop-in kernel library, source in ``kernels/``) and ``fiber_fast`` (model,
data, training, CLI) are pure Python. ``fiber_kernels._C`` is built from ``csrc/`` when possible:

* CUDA + C++ sources when torch is a CUDA build, a CUDA toolkit is found, and either a GPU is
  visible or ``FIBER_FAST_CUDA=1``; ``TORCH_CUDA_ARCH_LIST`` picks the architectures (default sm80 +
  sm90, plus sm70 when the nvcc is CUDA 12: CUDA 13 has no sm70).
* C++ CPU sources only, otherwise.
* Nothing when ``FIBER_FAST_BUILD_EXT=0``.

A failed optional build prints a warning and the install still succeeds without ``_C``.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
import warnings

from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))

def default_cuda_archs(cuda_home: str) -> str:
    """Architectures built when TORCH_CUDA_ARCH_LIST is unset: sm70 (V100) only with nvcc < 13.

    CUDA 13 dropped sm70; V100 builds need a CUDA 12 toolkit.
    """
    try:
        out = subprocess.run([os.path.join(cuda_home, "bin", "nvcc"), "--version"], capture_output=True,
                             text=True, check=True).stdout
        major = int(re.search(r"release (\d+)\.", out).group(1))  # type: ignore[union-attr]
    except (OSError, subprocess.CalledProcessError, AttributeError, ValueError):
        return "8.0;9.0"
    return "8.0;9.0" if major >= 13 else "7.0;8.0;9.0"



def find_cuda_home() -> str | None:
    """Return the CUDA toolkit root, looking through wrapper scripts for ``nvcc``.

    On the development machines ``nvcc`` on PATH is a wrapper in ``/usr/local/bin`` and the real
    toolkit is ``/usr/local/cuda``; torch would guess ``/usr/local`` from the wrapper.
    """
    for env in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(env):
            return os.environ[env]
    nvcc = shutil.which("nvcc")
    candidates = []
    if nvcc:
        prefix = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
        candidates += [os.path.join(os.path.dirname(os.path.dirname(nvcc)), "cuda"), prefix]
    candidates.append("/usr/local/cuda")
    for candidate in candidates:
        required = (("bin", "nvcc"), ("include", "cuda_runtime.h"))
        if all(os.path.isfile(os.path.join(candidate, *part)) for part in required):
            return candidate
    return None


def nvidia_wheel_include_dirs() -> list[str]:
    """Header folders of the ``nvidia.cu13`` wheel (cusparse.h etc. that torch's headers include)."""
    try:
        import nvidia.cu13 as cu13  # type: ignore[import-not-found]
    except ImportError:
        return []
    return [os.path.join(path, "include") for path in cu13.__path__ if os.path.isdir(os.path.join(path, "include"))]


def extension_sources(with_cuda: bool) -> list[str]:
    """Sources of ``_C``: every ``.cpp`` (and ``.cu`` with CUDA) under csrc/, except the host emulation
    (``csrc/emu/`` and ``*_emu.cpp`` files, which only the test harness builds)."""
    patterns = ["csrc/**/*.cpp"] + (["csrc/**/*.cu"] if with_cuda else [])
    sources = []
    for pattern in patterns:
        for path in sorted(glob.glob(os.path.join(ROOT, pattern), recursive=True)):
            rel = os.path.relpath(path, ROOT)
            if not rel.startswith(os.path.join("csrc", "emu")) and not rel.endswith("_emu.cpp"):
                sources.append(rel)
    return sources


def build_extensions() -> tuple[list, dict]:
    """Return ``(ext_modules, cmdclass)`` for ``_C``; empty when the build is switched off or impossible."""
    if os.environ.get("FIBER_FAST_BUILD_EXT", "1") == "0":
        return [], {}
    cuda_home = find_cuda_home()
    if cuda_home:
        os.environ.setdefault("CUDA_HOME", cuda_home)  # read by torch.utils.cpp_extension at import
    try:
        import torch
        from torch.utils.cpp_extension import BuildExtension, CppExtension, CUDAExtension
    except ImportError:
        warnings.warn("fiber-fast: torch is not importable at build time; fiber_kernels._C is not built "
                      "(install torch first and use --no-build-isolation)", stacklevel=2)
        return [], {}

    force_cuda = os.environ.get("FIBER_FAST_CUDA", "0") == "1"
    with_cuda = bool(torch.version.cuda) and cuda_home is not None and (force_cuda or torch.cuda.is_available())
    sources = extension_sources(with_cuda)
    if not sources:
        return [], {}

    include_dirs = [os.path.join(ROOT, "csrc"), os.path.join(ROOT, "csrc", "include")]
    cxx_flags = ["-O3", "-std=c++20"]
    if with_cuda:
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", default_cuda_archs(cuda_home))
        archs = os.environ["TORCH_CUDA_ARCH_LIST"]
        define = [("FIBER_KERNELS_WITH_CUDA", "1"), ("FIBER_KERNELS_CUDA_ARCHS", f'"{archs}"')]
        ext = CUDAExtension(
            "fiber_kernels._C", sources, include_dirs=include_dirs + nvidia_wheel_include_dirs(),
            define_macros=define,
            extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "-std=c++20", "--use_fast_math", "-lineinfo"]},
        )
    else:
        ext = CppExtension("fiber_kernels._C", sources, include_dirs=include_dirs,
                           define_macros=[("FIBER_KERNELS_CUDA_ARCHS", '""')],
                           extra_compile_args={"cxx": cxx_flags})

    class OptionalBuildExtension(BuildExtension):
        """Build ``_C`` if possible; warn and go on without it if the compiler fails."""

        def run(self) -> None:
            try:
                super().run()
            except Exception as error:  # noqa: BLE001 - any build failure must not break install
                warnings.warn(f"fiber-fast: optional extension fiber_kernels._C failed to build ({error}); "
                              "the Triton and PyTorch backends still work", stacklevel=2)
                print(f"WARNING: fiber_kernels._C not built: {error}", file=sys.stderr)

    return [ext], {"build_ext": OptionalBuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)}


# The model, data, trainer and evaluation stack of ``fiber_fast`` (versions measured together on torch 2.14.1).
TRAIN_REQUIRES = [
    "timm>=1.0.31,<1.1", "torchvision==0.29.1", "transformers>=5.24,<6", "tokenizers>=0.23,<0.24",
    "safetensors>=0.4", "deepspeed==0.19.8", "pillow>=10", "pycocotools>=2.0.11", "webdataset>=0.2.100",
    "tqdm>=4.66", "tensorboard>=2.17", "pyyaml>=6", "matplotlib",
]


def main() -> None:
    """Run setuptools with the extension (if any)."""
    ext_modules, cmdclass = build_extensions()
    setup(
        name="fiber-fast",
        version="0.1.0",
        description="Fused Triton and CUDA kernels for vision-language pre-training (FIBER, OSCAR)",
        long_description=open(os.path.join(ROOT, "README.md"), encoding="utf-8").read(),
        long_description_content_type="text/markdown",
        python_requires=">=3.10",
        package_dir={"fiber_kernels": "kernels/fiber_kernels", "fiber_fast": "fiber_fast"},
        packages=["fiber_kernels"] + [f"fiber_kernels.{p}" for p in find_packages("kernels/fiber_kernels")]
        + ["fiber_fast"] + [f"fiber_fast.{p}" for p in find_packages("fiber_fast")],
        install_requires=["torch>=2.4", "triton>=3.2; platform_system=='Linux'", "numpy"],
        extras_require={
            "test": ["pytest>=8", "pytest-benchmark>=5", "hypothesis>=6", "ninja", "ruff", "matplotlib",
                     # sm70 evidence: NVRTC 12 compiles device code for V100 (CUDA 13 has no sm70;
                     # the nvcc-cu12 wheel ships ptxas and headers, not nvcc itself)
                     "nvidia-cuda-nvrtc-cu12", "nvidia-cuda-runtime-cu12", "nvidia-cuda-nvcc-cu12",
                     "nvidia-cuda-cccl-cu12",
                     # the Swin drop-in tests patch real timm and torchvision models (random weights)
                     "timm>=1.0.31", "torchvision==0.29.1", *TRAIN_REQUIRES],
            "bench": ["pytest-benchmark>=5", "matplotlib", "ninja"],
            "train": TRAIN_REQUIRES,
            # the real projects the patchers are compared with (tests/drop_in). open-flamingo itself pins
            # torch==2.0.1: install it with `pip install --no-deps open-flamingo==2.0.1` (docs/drop_in.md)
            "drop-in": ["mmdet==3.3.0", "mmengine==0.10.7", "mmcv-lite==2.1.0", "open_clip_torch==3.3.0",
                        "einops-exts==0.0.4", "ftfy>=6.1"],
        },
        entry_points={"console_scripts": ["fiber-fast=fiber_fast.cli:main"]},
        ext_modules=ext_modules,
        cmdclass=cmdclass,
        zip_safe=False,
    )


if __name__ == "__main__":
    main()
