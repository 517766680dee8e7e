"""Readable tables of a results CSV: measured speed, exact memory, projected GPU times, skips.

``python bench/report.py bench/results/latest.csv``. Projected figures get their own section,
headed PROJECTED, and never share a table with measured ones.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``bench`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.schema import read_rows  # noqa: E402

GPU_ORDER = ("V100", "A100", "H100")


def table(header: Sequence[str], body: Iterable[Sequence[str]]) -> str:
    """Fixed-width text table; numeric-looking columns right-aligned."""
    rows = [list(header)] + [list(r) for r in body]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    numeric = [all(_numeric(r[i]) for r in rows[1:]) and len(rows) > 1 for i in range(len(header))]
    lines = []
    for n, row in enumerate(rows):
        cells = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(row, widths, numeric, strict=True)]
        lines.append("  ".join(cells).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _numeric(cell: str) -> bool:
    if cell in ("", "-"):
        return True
    try:
        float(cell.rstrip("x"))
    except ValueError:
        return False
    return True


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e3:.3f}"


def mib(nbytes: float | None) -> str:
    return "-" if nbytes is None else f"{nbytes / 2**20:.2f}"


def _key(rec: dict[str, Any], *fields: str) -> tuple[str, ...]:
    return tuple(str(rec[f]) for f in fields)


def speed_section(rows: list[dict[str, Any]]) -> str:
    """Measured times: median and p20-p80 in ms, TFLOP/s, and speed relative to eager (>1 = faster)."""
    times = [r for r in rows if r["metric"] == "time"]
    if not times:
        return ""
    tflops = {_key(r, "kernel", "shape", "mode", "provider"): r["median"] for r in rows if r["metric"] == "tflops"}
    eager = {_key(r, "kernel", "shape", "mode"): r["median"] for r in times if r["provider"] == "eager"}
    body = []
    for r in times:
        base = eager.get(_key(r, "kernel", "shape", "mode"))
        tf = tflops.get(_key(r, "kernel", "shape", "mode", "provider"))
        body.append([r["kernel"], r["shape"], r["mode"], r["provider"], r["dtype"], ms(r["median"]),
                     f"{ms(r['p20'])}-{ms(r['p80'])}", "-" if tf is None else f"{tf:.4f}",
                     "-" if base is None else f"{base / r['median']:.2f}x"])
    devices = sorted({r["device"] for r in times})
    loads = [float(m.group(1)) for r in times if (m := re.search(r"load average ([0-9.]+)", r["note"]))]
    load = f"; load average {min(loads):.1f}-{max(loads):.1f} (other processes on these cores add noise)" \
        if loads else ""
    head = f"MEASURED speed on {', '.join(devices)}{load}"
    return head + "\n" + table(["kernel", "shape", "mode", "provider", "dtype", "median ms", "p20-p80 ms",
                                "TFLOP/s", "vs eager"], body)


def memory_section(rows: list[dict[str, Any]]) -> str:
    """Exact bytes: saved for backward by the forward, and peak live over forward + backward."""
    mem = [r for r in rows if r["metric"] in ("saved_bytes", "peak_bytes")]
    if not mem:
        return ""
    merged: dict[tuple[str, ...], dict[str, Any]] = {}
    for r in mem:
        entry = merged.setdefault(_key(r, "kernel", "shape", "device", "dtype", "provider"), {})
        entry[r["metric"]] = r["median"]
    body = [[k[0], k[1], k[2], k[3], k[4], mib(v.get("saved_bytes")), mib(v.get("peak_bytes"))]
            for k, v in merged.items()]
    return "MEASURED memory (exact accounting)\n" + table(
        ["kernel", "shape", "inputs on", "dtype", "provider", "saved MiB", "peak MiB"], body)


def projection_section(rows: list[dict[str, Any]]) -> str:
    """Roofline times per GPU (ms): estimates, not measurements."""
    proj = [r for r in rows if r["metric"] == "projected_time"]
    if not proj:
        return ""
    merged: dict[tuple[str, ...], dict[str, float]] = {}
    for r in proj:
        merged.setdefault(_key(r, "kernel", "shape", "mode", "provider"), {})[r["device"]] = r["median"]
    gpus = [g for g in GPU_ORDER if any(g in v for v in merged.values())]
    gpus += sorted({g for v in merged.values() for g in v} - set(gpus))
    body = [list(k) + ["-" if v.get(g) is None else f"{v[g] * 1e3:.4g}" for g in gpus] for k, v in merged.items()]
    title = "PROJECTED GPU time (roofline from counted FLOPs and bytes; NOT measured), ms"
    return title + "\n" + table(["kernel", "shape", "mode", "provider"] + [f"{g} (proj.)" for g in gpus], body)


def skip_section(rows: list[dict[str, Any]], failed: bool = False) -> str:
    """Providers that could not run (or, with ``failed``, measurements that raised), once per
    (kernel, provider, reason) with how many cases."""
    counts: dict[tuple[str, ...], int] = {}
    for r in rows:
        if r["kind"] == "skipped" and r["note"].startswith("FAILED") == failed:
            key = _key(r, "kernel", "provider", "note")
            counts[key] = counts.get(key, 0) + 1
    if not counts:
        return ""
    body = [[k[0], k[1], str(n), k[2] if len(k[2]) <= 140 else k[2][:137] + "..."] for k, n in counts.items()]
    title = "FAILED (errors while measuring; details in the pytest log)" if failed else "SKIPPED (could not run here)"
    return title + "\n" + table(["kernel", "provider", "cases", "reason"], body)


def format_report(rows: list[dict[str, Any]]) -> str:
    """All sections of ``rows`` (as returned by ``read_rows``) as text."""
    if not rows:
        return "no benchmark rows (nothing selected?)"
    first = rows[0]
    header = (f"fiber-fast bench run {first['run_id']}  commit {first['commit']}  "
              f"torch {first['torch']}  triton {first['triton']}")
    sections = [speed_section(rows), memory_section(rows), projection_section(rows), skip_section(rows),
                skip_section(rows, failed=True)]
    return "\n\n".join([header] + [s for s in sections if s])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", help="results CSV (bench/results/latest.csv)")
    parser.add_argument("--run", help="run_id to show (default: the last run in the file)")
    args = parser.parse_args(argv)
    rows = read_rows(args.csv)
    run = args.run or (rows[-1]["run_id"] if rows else None)
    print(format_report([r for r in rows if r["run_id"] == run]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
