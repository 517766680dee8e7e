"""Checkpoint atomicity and pruning (with a stand-in engine that writes like DeepSpeed), RNG round trip,
--init weight sharing, and the metrics file (last line per step wins) and curves."""

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from fiber_fast.train.checkpoint import CheckpointManager, load_shared_weights, rng_state, set_rng_state
from fiber_fast.train.metrics import MetricsLogger, read_metrics


class FileEngine:
    """Writes one file per tag like DeepSpeed's save_checkpoint; can die before finishing."""

    def __init__(self):
        self.die = False
        self.loaded = None

    def save_checkpoint(self, save_dir, tag, client_state, save_latest):
        assert save_latest is False
        folder = f"{save_dir}/{tag}"
        import os

        os.makedirs(folder)
        if self.die:
            raise KeyboardInterrupt("killed mid-write")
        torch.save(client_state, f"{folder}/mp_rank_00_model_states.pt")

    def load_checkpoint(self, load_dir, tag, **_):
        self.loaded = tag
        return f"{load_dir}/{tag}", torch.load(f"{load_dir}/{tag}/mp_rank_00_model_states.pt", weights_only=False)


def test_kill_mid_write_leaves_previous_checkpoint_loadable(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    engine = FileEngine()
    manager.save(engine, 2, {"step": 2})
    engine.die = True
    with pytest.raises(KeyboardInterrupt):
        manager.save(engine, 4, {"step": 4})
    assert manager.latest_tag() == "step00000002"
    assert (tmp_path / "checkpoints" / "tmp-step00000004").is_dir()  # the half-written one is not a tag
    state = CheckpointManager(tmp_path, keep_last=2).load(FileEngine())
    assert state["step"] == 2 and state["tag"] == "step00000002"
    engine.die = False
    manager.save(engine, 4, {"step": 4})
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["latest", "step00000002", "step00000004"]


def test_keep_last_and_redone_step(tmp_path):
    manager = CheckpointManager(tmp_path, keep_last=2)
    engine = FileEngine()
    for step in (1, 2, 3, 4):
        manager.save(engine, step, {"step": step})
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest", "step00000003", "step00000004"]
    manager.save(engine, 4, {"step": 4, "again": True})  # a step redone after a resume replaces its folder
    assert manager.load(FileEngine())["again"] is True
    assert CheckpointManager(tmp_path / "empty").load(FileEngine()) is None


def test_rng_state_round_trip():
    state = rng_state()
    first = (random.random(), float(np.random.rand()), torch.rand(3))
    set_rng_state(state)
    again = (random.random(), float(np.random.rand()), torch.rand(3))
    assert first[:2] == again[:2] and torch.equal(first[2], again[2])


def test_load_shared_weights_reports_missing_unexpected_mismatched():
    model = nn.ModuleDict({"backbone": nn.Linear(3, 3), "grounding_head": nn.Linear(3, 2)})
    source = nn.ModuleDict({"backbone": nn.Linear(3, 3), "itm_head": nn.Linear(3, 2)})
    state = {**source.state_dict(), "grounding_head.bias": torch.zeros(5)}
    report = load_shared_weights(model, state)
    assert torch.equal(model["backbone"].weight, source["backbone"].weight)
    assert report["loaded"] == ["backbone.bias", "backbone.weight"]
    assert report["missing"] == ["grounding_head.weight"]
    assert report["unexpected"] == ["itm_head.bias", "itm_head.weight"]
    assert report["mismatched"] == ["grounding_head.bias"]
    tied = nn.ModuleDict({"embed": nn.Embedding(5, 3), "decoder": nn.Linear(3, 5, bias=False)})
    tied["decoder"].weight = tied["embed"].weight
    assert load_shared_weights(tied, {"embed.weight": torch.ones(5, 3)})["missing"] == []
    assert torch.equal(tied["decoder"].weight, torch.ones(5, 3))


def test_metrics_resume_appends_and_last_line_counts(tmp_path):
    logger = MetricsLogger(tmp_path, enabled=True, total_steps=3, start_step=0, tensorboard=True, progress=False)
    for step in (1, 2, 3):
        logger.log({"step": step, "loss": 10.0 - step, "lr": 0.1, "samples_per_s": 1.0, "loss/itc": 1.0,
                    "memory_mib": 1.0})
    logger.close(plot=False)
    logger = MetricsLogger(tmp_path, enabled=True, total_steps=3, start_step=2, tensorboard=False, progress=False)
    logger.log({"step": 3, "loss": 5.0, "lr": 0.1, "samples_per_s": 1.0, "loss/itc": 1.0, "memory_mib": 1.0})
    png = logger.close(plot=True)
    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["loss"] for r in records] == [9.0, 8.0, 5.0]
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 4
    assert png is not None and png.stat().st_size > 1000
    assert any((tmp_path / "tensorboard").iterdir())
    assert json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])["step"] == 1
    assert MetricsLogger(tmp_path / "off", enabled=False, total_steps=1, start_step=0).close() is None


def test_load_shared_weights_interpolates_bias_tables_of_another_window():
    """A coarse model at 64 px shrinks its last stage's window to 2 (a 3x3 table); the fine model keeps 4 (7x7)."""
    from fiber_fast.models.checkpoint import resize_relative_position_table

    model = nn.ParameterDict({"relative_position_bias_table": nn.Parameter(torch.zeros(49, 4))})
    small = torch.randn(9, 4)
    report = load_shared_weights(model, {"relative_position_bias_table": small})
    assert report["resized"] == ["relative_position_bias_table"] and report["mismatched"] == []
    assert torch.equal(model["relative_position_bias_table"].detach(), resize_relative_position_table(small, 49))
    assert model["relative_position_bias_table"].detach()[24].abs().sum() > 0  # the centre offset carries over
