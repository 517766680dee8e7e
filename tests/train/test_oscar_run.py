"""A real OSCAR run: 2 gloo ranks under torchrun and DeepSpeed ZeRO-2 on synthetic captions joined with region
files in Oscar's layout; the loss falls, the run folder holds an OSCAR checkpoint that ``fiber-fast eval --model
oscar`` scores. Slow: kill-and-resume equals the uninterrupted run."""

import argparse
import json

import pytest
import torch
import yaml

from fiber_fast.eval import eval_cli
from fiber_fast.train.metrics import read_metrics

from ._runs import losses, torchrun, write, zero_json

FEATURES = 8  # region feature width before the 6 geometry values
OSCAR = f"""stage: oscar
seed: 0
max_steps: 8
model: {{preset: tiny, overrides: {{region_dim: {FEATURES + 6}, text: {{vocab_size: 400, pad_token_id: 1}}}}}}
data: {{format: oscar, max_text_len: 24, max_tag_len: 12, max_regions: 4}}
optim: {{lr: 2.0e-3, warmup_steps: 1, schedule: constant}}
batch: {{micro_batch: 8}}
log: {{progress: false}}
"""


@pytest.fixture(scope="module")
def oscar_data(tmp_path_factory):
    """The synthetic set's captions and tokenizer, and a region folder per split: 2-4 regions per image whose
    tags are shape names and whose features carry the tag (one-hot) plus noise."""
    from fiber_fast.data.oscar_tsv import RegionRecord, write_region_tsv
    from fiber_fast.data.synth import generate

    root = tmp_path_factory.mktemp("oscar")
    generate(root, images=40, size=64, seed=0, vocab_size=400)
    names = ["circle", "square", "triangle", "diamond"]
    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        ids = sorted({image["id"] for image in json.loads((root / f"captions_{split}.json").read_text())["images"]})
        records = []
        for image_id in ids:
            count = int(torch.randint(2, 5, (), generator=g))
            labels = torch.randint(len(names), (count,), generator=g)
            corner = torch.rand(count, 2, generator=g) * 40
            features = torch.nn.functional.one_hot(labels, FEATURES).float() + 0.1 * torch.randn(count, FEATURES,
                                                                                                  generator=g)
            records.append(RegionRecord(image_id=str(image_id), image_hw=(64, 64),
                                        boxes=torch.cat([corner, corner + 20], 1), features=features,
                                        tags=[names[i] for i in labels], scores=torch.rand(count, generator=g)))
        write_region_tsv(root / f"regions_{split}", records)
    return root


def _train(tmp_path, root, run, *extra):
    config = write(tmp_path, "oscar.yaml", OSCAR)
    return torchrun(["--model", "oscar", "--config", str(config), "--data", str(root), "--out", str(tmp_path / run),
                     "--deepspeed", str(zero_json(tmp_path, 2)), *extra])


@pytest.mark.slow  # the default run keeps one real 2-rank DeepSpeed run: the coarse stage's
def test_two_rank_zero2_oscar_run_loss_falls_and_evaluates(tmp_path, oscar_data, capsys):
    run = tmp_path / "run"
    _train(tmp_path, oscar_data, "run")
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records] == list(range(1, 9))
    for record in records:
        assert abs(record["loss"] - record["loss/mlm"] - record["loss/relation"]) < 1e-4
        assert record["data_errors"] == 0
    first, last = records[0], records[-2:]
    assert sum(r["loss"] for r in last) / 2 < first["loss"] - 0.5, [r["loss"] for r in records]
    trained = yaml.safe_load((run / "train_config.yaml").read_text())
    assert trained["stage"] == "oscar" and trained["world_size"] == 2
    assert {k: trained["data"][k] for k in ("max_text_len", "max_tag_len", "max_regions")} == {
        "max_text_len": 24, "max_tag_len": 12, "max_regions": 4}

    parser = argparse.ArgumentParser()
    eval_cli.add_arguments(parser)
    out = tmp_path / "eval.json"
    args = parser.parse_args(["--model", "oscar", "--task", "retrieval", "--checkpoint", str(run), "--data",
                              str(oscar_data), "--max-images", "5", "--pairs-per-batch", "7", "--out", str(out)])
    assert eval_cli.run(args) == 0
    report = json.loads(out.read_text())
    assert report["model"] == "oscar" and report["num_images"] == 5 and report["max_regions"] == 4
    assert report["chance_t2i_r1"] == pytest.approx(1 / 5)
    assert all(0 <= report[f"{way}_r{k}"] <= 1 for way in ("i2t", "t2i") for k in (1, 5, 10))
    assert report["t2i_r5"] == 1.0  # 5 images: every caption's image is among the 5 best


def test_eval_rejects_a_fiber_task_for_oscar_and_an_oscar_run_for_fiber(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    eval_cli.add_arguments(parser)
    args = parser.parse_args(["--model", "oscar", "--task", "grounding", "--checkpoint", str(tmp_path),
                              "--data", str(tmp_path)])
    assert eval_cli.run(args) == 2
    assert "--model oscar evaluates --task retrieval only" in capsys.readouterr().err


@pytest.mark.slow
def test_kill_and_resume_equals_the_uninterrupted_oscar_run(tmp_path, oscar_data):
    _train(tmp_path, oscar_data, "full", "--max-steps", "6")
    _train(tmp_path, oscar_data, "cut", "--max-steps", "6", "--save-every", "3", "--stop-at", "4")
    assert len(losses(tmp_path / "cut")) == 4
    _train(tmp_path, oscar_data, "cut", "--max-steps", "6", "--save-every", "3", "--resume")
    assert losses(tmp_path / "cut") == pytest.approx(losses(tmp_path / "full"), rel=1e-5)  # steps 4-6 rewritten
