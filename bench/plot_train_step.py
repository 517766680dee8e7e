"""Plots of the training-step benchmark (bench/bench_train_step.py): the exact saved bytes by part as
stacked bars per provider, and the PROJECTED max micro-batch per card (ZeRO-2 on 8 ranks)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MAX_BATCH_SETTING = {"zero": 2, "ranks": 8}


def breakdown_plot(rows: list[dict[str, Any]], shape: str, out: Path, plt: Any) -> Path | None:
    """Stacked bars of ``saved_bytes_part`` (MiB) of ``shape``, one bar per provider; None without rows."""
    recs = [r for r in rows if r["metric"] == "saved_bytes_part" and r["shape"] == shape]
    if not recs:
        return None
    providers = list(dict.fromkeys(r["provider"] for r in recs))
    parts = list(dict.fromkeys(r["note"].removeprefix("part: ") for r in recs))
    values = {(r["provider"], r["note"].removeprefix("part: ")): r["median"] / 2 ** 20 for r in recs}
    fig, ax = plt.subplots(figsize=(6.5, 4.0))
    bottom = [0.0] * len(providers)
    for part in parts:
        heights = [values.get((p, part), 0.0) for p in providers]
        ax.bar(providers, heights, bottom=bottom, label=part)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_ylabel("bytes saved for backward (MiB), exact", fontsize=8)
    ax.set_title(f"{recs[0]['kernel']} {shape}: saved bytes by part (fake CUDA {recs[0]['dtype']})", fontsize=9)
    ax.tick_params(axis="x", labelsize=7)
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    path = out / f"train_step_breakdown_{shape}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def max_batch_plot(rows: list[dict[str, Any]], kernel: str, out: Path, plt: Any) -> Path | None:
    """Grouped bars of the PROJECTED ``max_batch`` of ``kernel`` per card (ZeRO-2, 8 ranks); None without rows."""
    recs = [r for r in rows if r["metric"] == "max_batch" and r["kernel"] == kernel
            and all(r["dims"].get(k) == v for k, v in MAX_BATCH_SETTING.items())]
    if not recs:
        return None
    cards = list(dict.fromkeys(r["device"] for r in recs))
    providers = list(dict.fromkeys(r["provider"] for r in recs))
    width = 0.8 / len(providers)
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for i, provider in enumerate(providers):
        values = {r["device"]: r["median"] for r in recs if r["provider"] == provider}
        xs = [j + (i - (len(providers) - 1) / 2) * width for j in range(len(cards))]
        ax.bar(xs, [values.get(c, 0.0) for c in cards], width, label=provider)
    ax.set_xticks(range(len(cards)), cards, fontsize=8)
    ax.set_ylabel("largest micro-batch (samples)", fontsize=8)
    ax.set_title(f"PROJECTED {kernel}: max batch per card, ZeRO-2 on 8 ranks", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / f"projected_train_step_max_batch_{kernel}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def train_step_plots(rows: list[dict[str, Any]], out: Path, plt: Any) -> list[Path]:
    """Every training-step plot the rows allow (none when the run has no train_step rows)."""
    paths = [breakdown_plot(rows, shape, out, plt) for shape in dict.fromkeys(
        r["shape"] for r in rows if r["metric"] == "saved_bytes_part")]
    paths += [max_batch_plot(rows, kernel, out, plt) for kernel in dict.fromkeys(
        r["kernel"] for r in rows if r["metric"] == "max_batch")]
    return [p for p in paths if p is not None]
