"""The window-attention CUDA kernels compile for the GPU: nvcc 13 for sm80/sm90, NVRTC 12 for sm70 (V100,
the reason the wmma fp16 path exists), with torch's ``__CUDA_NO_HALF_*`` macros as in ``_C``. Every
kernel instantiation is reported, none spills, registers fit a block, and the dynamic shared memory
of the shipped shapes (from the launcher's own layout helper) fits each card's per-block limit."""

from __future__ import annotations

import pytest
from fiber_kernels.testing import emu, nvcc_report, nvcc_unavailable_reason
from fiber_kernels.testing.aot import CARD_LIMITS

SOURCE = emu.REPO_ROOT / "tests" / "window_attention" / "window_attention_kernels_nvcc.cu"
KERNELS = [f"{kernel}I{dtype}" for kernel in ("13wa_fwd_kernel", "16wa_bwd_dq_kernel", "17wa_bwd_dkv_kernel")
           for dtype in ("f", "6__half", "13__nv_bfloat16")] + ["14wa_fold_kernel"]
CARDS = {70: "V100", 80: "A100", 90: "H100"}


@pytest.mark.compile
@pytest.mark.parametrize("arch", [70, 80, 90])
def test_kernels_compile_without_spills(arch: int) -> None:
    reason = nvcc_unavailable_reason(arch)
    if reason:
        pytest.skip(reason)
    include_dirs = list(emu.CSRC_INCLUDE_DIRS)  # NVRTC (sm70) gets the CUDA wheels' include folders itself
    defines = {flag[2:]: None for flag in emu.compile_flags() if flag.startswith("-D__CUDA_NO_")}
    reports = nvcc_report(SOURCE, arch, include_dirs=include_dirs, defines=defines)
    base = min(r.shared_bytes for r in reports)  # sm90 reserves 1 KiB per block; all else is dynamic
    limits = CARD_LIMITS[CARDS[arch]]
    for kernel in KERNELS:
        matches = [r for r in reports if f"{kernel}" in r.name]
        assert len(matches) == 1, f"{kernel} not (uniquely) in {[r.name for r in reports]}"
        report = matches[0]
        assert not report.spills, f"{kernel} spills on sm_{arch}: {report}"
        assert 0 < report.registers <= 255 and report.registers * 128 <= limits.max_registers_per_block, report
        assert report.shared_bytes == base and base <= 1024, report  # no static shared memory


@pytest.mark.compile
@pytest.mark.parametrize("window", [7, 12])
def test_shared_memory_fits_each_card(ops, window: int) -> None:
    # (element bytes, head dim) -> the cards whose per-block opt-in limit the layout must fit.
    # fp32/bf16 (4-byte storage) at head dim 64 needs sm80+; every Swin/FIBER shape (head dim 32) fits V100.
    for elem, head_dim, cards in [(2, 16, CARDS.values()), (2, 32, CARDS.values()), (2, 64, CARDS.values()),
                                  (4, 16, CARDS.values()), (4, 32, CARDS.values()), (4, 64, ("A100", "H100"))]:
        shared, threads, _, _ = ops.window_attention_launch_config(2, 24, 24, 4 * head_dim, 4, window, window, elem)
        assert threads == (128 if window == 7 else 64)
        for card in cards:
            assert shared <= CARD_LIMITS[card].max_shared_bytes_per_block, (window, elem, head_dim, card, shared)
