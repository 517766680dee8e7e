"""Batched ATSS assignment (GLIP/FIBER and mmdetection conventions) and its regression targets."""

from .api import atss_assign, atss_targets

__all__ = ["atss_assign", "atss_targets"]
