"""OSCAR: the fused model equals the eager (SDPA) one in outputs and every parameter gradient (flash-attention
rule against an fp64 eager run), with every region masked out the text positions equal HF's ``BertModel``,
heads have their shapes and tying, and the base preset is bert-base-uncased's size."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import BertForPreTraining, BertModel

from fiber_fast.models import OscarConfig, OscarModel, build_oscar
from fiber_fast.models.oscar import bert_config

from ._helpers import assert_all_close_to_fp64

REGION_DIM = 20


def tiny(**overrides: object) -> OscarConfig:
    return OscarConfig.preset("tiny", region_dim=REGION_DIM, **overrides)


def oscar_inputs(cfg: OscarConfig, batch: int = 3, tokens: int = 9, regions: int = 5, seed: int = 0
                 ) -> tuple[torch.Tensor, ...]:
    """``(input_ids, token_type_ids, attention_mask, region_features, region_mask)`` with ragged masks: row b
    keeps ``tokens - 2b`` text tokens (>= 2) and ``regions - 2b`` regions (row 0 all, the last row possibly none);
    the second half of the real text has token type 1 (the tags)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, cfg.text.vocab_size, (batch, tokens), generator=generator)
    types = torch.zeros(batch, tokens, dtype=torch.long)
    mask = torch.ones(batch, tokens, dtype=torch.long)
    region_mask = torch.ones(batch, regions, dtype=torch.bool)
    for row in range(batch):
        keep = max(tokens - 2 * row, 2)
        mask[row, keep:] = 0
        ids[row, keep:] = cfg.text.pad_token_id
        types[row, keep // 2:keep] = 1
        region_mask[row, max(regions - 2 * row, 0):] = False
    features = torch.randn(batch, regions, cfg.region_dim, generator=generator)
    return ids, types, mask, features, region_mask


def randomise(model: torch.nn.Module, seed: int = 1) -> None:
    """Non-trivial LayerNorm and bias values (the init leaves them at 1 / 0, which would hide mistakes)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 1:
                param.add_(0.1 * torch.randn(param.shape, generator=generator))


def run(model: OscarModel, inputs: tuple[torch.Tensor, ...], seed: int = 2) -> dict[str, torch.Tensor]:
    """Outputs and head logits of one pass, and every parameter gradient of a random linear loss over them.
    Padded positions are left out of the loss (their values are unspecified, only finite)."""
    ids, types, mask, features, region_mask = inputs
    dtype = next(model.parameters()).dtype
    model.zero_grad(set_to_none=True)
    out = model(ids, types, mask, features.to(dtype), region_mask)
    real = out.attention_mask.bool()
    results = {"sequence": out.sequence[real], "pooled": out.pooled, "mlm": model.mlm_head(out.sequence)[real],
               "relation": model.relation_head(out.pooled)}
    generator = torch.Generator().manual_seed(seed)
    loss = sum((value * torch.randn(value.shape, generator=generator).to(dtype)).sum() for value in results.values())
    loss.backward()
    grads = {f"grad {name}": param.grad for name, param in model.named_parameters() if param.grad is not None}
    assert all(torch.isfinite(value).all() for value in out.sequence), "padded rows must stay finite"
    return {**{name: value.detach() for name, value in results.items()}, **grads}


def assert_fused_matches_eager(cfg: OscarConfig, **input_args: object) -> int:
    """Fused fp32 vs eager fp64 within 3x the eager fp32 error + 1e-5 (scaled by max|ref| >= 1), for the
    outputs and all gradients; returns how many tensors were compared."""
    fused = build_oscar(cfg)
    randomise(fused)
    eager = build_oscar(cfg, eager=True)
    eager.load_state_dict(fused.state_dict())
    eager64 = copy.deepcopy(eager).double()
    inputs = oscar_inputs(cfg, **input_args)
    got, same_dtype, reference = run(fused, inputs), run(eager, inputs), run(eager64, inputs)
    assert len(got) == 4 + len(list(fused.parameters()))  # every parameter receives a gradient
    worst, worst_eager = assert_all_close_to_fp64(got, same_dtype, reference)
    print(f"backend={cfg.backend} {len(got)} tensors: max |fused fp32 - eager fp64| = {worst:.2e}, "
          f"max |eager fp32 - eager fp64| = {worst_eager:.2e}")
    return len(got)


def test_forward_shapes_and_heads() -> None:
    cfg = tiny()
    model = build_oscar(cfg)
    ids, types, mask, features, region_mask = oscar_inputs(cfg, batch=3, tokens=9, regions=5)
    out = model(ids, types, mask, features, region_mask)
    assert out.sequence.shape == (3, 14, 64) and out.pooled.shape == (3, 64)
    assert torch.equal(out.attention_mask, torch.cat([mask, region_mask.long()], dim=1))
    assert model.mlm_head(out.sequence).shape == (3, 14, 512)
    assert model.relation_head(out.pooled).shape == (3, 2)
    assert build_oscar(tiny(relation_labels=3)).relation_head.out_features == 3
    # decoder tied to the word embeddings, its bias to the head's output bias (Oscar's cls.predictions)
    assert model.mlm_head.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert model.mlm_head.decoder.bias is model.mlm_head.bias
    assert set(model.state_dict()) == set(build_oscar(cfg, eager=True).state_dict())
    assert (model.bert.LayerNorm is None) == (not cfg.region_layer_norm)
    assert build_oscar(tiny(region_layer_norm=False)).bert.LayerNorm is None


def test_regions_change_text_and_region_mask_hides_them() -> None:
    """Region tokens are attended to; a masked region's features cannot reach any real position."""
    cfg = tiny()
    model = build_oscar(cfg).eval()
    ids, types, mask, features, region_mask = oscar_inputs(cfg, batch=3, tokens=9, regions=5)
    with torch.no_grad():
        base = model(ids, types, mask, features, region_mask)
        moved = features.clone()
        moved[0, 0] += 1.0  # a real region of row 0
        moved[1, 4] += 1.0  # a masked region of row 1
        changed = model(ids, types, mask, moved, region_mask)
    real = base.attention_mask.bool()
    assert not torch.allclose(base.sequence[0, :9], changed.sequence[0, :9])
    torch.testing.assert_close(changed.sequence[1][real[1]], base.sequence[1][real[1]], rtol=0, atol=0)


def test_fused_matches_eager_ragged() -> None:
    compared = assert_fused_matches_eager(tiny(), batch=3, tokens=9, regions=5)
    assert compared > 40


def test_fused_matches_eager_no_regions_and_one_token() -> None:
    """R = 0 (text only) and a one-token text with regions."""
    assert_fused_matches_eager(tiny(), batch=2, tokens=6, regions=0)
    assert_fused_matches_eager(tiny(), batch=1, tokens=1, regions=3)


def test_triton_interpreter_forward_and_gradients() -> None:
    """The Triton cross-attention kernel (TRITON_INTERPRET=1 on CPU) inside the whole model."""
    assert_fused_matches_eager(tiny(backend="triton"), batch=2, tokens=5, regions=3)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["auto", "triton"])
def test_fused_matches_eager_wider(backend: str) -> None:
    """Head dim 64 (BERT's), 4 heads, 3 layers, Oscar's 2054-d regions, longer ragged rows."""
    cfg = OscarConfig.preset("tiny", backend=backend, text={"hidden_size": 256, "num_attention_heads": 4,
                                                            "num_hidden_layers": 3, "intermediate_size": 512})
    assert_fused_matches_eager(cfg, batch=4, tokens=20, regions=12)


@pytest.mark.parametrize("eager", [False, True])
def test_all_regions_masked_equals_hf_bert(eager: bool) -> None:
    """Text positions and pooled output equal HF BertModel with the same weights when no region is real."""
    cfg = tiny()
    model = build_oscar(cfg, eager=eager).eval()
    randomise(model)
    bert = BertModel(bert_config(cfg, "eager")).eval()
    state = {key.removeprefix("bert."): value for key, value in model.state_dict().items()
             if key.startswith("bert.") and not key.startswith(("bert.img_embedding.", "bert.LayerNorm."))}
    bert.load_state_dict(state, strict=True)
    ids, types, mask, features, region_mask = oscar_inputs(cfg, batch=3, tokens=9, regions=4)
    with torch.no_grad():
        out = model(ids, types, mask, features, torch.zeros_like(region_mask))
        want = bert(input_ids=ids, token_type_ids=types, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(out.sequence[:, :9][real], want.last_hidden_state[real], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.pooled, want.pooler_output, rtol=1e-5, atol=1e-5)


def test_pretraining_heads_equal_hf_bert_for_pretraining() -> None:
    """mlm_head / relation_head compute HF BertForPreTraining's cls.predictions / cls.seq_relationship."""
    cfg = tiny()
    model = build_oscar(cfg, eager=True).eval()
    randomise(model)
    hf = BertForPreTraining(bert_config(cfg, "eager")).eval()
    with torch.no_grad():
        hidden = torch.randn(2, 5, 64)
        hf.cls.predictions.transform.load_state_dict(model.mlm_head.transform.state_dict())
        hf.cls.predictions.decoder.weight.copy_(model.mlm_head.decoder.weight)
        hf.cls.predictions.bias.copy_(model.mlm_head.bias)
        hf.cls.seq_relationship.load_state_dict(model.relation_head.state_dict())
        want_mlm, want_relation = hf.cls(hidden, hidden[:, 0])
        torch.testing.assert_close(model.mlm_head(hidden), want_mlm, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(model.relation_head(hidden[:, 0]), want_relation)


def test_sample_without_any_real_token_stays_finite() -> None:
    """A row whose text and regions are all padding gives finite outputs on both paths (never NaN)."""
    cfg = tiny()
    ids, types, mask, features, region_mask = oscar_inputs(cfg, batch=2, tokens=4, regions=3)
    mask[1] = 0
    region_mask[1] = False
    for eager in (False, True):
        out = build_oscar(cfg, eager=eager)(ids, types, mask, features, region_mask)
        assert torch.isfinite(out.sequence).all() and torch.isfinite(out.pooled).all()
        out.pooled.sum().backward()


def test_base_is_bert_base_uncased_size() -> None:
    cfg = OscarConfig.preset("base")
    text = cfg.text
    assert (text.hidden_size, text.num_hidden_layers, text.num_attention_heads, text.intermediate_size,
            text.vocab_size, text.max_position_embeddings, text.type_vocab_size) == (768, 12, 12, 3072, 30522, 512, 2)
    assert cfg.region_dim == 2054
    with torch.device("meta"), pytest.warns(UserWarning, match="no dropout on attention probabilities"):
        model = build_oscar(cfg)
        bert = BertForPreTraining(bert_config(cfg, "eager"))
    count = sum(p.numel() for p in model.parameters())
    region = 2054 * 768 + 768 + 2 * 768  # img_embedding + its LayerNorm
    assert count == sum(p.numel() for p in bert.parameters()) + region
