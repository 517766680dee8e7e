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
    # Fake CUDA tensors (sm80): the compiled-kernel limits of triton_common.LIMITS (gpu_head_dims, gpu_dtypes) apply,
    # and "auto" falls through to a backend that serves the call.
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        qkv = torch.empty(1, 14, 14, 3 * 64, device="cuda", dtype=dtype)
        table = torch.empty(169, heads, device="cuda", dtype=dtype)
        with pytest.raises(BackendNotSupportedError, match=message):
            window_attention(qkv, table, heads, 7, 3, backend="triton")
        assert window_attention(qkv, table, heads, 7, 3).shape == (1, 14, 14, 64)


def test_launcher_table_refuses_unknown_backend_names() -> None:
    # Before, any name but "cuda" ran the Triton launchers (a typo included).
    from fiber_kernels.window_attention.function import LAUNCHERS, window_attention_op

    args = _good()
    assert set(LAUNCHERS) == {"triton", "cuda"}
    for name in ("cdua", "torch", ""):
        with pytest.raises(ValueError, match=r"window_attention: backend must be one of \('triton', 'cuda'\)"):
            window_attention_op(args["qkv"], args["rpb_table"], None, 2, 7, 7, 3, 3, 0.125, -100.0, False, name)


def test_geometry_is_the_calls_padded_map_and_windows() -> None:
    # 25x42 in 12x12 windows, FIBER's stage 4 at 800x1333: padded to 36x48, 3x4 windows per image.
    from fiber_kernels.window_attention.checks import check_window_attention
    from fiber_kernels.window_attention.geometry import WindowGeometry
    from fiber_kernels.window_attention.reference import shift_attention_mask

    qkv, table = torch.randn(2, 25, 42, 3 * 64), torch.randn(23 * 23, 2)
    geometry = check_window_attention(qkv, table, None, 2, 12, 6, None, -100, False)
    assert (geometry.padded, geometry.windows_per_row, geometry.windows_per_image, geometry.windows) == \
        ((36, 48), 4, 12, 24)
    assert shift_attention_mask(*geometry.padded, geometry.window, geometry.shift).shape[0] == 12
    assert (geometry.tokens, geometry.head_dim, geometry.scale, geometry.mask_value) == (144, 32, 32 ** -0.5, -100.0)
    assert (geometry.out_shape, geometry.lse_shape, geometry.table_shape) == ((2, 25, 42, 64), (24, 2, 144), (529, 2))
    assert geometry.op_args() == (2, 12, 12, 6, 6, 32 ** -0.5, -100.0, False)
    assert WindowGeometry.from_op_args(qkv.shape, *geometry.op_args()) == geometry


def test_launchers_refuse_a_geometry_of_other_tensors() -> None:
    from fiber_kernels.window_attention import cuda
    from fiber_kernels.window_attention.geometry import WindowGeometry

    args = _good()
    geometry = WindowGeometry.of((1, 14, 14, 3 * 64), 2, (7, 7), (3, 3), 0.125, -100.0, False)
    with pytest.raises(ValueError, match=r"qkv \(B, H, W, 3C\) has shape \(1, 7, 7, 192\), but the geometry is for "
                                         r"\(1, 14, 14, 192\)"):
        cuda.forward(args["qkv"], args["rpb_table"], args["qkv_bias"], geometry, ops=object())
    with pytest.raises(TypeError, match="geometry must be a WindowGeometry"):
        cuda.forward(args["qkv"], args["rpb_table"], args["qkv_bias"], (2, 7, 3), ops=object())
