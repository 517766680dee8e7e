"""``fiber-fast oscar extract`` end to end: a tiny fine model over a few synthetic images writes a region folder
that ``RegionStore`` reads back with the right counts, the tagger's own output in original pixels, and each
original image once."""

import argparse
import json

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from fiber_fast.data import FineTransform, GroundingDataset, collate_fine, load_tokenizer
from fiber_fast.data.oscar_tsv import RegionStore, region_geometry
from fiber_fast.data.synth import SHAPES, generate
from fiber_fast.eval import extract_cli
from fiber_fast.eval.loading import load_model
from fiber_fast.eval.tagger import RegionTagger
from fiber_fast.models import FiberConfig, build_fiber, save_checkpoint

from .test_tagger import one_thread  # noqa: F401  (autouse: one torch thread)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    generate(root / "data", images=8, size=64, seed=0, val_images=3)
    torch.manual_seed(0)
    run = root / "fine_run"  # a run folder: its train_config.yaml gives the default sizes (96 / 96 px)
    run.mkdir()
    save_checkpoint(build_fiber(FiberConfig.preset("tiny", stage="fine")), run / "model.safetensors")
    (run / "train_config.yaml").write_text(yaml.safe_dump({"data": {"min_sizes": [80, 96], "max_size": 96}}))
    save_checkpoint(build_fiber(FiberConfig.preset("tiny")), root / "coarse.safetensors")
    return root


def parse(argv):
    parser = argparse.ArgumentParser()
    extract_cli.add_arguments(parser)
    return parser.parse_args(argv)


def extract(workspace, out, *extra):
    return extract_cli.run(parse(["--model", str(workspace / "fine_run"), "--data", str(workspace / "data"),
                                  "--split", "val", "--out", str(out), "--top-k", "3", "--score-threshold", "0",
                                  "--batch-size", "2", "--no-progress", *extra]))


def test_extract_writes_regions_that_the_store_reads_back(workspace, capsys):
    out = workspace / "regions"
    assert extract(workspace, out) == 0
    store = RegionStore(out)
    assert store.image_ids == ["6", "7", "8"]  # the val split: the last 3 of 8 images
    assert store.feature_dim == 448 + 6
    counts = []
    for image_id in store.image_ids:
        regions = store.read(image_id)
        counts.append(len(regions.tags))
        assert 1 <= len(regions.tags) <= 3 and set(regions.tags) <= set(SHAPES)
        assert regions.image_hw == (64, 64)
        assert regions.boxes.min() >= 0 and regions.boxes.max() <= 64
        assert regions.scores.tolist() == sorted(regions.scores.tolist(), reverse=True)
        torch.testing.assert_close(regions.features[:, -6:], region_geometry(regions.boxes, (64, 64)))
    printed = capsys.readouterr().out
    assert f"3 images, {sum(counts)} regions" in printed and "96/96 px" in printed
    # Reference: the tagger on the same images at the resized 96 px, with 96 px as the "original" size.
    model = load_model(workspace / "fine_run")
    tokenizer = load_tokenizer(workspace / "data" / "tokenizer")
    dataset = GroundingDataset(workspace / "data" / "grounding_val.json", workspace / "data" / "images",
                               FineTransform([96], 96))
    batch = collate_fine([dataset[i] for i in range(3)], tokenizer, 32)
    tagger = RegionTagger(model, tokenizer, list(SHAPES), top_k=3, score_threshold=0.0)
    records = tagger(batch["pixel_values"], batch["image_sizes"], [(96, 96)] * 3, ["6", "7", "8"])
    for record in records:
        stored = store.read(record.image_id)
        assert stored.tags == record.tags
        torch.testing.assert_close(stored.boxes, record.boxes * 64 / 96)
        torch.testing.assert_close(stored.features[:, :-6], record.features)
        torch.testing.assert_close(stored.scores, record.scores)


def test_an_image_with_two_entries_is_extracted_once(workspace):
    payload = json.loads((workspace / "data" / "grounding_val.json").read_text())
    twin = {**payload["images"][0], "id": 100, "caption": "another caption"}
    payload["images"].append(twin)
    annotations = workspace / "two_entries.json"
    annotations.write_text(json.dumps(payload))
    out = workspace / "regions_once"
    assert extract(workspace, out, "--annotations", str(annotations), "--phrases", "circle", "square") == 0
    store = RegionStore(out)
    assert store.image_ids == ["6", "7", "8"]
    assert {tag for i in store.image_ids for tag in store.read(i).tags} <= {"circle", "square"}


def test_bad_input_exits_with_status_2(workspace, capsys):
    code = extract_cli.run(parse(["--model", str(workspace / "coarse.safetensors"), "--data",
                                  str(workspace / "data"), "--out", str(workspace / "never")]))
    assert code == 2 and "detection head" in capsys.readouterr().err
    code = extract_cli.run(parse(["--model", str(workspace / "fine_run"), "--data",
                                  str(workspace / "missing"), "--out", str(workspace / "never")]))
    assert code == 2 and "does not exist" in capsys.readouterr().err
    # Weights that do not fit their stored config (a parameter renamed, as an older checkpoint's would be).
    with safe_open(workspace / "fine_run" / "model.safetensors", "pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(workspace / "fine_run" / "model.safetensors")
    tensors["renamed.weight"] = tensors.pop("grounding_head.alignment.log_scale")
    save_file(tensors, workspace / "renamed.safetensors", metadata=metadata)
    code = extract_cli.run(parse(["--model", str(workspace / "renamed.safetensors"), "--data",
                                  str(workspace / "data"), "--out", str(workspace / "never")]))
    assert code == 2 and "cannot load" in capsys.readouterr().err
    assert not (workspace / "never").exists()
