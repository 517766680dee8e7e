"""Retrieval Recall@K on hand-computed similarity matrices, blocked vs unblocked, and the fusion re-rank."""

import itertools
import math

import pytest
import torch

from fiber_fast.eval import retrieval

# 3 images, 5 texts; texts 0, 1 describe image 0, text 2 image 1, texts 3, 4 image 2.
SIMS = torch.tensor([[0.9, 0.1, 0.8, 0.2, 0.3],
                     [0.7, 0.6, 0.5, 0.9, 0.8],
                     [0.5, 0.5, 0.9, 0.4, 0.6]])
TEXT_IMAGE = torch.tensor([0, 0, 1, 2, 2])


def embeds_for(sims: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Image and text embeddings whose dot products are exactly ``sims`` (N_img, N_txt)."""
    return sims.clone(), torch.eye(sims.shape[1])


def test_hand_computed_recalls_with_several_texts_per_image():
    # i2t: image 0 ranks texts 0,2,4,3,1 (first own text at 1); image 1: 3,4,0,1,2 (own text 2 at 5);
    # image 2: 2,4,0,1,3 (own text 4 at 2).  t2i: text 0 -> image 0 at 1; text 1: 1,2,0 -> 3;
    # text 2: 2,0,1 -> 3; text 3: 1,2,0 -> 2; text 4: 1,2,0 -> 2.
    image_embeds, text_embeds = embeds_for(SIMS)
    got = retrieval.retrieval_recall(image_embeds, text_embeds, TEXT_IMAGE, ks=(1, 2, 3, 5))
    assert got == pytest.approx({"i2t_r1": 1 / 3, "i2t_r2": 2 / 3, "i2t_r3": 2 / 3, "i2t_r5": 1.0,
                                 "t2i_r1": 1 / 5, "t2i_r2": 3 / 5, "t2i_r3": 1.0, "t2i_r5": 1.0})


def test_ties_go_to_the_lower_index():
    # Both texts score 0.5 against both images: every ranking is (0, 1).
    image_embeds, text_embeds = embeds_for(torch.full((2, 2), 0.5))
    got = retrieval.retrieval_recall(image_embeds, text_embeds, torch.tensor([1, 0]), ks=(1, 2))
    # image 0 -> [text 0 (image 1), text 1 (image 0)]: hit at 2; image 1 -> [text 0]: hit at 1.
    # text 0 (image 1) -> [image 0, image 1]: hit at 2; text 1 (image 0) -> hit at 1.
    assert got == {"i2t_r1": 0.5, "i2t_r2": 1.0, "t2i_r1": 0.5, "t2i_r2": 1.0}
    _, indices = retrieval.block_topk(image_embeds, text_embeds, k=2, block_size=1)
    assert indices.tolist() == [[0, 1], [0, 1]]


def reference_first_hit(sims: torch.Tensor, relevant: torch.Tensor) -> torch.Tensor:
    """1-based position of the first relevant key per query by counting, not sorting.

    The position of key j is 1 + #(keys scoring more) + #(keys scoring the same with a lower index).
    """
    positions = []
    for row, rel in zip(sims.tolist(), relevant.tolist(), strict=True):
        best = math.inf
        for j, is_rel in enumerate(rel):
            if is_rel:
                pos = 1 + sum(s > row[j] or (s == row[j] and i < j) for i, s in enumerate(row))
                best = min(best, pos)
        positions.append(best)
    return torch.tensor(positions)


@pytest.mark.parametrize("block_size", [1, 7, 1024])
def test_blocked_matches_a_counting_reference(block_size):
    gen = torch.Generator().manual_seed(3)
    num_images, per_image = 23, 5
    # Integer-valued embeddings give many exact ties.
    image_embeds = torch.randint(-2, 3, (num_images, 4), generator=gen).float()
    text_embeds = torch.randint(-2, 3, (num_images * per_image - 3, 4), generator=gen).float()
    text_image = torch.arange(text_embeds.shape[0]) // per_image
    ks = (1, 5, 10)
    got = retrieval.retrieval_recall(image_embeds, text_embeds, text_image, ks=ks, block_size=block_size)
    sims = image_embeds @ text_embeds.t()
    i2t_pos = reference_first_hit(sims, text_image[None, :] == torch.arange(num_images)[:, None])
    t2i_pos = reference_first_hit(sims.t(), torch.arange(num_images)[None, :] == text_image[:, None])
    expected = {f"i2t_r{k}": float((i2t_pos <= k).float().mean()) for k in ks}
    expected.update({f"t2i_r{k}": float((t2i_pos <= k).float().mean()) for k in ks})
    assert got == pytest.approx(expected)
    assert 0 < got["t2i_r1"] < 1  # the case is not degenerate


def test_block_topk_equals_unblocked_and_keeps_only_k():
    gen = torch.Generator().manual_seed(1)
    queries, keys = torch.randn(50, 8, generator=gen), torch.randn(130, 8, generator=gen)
    full_scores, full_idx = retrieval.block_topk(queries, keys, k=12, block_size=1000)
    blocked_scores, blocked_idx = retrieval.block_topk(queries, keys, k=12, block_size=6)
    assert full_idx.shape == (50, 12)
    # The GEMM may round differently per block shape (last bits); the ranking is the same here.
    assert torch.equal(full_idx, blocked_idx)
    torch.testing.assert_close(full_scores, blocked_scores)
    reference = torch.sort(queries @ keys.t(), dim=1, descending=True)
    torch.testing.assert_close(full_scores, reference.values[:, :12])
    assert retrieval.block_topk(queries, keys[:3], k=12)[1].shape == (50, 3)


@pytest.mark.parametrize("num_keys", [4, 10, 11, 300])
def test_block_topk_ties_equal_a_stable_sort(num_keys):
    gen = torch.Generator().manual_seed(2)
    queries = torch.randint(0, 3, (64, 1), generator=gen).float()
    keys = torch.randint(-1, 2, (num_keys, 1), generator=gen).float()  # scores in {-2..2}: ties everywhere
    scores, indices = retrieval.block_topk(queries, keys, k=10, block_size=16)
    reference = torch.sort(queries @ keys.t(), dim=1, descending=True, stable=True)
    assert torch.equal(indices, reference.indices[:, :10]) and torch.equal(scores, reference.values[:, :10])


def test_rerank_with_an_oracle_fusion_score():
    # The fusion score knows the truth: 1 for a matching pair, 0 otherwise. After re-ranking the top k,
    # R@1 is the dual encoder's R@k for every query whose match is among its k candidates.
    image_embeds, text_embeds = embeds_for(SIMS)
    calls = []

    def oracle(image_rows, text_rows):
        calls.append(image_rows.numel())
        return (TEXT_IMAGE[text_rows] == image_rows).float()

    got = retrieval.reranked_recall(image_embeds, text_embeds, TEXT_IMAGE, oracle, rerank_k=2, ks=(1, 2, 3),
                                    pairs_per_call=4)
    dual = retrieval.retrieval_recall(image_embeds, text_embeds, TEXT_IMAGE, ks=(1, 2, 3))
    assert got["rerank_i2t_r1"] == pytest.approx(dual["i2t_r2"])
    assert got["rerank_t2i_r1"] == pytest.approx(dual["t2i_r2"])
    assert got["rerank_i2t_r3"] == pytest.approx(dual["i2t_r3"])  # beyond k the dual order stays
    assert sum(calls) == (3 + 5) * 2 and max(calls) <= 4


def test_rerank_of_a_shard_of_queries_uses_their_global_rows():
    image_embeds, text_embeds = embeds_for(SIMS)
    oracle = lambda image_rows, text_rows: (TEXT_IMAGE[text_rows] == image_rows).float()
    ranked = retrieval.retrieval_rankings(image_embeds, text_embeds, k=3)
    full = retrieval.rerank(ranked["t2i_scores"], ranked["t2i_indices"], oracle, 2, query_is_image=False)
    rows = torch.tensor([1, 3, 4])
    shard = retrieval.rerank(ranked["t2i_scores"][rows], ranked["t2i_indices"][rows], oracle, 2, query_is_image=False,
                             query_index=rows)
    assert torch.equal(shard, full[rows])
    assert not torch.equal(full, ranked["t2i_indices"])  # the re-rank changed something


def test_rerank_order_and_similarity_weight():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.1]])
    candidates = torch.tensor([[5, 6, 7, 8]])
    fusion = {5: 0.0, 6: 1.0, 7: 0.5}
    score_fn = lambda image_rows, text_rows: torch.tensor([fusion[int(t)] for t in text_rows])
    order = retrieval.rerank(scores, candidates, score_fn, rerank_k=3, query_is_image=True)
    assert order.tolist() == [[6, 7, 5, 8]]
    # Weight 100: the similarity dominates (90, 81, 70.5) and the dual order comes back.
    order = retrieval.rerank(scores, candidates, score_fn, rerank_k=3, query_is_image=True, similarity_weight=100.0)
    assert order.tolist() == [[5, 6, 7, 8]]


def test_chance_recall_matches_enumeration():
    # 2 images with 2 and 1 texts: average over every ranking of the 3 texts and of the 2 images.
    counts = [2, 1]
    text_image = [0, 0, 1]
    expected = {}
    for k in (1, 2):
        hits = [sum(any(text_image[t] == img for t in perm[:k]) for perm in itertools.permutations(range(3))) / 6
                for img in range(2)]
        expected[f"i2t_r{k}"] = sum(hits) / 2
        expected[f"t2i_r{k}"] = min(k, 2) / 2
    assert retrieval.chance_recall(2, counts, ks=(1, 2)) == pytest.approx(expected)
    assert expected["i2t_r1"] == pytest.approx(0.5) and expected["i2t_r2"] == pytest.approx(5 / 6)


def test_bad_input_raises():
    image_embeds, text_embeds = embeds_for(SIMS)
    with pytest.raises(ValueError, match="text_image_index"):
        retrieval.retrieval_recall(image_embeds, text_embeds, TEXT_IMAGE[:4])
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        retrieval.retrieval_recall(image_embeds, text_embeds, torch.tensor([0, 0, 1, 2, 3]))
    with pytest.raises(TypeError, match="int64"):
        retrieval.retrieval_recall(image_embeds, text_embeds, TEXT_IMAGE.int())
    with pytest.raises(TypeError, match="image_embeds"):
        retrieval.retrieval_recall(image_embeds[0], text_embeds, TEXT_IMAGE)
    with pytest.raises(ValueError, match="same E"):
        retrieval.block_topk(torch.zeros(2, 3), torch.zeros(2, 4), k=1)
