"""Bad data: corrupt and missing images, malformed annotations, broken shard samples.

Default (``on_error="raise"``): a DataError naming the file/id. ``"skip"``: the item is skipped,
reported in the item's/loader's errors and counted.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from fiber_fast.data import CaptionsDataset, DataError, GroundingDataset, ShardDataset, build_loader, load_image
from fiber_fast.data.transforms import CoarseTransform


@pytest.fixture()
def broken_set(synth_dir: Path, tmp_path: Path) -> Path:
    """4 val images: #1 truncated JPEG, #2 missing, #3 and #4 fine; grounding with 3 malformed annotations."""
    root = tmp_path / "broken"
    shutil.copytree(synth_dir / "tokenizer", root / "tokenizer")
    (root / "images").mkdir()
    captions = json.loads((synth_dir / "captions_val.json").read_text())
    grounding = json.loads((synth_dir / "grounding_val.json").read_text())
    keep = [image["id"] for image in captions["images"][:4]]
    for image in captions["images"][:4]:
        shutil.copy(synth_dir / "images" / image["file_name"], root / "images" / image["file_name"])
    first, second = captions["images"][0]["file_name"], captions["images"][1]["file_name"]
    data = (root / "images" / first).read_bytes()
    (root / "images" / first).write_bytes(data[:len(data) // 2])
    (root / "images" / second).unlink()
    captions = {"images": captions["images"][:4],
                "annotations": [a for a in captions["annotations"] if a["image_id"] in keep]}
    (root / "captions_val.json").write_text(json.dumps(captions))
    anns = [a for a in grounding["annotations"] if a["image_id"] in keep[2:]]
    anns[0] = {**anns[0], "bbox": [1.0, 2.0, 3.0]}
    anns.append({"id": 9001, "image_id": keep[2], "bbox": [0, 0, 5, 5], "tokens_positive": [[3, 999]]})
    anns.append({"id": 9002, "image_id": 777777, "bbox": [0, 0, 5, 5], "tokens_positive": [[0, 1]]})
    grounding = {**grounding, "images": grounding["images"][2:4], "annotations": anns}
    (root / "grounding_val.json").write_text(json.dumps(grounding))
    return root


def test_truncated_and_missing_images_raise_naming_the_file(broken_set: Path) -> None:
    files = sorted((broken_set / "images").iterdir())
    with pytest.raises(DataError, match=files[0].name) as info:
        load_image(files[0])
    assert info.value.kind == "image" and "cannot decode" in str(info.value)
    dataset = CaptionsDataset(broken_set / "captions_val.json", broken_set / "images", CoarseTransform(32))
    with pytest.raises(DataError, match="file not found") as info:
        dataset[2]  # the second image's first caption
    assert info.value.source.endswith(json.loads((broken_set / "captions_val.json").read_text())
                                      ["images"][1]["file_name"])


def test_skip_replaces_bad_items_and_the_loader_counts_them(broken_set: Path) -> None:
    dataset = CaptionsDataset(broken_set / "captions_val.json", broken_set / "images", CoarseTransform(32),
                              on_error="skip")
    item = dataset[0]  # captions 0-3 belong to the two bad images: replaced by caption 4
    assert len(item["errors"]) == 4 and item["caption"] == dataset.records[4].caption
    assert dataset[5]["errors"] == []
    loader = build_loader({"root": str(broken_set), "split": "val", "format": "captions", "batch_size": 2,
                           "image_size": 32, "on_error": "skip", "shuffle": False})
    batches = list(loader)
    assert len(batches) == 4 and all(b["input_ids"].shape[0] == 2 for b in batches)
    assert loader.errors.as_dict() == {"data_errors": 4 + 3 + 2 + 1, "data_errors/image": 10}
    raising = build_loader({"root": str(broken_set), "split": "val", "format": "captions", "batch_size": 2,
                            "image_size": 32, "shuffle": False})
    with pytest.raises(DataError, match="bad image"):
        next(iter(raising))


def test_malformed_grounding_annotations(broken_set: Path) -> None:
    with pytest.raises(DataError, match=r"annotation \d+: 'bbox' must be 4 finite numbers"):
        GroundingDataset(broken_set / "grounding_val.json", broken_set / "images")
    dataset = GroundingDataset(broken_set / "grounding_val.json", broken_set / "images", on_error="skip")
    assert len(dataset.errors) == 3
    assert any("annotation 9001" in e and "outside the caption" in e for e in dataset.errors)
    assert any("annotation 9002" in e and "777777" in e for e in dataset.errors)
    loader = build_loader({"root": str(broken_set), "split": "val", "format": "grounding", "batch_size": 2,
                           "min_sizes": [64], "max_size": 64, "on_error": "skip"})
    assert loader.errors.as_dict() == {"data_errors": 3, "data_errors/annotation": 3}
    assert len(list(loader)) == 1
    resumed = build_loader({"root": str(broken_set), "split": "val", "format": "grounding", "batch_size": 2,
                            "min_sizes": [64], "max_size": 64, "on_error": "skip"})
    resumed.load_state_dict(loader.state_dict())
    assert resumed.errors.total == 3  # restored, not added to the construction-time count


def test_malformed_caption_annotation_and_json(tmp_path: Path) -> None:
    path = tmp_path / "captions.json"
    path.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}],
                                "annotations": [{"id": 5, "image_id": 1, "caption": 3},
                                                {"id": 6, "image_id": 1, "caption": "a red circle"}]}))
    with pytest.raises(DataError, match=r"captions.json annotation 5: needs a non-empty str 'caption'"):
        CaptionsDataset(path, tmp_path)
    assert len(CaptionsDataset(path, tmp_path, on_error="skip")) == 1
    path.write_text("{not json")
    with pytest.raises(DataError, match="captions.json: not valid JSON"):
        CaptionsDataset(path, tmp_path)
    with pytest.raises(ValueError, match="on_error must be one of"):
        CaptionsDataset(path, tmp_path, on_error="ignore")


def test_broken_shard_samples(synth_dir: Path, tmp_path: Path) -> None:
    """A shard whose 2nd sample has a truncated JPEG and whose 3rd has no caption."""
    shard = tmp_path / "bad-000000.tar"
    with tarfile.open(next((synth_dir / "shards").glob("val-*.tar"))) as source, tarfile.open(shard, "w") as out:
        members = source.getmembers()[:12]  # 4 samples
        for index, member in enumerate(members):
            data = source.extractfile(member).read()
            if index == 3:  # second sample's jpg
                data = data[:len(data) // 3]
            if index == 7:  # third sample's txt
                continue
            info = tarfile.TarInfo(member.name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    with pytest.raises(DataError, match=r"bad-000000.tar key 000041_1.jpg: cannot decode"):
        list(ShardDataset([str(shard)], shuffle=False))
    items = list(ShardDataset([str(shard)], shuffle=False, on_error="skip"))
    assert len(items) == 2 and [i["_position"][1] for i in items] == [1, 4]
    assert len(items[1]["errors"]) == 2 and "has ['jpg', 'json']" in items[1]["errors"][1]


def test_truncated_shard_is_reported_once(synth_dir: Path, tmp_path: Path) -> None:
    """Cut at a block boundary inside the 6th sample's JPEG data: tarfile finds the end of data missing."""
    path = next((synth_dir / "shards").glob("val-*.tar"))
    with tarfile.open(path) as tar:
        member = [m for m in tar.getmembers() if m.name.endswith(".jpg")][5]
    assert member.size > 512
    shard = tmp_path / "cut-000000.tar"
    shard.write_bytes(path.read_bytes()[:member.offset_data + 512])
    with pytest.raises(DataError, match=r"bad shard .*cut-000000.tar: unreadable tar \(unexpected end of data\)$"):
        list(ShardDataset([str(shard)], shuffle=False))
    items = list(ShardDataset([str(shard)], shuffle=False, on_error="skip"))
    errors = [e for item in items for e in item["errors"]]
    assert len(items) == 5 and len(errors) <= 2  # the break, and perhaps the sample it cut
    assert sum("unreadable tar" in e for e in errors) == 1


def test_shard_cut_inside_a_header_is_reported(synth_dir: Path, tmp_path: Path) -> None:
    path = next((synth_dir / "shards").glob("val-*.tar"))
    with tarfile.open(path) as tar:
        member = tar.getmembers()[9]
    shard = tmp_path / "cut-000000.tar"
    shard.write_bytes(path.read_bytes()[:member.offset + 100])  # 100 bytes into the 10th member's header
    with pytest.raises(DataError, match=r"cut-000000.tar: unreadable tar \(size \d+ is not a multiple of 512"):
        list(ShardDataset([str(shard)], shuffle=False))
    items = list(ShardDataset([str(shard)], shuffle=False, on_error="skip"))
    assert len(items) == 3 and sum(len(item["errors"]) for item in items) == 1
