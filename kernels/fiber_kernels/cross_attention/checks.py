"""The argument checks of grouped cross-attention, shared by the public op (``api.py``) and the CUDA
launchers (``cuda.py``): each failure names the argument and the expected shape, dtype or device."""

from __future__ import annotations

import torch

from .._validate import FLOAT_DTYPES, check_same_device, check_same_dtype, check_tensor

Q_SHAPE = "(B, H, Nq, D)"
KV_SHAPE = "(Bk, H, Nk, D)"


def check_cross_attention(q: object, k: object, v: object, key_padding_mask: object) -> None:
    """q ``(B, H, Nq, D)``, k and v ``(Bk, H, Nk, D)`` non-empty with ``B % Bk == 0``, one float dtype and one
    device; ``key_padding_mask`` None or bool ``(Bk, Nk)``. Raises ``TypeError`` / ``ValueError``."""
    check_tensor("q", q, ndim=4, dtypes=FLOAT_DTYPES, shape_doc=Q_SHAPE)
    check_tensor("k", k, ndim=4, dtypes=FLOAT_DTYPES, shape_doc=KV_SHAPE)
    check_tensor("v", v, ndim=4, dtypes=FLOAT_DTYPES, shape_doc=KV_SHAPE)
    if key_padding_mask is not None:
        check_tensor("key_padding_mask", key_padding_mask, ndim=2, dtypes=(torch.bool,), shape_doc="(Bk, Nk)")
    check_same_device(q=q, k=k, v=v, key_padding_mask=key_padding_mask)
    check_same_dtype(q=q, k=k, v=v)
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape {KV_SHAPE}, got {tuple(k.shape)} and {tuple(v.shape)}")
    if q.shape[1] != k.shape[1]:
        raise ValueError(f"q {Q_SHAPE} and k {KV_SHAPE} must have the same number of heads H, "
                         f"got {q.shape[1]} and {k.shape[1]}")
    if q.shape[3] != k.shape[3]:
        raise ValueError(f"q {Q_SHAPE} and k {KV_SHAPE} must have the same head dim D, "
                         f"got {q.shape[3]} and {k.shape[3]}")
    if q.shape[0] % k.shape[0] != 0:
        raise ValueError(f"the query batch B must be a multiple of the key batch Bk (query batch b uses keys "
                         f"b // (B // Bk)), got B={q.shape[0]} and Bk={k.shape[0]}")
    if key_padding_mask is not None and tuple(key_padding_mask.shape) != (k.shape[0], k.shape[2]):
        raise ValueError(f"key_padding_mask must have shape (Bk, Nk) = {(k.shape[0], k.shape[2])}, "
                         f"got {tuple(key_padding_mask.shape)}")
