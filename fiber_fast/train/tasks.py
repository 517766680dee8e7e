"""Tasks: a model plus its objectives as one ``nn.Module`` (what DeepSpeed wraps): FIBER's coarse and fine
stages, and OSCAR's word-tag-region pre-training.

``forward(batch)`` returns a dict of 0-dim fp32 losses, the weighted total under ``"loss"``. Every
rank runs the same modules in the same order each step (ZeRO-3 gathers parameters per module call).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn

from .objectives import (
    EmbeddingQueue,
    grounding_losses,
    grounding_targets,
    itc_loss,
    itm_loss,
    mask_tokens,
    mlm_loss,
    relation_loss,
    sample_itm_pairs,
)
from .objectives.mlm import IGNORE_INDEX

COARSE_KEYS = ("pixel_values", "input_ids", "attention_mask", "image_ids")
UNUSED_IN_FINE = ("itc_head.", "itm_head.", "mlm_head.")
FINE_KEYS = ("pixel_values", "input_ids", "attention_mask", "boxes", "box_mask", "positive_map")
OSCAR_KEYS = ("input_ids", "token_type_ids", "attention_mask", "region_features", "region_mask", "relation_labels")


def _check_batch(batch: Mapping[str, torch.Tensor], keys: tuple[str, ...], stage: str) -> None:
    missing = [key for key in keys if key not in batch]
    if missing:
        raise ValueError(f"a {stage} batch needs {list(keys)}; missing {missing}")


def masked_token_loss(mlm_head: nn.Module, text_states: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """MLM loss on the masked positions only: text_states ``(B, T, D)``, labels ``(B, T)`` with IGNORE_INDEX
    elsewhere; the head sees just the chosen ``(1, M, D)`` rows."""
    chosen = labels != IGNORE_INDEX
    return mlm_loss(mlm_head(text_states[chosen][None]), labels[chosen])


class CoarseTask(nn.Module):
    """Stage 1: ITC (fusion off) + ITM (hard negatives) + MLM (fusion on), lower layers run once.

    Per step on a batch of B pairs: ``image_lower`` on B images, ``text_lower`` on the B clean and the
    B masked captions, ``upper(fusion=False)`` on B (ITC), ``upper(fusion=True)`` on B (MLM) and on
    the M <= 3B ITM pairs built by ``.select`` on the lower states.

    Args:
        model: a ``FiberModel`` (``itc_head``, ``itm_head``, ``mlm_head``).
        mask_token_id, special_ids, vocab_size: of the tokenizer (masking never touches specials).
        weights: ``{"itc", "itm", "mlm"}`` loss weights; mlm_probability: BERT's 15 %.
        queue_size: ITC embedding-queue slots (0: none); queue_dim: the ITC embedding size E.
    """

    def __init__(self, model: nn.Module, *, mask_token_id: int, special_ids: Iterable[int], vocab_size: int,
                 weights: Mapping[str, float] | None = None, mlm_probability: float = 0.15, queue_size: int = 0,
                 queue_dim: int = 1) -> None:
        super().__init__()
        self.model = model
        self.mask_token_id = int(mask_token_id)
        self.special_ids = tuple(sorted({int(i) for i in special_ids}))
        self.vocab_size = int(vocab_size)
        self.weights = {"itc": 1.0, "itm": 1.0, "mlm": 1.0, **(weights or {})}
        self.mlm_probability = mlm_probability
        self.queue = EmbeddingQueue(queue_size, queue_dim) if queue_size > 0 else None

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Batch of ``collate_coarse`` -> ``{"loss", "itc", "itm", "mlm"}``."""
        _check_batch(batch, COARSE_KEYS, "coarse")
        model = self.model
        input_ids, attention_mask, image_ids = batch["input_ids"], batch["attention_mask"], batch["image_ids"]
        image = model.image_lower(batch["pixel_values"])
        text = model.text_lower(input_ids, attention_mask)

        unimodal = model.upper(image, text, fusion=False)
        image_feat, text_feat, logit_scale = model.itc_head(unimodal.image_embeds, unimodal.text_embeds)
        itc = itc_loss(image_feat, text_feat, logit_scale, image_ids, queue=self.queue)

        pairs = sample_itm_pairs((logit_scale * image_feat @ text_feat.t()).detach(), image_ids)
        fused_pairs = model.upper(image.select(pairs.image_index), text.select(pairs.text_index), fusion=True)
        itm = itm_loss(model.itm_head(fused_pairs), pairs.labels)

        masked_ids, labels = mask_tokens(input_ids, attention_mask, mask_token_id=self.mask_token_id,
                                         vocab_size=self.vocab_size, special_ids=self.special_ids,
                                         probability=self.mlm_probability)
        fused = model.upper(image, model.text_lower(masked_ids, attention_mask), fusion=True)
        mlm = masked_token_loss(model.mlm_head, fused.text_tokens, labels)

        if self.queue is not None:
            self.queue.push(image_feat, text_feat, image_ids)
        losses = {"itc": itc, "itm": itm, "mlm": mlm}
        losses["loss"] = sum(self.weights[name] * value for name, value in losses.items())
        return losses


class FineTask(nn.Module):
    """Stage 2: ATSS grounding (token-level focal alignment, centerness-weighted GIoU, centerness BCE).

    The coarse heads (ITC, ITM, MLM) get no gradient here; their own parameters are frozen so the
    optimizer's weight decay does not drift them (tied ones, e.g. the word embeddings, stay trainable).

    Args:
        model: a ``FiberModel`` built with ``detection_head`` (``grounding_head``).
        weights: ``{"cls", "giou", "centerness"}`` multipliers on top of GLIP's (GIoU already x giou_weight).
    """

    def __init__(self, model: nn.Module, *, weights: Mapping[str, float] | None = None, topk: int = 9,
                 focal_alpha: float = 0.25, focal_gamma: float = 2.0, giou_weight: float = 2.0) -> None:
        super().__init__()
        if getattr(model, "grounding_head", None) is None:
            raise ValueError("FineTask needs a model with a grounding_head (FiberConfig detection_head=True)")
        self.model = model
        used = {id(p) for name, p in model.named_parameters(remove_duplicate=False)
                if not name.startswith(UNUSED_IN_FINE)}
        for name, param in model.named_parameters():
            if name.startswith(UNUSED_IN_FINE) and id(param) not in used:
                param.requires_grad_(False)
        self.weights = {"cls": 1.0, "giou": 1.0, "centerness": 1.0, **(weights or {})}
        self.topk, self.focal_alpha, self.focal_gamma, self.giou_weight = topk, focal_alpha, focal_gamma, giou_weight

    def zero3_external_parameters(self) -> list[nn.Parameter]:
        """Parameters ZeRO-3 must keep gathered for the whole step: the grounding head's own (``log_scale``,
        ``bias_lang``). The head takes and returns dataclasses (``FiberOutput`` -> ``GroundingOutput``), so
        ZeRO-3 cannot hook its backward and would find them partitioned there."""
        return list(self.model.grounding_head.parameters(recurse=False))

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Batch of ``collate_fine`` -> ``{"loss", "cls", "giou", "centerness"}``."""
        _check_batch(batch, FINE_KEYS, "fine")
        out = self.model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], fusion=True)
        head = self.model.grounding_head(out)
        targets = grounding_targets(head.anchors, list(head.num_anchors_per_level), batch["boxes"], batch["box_mask"],
                                    batch["positive_map"], topk=self.topk)
        losses = grounding_losses(head.cls_logits, head.box_regression, head.centerness, head.anchors, targets,
                                  batch["attention_mask"], focal_alpha=self.focal_alpha, focal_gamma=self.focal_gamma,
                                  giou_weight=self.giou_weight)
        losses["loss"] = sum(self.weights[name] * value for name, value in losses.items())
        return losses


class OscarTask(nn.Module):
    """OSCAR pre-training: masked-token loss over words and tags + the relation (tag-pollution) loss, one pass.

    As Oscar's pre-training step: the batch's ``input_ids`` (``[CLS] words [SEP] tags [SEP]``, the tags of a
    polluted pair already replaced by the data side) are BERT-masked (15 %, 80/10/10, specials never), the model
    runs once over words, tags and regions; the MLM head predicts the chosen text positions (region positions
    are never predicted) and the relation head on the pooled ``[CLS]`` state classifies ``relation_labels``.

    Args:
        model: an ``OscarModel`` (``mlm_head``, ``relation_head``).
        mask_token_id, special_ids, vocab_size: of the tokenizer (masking never touches specials).
        weights: ``{"mlm", "relation"}`` loss weights; mlm_probability: BERT's 15 %.
    """

    def __init__(self, model: nn.Module, *, mask_token_id: int, special_ids: Iterable[int], vocab_size: int,
                 weights: Mapping[str, float] | None = None, mlm_probability: float = 0.15) -> None:
        super().__init__()
        self.model = model
        self.mask_token_id = int(mask_token_id)
        self.special_ids = tuple(sorted({int(i) for i in special_ids}))
        self.vocab_size = int(vocab_size)
        self.weights = {"mlm": 1.0, "relation": 1.0, **(weights or {})}
        self.mlm_probability = mlm_probability

    def forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Batch of ``collate_oscar`` -> ``{"loss", "mlm", "relation"}`` (0-dim fp32)."""
        _check_batch(batch, OSCAR_KEYS, "oscar")
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        masked_ids, labels = mask_tokens(input_ids, attention_mask, mask_token_id=self.mask_token_id,
                                         vocab_size=self.vocab_size, special_ids=self.special_ids,
                                         probability=self.mlm_probability)
        out = self.model(masked_ids, batch["token_type_ids"], attention_mask, batch["region_features"],
                         batch["region_mask"])
        text = out.sequence[:, :input_ids.shape[1]]
        losses = {"mlm": masked_token_loss(self.model.mlm_head, text, labels),
                  "relation": relation_loss(self.model.relation_head(out.pooled), batch["relation_labels"])}
        losses["loss"] = sum(self.weights[name] * value for name, value in losses.items())
        return losses
