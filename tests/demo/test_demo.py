"""The demo's own pieces: the grounding chance level, the table, the training command (the whole demo is
`make demo`; its figures are in the README)."""

from __future__ import annotations

import argparse
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fiber_fast import demo


class _AnchorsOnly(torch.nn.Module):
    """Stands in for a FiberModel: only the anchors of its grounding head are read."""

    def __init__(self, anchors: torch.Tensor) -> None:
        super().__init__()
        self.anchors = anchors

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                fusion: bool = True) -> None:
        return None

    def grounding_head(self, out: None) -> SimpleNamespace:
        return SimpleNamespace(anchors=self.anchors)


def _batch(boxes: list[list[list[float]]], phrase_rows: list[list[list[int]]]) -> dict[str, torch.Tensor]:
    size = len(boxes)
    return {"pixel_values": torch.zeros(size, 3, 8, 8), "input_ids": torch.zeros(size, 3, dtype=torch.long),
            "attention_mask": torch.ones(size, 3, dtype=torch.long), "boxes": torch.tensor(boxes),
            "box_mask": torch.ones(size, len(boxes[0]), dtype=torch.bool),
            "positive_map": torch.tensor(phrase_rows, dtype=torch.float32)}


def test_grounding_chance_is_the_random_ranking_recall() -> None:
    # 4 anchors; phrase 0's box equals anchor 0 (m = 1 of A = 4): R@1 = 1/4, R@5 covers all anchors = 1.
    # phrase 1's box overlaps no anchor at IoU >= 0.5: 0 at every k.
    anchors = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70]], dtype=torch.float)
    batch = _batch([[[0, 0, 10, 10], [100, 100, 110, 110]]], [[[1, 0, 0], [0, 1, 1]]])
    chance = demo.grounding_chance(_AnchorsOnly(anchors), [batch], ks=(1, 2, 5))
    assert chance["grounding_r1"] == pytest.approx((0.25 + 0.0) / 2)
    assert chance["grounding_r2"] == pytest.approx((1 - (3 / 4) * (2 / 3) + 0.0) / 2)
    assert chance["grounding_r5"] == pytest.approx((1.0 + 0.0) / 2)


def test_grounding_chance_groups_boxes_of_one_phrase() -> None:
    # two boxes of the same phrase, each equal to one anchor: m = 2 of 4, R@1 = 1/2.
    anchors = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70]], dtype=torch.float)
    batch = _batch([[[0, 0, 10, 10], [20, 20, 30, 30]]], [[[1, 1, 0], [1, 1, 0]]])
    assert demo.grounding_chance(_AnchorsOnly(anchors), [batch], ks=(1,))["grounding_r1"] == pytest.approx(0.5)


def test_table_has_every_row_and_metric_in_percent() -> None:
    summary = {row: {key: 0.25 for key in demo.METRIC_KEYS} for row in demo.ROWS}
    table = demo.format_table(summary)
    for row in demo.ROWS:
        assert row in table
    assert table.count("25.0%") == len(demo.ROWS) * len(demo.METRIC_KEYS)


def test_train_command_runs_the_cli_under_torchrun() -> None:
    command = demo.train_command("fine", "f.yaml", Path("/d"), Path("/r"), "ds.json", 2, 50, init=Path("/c"))
    assert command[1:5] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    assert command[5:8] == ["-m", "fiber_fast", "train"]
    assert command[command.index("--init") + 1] == "/c" and command[command.index("--max-steps") + 1] == "50"
    assert "--max-steps" not in demo.train_command("coarse", "c.yaml", Path("/d"), Path("/r"), "ds.json", 2, None)


def test_help_says_how_to_use_real_data_and_gpus(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="fiber-fast demo")
    demo.add_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--help"])
    out = capsys.readouterr().out
    assert "--data" in out and "base-fine" in out and "deepspeed --hostfile" in out


def test_shipped_configs_are_valid() -> None:
    from fiber_fast.train.config import load_config

    root = Path(demo.CHECKOUT) / "configs"
    assert load_config(root / "demo" / "coarse.yaml", "coarse").model.preset == "tiny"
    assert load_config(root / "demo" / "fine.yaml", "fine").model.preset == "tiny"
    for stage in (1, 2, 3):
        import json

        assert json.loads((root / "deepspeed" / f"zero{stage}.json").read_text())["zero_optimization"]["stage"] == stage


def test_words_blind_row_is_the_random_true_box_baseline(tmp_path: Path) -> None:
    from fiber_fast.data.synth import generate

    generate(tmp_path, images=12, seed=0)
    root = Path(demo.CHECKOUT) / "configs" / "demo"
    evaluator = demo.Evaluator(tmp_path, str(root / "coarse.yaml"), str(root / "fine.yaml"))
    found = evaluator.words_blind()
    # every phrase has a true box, so a random pick of the image's boxes hits with probability >= 1 / boxes
    # and at R@5 (more picks than the synthetic images have objects) always
    assert 0.0 < found["grounding_r1"] < 1.0 and found["grounding_r5"] == 1.0
