"""COCO-captions reader: an annotation JSON + an image folder, one item per caption (map-style)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fiber_fast.data.errors import DataError, OnError, handle
from fiber_fast.data.images import load_image
from fiber_fast.data.records import AnnotatedImages, entry_id, load_json


@dataclass(frozen=True)
class CaptionRecord:
    """One caption: its annotation id, its image's id and file (relative to the image root)."""

    caption_id: int
    image_id: int
    file_name: str
    caption: str


def read_coco_captions(path: str | Path, on_error: OnError = "raise") -> tuple[list[CaptionRecord], list[str]]:
    """Parse a COCO-captions JSON: the captions whose annotation is well-formed, and the error messages.

    Malformed annotations (no ``caption`` string, an ``image_id`` not among ``images``) and image entries
    without ``id``/``file_name`` raise :class:`DataError` naming the file and id, or are skipped and
    reported with ``on_error="skip"``.
    """
    payload = load_json(path)
    errors: list[str] = []
    files: dict[int, str] = {}
    for entry in payload["images"]:
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), int) \
                or not isinstance(entry.get("file_name"), str):
            errors.append(handle(DataError("annotation", f"{path} image {entry_id(entry)}",
                                           "image entry needs an int 'id' and a str 'file_name'"), on_error))
            continue
        files[entry["id"]] = entry["file_name"]
    records = []
    for ann in payload["annotations"]:
        source = f"{path} annotation {entry_id(ann)}"
        if not isinstance(ann, dict) or not isinstance(ann.get("caption"), str) or not ann["caption"].strip():
            errors.append(handle(DataError("annotation", source, "needs a non-empty str 'caption'"), on_error))
        elif ann.get("image_id") not in files:
            errors.append(handle(DataError("annotation", source, f"image_id {ann.get('image_id')!r} is not "
                                           "among the file's images"), on_error))
        else:
            records.append(CaptionRecord(int(ann.get("id", len(records))), ann["image_id"], files[ann["image_id"]],
                                         ann["caption"].strip()))
    return records, errors


class CaptionsDataset(AnnotatedImages):
    """Image-caption pairs from COCO-captions JSON; ``len`` = number of captions.

    ``dataset[i]`` -> ``{"pixel_values": transform(image) (e.g. (3, S, S) float32), "caption": str,
    "image_id": int, "errors": list[str]}``. ``errors`` (after construction) lists the malformed
    annotations skipped; an unreadable image raises :class:`DataError` naming the file, or with
    ``on_error="skip"`` is replaced by the next caption (its message in the item's ``errors``).
    ``epoch`` is unused (no random transform).
    """

    def __init__(self, annotations: str | Path, image_root: str | Path,
                 transform: Callable[[Any], torch.Tensor] | None = None, on_error: str = "raise") -> None:
        super().__init__(read_coco_captions, annotations, image_root, transform, on_error, "caption")

    def _load(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        image = load_image(self.image_root / record.file_name)
        pixels = self.transform(image) if self.transform is not None else image
        return {"pixel_values": pixels, "caption": record.caption, "image_id": record.image_id}
