"""Attention cores as FIBER runs them today, and the well-known alternatives, for the benchmarks.

Cross-attention (both FIBER directions): q ``(B, H, Nq, D)``, k/v ``(Bk, H, Nk, D)`` with
``B % Bk == 0`` (image windows of one image share its text, repeated per window as FIBER does),
optional ``key_padding_mask (Bk, Nk)`` bool, True = padding (the convention of
``fiber_kernels.cross_attention``); FIBER adds -10000 to padded logits (HF extended mask).
Image->text (FIBER's Swin ``WindowAttention``) scales q before ``q @ kᵀ``; text->image (RoBERTa)
divides the scores by sqrt(D): ``scale_query`` picks which, as the two cost different temporaries.
Window attention (Swin / FIBER image side): q/k/v ``(B_, nH, N, D)`` with ``B_ = images * nW``,
relative-position bias gathered from ``table ((2w-1)^2, nH)`` by ``rel_index (N, N)``, optional
shift mask ``(nW, N, N)`` with -100 between regions (Swin's values).

Eager cores are written out as FIBER's code does (``softmax(q kᵀ · scale + mask) v``); the
``sdpa_*`` variants compute the same with ``F.scaled_dot_product_attention``. The mask value is the
library's (``fiber_kernels.cross_attention.reference``); the benchmarks take the relative-position index,
the shift mask and the window geometry from ``fiber_kernels.window_attention`` too. The library's
``cross_attention_reference`` is not the eager core: by contract it zeroes query rows whose keys are all
padding (an extra masked fill) and always copies the keys, where FIBER's code does neither.

Also shared by the attention benchmarks: ``attention_flops`` (the FLOP count of one core) and
``cross_inputs`` (the trainable q, k, v and the caption padding of one cross-attention shape).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from fiber_kernels.cross_attention.reference import MASK_VALUE as MASKED_LOGIT

from bench.harness import UnsupportedCaseError, gpu_package_reason


def _expand_keys(t: torch.Tensor, groups: int) -> torch.Tensor:
    """``(Bk, ...)`` -> ``(Bk * groups, ...)``: each image's text repeated for its windows, as FIBER does."""
    return t if groups == 1 else t.repeat_interleave(groups, dim=0)


def _keys_per_query_batch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
                          ) -> tuple[int, torch.Tensor, torch.Tensor]:
    """``groups = B // Bk`` (windows per image) and k, v ``(Bk, ...)`` repeated to ``(B, ...)``, as FIBER does."""
    groups = q.shape[0] // k.shape[0]
    return groups, _expand_keys(k, groups), _expand_keys(v, groups)


def _additive_padding(key_padding_mask: torch.Tensor, groups: int, dtype: torch.dtype) -> torch.Tensor:
    """``(Bk, Nk)`` bool, True = padding -> ``(B, 1, 1, Nk)`` additive mask of 0 / -10000."""
    return _expand_keys(key_padding_mask, groups)[:, None, None, :].to(dtype) * MASKED_LOGIT


def eager_cross_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          key_padding_mask: torch.Tensor | None = None, scale_query: bool = True) -> torch.Tensor:
    """FIBER's eager cross-attention core; returns ``(B, H, Nq, D)``. Saves the ``(B, H, Nq, Nk)`` probabilities."""
    groups, k, v = _keys_per_query_batch(q, k, v)
    if scale_query:  # image->text, Swin style: q = q * scale; attn = q @ k^T
        scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    else:  # text->image, RoBERTa style: scores = q @ k^T / sqrt(d)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    if key_padding_mask is not None:
        scores = scores + _additive_padding(key_padding_mask, groups, scores.dtype)
    return torch.matmul(scores.softmax(dim=-1), v)


def sdpa_cross_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                         key_padding_mask: torch.Tensor | None = None, scale_query: bool = True) -> torch.Tensor:
    """The same with ``scaled_dot_product_attention`` (additive -10000 mask ``(B, 1, 1, Nk)``);
    ``scale_query`` is accepted for a common signature (SDPA scales inside the kernel)."""
    groups, k, v = _keys_per_query_batch(q, k, v)
    mask = None if key_padding_mask is None else _additive_padding(key_padding_mask, groups, q.dtype)
    if _fake_gpu(q):
        return _gpu_sdpa(q, k, v, mask)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


def _fake_gpu(t: torch.Tensor) -> bool:
    return t.device.type == "cuda" and not torch.cuda.is_available()


def _gpu_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """What SDPA runs on an sm80+ GPU, called directly for fake CUDA tensors (with no driver SDPA
    cannot query the device and falls back to its math backend): flash attention for fp16/bf16
    without a mask, else the memory-efficient kernel (the one that takes an additive mask)."""
    if mask is None and q.dtype in (torch.float16, torch.bfloat16):
        return torch.ops.aten._scaled_dot_product_flash_attention(q, k, v)[0]
    return torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, mask, True)[0]


def window_bias(table: torch.Tensor, rel_index: torch.Tensor) -> torch.Tensor:
    """Swin's gather: ``table ((2w-1)^2, nH)``, ``rel_index (N, N)`` -> bias ``(nH, N, N)``."""
    n = rel_index.shape[0]
    return table[rel_index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1).contiguous()


def eager_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, table: torch.Tensor,
                           rel_index: torch.Tensor, shift_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Swin/FIBER ``WindowAttention`` core; returns ``(B_, nH, N, D)``."""
    b_, heads, n, d = q.shape
    attn = (q * d ** -0.5) @ k.transpose(-2, -1)
    attn = attn + window_bias(table, rel_index).unsqueeze(0)
    if shift_mask is not None:
        windows = shift_mask.shape[0]
        attn = attn.view(b_ // windows, windows, heads, n, n) + shift_mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, heads, n, n)
    return attn.softmax(dim=-1) @ v


def sdpa_window_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, table: torch.Tensor,
                          rel_index: torch.Tensor, shift_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The same with SDPA: one additive mask ``bias + shift_mask`` of ``(nW, nH, N, N)`` broadcast over
    images through a 5-D view (a 4-D call would need the mask copied per image). On fake CUDA the
    memory-efficient kernel is called directly; it needs a 4-D bias, so the mask is materialised
    per window ``(B_, nH, N, N)`` as a GPU user of SDPA would have to."""
    b_, heads, n, d = q.shape
    mask = window_bias(table, rel_index).unsqueeze(0)  # (1, nH, N, N)
    if shift_mask is not None:
        mask = mask + shift_mask.unsqueeze(1)  # (nW, nH, N, N)
    windows = mask.shape[0]
    if _fake_gpu(q):
        full = mask.unsqueeze(0).expand(b_ // windows, windows, heads, n, n).reshape(b_, heads, n, n)
        return _gpu_sdpa(q, k, v, full)
    shape5 = (b_ // windows, windows, heads, n, d)
    out = F.scaled_dot_product_attention(q.view(shape5), k.view(shape5), v.view(shape5), attn_mask=mask)
    return out.view(b_, heads, n, d)


# flash-attn runs only on real NVIDIA GPUs (sm80+), fp16/bf16, with the package built; xformers'
# memory_efficient_attention too (0.0.35 has no CPU operator).
flash_attn_reason = gpu_package_reason("flash_attn", "PyPI ships only an sdist that needs CUDA to build",
                                       "flash-attn has no CPU kernel and no fake-tensor support; needs a real GPU")
xformers_reason = gpu_package_reason("xformers", "optional baseline (pip install xformers on a GPU host)",
                                     "xformers has no CPU operator (0.0.35); needs a real GPU")


def flash_cross_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                          key_padding_mask: torch.Tensor | None = None, scale_query: bool = True) -> torch.Tensor:
    """flash-attn ``flash_attn_func`` (layout ``(B, N, H, D)``); takes no padding mask."""
    from flash_attn import flash_attn_func  # type: ignore[import-not-found]

    if key_padding_mask is not None:
        raise ValueError("key_padding_mask: flash_attn_func takes none (use flash_attn_varlen_func)")
    _, k, v = _keys_per_query_batch(q, k, v)
    return flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)


def xformers_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """xformers ``memory_efficient_attention`` with a dense additive bias broadcastable to ``(B, H, Nq, Nk)``."""
    import xformers.ops as xops  # type: ignore[import-not-found]

    if bias is not None:
        bias = bias.expand(q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    out = xops.memory_efficient_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_bias=bias)
    return out.transpose(1, 2)


def xformers_cross_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                             key_padding_mask: torch.Tensor | None = None, scale_query: bool = True) -> torch.Tensor:
    """Cross-attention with xformers: keys repeated per window, -10000 padding bias ``(B, 1, 1, Nk)``."""
    groups, k, v = _keys_per_query_batch(q, k, v)
    bias = None if key_padding_mask is None else _additive_padding(key_padding_mask, groups, q.dtype)
    return xformers_attention(q, k, v, bias)


def attention_flops(batch: int, heads: int, nq: int, nk: int, head_dim: int) -> dict[str, float]:
    """Model FLOPs of one attention core (matmuls only; softmax and mask adds not counted):
    fwd = 2 matmuls (q kᵀ, p v) x 2·Nq·Nk·D = 4·B·H·Nq·Nk·D; bwd = 4 matmuls (dv, dp, dq, dk) =
    8·B·H·Nq·Nk·D (no recomputation counted); full = fwd + bwd = 12·B·H·Nq·Nk·D."""
    fwd = 4.0 * batch * heads * nq * nk * head_dim
    return {"fwd": fwd, "bwd": 2.0 * fwd, "full": 3.0 * fwd}


def padded_keys(key_batch: int, keys: int, pad: int, device: torch.device) -> torch.Tensor | None:
    """``(Bk, Nk)`` bool, True on the last ``pad`` keys (caption padding); None when pad = 0."""
    if not pad:
        return None
    mask = torch.zeros(key_batch, keys, device=device, dtype=torch.bool)
    mask[:, keys - pad:] = True
    return mask


def cross_inputs(provider: str, dims: dict[str, int], device: torch.device, dtype: torch.dtype
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Random trainable q ``(B, H, Nq, D)`` and k, v ``(Bk, H, Nk, D)``, and the key padding mask ``(Bk, Nk)``
    on the last ``pad`` keys, from a shape's ``dims`` (B, Bk, H, Nq, Nk, D, pad). flash-attn takes no padding
    mask: a padded shape is ``UnsupportedCaseError`` for it."""
    B, Bk, H, Nq, Nk, D, pad = (dims[k] for k in ("B", "Bk", "H", "Nq", "Nk", "D", "pad"))
    q = torch.randn(B, H, Nq, D, device=device, dtype=dtype, requires_grad=True)
    k, v = (torch.randn(Bk, H, Nk, D, device=device, dtype=dtype, requires_grad=True) for _ in range(2))
    mask = padded_keys(Bk, Nk, pad, device)
    if provider == "flash_attn" and mask is not None:
        raise UnsupportedCaseError("flash_attn: key padding needs flash_attn_varlen_func (unpadded keys); not wired")
    return q, k, v, mask
