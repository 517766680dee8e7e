"""Patchers that swap fiber_kernels computations into live models of other codebases, keeping the weights.

``fiber_kernels.patch.mmdet`` (not imported here: it needs mmdet) registers ``FusedATSSAssigner``.
"""

from .hf_swin import hf_swin_patched_layers, patch_hf_swin
from .open_flamingo import patch_open_flamingo
from .timm_swin import patch_timm_swin
from .torchvision_swin import patch_torchvision_swin

__all__ = ["hf_swin_patched_layers", "patch_hf_swin", "patch_open_flamingo", "patch_timm_swin",
           "patch_torchvision_swin"]
