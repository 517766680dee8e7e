"""Unpatched-vs-patched comparison shared by the drop-in tests: outputs and every parameter gradient."""

from __future__ import annotations

import copy
import io
from collections.abc import Callable

import pytest
import torch
from torch import nn


def randomize(model: nn.Module, std: float = 0.2) -> nn.Module:
    """Random weights everywhere (HF/timm zero-initialise the bias tables, which would hide index errors)."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * std)
    return model


def max_diffs(reference: nn.Module, patched: nn.Module, run: Callable[[nn.Module], torch.Tensor]
              ) -> tuple[float, float]:
    """Run both models on the same inputs (``run`` returns the output tensor), back-propagate the same
    random cotangent; return (max |output diff|, max |grad diff| over all parameters)."""
    outputs = []
    for model in (reference, patched):
        model.zero_grad(set_to_none=True)
        out = run(model)
        out.backward(torch.randn(out.shape, generator=torch.Generator().manual_seed(2)).to(out.dtype))
        outputs.append(out.detach())
    ref_grads = dict(reference.named_parameters())
    grad_diff = 0.0
    for name, param in patched.named_parameters():
        expected = ref_grads[name].grad
        if expected is None:
            assert param.grad is None, name
            continue
        assert param.grad is not None, f"{name} got no gradient in the patched model"
        grad_diff = max(grad_diff, (param.grad - expected).abs().max().item())
    return (outputs[0] - outputs[1]).abs().max().item(), grad_diff


def install_hint(package: str, line: str) -> str:
    return f"{package} is not installed: {line} (or pip install -e '.[drop-in]')"


def require(module: str, package: str, line: str) -> object:
    return pytest.importorskip(module, reason=install_hint(package, line))


def saved_and_loaded(model: nn.Module) -> nn.Module:
    """``torch.save`` of the whole module, then ``torch.load`` (the patchers' run-time classes pickle)."""
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def assert_low_precision_close(model: nn.Module, patched: nn.Module, run: Callable[[nn.Module], torch.Tensor],
                               dtype: torch.dtype = torch.bfloat16) -> None:
    """Both models cast to ``dtype``: the patched output's error against the fp32 unpatched output is
    at most twice the unpatched ``dtype`` model's own error (plus a small floor)."""
    with torch.no_grad():
        reference = run(model).float()
        same = run(copy.deepcopy(model).to(dtype)).float()
        got = run(copy.deepcopy(patched).to(dtype))
    assert got.dtype == dtype
    limit = 2 * (same - reference).abs().max().item() + 1e-3
    assert (got.float() - reference).abs().max().item() <= limit
