"""The models on ``fiber_kernels``: FIBER (fusion-in-the-backbone vision-language model) and OSCAR (one BERT
over words, object tags and region features).

```python
cfg = FiberConfig.preset("tiny" | "base-coarse" | "base-fine", **overrides)
model = build_fiber(cfg)                 # fused kernels; build_fiber(cfg, eager=True): FIBER's eager computation
out = model(pixel_values, input_ids, attention_mask, fusion=True)

cfg = OscarConfig.preset("tiny" | "base", **overrides)
model = build_oscar(cfg)                 # fused attention; build_oscar(cfg, eager=True): SDPA
out = model(input_ids, token_type_ids, attention_mask, region_features, region_mask)   # .sequence, .pooled
report = load_pretrained(model, state_dict, source="bert" | "oscar")                  # .missing, .unexpected
```
"""

from .checkpoint import LoadReport, load_checkpoint, load_pretrained, read_checkpoint_config, save_checkpoint
from .config import FiberConfig, ImageConfig, TextConfig
from .model import FiberModel, build_fiber
from .oscar import OscarModel, OscarOutput, build_oscar
from .oscar_config import BertTextConfig, OscarConfig
from .outputs import FiberOutput, GroundingOutput, ImageLower, TextLower

__all__ = ["BertTextConfig", "FiberConfig", "FiberModel", "FiberOutput", "GroundingOutput", "ImageConfig",
           "ImageLower", "LoadReport", "OscarConfig", "OscarModel", "OscarOutput", "TextConfig", "TextLower",
           "build_fiber", "build_oscar", "load_checkpoint", "load_pretrained", "read_checkpoint_config",
           "save_checkpoint"]
