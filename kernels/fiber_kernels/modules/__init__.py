"""nn.Module drop-ins built on fiber_kernels ops (state dicts match the modules they replace)."""

from .fusion import ImageToTextFusion, TextToImageFusion

__all__ = ["ImageToTextFusion", "TextToImageFusion"]
