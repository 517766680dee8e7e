"""OSCAR items and loader: caption/region join, tag pollution statistics, determinism, exact resume, errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from fiber_fast.data import (
    DataError,
    OscarDataset,
    RegionRecord,
    RegionStore,
    build_loader,
    read_coco_captions,
    write_region_tsv,
)
from fiber_fast.data.oscar_tsv import FEATURES_TSV, lineidx_path
from fiber_fast.data.synth import SHAPES

FEATURE_DIM = 5


def write_regions(out: Path, image_ids: list[int], seed: int = 0) -> None:
    """Random regions (1..6 per image, tags drawn from the synthetic shapes) for ``image_ids``."""
    generator = torch.Generator().manual_seed(seed)
    records = []
    for image_id in image_ids:
        count = int(torch.randint(1, 7, (), generator=generator))
        corners = torch.rand(count, 2, 2, generator=generator) * 64
        boxes = torch.cat([corners.min(dim=1).values, corners.max(dim=1).values], dim=1)
        tags = [SHAPES[int(k)] + str(image_id) for k in torch.randint(len(SHAPES), (count,), generator=generator)]
        features = torch.randn(count, FEATURE_DIM, generator=generator)
        scores = torch.rand(count, generator=generator)
        records.append(RegionRecord(str(image_id), (64, 64), boxes, features, tags, scores))
    write_region_tsv(out, records)


@pytest.fixture(scope="module")
def regions_dir(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    records, _ = read_coco_captions(synth_dir / "captions_train.json")
    out = tmp_path_factory.mktemp("regions_train")
    write_regions(out, sorted({r.image_id for r in records}))
    return out


def _binomial_ok(count: int, total: int, p: float) -> bool:
    """``count`` of ``total`` draws is within 4.5 standard deviations of ``p * total``."""
    return abs(count - p * total) <= 4.5 * math.sqrt(total * p * (1 - p))


@pytest.mark.parametrize("contrast", [2, 3])
def test_pollution_statistics_and_sources(synth_dir: Path, regions_dir: Path, contrast: int) -> None:
    dataset = OscarDataset(synth_dir / "captions_train.json", regions_dir, contrast=contrast, seed=1)
    store = dataset.store
    counts = torch.zeros(3, dtype=torch.int64)
    total = 0
    for epoch in range(25):  # 25 x 80 captions: 4.5 sd = 5 % of the draws
        dataset.epoch = epoch
        for index in range(len(dataset)):
            label, other, _ = dataset.draw(index)
            assert other != dataset.records[index].image_id
            counts[label] += 1
            total += 1
    if contrast == 2:
        assert counts[2] == 0 and _binomial_ok(int(counts[1]), total, 0.5), counts
    else:
        assert _binomial_ok(int(counts[1]), total, 0.25) and _binomial_ok(int(counts[2]), total, 0.25), counts
    assert _binomial_ok(int(counts[0]), total, 0.5), counts
    captions_of = {}
    for record in dataset.records:
        captions_of.setdefault(record.image_id, []).append(record.caption)
    dataset.epoch = 0
    seen = set()
    for index in range(len(dataset)):
        item = dataset[index]
        own = item["image_id"]
        assert own == dataset.records[index].image_id and item["errors"] == []
        assert torch.equal(item["region_features"], store.read(str(own)).features)
        seen.add(item["relation_label"])
        if item["relation_label"] == 1:
            assert item["tags_image_id"] != own and item["tags"] == store.read_tags(str(item["tags_image_id"]))
            assert item["caption"] == dataset.records[index].caption
        elif item["relation_label"] == 2:
            assert item["caption_image_id"] != own and item["caption"] in captions_of[item["caption_image_id"]]
            assert item["tags"] == store.read_tags(str(own))
        else:
            assert item["tags_image_id"] == item["caption_image_id"] == own
            assert item["tags"] == store.read_tags(str(own)) and item["caption"] == dataset.records[index].caption
    assert seen == set(range(contrast))


def test_draws_are_deterministic_per_seed_epoch_index(synth_dir: Path, regions_dir: Path) -> None:
    first = OscarDataset(synth_dir / "captions_train.json", regions_dir, seed=4)
    second = OscarDataset(synth_dir / "captions_train.json", regions_dir, seed=4)
    order = list(range(len(first)))
    forward = [first.draw(i) for i in order]
    assert [second.draw(i) for i in reversed(order)] == forward[::-1]  # read order does not matter
    second.epoch = 1
    assert [second.draw(i) for i in order] != forward
    assert [OscarDataset(synth_dir / "captions_train.json", regions_dir, seed=5).draw(i) for i in order] != forward


def test_join_reports_captions_without_regions(synth_dir: Path, tmp_path: Path) -> None:
    records, _ = read_coco_captions(synth_dir / "captions_train.json")
    image_ids = sorted({r.image_id for r in records})
    write_regions(tmp_path, image_ids[1:])
    with pytest.raises(DataError, match=f"image_id {image_ids[0]} has no row"):
        OscarDataset(synth_dir / "captions_train.json", tmp_path)
    dataset = OscarDataset(synth_dir / "captions_train.json", tmp_path, on_error="skip")
    missing = sum(r.image_id == image_ids[0] for r in records)
    assert len(dataset.errors) == missing and len(dataset) == len(records) - missing
    with pytest.raises(ValueError, match="contrast"):
        OscarDataset(synth_dir / "captions_train.json", tmp_path, contrast=4)


def test_corrupt_region_row_raises_or_is_skipped_and_counted(synth_dir: Path, tmp_path: Path) -> None:
    records, _ = read_coco_captions(synth_dir / "captions_train.json")
    write_regions(tmp_path, sorted({r.image_id for r in records}))
    bad_id = RegionStore(tmp_path).image_ids[0]
    lines = (tmp_path / FEATURES_TSV).read_text().splitlines()
    lines[0] = bad_id + "\t" + json.dumps({"num_boxes": 1, "features": "AAAA"})  # 3 bytes, not 1 x 11 float32
    (tmp_path / FEATURES_TSV).write_text("".join(line + "\n" for line in lines))
    lineidx_path(tmp_path / FEATURES_TSV).unlink()
    bad_index = next(i for i, r in enumerate(records) if str(r.image_id) == bad_id)
    strict = OscarDataset(synth_dir / "captions_train.json", tmp_path)
    with pytest.raises(DataError, match=f"line 1 image {bad_id}: holds 3 feature bytes"):
        strict[bad_index]
    config = {"root": str(synth_dir), "format": "oscar", "regions": str(tmp_path), "batch_size": 4, "seed": 2,
              "on_error": "skip", "shuffle": False, "drop_last": False}
    loader = build_loader(config)
    batches = list(loader)
    assert sum(b["input_ids"].shape[0] for b in batches) == len(records)
    assert int(bad_id) not in torch.cat([b["image_ids"] for b in batches]).tolist()
    bad = [str(r.image_id) == bad_id for r in records]
    # an unreadable item is replaced by the next index, itself reported if unreadable too
    attempts = sum(next((k for k in range(j, len(bad)) if not bad[k]), len(bad)) - j for j in range(len(bad)) if bad[j])
    assert loader.errors.counts == {"image": attempts} and attempts >= sum(bad) > 0


def _config(synth_dir: Path, regions_dir: Path, **extra) -> dict:
    return {"root": str(synth_dir), "format": "oscar", "regions": str(regions_dir), "batch_size": 4, "seed": 3,
            "max_text_len": 12, "max_tag_len": 6, "max_regions": 4, "contrast": 3, **extra}


@pytest.mark.parametrize("num_workers", [0, 2])
def test_loader_batches_and_exact_resume(synth_dir: Path, regions_dir: Path, num_workers: int) -> None:
    config = _config(synth_dir, regions_dir, num_workers=num_workers)
    loader = build_loader(config)
    steps_per_epoch = len(loader)
    total, stop = steps_per_epoch + 4, steps_per_epoch - 3  # the kill is mid-epoch, the run crosses an epoch end
    uninterrupted = []
    while len(uninterrupted) < total:
        uninterrupted.extend(b for _, b in zip(range(total - len(uninterrupted)), loader, strict=False))
    batch = uninterrupted[0]
    assert batch["region_features"].shape[::2] == (4, FEATURE_DIM + 6) and batch["region_features"].shape[1] <= 4
    assert batch["input_ids"].dtype == batch["token_type_ids"].dtype == torch.int64
    assert batch["region_mask"].dtype == torch.bool and batch["relation_labels"].dtype == torch.int64
    killed = build_loader(config)
    before = [b for _, b in zip(range(stop), killed, strict=False)]
    state = json.loads(json.dumps(killed.state_dict()))  # what a checkpoint stores
    resumed = build_loader(config)
    resumed.load_state_dict(state)
    after = []
    while len(before) + len(after) < total:
        after.extend(b for _, b in zip(range(total - len(before) - len(after)), resumed, strict=False))
    for expected, got in zip(uninterrupted, before + after, strict=True):
        assert expected.keys() == got.keys()
        for key in expected:
            assert torch.equal(expected[key], got[key]), key
    labels = torch.cat([b["relation_labels"] for b in uninterrupted[:steps_per_epoch]])
    assert set(labels.tolist()) == {0, 1, 2}
