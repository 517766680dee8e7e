"""Our fine-stage FIBER model as OSCAR's open-vocabulary tagger: boxes, tags and RoIAlign region features.

Per image batch:

1. Prompt: the candidate phrases joined as GLIP's category prompt (``"circle. square. triangle."``,
   ``detection.category_token_map``); each phrase owns the tokens of its span.
2. One fused pass ``model.upper(image_lower, text_lower, fusion=True)`` gives the backbone maps
   (``out.image_features``) and ``model.grounding_head`` the ATSS head output.
3. Boxes: ``grounding.decode_batch`` (GLIP's post-processor) with ``score_threshold=0`` so every anchor
   competes, NMS per phrase. A class-agnostic NMS at the same IoU then keeps one box per place: the copies
   of one anchor's box for the different phrases share the centerness, so the copy that survives is the
   phrase with the highest probability (the mean of its tokens' probabilities) -- the box's tag.
4. The best ``top_k`` boxes whose score (``sqrt(probability * sigmoid(centerness))``) is at least
   ``score_threshold`` are kept, and always the best box, so every image has at least one region.
5. Features: ``torchvision.ops.roi_align`` (``aligned=True``, ``spatial_scale = 1 / stride``) of every box
   on each of the backbone maps of Swin stages 2..n (strides ``patch_size * 2**s``: 8, 16, 32),
   ``output_size`` x ``output_size`` bins of ``sampling_ratio`` x ``sampling_ratio`` bilinear samples
   averaged over the bins (the mean of the map over the box), concatenated over the stages: ``D`` = the sum
   of the stages' widths (``14 * embed_dim`` for three stages: 448 tiny, 1792 Swin-B). The maps are those of the
   fused pass, so the stages after the first fused block have seen the prompt -- the same prompt for every
   image, so the features of different images are comparable. OSCAR's ``region_dim`` is ``D + 6`` (geometry).

Why all three stages, concatenated, and not FPN's level mapper: the stages have different widths
(``2C, 4C, 8C``), so one level per box would give boxes features of different sizes (or need a learned
projection the tagger does not have); the concatenation has one fixed ``D`` that fits Oscar's fixed
``region_dim``, keeps the fine stage-2 detail for small boxes and the stage-4 context for large ones, and
costs three ``roi_align`` calls per batch. Boxes are decoded in the resized input's pixels (where the maps
are pooled) and then scaled to the original image's pixels (``to_original_pixels``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchvision.ops import nms, roi_align

from fiber_fast.data.oscar_tsv import RegionRecord

from .detection import category_token_map
from .grounding import Detections, decode_batch


def stage_strides(image_config: object) -> tuple[int, ...]:
    """Strides in input pixels of the maps in ``out.image_features`` (Swin stages 2..n): ``patch_size * 2**s``."""
    return tuple(image_config.patch_size * 2 ** stage for stage in range(1, len(image_config.depths)))


def region_feature_dim(image_config: object) -> int:
    """``D`` of the pooled region features: the summed widths of Swin stages 2..n (448 tiny, 1792 Swin-B)."""
    return sum(image_config.num_features[1:])


def pool_regions(feature_maps: Sequence[torch.Tensor], strides: Sequence[int], boxes: Sequence[torch.Tensor],
                 output_size: int = 4, sampling_ratio: int = 2) -> list[torch.Tensor]:
    """Mean feature of every box on every map, concatenated over the maps.

    feature_maps: ``(B, C_s, H_s, W_s)`` per stage; strides: the maps' strides in input pixels; boxes: ``B``
    tensors ``(R_b, 4)`` xyxy in input pixels. Returns ``B`` tensors ``(R_b, sum C_s)`` float32 (stage order).
    """
    if len(feature_maps) != len(strides) or not feature_maps:
        raise ValueError(f"need one stride per feature map, got {len(feature_maps)} maps and {len(strides)} strides")
    batch = feature_maps[0].shape[0]
    if any(fmap.dim() != 4 or fmap.shape[0] != batch for fmap in feature_maps):
        raise ValueError(f"feature maps must be (B, C_s, H_s, W_s) with one B, got "
                         f"{[tuple(fmap.shape) for fmap in feature_maps]}")
    if len(boxes) != batch or any(b.dim() != 2 or b.shape[1] != 4 for b in boxes):
        raise ValueError(f"boxes must be {batch} tensors (R_b, 4) xyxy, got {[tuple(b.shape) for b in boxes]}")
    device = feature_maps[0].device
    rois = [b.to(device=device, dtype=torch.float32) for b in boxes]
    parts = [roi_align(fmap.float(), rois, output_size, spatial_scale=1.0 / stride, sampling_ratio=sampling_ratio,
                       aligned=True).mean(dim=(2, 3))
             for fmap, stride in zip(feature_maps, strides, strict=True)]
    return list(torch.cat(parts, dim=1).split([len(b) for b in rois]))


def select_regions(detections: Detections, top_k: int, score_threshold: float, nms_threshold: float) -> Detections:
    """One box per place (class-agnostic NMS over the per-phrase detections: the best phrase's copy stays), then
    the best ``top_k`` with ``score >= score_threshold``; the best box is kept whatever its score."""
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if detections.boxes.shape[0] == 0:
        raise ValueError("no detection to select from (decode with score_threshold=0 so every anchor competes)")
    keep = nms(detections.boxes.float(), detections.scores.float(), nms_threshold)[:top_k]
    above = detections.scores[keep] >= score_threshold
    above[0] = True
    keep = keep[above]
    return Detections(detections.boxes[keep], detections.scores[keep], detections.labels[keep])


def tag_regions(head_output: object, token_map: torch.Tensor, image_sizes: torch.Tensor, top_k: int,
                score_threshold: float, nms_threshold: float = 0.6, **decode_options: object) -> list[Detections]:
    """Boxes and tags of every image from a ``GroundingOutput`` (cls_logits ``(B, A, T)``) and the phrase token
    map ``(P, T)``: ``decode_batch`` with every anchor competing, then ``select_regions``. ``labels`` of the
    result index the phrases (each box's best phrase); boxes ``(R, 4)`` fp32 xyxy in input pixels."""
    batch = head_output.cls_logits.shape[0]
    detections = decode_batch(head_output, [token_map] * batch, image_sizes, score_threshold=0.0,
                              nms_threshold=nms_threshold, **decode_options)
    return [select_regions(d, top_k, score_threshold, nms_threshold) for d in detections]


def to_original_pixels(boxes: torch.Tensor, resized_hw: Sequence[int], original_hw: Sequence[int]) -> torch.Tensor:
    """``(R, 4)`` xyxy boxes from the resized image's pixels ``(h, w)`` to the original image's ``(H, W)``."""
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes must be (R, 4) xyxy, got {tuple(boxes.shape)}")
    (h, w), (height, width) = (int(v) for v in resized_hw), (int(v) for v in original_hw)
    scale = boxes.new_tensor([width / w, height / h, width / w, height / h])
    return boxes * scale


class RegionTagger:
    """A fine-stage ``FiberModel`` (detection head) with a phrase prompt: images -> boxes, tags, region features.

    phrases: the candidate tags (e.g. the grounding JSON's category names); tokenizer: the model's HF fast
    tokenizer; max_text_len: prompt truncation (default the model's); score_agg / nms_threshold /
    pre_nms_top_n: as ``grounding.decode_image``; output_size / sampling_ratio: as ``pool_regions``.
    """

    def __init__(self, model: torch.nn.Module, tokenizer: object, phrases: Sequence[str], top_k: int = 10,
                 score_threshold: float = 0.2, nms_threshold: float = 0.6, max_text_len: int | None = None,
                 score_agg: str = "mean", pre_nms_top_n: int = 1000, output_size: int = 4,
                 sampling_ratio: int = 2) -> None:
        config = model.config
        if not config.detection_head:
            raise ValueError("the tagger needs a model with the detection head (a fine-stage run)")
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        self.model = model.eval()
        self.phrases = [phrase.strip() for phrase in phrases]
        self.prompt, self.token_map = category_token_map(tokenizer, self.phrases, max_text_len or config.max_text_len)
        self.strides = stage_strides(config.image)
        self.feature_dim = region_feature_dim(config.image)
        self.top_k, self.score_threshold, self.nms_threshold = top_k, score_threshold, nms_threshold
        self.decode_options = {"score_agg": score_agg, "pre_nms_top_n": pre_nms_top_n,
                               "max_detections": max(100, top_k)}
        self.output_size, self.sampling_ratio = output_size, sampling_ratio

    @torch.no_grad()
    def __call__(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor,
                 original_sizes: Sequence[tuple[int, int]], image_ids: Sequence[str]) -> list[RegionRecord]:
        """pixel_values ``(B, 3, Hp, Wp)`` float32 (the fine batch, zero-padded), image_sizes ``(B, 2)`` int64
        (h, w) after resize, original_sizes: B ``(H, W)`` of the files, image_ids: B ids. Returns one
        ``RegionRecord`` per image: boxes ``(R, 4)`` fp32 xyxy in ORIGINAL pixels, features ``(R, D)`` fp32,
        tags (R phrases), scores ``(R,)`` fp32 best first, ``1 <= R <= top_k``."""
        batch = pixel_values.shape[0]
        if pixel_values.dim() != 4 or image_sizes.shape != (batch, 2) or len(original_sizes) != batch \
                or len(image_ids) != batch:
            raise ValueError(f"expected pixel_values (B, 3, Hp, Wp), image_sizes (B, 2), B original_sizes and B "
                             f"image_ids; got {tuple(pixel_values.shape)}, {tuple(image_sizes.shape)}, "
                             f"{len(original_sizes)} and {len(image_ids)}")
        model = self.model
        device = next(model.parameters()).device
        input_ids = self.prompt["input_ids"].to(device).expand(batch, -1)
        attention_mask = self.prompt["attention_mask"].to(device).expand(batch, -1)
        out = model.upper(model.image_lower(pixel_values.to(device)), model.text_lower(input_ids, attention_mask),
                          fusion=True)
        chosen = tag_regions(model.grounding_head(out), self.token_map, image_sizes, self.top_k, self.score_threshold,
                             self.nms_threshold, **self.decode_options)
        features = pool_regions(out.image_features, self.strides, [c.boxes for c in chosen], self.output_size,
                                self.sampling_ratio)
        records = []
        for b, c in enumerate(chosen):
            height, width = (int(v) for v in original_sizes[b])
            records.append(RegionRecord(
                image_id=str(image_ids[b]), image_hw=(height, width),
                boxes=to_original_pixels(c.boxes.float().cpu(), image_sizes[b].tolist(), (height, width)),
                features=features[b].float().cpu(), tags=[self.phrases[int(label)] for label in c.labels],
                scores=c.scores.float().cpu()))
        return records
