"""A stand-in for mmcv's compiled ops, for the one piece of mmdetection 3.x that cannot be installed here.

mmdet 3.x imports ``mmcv.ops`` (CUDA/C++ extensions, ``mmcv._ext``) throughout ``mmdet.models`` and
``mmdet.structures``; PyPI has mmcv only as source for torch 2.14 (a long compile) or as mmcv-lite,
which lacks the ops. ``install()`` puts a finder first on ``sys.meta_path`` that answers every
``mmcv.ops[.x]`` import with a module whose attributes are classes that raise when used, so the
real mmdet code (assigners, IoU calculators, registries) imports and runs unchanged. Nothing the
ATSS comparison runs touches an op. Installed only when ``mmcv._ext`` is absent.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types


class MissingOp:
    """What every ``mmcv.ops`` name resolves to: using it raises."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        raise NotImplementedError(f"{type(self).__name__} is an mmcv.ops stand-in (mmcv-lite has no compiled ops)")


class _OpsFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name: str, path: object = None, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if name == "mmcv.ops" or name.startswith("mmcv.ops."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = types.ModuleType(spec.name)

        def __getattr__(attr: str) -> type:  # noqa: N807 (the module-level hook)
            if attr.startswith("__"):
                raise AttributeError(attr)
            return type(attr, (MissingOp,), {})

        module.__getattr__ = __getattr__
        module.__path__ = []
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


def install() -> bool:
    """Install the finder unless mmcv has its compiled ops; True when installed (now or before)."""
    if importlib.util.find_spec("mmcv._ext") is not None:
        return False
    if not any(isinstance(finder, _OpsFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _OpsFinder())
    return True
