"""Shared pieces of the map-style readers: JSON loading that names the file, how a message names an entry,
skip-by-replacement, and ``AnnotatedImages``, the base of the readers of an annotation JSON beside an image folder.

A map-style item that cannot be read is replaced, with ``on_error="skip"``, by the next readable
index (``index + 1``, wrapping), so batches keep their size across ranks; the messages of the items
skipped on the way travel with the item (``item["errors"]``) to the loader, which counts them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch.utils.data import Dataset

from fiber_fast.data.errors import DataError, OnError, check_on_error, handle

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


def entry_id(entry: Any) -> str:
    """How a message names a JSON entry: its ``id`` (repr), or its type when it is no object."""
    return repr(entry.get("id")) if isinstance(entry, dict) else f"<{type(entry).__name__}>"


class AnnotatedImages(Dataset):
    """Base of the readers of an annotation JSON beside an image folder (captions, grounding).

    ``read(annotations, on_error)`` gives the records and the messages of the malformed annotations skipped
    (``errors``); none usable raises ``ValueError`` naming the file and ``item`` ("caption", "image entry").
    ``len`` = number of records; ``dataset[i]`` is the subclass's ``_load(i)``, an unreadable image raising
    :class:`DataError` or, with ``on_error="skip"``, replaced by the next index (its message in the item's
    ``errors``). ``epoch`` is set by the loader.
    """

    def __init__(self, read: Callable[[str | Path, OnError], tuple[list[Any], list[str]]], annotations: str | Path,
                 image_root: str | Path, transform: Callable[..., Any] | None, on_error: str, item: str) -> None:
        self.on_error = check_on_error(on_error)
        self.records, self.errors = read(annotations, self.on_error)
        if not self.records:
            raise ValueError(f"{annotations} holds no usable {item}")
        self.image_root = Path(image_root)
        self.transform = transform
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.records)

    def _load(self, index: int) -> dict[str, Any]:
        """The item of record ``index`` (each reader its own); may raise :class:`DataError`."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> dict[str, Any]:
        return read_with_replacement(self._load, index, len(self), self.on_error)
