"""``fiber-fast data synth --out DIR [--images N] [--size PX] [--seed S]``: write the synthetic set."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``data synth`` options."""
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created; files overwritten)")
    parser.add_argument("--images", type=int, default=1200, metavar="N",
                        help="images in all (default 1200: 1000 train + 200 val)")
    parser.add_argument("--size", type=int, default=128, metavar="PX", help="image side in pixels (default 128)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default 0)")
    parser.add_argument("--val-images", type=int, default=None, metavar="N",
                        help="images in the val split (default: images // 6)")
    parser.add_argument("--shard-size", type=int, default=250, metavar="N",
                        help="image-caption samples per tar shard (default 250)")


def run(args: argparse.Namespace) -> int:
    """Generate the set and print what was written; 2 on bad arguments."""
    from fiber_fast.data.synth import generate

    try:
        summary = generate(args.out, images=args.images, size=args.size, seed=args.seed,
                           val_images=args.val_images, shard_size=args.shard_size)
    except ValueError as error:
        print(f"fiber-fast data synth: {error}", file=sys.stderr)
        return 2
    for split in ("train", "val"):
        part = summary[split]
        print(f"{split}: {part['images']} images, {part['captions']} captions, {part['boxes']} boxes, "
              f"{part['shards']} shards")
    print(f"tokenizer: {summary['vocab_size']} tokens; {summary['seconds']['total']:.1f} s; written to {args.out}")
    return 0
