"""FIBER (fusion-in-the-backbone vision-language model) on ``fiber_kernels``.

```python
cfg = FiberConfig.preset("tiny" | "base-coarse" | "base-fine", **overrides)
model = build_fiber(cfg)                 # fused kernels; build_fiber(cfg, eager=True): FIBER's eager computation
out = model(pixel_values, input_ids, attention_mask, fusion=True)
```
"""

from .checkpoint import LoadReport, load_checkpoint, load_pretrained, read_checkpoint_config, save_checkpoint
from .config import FiberConfig, ImageConfig, TextConfig
from .model import FiberModel, build_fiber
from .outputs import FiberOutput, GroundingOutput, ImageLower, TextLower

__all__ = ["FiberConfig", "FiberModel", "FiberOutput", "GroundingOutput", "ImageConfig", "ImageLower", "LoadReport",
           "TextConfig", "TextLower", "build_fiber", "load_checkpoint", "load_pretrained", "read_checkpoint_config",
           "save_checkpoint"]
