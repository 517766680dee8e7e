"""OscarTask on the tiny OSCAR model: its losses equal a hand computation (masked-token CE over the chosen word
and tag positions, relation CE with label 0 = matched), and the masking statistics counted over a batch
(words and tags masked at 15 % / 80-10-10, specials, padding and regions never)."""

import pytest
import torch
import torch.nn.functional as F

from fiber_fast.models import OscarConfig, build_oscar
from fiber_fast.train.objectives import mask_tokens, matched_probability, relation_loss
from fiber_fast.train.tasks import OscarTask

SPECIAL = (0, 1, 2, 3, 4)  # <s> <pad> </s> <unk> <mask> (the synthetic RoBERTa-style tokenizer)
MASK, PAD, VOCAB, REGION_DIM = 4, 1, 200, 14


def oscar_batch(batch=4, words=6, tags=4, regions=3, seed=7):
    """``<s> words </s></s> tags </s>`` (RoBERTa pair layout) with the last row padded, ``regions`` regions
    (the last one of row 0 padded) and relation labels alternating matched / polluted."""
    g = torch.Generator().manual_seed(seed)
    length = words + tags + 4
    ids = torch.randint(5, VOCAB, (batch, length), generator=g)
    ids[:, 0], ids[:, words + 1], ids[:, words + 2], ids[:, -1] = 0, 2, 2, 2
    types = torch.zeros_like(ids)
    types[:, words + 2:] = 1
    mask = torch.ones_like(ids)
    ids[-1, -2], ids[-1, -1], mask[-1, -1], types[-1, -1] = 2, PAD, 0, 0  # one tag fewer in the last row
    region_mask = torch.ones(batch, regions, dtype=torch.bool)
    region_mask[0, -1] = False
    return {"input_ids": ids, "token_type_ids": types, "attention_mask": mask,
            "region_features": torch.randn(batch, regions, REGION_DIM, generator=g), "region_mask": region_mask,
            "relation_labels": torch.arange(batch) % 2, "image_ids": torch.arange(batch)}


def tiny_oscar():
    torch.manual_seed(0)
    cfg = OscarConfig.preset("tiny", region_dim=REGION_DIM, text={"vocab_size": VOCAB, "pad_token_id": PAD})
    return build_oscar(cfg, eager=True)


def make_task(model, **kwargs):
    return OscarTask(model, mask_token_id=MASK, special_ids=SPECIAL, vocab_size=VOCAB, **kwargs)


def test_losses_equal_a_hand_computation():
    model, batch = tiny_oscar(), oscar_batch(batch=6)
    torch.manual_seed(5)
    losses = make_task(model, weights={"mlm": 0.7, "relation": 2.0}, mlm_probability=0.3)(batch)

    torch.manual_seed(5)  # the same masking draw
    masked, labels = mask_tokens(batch["input_ids"], batch["attention_mask"], mask_token_id=MASK, vocab_size=VOCAB,
                                 special_ids=SPECIAL, probability=0.3)
    assert (labels != -100).sum() >= 4
    with torch.no_grad():
        out = model(masked, batch["token_type_ids"], batch["attention_mask"], batch["region_features"],
                    batch["region_mask"])
        logits = model.mlm_head(out.sequence[:, :masked.shape[1]])  # text positions only: (B, T, V)
        rows, cols = (labels != -100).nonzero(as_tuple=True)
        mlm = -torch.log_softmax(logits[rows, cols], -1).gather(1, labels[rows, cols][:, None]).mean()
        relation_logits = model.relation_head(out.pooled)
        probs = torch.softmax(relation_logits, -1)
        relation = -torch.log(probs[torch.arange(6), batch["relation_labels"]]).mean()
    assert losses["mlm"].item() == pytest.approx(mlm.item(), rel=1e-5)
    assert losses["relation"].item() == pytest.approx(relation.item(), rel=1e-5)
    assert losses["loss"].item() == pytest.approx(0.7 * mlm.item() + 2.0 * relation.item(), rel=1e-5)
    losses["loss"].backward()
    assert model.bert.img_embedding.weight.grad.abs().sum() > 0 and model.relation_head.weight.grad.abs().sum() > 0


def test_relation_loss_is_cross_entropy_with_label_zero_matched():
    logits = torch.tensor([[2.0, -1.0], [0.5, 0.5], [-3.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    hand = -(torch.log(torch.tensor([1 / (1 + torch.e ** -3), 0.5, 1 / (1 + torch.e ** -4)]))).mean()
    assert relation_loss(logits, labels).item() == pytest.approx(hand.item(), rel=1e-6)
    # the matched probability (the retrieval score) is softmax index 0: high for a confident "matched" row
    assert matched_probability(logits).tolist() == pytest.approx([1 / (1 + torch.e ** -3), 0.5, 1 / (1 + torch.e ** 4)])
    three_way = torch.tensor([[1.0, 2.0, 3.0]])
    assert relation_loss(three_way, torch.tensor([2])).item() == pytest.approx(
        F.cross_entropy(three_way, torch.tensor([2])).item())


@pytest.mark.parametrize("logits, labels, match", [
    (torch.zeros(3), torch.zeros(3, dtype=torch.long), "logits must be a floating"),
    (torch.zeros(2, 2), torch.zeros(2), "labels must be"),
    (torch.zeros(2, 2), torch.tensor([0, 2]), r"labels must lie in \[0, 2\)"),
])
def test_relation_loss_rejects_bad_input(logits, labels, match):
    with pytest.raises(ValueError, match=match):
        relation_loss(logits, labels)


def test_batch_without_oscar_keys_is_rejected():
    batch = oscar_batch()
    batch.pop("region_mask")
    with pytest.raises(ValueError, match="missing \\['region_mask'\\]"):
        make_task(tiny_oscar())(batch)


def test_masking_statistics_over_a_batch():
    """Counted over 256 pairs of 12 words + 8 tags: the model sees [MASK] on ~12 % of words and of tags
    (80 % of the 15 % chosen), never on specials or padding; the MLM head predicts ~15 % of the words and
    tags and nothing else (no region position); regions reach the model unchanged."""
    model, batch = tiny_oscar(), oscar_batch(batch=256, words=12, tags=8, regions=2, seed=1)
    seen = {}
    model.register_forward_pre_hook(lambda module, args: seen.update(ids=args[0].clone(), regions=args[3].clone()))
    model.mlm_head.register_forward_pre_hook(lambda module, args: seen.update(rows=args[0].shape[1]))
    with torch.no_grad():
        make_task(model)(batch)
    ids, types = batch["input_ids"], batch["token_type_ids"]
    special = torch.isin(ids, torch.tensor(SPECIAL))
    words, tags = ~special & (types == 0), ~special & (types == 1)
    masked = seen["ids"] == MASK
    n_words, n_tags = int(words.sum()), int(tags.sum())
    for part, n in ((words, n_words), (tags, n_tags)):  # binomial(n, 0.12): within 4 standard deviations
        count = int((masked & part).sum())
        assert abs(count - 0.12 * n) < 4 * (n * 0.12 * 0.88) ** 0.5, (count, n)
    assert not (seen["ids"] != ids)[special].any()  # specials and padding untouched
    eligible = n_words + n_tags
    assert abs(seen["rows"] - 0.15 * eligible) < 4 * (eligible * 0.15 * 0.85) ** 0.5
    changed = seen["ids"] != ids
    assert int(changed.sum()) <= seen["rows"]  # every changed token is a predicted one (10 % stay unchanged)
    assert torch.equal(seen["regions"], batch["region_features"])
