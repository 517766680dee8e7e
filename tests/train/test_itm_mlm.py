"""ITM hard-negative sampling (distribution, exclusions, pair layout) and BERT masking + MLM loss."""

import pytest
import torch
import torch.nn.functional as F

from fiber_fast.train.objectives import IGNORE_INDEX, itm_loss, mask_tokens, mlm_loss, sample_itm_pairs
from fiber_fast.train.objectives.itm import WEIGHT_FLOOR


def test_itm_pairs_layout_and_exclusions():
    sim = torch.randn(5, 5)
    ids = torch.tensor([0, 0, 1, 2, 3])
    for seed in range(50):
        pairs = sample_itm_pairs(sim, ids, generator=torch.Generator().manual_seed(seed))
        assert pairs.image_index.shape == pairs.text_index.shape == pairs.labels.shape == (15,)
        assert pairs.image_index[:5].tolist() == pairs.text_index[:5].tolist() == list(range(5))
        assert pairs.labels.tolist() == [1] * 5 + [0] * 10
        assert pairs.image_index[5:10].tolist() == list(range(5))   # each image with a negative text
        assert pairs.text_index[10:].tolist() == list(range(5))     # each text with a negative image
        negatives = ids[pairs.image_index[5:]] != ids[pairs.text_index[5:]]
        assert bool(negatives.all()), "a negative pair shows the same image"


def test_itm_sampling_follows_softmax_weights():
    """Empirical frequencies of 400 draws per row match softmax(sim) + 1e-5 renormalised over other images."""
    sim = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.5, 3.0, 0.0, 1.0], [0.0, 0.0, 1.0, 2.0], [1.0, -2.0, 0.0, 4.0]])
    ids = torch.arange(4)
    counts_text = torch.zeros(4, 4)
    counts_image = torch.zeros(4, 4)
    generator = torch.Generator().manual_seed(0)
    for _ in range(400):
        pairs = sample_itm_pairs(sim, ids, generator=generator)
        counts_text[torch.arange(4), pairs.text_index[4:8]] += 1
        counts_image[pairs.text_index[8:], pairs.image_index[8:]] += 1
    for counts, matrix in ((counts_text, sim), (counts_image, sim.t())):
        want = (F.softmax(matrix, 1) + WEIGHT_FLOOR) * (1 - torch.eye(4))
        want = want / want.sum(1, keepdim=True)
        assert torch.allclose(counts / 400, want, atol=0.08)
        assert counts.diagonal().sum() == 0


def test_itm_rows_without_candidate_are_dropped():
    ids = torch.tensor([4, 4, 4])  # one image, three captions: no negative exists
    pairs = sample_itm_pairs(torch.randn(3, 3), ids)
    assert pairs.labels.tolist() == [1, 1, 1]
    ids = torch.tensor([4, 4, 6])
    pairs = sample_itm_pairs(torch.randn(3, 3), ids)
    assert pairs.labels.tolist() == [1, 1, 1, 0, 0, 0, 0, 0, 0]


def test_itm_loss_is_cross_entropy():
    logits = torch.randn(6, 2)
    labels = torch.tensor([1, 1, 0, 0, 0, 1])
    want = -torch.stack([F.log_softmax(logits[i], 0)[labels[i]] for i in range(6)]).mean()
    assert torch.allclose(itm_loss(logits, labels), want)
    with pytest.raises(ValueError, match="sim_i2t"):
        sample_itm_pairs(torch.randn(3, 4), torch.arange(3))


SPECIAL = (0, 1, 2, 3)  # <s>, <pad>, </s>, <unk> of a RoBERTa-style tokenizer; <mask> = 4
MASK = 4


def _batch(rows=64, length=40, vocab=50):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, vocab, (rows, length), generator=g)
    mask = torch.ones_like(ids)
    lengths = torch.randint(5, length, (rows,), generator=g)
    for r, n in enumerate(lengths.tolist()):
        ids[r, 0], ids[r, n - 1] = 0, 2
        ids[r, n:] = 1
        mask[r, n:] = 0
    return ids, mask


def test_mask_tokens_statistics_and_exclusions():
    ids, mask = _batch(rows=400)
    special = SPECIAL + (MASK,)
    masked, labels = mask_tokens(ids, mask, mask_token_id=MASK, vocab_size=50, special_ids=special,
                                 generator=torch.Generator().manual_seed(0))
    chosen = labels != IGNORE_INDEX
    eligible = mask.bool() & (ids > 4)
    assert not bool((chosen & ~eligible).any()), "a special or padding token was chosen"
    assert bool((masked[~chosen] == ids[~chosen]).all())
    assert bool((labels[chosen] == ids[chosen]).all())
    rate = chosen.sum() / eligible.sum()
    assert abs(rate.item() - 0.15) < 0.01
    to_mask = (masked[chosen] == MASK).float().mean().item()
    kept = (masked[chosen] == ids[chosen]).float().mean().item()
    replaced = masked[chosen][(masked[chosen] != MASK) & (masked[chosen] != ids[chosen])]
    assert abs(to_mask - 0.8) < 0.02 and abs(kept - 0.1 - 1 / 45 * 0.1) < 0.02
    assert abs(replaced.numel() / chosen.sum().item() - 0.1 * 44 / 45) < 0.02
    assert bool((replaced > 4).all()), "a random replacement is a special token"


def test_mask_tokens_is_reproducible_with_a_generator():
    ids, mask = _batch()
    one = mask_tokens(ids, mask, mask_token_id=MASK, vocab_size=50, special_ids=SPECIAL,
                      generator=torch.Generator().manual_seed(3))
    two = mask_tokens(ids, mask, mask_token_id=MASK, vocab_size=50, special_ids=SPECIAL,
                      generator=torch.Generator().manual_seed(3))
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_mlm_loss_matches_manual_and_handles_no_masked_token():
    logits = torch.randn(2, 5, 7, requires_grad=True)
    labels = torch.full((2, 5), IGNORE_INDEX)
    labels[0, 1], labels[1, 3] = 4, 6
    want = -(F.log_softmax(logits[0, 1], 0)[4] + F.log_softmax(logits[1, 3], 0)[6]) / 2
    assert torch.allclose(mlm_loss(logits, labels), want)
    none = mlm_loss(logits, torch.full((2, 5), IGNORE_INDEX))
    none.backward()
    assert none.item() == 0.0 and logits.grad is not None
