"""OSCAR image-text retrieval: every (image, caption) pair scored by the relation head, Recall@K both ways.

As Oscar reports it (its ``run_retrieval.py`` in inference mode): the model reads ``[CLS] caption [SEP] tags
[SEP]`` + the image's regions for every pair of the evaluation set, and the pair's score is the relation
head's probability of "matched" (label 0, ``softmax(logits)[:, 0]``). The ``(N_img, N_txt)`` score matrix is
ranked per image (i2t) and per caption (t2i); the recall protocol is ``retrieval.py``'s (an image is a hit at
K when any of its captions is among its K best texts). Pairs are scored in batches, split over ranks, gathered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from fiber_fast.train.objectives.oscar import MATCHED, matched_probability

from . import retrieval
from .distributed import gather_objects, rank_and_world

Collate = Callable[[list[dict[str, Any]]], Mapping[str, torch.Tensor]]
MODEL_INPUTS = ("input_ids", "token_type_ids", "attention_mask", "region_features", "region_mask")


@dataclass
class RetrievalSet:
    """An evaluation split joined with its region files.

    image_ids ``N_img`` ints ascending; tags, region_features and region_scores per image (``list[str]``,
    ``(R_i, D + 6)`` float32, ``(R_i,)`` float32 detection confidences); captions ``N_txt`` strings;
    text_image_index ``(N_txt,)`` int64: each caption's image row.
    """

    image_ids: list[int]
    tags: list[list[str]]
    region_features: list[torch.Tensor]
    region_scores: list[torch.Tensor]
    captions: list[str]
    text_image_index: torch.Tensor

    @property
    def num_pairs(self) -> int:
        return len(self.image_ids) * len(self.captions)

    def pair_items(self, image_rows: Sequence[int], text_rows: Sequence[int]) -> list[dict[str, Any]]:
        """``OscarDataset``-style items (relation label 0, the image's own tags) of the given pairs."""
        items = []
        for image_row, text_row in zip(image_rows, text_rows, strict=True):
            image_id = self.image_ids[image_row]
            items.append({"caption": self.captions[text_row], "tags": self.tags[image_row],
                          "region_features": self.region_features[image_row],
                          "region_scores": self.region_scores[image_row], "relation_label": MATCHED,
                          "image_id": image_id, "tags_image_id": image_id,
                          "caption_image_id": self.image_ids[int(self.text_image_index[text_row])]})
        return items


def load_retrieval_set(annotations: str | Path, regions: str | Path, max_images: int | None = None) -> RetrievalSet:
    """The captions of ``annotations`` (COCO captions JSON) whose images have rows in the region folder
    ``regions`` (``RegionStore``), restricted to the first ``max_images`` image ids (all when None).

    Raises ``ValueError`` when an annotated image has no region row (the extraction missed it) or fewer than
    2 images remain.
    """
    from fiber_fast.data import read_coco_captions
    from fiber_fast.data.oscar_tsv import RegionStore

    store = RegionStore(regions)
    records, _ = read_coco_captions(annotations)
    missing = sorted({r.image_id for r in records if str(r.image_id) not in store})
    if missing:
        raise ValueError(f"{len(missing)} image(s) of {annotations} have no row in the region files {regions} "
                         f"(first: {missing[:5]}); extract that split first")
    if max_images is not None and max_images < 2:
        raise ValueError(f"max_images must be >= 2 (or None for all), got {max_images}")
    image_ids = sorted({r.image_id for r in records})[:max_images]
    if len(image_ids) < 2:
        raise ValueError(f"{annotations} has {len(image_ids)} image(s); retrieval needs at least 2")
    row_of = {image_id: row for row, image_id in enumerate(image_ids)}
    kept = [r for r in records if r.image_id in row_of]
    tags, features, scores = [], [], []
    for image_id in image_ids:
        stored = store.read(str(image_id))
        tags.append(list(stored.tags))
        features.append(stored.features)
        scores.append(stored.scores)
    return RetrievalSet(image_ids=image_ids, tags=tags, region_features=features, region_scores=scores,
                        captions=[r.caption for r in kept],
                        text_image_index=torch.tensor([row_of[r.image_id] for r in kept], dtype=torch.long))


@torch.no_grad()
def pair_scores(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The matched probability ``(B,)`` fp32 (CPU) of a collated OSCAR batch."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    inputs = {key: batch[key].to(device) for key in MODEL_INPUTS}
    inputs["region_features"] = inputs["region_features"].to(dtype)
    return matched_probability(model.relation_head(model(**inputs).pooled)).cpu()


@torch.no_grad()
def score_matrix(model: torch.nn.Module, rset: RetrievalSet, collate: Collate,
                 pairs_per_batch: int = 256) -> torch.Tensor:
    """Scores ``(N_img, N_txt)`` fp32 of every pair; batch ``c`` of the row-major pair order runs on rank
    ``c % world`` and every rank returns the whole matrix."""
    if pairs_per_batch < 1:
        raise ValueError(f"pairs_per_batch must be >= 1, got {pairs_per_batch}")
    model.eval()
    rank, world = rank_and_world()
    num_texts = len(rset.captions)
    parts = []
    for start in range(rank * pairs_per_batch, rset.num_pairs, world * pairs_per_batch):
        pairs = torch.arange(start, min(start + pairs_per_batch, rset.num_pairs))
        batch = collate(rset.pair_items((pairs // num_texts).tolist(), (pairs % num_texts).tolist()))
        parts.append((start, pair_scores(model, batch)))
    flat = torch.empty(rset.num_pairs, dtype=torch.float32)
    for rank_parts in gather_objects(parts):
        for start, scores in rank_parts:
            flat[start:start + scores.numel()] = scores
    return flat.view(len(rset.image_ids), num_texts)


def recall_from_scores(scores: torch.Tensor, text_image_index: torch.Tensor,
                       ks: Sequence[int] = retrieval.DEFAULT_KS) -> dict[str, float]:
    """Recall@K both ways from a pair-score matrix ``scores`` ``(N_img, N_txt)`` floating (higher = better match)
    and ``text_image_index`` ``(N_txt,)`` int64. Returns ``{"i2t_r1", ..., "t2i_r10"}`` in [0, 1]."""
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2 or not scores.is_floating_point():
        raise ValueError(f"scores must be a floating (N_img, N_txt) tensor, got {getattr(scores, 'dtype', None)} "
                         f"{tuple(getattr(scores, 'shape', ()))}")
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("scores holds NaN or infinite values")
    retrieval.check_text_image_index(text_image_index, scores.shape[1], scores.shape[0])
    k = max(ks)
    i2t_hits, t2i_hits = retrieval.hit_tables(retrieval.stable_topk(scores, k)[1],
                                              retrieval.stable_topk(scores.t(), k)[1], text_image_index)
    return retrieval.named_recalls(retrieval.recall_at_k(i2t_hits, ks), retrieval.recall_at_k(t2i_hits, ks))


@torch.no_grad()
def evaluate_oscar_retrieval(model: torch.nn.Module, rset: RetrievalSet, collate: Collate,
                             ks: Sequence[int] = retrieval.DEFAULT_KS, pairs_per_batch: int = 256) -> dict[str, float]:
    """Recall@K both ways of an ``OscarModel`` on ``rset`` (``recall_from_scores`` of ``score_matrix``), with
    ``num_images``, ``num_texts`` and the chance levels ``chance_i2t_r*``/``chance_t2i_r*`` of a random ranking."""
    metrics = recall_from_scores(score_matrix(model, rset, collate, pairs_per_batch), rset.text_image_index, ks)
    counts = torch.bincount(rset.text_image_index, minlength=len(rset.image_ids))
    chance = retrieval.chance_recall(len(rset.image_ids), counts, ks)
    metrics.update({f"chance_{key}": value for key, value in chance.items()})
    metrics["num_images"] = len(rset.image_ids)
    metrics["num_texts"] = len(rset.captions)
    return metrics


def evaluate_run(run_or_checkpoint: str | Path, annotations: str | Path, regions: str | Path,
                 tokenizer: str | Path, max_images: int | None = None, pairs_per_batch: int = 256,
                 device: str | torch.device = "cpu", eager: bool = False,
                 sizes: Mapping[str, int | None] | None = None) -> dict[str, Any]:
    """Retrieval metrics of an OSCAR run (or checkpoint) on a split: ``annotations`` (COCO captions JSON),
    its ``regions`` folder and the ``tokenizer`` folder.

    Pair sizes (``max_text_len``, ``max_tag_len``, ``max_regions``): ``sizes`` where given, else the run's data
    section (``train_config.yaml``), else the model config's (``max_tag_len``: the trainer's default). Returns
    ``evaluate_oscar_retrieval``'s metrics and the sizes used.
    """
    from functools import partial

    from fiber_fast.data import load_tokenizer
    from fiber_fast.data.oscar_collate import collate_oscar
    from fiber_fast.train.config import OSCAR_MAX_TAG_LEN

    from .loading import load_model, run_data_config

    model = load_model(run_or_checkpoint, device, eager=eager, family="oscar")
    given, run_data = dict(sizes or {}), run_data_config(run_or_checkpoint)
    fallback = {"max_text_len": model.config.max_text_len, "max_tag_len": OSCAR_MAX_TAG_LEN,
                "max_regions": model.config.max_regions}
    used = {key: int(given.get(key) or run_data.get(key) or value) for key, value in fallback.items()}
    rset = load_retrieval_set(annotations, regions, max_images)
    collate = partial(collate_oscar, tokenizer=load_tokenizer(tokenizer), **used)
    return {**evaluate_oscar_retrieval(model, rset, collate, pairs_per_batch=pairs_per_batch), **used}
