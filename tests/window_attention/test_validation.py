"""Bad inputs to ``window_attention`` raise a clear error naming the argument and what was expected."""

from __future__ import annotations

import pytest
import torch
from fiber_kernels.dispatch import BackendNotSupportedError
from fiber_kernels.window_attention import window_attention


def _good() -> dict[str, object]:
    return {"qkv": torch.randn(1, 7, 7, 3 * 64), "rpb_table": torch.randn(169, 2), "num_heads": 2,
            "window_size": 7, "shift_size": 3, "qkv_bias": torch.randn(3 * 64)}


def _call(**changes: object) -> torch.Tensor:
    args = _good()
    args.update(changes)
    qkv, table, heads, window, shift = (args.pop(k) for k in ("qkv", "rpb_table", "num_heads", "window_size",
                                                              "shift_size"))
    return window_attention(qkv, table, heads, window, shift, backend="torch", **args)


BAD = [
    ({"num_heads": 5}, ValueError, r"C = 64 \(qkv \(B, H, W, 3C\)\) must be divisible by num_heads = 5"),
    ({"rpb_table": torch.randn(168, 2)}, ValueError,
     r"rpb_table must have shape \(\(2Wh-1\)\*\(2Ww-1\), num_heads\) = \(169, 2\) for window \(7, 7\), got \(168, 2\)"),
    ({"rpb_table": torch.randn(169, 3)}, ValueError, r"= \(169, 2\) for window \(7, 7\), got \(169, 3\)"),
    ({"shift_size": 7}, ValueError, r"shift_size must be smaller than window_size in each axis, got shift \(7, 7\)"),
    ({"shift_size": (0, 9)}, ValueError, r"shift_size must be smaller than window_size"),
    ({"shift_size": -1}, ValueError, r"shift_size must be >= 0"),
    ({"window_size": 0}, ValueError, r"window_size must be >= 1"),
    ({"window_size": (7, 7, 7)}, ValueError, r"window_size must be an int or a pair of ints \(h, w\), got 3 values"),
    ({"qkv": torch.randn(49, 3 * 64)}, ValueError, r"qkv must be 4-D \(B, H, W, 3C\), got shape \(49, 192\)"),
    ({"qkv": torch.randn(1, 7, 7, 100)}, ValueError, r"qkv must have 3C channels \(B, H, W, 3C\), got 100"),
    ({"qkv": torch.randint(0, 3, (1, 7, 7, 192))}, TypeError, r"qkv must have dtype in \(float32, float16, bfloat16\)"),
    ({"qkv": torch.randn(1, 7, 7, 192, dtype=torch.float64)}, TypeError, r"qkv must have dtype in"),
    ({"rpb_table": torch.randn(169, 2, dtype=torch.float16)}, TypeError,
     r"all tensors must have one dtype, got qkv is torch.float32, rpb_table is torch.float16"),
    ({"rpb_table": torch.randn(169, 2, device="meta")}, ValueError,
     r"all tensors must be on one device, got qkv on cpu, rpb_table on meta"),
    ({"qkv_bias": torch.randn(191)}, ValueError, r"qkv_bias must have shape \(3C,\) = \(192,\), got \(191,\)"),
    ({"qkv": "x"}, TypeError, r"qkv must be a torch.Tensor \(B, H, W, 3C\), got str"),
    ({"num_heads": 2.0}, TypeError, r"num_heads must be an int >= 1, got float"),
    ({"scale": -1.0}, ValueError, r"scale must be a finite float > 0 or None, got -1.0"),
    ({"mask_value": float("nan")}, ValueError, r"mask_value must be a finite float, got nan"),
    ({"shift_first": 1}, TypeError, r"shift_first must be a bool, got int"),
]


@pytest.mark.parametrize(("changes", "error", "message"), BAD, ids=[m[:40] for _, _, m in BAD])
def test_bad_input_raises_clear_error(changes: dict[str, object], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        _call(**changes)


def test_good_input_runs() -> None:
    assert _call().shape == (1, 7, 7, 64)


def test_triton_backend_refuses_head_dims_it_has_no_tile_for() -> None:
    qkv = torch.randn(1, 7, 7, 3 * 2 * 24)
    with pytest.raises(BackendNotSupportedError,
                       match=r"head dim C/num_heads must be one of \(16, 32, 64, 128\), got 24"):
        window_attention(qkv, torch.randn(169, 2), 2, 7, 3, backend="triton")


def test_triton_backend_refuses_windows_larger_than_16x16() -> None:
    qkv = torch.randn(1, 17, 17, 3 * 32)
    with pytest.raises(BackendNotSupportedError, match=r"window of 289 tokens exceeds 256 \(16x16\)"):
        window_attention(qkv, torch.randn(33 * 33, 1), 1, 17, 0, backend="triton")


def test_cpu_auto_uses_the_torch_path() -> None:
    args = _good()
    out = window_attention(args["qkv"], args["rpb_table"], 2, 7, 3, qkv_bias=args["qkv_bias"])
    assert out.shape == (1, 7, 7, 64)


@pytest.mark.parametrize(("dtype", "heads", "message"), [
    (torch.float32, 2, r"torch.float32 inputs need exact fp32 FMA math, which spills in every tile config on "
                       r"sm80/sm90; the GPU kernels take float16 or bfloat16"),
    (torch.bfloat16, 1, r"head dim 64 spills to local memory on sm80/sm90; the GPU kernels take head dim "
                        r"C/num_heads in \(32,\)"),
    (torch.float16, 4, r"head dim 16 spills to local memory on sm80/sm90"),
])
def test_triton_backend_declines_on_gpus_what_spills(dtype: torch.dtype, heads: int, message: str) -> None:
    # Fake CUDA tensors (sm80): the compiled-kernel limits of api.TRITON_GPU_HEAD_DIMS / _DTYPES apply,
    # and "auto" falls through to a backend that serves the call.
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        qkv = torch.empty(1, 14, 14, 3 * 64, device="cuda", dtype=dtype)
        table = torch.empty(169, heads, device="cuda", dtype=dtype)
        with pytest.raises(BackendNotSupportedError, match=message):
            window_attention(qkv, table, heads, 7, 3, backend="triton")
        assert window_attention(qkv, table, heads, 7, 3).shape == (1, 14, 14, 64)
