"""``patch_torchvision_swin(model)``: fused window attention in every block of a torchvision Swin (V1)."""

from __future__ import annotations

from torch import nn

from ._swin_leaf import TraceableSwinAttention, refuse_swin_v2


def patch_torchvision_swin(model: nn.Module, *, backend: str = "auto") -> nn.Module:
    """Replace every ``torchvision.models.swin_transformer.ShiftedWindowAttention`` of ``model`` in place.

    torchvision's attention module already owns the pad / shift / partition / merge around the
    attention, so it is swapped whole for a ``FusedSwinAttention`` holding the same linears, table
    and index buffer (same Parameter objects, same state dict), with torchvision's rules: pad then
    shift, no shift along an axis covered by one window. The op is a ``torch.fx`` leaf, so the
    patched model traces with ``torch.fx.symbolic_trace``. Returns ``model``. Raises ``ValueError``
    for Swin V2 attention (cosine attention is not fused), attention dropout > 0, or no Swin
    attention; ``ImportError`` without torchvision.
    """
    from torchvision.models.swin_transformer import ShiftedWindowAttention, ShiftedWindowAttentionV2

    refuse_swin_v2(model, (ShiftedWindowAttentionV2,), "a torchvision")
    targets = [(name, module) for name, module in model.named_modules() if isinstance(module, ShiftedWindowAttention)]
    if not targets:
        raise ValueError(f"no torchvision ShiftedWindowAttention found in {type(model).__name__}")
    for name, attn in targets:
        if not name:
            raise ValueError("model is itself a ShiftedWindowAttention: patch the model that holds it")
        if attn.attention_dropout != 0.0:
            raise ValueError(f"{name}: attention dropout {attn.attention_dropout} is not fused")
    for name, attn in targets:
        head_dim = attn.proj.in_features // attn.num_heads
        fused = TraceableSwinAttention.from_module(attn, window_size=tuple(attn.window_size),
                                                  shift_size=tuple(attn.shift_size), scale=head_dim ** -0.5,
                                                  no_shift_in_single_window=True, proj_drop=attn.dropout)
        fused.backend = backend
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, fused)
    return model
