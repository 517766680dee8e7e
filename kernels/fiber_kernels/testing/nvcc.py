"""Registers, stack/local and shared memory of CUDA C++ kernels, compiled here for a GPU we don't have.

Two compilers, picked per architecture (``compiler="auto"``):

* ``nvcc`` on PATH (CUDA 13 here): ``nvcc -cubin -arch=sm_XX``; it knows sm75 and newer, not sm70.
* NVRTC 12 from the PyPI wheel ``nvidia-cuda-nvrtc-cu12``: the CUDA 12.9 front end and ptxas as a
  library, still able to target sm70 (V100). Headers come from the wheels ``nvidia-cuda-runtime-cu12``
  (cuda_fp16.h, ...), ``nvidia-cuda-nvcc-cu12`` (crt/mma.h, which mma.h includes) and
  ``nvidia-cuda-cccl-cu12``, added to the include path when installed. It compiles device code only:
  the source may include the ``.cuh`` kernels and CUDA headers, not torch or host-only headers.
  The ``nvidia-cuda-nvcc-cu12`` wheel itself holds only ptxas, libnvvm and headers (no ``nvcc``
  driver, no C++ front end), so it cannot compile a ``.cu`` on its own.

Figures come from ``cuobjdump --dump-resource-usage`` on the cubin (Triton's bundled copy).
"""

from __future__ import annotations

import ctypes
import functools
import importlib.util
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ._cuobjdump import NoDeviceCodeError, resource_usage

ARCHS = (70, 75, 80, 86, 87, 89, 90)
COMPILERS = ("auto", "nvcc", "nvrtc")
_TIMEOUT_S = 600


@dataclass(frozen=True)
class KernelResources:
    """One compiled kernel: registers per thread; stack, local and static shared memory in bytes.

    ``spills`` is true when the kernel uses local memory (STACK or LOCAL > 0: register spills or a
    stack array, both slow). ``arch`` is the SM version (e.g. 80); ``compiler`` "nvcc", "nvrtc" or
    "extension" (read from a built ``.so``).
    """

    name: str
    registers: int
    stack_bytes: int
    local_bytes: int
    shared_bytes: int
    spills: bool
    arch: int | None = None
    compiler: str = ""


@functools.cache
def _nvcc_archs() -> tuple[int, ...]:
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return ()
    try:
        listing = subprocess.run([nvcc, "--list-gpu-code"], capture_output=True, text=True, timeout=60, check=True)
    except (OSError, subprocess.SubprocessError):
        return ()
    return tuple(int(m) for m in re.findall(r"sm_(\d+)\b", listing.stdout))


def _nvidia_dir(package: str, *parts: str) -> str | None:
    """A folder inside an ``nvidia.<package>`` wheel, or None when that wheel is not installed."""
    try:
        spec = importlib.util.find_spec(f"nvidia.{package}")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        path = os.path.join(root, *parts)
        if os.path.exists(path):
            return path
    return None


def _nvrtc_library() -> str | None:
    return _nvidia_dir("cuda_nvrtc", "lib", "libnvrtc.so.12")


def _nvrtc_include_dirs() -> list[str]:
    folders = [_nvidia_dir("cuda_runtime", "include"), _nvidia_dir("cuda_nvcc", "include"),
               _nvidia_dir("cuda_cccl", "include")]
    return [folder for folder in folders if folder]


def _check_arch(arch: object) -> int:
    if isinstance(arch, bool) or arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {arch!r}")
    return arch  # type: ignore[return-value]


def _pick_compiler(arch: int, compiler: str) -> tuple[str | None, str]:
    """``(compiler, reason)``: the compiler to use, or None and why none can be used."""
    nvcc_ok = arch in _nvcc_archs()
    nvrtc_ok = _nvrtc_library() is not None
    if compiler in ("auto", "nvcc") and nvcc_ok:
        return "nvcc", ""
    if compiler in ("auto", "nvrtc") and nvrtc_ok:
        return "nvrtc", ""
    nvcc_why = (f"nvcc on PATH has no sm_{arch} (it knows {', '.join(f'sm_{a}' for a in _nvcc_archs())})"
                if shutil.which("nvcc") else "no nvcc on PATH")
    nvrtc_why = ("NVRTC 12 is not installed (pip install nvidia-cuda-nvrtc-cu12 nvidia-cuda-runtime-cu12 "
                 "nvidia-cuda-nvcc-cu12 nvidia-cuda-cccl-cu12)")
    reasons = {"auto": f"{nvcc_why}; {nvrtc_why}", "nvcc": nvcc_why, "nvrtc": nvrtc_why}
    return None, reasons[compiler]


def nvcc_unavailable_reason(arch: int, *, compiler: str = "auto") -> str | None:
    """Why ``nvcc_report(..., arch, compiler=compiler)`` cannot run here, or None when it can."""
    _check_arch(arch)
    if compiler not in COMPILERS:
        raise ValueError(f"compiler must be one of {COMPILERS}, got {compiler!r}")
    chosen, reason = _pick_compiler(arch, compiler)
    return None if chosen is not None else reason


def _to_resources(usages: list, compiler: str, arch: int | None = None) -> list[KernelResources]:
    return [KernelResources(name=u.name, registers=u.registers, stack_bytes=u.stack_bytes, local_bytes=u.local_bytes,
                            shared_bytes=u.shared_bytes, spills=u.stack_bytes > 0 or u.local_bytes > 0,
                            arch=u.arch if u.arch is not None else arch, compiler=compiler) for u in usages]


def _define_flags(defines: Mapping[str, object] | None) -> list[str]:
    flags = []
    for name, value in (defines or {}).items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_]\w*", name):
            raise ValueError(f"defines keys must be C identifiers, got {name!r}")
        flags.append(f"-D{name}" if value is None else f"-D{name}={value}")
    return flags


def nvcc_report(source: str | os.PathLike[str], arch: int, *, include_dirs: Sequence[str] = (),
                defines: Mapping[str, object] | None = None, extra_flags: Sequence[str] = (),
                compiler: str = "auto") -> list[KernelResources]:
    """Compile the ``.cu`` file ``source`` to a cubin for ``sm_<arch>`` and report every kernel in it.

    Args:
        source: path of a ``.cu`` (or ``.cuh``) file.
        arch: 70, 75, 80, 86, 87, 89 or 90.
        include_dirs: extra ``-I`` folders.
        defines: ``{"NAME": value}`` (value None for a bare ``-DNAME``).
        extra_flags: passed to the compiler as they are (nvcc flags, or NVRTC options).
        compiler: "nvcc", "nvrtc", or "auto" (nvcc when it knows the arch, else NVRTC).
    Returns:
        one ``KernelResources`` per ``__global__`` function (mangled names), in cuobjdump's order.
    Raises:
        RuntimeError: no compiler for this arch (the message says why) or the compile failed
            (the message carries the compiler's log).
    """
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a path to a .cu file, got {type(source).__name__}")
    path = os.fspath(source)
    if not os.path.isfile(path):
        raise ValueError(f"source must be an existing .cu file, got {path!r}")
    _check_arch(arch)
    if compiler not in COMPILERS:
        raise ValueError(f"compiler must be one of {COMPILERS}, got {compiler!r}")
    if isinstance(include_dirs, str) or not all(isinstance(d, (str, os.PathLike)) for d in include_dirs):
        raise TypeError("include_dirs must be a sequence of folder paths (not a single str)")
    if isinstance(extra_flags, str) or not all(isinstance(f, str) for f in extra_flags):
        raise TypeError("extra_flags must be a sequence of str (not a single str)")
    if defines is not None and not isinstance(defines, Mapping):
        raise TypeError(f"defines must be a mapping of name -> value or None, got {type(defines).__name__}")
    flags = [f"-I{os.fspath(d)}" for d in include_dirs] + _define_flags(defines) + list(extra_flags)
    chosen, reason = _pick_compiler(arch, compiler)
    if chosen is None:
        raise RuntimeError(f"cannot compile for sm_{arch}: {reason}")
    with tempfile.TemporaryDirectory() as folder:
        cubin = os.path.join(folder, "kernels.cubin")
        if chosen == "nvcc":
            _compile_nvcc(path, arch, flags, cubin)
        else:
            _compile_nvrtc(path, arch, flags, cubin)
        return _to_resources(resource_usage(cubin), chosen, arch)


def _compile_nvcc(path: str, arch: int, flags: list[str], cubin: str) -> None:
    command = [shutil.which("nvcc") or "nvcc", "-cubin", f"-arch=sm_{arch}", "-o", cubin, path, *flags]
    result = subprocess.run(command, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"nvcc failed for sm_{arch} (exit {result.returncode}): {' '.join(command)}\n"
                           f"{result.stdout}{result.stderr}")


def _compile_nvrtc(path: str, arch: int, flags: list[str], cubin: str) -> None:
    library = ctypes.CDLL(_nvrtc_library())
    with open(path, "rb") as handle:
        text = handle.read()
    options = [f"--gpu-architecture=sm_{arch}", "-std=c++17", f"-I{os.path.dirname(os.path.abspath(path))}",
               *flags, *(f"-I{d}" for d in _nvrtc_include_dirs())]
    program = ctypes.c_void_p()
    _nvrtc_check(library, library.nvrtcCreateProgram(ctypes.byref(program), text, os.path.basename(path).encode(),
                                                     0, None, None), "nvrtcCreateProgram")
    try:
        encoded = [option.encode() for option in options]
        status = library.nvrtcCompileProgram(program, len(encoded), (ctypes.c_char_p * len(encoded))(*encoded))
        size = ctypes.c_size_t()
        library.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        library.nvrtcGetProgramLog(program, log)
        if status != 0:
            raise RuntimeError(f"NVRTC failed for sm_{arch} on {path} (status {status}, options {options}):\n"
                               f"{log.value.decode(errors='replace')}")
        library.nvrtcGetCUBINSize(program, ctypes.byref(size))
        binary = ctypes.create_string_buffer(size.value)
        _nvrtc_check(library, library.nvrtcGetCUBIN(program, binary), "nvrtcGetCUBIN")
        with open(cubin, "wb") as handle:
            handle.write(binary.raw)
    finally:
        library.nvrtcDestroyProgram(ctypes.byref(program))


def _nvrtc_check(library: ctypes.CDLL, status: int, call: str) -> None:
    if status != 0:
        library.nvrtcGetErrorString.restype = ctypes.c_char_p
        raise RuntimeError(f"{call} failed: {library.nvrtcGetErrorString(status).decode()}")


def extension_report(path: str | os.PathLike[str] | None = None) -> list[KernelResources]:
    """The same figures for every kernel, for every architecture, inside a built ``fiber_kernels._C``.

    Args:
        path: the extension's ``.so``; by default the one ``fiber_kernels._C`` would import.
    Raises:
        FileNotFoundError: no ``_C`` is built.
        NoDeviceCodeError: the ``.so`` has no GPU code (a CPU-only build: rebuild with a CUDA
            toolkit and ``FIBER_FAST_CUDA=1``).
    """
    if path is None:
        spec = importlib.util.find_spec("fiber_kernels._C")
        if spec is None or not spec.origin:
            raise FileNotFoundError("fiber_kernels._C is not built: there is no extension to report on")
        path = spec.origin
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a path to the extension's .so or None, got {type(path).__name__}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"path must be an existing file, got {os.fspath(path)!r}")
    try:
        usages = resource_usage(path)
    except NoDeviceCodeError:
        raise NoDeviceCodeError(f"{os.fspath(path)} contains no GPU code: it is a CPU-only build of the extension "
                                "(no CUDA kernels to report)") from None
    return _to_resources(usages, "extension")
