"""The demo's OSCAR stage pieces: the first-images subsets it tags, the table with the OSCAR rows, the OSCAR
training command, and the shipped OSCAR run config fitting the tagger's features and the model's positions."""

import json
from pathlib import Path

import pytest

from fiber_fast import demo


def test_first_images_keeps_the_first_original_images_and_their_annotations(tmp_path):
    grounding = {"images": [{"id": 10, "original_img_id": 3}, {"id": 11, "original_img_id": 1},
                            {"id": 12, "original_img_id": 3}, {"id": 13, "original_img_id": 7}],
                 "annotations": [{"id": i, "image_id": image} for i, image in enumerate([10, 11, 12, 13, 13])],
                 "categories": [{"id": 1, "name": "circle"}]}
    source, dest = tmp_path / "g.json", tmp_path / "sub.json"
    source.write_text(json.dumps(grounding))
    assert demo.first_images(source, dest, 2) == 2  # original ids 1 and 3: three entries
    kept = json.loads(dest.read_text())
    assert [image["id"] for image in kept["images"]] == [10, 11, 12]
    assert [a["image_id"] for a in kept["annotations"]] == [10, 11, 12]
    assert kept["categories"] == grounding["categories"]
    captions = {"images": [{"id": 5}, {"id": 2}, {"id": 9}], "annotations": [{"id": 0, "image_id": 9},
                                                                              {"id": 1, "image_id": 2}]}
    source.write_text(json.dumps(captions))
    assert demo.first_images(source, dest, 0) == 3  # 0 = all
    assert demo.first_images(source, dest, 1) == 1
    assert json.loads(dest.read_text())["annotations"] == [{"id": 1, "image_id": 2}]


def test_table_shows_the_oscar_rows_without_grounding():
    summary = {row: {key: 0.25 for key in demo.METRIC_KEYS} for row in demo.ROWS}
    retrieval = [key for key in demo.METRIC_KEYS if not key.startswith("grounding")]
    summary["oscar"] = {**{key: 0.5 for key in retrieval}, "chance": {key: 0.125 for key in retrieval},
                        "num_images": 8, "num_texts": 16}
    lines = demo.format_table(summary).splitlines()
    oscar = next(line for line in lines if line.split()[:2] == ["oscar", "50.0%"])
    chance = next(line for line in lines if line.startswith("oscar chance"))
    assert oscar.split()[1:] == ["50.0%"] * len(retrieval) + ["-", "-"]
    assert chance.split()[2:] == ["12.5%"] * len(retrieval) + ["-", "-"]
    assert len(lines) == 2 + len(demo.ROWS) + 2


def test_oscar_train_command_names_the_model_not_a_stage():
    command = demo.train_command("oscar", "o.yaml", Path("/d"), Path("/r"), "ds.json", 2, 40)
    assert command[5:10] == ["-m", "fiber_fast", "train", "--model", "oscar"] and "--stage" not in command
    assert command[command.index("--max-steps") + 1] == "40"


def test_shipped_oscar_config_fits_the_tagger_and_the_positions():
    from fiber_fast.eval.tagger import region_feature_dim
    from fiber_fast.models import FiberConfig, OscarConfig
    from fiber_fast.train.config import load_config

    cfg = load_config(Path(demo.CHECKOUT) / "configs" / "demo" / "oscar.yaml", "oscar")
    fine = load_config(Path(demo.CHECKOUT) / "configs" / "demo" / "fine.yaml", "fine")
    oscar = OscarConfig.preset(cfg.model.preset, **cfg.model.overrides)
    fine_image = FiberConfig.preset(fine.model.preset, stage="fine", **fine.model.overrides).image
    assert oscar.region_dim == region_feature_dim(fine_image) + 6
    assert cfg.data["max_text_len"] + cfg.data["max_tag_len"] + 4 <= oscar.text.max_position_embeddings
    assert oscar.relation_labels == cfg.data["contrast"] == 3
    assert oscar.text.pad_token_id == 1  # the synthetic tokenizer's <pad>


@pytest.mark.parametrize("flag", ["--oscar-config", "--oscar-train-images", "--oscar-val-images", "--oscar-steps"])
def test_demo_has_the_oscar_options(flag, capsys):
    import argparse

    parser = argparse.ArgumentParser(prog="fiber-fast demo")
    demo.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    assert flag in capsys.readouterr().out
