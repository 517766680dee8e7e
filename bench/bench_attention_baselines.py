"""Baseline attention cores FIBER uses today: eager (as FIBER's code) vs SDPA (+ flash-attn, xformers
where a GPU exists), forward / backward / both, for (a) FIBER cross-attention and (b) Swin window
attention with the relative-position bias and the shifted-window mask.

Shapes: a small CPU set (``--quick``) and the real FIBER shapes of docs/shapes.md (coarse 384²
batch 8, fine 800x1344 batch 2). Times are measured on this machine's CPU in fp32; saved/peak bytes
on fake CUDA bf16 tensors (real shapes, nothing allocated) and on CPU fp32 for the quick shapes;
projected GPU times from counted FLOPs and bytes (roofline, labelled projected).
"""

from __future__ import annotations

import torch
from fiber_kernels.window_attention.geometry import WindowGeometry
from fiber_kernels.window_attention.reference import relative_position_index, shift_attention_mask

from bench.attention_cores import (
    attention_flops,
    cross_inputs,
    eager_cross_attention,
    eager_window_attention,
    flash_attn_reason,
    flash_cross_attention,
    sdpa_cross_attention,
    sdpa_window_attention,
    window_bias,
    xformers_attention,
    xformers_cross_attention,
    xformers_reason,
)
from bench.harness import Case, KernelBench, Provider, Shape, UnsupportedCaseError, benchmark_tests

PROVIDERS = (
    Provider("eager"),
    Provider("sdpa"),
    Provider("flash_attn", flash_attn_reason),
    Provider("xformers", xformers_reason),
)


# ---- (a) cross-attention: dims B (query batch), Bk (key batch), H, Nq, Nk, D, pad (padded text keys)
def _xattn(label: str, B: int, Bk: int, H: int, Nq: int, Nk: int, D: int, pad: int, **flags: bool) -> Shape:
    return Shape(label, {"B": B, "Bk": Bk, "H": H, "Nq": Nq, "Nk": Nk, "D": D, "pad": pad}, **flags)


CROSS_SHAPES = (
    _xattn("quick_i2t", 8, 2, 4, 144, 40, 32, 10, quick=True),
    _xattn("quick_t2i", 2, 2, 12, 40, 576, 64, 0, quick=True),
    # coarse 384², batch 8: image->text per window (stage 3: 4 windows/image, stage 4: 1), text->image
    _xattn("coarse_i2t_s3", 32, 8, 16, 144, 40, 32, 10),
    _xattn("coarse_i2t_s4", 8, 8, 32, 144, 40, 32, 10),
    _xattn("coarse_t2i_s3", 8, 8, 12, 40, 576, 64, 0),
    _xattn("coarse_t2i_s4", 8, 8, 12, 40, 144, 64, 0),
    # fine 800x1344, batch 2: 256 text tokens, windows of the padded map (stage 3: 35, stage 4: 12)
    _xattn("fine_i2t_s3", 70, 2, 16, 144, 256, 32, 64),
    _xattn("fine_i2t_s4", 24, 2, 32, 144, 256, 32, 64),
    _xattn("fine_t2i_s3", 2, 2, 12, 256, 4200, 64, 0),
    _xattn("fine_t2i_s4", 2, 2, 12, 256, 1050, 64, 0),
)


def build_cross(provider: str, shape: Shape, device: torch.device, dtype: torch.dtype) -> Case:
    """Random q ``(B, H, Nq, D)``, k/v ``(Bk, H, Nk, D)`` (all trainable) and a key padding mask
    ``(Bk, Nk)`` (True = padding) on the last ``pad`` keys (None when pad = 0). Image->text shapes
    (label contains ``i2t``) scale the query first as FIBER's Swin side does; text->image the scores."""
    q, k, v, mask = cross_inputs(provider, shape.dims, device, dtype)
    fn = {"eager": eager_cross_attention, "sdpa": sdpa_cross_attention, "flash_attn": flash_cross_attention,
          "xformers": xformers_cross_attention}[provider]
    flops = attention_flops(*(shape.dims[k] for k in ("B", "H", "Nq", "Nk", "D")))
    return Case(fn, (q, k, v, mask, "i2t" in shape.label), flops)


CROSS = KernelBench("cross_attention_core", PROVIDERS, CROSS_SHAPES, build_cross)


# ---- (b) window attention: dims B (images), Ht, Wt (token map, multiple of window), window, shift, H, D
def _win(label: str, B: int, Ht: int, Wt: int, H: int, shift: int, window: int = 12, D: int = 32,
         **flags: bool) -> Shape:
    return Shape(label, {"B": B, "Ht": Ht, "Wt": Wt, "window": window, "shift": shift, "H": H, "D": D}, **flags)


WINDOW_SHAPES = (
    _win("quick_w7", 2, 14, 14, 4, 3, window=7, quick=True),
    _win("quick_w12", 1, 24, 24, 4, 6, quick=True),
    # coarse 384², batch 8, shifted blocks (stage 4: window = map size, no shift)
    _win("coarse_s1", 8, 96, 96, 4, 6),
    _win("coarse_s2", 8, 48, 48, 8, 6),
    _win("coarse_s3", 8, 24, 24, 16, 6),
    _win("coarse_s4", 8, 12, 12, 32, 0),
    # fine 800x1344 (padded to window 12), batch 2, shifted blocks
    _win("fine_s1", 2, 204, 336, 4, 6, cpu_time=False),
    _win("fine_s2", 2, 108, 168, 8, 6, cpu_time=False),
    _win("fine_s3", 2, 60, 84, 16, 6),
    _win("fine_s4", 2, 36, 48, 32, 6),
)


def build_window(provider: str, shape: Shape, device: torch.device, dtype: torch.dtype) -> Case:
    """q/k/v ``(B·nW, H, w², D)`` and the bias table ``((2w-1)², H)`` trainable; relative index and
    shift mask ``(nW, w², w²)`` (None when shift = 0) fixed."""
    B, Ht, Wt, w, shift, H, D = (shape.dims[k] for k in ("B", "Ht", "Wt", "window", "shift", "H", "D"))
    geometry = WindowGeometry.of((B, Ht, Wt, 3 * H * D), H, (w, w), (shift, shift), D ** -0.5, -100.0, False)
    n = geometry.tokens
    q, k, v = (torch.randn(geometry.windows, H, n, D, device=device, dtype=dtype, requires_grad=True)
               for _ in range(3))
    table = (0.02 * torch.randn(geometry.table_rows, H, device=device, dtype=dtype)).requires_grad_()
    if device.type == "cuda" and not torch.cuda.is_available():  # fake tensors hold no values: shapes only
        rel_index = torch.zeros(n, n, device=device, dtype=torch.long)
        mask = torch.zeros(geometry.windows_per_image, n, n, device=device, dtype=dtype) if shift else None
    else:
        rel_index = relative_position_index(w, w, device=device)
        mask = shift_attention_mask(Ht, Wt, geometry.window, geometry.shift, geometry.mask_value, device,
                                    dtype) if shift else None

    def xformers_window(q, k, v, table, rel_index, mask):
        bias = window_bias(table, rel_index).unsqueeze(0)
        if mask is not None:
            bias = (bias + mask.unsqueeze(1)).repeat(q.shape[0] // mask.shape[0], 1, 1, 1)
        return xformers_attention(q, k, v, bias)

    fn = {"eager": eager_window_attention, "sdpa": sdpa_window_attention, "xformers": xformers_window}.get(provider)
    if fn is None:
        raise UnsupportedCaseError(f"{provider} takes no additive bias (Swin bias + shift mask)")
    return Case(fn, (q, k, v, table, rel_index, mask), attention_flops(geometry.windows, H, n, n, D))


def _window_flash_reason(device: torch.device, purpose: str) -> str | None:
    return flash_attn_reason(device, purpose) or "flash-attn takes no additive bias (Swin bias + shift mask)"


WINDOW = KernelBench(
    "window_attention_core",
    (PROVIDERS[0], PROVIDERS[1], Provider("flash_attn", _window_flash_reason), PROVIDERS[3]),
    WINDOW_SHAPES, build_window,
)


test_cross_speed, test_cross_memory, test_cross_projection = benchmark_tests(CROSS)
test_window_speed, test_window_memory, test_window_projection = benchmark_tests(WINDOW)
