"""The synthetic generator: layout, counts, determinism, and captions/boxes that match the pixels."""

from __future__ import annotations

import argparse
import hashlib
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fiber_fast.data import synth_cli
from fiber_fast.data.synth import COLOURS, SHAPES, generate
from tests.data.conftest import SYNTH_IMAGES, SYNTH_SHARD, SYNTH_SIZE, SYNTH_VAL


def _digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_and_counts(synth_dir: Path) -> None:
    train = SYNTH_IMAGES - SYNTH_VAL
    assert len(list((synth_dir / "images").glob("*.jpg"))) == SYNTH_IMAGES
    for split, images in (("train", train), ("val", SYNTH_VAL)):
        captions = json.loads((synth_dir / f"captions_{split}.json").read_text())
        grounding = json.loads((synth_dir / f"grounding_{split}.json").read_text())
        assert len(captions["images"]) == len(grounding["images"]) == images
        assert len(captions["annotations"]) == 2 * images
        assert {a["image_id"] for a in captions["annotations"]} == {i["id"] for i in captions["images"]}
        assert images <= len(grounding["annotations"]) <= 3 * images
        assert [c["name"] for c in grounding["categories"]] == list(SHAPES)
        shards = sorted((synth_dir / "shards").glob(f"{split}-*.tar"))
        assert len(shards) == -(-2 * images // SYNTH_SHARD)
        names = [n for shard in shards for n in tarfile.open(shard).getnames()]
        assert len(names) == 3 * 2 * images  # jpg + txt + json per caption
        assert {n.rsplit(".", 1)[1] for n in names} == {"jpg", "txt", "json"}
    assert (synth_dir / "tokenizer" / "tokenizer.json").is_file()


def test_same_seed_same_bytes_other_seed_differs(tmp_path: Path) -> None:
    generate(tmp_path / "a", images=12, size=48, seed=5)
    generate(tmp_path / "b", images=12, size=48, seed=5)
    generate(tmp_path / "c", images=12, size=48, seed=6)
    assert _digests(tmp_path / "a") == _digests(tmp_path / "b")
    assert _digests(tmp_path / "a")["captions_train.json"] != _digests(tmp_path / "c")["captions_train.json"]


def test_phrases_boxes_and_relations_match_the_pixels(synth_dir: Path) -> None:
    """Independent check from the JPEGs: the box centre has the phrase's colour; relations hold."""
    grounding = json.loads((synth_dir / "grounding_train.json").read_text())
    by_image: dict[int, list[dict]] = {}
    for ann in grounding["annotations"]:
        by_image.setdefault(ann["image_id"], []).append(ann)
    for entry in grounding["images"]:
        caption = entry["caption"]
        pixels = np.asarray(Image.open(synth_dir / "images" / entry["file_name"]).convert("RGB"), dtype=np.int32)
        anns = sorted(by_image[entry["id"]], key=lambda a: a["tokens_positive"][0][0])
        for ann in anns:
            (start, end), = ann["tokens_positive"]
            size_word, colour, kind = caption[start:end].split(" ")
            assert size_word in ("small", "large") and kind == SHAPES[ann["category_id"] - 1]
            x, y, w, h = ann["bbox"]
            assert w == h and 0 <= x and x + w <= SYNTH_SIZE and 0 <= y and y + h <= SYNTH_SIZE
            centre = pixels[int(y + h / 2), int(x + w / 2)]
            assert np.abs(centre - np.array(COLOURS[colour])).max() < 40, (entry["file_name"], colour, centre)
        if len(anns) == 1:
            x, y, w, _ = anns[0]["bbox"]
            column = "left" if x + w / 2 < SYNTH_SIZE / 3 else "right" if x + w / 2 >= 2 * SYNTH_SIZE / 3 else ""
            row = "top" if y + w / 2 < SYNTH_SIZE / 3 else "bottom" if y + w / 2 >= 2 * SYNTH_SIZE / 3 else ""
            where = f"at the {' '.join(v for v in (row, column) if v)}" if row or column else "in the middle"
            assert caption.endswith(f"{caption[slice(*anns[0]['tokens_positive'][0])]} {where}"), caption
        else:
            a_end = anns[0]["tokens_positive"][0][1]
            relation_text = caption[a_end:anns[1]["tokens_positive"][0][0]].strip()
            (ax, ay, aw, _), (bx, by, bw, _) = anns[0]["bbox"], anns[1]["bbox"]
            dx, dy = (ax + aw / 2) - (bx + bw / 2), (ay + aw / 2) - (by + bw / 2)
            expected = (("to the left of" if dx < 0 else "to the right of") if abs(dx) >= abs(dy)
                        else ("above" if dy < 0 else "below"))
            assert relation_text == f"{expected} a", caption


def test_shards_hold_the_caption_file_pairs(synth_dir: Path) -> None:
    captions = json.loads((synth_dir / "captions_val.json").read_text())
    files = {i["id"]: i["file_name"] for i in captions["images"]}
    expected = {(a["image_id"], a["caption"]) for a in captions["annotations"]}
    found = set()
    for shard in sorted((synth_dir / "shards").glob("val-*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                if member.name.endswith(".json"):
                    key = member.name[:-5]
                    meta = json.loads(tar.extractfile(member).read())
                    text = tar.extractfile(key + ".txt").read().decode()
                    jpeg = tar.extractfile(key + ".jpg").read()
                    assert jpeg == (synth_dir / "images" / files[meta["image_id"]]).read_bytes()
                    found.add((meta["image_id"], text))
    assert found == expected


def test_cli_writes_the_set_and_rejects_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    parser = argparse.ArgumentParser()
    synth_cli.add_arguments(parser)
    assert synth_cli.run(parser.parse_args(["--out", str(tmp_path / "s"), "--images", "10", "--size", "40"])) == 0
    assert "train: 9 images, 18 captions" in capsys.readouterr().out
    assert json.loads((tmp_path / "s" / "captions_val.json").read_text())["images"][0]["width"] == 40
    assert synth_cli.run(parser.parse_args(["--out", str(tmp_path / "t"), "--images", "1"])) == 2
    assert "images must be >= 2" in capsys.readouterr().err


@pytest.mark.slow
def test_thousand_images_in_a_few_seconds(tmp_path: Path) -> None:
    summary = generate(tmp_path, images=1000, size=128, seed=0)
    assert summary["seconds"]["total"] < 10.0, summary["seconds"]
