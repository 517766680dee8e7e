"""FIBER's two fusion branches as modules on the fused kernels, with FIBER's parameter names.

``ImageToTextFusion`` is the image→text branch of ``WindowAttention`` (microsoft/FIBER
``swin_transformer.py``): its state dict keys are those of a FIBER ``WindowAttention`` that end in
``qkv_text_i2t``, ``qkv_i2t``, ``proj_i2t``, ``alpha_i2t`` and ``norm_i2t_i``.
``TextToImageFusion`` is the text→image branch of ``RobertaLayer`` (``roberta.py``): keys
``crossattention_t2i.{self.query, self.key, self.value, output.dense, output.LayerNorm}`` and ``alpha_t2i``.
Strip the prefix up to the block (``...blocks.14.attn.`` / ``...encoder.layer.6.``) and they load.

Fusion off is a mode: ``other=None`` returns the input tensor itself and runs nothing. Dropout is
not applied (FIBER trains these branches with dropout 0).
"""

from __future__ import annotations

import torch
from torch import nn

from .._validate import check_choice, check_positive_int, check_tensor
from ..cross_attention import cross_attention, gated_residual_linear
from ..cross_attention.reference import GATES


def _check_tokens(name: str, value: object, channels: int, shape_doc: str) -> torch.Tensor:
    """A 3-D tensor ``shape_doc`` whose last dim is ``channels``; ValueError / TypeError naming ``name``."""
    check_tensor(name, value, ndim=3, shape_doc=shape_doc, allow_empty=True)
    if value.shape[-1] != channels:
        raise ValueError(f"{name} must be {shape_doc} with {channels} channels, got shape {tuple(value.shape)}")
    return value


def _split_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    """``(B, N, heads * D)`` → ``(B, heads, N, D)`` (a view)."""
    return t.view(t.shape[0], t.shape[1], heads, t.shape[2] // heads).transpose(1, 2)


class _GatedCrossAttention(nn.Module):
    """What both branches share: the checked head count, gate and backend, and :meth:`_attend_and_gate`."""

    def __init__(self, dim_name: str, dim: object, num_heads: object, gate: object, backend: str) -> None:
        super().__init__()
        check_positive_int(dim_name, dim)
        check_positive_int("num_heads", num_heads)
        if dim % num_heads != 0:
            raise ValueError(f"{dim_name} must be divisible by num_heads, got {dim_name}={dim}, "
                             f"num_heads={num_heads}")
        check_choice("gate", gate, GATES)
        self.num_heads = num_heads
        self.gate = gate
        self.backend = backend

    def _attend_and_gate(self, x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                         key_padding_mask: torch.Tensor | None, dense: nn.Linear, alpha: torch.Tensor) -> torch.Tensor:
        """``x + g(alpha) * dense(merged heads of cross_attention(q, k, v))``: q ``(B, H, N, D)``, k and v
        ``(Bk, H, Nk, D)`` (query groups sharing keys), x ``(B, N, H * D)``; returns ``(B, N, H * D)``."""
        batch, heads, tokens, head_dim = q.shape
        attn = cross_attention(q, k, v, key_padding_mask, head_dim ** -0.5, backend=self.backend)
        attn = attn.transpose(1, 2).reshape(batch, tokens, heads * head_dim)
        return gated_residual_linear(x, attn, dense.weight, dense.bias, alpha, self.gate, backend=self.backend)


class ImageToTextFusion(_GatedCrossAttention):
    """Window tokens attend to the text: ``x + g(alpha_i2t) * proj_i2t(attn(qkv_i2t(norm_i2t_i(x)), text))``.

    ``x``: ``(nW * B, N, dim)`` window-layout tokens (window ``w`` of image ``i`` at ``i * nW + w``, as
    FIBER's ``window_partition``), the output of the window self-attention. ``other``: text states
    ``(B, N_text, dim_text)``; ``key_padding_mask``: bool ``(B, N_text)``, True = padding (FIBER's
    ``text_masks == 0``). The text keys/values are computed once per image and shared by its windows.
    """

    def __init__(self, dim: int, num_heads: int, dim_text: int = 768, qkv_bias: bool = True,
                 norm_layer: type[nn.Module] = nn.LayerNorm, gate: str = "identity", backend: str = "auto") -> None:
        super().__init__("dim", dim, num_heads, gate, backend)
        check_positive_int("dim_text", dim_text)
        self.dim = dim
        self.qkv_text_i2t = nn.Linear(dim_text, dim * 2, bias=qkv_bias)
        self.qkv_i2t = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj_i2t = nn.Linear(dim, dim)
        self.alpha_i2t = nn.Parameter(torch.zeros(1))
        self.norm_i2t_i = norm_layer(dim)

    def forward(self, x: torch.Tensor, other: torch.Tensor | None = None,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(nW * B, N, dim)`` → ``(nW * B, N, dim)``; ``other=None`` returns ``x`` unchanged."""
        if other is None:
            return x
        _check_tokens("x", x, self.dim, "(nW * B, N, dim)")
        _check_tokens("other", other, self.qkv_text_i2t.in_features, "(B, N_text, dim_text)")
        windows, _, channels = x.shape
        text_batch, text_tokens, _ = other.shape
        if text_batch == 0 or windows % text_batch != 0:
            raise ValueError(f"x (nW * B, N, dim) must hold the same number nW >= 1 of windows for each of the B "
                             f"images of other (B, N_text, dim_text), got {windows} windows for B = {text_batch}")
        kv = self.qkv_text_i2t(other).view(text_batch, text_tokens, 2, self.num_heads, channels // self.num_heads)
        k, v = kv[:, :, 0].transpose(1, 2), kv[:, :, 1].transpose(1, 2)
        q = _split_heads(self.qkv_i2t(self.norm_i2t_i(x)), self.num_heads)
        return self._attend_and_gate(x, q, k, v, key_padding_mask, self.proj_i2t, self.alpha_i2t)


class _T2IProjections(nn.Module):
    """``crossattention_t2i.self``: query from the text, key/value from the image."""

    def __init__(self, hidden_size: int, dim_image: int) -> None:
        super().__init__()
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(dim_image, hidden_size)
        self.value = nn.Linear(dim_image, hidden_size)


class _T2IOutput(nn.Module):
    """``crossattention_t2i.output``: ``dense`` is the gated projection. ``LayerNorm`` exists in FIBER's
    state dict but its cross-attention path never applies it; it is kept only so the keys load."""

    def __init__(self, hidden_size: int, layer_norm_eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=layer_norm_eps)


class _T2IAttention(nn.Module):
    def __init__(self, hidden_size: int, dim_image: int, layer_norm_eps: float) -> None:
        super().__init__()
        self.self = _T2IProjections(hidden_size, dim_image)
        self.output = _T2IOutput(hidden_size, layer_norm_eps)


class TextToImageFusion(_GatedCrossAttention):
    """Text attends to the image: ``h + g(alpha_t2i) * dense(attn(query(h), key(img), value(img)))``.

    ``attention_output``: ``(B, N_text, hidden_size)``, the text self-attention output *before* its
    LayerNorm (FIBER's quirk: ``RobertaSelfOutput`` returns ``dense(ctx)`` and the layer applies
    ``LayerNorm(attention_output + hidden_states)`` after this branch). ``other``: previous-layer image
    tokens ``(B, N_image, dim_image)``; FIBER gives them no mask (``key_padding_mask`` optional, bool
    ``(B, N_image)``). Returns the fused ``attention_output``, to go into that LayerNorm.
    """

    def __init__(self, hidden_size: int = 768, num_heads: int = 12, dim_image: int = 512,
                 layer_norm_eps: float = 1e-12, gate: str = "identity", backend: str = "auto") -> None:
        super().__init__("hidden_size", hidden_size, num_heads, gate, backend)
        check_positive_int("dim_image", dim_image)
        self.hidden_size = hidden_size
        self.crossattention_t2i = _T2IAttention(hidden_size, dim_image, layer_norm_eps)
        self.alpha_t2i = nn.Parameter(torch.zeros(1))

    def forward(self, attention_output: torch.Tensor, other: torch.Tensor | None = None,
                key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, N_text, hidden_size)`` → same shape; ``other=None`` returns ``attention_output`` unchanged."""
        if other is None:
            return attention_output
        _check_tokens("attention_output", attention_output, self.hidden_size, "(B, N_text, hidden_size)")
        _check_tokens("other", other, self.crossattention_t2i.self.key.in_features, "(B, N_image, dim_image)")
        batch, image_batch = attention_output.shape[0], other.shape[0]
        if image_batch != batch:  # the op would group several captions per image: not this module's contract
            raise ValueError(f"attention_output (B, N_text, hidden_size) and other (B, N_image, dim_image) must "
                             f"have the same batch B, got {batch} and {image_batch}")
        projections = self.crossattention_t2i.self
        q = _split_heads(projections.query(attention_output), self.num_heads)
        k = _split_heads(projections.key(other), self.num_heads)
        v = _split_heads(projections.value(other), self.num_heads)
        return self._attend_and_gate(attention_output, q, k, v, key_padding_mask, self.crossattention_t2i.output.dense,
                                     self.alpha_t2i)
