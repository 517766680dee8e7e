"""OSCAR bad inputs raise TypeError/ValueError naming the argument and the expected shape/dtype; OscarConfig
presets, validation and the to_dict/from_dict/save/load round trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fiber_fast.models import BertTextConfig, OscarConfig, OscarModel, build_oscar

from .test_oscar import oscar_inputs, tiny


@pytest.fixture(scope="module")
def model() -> OscarModel:
    return build_oscar(tiny())


def _call(model: OscarModel, **changes: object) -> None:
    names = ("input_ids", "token_type_ids", "attention_mask", "region_features", "region_mask")
    args = dict(zip(names, oscar_inputs(model.config, batch=2, tokens=6, regions=3), strict=True))
    model(**{**args, **changes})


@pytest.mark.parametrize("change, error, match", [
    ({"input_ids": [[1, 2]]}, TypeError, r"input_ids must be a torch.Tensor \(B, T\) int64"),
    ({"input_ids": torch.ones(2, 6, dtype=torch.int32)}, TypeError, r"input_ids must be int64"),
    ({"input_ids": torch.ones(12, dtype=torch.long)}, ValueError, r"input_ids must have shape \(B, T\)"),
    ({"token_type_ids": torch.zeros(2, 5, dtype=torch.long)}, ValueError,
     r"token_type_ids must have shape \(B, T\) = \(2, 6\), got \(2, 5\)"),
    ({"token_type_ids": torch.zeros(2, 6)}, TypeError, r"token_type_ids must be int64"),
    ({"attention_mask": torch.ones(2, 6)}, TypeError, r"attention_mask must be int64, int32 or bool"),
    ({"attention_mask": torch.ones(2, 7, dtype=torch.long)}, ValueError, r"attention_mask must have shape \(B, T\)"),
    ({"region_features": torch.zeros(2, 3, 2054)}, ValueError,
     r"region_features must have shape \(B, R, region_dim = 20\), got \(2, 3, 2054\)"),
    ({"region_features": torch.zeros(2, 3, 20, dtype=torch.long)}, TypeError, r"region_features must be floating"),
    ({"region_features": torch.zeros(3, 3, 20)}, ValueError,
     r"region_features and input_ids must have the same batch size B, got 3 and 2"),
    ({"region_mask": torch.ones(2, 3, dtype=torch.long)}, TypeError, r"region_mask must be bool \(B, R\)"),
    ({"region_mask": torch.ones(2, 4, dtype=torch.bool)}, ValueError,
     r"region_mask must have shape \(B, R\) = \(2, 3\), got \(2, 4\)"),
    ({"region_mask": torch.ones(2, 3, dtype=torch.bool, device="meta")}, ValueError,
     r"region_mask must be on input_ids' device cpu"),
])
def test_bad_inputs(model: OscarModel, change: dict[str, object], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        _call(model, **change)


def test_too_many_tokens(model: OscarModel) -> None:
    cfg = model.config
    ids, types, mask, features, region_mask = oscar_inputs(cfg, batch=1, tokens=65, regions=2)
    with pytest.raises(ValueError, match=r"input_ids has 65 tokens, more than the position table takes "
                                         r"\(text.max_position_embeddings = 64\)"):
        model(ids, types, mask, features, region_mask)
    model(ids[:, :64], types[:, :64], mask[:, :64], features, region_mask)  # 64 fit; regions need no positions


def test_build_rejects_other_configs() -> None:
    with pytest.raises(TypeError, match="cfg must be an OscarConfig, got dict"):
        build_oscar({"region_dim": 2054})


@pytest.mark.parametrize("overrides, match", [
    ({"relation_labels": 4}, r"relation_labels must be one of \(2, 3\)"),
    ({"region_dim": 0}, "region_dim must be >= 1"),
    ({"text": {"hidden_size": 63}}, "text.hidden_size 63 not divisible by text.num_attention_heads 2"),
    ({"text": {"pad_token_id": 512}}, "text.pad_token_id 512 outside the vocabulary"),
    ({"max_text_len": 65}, r"max_text_len must be in \[1, text.max_position_embeddings = 64\]"),
    ({"backend": "cudnn"}, "backend must be one of"),
    ({"depth": 3}, r"unknown OscarConfig fields \['depth'\]"),
    ({"text": {"hidden": 3}}, r"unknown OscarConfig.text fields \['hidden'\]"),
])
def test_config_validation(overrides: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        OscarConfig.preset("tiny", **overrides)


def test_config_presets_and_round_trip(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"unknown preset 'large'; choose one of \['base', 'tiny'\]"):
        OscarConfig.preset("large")
    assert OscarConfig.preset("base") == OscarConfig(text=BertTextConfig())
    cfg = OscarConfig.preset("tiny", relation_labels=3, text={"num_hidden_layers": 3})
    assert (cfg.text.num_hidden_layers, cfg.text.hidden_size, cfg.region_dim, cfg.relation_labels) == (3, 64, 2054, 3)
    assert OscarConfig.from_dict(cfg.to_dict()) == cfg
    for name in ("oscar.yaml", "oscar.json"):
        cfg.save(tmp_path / name)
        assert OscarConfig.load(tmp_path / name) == cfg
    with pytest.raises(ValueError, match="path must end in .json, .yaml or .yml"):
        cfg.save(tmp_path / "oscar.txt")
