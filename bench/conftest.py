"""pytest set-up for bench/: collects ``bench_*.py``, adds ``--quick`` and ``--bench-out``, owns the
session ``Recorder`` and writes the CSV when the session ends.

Run through ``fiber-fast bench [--quick]`` or directly: ``pytest bench --quick``. The default ``pytest``
run never collects this folder (``testpaths = ["tests"]``): benchmarks are not tests.

Output (``--bench-out``, default ``bench/results/``): ``latest.csv`` (this run only, replaced) and
``history.csv`` (every run appended; ``run_id`` tells runs apart).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
import torch

from bench.harness import Recorder, RunInfo, append_rows, write_rows

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
RECORDER = pytest.StashKey[Recorder]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("fiber-fast bench")
    group.addoption("--quick", action="store_true", default=False,
                    help="time only the small CPU shape set (memory/projection rows on fake tensors stay)")
    group.addoption("--bench-device", default="auto", choices=("auto", "cpu", "cuda"),
                    help="where speed is timed (auto: cuda when a GPU is visible, else cpu)")
    group.addoption("--bench-threads", type=int, default=None, metavar="N",
                    help="torch.set_num_threads(N) for CPU timings (default: torch's choice, one per core); "
                         "1 is steadier on a machine shared with other jobs")
    group.addoption("--bench-out", default=str(DEFAULT_OUT), metavar="DIR",
                    help="folder for latest.csv and history.csv (default: bench/results)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "quick: part of the small CPU set selected by --quick")
    threads = config.getoption("--bench-threads")
    if threads is not None:
        if threads < 1:
            raise pytest.UsageError(f"--bench-threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)
    device = config.getoption("--bench-device")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    config.stash[RECORDER] = Recorder(device)


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    """Collect ``bench_*.py`` (files named on the command line are collected by pytest itself)."""
    if file_path.suffix == ".py" and file_path.name.startswith("bench_") and not parent.session.isinitpath(file_path):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.getoption("--quick"):
        return
    keep = [item for item in items if item.get_closest_marker("quick")]
    dropped = [item for item in items if not item.get_closest_marker("quick")]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep


@pytest.fixture(scope="session")
def recorder(request: pytest.FixtureRequest) -> Recorder:
    """The session's row collector: ``recorder.add(rows)``, ``recorder.skip(...)``."""
    return request.config.stash[RECORDER]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    if RECORDER not in config.stash or getattr(config.option, "collectonly", False):
        return
    out = Path(config.getoption("--bench-out"))
    rows = config.stash[RECORDER].rows
    run = RunInfo.collect(config.stash[RECORDER].device)
    write_rows(out / "latest.csv", rows, run)
    if rows:
        try:
            append_rows(out / "history.csv", rows, run)
        except ValueError as error:  # an older schema: keep this run beside it instead
            append_rows(out / f"history-{run.run_id}.csv", rows, run)
            warnings.warn(f"fiber-fast bench: {error}; this run also went to history-{run.run_id}.csv", stacklevel=1)
    config.stash[RECORDER].written = (str(out / "latest.csv"), len(rows))


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:  # noqa: ANN001
    recorder = config.stash.get(RECORDER, None)
    written = recorder.written if recorder else None
    if written:
        terminalreporter.write_line(f"fiber-fast bench: {written[1]} rows -> {written[0]} "
                                    f"(run `python bench/report.py {os.path.relpath(written[0])}` for the table)")
