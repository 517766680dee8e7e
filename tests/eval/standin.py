"""A stand-in for ``FiberModel`` with the API's call surface and outputs that tests can predict.

Coarse: an image's feature is its pixel colour ``pixel_values[:, :, 0, 0]`` (3,), a caption's feature is
``TEXT_TABLE[input_ids[:, 1]]`` (3,); the ITM match logit is 1 when the image's id (``pixel_values[:, 0, 1, 0]``)
equals the caption's ``input_ids[:, 2]``, else 0 (an oracle). Fine: fixed anchors, zero box deltas and
centerness logits, and token logits ``GROUNDING_TABLE[anchor, input_ids]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import nn

TEXT_TABLE = torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0],  # ids 0-2: specials
                           [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 1.0, 1.0]])
ANCHORS = torch.tensor([[0.0, 0.0, 9.0, 9.0], [10.0, 10.0, 29.0, 29.0], [30.0, 0.0, 49.0, 19.0],
                        [0.0, 30.0, 19.0, 49.0]])
# Token id 5 likes anchor 1 most, id 6 anchor 2, id 7 anchor 0; everything else scores -5.
GROUNDING_TABLE = torch.full((4, 8), -5.0)
GROUNDING_TABLE[1, 5], GROUNDING_TABLE[2, 6], GROUNDING_TABLE[0, 7] = 5.0, 5.0, 5.0
GROUNDING_TABLE[3, 6] = -1.0  # anchor 3 is the second choice of id 6


@dataclass
class Lower:
    """Stand-in for ImageLower / TextLower: one tensor of rows."""

    rows: torch.Tensor
    mask: torch.Tensor | None = None

    def select(self, index: torch.Tensor) -> Lower:
        return Lower(self.rows[index], None if self.mask is None else self.mask[index])


class StandInFiber(nn.Module):
    """Counts the rows that go through the lower layers (``image_rows``, ``text_rows``)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))  # gives the model a device
        self.image_rows = 0
        self.text_rows = 0

    def image_lower(self, pixel_values: torch.Tensor) -> Lower:
        self.image_rows += pixel_values.shape[0]
        return Lower(pixel_values)

    def text_lower(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Lower:
        self.text_rows += input_ids.shape[0]
        return Lower(input_ids, attention_mask)

    def upper(self, img: Lower, txt: Lower, fusion: bool = True) -> SimpleNamespace:
        if img.rows.shape[0] != txt.rows.shape[0]:
            raise ValueError("img and txt must have the same batch")
        return SimpleNamespace(image_embeds=img.rows[:, :, 0, 0], text_embeds=TEXT_TABLE[txt.rows[:, 1]],
                               image_id=img.rows[:, 0, 1, 0].long(), text_image_id=txt.rows[:, 2],
                               input_ids=txt.rows, fusion=fusion)

    def itc_head(self, image_embeds: torch.Tensor, text_embeds: torch.Tensor):  # noqa: ANN201
        normalise = torch.nn.functional.normalize
        return normalise(image_embeds, dim=-1), normalise(text_embeds, dim=-1), torch.ones(1)

    def itm_head(self, out: SimpleNamespace) -> torch.Tensor:
        assert out.fusion
        match = (out.image_id == out.text_image_id).float()
        return torch.stack([1 - match, match], dim=1)

    def grounding_head(self, out: SimpleNamespace) -> SimpleNamespace:
        batch = out.input_ids.shape[0]
        logits = GROUNDING_TABLE[:, out.input_ids].permute(1, 0, 2)  # (B, A, T)
        return SimpleNamespace(anchors=ANCHORS, num_anchors_per_level=[3, 1], cls_logits=logits,
                               box_regression=torch.zeros(batch, 4, 4), centerness=torch.zeros(batch, 4))
