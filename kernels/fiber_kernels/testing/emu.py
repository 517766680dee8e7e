"""Host emulation of the csrc/ CUDA kernels: build an emulation binding and launch kernels on CPU tensors.

A kernel family exposes its kernels to the emulator with one binding file, ``csrc/<op>/<op>_emu.cpp``,
which includes ``emu/torch.h`` and the family's ``<op>_kernel.cuh`` (the same source nvcc compiles
into ``_C``) and defines one function per CUDA launcher, with the launcher's signature, taking CPU
tensors and launching with ``fk::emu::launch`` instead of ``<<<...>>>``. A test then needs one line::

    mod = emu.build("atss", ["csrc/atss/atss_emu.cpp"])
    matched, iou = mod.atss_assign_fwd(anchors, gt_boxes, ..., seed=3)

Every function of the module accepts ``seed=``: the seed of the thread schedule of that call (the
order of threads between barriers and of blocks). Faults the emulator finds (out-of-bounds or
misaligned accesses, barrier or warp-collective deadlocks, bad launch configurations) raise
``RuntimeError`` with a message naming the buffer, element, thread and block. See docs/emulation.md.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["CSRC_INCLUDE_DIRS", "EmuModule", "REPO_ROOT", "build", "build_directory", "compile_flags", "launching_on"]

REPO_ROOT = Path(__file__).resolve().parents[3]
_CSRC = REPO_ROOT / "csrc"
# The include folders of every csrc/ build: op folders (csrc/<op>/, csrc/emu/) and the shared headers.
CSRC_INCLUDE_DIRS = (str(_CSRC), str(_CSRC / "include"))
# Functions every emulation module has (fk::emu::bind_runtime), passed through without a seed.
_RUNTIME_FUNCTIONS = frozenset({"set_seed", "seed", "set_stack_kib", "launches"})
_BUILT: dict[tuple, EmuModule] = {}


def compile_flags() -> list[str]:
    """g++ flags of every emulation build.

    ``FIBER_KERNELS_EMU`` switches csrc/include/fiber_kernels/portable.cuh to the emulator; the
    ``__CUDA_NO_HALF_*``
    macros are those torch's CUDAExtension passes to nvcc (so a kernel that relies on implicit
    ``__half`` conversions fails here as it fails in ``_C``); C++20 for torch 2.14's headers and
    ``std::source_location``; -O1 because the torch headers, not optimisation, dominate build time.
    """
    from torch.utils.cpp_extension import COMMON_NVCC_FLAGS

    half_macros = [flag for flag in COMMON_NVCC_FLAGS if flag.startswith("-D__CUDA_NO_")]
    return ["-std=c++20", "-O1", "-g0", "-DFIBER_KERNELS_EMU=1", *half_macros]


def build_directory(name: str) -> Path:
    """Where the extension ``name`` is built and cached: ``$FIBER_KERNELS_EMU_BUILD_DIR/<name>``, else
    ``<repo>/.torch_extensions/emu/<name>`` (git-ignored), else the user cache when the checkout is read-only."""
    root = os.environ.get("FIBER_KERNELS_EMU_BUILD_DIR")
    if root:
        base = Path(root)
    elif os.access(REPO_ROOT, os.W_OK):
        base = REPO_ROOT / ".torch_extensions" / "emu"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fiber_kernels" / "emu"
    path = base / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _resolve(path: str | os.PathLike[str]) -> Path:
    """A source or include path: absolute, or relative to the repository root."""
    p = Path(path)
    if not p.is_absolute():
        p = REPO_ROOT / p
    if not p.exists():
        raise FileNotFoundError(f"emu.build: {p} does not exist"
                                f" (relative paths start at the repository root {REPO_ROOT})")
    return p


class EmuModule:
    """An emulation extension whose functions take an extra keyword ``seed`` (the schedule seed of that call).

    Attribute access forwards to the compiled module; ``set_seed``/``seed``/``set_stack_kib``/``launches``
    are the runtime knobs of csrc/emu (``fk::emu::bind_runtime``).
    """

    def __init__(self, module: ModuleType) -> None:
        self._module = module

    @property
    def module(self) -> ModuleType:
        """The compiled extension itself."""
        return self._module

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._module, name)
        if name in _RUNTIME_FUNCTIONS or not callable(attr):
            return attr
        return self._with_seed(attr)

    def __dir__(self) -> list[str]:
        return sorted(set(dir(self._module)) | {"module", "schedule"})

    @contextlib.contextmanager
    def schedule(self, seed: int) -> Iterator[None]:
        """Run the launches inside the ``with`` block under schedule ``seed``, then restore the previous seed."""
        previous = self._module.seed()
        self._module.set_seed(int(seed))
        try:
            yield
        finally:
            self._module.set_seed(previous)

    def _with_seed(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def call(*args: Any, seed: int | None = None, **kwargs: Any) -> Any:
            if seed is None:
                return fn(*args, **kwargs)
            with self.schedule(seed):
                return fn(*args, **kwargs)

        return call


def build(
    name: str,
    sources: Sequence[str | os.PathLike[str]],
    *,
    include_dirs: Sequence[str | os.PathLike[str]] = (),
    extra_cflags: Sequence[str] = (),
    verbose: bool = False,
) -> EmuModule:
    """Compile emulation bindings (``*_emu.cpp``) with g++ into a torch extension and import it.

    Args:
        name: extension name (an identifier); the module is imported as ``fk_emu_<name>``.
        sources: the binding sources, absolute or relative to the repository root.
        include_dirs: extra include folders; ``csrc/`` and ``csrc/include/`` are always searched,
            so bindings write ``#include "emu/torch.h"`` and ``#include "<op>/<op>_kernel.cuh"``.
        extra_cflags: more g++ flags (after :func:`compile_flags`).
        verbose: print the compiler's output.

    Returns:
        The module wrapped in :class:`EmuModule` (each function takes ``seed=``). Built once per
        process and cached on disk in :func:`build_directory` (ninja rebuilds what changed, headers
        included); the first build costs about a minute on 2 cores.
    """
    from torch.utils import cpp_extension

    if not name.isidentifier():
        raise ValueError(f"emu.build: name must be an identifier, got {name!r}")
    if not sources:
        raise ValueError("emu.build: sources is empty; pass the *_emu.cpp binding(s)")
    source_paths = [str(_resolve(s)) for s in sources]
    includes = [*CSRC_INCLUDE_DIRS] + [str(_resolve(d)) for d in include_dirs]
    key = (name, tuple(source_paths), tuple(includes), tuple(extra_cflags))
    if key in _BUILT:
        return _BUILT[key]
    os.environ.setdefault("MAX_JOBS", "2")  # the machines have 2 cores
    module = cpp_extension.load(
        name=f"fk_emu_{name}",
        sources=source_paths,
        extra_cflags=compile_flags() + list(extra_cflags),
        extra_include_paths=[p for p in includes if Path(p).is_dir()],
        build_directory=str(build_directory(name)),
        with_cuda=False,
        verbose=verbose,
    )
    wrapped = EmuModule(module)
    _BUILT[key] = wrapped
    return wrapped


@contextlib.contextmanager
def launching_on(ops: Any, *launchers: ModuleType) -> Iterator[Any]:
    """Inside the ``with`` block the ``cuda`` launcher modules ``launchers`` (e.g.
    ``fiber_kernels.cross_attention.cuda``) call ``ops`` (an emulation binding) wherever they would call
    ``torch.ops.fiber_kernels_C``, so the custom ops with backend ``"cuda"`` run the emulated kernels on CPU
    tensors; ops passed explicitly still win. Yields ``ops``."""
    previous = [launcher._ops for launcher in launchers]
    for launcher in launchers:
        launcher._ops = lambda given: ops if given is None else given
    try:
        yield ops
    finally:
        for launcher, hook in zip(launchers, previous, strict=True):
            launcher._ops = hook
