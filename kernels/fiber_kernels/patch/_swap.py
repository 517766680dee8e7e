"""In-place class swaps: how the patchers fuse a module without replacing it (same parameters, same keys)."""

from __future__ import annotations

import torch

_FUSED_CLASSES: dict[tuple[type, type], type] = {}


class SwappedClass:
    """Base of the patchers' mixins. A patched module's class is made at run time, so it pickles
    (``torch.save(model)``, ``copy.deepcopy``) as its original class, its mixin and its state."""

    def __reduce_ex__(self, protocol: int) -> tuple:
        mixin, original = type(self).__bases__
        return _restore, (mixin, original, self.__dict__)


def _restore(mixin: type, original: type, state: dict) -> torch.nn.Module:
    module = original.__new__(original)
    module.__setstate__(state)
    swap_class(module, mixin)
    return module


def swap_class(module: torch.nn.Module, mixin: type) -> None:
    """Turn ``module`` into an instance of ``Fused<Name>(mixin, type(module))`` in place (``mixin``
    derives from ``SwappedClass``): no module is added or removed, so parameters and state dict keys
    stay as they were. Already swapped modules are left as they are."""
    cls = type(module)
    if issubclass(cls, mixin):
        return
    if (mixin, cls) not in _FUSED_CLASSES:
        _FUSED_CLASSES[mixin, cls] = type(f"Fused{cls.__name__}", (mixin, cls), {"__module__": mixin.__module__})
    module.__class__ = _FUSED_CLASSES[mixin, cls]
