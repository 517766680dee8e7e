"""The three readers read what the generator wrote: counts, contents, spans, and rank sharding."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from fiber_fast.data import (
    CaptionsDataset,
    CoarseTransform,
    GroundingDataset,
    ShardDataset,
    list_shards,
    read_coco_captions,
    read_grounding,
)


def test_captions_dataset_one_item_per_caption(synth_dir: Path) -> None:
    payload = json.loads((synth_dir / "captions_train.json").read_text())
    files = {i["id"]: i["file_name"] for i in payload["images"]}
    dataset = CaptionsDataset(synth_dir / "captions_train.json", synth_dir / "images", CoarseTransform(32))
    assert len(dataset) == len(payload["annotations"]) and dataset.errors == []
    for index in (0, 5, len(dataset) - 1):
        ann = payload["annotations"][index]
        item = dataset[index]
        assert item["caption"] == ann["caption"] and item["image_id"] == ann["image_id"] and item["errors"] == []
        assert item["pixel_values"].shape == (3, 32, 32) and item["pixel_values"].dtype == torch.float32
        expected = CoarseTransform(32)(Image.open(synth_dir / "images" / files[ann["image_id"]]).convert("RGB"))
        torch.testing.assert_close(item["pixel_values"], expected)
    records, errors = read_coco_captions(synth_dir / "captions_val.json")
    assert len(records) == 16 and errors == [] and records[0].file_name.endswith(".jpg")


def test_grounding_reader_boxes_and_spans(synth_dir: Path) -> None:
    payload = json.loads((synth_dir / "grounding_val.json").read_text())
    records, errors = read_grounding(synth_dir / "grounding_val.json")
    assert errors == [] and len(records) == len(payload["images"])
    assert sum(len(r.boxes) for r in records) == len(payload["annotations"])
    anns = {a["id"]: a for a in payload["annotations"]}
    for record in records:
        for box, spans, ann_id in zip(record.boxes, record.spans, record.annotation_ids, strict=True):
            x, y, w, h = anns[ann_id]["bbox"]
            assert box == (x, y, x + w, y + h)
            assert [record.caption[s:e] for s, e in spans] == [anns[ann_id]["phrase"]]
    dataset = GroundingDataset(synth_dir / "grounding_val.json", synth_dir / "images")
    item = dataset[0]
    assert isinstance(item["pixel_values"], Image.Image) and item["image_size"] == (64, 64)
    torch.testing.assert_close(item["boxes"], torch.tensor(records[0].boxes).reshape(-1, 4))
    assert item["tokens_positive"] == [list(s) for s in records[0].spans]


def _all(dataset: ShardDataset, num_workers: int = 0) -> list[tuple[int, str]]:
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers)
    return [(item["image_id"], item["caption"]) for item in loader]


def test_shards_stream_every_pair_once(synth_dir: Path) -> None:
    payload = json.loads((synth_dir / "captions_train.json").read_text())
    expected = sorted((a["image_id"], a["caption"]) for a in payload["annotations"])
    dataset = ShardDataset(list_shards(synth_dir / "shards" / "train-*.tar"), shuffle=False)
    pairs = _all(dataset)
    assert sorted(pairs) == expected
    item = next(iter(dataset))
    assert np.asarray(item["pixel_values"]).shape == (64, 64, 3) and item["_position"] == (0, 1)
    shuffled = ShardDataset(list_shards(synth_dir / "shards" / "train-*.tar"), seed=1, shuffle_buffer=30)
    once, again = _all(shuffled), _all(shuffled)
    assert sorted(once) == expected and once == again and once != pairs
    shuffled.epoch = 1
    assert _all(shuffled) != once


@pytest.mark.parametrize("world_size,num_workers", [(2, 0), (2, 2), (3, 2)])
def test_shards_split_disjointly_over_ranks_and_workers(synth_dir: Path, world_size: int, num_workers: int) -> None:
    """4 train shards: 2 and 4 streams split by shard, 6 streams by sample; together they cover all."""
    urls = list_shards(synth_dir / "shards" / "train-*.tar")
    parts = [_all(ShardDataset(urls, seed=2, rank=rank, world_size=world_size), num_workers)
             for rank in range(world_size)]
    flat = [pair for part in parts for pair in part]
    assert len(flat) == len(set(flat)) == 80
    assert all(part for part in parts)
