"""ATSS head decoding (GLIP's ``ATSSPostProcessor``) and phrase-grounding Recall@K.

Decoding, per image, follows GLIP (``maskrcnn_benchmark/modeling/rpn/inference.py``, which FIBER's fine
stage uses): token probabilities ``sigmoid(cls_logits)``; a phrase's (or category's) probability is the mean
(``score_agg="mean"``, GLIP's default) or max of its tokens'; anchors whose phrase probability exceeds
``score_threshold`` are candidates; candidates are ranked per FPN level by ``probability * sigmoid(centerness)``
and the best ``pre_nms_top_n`` of each level are decoded with the GLIP box coder (weights (10, 10, 5, 5),
+1 widths); the score is ``sqrt(probability * sigmoid(centerness))``; boxes are clipped to the image
(``[0, w - 1] x [0, h - 1]``, GLIP's +1 convention); NMS per phrase (``torchvision.ops.batched_nms``) at
``nms_threshold``; the best ``max_detections`` survive.

Grounding metric: the Flickr30k-entities "any box" protocol of MDETR's ``flickr_eval.py`` (``merge_boxes``
off; the protocol MDETR calls ANY-BOX): each phrase's predicted boxes are sorted by score; the phrase is a hit
at K when any of its K best boxes has IoU >= 0.5 with any of its ground-truth boxes (a phrase with no box
predicted is a miss). Recall@K = hits / phrases, over all phrases of all images. ``merge_boxes=True`` gives
MDETR's MERGED-BOXES protocol instead (a phrase's ground-truth boxes replaced by their enclosing box). IoU
without +1 (``torchvision.ops.box_iou``, as MDETR's numpy copy of it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from fiber_kernels.atss.targets import decode_glip
from torchvision.ops import batched_nms, box_iou

from .retrieval import random_pick_hit_probability


@dataclass
class Detections:
    """Decoded boxes of one image: boxes ``(N, 4)`` fp32 xyxy in input pixels, scores ``(N,)`` fp32 in [0, 1],
    labels ``(N,)`` int64 (row of the phrase / category map), best score first."""

    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor


def phrase_scores(cls_logits: torch.Tensor, token_map: torch.Tensor, score_agg: str = "mean") -> torch.Tensor:
    """Per-phrase probabilities ``(A, P)`` fp32 from token logits ``(A, T)`` and a 0/1 token map ``(P, T)``.

    ``"mean"``: the mean of the phrase's token probabilities; ``"max"``: their maximum. A phrase without
    tokens scores 0.
    """
    if cls_logits.dim() != 2 or token_map.dim() != 2 or token_map.shape[1] != cls_logits.shape[1]:
        raise ValueError(f"cls_logits must be (A, T) and token_map (P, T) with the same T, got "
                         f"{tuple(cls_logits.shape)} and {tuple(token_map.shape)}")
    if score_agg not in ("mean", "max"):
        raise ValueError(f"score_agg must be 'mean' or 'max', got {score_agg!r}")
    probs = cls_logits.float().sigmoid()
    member = token_map.to(probs.device) > 0
    if score_agg == "mean":
        counts = member.sum(dim=1).clamp(min=1).float()
        return probs @ member.float().t() / counts
    scores = probs.new_zeros(probs.shape[0], member.shape[0])
    for phrase, row in enumerate(member):
        if row.any():
            scores[:, phrase] = probs[:, row].amax(dim=1)
    return scores


def clip_boxes(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Clamp ``(N, 4)`` xyxy boxes to ``[0, width - 1] x [0, height - 1]`` (GLIP's ``clip_to_image``)."""
    x = boxes[:, 0::2].clamp(min=0, max=width - 1)
    y = boxes[:, 1::2].clamp(min=0, max=height - 1)
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)


def decode_image(anchors: torch.Tensor, cls_logits: torch.Tensor, box_regression: torch.Tensor,
                 centerness: torch.Tensor, token_map: torch.Tensor, image_size: Sequence[int],
                 num_anchors_per_level: Sequence[int] | None = None, *, score_agg: str = "mean",
                 score_threshold: float = 0.05, pre_nms_top_n: int = 1000, nms_threshold: float = 0.6,
                 max_detections: int = 100) -> Detections:
    """Decode one image's head output (see the module docstring).

    anchors ``(A, 4)``, cls_logits ``(A, T)``, box_regression ``(A, 4)``, centerness ``(A,)`` logits,
    token_map ``(P, T)`` 0/1 (phrases or categories over text positions), image_size ``(h, w)`` before padding.
    ``num_anchors_per_level`` (sums to A): top candidates per level as GLIP; None: one level.
    """
    num_anchors = anchors.shape[0]
    if (anchors.shape != (num_anchors, 4) or box_regression.shape != (num_anchors, 4)
            or centerness.shape != (num_anchors,) or cls_logits.dim() != 2 or cls_logits.shape[0] != num_anchors):
        raise ValueError(f"expected anchors (A, 4), cls_logits (A, T), box_regression (A, 4), centerness (A,); got "
                         f"{tuple(anchors.shape)}, {tuple(cls_logits.shape)}, {tuple(box_regression.shape)}, "
                         f"{tuple(centerness.shape)}")
    levels = list(num_anchors_per_level) if num_anchors_per_level is not None else [num_anchors]
    if sum(levels) != num_anchors:
        raise ValueError(f"num_anchors_per_level must sum to A={num_anchors}, got {levels}")
    probs = phrase_scores(cls_logits, token_map, score_agg)  # (A, P)
    ranked = probs * centerness.float().sigmoid()[:, None]
    candidate = probs > score_threshold
    anchor_rows, label_rows, raw_scores = [], [], []
    start = 0
    for size in levels:
        level_mask = candidate[start:start + size]
        rows, labels = level_mask.nonzero(as_tuple=True)
        values = ranked[start:start + size][rows, labels]
        if values.numel() > pre_nms_top_n:
            values, keep = values.topk(pre_nms_top_n)
            rows, labels = rows[keep], labels[keep]
        anchor_rows.append(rows + start)
        label_rows.append(labels)
        raw_scores.append(values)
        start += size
    rows, labels, values = torch.cat(anchor_rows), torch.cat(label_rows), torch.cat(raw_scores)
    boxes = decode_glip(box_regression[rows].float(), anchors[rows].float())
    boxes = clip_boxes(boxes, int(image_size[0]), int(image_size[1]))
    scores = values.sqrt()
    keep = batched_nms(boxes, scores, labels, nms_threshold)[:max_detections]
    return Detections(boxes[keep], scores[keep], labels[keep])


def decode_batch(head_output: object, token_maps: Sequence[torch.Tensor], image_sizes: torch.Tensor,
                 **options: object) -> list[Detections]:
    """Decode a ``GroundingOutput`` (anchors ``(A, 4)``, cls_logits ``(B, A, T)``, box_regression ``(B, A, 4)``,
    centerness ``(B, A)``, num_anchors_per_level) with one token map ``(P_b, T)`` per image and
    image_sizes ``(B, 2)`` (h, w). Options as ``decode_image``."""
    batch = head_output.cls_logits.shape[0]
    if len(token_maps) != batch or image_sizes.shape != (batch, 2):
        raise ValueError(f"need one token map per image ({batch}) and image_sizes ({batch}, 2), got "
                         f"{len(token_maps)} maps and image_sizes {tuple(image_sizes.shape)}")
    levels = getattr(head_output, "num_anchors_per_level", None)
    return [decode_image(head_output.anchors, head_output.cls_logits[b], head_output.box_regression[b],
                         head_output.centerness[b], token_maps[b], image_sizes[b].tolist(), levels, **options)
            for b in range(batch)]


def phrases_from_positive_map(positive_map: torch.Tensor, box_mask: torch.Tensor,
                              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Group one image's boxes into phrases: boxes with the same token row belong to the same phrase.

    positive_map ``(G, T)`` 0/1, box_mask ``(G,)`` bool. Returns the phrase token map ``(P, T)`` fp32 and
    the phrase of every real box ``(G_real,)`` int64 (in the order of the real boxes).
    """
    if positive_map.dim() != 2 or box_mask.shape != positive_map.shape[:1] or box_mask.dtype != torch.bool:
        raise ValueError(f"positive_map must be (G, T) and box_mask (G,) bool, got {tuple(positive_map.shape)} "
                         f"and {tuple(box_mask.shape)} {box_mask.dtype}")
    rows = (positive_map[box_mask] > 0).float()
    if rows.shape[0] == 0:
        return rows, torch.zeros(0, dtype=torch.int64, device=rows.device)
    phrases, box_phrase = torch.unique(rows, dim=0, return_inverse=True)
    return phrases, box_phrase.long()


def grounding_hits(detections: Detections, gt_boxes: torch.Tensor, gt_phrases: torch.Tensor, num_phrases: int,
                   ks: Sequence[int] = (1, 5), iou_threshold: float = 0.5, merge_boxes: bool = False,
                   ) -> torch.Tensor:
    """Hit table ``(P, len(ks))`` bool of one image under the "any box" (or, with ``merge_boxes``, the
    "merged boxes") protocol (module docstring).

    gt_boxes ``(G, 4)`` xyxy, gt_phrases ``(G,)`` int64 in ``[0, num_phrases)``; detections.labels index the
    same phrases. A phrase without ground-truth boxes is counted as a miss.
    """
    if gt_boxes.dim() != 2 or gt_boxes.shape[1] != 4 or gt_phrases.shape != gt_boxes.shape[:1]:
        raise ValueError(f"gt_boxes must be (G, 4) and gt_phrases (G,), got {tuple(gt_boxes.shape)} and "
                         f"{tuple(gt_phrases.shape)}")
    hits = torch.zeros(num_phrases, len(ks), dtype=torch.bool)
    for phrase in range(num_phrases):
        mine = detections.labels == phrase
        truth = gt_boxes[gt_phrases == phrase].float()
        if not mine.any() or truth.shape[0] == 0:
            continue
        if merge_boxes:
            truth = torch.cat([truth[:, :2].amin(dim=0), truth[:, 2:].amax(dim=0)])[None]
        order = torch.sort(detections.scores[mine], descending=True, stable=True).indices
        best = box_iou(detections.boxes[mine][order].float(), truth.to(detections.boxes.device)).amax(dim=1)
        for j, k in enumerate(ks):
            hits[phrase, j] = bool((best[:k] >= iou_threshold).any())
    return hits


def grounding_recall(hits: Sequence[torch.Tensor] | torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
    """``{"grounding_r1": ..., "grounding_r5": ..., "num_phrases": P}`` from hit tables ``(P_i, len(ks))``."""
    table = hits if isinstance(hits, torch.Tensor) else torch.cat(list(hits)) if len(hits) else torch.zeros(0, len(ks))
    if table.shape[0] == 0:
        raise ValueError("no phrases to evaluate: grounding recall is undefined")
    out = {f"grounding_r{k}": float(table[:, j].float().mean()) for j, k in enumerate(ks)}
    out["num_phrases"] = int(table.shape[0])
    return out


def random_pick_hits(close: torch.Tensor, gt_phrases: torch.Tensor, num_phrases: int,
                     ks: Sequence[int] = (1, 5)) -> torch.Tensor:
    """Expected hit table ``(P, len(ks))`` fp64 of one image when each phrase's K best boxes are K of the
    ``C`` candidates drawn at random: a phrase with ``g`` candidates that hit one of its boxes is hit at K
    with probability ``1 - C(C - g, K) / C(C, K)`` (``retrieval.random_pick_hit_probability``).

    close ``(C, G)`` bool: candidate c hits ground-truth box g; gt_phrases ``(G,)`` int64 in ``[0, num_phrases)``.
    """
    member = gt_phrases[None, :] == torch.arange(num_phrases, device=gt_phrases.device)[:, None]  # (P, G)
    good = (member[:, None, :] & close[None]).any(dim=2).sum(dim=1).cpu()  # (P,) candidates hitting the phrase
    expected = torch.zeros(num_phrases, len(ks), dtype=torch.float64)
    for j, k in enumerate(ks):
        expected[:, j] = random_pick_hit_probability(close.shape[0], good, k)
    return expected


def words_blind_hits(gt_boxes: torch.Tensor, gt_phrases: torch.Tensor, num_phrases: int,
                     ks: Sequence[int] = (1, 5), iou_threshold: float = 0.5) -> torch.Tensor:
    """Expected hit table ``(P, len(ks))`` fp64 of one image for a model that finds every object perfectly
    but ignores the words: each phrase's K best boxes are K of the image's distinct ground-truth boxes
    drawn at random. A phrase with ``g`` of the image's ``n`` boxes within ``iou_threshold`` of its own
    boxes is hit at K with probability ``1 - C(n - g, K) / C(n, K)``. A grounding model beats this
    baseline only by telling phrases apart.

    gt_boxes ``(G, 4)`` xyxy, gt_phrases ``(G,)`` int64 in ``[0, num_phrases)`` (a box listed for several
    phrases counts once).
    """
    if gt_boxes.dim() != 2 or gt_boxes.shape[1] != 4 or gt_phrases.shape != gt_boxes.shape[:1]:
        raise ValueError(f"gt_boxes must be (G, 4) and gt_phrases (G,), got {tuple(gt_boxes.shape)} and "
                         f"{tuple(gt_phrases.shape)}")
    distinct, owner = torch.unique(gt_boxes.double(), dim=0, return_inverse=True)
    overlap = box_iou(distinct, distinct) >= iou_threshold  # (n, n): candidate box i hits a truth box j
    return random_pick_hits(overlap[:, owner], gt_phrases, num_phrases, ks)
