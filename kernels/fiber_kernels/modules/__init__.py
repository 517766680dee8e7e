"""nn.Module drop-ins built on fiber_kernels ops (state dicts match the modules they replace)."""

from .fusion import ImageToTextFusion, TextToImageFusion
from .swin import FusedSwinAttention, swin_stage_window

__all__ = ["FusedSwinAttention", "ImageToTextFusion", "TextToImageFusion", "swin_stage_window"]
