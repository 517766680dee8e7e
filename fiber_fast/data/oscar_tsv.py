"""OSCAR/VinVL region files: per-image region features, boxes and tags in Oscar's TSV layout.

A region folder holds (the layout of Oscar's ``OscarTSVDataset`` and VinVL's detector output):

- ``features.tsv``: one row per image, ``image_id \\t {"num_boxes": R, "features": base64(float32 R x (D + 6))}``;
  each region's pooled feature (D floats) followed by its 6 geometry values (:func:`region_geometry`),
  little-endian float32, row-major (VinVL: D = 2048, 2054 per region).
- ``predictions.tsv``: the same images in the same order, ``image_id \\t {"objects": [{"class": tag,
  "rect": [x1, y1, x2, y2], "conf": score}, ...], "image_h": h, "image_w": w}``; object ``i`` is region ``i``.
- ``features.lineidx`` / ``predictions.lineidx``: the byte offset of each row, one decimal per line
  (Oscar's ``TSVFile`` looks for ``<tsv without extension>.lineidx``).
- ``imageid2idx.json``: ``{image_id: row}`` (Oscar reads it to find an image's row).

:func:`write_region_tsv` writes such a folder; :class:`RegionStore` reads one (without ``.lineidx`` files
the offsets are found by one pass over the file, without ``imageid2idx.json`` from the first column of
the labels file). A corrupt row raises :class:`~fiber_fast.data.errors.DataError` naming the file, the
line (1-based) and the image id: kind ``"image"`` for a features row (bad JSON, bad base64, a byte count
that is not ``num_boxes x feature_dim x 4``), ``"annotation"`` for a labels row (bad JSON, missing or
malformed fields, an object count different from ``num_boxes``) and for an id differing between the files.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from fiber_fast.data.errors import DataError

FEATURES_TSV = "features.tsv"
LABELS_TSV = "predictions.tsv"
IMAGE_INDEX_JSON = "imageid2idx.json"
GEOMETRY_DIM = 6
_FLOAT32_LE = np.dtype("<f4")


def lineidx_path(tsv: str | Path) -> Path:
    """Oscar's name for a TSV file's row offsets: ``dir/name.tsv`` -> ``dir/name.lineidx``."""
    return Path(tsv).with_suffix(".lineidx")


@dataclass
class RegionRecord:
    """The regions of one image, as a tagger produces them.

    ``image_id`` str (no tab or newline); ``image_hw`` (height, width) in pixels; ``boxes`` ``(R, 4)``
    float32 xyxy pixels; ``features`` ``(R, D)`` float32 pooled features without geometry; ``tags`` R
    class names (no tab or newline); ``scores`` ``(R,)`` float32 detection confidences.
    """

    image_id: str
    image_hw: tuple[int, int]
    boxes: torch.Tensor
    features: torch.Tensor
    tags: list[str]
    scores: torch.Tensor

    def __post_init__(self) -> None:
        if not isinstance(self.image_id, str) or not self.image_id or any(c in self.image_id for c in "\t\r\n"):
            raise ValueError(f"image_id must be a non-empty str without tab/newline, got {self.image_id!r}")
        _check_hw(self.image_hw)
        regions = _check_float32("boxes", self.boxes, 2).shape[0]
        if self.boxes.shape[1] != 4:
            raise ValueError(f"boxes must be (R, 4) float32 xyxy, got shape {tuple(self.boxes.shape)}")
        if _check_float32("features", self.features, 2).shape[0] != regions:
            raise ValueError(f"features must be (R, D) float32 with R = {regions} boxes, "
                             f"got {tuple(self.features.shape)}")
        if _check_float32("scores", self.scores, 1).shape[0] != regions:
            raise ValueError(f"scores must be (R,) float32 with R = {regions} boxes, got {tuple(self.scores.shape)}")
        if len(self.tags) != regions or not all(isinstance(t, str) and t.strip() for t in self.tags):
            raise ValueError(f"tags must be {regions} non-empty str (one per box), got {self.tags!r}")
        if any(c in tag for tag in self.tags for c in "\t\r\n"):
            raise ValueError(f"tags must not hold tab/newline, got {self.tags!r}")


def _check_hw(image_hw: Any) -> tuple[int, int]:
    if not (isinstance(image_hw, (tuple, list)) and len(image_hw) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in image_hw)):
        raise ValueError(f"image_hw must be (height, width) positive ints, got {image_hw!r}")
    return int(image_hw[0]), int(image_hw[1])


def _check_float32(name: str, tensor: Any, ndim: int) -> torch.Tensor:
    if not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.float32 or tensor.device.type != "cpu":
        raise TypeError(f"{name} must be a float32 CPU tensor, got "
                        f"{getattr(tensor, 'dtype', type(tensor).__name__)} on {getattr(tensor, 'device', '-')}")
    if tensor.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {tuple(tensor.shape)}")
    return tensor


def region_geometry(boxes: torch.Tensor, image_hw: tuple[int, int]) -> torch.Tensor:
    """VinVL's 6 geometry values of xyxy pixel boxes ``(R, 4)`` float32 -> ``(R, 6)`` float32:
    ``x1/w, y1/h, x2/w, y2/h, (x2-x1)/w, (y2-y1)/h`` (computed in float32)."""
    height, width = _check_hw(image_hw)
    _check_float32("boxes", boxes, 2)
    if boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (R, 4) float32 xyxy, got shape {tuple(boxes.shape)}")
    x1, y1, x2, y2 = boxes.unbind(dim=1)
    return torch.stack([x1 / width, y1 / height, x2 / width, y2 / height, (x2 - x1) / width, (y2 - y1) / height],
                       dim=1)


def _write_rows(path: Path, rows: list[str]) -> None:
    """Write ``rows`` (each ending in a newline) and ``path``'s ``.lineidx`` with their byte offsets."""
    offsets, position = [], 0
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        for row in rows:
            data = row.encode("utf-8")
            offsets.append(position)
            handle.write(data)
            position += len(data)
    os.replace(tmp, path)
    lineidx_path(path).write_text("".join(f"{offset}\n" for offset in offsets), encoding="utf-8")


def write_region_tsv(out_dir: str | Path, records: Iterable[RegionRecord]) -> None:
    """Write ``records`` to ``out_dir`` in Oscar's layout (module docstring): ``features.tsv`` with each
    region's features followed by :func:`region_geometry`, ``predictions.tsv``, both ``.lineidx`` files and
    ``imageid2idx.json``. All records must share one feature width D; image ids must be unique."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    feature_rows, label_rows, index = [], [], {}
    feature_dim: int | None = None
    for record in records:
        if not isinstance(record, RegionRecord):
            raise TypeError(f"records must be RegionRecord, got {type(record).__name__}")
        if record.image_id in index:
            raise ValueError(f"image_id {record.image_id!r} appears twice")
        width = record.features.shape[1]
        if feature_dim is not None and width != feature_dim and record.features.shape[0] > 0:
            raise ValueError(f"features of {record.image_id!r} are {width} wide, earlier records {feature_dim}")
        if record.features.shape[0] > 0:
            feature_dim = width
        stored = torch.cat([record.features, region_geometry(record.boxes, record.image_hw)], dim=1)
        payload = base64.b64encode(stored.numpy().astype(_FLOAT32_LE, copy=False).tobytes()).decode("ascii")
        objects = [{"class": tag, "rect": box, "conf": score}
                   for tag, box, score in zip(record.tags, record.boxes.tolist(), record.scores.tolist(), strict=True)]
        index[record.image_id] = len(feature_rows)
        feature_rows.append(f"{record.image_id}\t{json.dumps({'num_boxes': len(objects), 'features': payload})}\n")
        label_rows.append(f"{record.image_id}\t" + json.dumps(
            {"objects": objects, "image_h": record.image_hw[0], "image_w": record.image_hw[1]}) + "\n")
    _write_rows(out / FEATURES_TSV, feature_rows)
    _write_rows(out / LABELS_TSV, label_rows)
    (out / IMAGE_INDEX_JSON).write_text(json.dumps(index), encoding="utf-8")


class _TsvRows:
    """Random access to a TSV file's rows through its ``.lineidx`` offsets (or one scan without it).

    The file handle is opened lazily and reopened in a new process (DataLoader workers)."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"region file {path} does not exist")
        self.path = path
        index = lineidx_path(path)
        if index.is_file():
            try:
                self.offsets = [int(line) for line in index.read_text(encoding="utf-8").split()]
            except ValueError as error:
                raise DataError("annotation", str(index), f"not a list of byte offsets ({error})") from error
        else:
            self.offsets = self._scan()
        self._handle: Any = None
        self._pid = -1

    def _scan(self) -> list[int]:
        offsets, position = [], 0
        with self.path.open("rb") as handle:
            for line in handle:
                offsets.append(position)
                position += len(line)
        return offsets

    def __len__(self) -> int:
        return len(self.offsets)

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_handle": None, "_pid": -1}

    def columns(self, row: int, first_only: bool = False) -> list[str]:
        """The tab-separated columns of ``row`` (0-based), newline stripped; raises DataError if unreadable."""
        if self._handle is None or self._pid != os.getpid():
            self._handle, self._pid = self.path.open("rb"), os.getpid()
        self._handle.seek(self.offsets[row])
        line = self._handle.readline()
        try:
            text = line.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as error:
            raise DataError("annotation", self.where(row), f"is not UTF-8 ({error})") from error
        return text.split("\t", 1)[:1] if first_only else text.split("\t")

    def where(self, row: int, image_id: str | None = None) -> str:
        """``"<file> line <n>[ image <id>]"`` for error messages."""
        return f"{self.path} line {row + 1}" + (f" image {image_id}" if image_id is not None else "")


def _json_row(table: _TsvRows, row: int, image_id: str, kind: str, column: str) -> tuple[str, Any]:
    """``(where, parsed JSON)`` of a row ``image_id \\t JSON``; DataError of ``kind`` naming file, line and id
    otherwise (an id that differs from ``image_id`` is an annotation error: the two files disagree)."""
    where = table.where(row, image_id)
    columns = table.columns(row)
    if len(columns) != 2:
        raise DataError(kind, where, f"has {len(columns)} tab-separated columns, expected 2")
    if columns[0] != image_id:
        raise DataError("annotation", where, f"holds image id {columns[0]!r} (id mismatch)")
    try:
        return where, json.loads(columns[1])
    except json.JSONDecodeError as error:
        raise DataError(kind, where, f"{column} column is not valid JSON ({error})") from error


class StoredRegions(NamedTuple):
    """One image's regions read back: ``features (R, D + 6)`` float32 (geometry last), ``tags`` R str,
    ``boxes (R, 4)`` float32 xyxy pixels, ``image_hw`` (height, width), ``scores (R,)`` float32."""

    features: torch.Tensor
    tags: list[str]
    boxes: torch.Tensor
    image_hw: tuple[int, int]
    scores: torch.Tensor


class RegionStore:
    """A region folder (module docstring) opened for random access by image id.

    ``len(store)``, ``store.image_ids`` (row order), ``image_id in store``, ``store.feature_dim`` (D + 6);
    ``store.get(image_id)`` -> ``(features (R, D + 6) float32, tags list[str], boxes (R, 4) float32,
    image_hw)``; ``store.read(image_id)`` -> :class:`StoredRegions` (with the scores);
    ``store.read_tags(image_id)`` -> the tags alone (the labels row only). ``feature_dim``
    is inferred from the first image with regions unless given. Rows are checked as they are read.
    """

    def __init__(self, root: str | Path, features: str = FEATURES_TSV, labels: str = LABELS_TSV,
                 feature_dim: int | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"region folder {self.root} does not exist")
        self._features, self._labels = _TsvRows(self.root / features), _TsvRows(self.root / labels)
        if len(self._features) != len(self._labels):
            raise DataError("annotation", str(self._labels.path), f"has {len(self._labels)} rows, "
                            f"{self._features.path} has {len(self._features)}: the files must list the same images")
        self._rows = self._index()
        self.image_ids = list(self._rows)
        if feature_dim is None:
            feature_dim = self._infer_feature_dim()
        if not isinstance(feature_dim, int) or feature_dim <= GEOMETRY_DIM:
            raise ValueError(f"feature_dim must be an int > {GEOMETRY_DIM} (D + 6 geometry), got {feature_dim!r}")
        self.feature_dim = feature_dim

    def _index(self) -> dict[str, int]:
        path = self.root / IMAGE_INDEX_JSON
        if path.is_file():
            try:
                rows = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as error:
                raise DataError("annotation", str(path), f"not valid JSON ({error})") from error
            if not isinstance(rows, dict) or not all(isinstance(r, int) and 0 <= r < len(self._labels)
                                                     for r in rows.values()):
                raise DataError("annotation", str(path), f"must map image ids to rows 0..{len(self._labels) - 1}")
            return {str(k): v for k, v in sorted(rows.items(), key=lambda item: item[1])}
        rows = {}
        for row in range(len(self._labels)):
            image_id = self._labels.columns(row, first_only=True)[0]
            if image_id in rows:
                raise DataError("annotation", self._labels.where(row, image_id),
                                f"repeats the image id of line {rows[image_id] + 1}")
            rows[image_id] = row
        return rows

    def _infer_feature_dim(self) -> int:
        """D + 6 from the first readable row with regions (a corrupt row is skipped here, reported when read)."""
        for image_id, row in self._rows.items():
            try:
                num_boxes, payload = self._feature_row(row, image_id)
            except DataError:
                continue
            if num_boxes > 0 and len(payload) % (4 * num_boxes) == 0:
                return len(payload) // (4 * num_boxes)
        raise ValueError(f"{self.root} holds no readable region: pass feature_dim")

    def __len__(self) -> int:
        return len(self.image_ids)

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._rows

    def _row_of(self, image_id: str) -> int:
        if image_id not in self._rows:
            raise KeyError(f"image_id {image_id!r} is not in {self.root}")
        return self._rows[image_id]

    def _feature_row(self, row: int, image_id: str) -> tuple[int, bytes]:
        where, info = _json_row(self._features, row, image_id, "image", "features")
        num_boxes = info.get("num_boxes") if isinstance(info, dict) else None
        if not isinstance(num_boxes, int) or num_boxes < 0 or not isinstance(info.get("features"), str):
            raise DataError("image", where, "needs a JSON object with int 'num_boxes' >= 0 and str 'features'")
        try:
            payload = base64.b64decode(info["features"], validate=True)
        except (binascii.Error, ValueError) as error:
            raise DataError("image", where, f"'features' is not valid base64 ({error})") from error
        return num_boxes, payload

    def _label_row(self, row: int, image_id: str) -> tuple[list[str], torch.Tensor, torch.Tensor, tuple[int, int]]:
        where, info = _json_row(self._labels, row, image_id, "annotation", "labels")
        objects = info.get("objects") if isinstance(info, dict) else None
        hw = (info.get("image_h"), info.get("image_w")) if isinstance(info, dict) else None
        if not isinstance(objects, list) or not all(isinstance(v, int) and v > 0 for v in hw or ()):
            raise DataError("annotation", where, "needs a JSON object with an 'objects' list and positive int "
                            "'image_h', 'image_w'")
        tags, boxes, scores = [], [], []
        for number, obj in enumerate(objects):
            rect = obj.get("rect") if isinstance(obj, dict) else None
            ok = isinstance(obj, dict) and isinstance(obj.get("class"), str) and isinstance(rect, list) \
                and len(rect) == 4 and all(_is_number(v) for v in rect) and _is_number(obj.get("conf"))
            if not ok:
                raise DataError("annotation", where, f"object {number} needs str 'class', 'rect' [x1, y1, x2, y2] "
                                f"and number 'conf', got {obj!r}")
            tags.append(obj["class"])
            boxes.append(rect)
            scores.append(obj["conf"])
        return (tags, torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                torch.tensor(scores, dtype=torch.float32), (hw[0], hw[1]))

    def read(self, image_id: str) -> StoredRegions:
        """All of one image's regions; a corrupt or inconsistent row raises DataError (file, line, id)."""
        row = self._row_of(image_id)
        num_boxes, payload = self._feature_row(row, image_id)
        expected = num_boxes * self.feature_dim * 4
        if len(payload) != expected:
            raise DataError("image", self._features.where(row, image_id), f"holds {len(payload)} feature bytes, "
                            f"expected num_boxes={num_boxes} x feature_dim={self.feature_dim} x 4 = {expected}")
        tags, boxes, scores, image_hw = self._label_row(row, image_id)
        if len(tags) != num_boxes:
            raise DataError("annotation", self._labels.where(row, image_id), f"lists {len(tags)} objects, "
                            f"{self._features.path} has num_boxes={num_boxes}")
        features = torch.from_numpy(np.frombuffer(payload, dtype=_FLOAT32_LE).astype(np.float32)
                                    .reshape(num_boxes, self.feature_dim))
        return StoredRegions(features, tags, boxes, image_hw, scores)

    def read_tags(self, image_id: str) -> list[str]:
        """Only the tags of ``image_id`` (its labels row; the features row is not read)."""
        return self._label_row(self._row_of(image_id), image_id)[0]

    def get(self, image_id: str) -> tuple[torch.Tensor, list[str], torch.Tensor, tuple[int, int]]:
        """``(features (R, D + 6) float32, tags, boxes (R, 4) float32, image_hw)`` of ``image_id``."""
        regions = self.read(image_id)
        return regions.features, regions.tags, regions.boxes, regions.image_hw


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
