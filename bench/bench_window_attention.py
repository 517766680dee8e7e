"""Fused Swin window attention (``fiber_kernels.window_attention``) against eager Swin, the SDPA CPU
path, xformers (dense tensor bias) and FlexAttention (score_mod bias), from the qkv projection
``(B, H, W, 3C)`` to the merged ``(B, H, W, C)`` map: pad (tokens = qkv bias), shift, partition,
bias + shift mask, softmax, ·v, merge, unshift, crop.

Shapes: Swin-B (window 12, head dim 32) at 384² batch 8 (coarse stages 1-4) and at 800x1333 batch
2 (fine stages; H, W not multiples of the window), plus a small CPU set (``--quick``). Times are
measured on this CPU (fp32). Every CPU-time row that is not measured is a ``skipped`` row whose note
says why: Triton runs here only in the interpreter (not speed); fine_s1/fine_s2 are too large to
time on a 2-core CPU (``cpu_time=False``); xformers / FlexAttention name their missing piece.
Saved/peak bytes are exact on fake CUDA bf16 tensors; GPU times are roofline projections.

Notes on the fused rows: ``saved_bytes``/``peak_bytes`` count the tensors the op returns and saves
(qkv, table, bias, output, row log-sum-exp): on fake tensors the custom ops run their fake
implementations, so what the launchers allocate inside them is not seen. Each row's note gives those
bytes exactly, from the launcher's own plan (``triton_bwd.work_buffers``, the shapes it allocates):
the forward's dense bias ``(nH, N, block_n)``; the backward's dense bias and its transpose, ``delta``
``(B, H, W, nH)`` fp32, the deterministic table-gradient partials ``(num_splits, nH, N, N)`` fp32,
the qkv-bias partials and the fp32 sums before the cast to bf16. All of the backward's are alive
when it returns, so the fused peak is at most ``peak_bytes`` + that sum.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from fiber_kernels.window_attention import window_attention, window_attention_reference, window_attention_sdpa
from fiber_kernels.window_attention.geometry import WindowGeometry
from fiber_kernels.window_attention.reference import (
    merge_windows,
    relative_position_bias,
    shift_attention_mask,
    split_heads,
    windows_of_qkv,
)
from fiber_kernels.window_attention.triton_bwd import work_buffers
from fiber_kernels.work_buffers import total_bytes

from bench.attention_cores import attention_flops, xformers_attention, xformers_reason
from bench.harness import Case, KernelBench, Provider, Shape, UnsupportedCaseError, benchmark_tests, triton_reason


def _flex_reason(device: torch.device, purpose: str) -> str | None:
    try:
        from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
    except ImportError as error:
        return f"torch.nn.attention.flex_attention unavailable ({error})"
    if device.type != "cuda" or not torch.cuda.is_available():
        return "FlexAttention fuses only when torch.compile'd on a GPU; its eager CPU/fake path is unfused math"
    return None


PROVIDERS = (
    Provider("eager"),
    Provider("sdpa"),
    Provider("triton", triton_reason),
    Provider("xformers", xformers_reason),
    Provider("flex_attention", _flex_reason),
)


def _shape(label: str, B: int, H: int, W: int, C: int, heads: int, shift: int, window: int = 12,
           **flags: bool) -> Shape:
    return Shape(label, {"B": B, "H": H, "W": W, "C": C, "heads": heads, "window": window, "shift": shift}, **flags)


SHAPES = (
    _shape("quick_w7", 2, 14, 14, 128, 4, 3, window=7, quick=True),
    _shape("quick_w12_pad", 1, 25, 42, 128, 4, 6, quick=True),
    # coarse 384², batch 8: Swin-B stages (stage 4: window = map size, no shift)
    _shape("coarse_s1", 8, 96, 96, 128, 4, 6),
    _shape("coarse_s2", 8, 48, 48, 256, 8, 6),
    _shape("coarse_s3", 8, 24, 24, 512, 16, 6),
    _shape("coarse_s4", 8, 12, 12, 1024, 32, 0),
    # fine 800x1344, batch 2, shifted blocks; maps padded to the window inside the op
    _shape("fine_s1", 2, 200, 336, 128, 4, 6, cpu_time=False),
    _shape("fine_s2", 2, 100, 168, 256, 8, 6, cpu_time=False),
    _shape("fine_s3", 2, 50, 84, 512, 16, 6),
    _shape("fine_s4", 2, 25, 42, 1024, 32, 6),
)


def window_flops(geometry: WindowGeometry) -> dict[str, float]:
    """Model FLOPs (matmuls only): ``attention_flops`` of every window of the padded map (B·nW of them) and
    head, N = window² queries and keys: fwd = 4·B·nW·N²·C, bwd = 2 x fwd, full = 3 x fwd."""
    g = geometry
    return attention_flops(g.windows, g.num_heads, g.tokens, g.tokens, g.head_dim)


def _additive(table: torch.Tensor, window: int, shift: int, Hp: int, Wp: int) -> torch.Tensor:
    """Relative bias (+ shift mask) as one dense ``(nW or 1, nH, N, N)`` tensor."""
    bias = relative_position_bias(table, (window, window)).unsqueeze(0)
    if shift:
        bias = bias + shift_attention_mask(Hp, Wp, (window, window), (shift, shift), -100.0, table.device,
                                           table.dtype).unsqueeze(1)
    return bias


def _through_windows(core: Callable[..., torch.Tensor], qkv: torch.Tensor, table: torch.Tensor,
                     bias: torch.Tensor, heads: int, window: int, shift: int) -> torch.Tensor:
    """The library's reference steps around an attention ``core``: pad (tokens = qkv bias), shift, partition,
    ``core(q, k, v, additive)`` on ``(B·nW, nH, N, D)`` with the dense bias + shift mask ``(nW or 1, nH, N, N)``,
    merge, unshift, crop: ``(B, H, W, C)``."""
    B, H, W, _ = qkv.shape
    windows, Hp, Wp = windows_of_qkv(qkv, bias, (window, window), (shift, shift), False)
    q, k, v = split_heads(windows, heads)
    out = core(q, k, v, _additive(table, window, shift, Hp, Wp).to(q.dtype))
    out = out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)
    return merge_windows(out, B, H, W, Hp, Wp, (window, window), (shift, shift), False)


def _xformers_window(qkv, table, bias, heads, window, shift, scale):
    def core(q, k, v, additive):
        additive = additive.repeat(qkv.shape[0], 1, 1, 1) if shift else additive  # (B·nW, nH, N, N): dense
        return xformers_attention(q * (scale * q.shape[-1] ** 0.5), k, v, additive)

    return _through_windows(core, qkv, table, bias, heads, window, shift)


def _flex_window(qkv, table, bias, heads, window, shift, scale):
    from torch.nn.attention.flex_attention import flex_attention

    def core(q, k, v, additive):
        n_win = additive.shape[0]

        def score_mod(score, batch, head, query, key):
            return score + additive[batch % n_win, head, query, key]

        return flex_attention(q, k, v, score_mod=score_mod, scale=scale)

    return _through_windows(core, qkv, table, bias, heads, window, shift)


def build(provider: str, shape: Shape, device: torch.device, dtype: torch.dtype) -> Case:
    """qkv ``(B, H, W, 3C)``, table ``((2w-1)², nH)`` and qkv bias ``(3C,)``, all trainable."""
    B, H, W, C, heads, window, shift = (shape.dims[k] for k in ("B", "H", "W", "C", "heads", "window", "shift"))
    win, sh = (window, window), (shift, shift)
    geometry = WindowGeometry.of((B, H, W, 3 * C), heads, win, sh, (C // heads) ** -0.5, -100.0, False)
    qkv = torch.randn(B, H, W, 3 * C, device=device, dtype=dtype, requires_grad=True)
    table = (0.02 * torch.randn(geometry.table_rows, heads, device=device, dtype=dtype)).requires_grad_()
    bias = (0.02 * torch.randn(3 * C, device=device, dtype=dtype)).requires_grad_()
    scale = geometry.scale
    functions = {
        "eager": lambda q, t, b: window_attention_reference(q, t, heads, win, sh, scale, b),
        "sdpa": lambda q, t, b: window_attention_sdpa(q, t, heads, win, sh, scale, b),
        "triton": lambda q, t, b: window_attention(q, t, heads, win, sh, scale=scale, qkv_bias=b, backend="triton"),
        "xformers": lambda q, t, b: _xformers_window(q, t, b, heads, window, shift, scale),
        "flex_attention": lambda q, t, b: _flex_window(q, t, b, heads, window, shift, scale),
    }
    if provider not in functions:
        raise UnsupportedCaseError(f"unknown provider {provider}")
    note = _work_bytes_note(geometry, dtype) if provider == "triton" else ""
    return Case(functions[provider], (qkv, table, bias), window_flops(geometry), note=note)


def _work_bytes_note(geometry: WindowGeometry, dtype: torch.dtype) -> str:
    """Exact bytes the Triton launchers allocate inside the custom ops (unseen on fake tensors)."""
    work = work_buffers(geometry, dtype, has_qkv_bias=True)
    parts = ", ".join(f"{buffer.name} {buffer.nbytes}" for buffer in work)
    dense_bias = next(buffer for buffer in work if buffer.name == "rpb")
    return (f"inside the ops, not in saved/peak_bytes: forward {dense_bias.nbytes} B (dense bias); "
            f"backward {total_bytes(work)} B ({parts})")


WINDOW_ATTENTION = KernelBench("window_attention", PROVIDERS, SHAPES, build)
test_speed, test_memory, test_projection = benchmark_tests(WINDOW_ATTENTION)
