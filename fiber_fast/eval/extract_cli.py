"""``fiber-fast oscar extract --model RUN_OR_CKPT --data DIR --split train|val --out DIR``: region features and
tags for OSCAR from our fine-stage model (``tagger.RegionTagger``), written in Oscar's layout
(``fiber_fast.data.oscar_tsv.write_region_tsv``: features.tsv, predictions.tsv, .lineidx, imageid2idx.json).

Images are the entries of ``DIR/grounding_SPLIT.json`` (MDETR/GLIP grounding JSON; the synthetic set's
layout), read once per original image (``original_img_id``, else ``id``; that id, as a string, is the
region file's image id), resized as evaluation does (shorter side ``--min-size``, longer side at most
``--max-size``; defaults: the run's ``train_config.yaml``, else 800 / 1333). The tags are the JSON's
``categories`` names unless ``--phrases`` lists others. Bad input (missing files, a model without the
detection head) exits with status 2 and the message.
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path
from typing import Any

from .command import fine_sizes, run_timed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``oscar extract`` flags."""
    parser.add_argument("--model", required=True, metavar="RUN_OR_CKPT",
                        help="a fine-stage run folder (its model.safetensors) or a .safetensors checkpoint")
    parser.add_argument("--data", required=True, metavar="DIR",
                        help="data root: grounding_SPLIT.json, images/, tokenizer/ (the synthetic layout)")
    parser.add_argument("--split", default="train", help="split name in DIR/grounding_SPLIT.json (default: train)")
    parser.add_argument("--out", required=True, metavar="DIR", help="region folder to write (created)")
    parser.add_argument("--top-k", type=int, default=10, metavar="K", help="at most K regions per image (10)")
    parser.add_argument("--score-threshold", type=float, default=0.2, metavar="S",
                        help="keep regions scoring at least S (0.2); the best region of an image is always kept")
    parser.add_argument("--nms-threshold", type=float, default=0.6, metavar="IOU", help="NMS IoU (0.6)")
    parser.add_argument("--batch-size", type=int, default=16, metavar="N", help="images per forward pass (16)")
    parser.add_argument("--phrases", nargs="+", metavar="PHRASE",
                        help="candidate tags (default: the grounding JSON's category names)")
    parser.add_argument("--annotations", metavar="FILE",
                        help="grounding JSON to read instead of DIR/grounding_SPLIT.json")
    parser.add_argument("--tokenizer", metavar="DIR", help="tokenizer folder (default: DIR/tokenizer)")
    parser.add_argument("--min-size", type=int, metavar="S",
                        help="shorter side (default: the run's largest min_sizes, else 800)")
    parser.add_argument("--max-size", type=int, metavar="S", help="longer-side cap (default: the run's, else 1333)")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--threads", type=int, metavar="N", help="CPU threads for torch (default: torch's)")
    parser.add_argument("--num-workers", type=int, default=0, metavar="N", help="DataLoader workers (0)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")


def category_names(payload: dict[str, Any], source: str) -> list[str]:
    """The ``categories`` names of a grounding JSON, in id order."""
    categories = payload.get("categories")
    if not isinstance(categories, list) or not categories \
            or not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in categories):
        raise ValueError(f"{source} has no 'categories' list of {{id, name}} to use as tags: pass --phrases")
    return [c["name"] for c in sorted(categories, key=lambda c: c.get("id", 0))]


def extract(args: argparse.Namespace) -> dict[str, Any]:
    """Load the model, tag every image once, write the region folder; returns a summary."""
    import torch
    from torch.utils.data import DataLoader, Subset
    from tqdm import tqdm

    from fiber_fast.data import FineTransform, GroundingDataset, collate_fine, load_tokenizer
    from fiber_fast.data.oscar_tsv import write_region_tsv
    from fiber_fast.data.records import load_json
    from fiber_fast.models import read_checkpoint_config

    from .loading import load_model, resolve_checkpoint, run_data_config
    from .tagger import RegionTagger

    if args.top_k < 1 or args.batch_size < 1:
        raise ValueError(f"--top-k and --batch-size must be >= 1, got {args.top_k} and {args.batch_size}")
    if not getattr(read_checkpoint_config(resolve_checkpoint(args.model)), "detection_head", False):
        raise ValueError(f"{args.model} is not a FIBER model with the detection head: the tagger needs a "
                         f"fine-stage run")
    if args.threads:
        torch.set_num_threads(args.threads)
    data = Path(args.data)
    annotations = Path(args.annotations or data / f"grounding_{args.split}.json")
    phrases = args.phrases or category_names(load_json(annotations), str(annotations))
    min_size, max_size = fine_sizes(run_data_config(args.model), args.min_size, args.max_size)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        model = load_model(args.model, device)
    except RuntimeError as error:  # weights that do not fit the stored config (e.g. renamed parameters)
        raise ValueError(f"cannot load {args.model}: {error}") from error
    tokenizer = load_tokenizer(args.tokenizer or data / "tokenizer")
    tagger = RegionTagger(model, tokenizer, phrases, top_k=args.top_k, score_threshold=args.score_threshold,
                          nms_threshold=args.nms_threshold)
    dataset = GroundingDataset(annotations, data / "images", FineTransform([min_size], max_size))
    first: dict[int, int] = {}
    for index, record in enumerate(dataset.records):
        first.setdefault(record.original_image_id, index)
    records = {record.image_id: record for record in dataset.records}
    loader = DataLoader(Subset(dataset, list(first.values())), batch_size=args.batch_size, num_workers=args.num_workers,
                        collate_fn=partial(collate_fine, tokenizer=tokenizer, max_text_len=model.config.max_text_len))
    regions = 0

    def tagged() -> Any:
        nonlocal regions
        bar = tqdm(total=len(first), desc="extract", unit="img", dynamic_ncols=True, disable=args.no_progress)
        for batch in loader:
            entries = [records[i] for i in batch["image_ids"].tolist()]
            for region in tagger(batch["pixel_values"], batch["image_sizes"], [(e.height, e.width) for e in entries],
                                 [str(e.original_image_id) for e in entries]):
                regions += len(region.tags)
                yield region
            bar.update(len(entries))
        bar.close()

    write_region_tsv(args.out, tagged())
    return {"images": len(first), "regions": regions, "feature_dim": tagger.feature_dim, "tags": phrases,
            "min_size": min_size, "max_size": max_size}


def run(args: argparse.Namespace) -> int:
    """Extract; bad input exits with status 2 and the message."""
    done = run_timed("oscar extract", lambda: extract(args))
    if done is None:
        return 2
    summary, seconds = done
    print(f"{summary['images']} images, {summary['regions']} regions ({summary['regions'] / summary['images']:.1f} "
          f"per image), D = {summary['feature_dim']} (+6 geometry), tags {summary['tags']}, "
          f"{summary['min_size']}/{summary['max_size']} px; {seconds:.1f} s; written to {args.out}")
    return 0
