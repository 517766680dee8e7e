"""What the model returns: lower-layer states (reusable by several upper passes), outputs, grounding."""

from __future__ import annotations

from dataclasses import dataclass

import torch


def _check_index(index: object, batch: int, device: torch.device) -> torch.Tensor:
    if not isinstance(index, torch.Tensor) or index.dtype != torch.int64 or index.dim() != 1:
        raise TypeError(f"index must be a 1-D torch.int64 tensor (M,), got "
                        f"{index.dtype if isinstance(index, torch.Tensor) else type(index).__name__}"
                        f"{tuple(index.shape) if isinstance(index, torch.Tensor) else ''}")
    if index.device != device:
        raise ValueError(f"index must be on {device}, got {index.device}")
    if index.numel() and (int(index.min()) < 0 or int(index.max()) >= batch):
        raise ValueError(f"index values must lie in [0, {batch}), got min {int(index.min())} max {int(index.max())}")
    return index


@dataclass
class ImageLower:
    """Swin states just before the first fused block, for ``FiberModel.upper``.

    tokens: ``(B, H_s, W_s, C_s)`` input of the first fused block (channels-last, unpadded).
    stage_outputs: NHWC outputs of the Swin stages 2, 3, ... already completed (before the next
        downsample), in stage order; the upper pass adds the rest.
    """

    tokens: torch.Tensor
    stage_outputs: tuple[torch.Tensor, ...]

    @property
    def batch_size(self) -> int:
        return self.tokens.shape[0]

    def select(self, index: torch.Tensor) -> ImageLower:
        """Rows ``index`` (int64 ``(M,)``, repeats allowed): the same states for another pairing."""
        index = _check_index(index, self.batch_size, self.tokens.device)
        return ImageLower(self.tokens[index], tuple(out[index] for out in self.stage_outputs))


@dataclass
class TextLower:
    """RoBERTa states after the unfused lower layers.

    hidden: ``(B, T, D)``; attention_mask: ``(B, T)`` int64 0/1 (1 = real token).
    """

    hidden: torch.Tensor
    attention_mask: torch.Tensor

    @property
    def batch_size(self) -> int:
        return self.hidden.shape[0]

    def select(self, index: torch.Tensor) -> TextLower:
        """Rows ``index`` (int64 ``(M,)``, repeats allowed)."""
        index = _check_index(index, self.batch_size, self.hidden.device)
        return TextLower(self.hidden[index], self.attention_mask[index])


@dataclass
class FiberOutput:
    """Outputs of one upper pass.

    image_tokens: ``(B, L, C)`` last Swin stage tokens, row-major ``(y, x)``; after the final Swin
        ``norm`` in dual-encoder passes (``fusion=False``, FIBER's image-only path), without it in
        fused passes (FIBER's fused path feeds the un-normed tokens to its heads).
    text_tokens: ``(B, T, D)`` last RoBERTa layer.
    image_embeds: ``(B, C)`` mean of ``image_tokens``; text_embeds: ``(B, D)`` first token.
    image_features: NCHW maps ``(B, C_s, H_s, W_s)`` of Swin stages 2-4 (stage outputs before the
        next downsample; through the per-stage LayerNorms when the detection head is built).
    text_attention_mask: ``(B, T)`` the 0/1 mask the pass used.
    """

    image_tokens: torch.Tensor
    text_tokens: torch.Tensor
    image_embeds: torch.Tensor
    text_embeds: torch.Tensor
    image_features: tuple[torch.Tensor, ...]
    text_attention_mask: torch.Tensor


@dataclass
class GroundingOutput:
    """ATSS vision-language head outputs over P3-P7 (strides 8-128), one anchor per location.

    anchors: ``(A, 4)`` fp32 xyxy input pixels (GLIP's generator: centre ``s*j + (s-1)/2``, side
        ``anchor_scale * s``, corners ``centre -/+ (side-1)/2``); levels concatenated in order,
        row-major ``(y, x)`` within a level.
    num_anchors_per_level: anchors of each level.
    cls_logits: ``(B, A, T)`` word-region alignment logits (GLIP's dot-product logits; text padding
        is not masked here).
    box_regression: ``(B, A, 4)`` deltas for ``BoxCoder`` weights (10, 10, 5, 5), GLIP's +1 convention.
    centerness: ``(B, A)`` logits.
    """

    anchors: torch.Tensor
    num_anchors_per_level: list[int]
    cls_logits: torch.Tensor
    box_regression: torch.Tensor
    centerness: torch.Tensor
