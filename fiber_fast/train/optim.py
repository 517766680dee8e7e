"""AdamW parameter groups (FIBER's lr multipliers) and the warmup-then-decay schedule.

Groups by parameter name inside the FiberModel:
- coarse: cross-modal fusion (``.fusion.`` in the name) and heads (``itc_head``, ``itm_head``,
  ``mlm_head``, ``grounding_head``) at ``lr * head_lr_mult`` (FIBER: 5x), the backbones at ``lr``;
- fine: the language backbone (``text.``, its fusion branch included, as FIBER's language backbone
  module holds it) at ``language_lr``, everything else at ``lr``;
- oscar (an OscarModel): every parameter at ``lr`` (Oscar's single rate).
Biases, norm weights, 1-element scalars (temperature, scales) get no weight decay.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from .config import OptimSection

HEAD_PREFIXES = ("itc_head.", "itm_head.", "mlm_head.", "grounding_head.")
FUSION_MARK = ".fusion."
LANGUAGE_PREFIX = "text."


def _no_decay(name: str, param: nn.Parameter) -> bool:
    return param.dim() <= 1 or name.endswith(".bias")


def lr_group(name: str, stage: str) -> str:
    """``"backbone"``, ``"fusion_head"`` (coarse) or ``"language"`` (fine) for a FiberModel parameter name;
    ``"backbone"`` for every OscarModel parameter (stage ``"oscar"``)."""
    if stage == "oscar":
        return "backbone"
    if stage == "coarse":
        return "fusion_head" if name.startswith(HEAD_PREFIXES) or FUSION_MARK in f".{name}" else "backbone"
    return "language" if name.startswith(LANGUAGE_PREFIX) else "backbone"


def param_groups(model: nn.Module, stage: str, optim: OptimSection) -> list[dict]:
    """AdamW groups of ``model``'s trainable parameters (each with ``name``, ``lr``, ``weight_decay``)."""
    rates = {"backbone": optim.lr, "fusion_head": optim.lr * optim.head_lr_mult,
             "language": optim.lr if optim.language_lr is None else optim.language_lr}
    groups: dict[tuple[str, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault((lr_group(name, stage), _no_decay(name, param)), []).append(param)
    return [{"name": f"{kind}{'_no_decay' if no_decay else ''}", "params": params, "lr": rates[kind],
             "weight_decay": 0.0 if no_decay else optim.weight_decay}
            for (kind, no_decay), params in sorted(groups.items())]


def lr_factor(step: int, total: int, warmup: int, schedule: str, min_ratio: float) -> float:
    """Multiplier of the peak lr after ``step`` scheduler steps: linear warmup from 0, then linear or
    cosine decay to ``min_ratio`` at ``total`` (or constant)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    decay = 1.0 - progress if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
    return min_ratio + (1.0 - min_ratio) * decay


def build_optimizer(model: nn.Module, stage: str, optim: OptimSection,
                    total_steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """torch AdamW over :func:`param_groups` and a ``LambdaLR`` of :func:`lr_factor` (stepped per optimizer step)."""
    optimizer = torch.optim.AdamW(param_groups(model, stage, optim), lr=optim.lr, betas=tuple(optim.betas),
                                  eps=optim.eps)
    factor: Callable[[int], float] = _Schedule(total_steps, optim.warmup_steps, optim.schedule, optim.min_lr_ratio)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class _Schedule:
    """Picklable :func:`lr_factor` with its settings (LambdaLR keeps callable objects in its state)."""

    def __init__(self, total: int, warmup: int, schedule: str, min_ratio: float) -> None:
        self.total, self.warmup, self.schedule, self.min_ratio = total, warmup, schedule, min_ratio

    def __call__(self, step: int) -> float:
        return lr_factor(step, self.total, self.warmup, self.schedule, self.min_ratio)
