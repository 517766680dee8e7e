"""What the commands that read a trained run share (``fiber-fast eval``, ``fiber-fast oscar extract``): bad input
reported as one line on stderr (the command then exits with status 2), and the fine-stage image sizes of the run."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

Result = TypeVar("Result")


def run_timed(command: str, work: Callable[[], Result]) -> tuple[Result, float] | None:
    """``(work(), seconds it took)``; bad input (``FileNotFoundError``, ``ValueError``: missing files, a wrong
    checkpoint) prints ``fiber-fast COMMAND: message`` to stderr and returns None instead."""
    started = time.perf_counter()
    try:
        result = work()
    except (FileNotFoundError, ValueError) as error:
        print(f"fiber-fast {command}: {error}", file=sys.stderr)
        return None
    return result, time.perf_counter() - started


def fine_sizes(run_data: dict[str, Any], min_size: int | None, max_size: int | None) -> tuple[int, int]:
    """Shorter side and longer-side cap of fine-stage (grounding, detection, tagging) images: each flag when
    given, else the run's (``train_config.yaml`` data section: the largest ``min_sizes``, ``max_size``), else
    GLIP's 800 / 1333."""
    min_sizes = run_data.get("min_sizes")
    return min_size or (max(min_sizes) if min_sizes else 800), max_size or run_data.get("max_size", 1333)
