"""Every config the launchers can pick compiles ahead of time for sm80 (A100) and sm90 (H100) with no
spills, shared memory within the card's limit and tensor-core instructions (mma.sync / wgmma).

Default run: every tile config the launchers can pick, with a key mask (the superset of the code):
the half-precision table with bf16 inputs (and its dk/dv kernel writing fp32 partials, the launch when
the shared query rows are split), the fp32 table's own configs with fp32 (tf32) inputs, and the linear
configs. ``-m slow`` adds fp16, all fp32 (tf32) and the unmasked variants. Exact fp32
(``allow_tf32 = False``, FMA math) spills in these tiles, so the Triton backend declines it on GPUs
(tests/cross_attention/test_validation.py) and the torch backend serves it.
Each variant is compiled as a launch on FIBER's layouts specialises it: strides equal to 1 become the
constant 1 (Triton's launch specialisation) and the attention kernels take their ``ALIGNED`` variant.
"""

from __future__ import annotations

import pytest
from fiber_kernels.cross_attention import triton_attention as ta
from fiber_kernels.cross_attention import triton_linear as tlin
from fiber_kernels.testing.aot import CompileSpec, compile_reports, fit_problems

CARDS = {80: "A100", 90: "H100"}
FLOATS = ("qk_scale", "scale")
# (B, H, N, D) views with a contiguous head dim, and the contiguous (Bk, Nk) mask.
ATTENTION_UNIT_STRIDES = ("stride_qd", "stride_kd", "stride_vd", "stride_od", "stride_dod", "stride_dqd", "stride_dkd",
                          "stride_dvd", "stride_mn")


def _spec(kernel, pointers: dict[str, str], constexprs: dict, capability: int, warps: int, stages: int,
          unit_strides: tuple[str, ...] = ()) -> CompileSpec:
    names = kernel.arg_names if hasattr(kernel, "arg_names") else kernel.fn.arg_names
    constexprs = {**constexprs, **{name: 1 for name in unit_strides if name in names}}
    signature = {name: pointers.get(name, "fp32" if name in FLOATS else "i32")
                 for name in names if name not in constexprs}
    return CompileSpec(kernel, signature, constexprs, capability, warps, stages)


def attention_specs(dtype: str, has_mask: bool, precision: str, capability: int,
                    partial_dkdv: bool = False) -> list[CompileSpec]:
    """The forward, dq and dk/dv kernels of every head dim's config, and the preprocess kernel."""
    io = {name: f"*{dtype}" for name in ("Q", "K", "V", "OUT", "DO", "DQ", "DK", "DV")}
    pointers = {**io, "MASK": "*u8", "LSE": "*fp32", "DELTA": "*fp32"}
    if partial_dkdv:
        pointers.update(DK="*fp32", DV="*fp32")
    kernels = {"fwd": ta._cross_attention_fwd_kernel, "dq": ta._cross_attention_bwd_dq_kernel,
               "dkdv": ta._cross_attention_bwd_dkdv_kernel}
    specs = []
    for head_dim in ta.HEAD_DIMS:
        for name, kernel in kernels.items():
            config = ta.CONFIGS[(name, capability, dtype == "fp32")][head_dim]
            constexprs = {"HAS_MASK": has_mask, "HEAD_DIM": head_dim, "BLOCK_M": config.block_m,
                          "BLOCK_N": config.block_n, "DOT_PRECISION": precision, "ALIGNED": True}
            specs.append(_spec(kernel, pointers, constexprs, capability, config.num_warps, config.num_stages,
                               ATTENTION_UNIT_STRIDES))
        specs.append(_spec(ta._cross_attention_bwd_preprocess_kernel, pointers,
                           {"HEAD_DIM": head_dim, "BLOCK_M": ta.PREPROCESS_BLOCK_M, "ALIGNED": True}, capability, 4, 3,
                           ATTENTION_UNIT_STRIDES))
    return specs


def linear_specs(dtype: str, precision: str, capability: int) -> list[CompileSpec]:
    fwd, bwd = tlin.FWD_CONFIG, tlin.BWD_CONFIG
    blocks = lambda c: {"BLOCK_M": c.block_m, "BLOCK_N": c.block_n, "BLOCK_K": c.block_k, "DOT_PRECISION": precision}
    return [  # out = x + g * (a @ Wᵀ + b); da = g * (dy @ W); G = dyᵀ @ a (A is dy transposed)
        _spec(tlin._gated_linear_fwd_kernel,
              {n: f"*{dtype}" for n in ("A", "W", "BIAS", "X", "OUT")} | {"GATE": "*fp32"},
              {"HAS_BIAS": True, **blocks(fwd)}, capability, fwd.num_warps, fwd.num_stages,
              ("stride_ak", "stride_wk", "stride_bias", "stride_xn", "stride_on")),
        _spec(tlin._gated_linear_bwd_kernel, {"A": f"*{dtype}", "B": f"*{dtype}", "C": f"*{dtype}", "GATE": "*fp32"},
              {"SCALE_BY_GATE": True, **blocks(bwd)}, capability, bwd.num_warps, bwd.num_stages,
              ("stride_ak", "stride_bn", "stride_cn")),
        _spec(tlin._gated_linear_bwd_kernel, {"A": f"*{dtype}", "B": f"*{dtype}", "C": "*fp32", "GATE": "*fp32"},
              {"SCALE_BY_GATE": False, **blocks(bwd)}, capability, bwd.num_warps, bwd.num_stages,
              ("stride_am", "stride_bn", "stride_cn")),
    ]


def _check(specs: list[CompileSpec], require_tensor_cores: bool = True) -> None:
    reports = compile_reports(specs)
    problems = []
    for report in reports:
        print(report)
        needs_mma = require_tensor_cores and report.name != "_cross_attention_bwd_preprocess_kernel"
        problems += [f"{report}: {p}" for p in fit_problems(report, CARDS[report.capability],
                                                            require_tensor_cores=needs_mma)]
    assert not problems, "\n".join(problems)


def _fp32_only_configs(specs: list[CompileSpec]) -> list[CompileSpec]:
    """The fp32 specs whose tile config differs from every half-precision config (the fp32 table)."""
    def key(spec: CompileSpec) -> tuple:
        blocks = {k: v for k, v in spec.constexprs.items() if k.startswith(("BLOCK", "HEAD"))}
        return spec.kernel, spec.capability, spec.num_warps, spec.num_stages, tuple(sorted(blocks.items()))

    half = {key(spec) for capability in CARDS for spec in attention_specs("bf16", True, "tf32", capability)}
    return [spec for spec in specs if key(spec) not in half]


def _partial_dkdv(specs: list[CompileSpec]) -> list[CompileSpec]:
    """The dk/dv kernels of ``attention_specs(..., partial_dkdv=True)``: fp32 dk/dv partials (splits > 1)."""
    return [spec for spec in specs if spec.kernel is ta._cross_attention_bwd_dkdv_kernel]


@pytest.mark.compile
def test_shipped_configs_compile_for_sm80_and_sm90():
    """Every tile config of CONFIGS (bf16 inputs; the fp32 table's own configs with fp32/tf32 inputs), and the
    dk/dv kernel writing fp32 partials from bf16 inputs, as the launcher runs it when splits > 1."""
    specs = []
    for capability in CARDS:
        specs += attention_specs("bf16", True, "tf32", capability)
        partial = _partial_dkdv(attention_specs("bf16", True, "tf32", capability, partial_dkdv=True))
        assert len(partial) == len(ta.HEAD_DIMS) and all(spec.signature["DK"] == "*fp32" for spec in partial)
        specs += partial
        specs += linear_specs("bf16", "tf32", capability)
        specs += _fp32_only_configs(attention_specs("fp32", True, "tf32", capability))
    _check(specs)


@pytest.mark.compile
@pytest.mark.slow
@pytest.mark.parametrize("dtype,precision,has_mask,partial", [
    ("fp16", "tf32", True, False), ("fp16", "tf32", False, False), ("bf16", "tf32", False, True),
    ("fp32", "tf32", True, False),
])
def test_other_variants_compile(dtype, precision, has_mask, partial):
    specs = []
    for capability in CARDS:
        specs += attention_specs(dtype, has_mask, precision, capability, partial_dkdv=partial)
        specs += linear_specs(dtype, precision, capability)
    _check(specs)
