"""Bad data: one error type that names the file/id, and the ``on_error`` policy.

A reader that meets a corrupt or missing image or a malformed annotation calls :func:`handle`:
with ``on_error="raise"`` (the default everywhere) it raises :class:`DataError`; with ``"skip"`` it
logs a warning naming the file/id and returns the message, which the caller counts
(:class:`ErrorCounter`) and carries to the main process (the loader's ``errors`` counter).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Literal

OnError = Literal["raise", "skip"]
ON_ERROR_CHOICES: tuple[str, ...] = ("raise", "skip")
LOGGER = logging.getLogger("fiber_fast.data")


class DataError(ValueError):
    """An unreadable data item; ``kind`` is ``"image"``, ``"annotation"`` or ``"sample"``, ``source`` the file/id."""

    def __init__(self, kind: str, source: str, reason: str) -> None:
        super().__init__(f"bad {kind} {source}: {reason}")
        self.kind = kind
        self.source = source
        self.reason = reason


def check_on_error(on_error: str) -> OnError:
    """Validate an ``on_error`` argument (``"raise"`` or ``"skip"``)."""
    if on_error not in ON_ERROR_CHOICES:
        raise ValueError(f"on_error must be one of {ON_ERROR_CHOICES}, got {on_error!r}")
    return on_error  # type: ignore[return-value]


def handle(error: DataError, on_error: OnError) -> str:
    """Raise ``error`` (``on_error="raise"``) or log it and return its message (``"skip"``)."""
    if on_error == "raise":
        raise error
    LOGGER.warning("skipping %s", error)
    return str(error)


class ErrorCounter:
    """Counts of skipped items by kind (``image``, ``annotation``, ``sample``) and the last messages.

    ``as_dict()`` gives ``{"data_errors": total, "data_errors/<kind>": n, ...}`` for a metrics log.
    """

    def __init__(self, keep_last: int = 20) -> None:
        self.counts: Counter[str] = Counter()
        self.last: list[str] = []
        self._keep_last = keep_last

    def add(self, message: str) -> None:
        """Count one message of the form ``"bad <kind> <source>: <reason>"``."""
        words = message.split(" ", 2)
        kind = words[1] if len(words) > 1 and words[0] == "bad" else "other"
        self.counts[kind] += 1
        self.last = (self.last + [message])[-self._keep_last:]

    def extend(self, messages: list[str]) -> None:
        for message in messages:
            self.add(message)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_dict(self) -> dict[str, int]:
        return {"data_errors": self.total, **{f"data_errors/{k}": v for k, v in sorted(self.counts.items())}}
