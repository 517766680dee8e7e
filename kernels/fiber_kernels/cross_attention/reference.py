"""Eager baselines of FIBER's gated cross-attention: the exact math of the official code, and the oracle.

Image→text (``WindowAttention`` in microsoft/FIBER ``swin_transformer.py``): the text keys and values
``(B_text, H, N_text, D)`` are ``repeat_interleave``-d once per window, the query is multiplied by
``D ** -0.5`` before ``q @ kᵀ``, the text padding enters as an additive ``-10000`` on the logits
(HF's extended attention mask), then softmax and ``@ v``. Text→image (``RobertaLayer`` in
``roberta.py``) is the same core with one query group per key batch and no key mask. The fused
output step is ``x + alpha * proj(attn)`` (FIBER) or ``x + tanh(alpha) * proj(attn)`` (Flamingo).

One departure from FIBER, by contract: a query row whose keys are *all* padding (FIBER never has one,
every caption keeps its ``<s>`` token) returns zeros and zero gradients instead of the uniform
average that ``-10000`` on every logit would give.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MASK_VALUE = -10000.0  # HF / FIBER extended attention mask: (1 - mask) * -10000
GATES = ("identity", "tanh")


def fully_padded_rows(key_padding_mask: torch.Tensor, groups: int) -> torch.Tensor:
    """``(B, 1, 1, 1)`` bool: True where every key of the query batch's key group is padding."""
    all_pad = key_padding_mask.all(dim=-1)
    return torch.repeat_interleave(all_pad, groups, dim=0).view(-1, 1, 1, 1)


def cross_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                              key_padding_mask: torch.Tensor | None = None,
                              scale: float | None = None) -> torch.Tensor:
    """FIBER's eager cross-attention. q ``(B, H, Nq, D)``, k/v ``(Bk, H, Nk, D)`` with ``B % Bk == 0``.

    ``key_padding_mask``: bool ``(Bk, Nk)``, True = padding. Query batch ``b`` uses key batch
    ``b // (B // Bk)`` (FIBER's window order). Returns ``(B, H, Nq, D)`` in the dtype of ``q``.
    """
    groups = q.shape[0] // k.shape[0]
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    k_rep = torch.repeat_interleave(k, groups, dim=0)
    v_rep = torch.repeat_interleave(v, groups, dim=0)
    attn = (q * scale) @ k_rep.transpose(-2, -1)
    if key_padding_mask is not None:
        additive = (key_padding_mask.to(q.dtype) * MASK_VALUE).view(k.shape[0], 1, 1, k.shape[2])
        attn = attn + torch.repeat_interleave(additive, groups, dim=0)
    attn = attn.softmax(dim=-1)
    out = attn @ v_rep
    if key_padding_mask is not None:
        out = out.masked_fill(fully_padded_rows(key_padding_mask, groups), 0.0)
    return out


def gate_value(alpha: torch.Tensor, gate: str) -> torch.Tensor:
    """``g(alpha)``: ``alpha`` itself (FIBER) or ``tanh(alpha)`` (Flamingo)."""
    return torch.tanh(alpha) if gate == "tanh" else alpha


def gated_residual_linear_reference(x: torch.Tensor, a: torch.Tensor, weight: torch.Tensor,
                                    bias: torch.Tensor | None, alpha: torch.Tensor,
                                    gate: str = "identity") -> torch.Tensor:
    """``x + g(alpha) * (a @ weightᵀ + bias)`` as FIBER writes it (``x + self.alpha_i2t * self.proj_i2t(y)``).

    x ``(..., O)``, a ``(..., I)``, weight ``(O, I)``, bias ``(O,)`` or None, alpha with one element.
    """
    return x + gate_value(alpha, gate).to(x.dtype) * F.linear(a, weight, bias)
