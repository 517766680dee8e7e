"""COCO detection mAP through pycocotools when the categories are the text prompt (GLIP / FIBER style).

The prompt lists the category names, ``"cat. dog. traffic light."``; each category owns the tokens that
overlap its name's character span, and its score on an anchor is the mean (or max) of those tokens'
probabilities (``grounding.decode_image`` with the category token map). Detections go to pycocotools'
``COCOeval`` as COCO results (``bbox`` xywh in original-image pixels).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from fiber_fast.data.collate import positive_map

from .grounding import Detections

COCO_STATS = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
              "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


def build_prompt(names: Sequence[str], separator: str = ". ") -> tuple[str, list[tuple[int, int]]]:
    """``("cat1. cat2. ... catN.", [(start, end), ...])``: the prompt and each name's character span."""
    if not names or any(not isinstance(name, str) or not name.strip() for name in names):
        raise ValueError(f"names must be a non-empty list of non-empty strings, got {names!r}")
    prompt, spans = "", []
    for i, name in enumerate(names):
        name = name.strip()
        spans.append((len(prompt), len(prompt) + len(name)))
        prompt += name + (separator if i + 1 < len(names) else separator.rstrip())
    return prompt, spans


def category_token_map(tokenizer: object, names: Sequence[str], max_length: int | None = None,
                       ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Tokenise the category prompt. Returns the encoding (``input_ids``, ``attention_mask`` ``(1, T)``
    int64) and the category token map ``(C, T)`` fp32. ``tokenizer``: a Hugging Face fast tokenizer."""
    prompt, spans = build_prompt(names)
    encoding = tokenizer(prompt, return_offsets_mapping=True, return_tensors="pt", truncation=max_length is not None,
                         max_length=max_length)
    token_map = positive_map(encoding["offset_mapping"][0].long(), [[span] for span in spans])
    missing = [names[c] for c in range(len(names)) if not token_map[c].any()]
    if missing:
        raise ValueError(f"categories {missing} have no tokens in the prompt (truncated at max_length={max_length}?)")
    return {"input_ids": encoding["input_ids"].long(), "attention_mask": encoding["attention_mask"].long()}, token_map


def load_coco(ground_truth: COCO | dict | str | Path) -> COCO:
    """A ``COCO`` object from a COCO-format dict, a JSON path, or a ``COCO`` (returned as is)."""
    if isinstance(ground_truth, COCO):
        return ground_truth
    if isinstance(ground_truth, str | Path):
        ground_truth = json.loads(Path(ground_truth).read_text(encoding="utf-8"))
    if not isinstance(ground_truth, dict) or not {"images", "annotations", "categories"} <= ground_truth.keys():
        raise TypeError("ground_truth must be a COCO, a path to COCO JSON, or a dict with images, annotations "
                        "and categories")
    coco = COCO()
    coco.dataset = copy.deepcopy(ground_truth)
    for ann in coco.dataset["annotations"]:
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
        ann.setdefault("iscrowd", 0)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def to_coco_results(detections: Detections, image_id: int, category_ids: Sequence[int],
                    scale: tuple[float, float] = (1.0, 1.0)) -> list[dict]:
    """COCO result dicts of one image: labels index ``category_ids``; boxes (xyxy, input pixels) are scaled by
    ``scale = (sy, sx)`` (original / resized size) and written as xywh."""
    boxes = detections.boxes.detach().float().cpu().clone()
    boxes[:, 0::2] *= scale[1]
    boxes[:, 1::2] *= scale[0]
    xywh = torch.cat([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], dim=1)
    return [{"image_id": int(image_id), "category_id": int(category_ids[int(label)]),
             "bbox": [float(v) for v in box], "score": float(score)}
            for box, score, label in zip(xywh, detections.scores.tolist(), detections.labels.tolist(), strict=True)]


def coco_map(ground_truth: COCO | dict | str | Path, results: Sequence[dict], image_ids: Sequence[int] | None = None,
             verbose: bool = False) -> dict[str, float]:
    """COCO bbox metrics of ``results`` (COCO result dicts) against the ground truth, via ``COCOeval``.

    ``image_ids``: evaluate these images only (default: every ground-truth image).
    Returns the 12 ``COCOeval.stats`` under ``COCO_STATS`` names (``"AP"`` = mAP@[.5:.95]); -1 where
    pycocotools has nothing to average (e.g. no small objects). No results: every AP/AR is 0.
    """
    coco_gt = load_coco(ground_truth)
    if not results:
        return dict.fromkeys(COCO_STATS, 0.0)
    sink = contextlib.nullcontext() if verbose else contextlib.redirect_stdout(io.StringIO())
    with sink:
        coco_dt = coco_gt.loadRes(copy.deepcopy(list(results)))
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        if image_ids is not None:
            evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(COCO_STATS, evaluator.stats, strict=True)}
