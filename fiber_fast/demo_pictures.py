"""The demo's pictures: loss curves of both stages, a grounding grid, a retrieval example (matplotlib, PNG)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from fiber_fast.data import IMAGENET_MEAN, IMAGENET_STD


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _to_image(pixel_values: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` normalised -> ``(H, W, 3)`` in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (pixel_values.float().cpu() * std + mean).clamp(0, 1).permute(1, 2, 0)


def draw_loss_curves(metrics_files: Sequence[Path], names: Sequence[str], out: Path) -> Path:
    """One panel per stage: every loss of ``metrics.jsonl`` per step, and the learning rate on a second axis."""
    from fiber_fast.train.metrics import read_metrics

    plt = _pyplot()
    figure, axes = plt.subplots(1, len(metrics_files), figsize=(6 * len(metrics_files), 4))
    for axis, path, name in zip(list(axes), metrics_files, names, strict=True):
        rows = read_metrics(path)
        steps = [row["step"] for row in rows]
        for key in sorted(k for k in rows[0] if k == "loss" or k.startswith("loss/")):
            axis.plot(steps, [row.get(key, float("nan")) for row in rows], label=key, linewidth=1.2 if key == "loss"
                      else 0.8)
        axis.set_title(f"{name} stage")
        axis.set_xlabel("optimizer step")
        axis.set_ylabel("loss")
        axis.legend(loc="upper right", fontsize=8)
        lr_axis = axis.twinx()
        lr_axis.plot(steps, [row["lr"] for row in rows], color="grey", linestyle=":", label="lr")
        lr_axis.set_ylabel("learning rate", color="grey")
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def _phrase_text(tokenizer: Any, input_ids: torch.Tensor, token_map: torch.Tensor) -> str:
    return tokenizer.decode(input_ids[token_map > 0].tolist()).strip()


@torch.no_grad()
def draw_grounding_grid(model: torch.nn.Module, loader: Iterable[dict[str, torch.Tensor]], tokenizer: Any, out: Path,
                        images: int = 8) -> Path:
    """Validation images with each phrase's true boxes (green) and the model's top box (red, with its score)."""
    from fiber_fast.eval.grounding import decode_batch, phrases_from_positive_map

    plt = _pyplot()
    batch = next(iter(loader))
    count = min(images, batch["pixel_values"].shape[0])
    out_model = model(batch["pixel_values"], batch["input_ids"], batch["attention_mask"], fusion=True)
    groups = [phrases_from_positive_map(batch["positive_map"][b], batch["box_mask"][b]) for b in range(count)]
    head = model.grounding_head(out_model)
    detections = decode_batch(_first(head, count), [g[0] for g in groups], batch["image_sizes"][:count])
    columns = 4
    figure, axes = plt.subplots((count + columns - 1) // columns, columns, figsize=(4 * columns, 4.4 * 2))
    for b, axis in enumerate(axes.flat):
        axis.axis("off")
        if b >= count:
            continue
        height, width = batch["image_sizes"][b].tolist()
        axis.imshow(_to_image(batch["pixel_values"][b])[:height, :width])
        phrases, box_phrase = groups[b]
        gt_boxes = batch["boxes"][b][batch["box_mask"][b]]
        lines = []
        for phrase in range(phrases.shape[0]):
            text = _phrase_text(tokenizer, batch["input_ids"][b], phrases[phrase])
            for x1, y1, x2, y2 in gt_boxes[box_phrase == phrase].tolist():
                axis.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="lime", linewidth=2))
            found = detections[b].labels == phrase
            if found.any():
                x1, y1, x2, y2 = detections[b].boxes[found][0].tolist()
                score = float(detections[b].scores[found][0])
                axis.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="red", linewidth=1.5,
                                             linestyle="--"))
                axis.text(x1, y1, f"{phrase}", color="white", fontsize=7, backgroundcolor="red")
                lines.append(f"{phrase}: {text} ({score:.2f})")
        axis.set_title("\n".join(lines), fontsize=7, loc="left")
    figure.suptitle("phrase grounding on val images: true boxes green, the model's top box per phrase red")
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out


def _first(head: Any, count: int) -> Any:
    """The head output of the first ``count`` images (anchors are shared)."""
    import dataclasses

    return dataclasses.replace(head, cls_logits=head.cls_logits[:count], box_regression=head.box_regression[:count],
                               centerness=head.centerness[:count])


@torch.no_grad()
def draw_retrieval_example(model: torch.nn.Module, loader: Iterable[dict[str, torch.Tensor]], tokenizer: Any,
                           out: Path, query: int = 0, title: str = "") -> Path:
    """A val caption and the five images the dual encoder ranks highest for it (the true image framed green)."""
    from fiber_fast.eval.runner import compute_retrieval_embeddings

    plt = _pyplot()
    embeddings = compute_retrieval_embeddings(model, loader, keep_inputs=True)
    scores = embeddings.text_feats[query] @ embeddings.image_feats.T
    top = scores.topk(min(5, scores.numel())).indices.tolist()
    truth = int(embeddings.text_image_index[query])
    caption = tokenizer.decode(embeddings.texts[query].tolist(), skip_special_tokens=True).strip()
    figure, axes = plt.subplots(1, len(top), figsize=(3 * len(top), 3.6))
    for rank, (axis, row) in enumerate(zip(list(axes), top, strict=True), start=1):
        axis.imshow(_to_image(embeddings.pixel_values[row]))
        axis.set_xticks([])
        axis.set_yticks([])
        colour = "lime" if row == truth else "lightgrey"
        for spine in axis.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(4)
        axis.set_title(f"#{rank}  score {float(scores[row]):.2f}", fontsize=9)
    figure.suptitle(f"query: \"{caption}\"  (true image framed green) {title}".strip(), fontsize=10)
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out
