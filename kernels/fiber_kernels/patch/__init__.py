"""Patchers that swap fiber_kernels modules into live models of other codebases, keeping the weights."""

from .timm_swin import patch_timm_swin
from .torchvision_swin import patch_torchvision_swin

__all__ = ["patch_timm_swin", "patch_torchvision_swin"]
