"""MDETR/GLIP grounding reader: COCO JSON whose images carry a ``caption`` and whose annotations carry
``bbox`` (xywh) and ``tokens_positive`` (character spans of the caption). One item per image entry."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fiber_fast.data.errors import DataError, OnError, handle
from fiber_fast.data.images import load_image
from fiber_fast.data.records import AnnotatedImages, entry_id, load_json
from fiber_fast.data.transforms import FineTransform

Span = tuple[int, int]


@dataclass(frozen=True)
class GroundingRecord:
    """One image entry: its caption and boxes (xyxy in the original pixels) with their phrase spans."""

    image_id: int
    file_name: str
    caption: str
    height: int
    width: int
    boxes: tuple[tuple[float, float, float, float], ...]
    spans: tuple[tuple[Span, ...], ...]
    category_ids: tuple[int, ...]
    annotation_ids: tuple[int, ...]
    original_image_id: int


def _spans(value: Any, caption: str) -> tuple[Span, ...] | str:
    """The validated spans, or the reason they are malformed."""
    if not isinstance(value, list) or not value:
        return "'tokens_positive' must be a non-empty list of [start, end] pairs"
    spans = []
    for span in value:
        if not (isinstance(span, (list, tuple)) and len(span) == 2 and all(isinstance(v, int) for v in span)):
            return f"span {span!r} is not an [start, end] pair of ints"
        if not 0 <= span[0] < span[1] <= len(caption):
            return f"span {span!r} is outside the caption (length {len(caption)})"
        spans.append((span[0], span[1]))
    return tuple(spans)


def _box(value: Any, height: int, width: int) -> tuple[float, float, float, float] | str:
    """xywh -> xyxy clipped to the image, or the reason it is malformed."""
    if not (isinstance(value, (list, tuple)) and len(value) == 4 and all(isinstance(v, (int, float)) for v in value)
            and all(math.isfinite(v) for v in value)):
        return f"'bbox' must be 4 finite numbers [x, y, w, h], got {value!r}"
    x, y, w, h = (float(v) for v in value)
    x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, float(width)), min(y + h, float(height))
    if x1 <= x0 or y1 <= y0:
        return f"'bbox' {value!r} is empty inside the {width}x{height} image"
    return x0, y0, x1, y1


def read_grounding(path: str | Path, on_error: OnError = "raise") -> tuple[list[GroundingRecord], list[str]]:
    """Parse an MDETR/GLIP grounding JSON into records (in the file's image order) and error messages.

    Malformed entries raise :class:`DataError` naming the file and the image/annotation id, or with
    ``on_error="skip"`` are dropped and reported: an image without ``id``/``file_name``/``caption``/
    ``height``/``width``, an annotation whose ``image_id`` is unknown, whose ``bbox`` is not 4 finite
    numbers or is empty, or whose ``tokens_positive`` spans do not lie inside the caption. Crowd
    annotations (``iscrowd`` 1) are left out, as MDETR does.
    """
    payload = load_json(path)
    errors: list[str] = []
    entries: dict[int, dict[str, Any]] = {}
    for entry in payload["images"]:
        ok = isinstance(entry, dict) and isinstance(entry.get("id"), int) and isinstance(entry.get("file_name"), str) \
            and isinstance(entry.get("caption"), str) and isinstance(entry.get("height"), int) \
            and isinstance(entry.get("width"), int) and entry["height"] > 0 and entry["width"] > 0
        if not ok:
            errors.append(handle(DataError("annotation", f"{path} image {entry_id(entry)}", "image entry needs int "
                                           "'id', 'height', 'width', str 'file_name' and 'caption'"), on_error))
            continue
        entries[entry["id"]] = {"entry": entry, "boxes": [], "spans": [], "categories": [], "ids": []}
    for ann in payload["annotations"]:
        source = f"{path} annotation {entry_id(ann)}"
        if not isinstance(ann, dict) or ann.get("image_id") not in entries:
            image_id = ann.get("image_id") if isinstance(ann, dict) else None
            errors.append(handle(DataError("annotation", source, f"image_id {image_id!r} is not among the "
                                           "file's images"), on_error))
            continue
        if ann.get("iscrowd", 0):
            continue
        target = entries[ann["image_id"]]
        entry = target["entry"]
        box = _box(ann.get("bbox"), entry["height"], entry["width"])
        spans = _spans(ann.get("tokens_positive"), entry["caption"])
        for problem in (box, spans):
            if isinstance(problem, str):
                errors.append(handle(DataError("annotation", source, problem), on_error))
                break
        else:
            target["boxes"].append(box)
            target["spans"].append(spans)
            target["categories"].append(int(ann.get("category_id", 0)))
            target["ids"].append(int(ann.get("id", -1)))
    records = [GroundingRecord(
        image_id=image_id, file_name=t["entry"]["file_name"], caption=t["entry"]["caption"],
        height=t["entry"]["height"], width=t["entry"]["width"], boxes=tuple(t["boxes"]), spans=tuple(t["spans"]),
        category_ids=tuple(t["categories"]), annotation_ids=tuple(t["ids"]),
        original_image_id=int(t["entry"].get("original_img_id", image_id))) for image_id, t in entries.items()]
    return records, errors


def item_generator(seed: int, epoch: int, index: int) -> torch.Generator:
    """The random stream of one item in one epoch (independent of worker count and read order)."""
    state = np.random.SeedSequence([seed, epoch, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


class GroundingDataset(AnnotatedImages):
    """Image-caption-boxes entries from MDETR/GLIP JSON; one item per image entry.

    ``dataset[i]`` -> ``{"pixel_values": (3, h, w) float32, "image_size": (h, w), "caption": str,
    "boxes": (G, 4) float32 xyxy in the resized pixels, "tokens_positive": list of G span lists,
    "image_id": int, "errors": list[str]}``. The multi-scale choice is drawn from
    ``item_generator(seed, epoch, index)`` (set ``dataset.epoch`` per epoch; the loader does).
    Without ``transform`` the item holds the PIL image and the boxes in its pixels.
    """

    def __init__(self, annotations: str | Path, image_root: str | Path, transform: FineTransform | None = None,
                 on_error: str = "raise", seed: int = 0) -> None:
        super().__init__(read_grounding, annotations, image_root, transform, on_error, "image entry")
        self.seed = seed

    def _load(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        image = load_image(self.image_root / record.file_name)
        if image.size != (record.width, record.height):
            raise DataError("image", str(self.image_root / record.file_name),
                            f"is {image.size[0]}x{image.size[1]}, its entry {record.image_id} says "
                            f"{record.width}x{record.height} (boxes would be wrong)")
        boxes = torch.tensor(record.boxes, dtype=torch.float32).reshape(-1, 4)
        if self.transform is None:
            pixels, size = image, (record.height, record.width)
        else:
            pixels, boxes, size = self.transform(image, boxes, item_generator(self.seed, self.epoch, index))
        return {"pixel_values": pixels, "image_size": size, "caption": record.caption, "boxes": boxes,
                "tokens_positive": [list(spans) for spans in record.spans], "image_id": record.image_id}
