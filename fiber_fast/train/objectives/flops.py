"""FLOPs of one coarse step: FIBER's schedule against ours (lower layers shared by all objectives).

FIBER (official code), forward per step on a batch of B pairs:
- ITC: an image-only and a text-only full pass on B (lower + upper, fusion off);
- MLM: a fused full pass on B (clean image, masked text);
- ITM: a fused full pass on 3B (the B positives, B negative texts, B negative images).
So 5B image-lower, 5B text-lower, B unimodal-upper and 4B fused-upper sample passes.

Ours: the image lower layers once (B), the text lower layers on the clean and the masked captions
(2B), the unimodal upper once (B, ITC), the fused upper on B (MLM) and on the M <= 3B ITM pairs built
from ``.select``-ed lower states. Heads cost the same in both schedules and are left out; backward
roughly doubles both sides, so the saved fraction is the same for a training step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class PassCosts:
    """Forward FLOPs per sample of each part of the model (measured with :func:`measure_pass_costs`)."""

    image_lower: float
    text_lower: float
    upper_unimodal: float
    upper_fused: float


def fiber_step_flops(costs: PassCosts, batch: int) -> float:
    """Forward FLOPs of FIBER's coarse step on ``batch`` pairs."""
    return batch * (5 * costs.image_lower + 5 * costs.text_lower + costs.upper_unimodal + 4 * costs.upper_fused)


def shared_step_flops(costs: PassCosts, batch: int, itm_pairs: int | None = None) -> float:
    """Forward FLOPs of our coarse step; ``itm_pairs`` = M (default 3B, every row with a negative)."""
    itm_pairs = 3 * batch if itm_pairs is None else itm_pairs
    return (batch * (costs.image_lower + 2 * costs.text_lower + costs.upper_unimodal + costs.upper_fused)
            + itm_pairs * costs.upper_fused)


def flops_saved(costs: PassCosts, batch: int, itm_pairs: int | None = None) -> dict[str, float]:
    """``{"fiber", "shared", "saved", "saved_fraction"}`` forward FLOPs of one step on ``batch`` pairs."""
    fiber = fiber_step_flops(costs, batch)
    shared = shared_step_flops(costs, batch, itm_pairs)
    return {"fiber": fiber, "shared": shared, "saved": fiber - shared, "saved_fraction": (fiber - shared) / fiber}


def _count(fn) -> float:  # noqa: ANN001 - a zero-argument callable
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def measure_pass_costs(model: torch.nn.Module, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                       attention_mask: torch.Tensor) -> PassCosts:
    """Count forward FLOPs per sample of ``model``'s parts on a batch (``FlopCounterMode``).

    Use the eager model (``build_fiber(cfg, eager=True)``): the counter sees aten matmuls/convolutions,
    not the inside of custom fused ops, and both compute the same products.
    """
    batch = pixel_values.shape[0]
    image_lower = _count(lambda: model.image_lower(pixel_values))
    text_lower = _count(lambda: model.text_lower(input_ids, attention_mask))
    with torch.no_grad():
        image, text = model.image_lower(pixel_values), model.text_lower(input_ids, attention_mask)
    unimodal = _count(lambda: model.upper(image, text, fusion=False))
    fused = _count(lambda: model.upper(image, text, fusion=True))
    return PassCosts(image_lower / batch, text_lower / batch, unimodal / batch, fused / batch)
