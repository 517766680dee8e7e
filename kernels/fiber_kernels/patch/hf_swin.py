"""``patch_hf_swin(model)``: fused window attention in every Swin layer of a live HF ``transformers`` model.

Covers ``transformers.models.swin`` (``SwinModel``, ``SwinForImageClassification``,
``SwinBackbone``, ...: every ``SwinLayer``) and Donut's encoder (``DonutSwinModel``: every
``DonutSwinLayer``, a separate copy of the older Swin layout with ``query``/``key``/``value``).
Each layer's class is swapped for a subclass whose ``forward`` runs the layer norm, then
``fiber_kernels.window_attention`` on the whole ``(B, H, W, 3C)`` qkv map (pad, shift, partition,
mask, merge, unshift and crop fused), then the layer's own output projection, residual and MLP.
No module is replaced or added: parameters are the same objects, state dict keys are unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from . import _swin_leaf
from ._swap import SwappedClass, swap_class

_NO_ATTENTIONS = ("output_attentions=True: the fused window attention never forms the attention weights; run the "
                  "unpatched model to inspect them")


def _fused_window_attention(x: torch.Tensor, q: nn.Linear, k: nn.Linear, v: nn.Linear, table: torch.Tensor,
                            num_heads: int, window: int, shift: int, backend: str) -> torch.Tensor:
    """x ``(B, H, W, C)`` normed, unpadded tokens -> ``(B, H, W, C)`` attention before the output
    projection; the three HF linears are applied as one ``(3C, C)`` projection (same parameters)."""
    bias = None if q.bias is None else torch.cat([q.bias, k.bias, v.bias])
    window, shift = int(window), int(shift)
    return _swin_leaf.swin_window_attention(x, torch.cat([q.weight, k.weight, v.weight]), bias, table, num_heads,
                                            (window, window), (shift, shift), (x.shape[-1] // num_heads) ** -0.5,
                                            backend=backend)


def _clamp_window(layer: nn.Module, input_dimensions: tuple[int, int], always_partition: bool,
                  table_window: int) -> None:
    """HF's own (stateful) stage rule, then a clear error where HF's table cannot serve the window."""
    if not always_partition:
        layer.set_shift_and_window_size(input_dimensions)
    if int(layer.window_size) != table_window:
        raise ValueError(f"input_dimensions {tuple(input_dimensions)}: HF's Swin layer clamped its window to "
                         f"{int(layer.window_size)} tokens, but its relative position table is for {table_window}x"
                         f"{table_window} windows (the unpatched layer fails here too); feed at least {table_window} "
                         "tokens per side")


def _refuse_recorded_attentions() -> None:
    """transformers 5.x records ``output_attentions`` through hooks the layer never sees; refuse here."""
    from transformers.utils.output_capturing import _active_collector

    collected = _active_collector.get()
    if collected is not None and "attentions" in collected:
        raise ValueError(_NO_ATTENTIONS)


class _FusedSwinLayer(SwappedClass):
    """Mixed in before ``transformers.models.swin.modeling_swin.SwinLayer`` (transformers 5.x layout)."""

    fused_backend: str = "auto"

    @staticmethod
    def attention_dropout(layer: nn.Module) -> float:
        if not hasattr(layer.attention, "q_proj"):
            raise ValueError(f"{type(layer).__name__} has the transformers 4.x layout (attention.self.query/key/"
                             "value); patch_hf_swin fuses the transformers 5.x SwinLayer (q_proj/k_proj/v_proj)")
        return layer.attention.attention_dropout

    def forward(self, hidden_states: torch.Tensor, input_dimensions: tuple[int, int], always_partition: bool = False,
                **kwargs: object) -> tuple[torch.Tensor, None]:
        """hidden_states ``(B, H·W, C)`` -> ``((B, H·W, C), None)``; recording attentions raises."""
        _refuse_recorded_attentions()
        attn = self.attention
        _clamp_window(self, input_dimensions, always_partition, attn.relative_position_bias.window_size[0])
        height, width = input_dimensions
        batch_size, _, channels = hidden_states.shape
        normed = self.layernorm_before(hidden_states).view(batch_size, height, width, channels)
        out = _fused_window_attention(normed, attn.q_proj, attn.k_proj, attn.v_proj,
                                      attn.relative_position_bias.relative_position_bias_table,
                                      attn.num_attention_heads, self.window_size, self.shift_size, self.fused_backend)
        out = self.dropout(attn.o_proj(out)).view(batch_size, height * width, channels)
        hidden_states = hidden_states + self.drop_path(out)
        return self.dropout(self.mlp(self.layernorm_after(hidden_states))) + hidden_states, None


class _FusedDonutSwinLayer(SwappedClass):
    """Mixed in before ``transformers.models.donut.modeling_donut_swin.DonutSwinLayer``."""

    fused_backend: str = "auto"

    @staticmethod
    def attention_dropout(layer: nn.Module) -> float:
        return layer.attention.self.dropout.p

    def forward(self, hidden_states: torch.Tensor, input_dimensions: tuple[int, int],
                output_attentions: bool | None = False, always_partition: bool | None = False
                ) -> tuple[torch.Tensor]:
        """hidden_states ``(B, H·W, C)`` -> ``((B, H·W, C),)``; ``output_attentions=True`` raises."""
        if output_attentions:
            raise ValueError(_NO_ATTENTIONS)
        attn = self.attention
        _clamp_window(self, input_dimensions, bool(always_partition), attn.self.window_size[0])
        height, width = input_dimensions
        batch_size, _, channels = hidden_states.shape
        normed = self.layernorm_before(hidden_states).view(batch_size, height, width, channels)
        out = _fused_window_attention(normed, attn.self.query, attn.self.key, attn.self.value,
                                      attn.self.relative_position_bias_table, attn.self.num_attention_heads,
                                      self.window_size, self.shift_size, self.fused_backend)
        out = attn.output.dropout(attn.output.dense(out)).view(batch_size, height * width, channels)
        hidden_states = hidden_states + self.drop_path(out)
        return (hidden_states + self.output(self.intermediate(self.layernorm_after(hidden_states))),)


def _targets() -> dict[type, type]:
    """HF layer class -> the mixin that fuses it."""
    from transformers.models.donut.modeling_donut_swin import DonutSwinLayer
    from transformers.models.swin.modeling_swin import SwinLayer

    return {SwinLayer: _FusedSwinLayer, DonutSwinLayer: _FusedDonutSwinLayer}


def _refuse_swin_v2(model: nn.Module) -> None:
    from transformers.models.swinv2.modeling_swinv2 import Swinv2Layer

    _swin_leaf.refuse_swin_v2(model, (Swinv2Layer,), "an HF")


def patch_hf_swin(model: nn.Module, *, backend: str = "auto") -> nn.Module:
    """Fuse the window attention of every ``SwinLayer`` / ``DonutSwinLayer`` of ``model`` in place.

    The layers keep HF's semantics: pad the normed map with zeros (padded tokens hold the qkv
    bias), then shift; HF's stage rule (window = shift-free ``min(H, W)`` when the map is no larger
    than a window, unless ``always_partition``) is applied by HF's own ``set_shift_and_window_size``.
    ``backend`` is ``window_attention``'s. Layers already patched are re-set to ``backend``.
    Returns ``model``; ``hf_swin_patched_layers(model)`` names the fused layers.

    Raises ``ValueError`` for Swin V2 (``Swinv2Layer``: cosine attention and continuous position bias
    are not fused), a transformers 4.x ``SwinLayer`` (``attention.self.query/key/value``), when
    ``model`` has no HF Swin layer, or attention-probability dropout is > 0 (not fused;
    ``attention_probs_dropout_prob=0``); ``ImportError`` without transformers.
    The attention weights are never formed: ``output_attentions=True`` raises ``ValueError``.
    """
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str ('auto', 'triton', 'cuda', 'torch'), got {type(backend).__name__}")
    _refuse_swin_v2(model)
    targets = _targets()
    layers = []
    for name, layer in model.named_modules():
        base = next((cls for cls in type(layer).__mro__ if cls in targets), None)
        if base is None:
            continue
        mixin = targets[base]
        p = mixin.attention_dropout(layer)
        if p != 0.0:
            raise ValueError(f"{name}: attention dropout {p} is not fused; build the model with "
                             "attention_probs_dropout_prob=0")
        layers.append((layer, mixin))
    if not layers:
        raise ValueError(f"no HF SwinLayer / DonutSwinLayer found in {type(model).__name__}")
    for layer, mixin in layers:
        swap_class(layer, mixin)
        layer.fused_backend = backend
    return model


def hf_swin_patched_layers(model: nn.Module) -> list[str]:
    """Names of the layers of ``model`` that ``patch_hf_swin`` fused."""
    fused = (_FusedSwinLayer, _FusedDonutSwinLayer)
    return [name for name, module in model.named_modules() if isinstance(module, fused)]
