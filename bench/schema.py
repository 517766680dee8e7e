"""One CSV schema for every fiber-fast benchmark: rows, run metadata, quantiles, CSV read/write.

A row is one figure: ``metric`` of ``provider`` running ``kernel`` in ``mode`` on ``shape``.
Every row has exactly one ``kind``:

* ``measured``  - timed or counted on this machine (CPU time, exact saved/peak bytes),
* ``exact``     - saved/peak bytes counted from the tensors (fake CUDA), as a benchmark may label them,
* ``projected`` - a roofline estimate for a GPU we do not have (never mixed with measured figures),
* ``skipped``   - a provider that could not run, with the reason in ``note``.

The kind follows from the metric (``METRICS``; ``exact`` allowed for ``EXACT_METRICS``), so a row cannot
label a projection as measured.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import platform
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

COLUMNS: tuple[str, ...] = (
    "run_id", "timestamp", "kind", "kernel", "provider", "mode", "shape", "dims", "dtype", "metric", "unit",
    "median", "p20", "p80", "rounds", "device", "torch", "triton", "commit", "note",
)
KINDS: tuple[str, ...] = ("measured", "exact", "projected", "skipped")
MODES: tuple[str, ...] = ("fwd", "bwd", "full")
# metric -> (unit, kind). Add a metric here before a benchmark writes it.
METRICS: dict[str, tuple[str, str]] = {
    "time": ("s", "measured"),                   # wall time per call, seconds
    "tflops": ("TFLOP/s", "measured"),           # model FLOPs / median time (formula in the case builder)
    "saved_bytes": ("B", "measured"),            # unique storage bytes autograd saves for backward
    "peak_bytes": ("B", "measured"),             # peak live tensor bytes over forward (+ backward)
    "projected_time": ("s", "projected"),        # roofline time on ``device`` (a GPU we do not have)
    "projected_tflops": ("TFLOP/s", "projected"),  # counted FLOPs / projected_time
    "skipped": ("", "skipped"),                  # provider could not run; reason in ``note``
    "saved_bytes_part": ("B", "exact"),          # saved_bytes of one part of a model (part in ``note``)
    "model_state_bytes": ("B", "projected"),     # per-rank parameters + gradients + optimizer states (ZeRO)
    "max_batch": ("samples", "projected"),       # largest micro-batch that fits a card (from exact bytes)
    "samples_per_s": ("samples/s", "measured"),  # training-step throughput
}
# Accounting metrics a benchmark may label ``exact`` (counted from the tensors, not sampled) instead of
# ``measured``; neither kind is ever ``projected``.
EXACT_METRICS: frozenset[str] = frozenset({"saved_bytes", "peak_bytes", "saved_bytes_part"})


def kind_allowed(metric: str, kind: str) -> bool:
    """Whether a row of ``metric`` may have ``kind`` (its own, or ``exact`` for ``EXACT_METRICS``)."""
    return metric in METRICS and (kind == METRICS[metric][1] or (kind == "exact" and metric in EXACT_METRICS))


@dataclass(frozen=True)
class Row:
    """One figure. ``median``/``p20``/``p80`` are in ``unit`` (seconds for times, bytes for memory).

    ``kind`` may be omitted (it is derived from ``metric``); a contradicting kind raises ``ValueError``.
    ``device`` defaults to the run's device; projected rows name the GPU they project for.
    """

    kernel: str
    provider: str
    mode: str
    shape: str
    dims: Mapping[str, int]
    metric: str
    median: float | None = None
    p20: float | None = None
    p80: float | None = None
    rounds: int | None = None
    dtype: str = ""
    device: str = ""
    note: str = ""
    kind: str = ""
    unit: str = field(default="", init=False)

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ValueError(f"metric must be one of {sorted(METRICS)}, got {self.metric!r}")
        unit, kind = METRICS[self.metric]
        if self.kind and not kind_allowed(self.metric, self.kind):
            raise ValueError(f"metric {self.metric!r} is {kind!r}; a row of kind {self.kind!r} cannot hold it "
                             "(measured and projected figures never share a row)")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if kind == "skipped" and not self.note:
            raise ValueError("a skipped row needs the reason in note")
        if kind != "skipped" and (self.median is None or not math.isfinite(self.median)):
            raise ValueError(f"median of a {kind} row must be a finite number, got {self.median!r}")
        object.__setattr__(self, "kind", self.kind or kind)
        object.__setattr__(self, "unit", unit)


@dataclass(frozen=True)
class RunInfo:
    """What every row of one run shares: id, time, device, library versions, git commit."""

    run_id: str
    timestamp: str
    device: str
    torch: str
    triton: str
    commit: str

    @classmethod
    def collect(cls, device: str | torch.device = "cpu", repo: str | os.PathLike[str] | None = None) -> RunInfo:
        """Describe this machine now; ``repo`` is the git checkout (default: the one holding bench/)."""
        now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0)
        return cls(
            run_id=now.strftime("%Y%m%dT%H%M%SZ"),
            timestamp=now.isoformat(),
            device=device_name(device),
            torch=torch.__version__,
            triton=_triton_version(),
            commit=git_commit(repo or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        )


def _triton_version() -> str:
    try:
        import triton
    except ImportError:
        return "absent"
    return str(triton.__version__)


def cpu_name() -> str:
    """CPU model name from /proc/cpuinfo (``platform.processor()`` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def device_name(device: str | torch.device) -> str:
    """``"<CPU model> (N threads)"`` for the CPU, the GPU name for CUDA."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        threads = torch.get_num_threads()
        return f"{cpu_name()} ({threads} thread{'' if threads == 1 else 's'})"
    return str(device)


def git_commit(repo: str | os.PathLike[str]) -> str:
    """Short commit of ``repo`` with ``-dirty`` when the tree has changes; ``"unknown"`` outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}-dirty" if dirty else commit


def quantile(sorted_data: Sequence[float], q: float) -> float:
    """Quantile ``q`` in [0, 1] of ascending ``sorted_data`` with linear interpolation (numpy's default)."""
    if not sorted_data:
        raise ValueError("quantile of an empty sample")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    position = q * (len(sorted_data) - 1)
    low = math.floor(position)
    high = min(low + 1, len(sorted_data) - 1)
    return sorted_data[low] + (sorted_data[high] - sorted_data[low]) * (position - low)


def summarize(data: Iterable[float]) -> tuple[float, float, float, int]:
    """``(median, p20, p80, n)`` of a sample."""
    ordered = sorted(float(x) for x in data)
    return quantile(ordered, 0.5), quantile(ordered, 0.2), quantile(ordered, 0.8), len(ordered)


def benchmark_data(result: Any) -> list[float]:
    """Per-call times (seconds) of a pytest-benchmark result.

    Accepts the ``benchmark`` fixture, its ``.stats`` (``Metadata``), a ``Stats`` object, or a plain
    sequence; pytest-benchmark keeps one time per round, already divided by the round's iterations.
    """
    obj = result
    for _ in range(3):
        if isinstance(obj, (list, tuple)):
            return [float(x) for x in obj]
        data = getattr(obj, "data", None)
        if isinstance(data, (list, tuple)):
            return [float(x) for x in data]
        obj = getattr(obj, "stats", None)
        if obj is None:
            break
    raise ValueError("no timing data: was the benchmark run (and not --benchmark-disable)?")


def record(row: Row, run: RunInfo) -> dict[str, str]:
    """The CSV record of ``row`` (all values as strings, empty for missing)."""

    def number(value: float | int | None) -> str:
        return "" if value is None else repr(value)

    return {
        "run_id": run.run_id, "timestamp": run.timestamp, "kind": row.kind, "kernel": row.kernel,
        "provider": row.provider, "mode": row.mode, "shape": row.shape,
        "dims": json.dumps(dict(row.dims), sort_keys=True), "dtype": row.dtype, "metric": row.metric,
        "unit": row.unit, "median": number(row.median), "p20": number(row.p20), "p80": number(row.p80),
        "rounds": number(row.rounds), "device": row.device or run.device, "torch": run.torch,
        "triton": run.triton, "commit": run.commit, "note": row.note,
    }


def append_rows(path: str | os.PathLike[str], rows: Iterable[Row], run: RunInfo) -> int:
    """Append ``rows`` to the CSV at ``path`` (header written when the file is new); returns the count."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    new = not os.path.exists(path) or os.path.getsize(path) == 0
    if not new:
        with open(path, newline="", encoding="utf-8") as existing:
            header = next(csv.reader(existing), [])
        if tuple(header) != COLUMNS:
            raise ValueError(f"{path} has another schema ({header}); write to a new file")
    count = 0
    with open(path, "a", newline="", encoding="utf-8") as out:
        writer = csv.DictWriter(out, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        for row in rows:
            writer.writerow(record(row, run))
            count += 1
    return count


def write_rows(path: str | os.PathLike[str], rows: Iterable[Row], run: RunInfo) -> int:
    """Write ``rows`` to a fresh CSV at ``path`` (replacing it); returns the count."""
    if os.path.exists(path):
        os.remove(path)
    return append_rows(path, rows, run)


def read_rows(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read a results CSV: numbers as float (``None`` when empty), ``dims`` as a dict, kinds checked."""
    out: list[dict[str, Any]] = []
    with open(path, newline="", encoding="utf-8") as src:
        reader = csv.DictReader(src)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path}: columns {reader.fieldnames} are not the fiber-fast bench schema")
        for line, raw in enumerate(reader, start=2):
            rec: dict[str, Any] = dict(raw)
            metric = rec["metric"]
            if not kind_allowed(metric, rec["kind"]):
                raise ValueError(f"{path}:{line}: metric {metric!r} with kind {rec['kind']!r} is not allowed")
            for key in ("median", "p20", "p80", "rounds"):
                rec[key] = float(rec[key]) if rec[key] else None
            rec["dims"] = json.loads(rec["dims"]) if rec["dims"] else {}
            out.append(rec)
    return out
