"""Plots and tables of the training-step benchmark (bench/bench_train_step.py): the exact saved bytes by
part as stacked bars per provider, the PROJECTED max micro-batch per card (ZeRO-2 on 8 ranks), and the
markdown tables of bench/results/train_step.md (exact, projected and measured figures in separate tables):
``python -m bench.plot_train_step RESULTS.csv > train_step.md``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from itertools import chain
from pathlib import Path
from typing import Any

MAX_BATCH_SETTING = {"zero": 2, "ranks": 8}
MIB = 2 ** 20
# Providers in table order: the baseline, the fused model, then each saving on top of it.
ORDER = ("fiber_schedule_queue", "fiber_schedule", "eager_queue", "eager", "fused", "fused_ckpt_text",
         "fused_ckpt_mlp", "fused_ckpt_mlp_text", "fused_ckpt_block", "fused_ckpt_block_text")


def grouped_bars(groups: int) -> tuple[float, list[float]]:
    """Bar width and each bar's offset from its x tick when ``groups`` bars stand side by side (0.8 wide in all)."""
    width = 0.8 / groups
    return width, [(i - (groups - 1) / 2) * width for i in range(groups)]


def breakdown_figure(rows: list[dict[str, Any]], shape: str, plt: Any) -> tuple[str, Any] | None:
    """Stacked bars of ``saved_bytes_part`` (MiB) of ``shape``, one bar per provider: (file name, figure);
    None without rows."""
    recs, providers, parts, values = saved_parts(rows, shape)
    if not recs:
        return None
    fig, ax = plt.subplots(figsize=(max(6.5, 0.8 * len(providers) + 2), 4.2))
    bottom = [0.0] * len(providers)
    for part in parts:
        heights = [values.get((p, part), 0.0) for p in providers]
        ax.bar(providers, heights, bottom=bottom, label=part)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set_ylabel("bytes saved for backward (MiB), exact", fontsize=8)
    ax.set_title(f"{recs[0]['kernel']} {shape}: saved bytes by part (fake CUDA {recs[0]['dtype']})", fontsize=9)
    ax.tick_params(axis="x", labelsize=6, labelrotation=25)
    ax.legend(fontsize=6, ncol=2)
    return f"train_step_breakdown_{shape}.png", fig


def max_batch_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The PROJECTED ``max_batch`` rows of the plotted setting (``MAX_BATCH_SETTING``: ZeRO-2 on 8 ranks)."""
    return [r for r in rows if r["metric"] == "max_batch"
            and all(r["dims"].get(k) == v for k, v in MAX_BATCH_SETTING.items())]


def max_batch_figure(rows: list[dict[str, Any]], kernel: str, plt: Any) -> tuple[str, Any] | None:
    """Grouped bars of the PROJECTED ``max_batch`` of ``kernel`` per card (ZeRO-2, 8 ranks): (file name, figure);
    None without rows."""
    recs = [r for r in max_batch_rows(rows) if r["kernel"] == kernel]
    if not recs:
        return None
    cards = list(dict.fromkeys(r["device"] for r in recs))
    providers = _ordered(r["provider"] for r in recs)
    width, offsets = grouped_bars(len(providers))
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for provider, offset in zip(providers, offsets, strict=True):
        values = {r["device"]: r["median"] for r in recs if r["provider"] == provider}
        ax.bar([j + offset for j in range(len(cards))], [values.get(c, 0.0) for c in cards], width, label=provider)
    ax.set_xticks(range(len(cards)), cards, fontsize=8)
    ax.set_ylabel("largest micro-batch (samples)", fontsize=8)
    ax.set_title(f"PROJECTED {kernel}: max batch per card, ZeRO-2 on 8 ranks", fontsize=9)
    ax.legend(fontsize=7)
    return f"projected_train_step_max_batch_{kernel}.png", fig


def train_step_figures(rows: list[dict[str, Any]], plt: Any) -> Iterator[tuple[str, Any]]:
    """Every training-step figure the rows allow, with its file name, one at a time (``plot.plot_rows`` saves
    and closes each); none when the run has no train_step rows."""
    shapes = dict.fromkeys(r["shape"] for r in rows if r["metric"] == "saved_bytes_part")
    kernels = dict.fromkeys(r["kernel"] for r in rows if r["metric"] == "max_batch")
    named = chain((breakdown_figure(rows, shape, plt) for shape in shapes),
                  (max_batch_figure(rows, kernel, plt) for kernel in kernels))
    yield from (figure for figure in named if figure is not None)


# ----------------------------------------------------------------- markdown tables
def _ordered(providers: Iterable[str]) -> list[str]:
    present = set(providers)
    return [p for p in ORDER if p in present] + sorted(present - set(ORDER))


def saved_parts(rows: list[dict[str, Any]], shape: str
                ) -> tuple[list[dict[str, Any]], list[str], list[str], dict[tuple[str, str], float]]:
    """The bf16 ``saved_bytes_part`` rows of ``shape``, their providers (table order), their parts (row order)
    and the MiB saved per (provider, part)."""
    recs = [r for r in rows if r["metric"] == "saved_bytes_part" and r["shape"] == shape and r["dtype"] == "bf16"]
    providers = _ordered(r["provider"] for r in recs)
    parts = list(dict.fromkeys(r["note"].removeprefix("part: ") for r in recs))
    values = {(r["provider"], r["note"].removeprefix("part: ")): r["median"] / MIB for r in recs}
    return recs, providers, parts, values


def _value(rows: list[dict[str, Any]], **match: Any) -> float | None:
    found = [r["median"] for r in rows if all(r.get(k) == v for k, v in match.items())]
    return found[0] if found else None


def _table(header: list[str], lines: list[list[str]]) -> str:
    return "\n".join(["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                      + ["| " + " | ".join(line) + " |" for line in lines])


def exact_table(rows: list[dict[str, Any]], dtype: str) -> str:
    """Saved and peak MiB per (shape, provider) in ``dtype``, the peak also as a fraction of eager's."""
    recs = [r for r in rows if r["kind"] == "exact" and r["dtype"] == dtype and r["metric"] == "peak_bytes"]
    lines = []
    for shape in dict.fromkeys(r["shape"] for r in recs):
        eager = _value(rows, kind="exact", dtype=dtype, metric="peak_bytes", shape=shape, provider="eager")
        for provider in _ordered(r["provider"] for r in recs if r["shape"] == shape):
            saved = _value(rows, kind="exact", dtype=dtype, metric="saved_bytes", shape=shape, provider=provider)
            peak = _value(rows, kind="exact", dtype=dtype, metric="peak_bytes", shape=shape, provider=provider)
            ratio = f"{peak / eager:.2f}x" if eager and peak is not None else ""
            lines.append([shape, provider, f"{saved / MIB:.0f}" if saved is not None else "",
                          f"{peak / MIB:.0f}" if peak is not None else "", ratio])
    return _table(["shape", "provider", "saved MiB", "peak MiB", "peak / eager"], lines)


def parts_table(rows: list[dict[str, Any]], shape: str) -> str:
    """The bf16 saved MiB of ``shape`` by part (rows) and provider (columns)."""
    _, providers, parts, values = saved_parts(rows, shape)
    lines = [[part] + [f"{values.get((p, part), 0.0):.0f}" for p in providers] for part in parts]
    lines.append(["**total**"] + [f"{sum(values.get((p, part), 0.0) for part in parts):.0f}" for p in providers])
    return _table(["part"] + providers, lines)


def projected_table(rows: list[dict[str, Any]]) -> str:
    """PROJECTED max micro-batch per card (ZeRO-2, 8 ranks) and A100 bf16 step time per (kernel, provider)."""
    recs = max_batch_rows(rows)
    cards = list(dict.fromkeys(r["device"] for r in recs))
    lines = []
    for kernel in dict.fromkeys(r["kernel"] for r in recs):
        for provider in _ordered(r["provider"] for r in recs if r["kernel"] == kernel):
            batches = [_value(recs, kernel=kernel, provider=provider, device=card) for card in cards]
            times = [f"{r['median'] * 1e3:.1f}" for r in rows if r["metric"] == "projected_time"
                     and r["kernel"] == kernel and r["provider"] == provider and "A100" in r["device"]
                     and r["dtype"] == "bf16"]
            lines.append([kernel, provider] + [f"{b:.0f}" if b is not None else "" for b in batches]
                         + [" / ".join(times)])
    return _table(["kernel", "provider"] + [f"max batch {c}" for c in cards] + ["A100 bf16 ms (shapes)"], lines)


def measured_table(rows: list[dict[str, Any]]) -> str:
    """MEASURED samples/s (median, p20-p80, best round) per (kernel, provider, ranks) with the load average."""
    recs = [r for r in rows if r["metric"] == "samples_per_s"]
    lines = []
    for r in sorted(recs, key=lambda r: (r["kernel"], r["dims"].get("ranks", 1), r["provider"])):
        note = r["note"]
        best = note.split("best round ")[1].split(";")[0] if "best round " in note else ""
        load = note.split("load average ")[1].split(" (")[0] if "load average " in note else ""
        lines.append([r["kernel"], r["shape"], str(r["dims"].get("ranks", 1)), r["provider"], f"{r['median']:.3g}",
                      f"{r['p20']:.3g}-{r['p80']:.3g}", best, f"{r['rounds']:.0f}", load])
    return _table(["kernel", "shape", "ranks", "provider", "samples/s median", "p20-p80", "best", "rounds",
                   "load average"], lines)


def markdown_tables(rows: list[dict[str, Any]]) -> str:
    """Every table of the training-step rows, exact / projected / measured apart."""
    shapes = list(dict.fromkeys(r["shape"] for r in rows if r["metric"] == "saved_bytes_part"))
    sections = [("EXACT bf16 (fake CUDA)", exact_table(rows, "bf16")),
                ("EXACT fp32 (fake CUDA)", exact_table(rows, "fp32"))]
    sections += [(f"EXACT bf16 saved MiB by part, {shape}", parts_table(rows, shape)) for shape in shapes]
    sections += [("PROJECTED (ZeRO-2, 8 ranks, 90% of the card; roofline time)", projected_table(rows)),
                 ("MEASURED on this CPU (tiny preset, fp32, DeepSpeed ZeRO-2)", measured_table(rows))]
    return "\n\n".join(f"### {title}\n\n{table}" for title, table in sections) + "\n"


if __name__ == "__main__":
    if __package__ in (None, ""):
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from bench.schema import read_rows

    print(markdown_tables([r for path in sys.argv[1:] for r in read_rows(path)]), end="")
