"""FiberConfig checks that OscarConfig shares (text encoder, presets, file formats): same messages in both families."""

from pathlib import Path

import pytest

from fiber_fast.models import FiberConfig, OscarConfig


@pytest.mark.parametrize("family", [FiberConfig, OscarConfig])
@pytest.mark.parametrize("text, match", [
    ({"hidden_size": 63}, "text.hidden_size 63 not divisible by text.num_attention_heads 2"),
    ({"pad_token_id": -1}, r"text.pad_token_id -1 outside the vocabulary \(\d+\)"),
    ({"vocab_size": 1, "pad_token_id": 1}, r"text.pad_token_id 1 outside the vocabulary \(1\)"),
])
def test_text_encoder_checks(family: type, text: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        family.preset("tiny", text=text)


@pytest.mark.parametrize("family, names", [(FiberConfig, "'base-coarse', 'base-fine', 'tiny'"),
                                           (OscarConfig, "'base', 'tiny'")])
def test_unknown_preset(family: type, names: str) -> None:
    with pytest.raises(ValueError, match=rf"unknown preset 'huge'; choose one of \[{names}\]"):
        family.preset("huge")


def test_presets_are_not_changed_by_overrides() -> None:
    first = FiberConfig.preset("tiny", fusion_layers=2, stage="fine")
    assert (first.fusion_layers, first.detection_head) == (2, True)
    again = FiberConfig.preset("tiny")
    assert (again.fusion_layers, again.stage, again.detection_head) == (3, "coarse", False)


def test_file_formats_by_suffix(tmp_path: Path) -> None:
    cfg = FiberConfig.preset("tiny", max_text_len=20)
    for name in ("cfg.json", "cfg.yaml", "cfg.yml"):
        cfg.save(tmp_path / name)
        assert FiberConfig.load(tmp_path / name) == cfg
    assert (tmp_path / "cfg.json").read_text().startswith("{\n  \"image\": {")
    assert (tmp_path / "cfg.yml").read_text().startswith("image:\n  img_size: 64\n")
    (tmp_path / "cfg.txt").write_text("{}")
    for call in (lambda: cfg.save(tmp_path / "cfg.toml"), lambda: FiberConfig.load(tmp_path / "cfg.txt")):
        with pytest.raises(ValueError, match=r"path must end in .json, .yaml or .yml, got .*cfg\.(toml|txt)"):
            call()
    assert not (tmp_path / "cfg.toml").exists()
