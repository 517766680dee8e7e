"""Ahead-of-time Triton compiles for sm80/sm90 from a machine without a GPU."""

import pytest
import triton
import triton.language as tl
from fiber_kernels.testing import (
    CARD_LIMITS,
    CompileError,
    CompileReport,
    CompileSpec,
    compile_report,
    compile_reports,
    fit_problems,
)

from testing._triton_kernels import MATMUL_SIGNATURE, SCALE_SIGNATURE, _fill_kernel, _matmul_kernel, _scale_kernel

pytestmark = pytest.mark.compile

TILE = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32}
# 128 x 256 fp32 accumulators over 4 warps (128 threads) = 256 registers per thread for the accumulator
# alone: more than the 255 a thread can address, so it must spill (and compiles in ~2 s, unlike 256 x 256).
HUGE_TILE = {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 16}
MULTIPLY_ADD_SIGNATURE = {"a_ptr": "*fp32", "b_ptr": "*fp32", "c_ptr": "*fp32", "out_ptr": "*fp32", "n": "i32"}


@triton.jit
def _multiply_add_kernel(a_ptr, b_ptr, c_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """out = a * b + c elementwise: Triton contracts it to one fma.rn.f32 unless enable_fp_fusion=False."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    a = tl.load(a_ptr + offs, mask=inside)
    b = tl.load(b_ptr + offs, mask=inside)
    c = tl.load(c_ptr + offs, mask=inside)
    tl.store(out_ptr + offs, a * b + c, mask=inside)


@pytest.fixture(scope="module")
def reports() -> dict[str, CompileReport]:
    """One batch (two compile subprocesses) for the whole module: each compile takes seconds."""
    specs = {
        "sm80": CompileSpec(_matmul_kernel, MATMUL_SIGNATURE, TILE, 80),
        "sm90": CompileSpec(_matmul_kernel, MATMUL_SIGNATURE, TILE, 90),
        "huge_sm80": CompileSpec(_matmul_kernel, MATMUL_SIGNATURE, HUGE_TILE, 80, num_warps=4, num_stages=1),
        # BLOCK and EVEN left out: their defaults are compiled in.
        "fill_sm80": CompileSpec(_fill_kernel, {"x_ptr": "*fp32", "n": "i32", "value": "fp32"}, {}, 80),
        "fused_sm80": CompileSpec(_multiply_add_kernel, MULTIPLY_ADD_SIGNATURE, {"BLOCK": 256}, 80),
        "unfused_sm80": CompileSpec(_multiply_add_kernel, MULTIPLY_ADD_SIGNATURE, {"BLOCK": 256}, 80,
                                    options={"enable_fp_fusion": False}),
    }
    return dict(zip(specs, compile_reports(list(specs.values())), strict=True))


def test_matmul_tile_uses_mma_sync_on_sm80(reports: dict[str, CompileReport]) -> None:
    report = reports["sm80"]
    assert report.capability == 80 and report.name == "_matmul_kernel"
    assert report.tensor_core and report.tensor_core_instruction == "mma.sync"
    # 3 stages of a 64x32 and a 32x64 fp16 tile at least (Triton may pad or reuse buffers)
    assert report.shared_bytes >= 2 * (64 * 32 * 2) and report.registers > 0
    assert not report.spills and report.stack_bytes == 0 and report.local_bytes == 0
    assert fit_problems(report, "A100") == []
    assert "mma.sync" in str(report) and "no spills" in str(report)


def test_matmul_tile_uses_wgmma_on_sm90(reports: dict[str, CompileReport]) -> None:
    report = reports["sm90"]
    assert report.capability == 90 and report.tensor_core_instruction == "wgmma.mma_async"
    assert report.shared_bytes > 0 and not report.spills
    assert fit_problems(report, "H100") == []


def test_huge_tile_spills(reports: dict[str, CompileReport]) -> None:
    report = reports["huge_sm80"]
    assert report.spills and report.stack_bytes + report.local_bytes > 0
    problems = fit_problems(report, "A100")
    assert any(problem.startswith("spills to local memory") for problem in problems)
    assert "SPILLS" in str(report)


def test_kernel_without_dot_has_no_tensor_core_instructions(reports: dict[str, CompileReport]) -> None:
    report = reports["fill_sm80"]
    assert report.constexprs == {"BLOCK": 256, "EVEN": False}
    assert not report.tensor_core and report.tensor_core_instruction is None and report.shared_bytes == 0
    assert fit_problems(report, "A100") == ["expected mma.sync on A100, found no tensor-core instruction"]
    assert fit_problems(report, "A100", require_tensor_cores=False) == []


def test_options_reach_the_compiler(reports: dict[str, CompileReport]) -> None:
    """enable_fp_fusion=False is passed through to Triton: the a * b + c kernel loses its FMAs."""
    fused, unfused = reports["fused_sm80"], reports["unfused_sm80"]
    assert fused.options == {} and fused.fma_instructions > 0
    assert unfused.options == {"enable_fp_fusion": False} and unfused.fma_instructions == 0
    assert "{'enable_fp_fusion': False}" in str(unfused) and "0 fma" in str(unfused)
    assert reports["sm80"].options == {}


def test_fit_problems_reads_the_card_table(reports: dict[str, CompileReport]) -> None:
    report = reports["sm80"]
    assert fit_problems(report, "H100")[0] == "compiled for sm80, H100 is sm90"
    too_big = CompileReport(**{**report.__dict__, "shared_bytes": CARD_LIMITS["A100"].max_shared_bytes_per_block + 1})
    assert any("exceeds A100's 166912 B per block" in problem for problem in fit_problems(too_big, "A100"))


def test_card_limits_have_sources() -> None:
    assert {card: limits.max_shared_bytes_per_block for card, limits in CARD_LIMITS.items()} == {
        "V100": 98304, "A100": 166912, "H100": 232448}
    assert all("Programming Guide" in limits.source for limits in CARD_LIMITS.values())


def test_compile_error_is_reported() -> None:
    # tl.arange needs a power-of-two length: Triton's front end rejects BLOCK=1000.
    with pytest.raises(CompileError, match="_scale_kernel sm80"):
        compile_report(_scale_kernel, SCALE_SIGNATURE, {"BLOCK": 1000}, 80)


def _local_kernel() -> object:
    @triton.jit
    def kernel(x_ptr, BLOCK: tl.constexpr):
        tl.store(x_ptr + tl.arange(0, BLOCK), 1.0)

    return kernel


@pytest.mark.parametrize(("call", "error", "pattern"), [
    (lambda: compile_report(len, {}, {}, 80), TypeError, "kernel must be a @triton.jit function"),
    (lambda: compile_report(_scale_kernel, [], {"BLOCK": 64}, 80), TypeError, "signature must be a dict"),
    (lambda: compile_report(_scale_kernel, SCALE_SIGNATURE, None, 80), TypeError, "constexprs must be a dict"),
    (lambda: compile_report(_scale_kernel, SCALE_SIGNATURE, {"BLOCK": [64]}, 80), TypeError,
     r"constexprs\['BLOCK'\] must be a bool, int, float, str, None or tl dtype"),
    (lambda: compile_report(_scale_kernel, {"x_ptr": "*fp32"}, {"BLOCK": 64}, 80), ValueError,
     r"signature is missing kernel arguments \['y_ptr', 'n', 'scale'\]"),
    (lambda: compile_report(_scale_kernel, {**SCALE_SIGNATURE, "z": "i32"}, {"BLOCK": 64}, 80), ValueError,
     r"name arguments the kernel does not have: \['z'\]"),
    (lambda: compile_report(_scale_kernel, SCALE_SIGNATURE, {"BLOCK": 64}, 85), ValueError,
     "capability must be one of"),
    (lambda: compile_report(_scale_kernel, SCALE_SIGNATURE, {"BLOCK": 64}, 80, num_warps=3), ValueError,
     "num_warps must be a power of two"),
    (lambda: compile_report(_scale_kernel, SCALE_SIGNATURE, {"BLOCK": 64}, 80, num_stages=0), ValueError,
     "num_stages must be an int >= 1"),
    (lambda: compile_report(_local_kernel(), {"x_ptr": "*fp32"}, {"BLOCK": 64}, 80), ValueError,
     "must be defined at module level"),
    (lambda: compile_report(_scale_kernel, SCALE_SIGNATURE, {"BLOCK": 64}, 80, options=[("debug", True)]), TypeError,
     "options must be a dict of Triton compile option name -> value, got list"),
    (lambda: compile_report(_scale_kernel, SCALE_SIGNATURE, {"BLOCK": 64}, 80, options={"enable_fp_fuse": False}),
     ValueError, r"options\['enable_fp_fuse'\] is not a Triton compile option; known: \[.*'enable_fp_fusion'"),
    (lambda: compile_report(_scale_kernel, SCALE_SIGNATURE, {"BLOCK": 64}, 80, options={"num_warps": 8}),
     ValueError, r"options\['num_warps'\] is not allowed: num_warps and num_stages are CompileSpec fields"),
    (lambda: compile_report(_scale_kernel, SCALE_SIGNATURE, {"BLOCK": 64}, 80, options={"maxnreg": [64]}),
     TypeError, r"options\['maxnreg'\] must be a bool, int, float, str or None, got list"),
    (lambda: compile_reports([]), ValueError, "specs must not be empty"),
    (lambda: compile_reports([(1, 2)]), TypeError, "specs must be a list of CompileSpec"),
    (lambda: compile_reports([CompileSpec(_scale_kernel, SCALE_SIGNATURE, {"BLOCK": 64}, 80)] * 2 + [
        CompileSpec(_scale_kernel, SCALE_SIGNATURE, {"BLOCK": 64}, 81)]), ValueError,
     r"specs\[2\]: capability must be one of"),
    (lambda: compile_reports([CompileSpec(_scale_kernel, SCALE_SIGNATURE, {"BLOCK": 64}, 80)], workers=0),
     ValueError, "workers must be an int >= 1"),
    (lambda: fit_problems("report", "A100"), TypeError, "report must be a CompileReport"),
])
def test_bad_arguments(call, error: type, pattern: str) -> None:  # noqa: ANN001
    with pytest.raises(error, match=pattern):
        call()


def test_bad_card() -> None:
    report = CompileReport("k", 80, 4, 3, {}, 0, 0, 32, 0, 0, False, True, "mma.sync")
    with pytest.raises(ValueError, match=r"card must be one of \('V100', 'A100', 'H100'\), got 'A10'"):
        fit_problems(report, "A10")


@pytest.mark.slow
def test_sm70_has_no_tensor_core_path_in_triton() -> None:
    """Why V100 needs csrc/: Triton compiles tl.dot for sm70 to FMA code, no mma instruction, and spills."""
    report = compile_report(_matmul_kernel, MATMUL_SIGNATURE, TILE, 70)
    assert report.tensor_core_instruction is None
    assert report.spills  # the FMA fallback of a 64x64 tile needs more than 255 registers
