"""Anchor grids as GLIP's anchor generator lays them out: location-major, ``anchors_per_location``
shapes per location (1 square, or 3 aspect ratios x 3 octave scales), levels concatenated."""

from __future__ import annotations

from collections.abc import Sequence

import torch

# FIBER/GLIP fine-grained training: 800 x 1344 input, P3-P7 (strides 8-128), anchor sizes 64-1024
FIBER_LEVELS = ((100, 168, 8.0, 64.0), (50, 84, 16.0, 128.0), (25, 42, 32.0, 256.0), (13, 21, 64.0, 512.0),
                (7, 11, 128.0, 1024.0))


def level_anchors(height: int, width: int, stride: float, size: float, anchors_per_location: int = 1,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """Anchors ``(height * width * anchors_per_location, 4)`` fp32 xyxy of one level; ``anchors_per_location``
    is 1 (squares of side ``size``) or 9 (aspect ratios 0.5, 1, 2 x scales 1, 2^(1/3), 2^(2/3))."""
    if anchors_per_location not in (1, 9):
        raise ValueError(f"anchors_per_location must be 1 or 9, got {anchors_per_location}")
    ys, xs = torch.meshgrid(torch.arange(height, device=device) * stride, torch.arange(width, device=device) * stride,
                            indexing="ij")
    centre = torch.stack([xs.flatten(), ys.flatten()], 1).float() + stride / 2
    if anchors_per_location == 1:
        shapes = torch.tensor([[size, size]], device=device)
    else:
        shapes = torch.tensor([[size * s * r ** -0.5, size * s * r ** 0.5]
                               for r in (0.5, 1.0, 2.0) for s in (1.0, 2 ** (1 / 3), 2 ** (2 / 3))], device=device)
    half = shapes[None] / 2
    return torch.cat([centre[:, None] - half, centre[:, None] + half], -1).reshape(-1, 4).float()


def pyramid(levels: Sequence[tuple[int, int, float, float]], anchors_per_location: int = 1,
            device: torch.device | str = "cpu") -> tuple[torch.Tensor, list[int]]:
    """Anchors ``(A, 4)`` of levels ``(height, width, stride, size)`` concatenated, and the level sizes."""
    parts = [level_anchors(h, w, s, z, anchors_per_location, device) for h, w, s, z in levels]
    return torch.cat(parts), [p.shape[0] for p in parts]
