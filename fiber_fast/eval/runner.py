"""Run a ``FiberModel`` over a DataLoader and compute the metrics, sharded over ranks, results gathered.

Each rank iterates its own loader (build it on ``distributed.ShardSampler`` so every item is seen once); the
per-rank results are gathered with ``all_gather_object`` (a no-op in a single process), and every rank returns
the same metrics. Batches are the coarse / fine dicts of ``fiber_fast.data`` (see the team's batch formats).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from . import retrieval
from .detection import coco_map, load_coco, to_coco_results
from .distributed import gather_objects, rank_and_world
from .grounding import decode_batch, grounding_hits, grounding_recall, phrases_from_positive_map

Batch = Mapping[str, torch.Tensor]


@dataclass
class RetrievalEmbeddings:
    """Dual-encoder features of an evaluation set (gathered over ranks, CPU fp32).

    image_ids ``(N_img,)`` int64 ascending; image_feats ``(N_img, E)``; text_feats ``(N_txt, E)``;
    text_image_index ``(N_txt,)`` int64 rows of image_feats. With ``keep_inputs``: pixel_values
    ``(N_img, 3, H, W)`` and texts (one unpadded ``(T_i,)`` int64 id row per text) for the fusion re-rank.
    """

    image_ids: torch.Tensor
    image_feats: torch.Tensor
    text_feats: torch.Tensor
    text_image_index: torch.Tensor
    pixel_values: torch.Tensor | None = None
    texts: list[torch.Tensor] | None = None


def _model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _embed_batch(model: torch.nn.Module, batch: Batch, new_rows: list[int], device: torch.device,
                 ) -> tuple[torch.Tensor | None, torch.Tensor]:
    """ITC features of the images in ``new_rows`` ``(M, E)`` (None when there are none) and of every caption
    ``(B, E)``, fusion off.

    ``model.upper`` wants equal image and text batches; with fusion off the streams do not interact, so the
    image pass pairs the new images with any captions and the text pass pairs captions with any image.
    """
    input_ids = batch["input_ids"].to(device)
    attention_mask = batch["attention_mask"].to(device)
    size = input_ids.shape[0]
    txt = model.text_lower(input_ids, attention_mask)
    rows = torch.tensor(new_rows or [0], dtype=torch.long, device=device)
    img = model.image_lower(batch["pixel_values"].to(device)[rows])
    if len(new_rows) == size:
        out = model.upper(img, txt, fusion=False)
        image_feat, text_feat, _ = model.itc_head(out.image_embeds, out.text_embeds)
        return image_feat, text_feat
    image_feat = None
    if new_rows:
        out = model.upper(img, txt.select(rows), fusion=False)
        image_feat = model.itc_head(out.image_embeds, out.text_embeds)[0]
    out = model.upper(img.select(torch.zeros(size, dtype=torch.long, device=device)), txt, fusion=False)
    text_feat = model.itc_head(out.image_embeds, out.text_embeds)[1]
    return image_feat, text_feat


@torch.no_grad()
def compute_retrieval_embeddings(model: torch.nn.Module, loader: Iterable[Batch], keep_inputs: bool = False,
                                 ) -> RetrievalEmbeddings:
    """Run the dual encoder (fusion off) once over coarse batches; each image is encoded once.

    A caption row's image is encoded the first time its ``image_ids`` value appears on this rank; across ranks
    the first copy in rank order is kept. See ``RetrievalEmbeddings`` for the result.
    """
    model.eval()
    device = _model_device(model)
    seen: set[int] = set()
    image_ids, image_feats, text_feats, text_ids, pixels, texts = [], [], [], [], [], []
    for batch in loader:
        ids = batch["image_ids"].tolist()
        new_rows = []
        for row, image_id in enumerate(ids):
            if image_id not in seen:
                seen.add(image_id)
                new_rows.append(row)
        image_feat, text_feat = _embed_batch(model, batch, new_rows, device)
        image_ids += [ids[row] for row in new_rows]
        if image_feat is not None:
            image_feats.append(image_feat.float().cpu())
        text_feats.append(text_feat.float().cpu())
        text_ids += ids
        if keep_inputs:
            pixels += [batch["pixel_values"][row].cpu() for row in new_rows]
            lengths = batch["attention_mask"].sum(dim=1).tolist()
            texts += [batch["input_ids"][row, :length].cpu() for row, length in enumerate(lengths)]
    parts = gather_objects((image_ids, image_feats, text_feats, text_ids, pixels, texts))
    return _merge_embeddings(parts, keep_inputs)


def _merge_embeddings(parts: list[tuple], keep_inputs: bool) -> RetrievalEmbeddings:
    """Concatenate the ranks' parts, drop images seen by an earlier rank, sort images by id."""
    first: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
    text_feats, text_ids, texts = [], [], []
    for image_ids, image_feats, rank_text_feats, rank_text_ids, pixels, rank_texts in parts:
        feats = torch.cat(image_feats) if image_feats else torch.zeros(0)
        for row, image_id in enumerate(image_ids):
            first.setdefault(image_id, (feats[row], pixels[row] if keep_inputs else None))
        text_feats += rank_text_feats
        text_ids += rank_text_ids
        texts += rank_texts
    if not first or not text_ids:
        raise ValueError("the loader produced no captions: nothing to evaluate")
    order = sorted(first)
    row_of = {image_id: row for row, image_id in enumerate(order)}
    return RetrievalEmbeddings(
        image_ids=torch.tensor(order, dtype=torch.long),
        image_feats=torch.stack([first[i][0] for i in order]),
        text_feats=torch.cat(text_feats),
        text_image_index=torch.tensor([row_of[i] for i in text_ids], dtype=torch.long),
        pixel_values=torch.stack([first[i][1] for i in order]) if keep_inputs else None,
        texts=texts if keep_inputs else None)


def fusion_score_fn(model: torch.nn.Module, embeddings: RetrievalEmbeddings, pad_token_id: int,
                    ) -> retrieval.ScoreFn:
    """FIBER's re-rank score: ``itm_head(upper(image, text, fusion=True))[:, 1]`` (the match logit).

    Each call runs the lower image and text layers once per distinct image and text among the pairs and
    re-uses them for every pair (``select``). Needs ``embeddings`` computed with ``keep_inputs=True``.
    """
    if embeddings.pixel_values is None or embeddings.texts is None:
        raise ValueError("embeddings carry no inputs: compute them with keep_inputs=True for the fusion re-rank")
    device = _model_device(model)

    @torch.no_grad()
    def score(image_rows: torch.Tensor, text_rows: torch.Tensor) -> torch.Tensor:
        images, image_inverse = torch.unique(image_rows.cpu(), return_inverse=True)
        texts, text_inverse = torch.unique(text_rows.cpu(), return_inverse=True)
        rows = [embeddings.texts[int(t)] for t in texts]
        length = max(int(r.numel()) for r in rows)
        input_ids = torch.full((len(rows), length), pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, r in enumerate(rows):
            input_ids[i, :r.numel()] = r
            attention_mask[i, :r.numel()] = 1
        img = model.image_lower(embeddings.pixel_values[images].to(device))
        txt = model.text_lower(input_ids.to(device), attention_mask.to(device))
        out = model.upper(img.select(image_inverse.to(device)), txt.select(text_inverse.to(device)), fusion=True)
        return model.itm_head(out)[:, 1].float().cpu()

    return score


def _rerank_sharded(scores: torch.Tensor, candidates: torch.Tensor, score_fn: retrieval.ScoreFn, rerank_k: int,
                    query_is_image: bool, similarity_weight: float, pairs_per_call: int) -> torch.Tensor:
    """``retrieval.rerank`` with the query rows split over ranks and the new orders gathered."""
    rank, world = rank_and_world()
    rows = torch.arange(rank, candidates.shape[0], world)
    local = candidates[rows]
    if rows.numel():
        local = retrieval.rerank(scores[rows], local, score_fn, rerank_k, query_is_image, similarity_weight,
                                 pairs_per_call, query_index=rows)
    merged = candidates.clone()
    for part_rows, part in gather_objects((rows, local)):
        merged[part_rows] = part
    return merged


@torch.no_grad()
def evaluate_retrieval(model: torch.nn.Module, loader: Iterable[Batch], ks: Sequence[int] = retrieval.DEFAULT_KS,
                       block_size: int = 1024, rerank_k: int = 0, similarity_weight: float = 0.0,
                       pad_token_id: int = 1, pairs_per_call: int = 64) -> dict[str, float]:
    """Retrieval metrics of ``model`` on coarse batches: ``i2t_r*``/``t2i_r*`` of the dual encoder (fusion off,
    embeddings computed once), with ``rerank_k > 0`` also ``rerank_i2t_r*``/``rerank_t2i_r*`` (fusion ITM
    re-rank of the top ``rerank_k``), and ``num_images``/``num_texts``. The same on every rank."""
    embeddings = compute_retrieval_embeddings(model, loader, keep_inputs=rerank_k > 0)
    metrics: dict[str, float] = retrieval.retrieval_recall(embeddings.image_feats, embeddings.text_feats,
                                                           embeddings.text_image_index, ks, block_size)
    if rerank_k > 0:
        ranked = retrieval.retrieval_rankings(embeddings.image_feats, embeddings.text_feats, max(rerank_k, *ks),
                                              block_size)
        score_fn = fusion_score_fn(model, embeddings, pad_token_id)
        i2t = _rerank_sharded(ranked["i2t_scores"], ranked["i2t_indices"], score_fn, rerank_k, True,
                              similarity_weight, pairs_per_call)
        t2i = _rerank_sharded(ranked["t2i_scores"], ranked["t2i_indices"], score_fn, rerank_k, False,
                              similarity_weight, pairs_per_call)
        i2t_hits, t2i_hits = retrieval.hit_tables(i2t, t2i, embeddings.text_image_index)
        metrics.update(retrieval.named_recalls(retrieval.recall_at_k(i2t_hits, ks),
                                               retrieval.recall_at_k(t2i_hits, ks), prefix="rerank_"))
    metrics["num_images"] = int(embeddings.image_ids.numel())
    metrics["num_texts"] = int(embeddings.text_image_index.numel())
    return metrics


@torch.no_grad()
def _head_output(model: torch.nn.Module, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                 attention_mask: torch.Tensor) -> object:
    device = _model_device(model)
    out = model.upper(model.image_lower(pixel_values.to(device)),
                      model.text_lower(input_ids.to(device), attention_mask.to(device)), fusion=True)
    return model.grounding_head(out)


@torch.no_grad()
def evaluate_grounding(model: torch.nn.Module, loader: Iterable[Batch], ks: Sequence[int] = (1, 5),
                       iou_threshold: float = 0.5, score_threshold: float = 0.0, merge_boxes: bool = False,
                       **decode_options: object) -> dict[str, float]:
    """Phrase-grounding Recall@K ("any box" protocol, or "merged boxes" with ``merge_boxes``; ``grounding.py``)
    of ``model`` on fine batches.

    Phrases are the distinct ``positive_map`` rows of each image's real boxes. ``score_threshold`` defaults
    to 0 (every anchor competes; recall is a ranking metric); other decode options as
    ``grounding.decode_image``. Returns ``{"grounding_r1", "grounding_r5", "num_phrases"}``.
    """
    model.eval()
    hits = []
    for batch in loader:
        head = _head_output(model, batch["pixel_values"], batch["input_ids"], batch["attention_mask"])
        groups = [phrases_from_positive_map(batch["positive_map"][b], batch["box_mask"][b])
                  for b in range(batch["pixel_values"].shape[0])]
        detections = decode_batch(head, [g[0] for g in groups], batch["image_sizes"],
                                  score_threshold=score_threshold, **decode_options)
        for b, (phrases, box_phrase) in enumerate(groups):
            gt_boxes = batch["boxes"][b][batch["box_mask"][b]]
            hits.append(grounding_hits(detections[b], gt_boxes, box_phrase, phrases.shape[0], ks, iou_threshold,
                                       merge_boxes))
    return grounding_recall([h for part in gather_objects(hits) for h in part], ks)


@torch.no_grad()
def evaluate_detection(model: torch.nn.Module, loader: Iterable[Batch], ground_truth: object,
                       prompt: Mapping[str, torch.Tensor], token_map: torch.Tensor, category_ids: Sequence[int],
                       **decode_options: object) -> dict[str, float]:
    """COCO box mAP of ``model`` with the categories as the text prompt.

    Batches are fine batches whose ``image_ids`` are ground-truth image ids; their text is replaced by
    ``prompt`` (``input_ids``/``attention_mask`` ``(1, T)`` from ``detection.category_token_map``), whose
    category token map ``(C, T)`` and COCO ids ``category_ids`` (C) name the labels. Boxes are scaled from
    ``image_sizes`` to the ground truth's image height/width. An image met twice is evaluated once. Returns
    ``detection.coco_map`` over the evaluated images, plus ``num_images``.
    """
    model.eval()
    coco = load_coco(ground_truth)
    results: list[dict] = []
    evaluated: list[int] = []
    met: set[int] = set()
    for batch in loader:
        size = batch["pixel_values"].shape[0]
        head = _head_output(model, batch["pixel_values"], prompt["input_ids"].expand(size, -1),
                            prompt["attention_mask"].expand(size, -1))
        detections = decode_batch(head, [token_map] * size, batch["image_sizes"], **decode_options)
        for b, image_id in enumerate(batch["image_ids"].tolist()):
            if image_id in met:
                continue
            if image_id not in coco.imgs:
                raise ValueError(f"image id {image_id} of the loader is not in the ground truth")
            info = coco.imgs[image_id]
            height, width = batch["image_sizes"][b].tolist()
            evaluated.append(image_id)
            met.add(image_id)
            results += to_coco_results(detections[b], image_id, category_ids,
                                       (info["height"] / height, info["width"] / width))
    parts = gather_objects((evaluated, results))
    image_ids = sorted({i for ids, _ in parts for i in ids})
    seen: set[int] = set()
    merged = []
    for ids, part in parts:  # an image evaluated on two ranks counts once (the first rank's)
        fresh = set(ids) - seen
        merged += [r for r in part if r["image_id"] in fresh]
        seen |= fresh
    metrics: dict[str, float] = coco_map(coco, merged, image_ids=image_ids)
    metrics["num_images"] = len(image_ids)
    return metrics
