"""The fusion modules equal an eager implementation written from FIBER's code (microsoft/FIBER
``swin_transformer.py`` WindowAttention image→text branch, ``roberta.py`` RobertaLayer text→image
branch): same state dict keys, random weights, both directions, fusion on and off."""

from __future__ import annotations

import copy

import pytest
import torch
from fiber_kernels.modules.fusion import ImageToTextFusion, TextToImageFusion
from fiber_kernels.testing.numerics import assert_close_to_reference
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode


class FiberImageToText(nn.Module):
    """FIBER's eager image→text branch (per-window repeat_interleave of text k/v and mask)."""

    def __init__(self, dim, num_heads, dim_text):
        super().__init__()
        self.num_heads = num_heads
        self.qkv_text_i2t = nn.Linear(dim_text, dim * 2)
        self.qkv_i2t = nn.Linear(dim, dim)
        self.proj_i2t = nn.Linear(dim, dim)
        self.alpha_i2t = nn.Parameter(torch.zeros(1))
        self.norm_i2t_i = nn.LayerNorm(dim)

    def forward(self, x, y=None, y_mask=None):
        if y is None:
            return x
        B_, N, C = x.shape
        B_text, N_text, _ = y.shape
        nW = B_ // B_text
        kv_text = self.qkv_text_i2t(y).reshape(B_text, N_text, 2, self.num_heads, C // self.num_heads)
        kv_text = kv_text.permute(2, 0, 3, 1, 4)
        k_text = torch.repeat_interleave(kv_text[0], nW, dim=0)
        v_text = torch.repeat_interleave(kv_text[1], nW, dim=0)
        q = self.qkv_i2t(self.norm_i2t_i(x)).reshape(B_, N, 1, self.num_heads, C // self.num_heads)
        q = q.permute(2, 0, 3, 1, 4)[0] * k_text.size(-1) ** -0.5
        attn = q @ k_text.transpose(-2, -1)
        if y_mask is not None:  # FIBER's extended mask: (1 - text_mask) * -10000, in the model dtype
            y_mask = y_mask.to(attn.dtype) * -10000.0
            attn = attn + torch.repeat_interleave(y_mask.view(B_text, 1, 1, N_text), nW, dim=0)
        attn = attn.softmax(dim=-1)
        out = self.proj_i2t((attn @ v_text).transpose(1, 2).reshape(B_, N, C))
        return x + self.alpha_i2t * out


class FiberTextToImage(nn.Module):
    """FIBER's eager text→image branch: a HF-style cross RobertaAttention on the pre-LayerNorm output."""

    def __init__(self, hidden, num_heads, dim_image):
        super().__init__()
        self.num_heads = num_heads
        self.crossattention_t2i = nn.Module()
        self.crossattention_t2i.self = nn.Module()
        self.crossattention_t2i.self.query = nn.Linear(hidden, hidden)
        self.crossattention_t2i.self.key = nn.Linear(dim_image, hidden)
        self.crossattention_t2i.self.value = nn.Linear(dim_image, hidden)
        self.crossattention_t2i.output = nn.Module()
        self.crossattention_t2i.output.dense = nn.Linear(hidden, hidden)
        self.crossattention_t2i.output.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)
        self.alpha_t2i = nn.Parameter(torch.zeros(1))

    def _heads(self, t):
        return t.view(*t.shape[:-1], self.num_heads, -1).permute(0, 2, 1, 3)

    def forward(self, attention_output, encoder_hidden_states=None):
        if encoder_hidden_states is None:
            return attention_output
        attn = self.crossattention_t2i
        q = self._heads(attn.self.query(attention_output))
        k = self._heads(attn.self.key(encoder_hidden_states))
        v = self._heads(attn.self.value(encoder_hidden_states))
        scores = (q @ k.transpose(-1, -2)) / q.shape[-1] ** 0.5
        context = (scores.softmax(-1) @ v).permute(0, 2, 1, 3).flatten(2)
        return self.alpha_t2i * attn.output.dense(context) + attention_output


def _randomize(module: nn.Module) -> None:
    with torch.no_grad():
        for name, param in module.named_parameters():
            param.copy_(torch.randn_like(param) * (0.5 if name.startswith("alpha") else 0.1))


def _compare(ours, fiber, inputs_ours, inputs_fiber, dtype):
    """Output, input grads and parameter grads of ``ours`` vs FIBER's eager code (fp64 and same dtype).

    Float inputs are cast and receive gradients; other inputs (the bool mask) pass unchanged.
    """
    def run(module, args, cast):
        module = module.to(cast)
        module.zero_grad()
        copies = [t.detach().to(cast).requires_grad_() if t.is_floating_point() else t for t in args]
        out = module(*copies)
        out.backward(torch.ones_like(out))
        grads = [c.grad for c in copies if c.requires_grad]
        grads += [p.grad for _, p in sorted(module.named_parameters()) if p.grad is not None]
        return [out.detach()] + grads

    reference = run(fiber, inputs_fiber, torch.float64)
    same_dtype = run(fiber, inputs_fiber, dtype)
    got = run(ours, inputs_ours, dtype)
    assert len(got) == len(reference)
    for index, (a, r, t) in enumerate(zip(got, reference, same_dtype, strict=True)):
        # The alpha grad is one cancelling sum over all M * C products (fp32 accumulation order differs
        # from PyTorch's), a single rounding sample: its floor is relative.
        floor = 1e-4 * max(1.0, r.abs().max().item()) if r.numel() == 1 else 1e-5
        assert_close_to_reference(a, r, t, atol_floor=floor, name=f"output/grad #{index}")


def _pair(direction: str, backend: str, mask: torch.Tensor | None = None):
    """Ours and FIBER's eager module of ``direction`` ("image": image→text, "text": text→image) with the same
    random weights, and the inputs ``[x, other]`` (and ``mask``, the image side's text padding, when given)."""
    if direction == "image":
        fiber, ours = FiberImageToText(64, 2, 48), ImageToTextFusion(64, 2, dim_text=48, backend=backend)
        inputs = [torch.randn(8, 49, 64), torch.randn(2, 5, 48)]  # 8 windows of 49 tokens, 2 texts of 5
    else:
        fiber, ours = FiberTextToImage(64, 2, 96), TextToImageFusion(64, 2, dim_image=96, backend=backend)
        inputs = [torch.randn(2, 40, 64), torch.randn(2, 144, 96)]  # 2 texts of 40 tokens, 2 images of 144
    _randomize(fiber)
    ours.load_state_dict(fiber.state_dict(), strict=True)
    return ours, fiber, inputs + ([] if mask is None else [mask])


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("dtype", [pytest.param(torch.float32, id="fp32"), pytest.param(torch.float16, id="fp16")])
def test_image_to_text_matches_fiber(backend, dtype):
    pad = torch.tensor([[False] * 5, [False, False, False, True, True]])
    ours, fiber, inputs = _pair("image", backend, pad)
    _compare(ours, fiber, inputs, inputs, dtype)


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("dtype", [pytest.param(torch.float32, id="fp32"), pytest.param(torch.float16, id="fp16")])
def test_text_to_image_matches_fiber(backend, dtype):
    ours, fiber, inputs = _pair("text", backend)
    _compare(ours, fiber, inputs, inputs, dtype)


class _CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func)
        return func(*args, **(kwargs or {}))


def test_fusion_off_returns_input_and_runs_nothing():
    image, text = ImageToTextFusion(64, 2, dim_text=48), TextToImageFusion(64, 2, dim_image=96)
    x, t = torch.randn(8, 49, 64, requires_grad=True), torch.randn(2, 40, 64, requires_grad=True)
    with _CountOps() as counter:
        assert image(x) is x and text(t) is t
        assert image(x, None, None) is x
    assert counter.ops == []
    with _CountOps() as counter:  # the counter sees ops: fusion on runs some
        image(x, torch.randn(2, 5, 48))
    assert len(counter.ops) > 0


def test_state_dict_keys_are_fibers():
    image = ImageToTextFusion(512, 16, dim_text=768)
    text = TextToImageFusion(768, 12, dim_image=512)
    assert set(image.state_dict()) == {
        "qkv_text_i2t.weight", "qkv_text_i2t.bias", "qkv_i2t.weight", "qkv_i2t.bias", "proj_i2t.weight",
        "proj_i2t.bias", "alpha_i2t", "norm_i2t_i.weight", "norm_i2t_i.bias"}
    assert set(text.state_dict()) == {
        "crossattention_t2i.self.query.weight", "crossattention_t2i.self.query.bias",
        "crossattention_t2i.self.key.weight", "crossattention_t2i.self.key.bias",
        "crossattention_t2i.self.value.weight", "crossattention_t2i.self.value.bias",
        "crossattention_t2i.output.dense.weight", "crossattention_t2i.output.dense.bias",
        "crossattention_t2i.output.LayerNorm.weight", "crossattention_t2i.output.LayerNorm.bias", "alpha_t2i"}
    assert image.qkv_text_i2t.weight.shape == (1024, 768)
    assert text.crossattention_t2i.self.key.weight.shape == (768, 512)
    assert image.alpha_i2t.shape == (1,) and image.alpha_i2t.item() == 0.0 and text.alpha_t2i.item() == 0.0


def _fiber_branch(fiber: nn.Module, x, other, mask, dtype) -> torch.Tensor:
    """FIBER's eager branch output before gating (the output of ``proj_i2t`` / ``output.dense``) in ``dtype``."""
    fiber = copy.deepcopy(fiber).to(dtype)
    image_side = isinstance(fiber, FiberImageToText)
    captured = []
    branch = fiber.get_submodule("proj_i2t" if image_side else "crossattention_t2i.output.dense")
    handle = branch.register_forward_hook(lambda module, args, out: captured.append(out))
    with torch.no_grad():
        args = (x.to(dtype), other.to(dtype)) + ((mask,) if image_side else ())
        fiber(*args)
    handle.remove()
    return captured[0]


@pytest.mark.parametrize("backend", ["triton", "torch"])
@pytest.mark.parametrize("direction", ["image", "text"])
def test_alpha_zero_returns_input_exactly_with_fibers_dalpha(direction, backend):
    """alpha = 0: the output is the input bit for bit, dx is grad_out bit for bit, and dalpha equals
    sum(grad_out * branch) with the branch (before gating) computed by FIBER's eager code."""
    mask = torch.tensor([[False] * 5, [False, False, True, False, True]]) if direction == "image" else None
    ours, fiber, (x, other, *_) = _pair(direction, backend, mask)
    with torch.no_grad():
        for module in (ours, fiber):
            getattr(module, "alpha_i2t" if direction == "image" else "alpha_t2i").zero_()
    grad = torch.randn_like(x)
    leaf = x.clone().requires_grad_()
    out = ours(leaf, other, mask)
    assert torch.equal(out, x)
    out.backward(grad)
    assert torch.equal(leaf.grad, grad)  # g(0) = 0: nothing flows back through the branch
    dense = ours.proj_i2t if direction == "image" else ours.crossattention_t2i.output.dense
    assert torch.equal(dense.weight.grad, torch.zeros_like(dense.weight))
    dalpha = (ours.alpha_i2t if direction == "image" else ours.alpha_t2i).grad
    expected = (grad.double() * _fiber_branch(fiber, x, other, mask, torch.float64)).sum().reshape(1)
    same_dtype = (grad * _fiber_branch(fiber, x, other, mask, torch.float32)).sum().reshape(1)
    assert expected.abs().item() > 1.0  # a real signal, not a cancelling zero
    floor = 1e-6 * max(1.0, expected.abs().item())  # one fp32 sum over M * C products, in its own order
    assert_close_to_reference(dalpha, expected, same_dtype, atol_floor=floor, name="dalpha")
