"""OSCAR retrieval: Recall@K from a pair-score matrix (hand-built cases and the dual-encoder recall as the
reference), every pair scored once into its cell whatever the batch size, the matched probability as score."""

from types import SimpleNamespace

import pytest
import torch

from fiber_fast.eval import oscar_retrieval
from fiber_fast.eval.oscar_retrieval import RetrievalSet, recall_from_scores, score_matrix
from fiber_fast.eval.retrieval import retrieval_recall


def test_recall_of_a_hand_built_score_matrix():
    # 3 images, 4 captions: captions 0, 1 show image 0, caption 2 image 1, caption 3 image 2.
    index = torch.tensor([0, 0, 1, 2])
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.2],    # image 0: best text 1 (its own) -> i2t hit at 1
                           [0.8, 0.3, 0.7, 0.1],    # image 1: texts 0, 2 -> own text 2 second: hit at 2
                           [0.6, 0.5, 0.4, 0.15]])  # image 2: own text 3 last (4th)
    found = recall_from_scores(scores, index, ks=(1, 2, 3))
    assert found["i2t_r1"] == pytest.approx(1 / 3)
    assert found["i2t_r2"] == pytest.approx(2 / 3) and found["i2t_r3"] == pytest.approx(2 / 3)
    # t2i per caption (columns): c0 best image 1 (own 0: 3rd), c1 image 0 (hit), c2 image 1 (hit),
    # c3 image 0 then its own 2
    assert found["t2i_r1"] == pytest.approx(2 / 4)
    assert found["t2i_r2"] == pytest.approx(3 / 4) and found["t2i_r3"] == pytest.approx(1.0)


def test_ties_go_to_the_lower_index():
    scores = torch.zeros(2, 2)  # every pair equal: image 0 ranks text 0 first, text 1 ranks image 0 first
    found = recall_from_scores(scores, torch.tensor([0, 1]), ks=(1,))
    assert found == {"i2t_r1": 0.5, "t2i_r1": 0.5}


def test_equals_the_dual_encoder_recall_on_dot_product_scores():
    g = torch.Generator().manual_seed(3)
    images, texts = torch.randn(20, 8, generator=g), torch.randn(45, 8, generator=g)
    index = torch.randint(20, (45,), generator=g)
    assert recall_from_scores(images @ texts.t(), index) == pytest.approx(retrieval_recall(images, texts, index))


@pytest.mark.parametrize("scores, index, match", [
    (torch.zeros(3), torch.tensor([0]), "scores must be"),
    (torch.tensor([[float("nan"), 0.0]]), torch.tensor([0, 0]), "NaN"),
    (torch.zeros(2, 3), torch.tensor([0, 1]), "text_image_index must have shape"),
])
def test_bad_input_raises(scores, index, match):
    with pytest.raises((ValueError, TypeError), match=match):
        recall_from_scores(scores, index)


class _PairScorer(torch.nn.Module):
    """Stands in for an OscarModel: the pooled state carries ``input_ids[:, :2]`` (image row, text row); the
    relation head makes the matched probability ``sigmoid(image - 0.1 * text)``."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def forward(self, input_ids, token_type_ids, attention_mask, region_features, region_mask):
        return SimpleNamespace(pooled=input_ids[:, :2].float() * self.scale)

    def relation_head(self, pooled):
        return torch.stack([pooled[:, 0] - 0.1 * pooled[:, 1], torch.zeros_like(pooled[:, 0])], dim=1)


def _collate(items):
    rows = torch.tensor([[item["image_id"] // 10, int(item["caption"])] for item in items])
    size = len(items)
    return {"input_ids": rows, "token_type_ids": torch.zeros_like(rows), "attention_mask": torch.ones_like(rows),
            "region_features": torch.stack([item["region_features"] for item in items]),
            "region_mask": torch.ones(size, 1, dtype=torch.bool)}


@pytest.mark.parametrize("pairs_per_batch", [1, 7, 1000])
def test_every_pair_scored_into_its_cell(pairs_per_batch):
    rset = RetrievalSet(image_ids=[0, 10, 20], tags=[["a"], ["b"], ["c"]],
                        region_features=[torch.zeros(1, 8)] * 3, region_scores=[torch.ones(1)] * 3,
                        captions=["0", "1", "2", "3", "4"],
                        text_image_index=torch.tensor([0, 1, 1, 2, 0]))
    scores = score_matrix(_PairScorer(), rset, _collate, pairs_per_batch)
    rows, cols = torch.meshgrid(torch.arange(3.0), torch.arange(5.0), indexing="ij")
    assert torch.allclose(scores, torch.sigmoid(rows - 0.1 * cols))


def test_pair_items_carry_the_image_tags_and_regions():
    features = [torch.full((2, 4), float(i)) for i in range(2)]
    rset = RetrievalSet(image_ids=[5, 9], tags=[["dog"], ["cat", "hat"]], region_features=features,
                        region_scores=[torch.ones(2), torch.tensor([0.5, 0.75])], captions=["x", "y"],
                        text_image_index=torch.tensor([1, 0]))
    item = rset.pair_items([1], [1])[0]
    assert item["tags"] == ["cat", "hat"] and item["region_features"] is features[1]
    assert item["region_scores"].tolist() == [0.5, 0.75]
    assert item["caption"] == "y" and item["image_id"] == 9 and item["caption_image_id"] == 5
    assert item["relation_label"] == oscar_retrieval.MATCHED == 0
