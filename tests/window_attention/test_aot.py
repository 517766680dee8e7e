"""Ahead-of-time compile of every Triton window-attention config for sm80 (A100) and sm90 (H100):
no spills, shared memory and registers within the card's limits, tensor-core instructions."""

from __future__ import annotations

import pytest
import torch
from fiber_kernels.testing import CompileSpec, compile_reports, fit_problems
from fiber_kernels.window_attention.triton_bwd import (
    _window_attention_bwd_delta_kernel,
    _window_attention_bwd_kernel,
    _window_attention_table_grad_kernel,
)
from fiber_kernels.window_attention.triton_common import CONFIGS, WindowConfig
from fiber_kernels.window_attention.triton_fwd import _window_attention_fwd_kernel

CARDS = {80: "A100", 90: "H100"}
TRITON_TYPES = {torch.float16: "fp16", torch.bfloat16: "bf16"}
# The largest window each config serves (its worst case for registers): 7x7 -> 64, 12x12 -> 256.
WINDOW_OF = {64: 7, 256: 12}


def _constexprs(config: WindowConfig, window: int, block_m: int) -> dict[str, object]:
    return {"WH": window, "WW": window, "HEAD_DIM": 32, "BLOCK_M": block_m, "BLOCK_N": config.block_n,
            "HAS_SHIFT": True, "HAS_QKV_BIAS": True, "SHIFT_FIRST": False,
            "DOT_PRECISION": "tf32", "ALIGNED": True}


def _ints(*names: str) -> dict[str, str]:
    return {name: "i32" for name in names}


_GEOMETRY = ("H", "W", "Hp", "Wp", "n_win", "n_win_w", "total_windows")
_STRIDES_IN = ("stride_qb", "stride_qh", "stride_qw", "stride_ob", "stride_oh", "stride_ow")


def _fwd_spec(config: WindowConfig, dtype: str, capability: int) -> CompileSpec:
    signature = {"qkv_ptr": f"*{dtype}", "rpb_ptr": f"*{dtype}", "bias_ptr": f"*{dtype}", "out_ptr": f"*{dtype}",
                 "lse_ptr": "*fp32",
                 **_ints(*_STRIDES_IN, *_GEOMETRY, "windows_per_program", "shift_h", "shift_w", "num_heads", "C"),
                 "scale": "fp32", "mask_value": "fp32"}
    constexprs = _constexprs(config, WINDOW_OF[config.block_n], config.block_m)
    return CompileSpec(_window_attention_fwd_kernel, signature, constexprs, capability, config.fwd_warps,
                       config.num_stages)


def _bwd_spec(config: WindowConfig, dtype: str, capability: int) -> CompileSpec:
    signature = {"qkv_ptr": f"*{dtype}", "rpb_ptr": f"*{dtype}", "rpbt_ptr": f"*{dtype}", "bias_ptr": f"*{dtype}",
                 "dout_ptr": f"*{dtype}", "delta_ptr": "*fp32", "lse_ptr": "*fp32", "dqkv_ptr": f"*{dtype}",
                 "ds_part_ptr": "*fp32", "dbias_part_ptr": "*fp32",
                 **_ints(*_STRIDES_IN, "stride_gb", "stride_gh", "stride_gw", *_GEOMETRY, "windows_per_split",
                         "num_dq_programs", "windows_per_program", "shift_h", "shift_w", "num_heads", "C"),
                 "scale": "fp32", "mask_value": "fp32"}
    return CompileSpec(_window_attention_bwd_kernel, signature,
                       _constexprs(config, WINDOW_OF[config.block_n], config.bwd_block_m), capability,
                       config.bwd_warps, config.num_stages)


def _delta_spec(dtype: str, capability: int) -> CompileSpec:
    signature = {"out_ptr": f"*{dtype}", "dout_ptr": f"*{dtype}", "delta_ptr": "*fp32",
                 **_ints("n_tokens", "num_heads", "C")}
    return CompileSpec(_window_attention_bwd_delta_kernel, signature, {"HEAD_DIM": 32, "BLOCK_T": 64}, capability)


def _table_spec(window: int, capability: int) -> CompileSpec:
    signature = {"ds_part_ptr": "*fp32", "dtable_ptr": "*fp32", **_ints("num_splits", "num_heads", "window_tokens")}
    return CompileSpec(_window_attention_table_grad_kernel, signature,
                       {"WH": window, "WW": window, "BLOCK_R": 1024 if window == 12 else 256}, capability,
                       num_warps=8)  # as the launcher


def _check(specs: list[CompileSpec], require_tensor_cores: bool) -> None:
    """Shared memory and registers within the card, no spills, and (matmul kernels) tensor-core
    instructions: mma.sync on sm80; on sm90 wgmma where a tile has the 64 rows wgmma needs, else
    mma.sync (the 16-row tiles of the shipped configs: larger tiles spill)."""
    reports = compile_reports(specs)
    problems = []
    for report in reports:
        print(report)
        problems += [f"{report}: {problem}" for problem in
                     fit_problems(report, CARDS[report.capability], require_tensor_cores=False)]
        if require_tensor_cores:
            expected = {"mma.sync"} if report.constexprs["BLOCK_M"] < 64 or report.capability < 90 else \
                {"wgmma.mma_async"}
            if report.tensor_core_instruction not in expected:
                problems.append(f"{report}: expected {expected}, found {report.tensor_core_instruction}")
    assert not problems, "\n".join(problems)


@pytest.mark.compile
def test_every_config_compiles_for_sm80_and_sm90_bf16() -> None:
    specs = [make(config, "bf16", capability) for config in CONFIGS for capability in CARDS
             for make in (_fwd_spec, _bwd_spec)]
    _check(specs, require_tensor_cores=True)


@pytest.mark.compile
def test_helper_kernels_compile_without_spills() -> None:
    # the table-gradient fold (no matmul) and the backward's delta = rowsum(dout * out)
    specs = [_table_spec(window, capability) for window in (7, 12) for capability in CARDS]
    _check(specs + [_delta_spec("bf16", capability) for capability in CARDS], require_tensor_cores=False)


@pytest.mark.compile
@pytest.mark.slow
def test_every_config_compiles_for_sm80_and_sm90_fp16() -> None:
    specs = [make(config, "fp16", capability) for config in CONFIGS for capability in CARDS
             for make in (_fwd_spec, _bwd_spec)]
    _check(specs, require_tensor_cores=True)


def test_config_list_covers_every_window_the_triton_backend_accepts() -> None:
    from fiber_kernels.window_attention.triton_common import MAX_WINDOW_TOKENS, pick_config

    assert {pick_config(n).block_n for n in range(1, MAX_WINDOW_TOKENS + 1)} == {c.block_n for c in CONFIGS}
    assert set(WINDOW_OF) == {c.block_n for c in CONFIGS}
    with pytest.raises(ValueError, match="exceeds the largest tile"):
        pick_config(MAX_WINDOW_TOKENS + 1)
