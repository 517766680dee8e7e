"""Shared pieces of the map-style readers: JSON loading that names the file, and skip-by-replacement.

A map-style item that cannot be read is replaced, with ``on_error="skip"``, by the next readable
index (``index + 1``, wrapping), so batches keep their size across ranks; the messages of the items
skipped on the way travel with the item (``item["errors"]``) to the loader, which counts them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fiber_fast.data.errors import DataError, OnError, handle

MAX_REPLACEMENTS = 64


def load_json(path: str | Path) -> dict[str, Any]:
    """Read a COCO-style JSON file; a missing or unparsable file raises naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise DataError("annotation", str(path), f"not valid JSON ({error})") from error
    if not isinstance(payload, dict) or not isinstance(payload.get("images"), list) \
            or not isinstance(payload.get("annotations"), list):
        raise DataError("annotation", str(path), "expected a JSON object with 'images' and 'annotations' lists")
    return payload


def read_with_replacement(load: Callable[[int], dict[str, Any]], index: int, length: int,
                          on_error: OnError) -> dict[str, Any]:
    """``load(index)``; with ``on_error="skip"`` unreadable indices are replaced by the next ones.

    Returns the item with ``item["errors"]``: the messages of the indices skipped (empty if none).
    """
    errors: list[str] = []
    for attempt in range(min(length, MAX_REPLACEMENTS)):
        try:
            item = load((index + attempt) % length)
        except DataError as error:
            errors.append(handle(error, on_error))
            continue
        item["errors"] = errors
        return item
    raise RuntimeError(f"{len(errors)} items in a row from index {index} could not be read; last: {errors[-1]}")
