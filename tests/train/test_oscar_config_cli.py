"""OSCAR in the run YAML schema, the optimizer groups and ``fiber-fast train --model oscar``'s argument checks
(exit 2 with the reason, before anything is built)."""

import pytest
import yaml
from torch import nn

from fiber_fast.train import train_cli
from fiber_fast.train.config import OSCAR_OBJECTIVES, config_from_dict
from fiber_fast.train.optim import param_groups

OSCAR_YAML = """
seed: 1
max_steps: 30
model: {preset: tiny, overrides: {text: {vocab_size: 512}}}
data: {regions: regions, max_tags: 10}
optim: {lr: 1.0e-4, warmup_steps: 3}
objectives: {relation: 0.5}
"""


def test_oscar_yaml_defaults_stage_and_format():
    cfg = config_from_dict(yaml.safe_load(OSCAR_YAML), "oscar")
    assert cfg.stage == "oscar" and cfg.max_steps == 30
    assert cfg.objectives == {**OSCAR_OBJECTIVES, "relation": 0.5}
    assert cfg.data == {"format": "oscar", "regions": "regions", "max_tags": 10}  # data keys: build_loader's
    assert config_from_dict({"stage": "oscar"}, "oscar").objectives == {"mlm": 1.0, "relation": 1.0,
                                                                          "mlm_probability": 0.15}


@pytest.mark.parametrize("raw, stage, match", [
    ({"stage": "coarse"}, "oscar", "--model oscar but the config says stage: coarse"),
    ({"stage": "oscar"}, "coarse", "--stage coarse but the config says stage: oscar"),
    ({}, None, "stage must be one of"),
    ({"objectives": {"itc": 1.0}}, "oscar", "objectives for stage oscar has unknown keys"),
    ({"data": {"format": "captions"}}, "oscar", "data.format for stage oscar"),
    ({"model": {"preset": "tiny", "layers": 2}}, "oscar", "unknown keys"),
])
def test_bad_oscar_configs_raise_naming_the_key(raw, stage, match):
    with pytest.raises(ValueError, match=match):
        config_from_dict(raw, stage)


def test_oscar_trains_every_parameter_at_one_rate():
    model = nn.ModuleDict({"text": nn.Linear(4, 4), "region_embed": nn.Linear(6, 4), "relation_head": nn.Linear(4, 2),
                           "mlm_head": nn.LayerNorm(4)})
    cfg = config_from_dict({"optim": {"lr": 3e-4, "head_lr_mult": 5.0}}, "oscar")
    groups = {g["name"]: g for g in param_groups(model, "oscar", cfg.optim)}
    assert sorted(groups) == ["backbone", "backbone_no_decay"]
    assert all(g["lr"] == pytest.approx(3e-4) for g in groups.values())
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))


def _write(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("argv, message", [
    (["--model", "oscar", "--stage", "coarse"], "--stage coarse is a FIBER stage"),
    (["--model", "oscar", "--init", "RUN"], "--init loads FIBER coarse weights"),
    ([], "--model fiber needs --stage"),
    (["--model", "oscar", "--max-steps", "0"], "--max-steps must be positive"),
])
def test_train_cli_rejects_bad_combinations(tmp_path, capsys, argv, message):
    config = _write(tmp_path, OSCAR_YAML)
    assert train_cli.main([*argv, "--config", config, "--out", str(tmp_path / "run")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("model, stage, text, message", [
    ("oscar", None, "stage: fine\n", "--model oscar but the config says stage: fine"),
    ("fiber", "coarse", "stage: oscar\n", "--stage coarse but the config says stage: oscar"),
])
def test_train_cli_rejects_a_config_of_the_other_model(tmp_path, capsys, model, stage, text, message):
    argv = ["--model", model, "--config", _write(tmp_path, text), "--out", str(tmp_path / "run")]
    assert train_cli.main(argv + (["--stage", stage] if stage else [])) == 2
    assert message in capsys.readouterr().err

