"""Image-text retrieval metrics: Recall@K from dual-encoder embeddings, and fusion re-ranking of the top k.

Protocol (COCO / Flickr30k Karpathy test, as ALBEF, METER and FIBER report it): several captions per image.
Image-to-text (i2t): a query image is a hit at K when *any* of its captions is among the K best texts.
Text-to-image (t2i): a query caption is a hit at K when its image is among the K best images.

Rankings are by score, descending; ties go to the lower index (a stable order, so results do not depend on
the block size or the sort algorithm). The similarity matrix is never built whole: rows are scored in blocks
of ``block_size`` queries against all keys, ``(block_size, N_keys)`` at a time, and only the top k survive.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

DEFAULT_KS = (1, 5, 10)
ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _check_embeds(name: str, embeds: torch.Tensor) -> None:
    if not isinstance(embeds, torch.Tensor) or embeds.dim() != 2 or not embeds.is_floating_point():
        raise TypeError(f"{name} must be a floating (N, E) tensor, got "
                        f"{getattr(embeds, 'shape', type(embeds))} {getattr(embeds, 'dtype', '')}")
    if embeds.shape[0] == 0:
        raise ValueError(f"{name} must have at least one row, got shape {tuple(embeds.shape)}")
    if not bool(torch.isfinite(embeds).all()):
        raise ValueError(f"{name} holds NaN or infinite values")


def check_text_image_index(text_image_index: torch.Tensor, num_texts: int, num_images: int) -> None:
    """Raise unless ``text_image_index`` is an int64 ``(num_texts,)`` tensor of image rows in ``[0, num_images)``."""
    if not isinstance(text_image_index, torch.Tensor) or text_image_index.dtype != torch.int64:
        raise TypeError(f"text_image_index must be an int64 tensor, got {getattr(text_image_index, 'dtype', None)}")
    if text_image_index.shape != (num_texts,):
        raise ValueError(f"text_image_index must have shape ({num_texts},) (one image row per text), "
                         f"got {tuple(text_image_index.shape)}")
    if num_texts and (int(text_image_index.min()) < 0 or int(text_image_index.max()) >= num_images):
        raise ValueError(f"text_image_index values must lie in [0, {num_images}), got "
                         f"[{int(text_image_index.min())}, {int(text_image_index.max())}]")


def block_topk(queries: torch.Tensor, keys: torch.Tensor, k: int, block_size: int = 1024,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` keys of every query by dot product, computed ``block_size`` query rows at a time.

    queries ``(Nq, E)``, keys ``(Nk, E)`` floating (pass L2-normalised features for cosine similarity).
    Returns scores ``(Nq, k')`` fp32 and key indices ``(Nq, k')`` int64, ``k' = min(k, Nk)``, best first,
    ties in favour of the lower key index. Peak extra memory is one ``(block_size, Nk)`` fp32 block and a bool
    mask of it (rows with ties at the k-th score are sorted whole). Scores are
    the same for every block size up to the GEMM's rounding (BLAS may sum in another order per block shape).
    """
    _check_embeds("queries", queries)
    _check_embeds("keys", keys)
    if queries.shape[1] != keys.shape[1]:
        raise ValueError(f"queries (Nq, E) and keys (Nk, E) need the same E, got {tuple(queries.shape)} "
                         f"and {tuple(keys.shape)}")
    if k < 1 or block_size < 1:
        raise ValueError(f"k and block_size must be >= 1, got k={k}, block_size={block_size}")
    k = min(k, keys.shape[0])
    keys_t = keys.float().t()
    scores, indices = [], []
    for start in range(0, queries.shape[0], block_size):
        block_scores, block_indices = stable_topk(queries[start:start + block_size].float() @ keys_t, k)
        scores.append(block_scores)
        indices.append(block_indices)
    return torch.cat(scores), torch.cat(indices)


def stable_topk(block: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best columns of every row of ``block`` ``(b, N)``, ties to the lower column, best first.

    ``torch.topk`` (unspecified order among equal values) gives the set; a row whose (k+1)-th value equals its
    k-th may have left out a lower-indexed tie and is sorted whole (a stable sort of every row costs ~60x more
    on the CPU).
    """
    values, columns = torch.topk(block, min(k + 1, block.shape[1]), dim=1)
    ambiguous = values[:, k] == values[:, k - 1] if values.shape[1] > k else torch.zeros_like(values[:, 0], dtype=bool)
    values, columns = values[:, :k], columns[:, :k]
    if bool(ambiguous.any()):
        rows = ambiguous.nonzero()[:, 0]
        sorted_values, sorted_columns = torch.sort(block[rows], dim=1, descending=True, stable=True)
        values[rows], columns[rows] = sorted_values[:, :k], sorted_columns[:, :k]
    by_column = torch.sort(columns, dim=1).indices
    values, columns = torch.gather(values, 1, by_column), torch.gather(columns, 1, by_column)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    return torch.gather(values, 1, order), torch.gather(columns, 1, order)


def recall_at_k(hits: torch.Tensor, ks: Sequence[int]) -> dict[int, float]:
    """Recall@K from a hit table ``(N, k_max)`` bool (column j: the (j+1)-th candidate is a match).

    A row counts at K when any of its first K columns is True. Returns {K: fraction in [0, 1]}.
    """
    if hits.dim() != 2 or hits.dtype != torch.bool:
        raise TypeError(f"hits must be a bool (N, k_max) tensor, got {tuple(hits.shape)} {hits.dtype}")
    if hits.shape[0] == 0:
        raise ValueError("hits has no rows: recall of an empty query set is undefined")
    return {int(k): float(hits[:, :k].any(dim=1).float().mean()) for k in ks}


def hit_tables(i2t_indices: torch.Tensor, t2i_indices: torch.Tensor, text_image_index: torch.Tensor,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Hit tables ``(N_img, k)`` / ``(N_txt, k)`` bool of ranked texts per image and ranked images per text.

    i2t_indices ``(N_img, k)`` text rows, t2i_indices ``(N_txt, k)`` image rows, best first."""
    images = torch.arange(i2t_indices.shape[0], device=i2t_indices.device)
    i2t_hits = text_image_index.to(i2t_indices.device)[i2t_indices] == images[:, None]
    t2i_hits = t2i_indices == text_image_index.to(t2i_indices.device)[:, None]
    return i2t_hits, t2i_hits


def named_recalls(i2t: dict[int, float], t2i: dict[int, float], prefix: str = "") -> dict[str, float]:
    """``{prefix}i2t_r{K}`` and ``{prefix}t2i_r{K}`` keys for ``recall_at_k`` results."""
    out = {f"{prefix}i2t_r{k}": v for k, v in i2t.items()}
    out.update({f"{prefix}t2i_r{k}": v for k, v in t2i.items()})
    return out


def retrieval_rankings(image_embeds: torch.Tensor, text_embeds: torch.Tensor, k: int, block_size: int = 1024,
                       ) -> dict[str, torch.Tensor]:
    """Top-``k`` texts per image and top-``k`` images per text (see ``block_topk``).

    Returns {"i2t_scores", "i2t_indices"} ``(N_img, k')`` and {"t2i_scores", "t2i_indices"} ``(N_txt, k'')``.
    """
    i2t_scores, i2t_indices = block_topk(image_embeds, text_embeds, k, block_size)
    t2i_scores, t2i_indices = block_topk(text_embeds, image_embeds, k, block_size)
    return {"i2t_scores": i2t_scores, "i2t_indices": i2t_indices,
            "t2i_scores": t2i_scores, "t2i_indices": t2i_indices}


def retrieval_recall(image_embeds: torch.Tensor, text_embeds: torch.Tensor, text_image_index: torch.Tensor,
                     ks: Sequence[int] = DEFAULT_KS, block_size: int = 1024) -> dict[str, float]:
    """Dual-encoder Recall@K both ways.

    image_embeds ``(N_img, E)``, text_embeds ``(N_txt, E)`` floating (the ITC head's normalised features);
    text_image_index ``(N_txt,)`` int64: the image row of every text. Returns
    ``{"i2t_r1": ..., "i2t_r5": ..., "i2t_r10": ..., "t2i_r1": ..., ...}`` (one pair of keys per K), in [0, 1].
    """
    _check_embeds("image_embeds", image_embeds)
    _check_embeds("text_embeds", text_embeds)
    check_text_image_index(text_image_index, text_embeds.shape[0], image_embeds.shape[0])
    ranked = retrieval_rankings(image_embeds, text_embeds, max(ks), block_size)
    i2t_hits, t2i_hits = hit_tables(ranked["i2t_indices"], ranked["t2i_indices"], text_image_index)
    return named_recalls(recall_at_k(i2t_hits, ks), recall_at_k(t2i_hits, ks))


def rerank(candidate_scores: torch.Tensor, candidates: torch.Tensor, score_fn: ScoreFn, rerank_k: int,
           query_is_image: bool, similarity_weight: float = 0.0, pairs_per_call: int = 256,
           query_index: torch.Tensor | None = None) -> torch.Tensor:
    """Re-order the first ``rerank_k`` candidates of every query by a fusion score.

    candidate_scores ``(Nq, k)`` and candidates ``(Nq, k)`` int64: a ranking as ``block_topk`` returns it.
    ``score_fn(image_rows (M,), text_rows (M,)) -> (M,)`` scores pairs (FIBER: the ITM head's match logit
    with fusion on); it is called with at most ``pairs_per_call`` pairs at a time. The new score of a
    candidate is ``fusion + similarity_weight * similarity`` (0: ALBEF's ITM-only re-rank; 1: BLIP's sum).
    Candidates beyond ``rerank_k`` keep their order after the re-ranked ones. ``query_index`` ``(Nq,)`` int64:
    the row of each query that ``score_fn`` gets (default ``0..Nq-1``; a shard passes its global rows).
    Returns the new candidate
    order ``(Nq, k)`` int64 (ties: the better similarity rank first).
    """
    if candidates.shape != candidate_scores.shape or candidates.dim() != 2:
        raise ValueError(f"candidates and candidate_scores must both be (Nq, k), got {tuple(candidates.shape)} "
                         f"and {tuple(candidate_scores.shape)}")
    if rerank_k < 1:
        raise ValueError(f"rerank_k must be >= 1, got {rerank_k}")
    rerank_k = min(rerank_k, candidates.shape[1])
    num_queries = candidates.shape[0]
    if query_index is None:
        query_index = torch.arange(num_queries, device=candidates.device)
    if query_index.shape != (num_queries,):
        raise ValueError(f"query_index must be ({num_queries},), got {tuple(query_index.shape)}")
    query_rows = query_index.to(candidates.device)[:, None].expand(-1, rerank_k).reshape(-1)
    key_rows = candidates[:, :rerank_k].reshape(-1)
    image_rows, text_rows = (query_rows, key_rows) if query_is_image else (key_rows, query_rows)
    fused = torch.cat([score_fn(image_rows[s:s + pairs_per_call], text_rows[s:s + pairs_per_call]).reshape(-1)
                       .float().to(candidates.device) for s in range(0, key_rows.numel(), pairs_per_call)])
    new_scores = fused.view(num_queries, rerank_k)
    if similarity_weight:
        new_scores = new_scores + similarity_weight * candidate_scores[:, :rerank_k].float()
    order = torch.sort(new_scores, dim=1, descending=True, stable=True).indices
    head = torch.gather(candidates[:, :rerank_k], 1, order)
    return torch.cat([head, candidates[:, rerank_k:]], dim=1)


def reranked_recall(image_embeds: torch.Tensor, text_embeds: torch.Tensor, text_image_index: torch.Tensor,
                    score_fn: ScoreFn, rerank_k: int = 16, ks: Sequence[int] = DEFAULT_KS,
                    block_size: int = 1024, similarity_weight: float = 0.0,
                    pairs_per_call: int = 256) -> dict[str, float]:
    """FIBER's two-step retrieval: dual-encoder top ``max(rerank_k, max(ks))``, then fusion re-rank of the top
    ``rerank_k`` (see ``rerank``). Arguments as ``retrieval_recall``; keys ``"rerank_i2t_r1"``, ... in [0, 1].

    ``score_fn`` is called on ``(N_img + N_txt) * rerank_k`` pairs in all.
    """
    _check_embeds("image_embeds", image_embeds)
    _check_embeds("text_embeds", text_embeds)
    check_text_image_index(text_image_index, text_embeds.shape[0], image_embeds.shape[0])
    ranked = retrieval_rankings(image_embeds, text_embeds, max(rerank_k, *ks), block_size)
    i2t = rerank(ranked["i2t_scores"], ranked["i2t_indices"], score_fn, rerank_k, True, similarity_weight,
                 pairs_per_call)
    t2i = rerank(ranked["t2i_scores"], ranked["t2i_indices"], score_fn, rerank_k, False, similarity_weight,
                 pairs_per_call)
    i2t_hits, t2i_hits = hit_tables(i2t, t2i, text_image_index)
    return named_recalls(recall_at_k(i2t_hits, ks), recall_at_k(t2i_hits, ks), prefix="rerank_")


def random_pick_hit_probability(total: int, good: torch.Tensor | int, k: int) -> torch.Tensor:
    """Probability that ``k`` of ``total`` candidates drawn at random without replacement include at least
    one of the ``good`` ones, ``1 - C(total - good, k) / C(total, k)`` as a product; elementwise over
    ``good`` (float64)."""
    good = torch.as_tensor(good, dtype=torch.float64)
    miss = torch.ones_like(good)
    for j in range(min(k, total)):
        miss = miss * ((total - good - j).clamp(min=0) / (total - j))
    return 1 - miss


def chance_recall(num_images: int, texts_per_image: Sequence[int] | torch.Tensor,
                  ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Expected Recall@K of a random ranking (the demo's "chance" row).

    t2i: ``min(K, N_img) / N_img``. i2t: an image with c of the N_txt texts is missed at K with probability
    ``C(N_txt - c, K) / C(N_txt, K)``, averaged over images. ``texts_per_image``: c per image ``(N_img,)``.
    """
    counts = torch.as_tensor(texts_per_image, dtype=torch.float64)
    if counts.shape != (num_images,) or num_images < 1:
        raise ValueError(f"texts_per_image must have one count per image ({num_images},), got {tuple(counts.shape)}")
    num_texts = int(counts.sum())
    out = {}
    for k in ks:
        out[f"i2t_r{k}"] = float(random_pick_hit_probability(num_texts, counts, k).mean())
    out.update({f"t2i_r{k}": min(k, num_images) / num_images for k in ks})
    return out
