"""The csrc/window_attention CUDA kernels under the host emulation (docs/emulation.md) against the eager
Swin reference, through ``fiber_kernels.window_attention.cuda`` (the Python path a GPU user runs, with
the emulation module as ``ops``): forward and the gradients of qkv, the bias table and the qkv bias in
fp32 (FMA path), fp16 (wmma path) and bf16 (FMA path), the index helpers against reference.py, bitwise
determinism across schedule seeds, and the bad-input errors."""

from __future__ import annotations

import inspect
import re
import zlib

import pytest
import torch
from fiber_kernels import dispatch
from fiber_kernels.testing import emu
from fiber_kernels.window_attention import cuda, reference, triton_bwd, triton_fwd
from fiber_kernels.window_attention.geometry import WindowGeometry

from ._cases import CASES, FIBER_25X42, Case, make_inputs
from .conftest import assert_matches_reference, with_autograd


def _cuda(ops, case: Case, seed: int):
    def kernel(qkv, table, bias, grad_out):
        with ops.schedule(seed):
            out, lse = cuda.forward(qkv, table, bias, case.geometry(), ops=ops)
            grads = cuda.backward(grad_out.to(out.dtype), qkv, table, bias, out, lse, case.geometry(), ops=ops)
        return (out, *grads)

    return kernel


def _check_case(ops, case: Case, dtype: torch.dtype, seed: int = 0) -> None:
    torch.manual_seed(zlib.crc32(str(case).encode()))  # per case, the same in every run (hash() of a str is not)
    assert_matches_reference(case, dtype, _cuda(ops, case, seed))


@pytest.mark.parametrize("case", [*CASES, FIBER_25X42], ids=str)
def test_cuda_fp32_fma_matches_reference(ops, case: Case) -> None:
    _check_case(ops, case, torch.float32)


@pytest.mark.parametrize("case", [*CASES, FIBER_25X42], ids=str)
def test_cuda_fp16_wmma_matches_reference(ops, case: Case) -> None:
    _check_case(ops, case, torch.float16)


@pytest.mark.parametrize("case", [CASES[2], FIBER_25X42], ids=str)
def test_cuda_bf16_matches_reference(ops, case: Case) -> None:
    _check_case(ops, case, torch.bfloat16)


@pytest.mark.parametrize("seed", [1, 7])
def test_cuda_matches_reference_under_other_schedules(ops, seed: int) -> None:
    _check_case(ops, CASES[2], torch.float16, seed=seed)
    _check_case(ops, CASES[5], torch.float32, seed=seed)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_gradients_bitwise_equal_across_runs_and_schedules(ops, dtype: torch.dtype) -> None:
    # 12 windows x 4 heads: the table gradient is folded from 12 dq-block partials per head, the
    # qkv-bias gradient from 6 dk/dv-block partials; each scheduled differently by the seed.
    case = FIBER_25X42
    qkv, table, bias = make_inputs(case, dtype)
    grad_out = torch.randn(1, 25, 42, 128)
    runs = [_cuda(ops, case, seed)(qkv, table, bias, grad_out) for seed in (3, 4, 3)]
    for first, other in zip(runs[0], runs[1], strict=True):
        assert torch.equal(first, other)
    for first, other in zip(runs[0], runs[2], strict=True):
        assert torch.equal(first, other)
    _, _, dq_blocks, dkv_blocks = ops.window_attention_launch_config(1, 25, 42, 128, 4, 12, 12, 2)
    assert (dq_blocks, dkv_blocks) == (12, 12)  # several partials really are summed


def test_table_gradient_partials_are_small_at_fiber_shapes(ops) -> None:
    # Stage 1 at 384x384, batch 8, window 12: 512 windows x 4 heads. The dq blocks' (R, nH) partials
    # stay far below the (windows, heads, N, N) attention gradient the backward never stores.
    _, threads, dq_blocks, _ = ops.window_attention_launch_config(8, 96, 96, 128, 4, 12, 12, 2)
    partial_bytes = dq_blocks * 23 * 23 * 4 * 4
    assert threads == 64 and partial_bytes * 100 < 8 * 64 * 4 * 144 * 144 * 4


@pytest.mark.parametrize("H, W, window, shift, shift_first", [
    (14, 14, (7, 7), (3, 3), False),
    (10, 9, (7, 7), (3, 3), False),
    (10, 9, (7, 7), (3, 3), True),
    (25, 42, (12, 12), (6, 6), False),
    (5, 8, (4, 6), (2, 0), False),
    (7, 7, (7, 7), (0, 0), False),
])
def test_index_helpers_match_reference(ops, H, W, window, shift, shift_first) -> None:
    source, region, relative = ops.window_attention_index_maps(H, W, *window, *shift, shift_first)
    positions = torch.arange(H * W, dtype=torch.float64).view(1, H, W, 1)
    windows, Hp, Wp = reference.windows_of_qkv(positions, torch.tensor([-1.0], dtype=torch.float64), window, shift,
                                               shift_first)
    assert torch.equal(source, windows[..., 0].long())
    mask = reference.shift_attention_mask(Hp, Wp, window, shift, mask_value=1.0)
    assert torch.equal(region[:, :, None] != region[:, None, :], mask.bool())
    assert torch.equal(relative, reference.relative_position_index(*window))


def test_padded_tokens_change_the_output_through_the_qkv_bias(ops) -> None:
    case = Case(1, 10, 12, 3, 32, (7, 7), (3, 3))
    qkv, table, bias = make_inputs(case, torch.float32)
    with_bias, _ = cuda.forward(qkv, table, bias, case.geometry(), ops=ops)
    without, _ = cuda.forward(qkv, table, None, case.geometry(), ops=ops)
    assert (with_bias - without).abs().max() > 1e-3


def _args():
    return make_inputs(Case(1, 7, 7, 2, 32, (7, 7), (3, 3)), torch.float32)


def _geometry(args: dict) -> WindowGeometry:
    """The geometry of ``args`` (a launcher's tensors and settings), unchecked, as a caller would build it;
    from the original qkv shape when ``args`` changes qkv into a non-4-D tensor."""
    settings = [args.pop(name) for name in ("num_heads", "window", "shift", "scale", "mask_value", "shift_first")]
    qkv_shape = args["qkv"].shape if args["qkv"].dim() == 4 else (1, 7, 7, 192)
    return WindowGeometry.of(qkv_shape, *settings)


@pytest.mark.parametrize("change, error, message", [
    (lambda a: {**a, "qkv": a["qkv"][0]}, ValueError, "qkv must be 4-D"),
    (lambda a: {**a, "num_heads": 3}, ValueError, "must be divisible by num_heads"),
    (lambda a: {**a, "rpb_table": a["rpb_table"][:-1]}, ValueError, "rpb_table must have shape"),
    (lambda a: {**a, "shift": (7, 3)}, ValueError, "shift_size must be smaller than window_size"),
    (lambda a: {**a, "rpb_table": a["rpb_table"].half()}, TypeError, "rpb_table"),
    (lambda a: {**a, "qkv": a["qkv"][..., :48], "qkv_bias": None, "num_heads": 2}, ValueError,
     r"head dim C/num_heads must be one of \(16, 32, 64\), got 8"),
    (lambda a: {**a, "window": (13, 12), "shift": (0, 0), "rpb_table": torch.randn(25 * 23, 2)}, ValueError,
     r"window_size \(13, 12\): window of 156 tokens exceeds 144"),
    (lambda a: {**a, "scale": 0.0}, ValueError, "scale must be a finite float > 0"),
    (lambda a: {**a, "scale": "1"}, TypeError, "scale must be a float"),
    (lambda a: {**a, "shift_first": 1}, TypeError, "shift_first must be a bool"),
])
def test_forward_bad_input(ops, change, error, message) -> None:
    qkv, table, bias = _args()
    args = {"qkv": qkv, "rpb_table": table, "qkv_bias": bias, "num_heads": 2, "window": (7, 7), "shift": (3, 3),
            "scale": 0.25, "mask_value": -100.0, "shift_first": False}
    args = change(args)
    geometry = _geometry(args)
    with pytest.raises(error, match=message):
        cuda.forward(**args, geometry=geometry, ops=ops)


@pytest.mark.parametrize("change, error, message", [
    (lambda a: {**a, "grad_out": a["grad_out"][:, :6]}, ValueError, r"grad_out must have shape \(B, H, W, C\)"),
    (lambda a: {**a, "grad_out": a["grad_out"].half()}, TypeError, "grad_out must have dtype"),
    (lambda a: {**a, "out": a["out"].half()}, TypeError, "out must have dtype"),
    (lambda a: {**a, "out": a["out"][0]}, ValueError, "out must be 4-D"),
    (lambda a: {**a, "lse": a["lse"].double()}, TypeError, "lse must have dtype"),
    (lambda a: {**a, "lse": a["lse"][:, :1]}, ValueError, r"lse must have shape \(B\*nW, num_heads, N\)"),
    (lambda a: {**a, "num_heads": 3}, ValueError, "must be divisible by num_heads"),
])
def test_backward_bad_input(ops, change, error, message) -> None:
    qkv, table, bias = _args()
    out, lse = cuda.forward(qkv, table, bias, Case(1, 7, 7, 2, 32, (7, 7), (3, 3)).geometry(0.25), ops=ops)
    args = {"grad_out": torch.randn_like(out), "qkv": qkv, "rpb_table": table, "qkv_bias": bias, "out": out,
            "lse": lse, "num_heads": 2, "window": (7, 7), "shift": (3, 3), "scale": 0.25, "mask_value": -100.0,
            "shift_first": False}
    args = change(args)
    geometry = _geometry(args)
    with pytest.raises(error, match=message):
        cuda.backward(**args, geometry=geometry, ops=ops)


def test_launcher_checks_its_own_inputs(ops) -> None:
    # The C++ launcher (shared by the CUDA and the emulated build) refuses what the kernels cannot run.
    qkv = torch.randn(1, 7, 7, 48)
    with pytest.raises(RuntimeError, match="head dim C/num_heads must be 16, 32 or 64, got 8"):
        ops.window_attention_fwd(qkv, torch.randn(169, 2), None, 2, 7, 7, 3, 3, 0.25, -100.0, False)
    with pytest.raises(RuntimeError, match="shift must satisfy 0 <= shift < window"):
        ops.window_attention_fwd(torch.randn(1, 7, 7, 96), torch.randn(169, 1), None, 1, 7, 7, 7, 3, 0.25, -100.0,
                                 False)


def test_dispatch_reasons_name_the_kernel_limits() -> None:
    device = dispatch.DeviceInfo.of(torch.zeros(1))
    assert cuda.reasons(device, Case(1, 7, 7, 3, 32, (12, 12), (0, 0)).geometry()) == []
    assert cuda.reasons(device, Case(1, 7, 7, 3, 8, (13, 13), (0, 0)).geometry()) == [
        "head dim C/num_heads must be one of (16, 32, 64), got 8", "window of 169 tokens exceeds 144 (12x12)"]


def test_kernels_use_no_atomics() -> None:
    # The emulator runs blocks one after another, so bitwise equality across seeds cannot catch
    # inter-block float-atomic order on a GPU; the kernel source must contain none.
    source = (emu.REPO_ROOT / "csrc" / "window_attention" / "window_attention_kernel.cuh").read_text()
    assert re.search(r"\batomic\w*\s*\(", source) is None


def test_launchers_take_the_triton_launchers_arguments() -> None:
    # The autograd op switches between the two with one name: same leading parameters, in order.
    for ours, theirs in ((cuda.forward, triton_fwd.window_attention_fwd),
                         (cuda.backward, triton_bwd.window_attention_bwd)):
        names = list(inspect.signature(ours).parameters)
        assert names[-1] == "ops" and names[:-1] == list(inspect.signature(theirs).parameters)[:len(names) - 1]


def test_strided_inputs_give_the_contiguous_result(ops) -> None:
    # qkv as a channel slice of a wider projection (row stride 3C + 32) and a transposed table view.
    case = Case(1, 10, 9, 2, 32, (7, 7), (3, 3))
    qkv, table, bias = make_inputs(case, torch.float16)
    wide = torch.cat([qkv, torch.randn(1, 10, 9, 32).half()], dim=-1)[..., :192]
    table_view = table.t().contiguous().t()
    out, lse = cuda.forward(qkv, table, bias, case.geometry(), ops=ops)
    strided_out, strided_lse = cuda.forward(wide, table_view, bias, case.geometry(), ops=ops)
    assert not wide.is_contiguous() and not table_view.is_contiguous()
    assert torch.equal(out, strided_out) and torch.equal(lse, strided_lse)


class _CountingOps:
    """The emulated ops module, recording which ops are called (proves which kernels a path ran)."""

    def __init__(self, ops) -> None:
        self.ops = ops
        self.calls: list[str] = []

    def __getattr__(self, name: str):
        self.calls.append(name)
        return getattr(self.ops, name)


def test_custom_op_with_cuda_backend_runs_the_cuda_kernels_through_autograd(ops) -> None:
    # window_attention_op(..., backend="cuda") as the "cuda" dispatch backend calls it, with the default
    # ops (torch.ops.fiber_kernels_C on a GPU) pointed at the emulated build of the same kernels.
    from fiber_kernels.window_attention.function import window_attention_op

    case = Case(2, 5, 9, 3, 32, (7, 7), (3, 3))   # shifted, padded (keys = qkv bias), 2 images
    kernel = with_autograd(lambda *leaves: window_attention_op(*leaves, *case.geometry().op_args(), "cuda")[0])
    with emu.launching_on(_CountingOps(ops), cuda) as counting:
        assert_matches_reference(case, torch.float16, kernel)
    assert counting.calls == ["window_attention_fwd", "window_attention_bwd"]
    leaves = [t.requires_grad_() for t in make_inputs(case, torch.float16)]
    with emu.launching_on(ops, cuda):  # schema, fake impl, autograd registration, AOT dispatch
        torch.library.opcheck(window_attention_op, (*leaves, *case.geometry().op_args(), "cuda"))
