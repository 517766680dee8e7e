"""Run YAML schema, DeepSpeed config filling, parameter groups and the lr schedule."""

import json
import math

import pytest
import torch
import yaml
from torch import nn

from fiber_fast.train.config import config_from_dict, load_config
from fiber_fast.train.engine import deepspeed_config
from fiber_fast.train.optim import build_optimizer, lr_factor, lr_group, param_groups

COARSE_YAML = """
stage: coarse
seed: 3
max_steps: 50
model: {preset: tiny, overrides: {fusion_layers: 2}}
data: {format: captions, image_size: 64, num_workers: 0, on_error: skip}
optim: {lr: 2.0e-4, head_lr_mult: 5.0, warmup_steps: 5, schedule: cosine}
batch: {micro_batch: 4, grad_accum: 2, clip_grad: 0.5}
checkpoint: {save_every: 10, keep_last: 3}
objectives: {itc: 1.0, itm: 0.5, queue_size: 64}
"""

FINE_YAML = """
stage: fine
model: {preset: tiny}
data: {min_sizes: [96, 128], max_size: 160}
optim: {lr: 1.0e-4, language_lr: 1.0e-5}
objectives: {giou_weight: 2.0, topk: 9}
"""


def test_coarse_yaml_fills_defaults(tmp_path):
    path = tmp_path / "coarse.yaml"
    path.write_text(COARSE_YAML)
    cfg = load_config(path, "coarse")
    assert cfg.seed == 3 and cfg.max_steps == 50 and cfg.batch.grad_accum == 2
    assert cfg.objectives == {"itc": 1.0, "itm": 0.5, "mlm": 1.0, "mlm_probability": 0.15, "queue_size": 64}
    assert cfg.data["format"] == "captions" and cfg.data["on_error"] == "skip"
    assert cfg.model.overrides == {"fusion_layers": 2} and cfg.optim.schedule == "cosine"


def test_fine_yaml_defaults_and_format():
    cfg = config_from_dict(yaml.safe_load(FINE_YAML), "fine")
    assert cfg.data["format"] == "grounding" and cfg.objectives["focal_alpha"] == 0.25
    assert cfg.optim.language_lr == 1e-5


@pytest.mark.parametrize("raw, match", [
    ({"stage": "fine"}, "--stage coarse"),
    ({"stage": "coarse", "optimizer": {}}, "unknown top-level keys"),
    ({"stage": "coarse", "optim": {"learning_rate": 1}}, "unknown keys"),
    ({"stage": "coarse", "objectives": {"giou": 1.0}}, "objectives for stage coarse"),
    ({"stage": "coarse", "data": {"format": "grounding"}}, "data.format"),
    ({"stage": "coarse", "data": {"batch_size": 4}}, "batch.micro_batch"),
    ({"stage": "coarse", "precision": "fp8"}, "precision"),
    ({"stage": "coarse", "optim": {"schedule": "step"}}, "schedule"),
])
def test_bad_configs_raise_naming_the_key(raw, match):
    with pytest.raises(ValueError, match=match):
        config_from_dict(raw, "coarse")


def test_deepspeed_config_json_wins_and_auto_fills(tmp_path):
    cfg = config_from_dict(yaml.safe_load(COARSE_YAML), "coarse")
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 2}, "gradient_clipping": 1.0,
                                "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto"}))
    ds = deepspeed_config(cfg, path)
    assert ds["gradient_clipping"] == 1.0 and ds["train_micro_batch_size_per_gpu"] == 4
    assert ds["gradient_accumulation_steps"] == 2 and ds["zero_allow_untested_optimizer"] is True
    assert "train_batch_size" not in ds
    built = deepspeed_config(cfg, None)
    assert built["zero_optimization"] == {"stage": 0} and built["gradient_clipping"] == 0.5
    path.write_text(json.dumps({"optimizer": {"type": "Adam"}}))
    with pytest.raises(ValueError, match="optimizer"):
        deepspeed_config(cfg, path)


class StandIn(nn.Module):
    """Parameter names as the FiberModel lays them out (backbones, fusion branches, heads)."""

    def __init__(self):
        super().__init__()
        self.image = nn.ModuleDict({"blocks": nn.Linear(4, 4), "fusion": nn.Linear(4, 4)})
        self.text = nn.ModuleDict({"layer": nn.Linear(4, 4), "fusion": nn.Linear(4, 4), "norm": nn.LayerNorm(4)})
        self.itc_head = nn.Linear(4, 4)
        self.temp = nn.Parameter(torch.ones(1))


def test_param_groups_lr_multipliers_and_decay():
    cfg = config_from_dict(yaml.safe_load(COARSE_YAML), "coarse")
    model = StandIn()
    groups = {g["name"]: g for g in param_groups(model, "coarse", cfg.optim)}
    names = {id(p): n for n, p in model.named_parameters()}
    members = {k: sorted(names[id(p)] for p in g["params"]) for k, g in groups.items()}
    assert members["fusion_head"] == ["image.fusion.weight", "itc_head.weight", "text.fusion.weight"]
    assert groups["fusion_head"]["lr"] == pytest.approx(1e-3) and groups["backbone"]["lr"] == pytest.approx(2e-4)
    assert "temp" in members["backbone_no_decay"] and "text.norm.weight" in members["backbone_no_decay"]
    assert groups["backbone_no_decay"]["weight_decay"] == 0.0 and groups["backbone"]["weight_decay"] == 0.01
    assert sum(len(v) for v in members.values()) == len(list(model.parameters()))
    assert lr_group("text.layer.weight", "fine") == "language" and lr_group("image.fusion.weight", "fine") == "backbone"


def test_lr_schedule_warmup_then_decay():
    assert [lr_factor(s, 10, 4, "linear", 0.0) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(4, 10, 4, "linear", 0.0) == 1.0 and lr_factor(10, 10, 4, "linear", 0.0) == 0.0
    assert lr_factor(7, 10, 4, "cosine", 0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(9, 10, 0, "constant", 0.0) == 1.0
    cfg = config_from_dict({"stage": "fine", "optim": {"lr": 1.0, "warmup_steps": 2, "language_lr": 0.1}}, "fine")
    model = StandIn()
    optimizer, scheduler = build_optimizer(model, "fine", cfg.optim, total_steps=4)
    seen = []
    for _ in range(4):
        seen.append({g["name"]: g["lr"] for g in optimizer.param_groups})
        optimizer.step()
        scheduler.step()
    assert [s["backbone"] for s in seen] == pytest.approx([0.5, 1.0, 1.0, 0.5])
    assert [s["language"] for s in seen] == pytest.approx([0.05, 0.1, 0.1, 0.05])
    assert "factor" not in scheduler.state_dict() and scheduler.state_dict()["last_epoch"] == 4
