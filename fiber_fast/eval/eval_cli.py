"""``fiber-fast eval [--model fiber] --task retrieval|grounding|detection --checkpoint RUN_OR_CKPT --data DIR
[--split val] [--out FILE.json]``; ``fiber-fast eval --model oscar --task retrieval --checkpoint OSCAR_RUN --data DIR
[--regions DIR] [--max-images N]`` (every image-caption pair scored by the relation head, ``oscar_retrieval``).

Prints the metrics as JSON and writes them (flat, with ``task``, ``checkpoint``, ``data``, ``split`` and
``seconds``) to ``--out``. Works in one process or under ``torchrun`` / ``deepspeed`` (each rank evaluates
its shard; rank 0 prints and writes). Sizes default to the run's ``train_config.yaml`` data section.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from .command import fine_sizes, run_timed

TASKS = ("retrieval", "grounding", "detection")
MODELS = ("fiber", "oscar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``eval`` flags (issue 14's contract plus tuning knobs; issue 17's ``--model oscar``)."""
    parser.add_argument("--model", default="fiber", choices=MODELS, help="the checkpoint's model family: fiber "
                        "(default) or oscar (retrieval only: the relation head scores every image-caption pair)")
    parser.add_argument("--task", required=True, choices=TASKS, help="retrieval (coarse: R@1/5/10 both ways), "
                        "grounding (fine: phrase R@1/5 at IoU 0.5) or detection (fine: COCO mAP, categories as prompt)")
    parser.add_argument("--checkpoint", required=True, metavar="RUN_OR_CKPT",
                        help="a run folder (its model.safetensors) or a .safetensors file of models.save_checkpoint")
    parser.add_argument("--data", required=True, metavar="DIR", help="data root: captions_SPLIT.json / "
                        "grounding_SPLIT.json, images/, tokenizer/ (the synthetic layout)")
    parser.add_argument("--split", default="val", help="split name in the JSON file names (default: val)")
    parser.add_argument("--out", metavar="FILE.json", help="write the metrics here (rank 0)")
    parser.add_argument("--annotations", metavar="FILE", help="JSON to read instead of DIR/<kind>_SPLIT.json")
    parser.add_argument("--tokenizer", metavar="DIR", help="tokenizer folder (default: DIR/tokenizer)")
    parser.add_argument("--batch-size", type=int, default=16, metavar="N", help="images per rank and step (16)")
    parser.add_argument("--image-size", type=int, metavar="S", help="retrieval: square side (default: the run's, "
                        "else the model's img_size)")
    parser.add_argument("--min-size", type=int, metavar="S", help="grounding/detection: shorter side (default: the "
                        "run's largest min_sizes, else 800)")
    parser.add_argument("--max-size", type=int, metavar="S", help="grounding/detection: longer-side cap (default: "
                        "the run's max_size, else 1333)")
    parser.add_argument("--max-text-len", type=int, metavar="T", help="default: the model config's max_text_len "
                        "(oscar: the run's caption tokens)")
    parser.add_argument("--rerank-k", type=int, default=0, metavar="K", help="retrieval: also re-rank the top K "
                        "with the fusion encoder's ITM score (rerank_* keys); 0 = off (default)")
    parser.add_argument("--merge-boxes", action="store_true", help="grounding: MDETR's merged-boxes protocol "
                        "(a phrase's true boxes replaced by their enclosing box) instead of any-box")
    parser.add_argument("--block-size", type=int, default=1024, metavar="N",
                        help="retrieval: query rows per similarity block (1024)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available, per LOCAL_RANK)")
    parser.add_argument("--eager", action="store_true", help="build the eager (unfused) model")
    parser.add_argument("--num-workers", type=int, default=0, metavar="N", help="DataLoader workers (0)")
    oscar = parser.add_argument_group("--model oscar")
    oscar.add_argument("--regions", metavar="DIR", help="the split's region folder (Oscar's TSV layout, `fiber-fast "
                       "oscar extract`); default: DIR/regions_SPLIT (as the OSCAR loader)")
    oscar.add_argument("--max-images", type=int, metavar="N", help="only the first N images (by id) and their "
                       "captions: N x captions pairs are scored (default: all)")
    oscar.add_argument("--pairs-per-batch", type=int, default=256, metavar="N", help="pairs per forward pass (256)")
    oscar.add_argument("--max-tag-len", type=int, metavar="T", help="tag tokens per pair (default: the run's, else 30)")
    oscar.add_argument("--max-regions", type=int, metavar="R", help="regions per image (default: the run's, else "
                       "the model config's)")


def _init_distributed() -> str:
    """Join the launcher's process group (WORLD_SIZE > 1) and return the default device for this rank."""
    import torch
    import torch.distributed as dist

    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if int(os.environ.get("WORLD_SIZE", 1)) > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local_rank)
        return f"cuda:{local_rank}"
    return "cpu"


def _sizes(args: argparse.Namespace, run_data: dict[str, Any], model_config: Any) -> dict[str, Any]:
    image_size = model_config.image.img_size
    min_size, max_size = fine_sizes(run_data, args.min_size, args.max_size)
    return {
        "image_size": args.image_size or run_data.get("image_size")
        or (image_size if isinstance(image_size, int) else min(image_size)),
        "min_size": min_size,
        "max_size": max_size,
        "max_text_len": args.max_text_len or model_config.max_text_len,
    }


def evaluate_oscar(args: argparse.Namespace) -> dict[str, Any]:
    """``--model oscar``: retrieval of an OSCAR run over every pair of the split (sizes: the run's data section)."""
    from .oscar_retrieval import evaluate_run

    if args.task != "retrieval":
        raise ValueError(f"--model oscar evaluates --task retrieval only, got --task {args.task}")
    data = Path(args.data)
    return evaluate_run(args.checkpoint, args.annotations or data / f"captions_{args.split}.json",
                        args.regions or data / f"regions_{args.split}", args.tokenizer or data / "tokenizer",
                        max_images=args.max_images, pairs_per_batch=args.pairs_per_batch,
                        device=args.device or _init_distributed(), eager=args.eager,
                        sizes={"max_text_len": args.max_text_len, "max_tag_len": args.max_tag_len,
                               "max_regions": args.max_regions})


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Load, evaluate, return the metrics (the same on every rank) and the input sizes used."""
    from fiber_fast.data import load_tokenizer

    from . import runner
    from .detection import category_token_map, load_coco
    from .loading import eval_loader, load_model, run_data_config, stored_config

    if args.model == "oscar":
        return evaluate_oscar(args)
    if args.task != "retrieval" and not stored_config(args.checkpoint)[1].detection_head:  # before any loading
        raise ValueError(f"--task {args.task} needs a model with the detection head (a fine-stage run); "
                         f"{args.checkpoint} has none")
    device = args.device or _init_distributed()
    model = load_model(args.checkpoint, device, eager=args.eager)
    sizes = _sizes(args, run_data_config(args.checkpoint), model.config)
    tokenizer = load_tokenizer(args.tokenizer or Path(args.data) / "tokenizer")
    loader = eval_loader(args.task, args.data, args.split, tokenizer, args.batch_size, sizes["max_text_len"],
                         sizes["image_size"], sizes["min_size"], sizes["max_size"], args.annotations,
                         args.num_workers)
    used = {"max_text_len": sizes["max_text_len"]}
    if args.task == "retrieval":
        used["image_size"] = sizes["image_size"]
        return {**runner.evaluate_retrieval(model, loader, block_size=args.block_size, rerank_k=args.rerank_k,
                                            pad_token_id=tokenizer.pad_token_id), **used}
    used.update(min_size=sizes["min_size"], max_size=sizes["max_size"])
    if args.task == "grounding":
        return {**runner.evaluate_grounding(model, loader, merge_boxes=args.merge_boxes), **used,
                "protocol": "merged-boxes" if args.merge_boxes else "any-box"}
    ground_truth = load_coco(args.annotations or Path(args.data) / f"grounding_{args.split}.json")
    categories = sorted(ground_truth.cats.values(), key=lambda c: c["id"])
    prompt, token_map = category_token_map(tokenizer, [c["name"] for c in categories], sizes["max_text_len"])
    return {**runner.evaluate_detection(model, loader, ground_truth, prompt, token_map,
                                        [c["id"] for c in categories]), **used}


def run(args: argparse.Namespace) -> int:
    """Evaluate; bad input (missing files, wrong checkpoint) exits with status 2 and the message."""
    from .distributed import rank_and_world

    done = run_timed("eval", lambda: evaluate(args))
    if done is None:
        return 2
    metrics, seconds = done
    report = {"model": args.model, "task": args.task, "checkpoint": str(args.checkpoint), "data": str(args.data),
              "split": args.split, **metrics, "seconds": round(seconds, 3)}
    if rank_and_world()[0] == 0:
        print(json.dumps(report, indent=1))
        if args.out:
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0
