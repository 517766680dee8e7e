"""OSCAR checkpoints: HF ``BertForPreTraining`` state dicts (``bert-base-uncased`` naming, also without the
``bert.`` prefix and with TF-converted ``gamma``/``beta``) load with ``source="bert"``, official-Oscar-named
ones with ``source="oscar"``; outputs equal after loading; ``save_checkpoint`` round trip with the family."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformers import BertForPreTraining

from fiber_fast.models import (
    FiberConfig,
    OscarConfig,
    build_fiber,
    build_oscar,
    load_checkpoint,
    load_pretrained,
    read_checkpoint_config,
    save_checkpoint,
)
from fiber_fast.models.oscar import bert_config

from .test_oscar import oscar_inputs, randomise, tiny

REGION_KEYS = ["bert.img_embedding.weight", "bert.img_embedding.bias", "bert.LayerNorm.weight", "bert.LayerNorm.bias"]


@pytest.fixture(scope="module")
def hf_bert() -> BertForPreTraining:
    """HF BertForPreTraining of the tiny text config with non-trivial weights."""
    torch.manual_seed(3)
    model = BertForPreTraining(bert_config(tiny(), "eager")).eval()
    randomise(model, seed=4)
    return model


def _text_only(model: torch.nn.Module, cfg: OscarConfig) -> tuple[torch.Tensor, ...]:
    ids, types, mask, features, region_mask = oscar_inputs(cfg, batch=3, tokens=8, regions=4)
    with torch.no_grad():
        out = model(ids, types, mask, features, torch.zeros_like(region_mask))
        return out.sequence[:, :8], model.mlm_head(out.sequence[:, :8]), model.relation_head(out.pooled)


def _hf_outputs(hf: BertForPreTraining, cfg: OscarConfig) -> tuple[torch.Tensor, ...]:
    ids, types, mask, _, _ = oscar_inputs(cfg, batch=3, tokens=8, regions=4)
    with torch.no_grad():
        out = hf(input_ids=ids, token_type_ids=types, attention_mask=mask, output_hidden_states=True)
    return out.hidden_states[-1], out.prediction_logits, out.seq_relationship_logits


def _assert_text_outputs_equal(got: tuple[torch.Tensor, ...], want: tuple[torch.Tensor, ...],
                               cfg: OscarConfig) -> None:
    real = oscar_inputs(cfg, batch=3, tokens=8, regions=4)[2].bool()
    for index, (a, b) in enumerate(zip(got, want, strict=True)):
        a, b = (a[real], b[real]) if index < 2 else (a, b)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("naming", ["hf", "no-prefix", "tf-gamma-beta"])
def test_bert_source_loads_bert_for_pretraining(hf_bert: BertForPreTraining, naming: str) -> None:
    cfg = tiny()
    state = hf_bert.state_dict()
    if naming == "no-prefix":  # a BertModel state dict (no heads) plus the heads under cls.
        state = {key.removeprefix("bert."): value for key, value in state.items()}
    elif naming == "tf-gamma-beta":  # the released bert-base-uncased files
        state = {key.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): value
                 for key, value in state.items()}
    for eager in (False, True):
        model = build_oscar(cfg, eager=eager).eval()
        report = load_pretrained(model, state, source="bert")
        assert report.unexpected == []
        assert sorted(report.missing) == sorted(REGION_KEYS)
        assert sorted(report.ignored) == ["cls.predictions.decoder.bias", "cls.predictions.decoder.weight"]
        assert model.mlm_head.decoder.weight is model.bert.embeddings.word_embeddings.weight
        _assert_text_outputs_equal(_text_only(model, cfg), _hf_outputs(hf_bert, cfg), cfg)


def _oscar_named(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's weights under the key names of Oscar's BertImgForPreTraining (``bert`` = BertImgModel
    with ``img_embedding`` and ``LayerNorm``, ``cls`` = BertPreTrainingHeads), written out by name."""
    state = model.state_dict()
    heads = {"cls.predictions.bias": "mlm_head.bias",
             "cls.predictions.transform.dense.weight": "mlm_head.transform.dense.weight",
             "cls.predictions.transform.dense.bias": "mlm_head.transform.dense.bias",
             "cls.predictions.transform.LayerNorm.weight": "mlm_head.transform.LayerNorm.weight",
             "cls.predictions.transform.LayerNorm.bias": "mlm_head.transform.LayerNorm.bias",
             "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
             "cls.seq_relationship.weight": "relation_head.weight", "cls.seq_relationship.bias": "relation_head.bias"}
    named = {key: state[source].clone() for key, source in heads.items()}
    named.update({key: value.clone() for key, value in state.items() if key.startswith("bert.")})
    assert {"bert.img_embedding.weight", "bert.LayerNorm.weight", "bert.encoder.layer.1.attention.self.query.weight",
            "bert.encoder.layer.0.output.LayerNorm.bias", "bert.pooler.dense.weight"} <= set(named)
    return named


def test_oscar_source_loads_oscar_names() -> None:
    cfg = tiny(relation_labels=3)
    source = build_oscar(cfg, eager=True).eval()
    randomise(source, seed=5)
    state = _oscar_named(source)
    inputs = oscar_inputs(cfg, batch=3, tokens=8, regions=4)
    for eager in (False, True):
        model = build_oscar(cfg, eager=eager).eval()
        report = load_pretrained(model, {**state, "classifier.weight": torch.zeros(2, 64)}, source="oscar")
        assert (report.missing, report.unexpected) == ([], ["classifier.weight"])
        with torch.no_grad():
            got, want = model(*inputs), source(*inputs)
            real = want.attention_mask.bool()
            torch.testing.assert_close(got.sequence[real], want.sequence[real], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(model.relation_head(got.pooled), source.relation_head(want.pooled),
                                       rtol=1e-5, atol=1e-5)
    # "bert" does not know the region embedding: those keys are unexpected there
    report = load_pretrained(build_oscar(cfg), state, source="bert")
    assert sorted(report.unexpected) == sorted(REGION_KEYS) and sorted(report.missing) == sorted(REGION_KEYS)


def test_mismatched_shapes_and_sources_raise() -> None:
    state = _oscar_named(build_oscar(tiny(relation_labels=3)))
    with pytest.raises(ValueError, match=r"cls\.seq_relationship\.weight .*relation_head\.weight"):
        load_pretrained(build_oscar(tiny()), state, source="oscar")
    with pytest.raises(ValueError, match="source must be one of \\('bert', 'oscar'\\)"):
        load_pretrained(build_oscar(tiny()), state, source="hf")
    with torch.device("meta"), pytest.raises(ValueError, match="source must be one of \\('timm', 'hf', 'fiber'\\)"):
        load_pretrained(build_fiber(FiberConfig.preset("tiny")), state, source="bert")


def test_save_load_checkpoint_round_trip(tmp_path: Path) -> None:
    cfg = tiny(relation_labels=3, region_layer_norm=False)
    fused = build_oscar(cfg)
    randomise(fused, seed=6)
    path = tmp_path / "oscar.safetensors"
    save_checkpoint(fused, path)
    assert read_checkpoint_config(path) == cfg
    eager = build_oscar(read_checkpoint_config(path), eager=True)
    load_checkpoint(eager, path)
    for key, value in fused.state_dict().items():
        assert torch.equal(value, eager.state_dict()[key]), key
    assert eager.mlm_head.decoder.weight is eager.bert.embeddings.word_embeddings.weight
    inputs = oscar_inputs(cfg)
    with torch.no_grad():
        torch.testing.assert_close(eager(*inputs).pooled, fused(*inputs).pooled, rtol=1e-5, atol=1e-5)
    with torch.device("meta"), pytest.raises(RuntimeError, match="class OscarConfig, the model's is FiberConfig"):
        load_checkpoint(build_fiber(FiberConfig.preset("tiny")), path)
    with pytest.raises(RuntimeError, match="does not match the model"):
        load_checkpoint(build_oscar(tiny()), path)  # relation 2 vs 3 and the region LayerNorm


def test_file_without_family_reads_as_fiber(tmp_path: Path) -> None:
    """Files written before the family was stored hold a FiberConfig."""
    cfg = FiberConfig.preset("tiny")
    path = tmp_path / "fiber.safetensors"
    save_file({"x": torch.zeros(1)}, str(path), metadata={"fiber_config": json.dumps(cfg.to_dict())})
    assert read_checkpoint_config(path) == cfg
    with pytest.raises(RuntimeError, match="config class FiberConfig, the model's is OscarConfig"):
        load_checkpoint(build_oscar(tiny()), path)
