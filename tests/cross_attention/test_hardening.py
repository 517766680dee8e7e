"""Regression tests of issue 11 for the cross-attention family (each names its item): bias strides on the
Triton path (1), autocast of the ops and the fusion modules (2), bf16 declined under the interpreter (3),
and the fusion modules' argument checks (10)."""

from __future__ import annotations

import copy

import pytest
import torch
from fiber_kernels import BackendNotSupportedError
from fiber_kernels.cross_attention import cross_attention, gated_residual_linear, gated_residual_linear_reference
from fiber_kernels.modules.fusion import ImageToTextFusion, TextToImageFusion
from fiber_kernels.testing.numerics import assert_close_to_reference

from .test_modules import FiberImageToText, FiberTextToImage, _randomize


def _bias_base(layout: str, out_features: int, values: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(leaf, bias view): every other element of a longer vector, or one element expanded (stride 0); the
    leaf holds ``values`` (random when None)."""
    shape = (2 * out_features,) if layout == "strided" else (1,)
    leaf = (torch.randn(shape) if values is None else values.clone()).requires_grad_()
    return leaf, leaf[::2] if layout == "strided" else leaf.expand(out_features)


@pytest.mark.parametrize("layout", ["strided", "expanded"])
def test_item1_triton_gated_linear_reads_bias_through_its_strides(layout):
    """Item 1: a strided or expanded bias gave wrong outputs and gradients (read as contiguous)."""
    x, a = torch.randn(2, 5, 40), torch.randn(2, 5, 24)
    weight, alpha = torch.randn(40, 24) * 0.2, torch.tensor([0.7])
    base, _ = _bias_base(layout, 40)
    results = []
    for fn in (lambda *t: gated_residual_linear(*t, backend="triton"), gated_residual_linear_reference):
        leaf, bias = _bias_base(layout, 40, base.detach())
        leaves = [t.clone().requires_grad_() for t in (x, a, weight, alpha)]
        out = fn(leaves[0], leaves[1], leaves[2], bias, leaves[3])
        out.backward(torch.ones_like(out))
        results.append([out.detach(), leaf.grad] + [t.grad for t in leaves])
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)


# ---- item 2: autocast ------------------------------------------------------------------------------------

AUTOCAST = [pytest.param(torch.bfloat16, "auto", id="bf16-auto"), pytest.param(torch.float16, "auto", id="fp16-auto"),
            pytest.param(torch.float16, "triton", id="fp16-triton")]


def _fusion_pair(direction: str, backend: str):
    if direction == "image":
        fiber, ours = FiberImageToText(64, 2, 48), ImageToTextFusion(64, 2, dim_text=48, backend=backend)
        inputs = (torch.randn(4, 16, 64), torch.randn(2, 5, 48), torch.tensor([[False] * 5, [False] * 3 + [True] * 2]))
    else:
        fiber, ours = FiberTextToImage(64, 2, 96), TextToImageFusion(64, 2, dim_image=96, backend=backend)
        inputs = (torch.randn(2, 7, 64), torch.randn(2, 20, 96))
    _randomize(fiber)
    ours.load_state_dict(fiber.state_dict(), strict=True)
    return ours, fiber, inputs


def _run_module(module, inputs, cast: torch.dtype | None, autocast: torch.dtype | None):
    """Output, input grads and parameter grads; ``cast`` converts module and inputs first (no autocast)."""
    module = copy.deepcopy(module)
    if cast is not None:
        module = module.to(cast)
    leaves = [t.detach().to(cast or t.dtype).requires_grad_() if t.is_floating_point() else t for t in inputs]
    with torch.autocast("cpu", dtype=autocast or torch.bfloat16, enabled=autocast is not None):
        out = module(*leaves)
    out.float().backward(torch.ones(out.shape))
    grads = [t.grad for t in leaves if t.is_floating_point()]
    return [out.detach()] + grads + [p.grad for _, p in sorted(module.named_parameters()) if p.grad is not None]


@pytest.mark.parametrize("direction", ["image", "text"])
@pytest.mark.parametrize("dtype,backend", AUTOCAST)
def test_item2_fusion_modules_train_under_cpu_autocast(direction, dtype, backend):
    """Item 2: TypeError under torch.autocast before. Now the ops run in the region's dtype (residual cast too):
    the output has that dtype, gradients reach the fp32 inputs and parameters in fp32, and every value is
    within the tolerance rule against FIBER's eager code in fp64 and FIBER's code run entirely in ``dtype``."""
    ours, fiber, inputs = _fusion_pair(direction, backend)
    got = _run_module(ours, inputs, None, dtype)
    reference = _run_module(fiber, inputs, torch.float64, None)
    same_dtype = _run_module(fiber, inputs, dtype, None)
    assert got[0].dtype == dtype
    assert all(g.dtype == torch.float32 for g in got[1:])
    assert len(got) == len(reference) == len(same_dtype)
    for index, (g, r, t) in enumerate(zip(got, reference, same_dtype, strict=True)):
        floor = 2e-2 * max(1.0, r.abs().max().item()) if r.numel() == 1 else 1e-3
        assert_close_to_reference(g, r, t, atol_floor=floor, name=f"{direction} output/grad #{index}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_item2_ops_cast_to_the_autocast_dtype_forward_and_backward(dtype):
    """Item 2: inside autocast each op equals the op on inputs cast to the region's dtype, bit for bit, and
    its gradients reach the fp32 leaves as the cast of the low-precision gradients."""
    q, k, v = torch.randn(4, 2, 6, 32), torch.randn(2, 2, 5, 32), torch.randn(2, 2, 5, 32)
    x, a, w, b, alpha = torch.randn(3, 8), torch.randn(3, 5), torch.randn(8, 5), torch.randn(8), torch.tensor([0.4])
    cases = {"cross_attention": (lambda q, k, v: cross_attention(q, k, v, backend="torch"), (q, k, v)),
             "gated_residual_linear": (lambda x, a, w, b: gated_residual_linear(x, a, w, b, alpha, backend="torch"),
                                       (x, a, w, b))}
    for name, (fn, tensors) in cases.items():
        leaves = [t.clone().requires_grad_() for t in tensors]
        with torch.autocast("cpu", dtype=dtype):
            out = fn(*leaves)
        grad = torch.randn(out.shape)
        out.backward(grad.to(out.dtype))
        cast = [t.to(dtype).requires_grad_() for t in tensors]
        want = fn(*cast)
        want.backward(grad.to(dtype))
        assert out.dtype == dtype and torch.equal(out, want), name
        for leaf, low in zip(leaves, cast, strict=True):
            assert leaf.grad.dtype == torch.float32 and torch.equal(leaf.grad, low.grad.float()), name


# ---- item 3: bf16 under the interpreter ----------------------------------------------------------------

def test_item3_triton_declines_bf16_under_the_interpreter():
    """Item 3: the interpreter's bf16 tl.dot returns garbage; the Triton backend now declines with a reason."""
    q = torch.randn(2, 1, 4, 32, dtype=torch.bfloat16)
    with pytest.raises(BackendNotSupportedError, match="bfloat16 under TRITON_INTERPRET=1"):
        cross_attention(q, q, q, backend="triton")
    x = torch.randn(3, 8, dtype=torch.bfloat16)
    w = torch.randn(8, 8, dtype=torch.bfloat16)
    with pytest.raises(BackendNotSupportedError, match="bfloat16 under TRITON_INTERPRET=1"):
        gated_residual_linear(x, x, w, None, torch.tensor([0.5]), backend="triton")
    assert cross_attention(q, q, q).dtype == torch.bfloat16  # auto serves it (torch backend on the CPU)


# ---- item 10: module argument checks ------------------------------------------------------------------

def test_item10_text_to_image_rejects_more_captions_than_images():
    """Item 10: 4 captions against 2 images ran the op's grouping silently; the module's batch must match."""
    module = TextToImageFusion(64, 2, dim_image=96)
    with pytest.raises(ValueError, match=r"must have the same batch B, got 4 and 2"):
        module(torch.randn(4, 7, 64), torch.randn(2, 20, 96))


@pytest.mark.parametrize("direction,args,message", [
    ("image", ((16, 64), (2, 5, 48)), r"x must be 3-D \(nW \* B, N, dim\), got shape \(16, 64\)"),
    ("image", ((4, 16, 64), (5, 48)), r"other must be 3-D \(B, N_text, dim_text\)"),
    ("image", ((4, 16, 32), (2, 5, 48)), r"x must be \(nW \* B, N, dim\) with 64 channels"),
    ("image", ((5, 16, 64), (2, 5, 48)), r"same number nW >= 1 of windows for each of the B images"),
    ("text", ((1, 2, 7, 64), (2, 20, 96)), r"attention_output must be 3-D \(B, N_text, hidden_size\)"),
    ("text", ((2, 7, 64), (2, 20, 95)), r"other must be \(B, N_image, dim_image\) with 96 channels"),
])
def test_item10_fusion_modules_name_the_bad_argument(direction, args, message):
    """Item 10: wrongly ranked inputs gave "too many values to unpack"; now a ValueError naming the argument."""
    module = ImageToTextFusion(64, 2, dim_text=48) if direction == "image" else TextToImageFusion(64, 2, dim_image=96)
    with pytest.raises(ValueError, match=message):
        module(*(torch.randn(shape) for shape in args))


def test_item10_fusion_constructors_raise_value_and_type_errors():
    """Item 10: num_heads=0 raised ZeroDivisionError; values are ValueError, wrong types TypeError."""
    with pytest.raises(ValueError, match="num_heads must be an int >= 1, got 0"):
        ImageToTextFusion(64, 0)
    with pytest.raises(TypeError, match="num_heads must be an int >= 1, got float"):
        TextToImageFusion(64, 2.0)
    with pytest.raises(ValueError, match="hidden_size must be divisible by num_heads"):
        TextToImageFusion(64, 3)


# ---- item 7: the C++ launchers check devices and the scale themselves ---------------------------------


def test_item7_cuda_launchers_reject_tensors_on_another_device(ops):
    """Item 7: the launchers behind ``torch.ops.fiber_kernels_C`` read every pointer they get; a tensor on
    another device (here meta, through the pybind binding the dispatcher cannot reroute) must raise."""
    q = torch.randn(2, 1, 3, 32)
    mask = torch.zeros(2, 3, dtype=torch.bool, device="meta")
    with pytest.raises(RuntimeError, match="cross_attention_fwd: key_padding_mask must be on cpu"):
        ops.cross_attention_fwd(q, q, q, mask, 0.2, seed=0)
    with pytest.raises(RuntimeError, match="cross_attention_fwd: scale must be a finite float > 0, got nan"):
        ops.cross_attention_fwd(q, q, q, None, float("nan"), seed=0)
    x, w = torch.randn(3, 8), torch.randn(8, 8)
    with pytest.raises(RuntimeError, match="gated_residual_linear_fwd: bias must be on cpu"):
        ops.gated_residual_linear_fwd(x, x, w, torch.zeros(8, device="meta"), torch.ones(1), seed=0)
    with pytest.raises(RuntimeError, match="gated_residual_linear_bwd: gate must be on cpu"):
        ops.gated_residual_linear_bwd(x, x, w, torch.ones(1, device="meta"), seed=0)
