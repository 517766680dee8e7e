"""Shared set-up of the model tests: tiny configs, fused/eager pairs with the same weights, ragged
inputs, and the flash-attention tolerance rule applied to every output and parameter gradient."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import fiber_kernels.modules.fusion as fusion_module
import torch
from fiber_kernels.cross_attention.reference import cross_attention_reference, gated_residual_linear_reference
from fiber_kernels.testing.numerics import assert_close_to_reference

from fiber_fast.models import FiberConfig, FiberModel, build_fiber


def tiny(**overrides: object) -> FiberConfig:
    return FiberConfig.preset("tiny", **overrides)


def open_gates(model: FiberModel, seed: int = 1) -> None:
    """Non-zero fusion gates (FIBER initialises them to 0, which would hide the fusion branches)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("alpha_i2t", "alpha_t2i")):
                param.copy_(0.5 + torch.rand(param.shape, generator=generator))


def pair(cfg: FiberConfig) -> tuple[FiberModel, FiberModel, FiberModel]:
    """(fused, eager, eager in fp64) models of ``cfg`` with identical weights and open gates."""
    fused = build_fiber(cfg)
    open_gates(fused)
    eager = build_fiber(cfg, eager=True)
    eager.load_state_dict(fused.state_dict())
    return fused, eager, copy.deepcopy(eager).double()


def inputs(cfg: FiberConfig, batch: int = 2, height: int = 64, width: int = 64, tokens: int = 9,
           seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images ``(B, 3, H, W)``, ids ``(B, T)`` and a ragged 0/1 mask (row b keeps T - 2b tokens, >= 2)."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randn(batch, 3, height, width, generator=generator)
    ids = torch.randint(3, cfg.text.vocab_size, (batch, tokens), generator=generator)
    ids[:, 0] = 0
    mask = torch.ones(batch, tokens, dtype=torch.long)
    for row in range(batch):
        keep = max(tokens - 2 * row, 2)
        mask[row, keep:] = 0
        ids[row, keep:] = cfg.text.pad_token_id
    return pixels, ids, mask


@contextlib.contextmanager
def reference_ops() -> Iterator[None]:
    """Route the fusion modules to the kernels' reference functions (the public ops take fp16/bf16/fp32
    only; the fp64 reference model needs fp64)."""
    saved = fusion_module.cross_attention, fusion_module.gated_residual_linear
    fusion_module.cross_attention = lambda q, k, v, mask, scale, backend: cross_attention_reference(q, k, v, mask,
                                                                                                     scale)
    fusion_module.gated_residual_linear = (lambda x, a, w, b, alpha, gate, backend:
                                           gated_residual_linear_reference(x, a, w, b, alpha, gate))
    try:
        yield
    finally:
        fusion_module.cross_attention, fusion_module.gated_residual_linear = saved


def run(model: FiberModel, pixels: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor, fusion: bool,
        seed: int = 2) -> dict[str, torch.Tensor]:
    """Outputs of one pass plus every head, and the gradients of a random linear loss over all of them."""
    dtype = next(model.parameters()).dtype
    model.zero_grad(set_to_none=True)
    out = model(pixels.to(dtype), ids, mask, fusion=fusion)
    image_feat, text_feat, logit_scale = model.itc_head(out.image_embeds, out.text_embeds)
    results = {"image_tokens": out.image_tokens, "text_tokens": out.text_tokens, "image_feat": image_feat,
               "text_feat": text_feat, "logit_scale": logit_scale, "itm": model.itm_head(out),
               "mlm": model.mlm_head(out.text_tokens)}
    for index, feature in enumerate(out.image_features):
        results[f"feature{index}"] = feature
    if model.grounding_head is not None:
        grounding = model.grounding_head(out)
        results.update(cls=grounding.cls_logits, box=grounding.box_regression, centerness=grounding.centerness)
    generator = torch.Generator().manual_seed(seed)
    loss = sum((value * torch.randn(value.shape, generator=generator).to(dtype)).sum() for value in results.values())
    loss.backward()
    grads = {f"grad {name}": param.grad for name, param in model.named_parameters() if param.grad is not None}
    return {**{name: value.detach() for name, value in results.items()}, **grads}


def assert_all_close_to_fp64(got: dict[str, torch.Tensor], same_dtype: dict[str, torch.Tensor],
                             reference: dict[str, torch.Tensor]) -> tuple[float, float]:
    """Every tensor of ``got`` (fused fp32) within 3x the error of ``same_dtype`` (eager fp32) against
    ``reference`` (eager fp64), + 1e-5 scaled by max|ref| >= 1. Returns the worst fused and eager errors."""
    assert got.keys() == same_dtype.keys() == reference.keys()
    worst = worst_eager = 0.0
    for name, value in reference.items():
        floor = 1e-5 * max(1.0, float(value.abs().max()))
        assert_close_to_reference(got[name], value, same_dtype[name], factor=3.0, atol_floor=floor, name=name)
        worst = max(worst, float((got[name].double() - value).abs().max()))
        worst_eager = max(worst_eager, float((same_dtype[name].double() - value).abs().max()))
    return worst, worst_eager


def assert_fused_matches_eager(cfg: FiberConfig, fusion: bool,
                               models: tuple[FiberModel, FiberModel, FiberModel] | None = None,
                               **input_args: object) -> float:
    """Fused fp32 vs eager fp64 within 3x the eager fp32 error, for outputs and all gradients.

    The absolute floor is ``1e-5 * max(1, max|ref|)``: large summed gradients (GroupNorm biases of
    the grounding head reach ~50) differ by fp32 accumulation order alone at that relative level.

    Returns the largest fused-vs-fp64 error seen."""
    fused, eager, eager64 = models or pair(cfg)
    pixels, ids, mask = inputs(cfg, **input_args)
    got = run(fused, pixels, ids, mask, fusion)
    same_dtype = run(eager, pixels, ids, mask, fusion)
    with reference_ops():
        reference = run(eager64, pixels, ids, mask, fusion)
    for model in (fused, eager, eager64):
        model.zero_grad(set_to_none=True)
    worst, worst_eager = assert_all_close_to_fp64(got, same_dtype, reference)
    print(f"fusion={fusion} {len(reference)} tensors: max |fused fp32 - eager fp64| = {worst:.2e}, "
          f"max |eager fp32 - eager fp64| = {worst_eager:.2e}")
    return worst
