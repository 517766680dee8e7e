"""The custom ops trace under FakeTensorMode (real FIBER shapes on fake CUDA tensors), pass
``torch.library.opcheck`` on CPU (schema, fake impl, autograd registration), and save only
q, k, v, out and the row log-sum-exp."""

from __future__ import annotations

import pytest
import torch
from fiber_kernels.cross_attention import cross_attention, gated_residual_linear
from fiber_kernels.cross_attention.function import (
    cross_attention_backward_op,
    cross_attention_op,
    gated_residual_linear_backward_op,
    gated_residual_linear_op,
)
from fiber_kernels.modules.fusion import ImageToTextFusion, TextToImageFusion
from fiber_kernels.testing.memory import fake_cuda, peak_bytes, saved_bytes

from .test_modules import FiberImageToText, FiberTextToImage


def test_cross_attention_traces_on_fake_cuda_at_fiber_coarse_shape():
    q, k, v = fake_cuda(((32, 16, 144, 32), torch.bfloat16), ((8, 16, 40, 32), torch.bfloat16),
                        ((8, 16, 40, 32), torch.bfloat16))
    with q.fake_mode:
        mask = torch.zeros(8, 40, dtype=torch.bool, device="cuda")
        out = cross_attention(q, k, v, mask)  # auto picks triton for CUDA sm80+
    assert out.shape == (32, 16, 144, 32) and out.dtype == torch.bfloat16 and out.device.type == "cuda"
    assert out.transpose(1, 2).is_contiguous()  # stored (B, Nq, H, D): the module's reshape is free
    saved = saved_bytes(lambda *t: cross_attention(*t, mask), q, k, v)
    q_and_out = 2 * 32 * 16 * 144 * 32 * 2
    k_and_v = 2 * 8 * 16 * 40 * 32 * 2
    lse, mask_bytes = 32 * 16 * 144 * 4, 8 * 40
    assert saved == q_and_out + k_and_v + lse + mask_bytes  # never the (B, H, Nq, Nk) probabilities
    assert peak_bytes(lambda *t: cross_attention(*t, mask), q, k, v) > 0  # backward runs on fake tensors


def test_gated_linear_traces_on_fake_cuda_and_saves_no_projection():
    x, a, weight, bias, alpha = fake_cuda(((32, 144, 512), torch.bfloat16), ((32, 144, 512), torch.bfloat16),
                                          ((512, 512), torch.bfloat16), ((512,), torch.bfloat16),
                                          ((1,), torch.bfloat16))
    out_bytes = 32 * 144 * 512 * 2
    saved = saved_bytes(lambda *t: gated_residual_linear(*t), x, a, weight, bias, alpha)
    assert saved == out_bytes + 512 * 512 * 2 + 512 * 2 + 2  # a, weight, bias, alpha; never a @ Wᵀ + b
    assert peak_bytes(lambda *t: gated_residual_linear(*t), x, a, weight, bias, alpha) > 0


@pytest.mark.parametrize("direction", ["image", "text"])
def test_fusion_modules_trace_on_fake_cuda_and_save_less_than_fiber(direction):
    bf16 = torch.bfloat16
    previous = torch.get_default_dtype()
    torch.set_default_dtype(bf16)  # parameters born bf16 on the fake device (FIBER trains in bf16/fp16)
    try:
        if direction == "image":  # FIBER coarse stage 3: 8 images x 4 windows of 144 tokens, text 40
            x, other = fake_cuda(((32, 144, 512), bf16), ((8, 40, 768), bf16))
            with x.fake_mode, torch.device("cuda"):
                ours, fiber = ImageToTextFusion(512, 16, dim_text=768), FiberImageToText(512, 16, 768)
        else:
            x, other = fake_cuda(((8, 40, 768), bf16), ((8, 576, 512), bf16))
            with x.fake_mode, torch.device("cuda"):
                ours, fiber = TextToImageFusion(768, 12, dim_image=512), FiberTextToImage(768, 12, 512)
    finally:
        torch.set_default_dtype(previous)
    with x.fake_mode:
        out = ours(x, other)
    assert out.shape == x.shape and out.device.type == "cuda" and out.dtype == bf16
    fused = saved_bytes(lambda *t: ours(*t), x, other)
    eager = saved_bytes(lambda *t: fiber(*t), x, other)
    probabilities = (32 * 16 * 144 * 40 if direction == "image" else 8 * 12 * 40 * 576) * 2
    assert fused + probabilities <= eager  # FIBER keeps the softmax probabilities, the kernel does not


def test_opcheck_cross_attention_ops():
    q = torch.randn(4, 2, 9, 32, requires_grad=True)
    k = torch.randn(2, 2, 5, 32, requires_grad=True)
    v = torch.randn(2, 2, 5, 32, requires_grad=True)
    mask = torch.tensor([[False, False, True, False, True], [True] * 5])
    torch.library.opcheck(cross_attention_op, (q, k, v, mask, 0.2))
    out, lse = cross_attention_op(q.detach(), k.detach(), v.detach(), mask, 0.2)
    torch.library.opcheck(cross_attention_backward_op, (torch.randn_like(out), q.detach(), k.detach(), v.detach(),
                                                        out, lse, mask, 0.2))


def test_opcheck_gated_linear_ops():
    x, a = torch.randn(10, 16, requires_grad=True), torch.randn(10, 24, requires_grad=True)
    weight, bias = torch.randn(16, 24, requires_grad=True), torch.randn(16, requires_grad=True)
    alpha = torch.tensor([0.3], requires_grad=True)
    torch.library.opcheck(gated_residual_linear_op, (x, a, weight, bias, alpha, "tanh"))
    torch.library.opcheck(gated_residual_linear_backward_op, (torch.randn(10, 16), a.detach(), weight.detach(),
                                                              bias.detach(), alpha.detach(), "identity"))
