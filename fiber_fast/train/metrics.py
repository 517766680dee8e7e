"""Run metrics on rank 0: ``RUN/metrics.jsonl`` (one object per optimizer step), TensorBoard scalars,
a tqdm progress bar, and ``RUN/curves.png`` (loss and lr) at the end."""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path
from typing import Any

import torch

METRICS_FILE = "metrics.jsonl"
CURVES_FILE = "curves.png"


def memory_mib() -> float:
    """Peak device memory (CUDA) or peak resident memory of this process (CPU), MiB."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.max_memory_allocated() / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """The records of a metrics.jsonl, one per step in step order (the last line for a step counts)."""
    by_step: dict[int, dict[str, Any]] = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                record = json.loads(line)
                by_step[int(record["step"])] = record
    return [by_step[step] for step in sorted(by_step)]


class MetricsLogger:
    """Writes on rank 0 only (``enabled``); other ranks get no-ops."""

    def __init__(self, run_dir: str | Path, *, enabled: bool, total_steps: int, start_step: int,
                 tensorboard: bool = True, progress: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.writer = None
        self.bar = None
        if not enabled:
            return
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(self.run_dir / METRICS_FILE, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=start_step + 1)
        if progress:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc="train", dynamic_ncols=True)

    def log(self, record: dict[str, Any]) -> None:
        """One optimizer step: ``record`` has ``step`` (1-based), ``loss``, ``lr``, ``samples_per_s``, ..."""
        if not self.enabled:
            return
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()
        if self.writer is not None:
            for key, value in record.items():
                if key != "step" and isinstance(value, (int, float)):
                    self.writer.add_scalar(f"train/{key}", value, record["step"])
        if self.bar is not None:
            self.bar.set_postfix(step=record["step"], loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}",
                                 sps=f"{record['samples_per_s']:.1f}", mem=f"{record['memory_mib']:.0f}MiB")
            self.bar.update(1)

    def close(self, plot: bool = True) -> Path | None:
        """Close the files; draw the curves PNG (rank 0, with matplotlib) and return its path."""
        if not self.enabled:
            return None
        self.jsonl.close()
        if self.writer is not None:
            self.writer.close()
        if self.bar is not None:
            self.bar.close()
        return plot_curves(self.run_dir / METRICS_FILE, self.run_dir / CURVES_FILE) if plot else None


def plot_curves(metrics_path: str | Path, out: str | Path) -> Path | None:
    """Loss (total and per objective) and lr against step; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("curves: matplotlib is not installed; no PNG written", file=sys.stderr)
        return None
    records = read_metrics(metrics_path)
    if not records:
        return None
    steps = [r["step"] for r in records]
    objective_keys = sorted(k for k in records[-1] if k.startswith("loss/"))
    fig, (loss_ax, lr_ax) = plt.subplots(1, 2, figsize=(10, 4))
    loss_ax.plot(steps, [r["loss"] for r in records], label="loss", linewidth=2)
    for key in objective_keys:
        loss_ax.plot(steps, [r.get(key, float("nan")) for r in records], label=key.split("/", 1)[1], alpha=0.8)
    loss_ax.set_xlabel("step")
    loss_ax.set_ylabel("loss")
    loss_ax.legend()
    lr_ax.plot(steps, [r["lr"] for r in records])
    lr_ax.set_xlabel("step")
    lr_ax.set_ylabel("lr (backbone group)")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return Path(out)
