"""What each backend of ``atss_assign`` takes, declared as data next to its kernels (``LIMITS``); the
dispatch reasons in ``api.py`` are read from these, and tests/atss/test_limits.py compares the C++ ones
with the constants of csrc/atss.

``max_topk_total``: candidates per level (``topk * anchors_per_location``); ``max_levels``: pyramid
levels; ``max_anchors``: anchors per image (int32 indices); ``fp32_statistics``: serves the ``*_fp32``
conventions (torch's fp32 ``mean(0)``). ``None``: no limit.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..dispatch import INT32_MAX
from .triton_atss import K_PADS, MAX_LEVELS


@dataclass(frozen=True)
class AssignLimits:
    """One backend's limits; ``reasons`` says which a call exceeds."""

    max_topk_total: int | None = None
    max_levels: int | None = None
    max_anchors: int | None = INT32_MAX  # the kernels index anchors with int32 (kMaxAnchors of atss_limits.h)
    fp32_statistics: bool = False

    def reasons(self, num_anchors: int, num_levels: int, topk_total: int, fp32_statistics: bool) -> list[str]:
        found = []
        if self.max_topk_total is not None and topk_total > self.max_topk_total:
            found.append(f"topk * anchors_per_location must be <= {self.max_topk_total}, got {topk_total}")
        if self.max_levels is not None and num_levels > self.max_levels:
            found.append(f"at most {self.max_levels} levels, got {num_levels}")
        if self.max_anchors is not None and num_anchors > self.max_anchors:
            found.append(f"at most {self.max_anchors} anchors, got {num_anchors}")
        if fp32_statistics and not self.fp32_statistics:
            found.append("the *_fp32 conventions (the threshold's mean as torch's fp32 mean(0)) are served by the "
                         "cpp and torch backends; 'glip' / 'mmdet' sum it in float64 on every backend")
        return found


LIMITS = {
    "triton": AssignLimits(max_topk_total=K_PADS[-1], max_levels=MAX_LEVELS),
    "cuda": AssignLimits(max_topk_total=128),  # kMaxK of csrc/atss/atss_limits.h
    "cpp": AssignLimits(fp32_statistics=True),
    "torch": AssignLimits(max_anchors=None, fp32_statistics=True),
}
