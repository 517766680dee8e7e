"""Image transforms of the two stages (torchvision.transforms.v2; boxes move with the image).

- :class:`CoarseTransform`: shorter side to ``size``, centre crop ``size`` x ``size``, ImageNet
  normalisation. No random crop: a crop could cut a shape out of an image its caption names.
- :class:`FineTransform`: multi-scale resize as GLIP/maskrcnn-benchmark (shorter side drawn from
  ``min_sizes``, longer side at most ``max_size``), boxes scaled along; no horizontal flip, which would
  contradict "left of"/"right of" in the captions. Padding to a multiple of 32 is the collate's job.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def _to_normalised_tensor(image: Image.Image | torch.Tensor) -> torch.Tensor:
    pixels = F.to_dtype(F.to_image(image), torch.float32, scale=True)
    return F.normalize(pixels, list(IMAGENET_MEAN), list(IMAGENET_STD)).as_subclass(torch.Tensor)


class CoarseTransform:
    """PIL RGB image -> ``(3, size, size)`` float32, normalised with ImageNet mean/std."""

    def __init__(self, size: int) -> None:
        if size <= 0:
            raise ValueError(f"size must be a positive number of pixels, got {size}")
        self.size = size
        self._geometry = v2.Compose([v2.Resize(size, antialias=True), v2.CenterCrop(size)])

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return _to_normalised_tensor(self._geometry(F.to_image(image)))


def resized_size(height: int, width: int, shorter: int, max_size: int | None) -> tuple[int, int]:
    """``(h, w)`` after resizing the shorter side to ``shorter`` with the longer side at most ``max_size``.

    maskrcnn-benchmark's ``Resize.get_size`` (used by GLIP): when the longer side would exceed
    ``max_size``, the shorter side becomes ``round(max_size * short / long)``; sides are truncated to int.
    """
    if max_size is not None:
        short, long = float(min(height, width)), float(max(height, width))
        if long / short * shorter > max_size:
            shorter = int(round(max_size * short / long))
    if (width <= height and width == shorter) or (height <= width and height == shorter):
        return height, width
    if width < height:
        return int(shorter * height / width), shorter
    return shorter, int(shorter * width / height)


class FineTransform:
    """Multi-scale resize with boxes, then ImageNet normalisation.

    ``min_sizes``: the shorter-side choices (GLIP: 480..800 step 32; the demo uses small sizes, e.g.
    128..256); ``max_size``: the longer-side cap (GLIP: 1333). For evaluation pass one size.
    ``__call__(image, boxes, generator)``: ``image`` a PIL RGB image, ``boxes`` ``(G, 4)`` float32 xyxy
    in its pixels; ``generator`` (a seeded ``torch.Generator``) draws the size, so an item's scale depends
    only on its seed. Returns ``pixel_values (3, h, w)`` float32, ``boxes (G, 4)`` float32 xyxy in the
    resized pixels, and ``(h, w)``.
    """

    def __init__(self, min_sizes: Sequence[int], max_size: int | None = None) -> None:
        if not min_sizes or any(int(s) <= 0 for s in min_sizes):
            raise ValueError(f"min_sizes must be a non-empty list of positive sizes, got {min_sizes!r}")
        if max_size is not None and max_size < max(min_sizes):
            raise ValueError(f"max_size ({max_size}) must be >= the largest of min_sizes ({max(min_sizes)})")
        self.min_sizes = tuple(int(s) for s in min_sizes)
        self.max_size = max_size

    def __call__(self, image: Image.Image, boxes: torch.Tensor,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        if boxes.ndim != 2 or boxes.shape[-1] != 4:
            raise ValueError(f"boxes must be (G, 4) xyxy, got shape {tuple(boxes.shape)}")
        choice = int(torch.randint(len(self.min_sizes), (1,), generator=generator)) if len(self.min_sizes) > 1 else 0
        width, height = image.size
        new_h, new_w = resized_size(height, width, self.min_sizes[choice], self.max_size)
        pixels = F.to_image(image)
        box_tensor = tv_tensors.BoundingBoxes(boxes.float(), format="XYXY", canvas_size=(height, width))
        pixels, box_tensor = v2.Resize((new_h, new_w), antialias=True)(pixels, box_tensor)
        return _to_normalised_tensor(pixels), box_tensor.as_subclass(torch.Tensor), (new_h, new_w)
