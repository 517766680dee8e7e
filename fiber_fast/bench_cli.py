"""``fiber-fast bench``: the microbenchmarks.

``fiber-fast bench [--quick] [--out DIR] [-k EXPR]`` runs the microbenchmarks of ``bench/`` (pytest
with pytest-benchmark) from the source checkout, writes ``DIR/latest.csv`` (+ ``history.csv``) and,
with matplotlib, ``DIR/plots/*.png``, and prints the tables: measured speed, exact memory, projected
GPU times (separately labelled) and skipped providers.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

BENCH_DIR_ENV = "FIBER_FAST_BENCH_DIR"
# pytest -q progress lines ("..s.s  [ 40%]") and the final summary are echoed; the rest goes to the log.
_PROGRESS = re.compile(r"^[.sxXFE]+\s*(\[\s*\d+%\])?$"
                       r"|^=*\s*\d+ (passed|failed|skipped|deselected|errors?)\b.* in [0-9.]+s"
                       r"|^(FAILED|ERROR) \S+::")


def find_bench_dir() -> Path:
    """``bench/`` of the checkout that holds this ``fiber_fast`` package (or ``$FIBER_FAST_BENCH_DIR``).

    Raises ``FileNotFoundError`` with what to do when there is none (e.g. a wheel install).
    """
    override = os.environ.get(BENCH_DIR_ENV)
    candidate = Path(override) if override else Path(__file__).resolve().parent.parent / "bench"
    if not (candidate / "conftest.py").is_file() or not (candidate / "harness.py").is_file():
        raise FileNotFoundError(
            f"no benchmark folder at {candidate}: `fiber-fast bench` runs the bench/ folder of a source "
            f"checkout (git clone, then `pip install -e .[bench]`), or set {BENCH_DIR_ENV}=/path/to/bench")
    return candidate


def pytest_command(bench_dir: Path, out: Path, quick: bool, keyword: str | None, max_time: float,
                   extra: Sequence[str] = (), threads: int | None = None) -> list[str]:
    """The pytest invocation (run from the checkout root so pyproject.toml's settings apply)."""
    cmd = [sys.executable, "-m", "pytest", str(bench_dir), "-q", "-p", "no:cacheprovider",
           f"--bench-out={out}", f"--benchmark-max-time={max_time}", "--benchmark-min-rounds=5",
           "--benchmark-warmup=on", "--benchmark-warmup-iterations=1", "--benchmark-sort=name"]
    if quick:
        cmd.append("--quick")
    if keyword:
        cmd += ["-k", keyword]
    if threads:
        cmd.append(f"--bench-threads={threads}")
    return cmd + list(extra)


def _run_pytest(cmd: list[str], cwd: Path, log: Path, verbose: bool) -> int:
    """Run pytest, everything into ``log``; echo progress (all output with ``verbose``)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w", encoding="utf-8") as sink, subprocess.Popen(
            cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            sink.write(line)
            if verbose or _PROGRESS.search(line.strip()):
                print(line, end="", flush=True)
        return proc.wait()


def _import_bench(bench_dir: Path, name: str):  # noqa: ANN202 - a module
    root = str(bench_dir.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module(f"bench.{name}")


def run(args: argparse.Namespace) -> int:
    """Run the benchmarks, then print the tables and draw the plots of this run."""
    try:
        bench_dir = find_bench_dir()
    except FileNotFoundError as error:
        print(f"fiber-fast bench: {error}", file=sys.stderr)
        return 2
    if importlib.util.find_spec("pytest_benchmark") is None:
        print("fiber-fast bench: pytest-benchmark is not installed (pip install 'fiber-fast[bench]')", file=sys.stderr)
        return 2
    out = Path(args.out).resolve() if args.out else bench_dir / "results"
    cmd = pytest_command(bench_dir, out, args.quick, args.keyword, args.max_time, args.pytest_args,
                         args.threads)
    print(f"fiber-fast bench: running {'the quick set' if args.quick else 'all shapes'} "
          f"(pytest log: {out / 'pytest.log'})", flush=True)
    code = _run_pytest(cmd, bench_dir.parent, out / "pytest.log", args.verbose)
    latest = out / "latest.csv"
    if not latest.is_file():
        print(f"fiber-fast bench: pytest exited with {code} and wrote no {latest}; see {out / 'pytest.log'}",
              file=sys.stderr)
        return code or 1
    report = _import_bench(bench_dir, "report")
    rows = _import_bench(bench_dir, "schema").read_rows(latest)
    print()
    print(report.format_report(rows))
    print(f"\nCSV: {latest} ({len(rows)} rows; all runs in {out / 'history.csv'})")
    if importlib.util.find_spec("matplotlib") is None:
        print("plots: matplotlib is not installed (pip install 'fiber-fast[bench]')")
    elif rows:
        paths = _import_bench(bench_dir, "plot").plot_rows(rows, out / "plots")
        print(f"plots: {len(paths)} PNG files in {out / 'plots'}")
    if code not in (0, 5):  # 5: nothing selected
        print(f"fiber-fast bench: some benchmarks failed (pytest exit {code}); see {out / 'pytest.log'}",
              file=sys.stderr)
    return 0 if code in (0, 5) else code


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``fiber-fast bench``."""
    parser.add_argument("--quick", action="store_true", help="small CPU shape set only (a few minutes on 2 cores)")
    parser.add_argument("--out", metavar="DIR", help="results folder (default: bench/results of the checkout)")
    parser.add_argument("-k", dest="keyword", metavar="EXPR", help="pytest -k expression (e.g. 'window and sdpa')")
    parser.add_argument("--max-time", type=float, default=0.3, metavar="S",
                        help="pytest-benchmark seconds per timed case (at least 5 rounds; default 0.3)")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads for the timings (default: one per core; 1 is steadier on a busy machine)")
    parser.add_argument("-v", "--verbose", action="store_true", help="show all pytest output")
    parser.add_argument("pytest_args", nargs="*", metavar="-- PYTEST_ARGS", help="passed to pytest as is")

