"""Eager baselines of Swin window attention: the test oracle and the ``torch`` backend.

Semantics (official Swin ``models/swin_transformer.py``, FIBER's detection fork, torchvision's
``shifted_window_attention``): the normed map is zero-padded to multiples of the window *before*
the qkv projection, so padded tokens have ``q, k, v = qkv_bias``; the padded map is cyclically
shifted by ``-shift``; windows get ``q·kᵀ·scale + table[relative index] + shift mask`` (regions of
the padded map, ``mask_value`` between different regions), softmax, ``·v``; windows are merged,
shifted back and cropped. ``shift_first=True`` is timm's order (shift the unpadded map, then pad).

Two implementations: ``window_attention_reference`` spells every step out (the oracle) and
``window_attention_sdpa`` builds the additive bias+mask once and calls
``scaled_dot_product_attention`` (the CPU path).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def relative_position_index(window_h: int, window_w: int, device: torch.device | None = None) -> torch.Tensor:
    """Index into the ``((2Wh-1)(2Ww-1), nH)`` table for every (query, key) pair: ``(N, N)`` int64."""
    ys, xs = torch.meshgrid(torch.arange(window_h, device=device), torch.arange(window_w, device=device),
                            indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + window_h - 1
    dx = xs[:, None] - xs[None, :] + window_w - 1
    return dy * (2 * window_w - 1) + dx


def relative_position_bias(rpb_table: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """Swin's relative position bias of one window, ``(nH, N, N)`` with ``N = Wh·Ww``, gathered from
    rpb_table ``((2Wh-1)(2Ww-1), nH)`` (in the table's dtype, differentiable in it)."""
    n = window[0] * window[1]
    index = relative_position_index(*window, device=rpb_table.device)
    return rpb_table[index.view(-1)].view(n, n, rpb_table.shape[-1]).permute(2, 0, 1)


def _region_slices(size: int, window: int, shift: int) -> tuple[tuple[int, int], ...]:
    # Swin's slices (0, -window), (-window, -shift), (-shift, None) written with positive bounds;
    # with shift 0 the last slice covers everything, as the slice (-0, None) does in Swin.
    if shift == 0:
        return ((0, size),)
    return ((0, size - window), (size - window, size - shift), (size - shift, size))


def shift_attention_mask(padded_h: int, padded_w: int, window: tuple[int, int], shift: tuple[int, int],
                         mask_value: float = -100.0, device: torch.device | None = None,
                         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Swin's shifted-window mask on the padded map: ``(nW, N, N)``, ``mask_value`` across regions."""
    regions = torch.zeros(padded_h, padded_w, device=device)
    count = 0
    for top, bottom in _region_slices(padded_h, window[0], shift[0]):
        for left, right in _region_slices(padded_w, window[1], shift[1]):
            regions[top:bottom, left:right] = count
            count += 1
    windows = _partition(regions[None, :, :, None], window).squeeze(-1)  # (nW, N)
    differ = windows[:, :, None] != windows[:, None, :]
    return torch.where(differ, torch.tensor(mask_value, device=device), torch.tensor(0.0, device=device)).to(dtype)


def _partition(x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
    """``(B, Hp, Wp, C)`` → ``(B·nW, N, C)``, windows in row-major order."""
    B, Hp, Wp, C = x.shape
    wh, ww = window
    x = x.view(B, Hp // wh, wh, Wp // ww, ww, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B * (Hp // wh) * (Wp // ww), wh * ww, C)


def _merge(windows: torch.Tensor, window: tuple[int, int], B: int, Hp: int, Wp: int) -> torch.Tensor:
    """``(B·nW, N, C)`` → ``(B, Hp, Wp, C)``."""
    wh, ww = window
    C = windows.shape[-1]
    x = windows.view(B, Hp // wh, Wp // ww, wh, ww, C).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(B, Hp, Wp, C)


def _padded_shape(H: int, W: int, window: tuple[int, int]) -> tuple[int, int]:
    return -(-H // window[0]) * window[0], -(-W // window[1]) * window[1]


def windows_of_qkv(qkv: torch.Tensor, qkv_bias: torch.Tensor | None, window: tuple[int, int],
                    shift: tuple[int, int], shift_first: bool) -> tuple[torch.Tensor, int, int]:
    """Pad (tokens = qkv_bias) and shift the ``(B, H, W, 3C)`` map, then partition: ``(B·nW, N, 3C)``."""
    B, H, W, C3 = qkv.shape
    Hp, Wp = _padded_shape(H, W, window)
    fill = qkv_bias.to(qkv.dtype) if qkv_bias is not None else qkv.new_zeros(C3)
    if shift_first and any(shift):
        qkv = torch.roll(qkv, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    padded = fill.expand(B, Hp, Wp, C3).clone()
    padded[:, :H, :W] = qkv
    if not shift_first and any(shift):
        padded = torch.roll(padded, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    return _partition(padded, window), Hp, Wp


def merge_windows(out_windows: torch.Tensor, B: int, H: int, W: int, Hp: int, Wp: int, window: tuple[int, int],
              shift: tuple[int, int], shift_first: bool) -> torch.Tensor:
    """Merge windows, undo the shift and crop: ``(B, H, W, C)``."""
    out = _merge(out_windows, window, B, Hp, Wp)
    if not shift_first and any(shift):
        out = torch.roll(out, shifts=shift, dims=(1, 2))
    out = out[:, :H, :W]
    if shift_first and any(shift):
        out = torch.roll(out, shifts=shift, dims=(1, 2))
    return out.contiguous()


def split_heads(windows: torch.Tensor, num_heads: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    BW, N, C3 = windows.shape
    qkv = windows.reshape(BW, N, 3, num_heads, C3 // (3 * num_heads)).permute(2, 0, 3, 1, 4)
    return qkv[0], qkv[1], qkv[2]  # each (B·nW, nH, N, D)


def window_attention_reference(qkv: torch.Tensor, rpb_table: torch.Tensor, num_heads: int,
                               window_size: tuple[int, int], shift_size: tuple[int, int], scale: float,
                               qkv_bias: torch.Tensor | None = None, mask_value: float = -100.0,
                               shift_first: bool = False) -> torch.Tensor:
    """Swin window attention step by step, as the official code computes it.

    qkv ``(B, H, W, 3C)``, rpb_table ``((2Wh-1)(2Ww-1), nH)``, qkv_bias ``(3C,)`` or None;
    returns ``(B, H, W, C)`` in qkv's dtype. Math in qkv's dtype (call it with fp32 inputs for the
    fp32 oracle).
    """
    B, H, W, C3 = qkv.shape
    windows, Hp, Wp = windows_of_qkv(qkv, qkv_bias, window_size, shift_size, shift_first)
    q, k, v = split_heads(windows, num_heads)
    BW, _, N, D = q.shape
    attn = (q * scale) @ k.transpose(-2, -1)
    bias = relative_position_bias(rpb_table, window_size).to(attn.dtype)
    attn = attn + bias.unsqueeze(0)
    if any(shift_size):
        mask = shift_attention_mask(Hp, Wp, window_size, shift_size, mask_value, qkv.device, attn.dtype)
        n_win = mask.shape[0]
        attn = attn.view(BW // n_win, n_win, num_heads, N, N) + mask[None, :, None]
        attn = attn.view(BW, num_heads, N, N)
    attn = attn.softmax(dim=-1)
    out = (attn @ v).transpose(1, 2).reshape(BW, N, num_heads * D)
    return merge_windows(out, B, H, W, Hp, Wp, window_size, shift_size, shift_first)


def window_attention_sdpa(qkv: torch.Tensor, rpb_table: torch.Tensor, num_heads: int,
                          window_size: tuple[int, int], shift_size: tuple[int, int], scale: float,
                          qkv_bias: torch.Tensor | None = None, mask_value: float = -100.0,
                          shift_first: bool = False) -> torch.Tensor:
    """The same op through ``F.scaled_dot_product_attention`` with one additive bias+mask tensor.

    The bias+mask is ``(nW, nH, N, N)`` (shared by the batch), not ``(B·nW, nH, N, N)``.
    Shapes as ``window_attention_reference``; differentiable in qkv, rpb_table and qkv_bias.
    """
    B, H, W, C3 = qkv.shape
    windows, Hp, Wp = windows_of_qkv(qkv, qkv_bias, window_size, shift_size, shift_first)
    q, k, v = split_heads(windows, num_heads)
    BW, _, N, D = q.shape
    bias = relative_position_bias(rpb_table, window_size).to(qkv.dtype)  # (nH, N, N)
    if any(shift_size):
        mask = shift_attention_mask(Hp, Wp, window_size, shift_size, mask_value, qkv.device, qkv.dtype)
        n_win = mask.shape[0]
        additive = bias[None] + mask[:, None]  # (nW, nH, N, N)
        q, k, v = (t.reshape(B, n_win, num_heads, N, D) for t in (q, k, v))
        additive = additive.unsqueeze(0)
    else:
        additive = bias.unsqueeze(0)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=additive, scale=scale)
    out = out.reshape(BW, num_heads, N, D).transpose(1, 2).reshape(BW, N, num_heads * D)
    return merge_windows(out, B, H, W, Hp, Wp, window_size, shift_size, shift_first)
