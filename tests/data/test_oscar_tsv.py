"""Oscar's region TSV layout: write/read round trip, .lineidx offsets, geometry, corrupt rows reported."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from fiber_fast.data import DataError, RegionRecord, RegionStore, region_geometry, write_region_tsv
from fiber_fast.data.oscar_tsv import FEATURES_TSV, IMAGE_INDEX_JSON, LABELS_TSV, lineidx_path

DIM = 7


def _records(count: int = 5, seed: int = 0) -> list[RegionRecord]:
    generator = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        regions = i % 4  # includes an image without regions
        hw = (30 + i, 40 + 2 * i)
        corners = torch.rand(regions, 2, 2, generator=generator) * torch.tensor([hw[1], hw[0]])
        boxes = torch.cat([corners.min(dim=1).values, corners.max(dim=1).values], dim=1)
        out.append(RegionRecord(f"img_{i}", hw, boxes, torch.randn(regions, DIM, generator=generator),
                                [f"tag{i}{r}" for r in range(regions)], torch.rand(regions, generator=generator)))
    return out


def test_round_trip_is_bit_exact(tmp_path: Path) -> None:
    records = _records()
    write_region_tsv(tmp_path, records)
    store = RegionStore(tmp_path)
    assert len(store) == len(records) and store.image_ids == [r.image_id for r in records]
    assert store.feature_dim == DIM + 6
    for record in records:
        regions = store.read(record.image_id)
        expected = torch.cat([record.features, region_geometry(record.boxes, record.image_hw)], dim=1)
        assert torch.equal(regions.features, expected)
        assert torch.equal(regions.boxes, record.boxes) and torch.equal(regions.scores, record.scores)
        assert regions.tags == record.tags and regions.image_hw == record.image_hw
        features, tags, boxes, hw = store.get(record.image_id)
        assert torch.equal(features, expected) and tags == record.tags and torch.equal(boxes, record.boxes)
        assert hw == record.image_hw
    # without the index files the store finds rows and ids by scanning (a released set may lack them)
    for path in (lineidx_path(tmp_path / FEATURES_TSV), lineidx_path(tmp_path / LABELS_TSV)):
        path.unlink()
    (tmp_path / IMAGE_INDEX_JSON).unlink()
    rescanned = RegionStore(tmp_path)
    assert rescanned.image_ids == store.image_ids
    assert torch.equal(rescanned.get("img_3")[0], store.get("img_3")[0])


def test_rows_follow_the_released_layout(tmp_path: Path) -> None:
    """Decoded independently of RegionStore: the JSON fields, base64 float32 and byte offsets."""
    records = _records()
    write_region_tsv(tmp_path, records)
    for name in (FEATURES_TSV, LABELS_TSV):
        data = (tmp_path / name).read_bytes()
        starts = [0] + [i + 1 for i, byte in enumerate(data) if byte == ord("\n")][:-1]
        assert [int(v) for v in lineidx_path(tmp_path / name).read_text().split()] == starts
    assert lineidx_path(tmp_path / FEATURES_TSV).name == "features.lineidx"
    assert json.loads((tmp_path / IMAGE_INDEX_JSON).read_text()) == {r.image_id: i for i, r in enumerate(records)}
    feature_lines = (tmp_path / FEATURES_TSV).read_text().splitlines()
    label_lines = (tmp_path / LABELS_TSV).read_text().splitlines()
    for record, feature_line, label_line in zip(records, feature_lines, label_lines, strict=True):
        image_id, info = feature_line.split("\t")
        info = json.loads(info)
        assert image_id == record.image_id and info["num_boxes"] == len(record.tags)
        values = np.frombuffer(base64.b64decode(info["features"]), dtype="<f4").reshape(info["num_boxes"], DIM + 6)
        assert np.array_equal(values[:, :DIM], record.features.numpy())
        image_id, labels = label_line.split("\t")
        labels = json.loads(labels)
        assert image_id == record.image_id
        assert (labels["image_h"], labels["image_w"]) == record.image_hw
        assert [o["class"] for o in labels["objects"]] == record.tags
        assert [o["rect"] for o in labels["objects"]] == record.boxes.tolist()
        assert [o["conf"] for o in labels["objects"]] == record.scores.tolist()


def test_geometry_hand_computed() -> None:
    boxes = torch.tensor([[10.0, 20.0, 30.0, 60.0], [0.0, 0.0, 200.0, 100.0]])
    expected = torch.tensor([[10 / 200, 20 / 100, 30 / 200, 60 / 100, 20 / 200, 40 / 100],
                             [0.0, 0.0, 1.0, 1.0, 1.0, 1.0]])
    torch.testing.assert_close(region_geometry(boxes, (100, 200)), expected, rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="image_hw"):
        region_geometry(boxes, (0, 200))
    with pytest.raises(TypeError, match="boxes must be a float32"):
        region_geometry(boxes.double(), (100, 200))


def test_record_checks_shapes() -> None:
    good = _records(4)[3]
    with pytest.raises(ValueError, match="features must be"):
        RegionRecord(good.image_id, good.image_hw, good.boxes, good.features[:1], good.tags, good.scores)
    with pytest.raises(ValueError, match="tags must be"):
        RegionRecord(good.image_id, good.image_hw, good.boxes, good.features, good.tags[:1], good.scores)
    with pytest.raises(ValueError, match="image_id"):
        RegionRecord("a\tb", good.image_hw, good.boxes, good.features, good.tags, good.scores)


def _rewrite_row(path: Path, row: int, edit) -> None:
    """Replace row ``row`` of ``path`` by ``edit(row text)`` and rewrite the .lineidx to match."""
    lines = path.read_text().splitlines()
    lines[row] = edit(lines[row])
    path.write_text("".join(line + "\n" for line in lines))
    offsets, position = [], 0
    for line in lines:
        offsets.append(position)
        position += len((line + "\n").encode())
    lineidx_path(path).write_text("".join(f"{o}\n" for o in offsets))


def _edit_features(mutate):
    def edit(line: str) -> str:
        image_id, info = line.split("\t")
        info = json.loads(info)
        mutate(info)
        return image_id + "\t" + json.dumps(info)
    return edit


CORRUPTIONS = {
    "bad base64": (FEATURES_TSV, _edit_features(lambda info: info.update(features="@@not*base64@@")), "base64"),
    "short features": (FEATURES_TSV, _edit_features(lambda info: info.update(
        features=base64.b64encode(base64.b64decode(info["features"])[:-4]).decode())), "feature bytes"),
    "num_boxes vs bytes": (FEATURES_TSV, _edit_features(lambda info: info.update(num_boxes=info["num_boxes"] + 1)),
                           "feature bytes"),
    "features json": (FEATURES_TSV, lambda line: line.split("\t")[0] + "\t{not json", "not valid JSON"),
    "labels json": (LABELS_TSV, lambda line: line[:-3], "not valid JSON"),
    "labels fields": (LABELS_TSV, lambda line: line.split("\t")[0] + '\t{"objects": []}', "image_h"),
    "object count": (LABELS_TSV, lambda line: line.split("\t")[0] + '\t{"objects": [], "image_h": 3, "image_w": 4}',
                     "lists 0 objects"),
    "id mismatch": (LABELS_TSV, lambda line: "img_X\t" + line.split("\t")[1], "id mismatch"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corrupt_rows_name_file_line_and_id(tmp_path: Path, case: str) -> None:
    records = _records()
    write_region_tsv(tmp_path, records)
    name, edit, reason = CORRUPTIONS[case]
    _rewrite_row(tmp_path / name, 2, edit)
    store = RegionStore(tmp_path)
    for other in ("img_0", "img_1", "img_3"):
        store.read(other)  # the other rows stay readable
    with pytest.raises(DataError, match=reason) as caught:
        store.read("img_2")
    assert caught.value.source == f"{tmp_path / name} line 3 image img_2"
    assert caught.value.kind == ("image" if name == FEATURES_TSV and case != "id mismatch" else "annotation")


def test_row_count_mismatch_and_unknown_id(tmp_path: Path) -> None:
    write_region_tsv(tmp_path, _records())
    store = RegionStore(tmp_path)
    with pytest.raises(KeyError, match="img_9"):
        store.read("img_9")
    lines = (tmp_path / LABELS_TSV).read_text().splitlines()[:-1]
    (tmp_path / LABELS_TSV).write_text("".join(line + "\n" for line in lines))
    lineidx_path(tmp_path / LABELS_TSV).unlink()
    with pytest.raises(DataError, match="must list the same images"):
        RegionStore(tmp_path)
