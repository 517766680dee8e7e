"""Draw the plots of a results CSV: one PNG per (kernel, metric, mode, device, dtype) group.

``python bench/plot.py bench/results/latest.csv --out bench/results/plots``. Each plot is a grouped
bar chart: shapes on the x axis, one bar per provider, log-scaled y. Projected figures go to their
own files (``projected_...png``, titled PROJECTED), never onto a plot of measured ones. Only the last
run in the file is drawn unless ``--run`` names another.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.plot_train_step import grouped_bars, train_step_figures  # noqa: E402
from bench.schema import read_rows  # noqa: E402

# metric -> (y label, scale applied to the stored value)
AXES: dict[str, tuple[str, float]] = {
    "time": ("time per call (ms), measured", 1e3),
    "tflops": ("TFLOP/s, measured", 1.0),
    "saved_bytes": ("bytes saved for backward (MiB)", 2.0**-20),
    "peak_bytes": ("peak live bytes, fwd+bwd (MiB)", 2.0**-20),
    "projected_time": ("PROJECTED time per call (ms), roofline", 1e3),
    "projected_tflops": ("PROJECTED TFLOP/s, roofline", 1.0),
}


def _slug(*parts: str) -> str:
    """File-name-safe join of ``parts``."""
    clean = (re.sub(r"[^A-Za-z0-9._-]+", "-", p).strip("-") for p in parts if p)
    return "_".join(clean)[:150]


def groups(rows: list[dict[str, Any]]) -> dict[tuple[str, ...], list[dict[str, Any]]]:
    """Plot groups ``(kind, kernel, metric, mode, device, dtype) -> rows`` (skips left out)."""
    out: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    for r in rows:
        if r["kind"] in ("measured", "exact", "projected") and r["metric"] in AXES:
            key = (r["kind"], r["kernel"], r["metric"], r["mode"], r["device"], r["dtype"])
            out.setdefault(key, []).append(r)
    return out


def plot_rows(rows: list[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """Write one PNG per group of ``rows`` into ``out_dir``; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for (kind, kernel, metric, mode, device, dtype), recs in groups(rows).items():
        label, scale = AXES[metric]
        shapes = list(dict.fromkeys(r["shape"] for r in recs))
        providers = list(dict.fromkeys(r["provider"] for r in recs))
        width, offsets = grouped_bars(len(providers))
        fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(shapes) + 2), 3.8))
        for provider, offset in zip(providers, offsets, strict=True):
            values = {r["shape"]: r for r in recs if r["provider"] == provider}
            xs = [j + offset for j, s in enumerate(shapes) if s in values]
            ys = [values[s]["median"] * scale for s in shapes if s in values]
            err = None
            if all(values[s]["p20"] is not None for s in shapes if s in values) and metric == "time":
                err = [[(values[s]["median"] - values[s]["p20"]) * scale for s in shapes if s in values],
                       [(values[s]["p80"] - values[s]["median"]) * scale for s in shapes if s in values]]
            ax.bar(xs, ys, width, yerr=err, label=provider, capsize=2)
        ax.set_xticks(range(len(shapes)), shapes, rotation=30, ha="right", fontsize=8)
        ax.set_yscale(y_scale([r["median"] for r in recs]))
        ax.set_ylabel(label, fontsize=8)
        prefix = "PROJECTED " if kind == "projected" else ""
        ax.set_title(f"{prefix}{kernel} {mode} - {device} {dtype}", fontsize=9)
        ax.legend(fontsize=7)
        name = f"{_slug('projected' if kind == 'projected' else '', kernel, metric, mode, device, dtype)}.png"
        written.append(_save(fig, out / name, plt))
    return written + [_save(fig, out / name, plt) for name, fig in train_step_figures(rows, plt)]


def _save(fig: Any, path: Path, plt: Any) -> Path:
    """Lay out, write and close ``fig`` (PNG at 110 dpi); returns ``path``."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def y_scale(values: list[float]) -> str:
    """``"log"`` when every value is positive (sizes and times span decades), else ``"linear"``: a log
    axis cannot show a zero (a fused kernel that saves nothing for backward)."""
    return "log" if values and all(v > 0 for v in values) else "linear"


def plot_csv(csv_path: str | Path, out_dir: str | Path, run: str | None = None) -> list[Path]:
    """Plot the last run (or ``run``) of the CSV at ``csv_path`` into ``out_dir``."""
    rows = read_rows(csv_path)
    run = run or (rows[-1]["run_id"] if rows else None)
    return plot_rows([r for r in rows if r["run_id"] == run], out_dir)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Draw PNG plots of a fiber-fast bench CSV.")
    parser.add_argument("csv", help="results CSV (bench/results/latest.csv)")
    parser.add_argument("--out", default=None, help="output folder (default: plots/ beside the CSV)")
    parser.add_argument("--run", default=None, help="run_id to draw (default: the last run in the file)")
    args = parser.parse_args(argv)
    out = args.out or str(Path(args.csv).resolve().parent / "plots")
    paths = plot_csv(args.csv, out, args.run)
    print(f"{len(paths)} plots in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
