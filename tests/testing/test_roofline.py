"""Roofline projection and the eager FLOP / byte counter."""

import pytest
import torch
from fiber_kernels.testing import GPU_SPECS, count_flops_and_bytes, describe_projection, fake_cuda, project_time


def test_pure_bandwidth_case_is_bytes_over_bandwidth() -> None:
    # Copying 1 GiB on an A100 80GB SXM (2,039 GB/s): no FLOPs.
    assert project_time(0, 2**30, "A100", torch.float16) == pytest.approx(2**30 / 2039e9, rel=1e-12)


def test_pure_compute_case_is_flops_over_peak() -> None:
    # A 4096^3 fp16 matmul's FLOPs with no bytes: 2 * 4096^3 / 989.5 TFLOP/s on an H100 SXM.
    flops = 2 * 4096**3
    assert project_time(flops, 0, "H100", torch.float16) == pytest.approx(flops / 989.5e12, rel=1e-12)
    assert project_time(flops, 0, "V100", torch.float32) == pytest.approx(flops / 15.7e12, rel=1e-12)


def test_time_is_the_larger_of_compute_and_memory() -> None:
    flops, nbytes = 312e12, 2039e9 * 0.5  # 1 s of compute, 0.5 s of memory on an A100
    assert project_time(flops, nbytes, "A100", torch.bfloat16) == pytest.approx(1.0)
    assert project_time(flops / 4, nbytes, "A100", torch.bfloat16) == pytest.approx(0.5)


def test_every_spec_has_a_source_and_description_says_projected() -> None:
    for spec in GPU_SPECS.values():
        assert "datasheet" in spec.source
    text = describe_projection(1e12, 1e9, "A100", torch.float16)
    assert text.startswith("projected A100-SXM4-80GB float16:") and "compute-bound" in text


def test_matmul_flops_and_bytes() -> None:
    M, N, K = 64, 48, 32
    a, b = torch.randn(M, K), torch.randn(K, N)
    flops, nbytes = count_flops_and_bytes(torch.mm, a, b)
    assert flops == 2 * M * N * K
    assert nbytes == (M * K + K * N + M * N) * 4


def test_matmul_backward_counts_two_more_matmuls() -> None:
    M, N, K = 64, 48, 32
    a, b = torch.randn(M, K, requires_grad=True), torch.randn(K, N, requires_grad=True)
    flops, _ = count_flops_and_bytes(torch.mm, a, b, backward=True)
    assert flops == 3 * 2 * M * N * K
    assert a.grad is None and b.grad is None


def test_views_move_no_bytes_and_fake_tensors_count_real_shapes() -> None:
    x, w = fake_cuda(((2, 256, 768), torch.float16), ((768, 768), torch.float16))
    flops, nbytes = count_flops_and_bytes(lambda x, w: x.view(512, 768) @ w.t(), x, w)
    assert flops == 2 * 512 * 768 * 768
    assert nbytes == (512 * 768 + 768 * 768 + 512 * 768) * 2


@pytest.mark.parametrize(("call", "error", "pattern"), [
    (lambda: project_time("1", 0, "A100", torch.float16), TypeError, "flops must be a number"),
    (lambda: project_time(-1, 0, "A100", torch.float16), ValueError, "flops must be a finite number >= 0"),
    (lambda: project_time(0, float("inf"), "A100", torch.float16), ValueError, "bytes_moved must be a finite"),
    (lambda: project_time(0, 0, "A10", torch.float16), ValueError, "gpu must be one of"),
    (lambda: project_time(0, 0, "A100", "fp16"), TypeError, "dtype must be a torch.dtype"),
    (lambda: project_time(0, 0, "A100", torch.int8), ValueError, "dtype must be one of"),
    (lambda: project_time(0, 0, "V100", torch.bfloat16), ValueError, "dtype bfloat16 has no tensor-core peak on V100"),
    (lambda: describe_projection(0, 0, "B200", torch.float16), ValueError, "gpu must be one of"),
    (lambda: count_flops_and_bytes("mm", torch.ones(2)), TypeError, "fn must be callable"),
    (lambda: count_flops_and_bytes(torch.mm), ValueError, "inputs must contain at least one torch.Tensor"),
    (lambda: count_flops_and_bytes(torch.exp, torch.ones(2), backward="yes"), TypeError, "backward must be a bool"),
    (lambda: count_flops_and_bytes(torch.exp, torch.ones(2), backward=True), ValueError,
     "with backward=True, fn must return a floating-point tensor that requires grad"),
])
def test_bad_arguments(call, error: type, pattern: str) -> None:  # noqa: ANN001
    with pytest.raises(error, match=pattern):
        call()
