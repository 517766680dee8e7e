"""``fiber-fast train``: FIBER (coarse or fine stage) or OSCAR training under DeepSpeed (also
``python -m fiber_fast.train.train_cli``).

```
fiber-fast train [--model fiber] --stage coarse|fine --config FILE --data DIR --out RUN [--deepspeed DS.json]
                 [--max-steps N] [--save-every K] [--stop-at S] [--resume] [--init RUN_OR_CKPT]
fiber-fast train --model oscar --config FILE --data DIR --out RUN [--deepspeed DS.json] [--max-steps N]
                 [--save-every K] [--stop-at S] [--resume]
```
Runs as one process (a 1-rank gloo group), under ``torchrun`` or under the ``deepspeed`` launcher.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .config import OSCAR_STAGE

MODELS = ("fiber", "oscar")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``train`` flags (issue 13's contract)."""
    parser.add_argument("--model", default="fiber", choices=MODELS, help="fiber (default: the two FIBER stages) or "
                        "oscar (word-tag-region pre-training: masked tokens + tag pollution, one stage)")
    parser.add_argument("--stage", choices=("coarse", "fine"), help="--model fiber: coarse (ITC+ITM+MLM) or fine "
                        "(ATSS grounding); required there, not given with --model oscar")
    parser.add_argument("--config", required=True, metavar="FILE", help="run YAML (schema: fiber_fast/train/config.py)")
    parser.add_argument("--data", metavar="DIR", help="data root (overrides data.root of the config)")
    parser.add_argument("--out", required=True, metavar="RUN", help="run folder: checkpoints/, metrics.jsonl, "
                        "tensorboard/, curves.png, model.safetensors")
    parser.add_argument("--deepspeed", metavar="DS.json", help="DeepSpeed JSON (ZeRO stage, precision, clipping, "
                        "batch); default: built from the YAML's zero_stage/precision/batch")
    parser.add_argument("--max-steps", type=int, metavar="N", help="optimizer steps (the schedule's length)")
    parser.add_argument("--save-every", type=int, metavar="K", help="checkpoint every K steps (and at the end)")
    parser.add_argument("--stop-at", type=int, metavar="S", help="end the process after step S as a kill would "
                        "(no extra checkpoint); for resume tests")
    parser.add_argument("--resume", action="store_true", help="continue from the latest complete checkpoint in RUN")
    parser.add_argument("--init", metavar="RUN_OR_CKPT", help="fine stage: load the shared weights of a coarse run, "
                        "checkpoint folder or .safetensors file (FIBER only)")


def _bad_combination(args: argparse.Namespace) -> str | None:
    """Why ``--model``/``--stage``/``--init`` do not go together, or None."""
    if args.model == "fiber" and args.stage is None:
        return "--model fiber needs --stage coarse or --stage fine"
    if args.model == "oscar" and args.stage is not None:
        return (f"--stage {args.stage} is a FIBER stage; --model oscar trains in one stage (leave --stage out, or "
                f"train FIBER with --model fiber --stage {args.stage})")
    if args.model == "oscar" and args.init is not None:
        return "--init loads FIBER coarse weights into a FIBER model; it does not apply to --model oscar"
    return None


def run(args: argparse.Namespace) -> int:
    """Parse the config and train; ValueError/FileNotFoundError become exit status 2 with the message."""
    from .config import load_config
    from .trainer import RunOptions, train

    problem = _bad_combination(args)
    if problem is not None:
        print(f"fiber-fast train: {problem}", file=sys.stderr)
        return 2
    for flag in ("max_steps", "save_every", "stop_at"):
        value = getattr(args, flag)
        if value is not None and value < (0 if flag == "save_every" else 1):
            print(f"fiber-fast train: --{flag.replace('_', '-')} must be positive, got {value}", file=sys.stderr)
            return 2
    try:
        cfg = load_config(args.config, OSCAR_STAGE if args.model == "oscar" else args.stage)
    except (ValueError, FileNotFoundError) as error:
        print(f"fiber-fast train: {error}", file=sys.stderr)
        return 2
    options = RunOptions(run_dir=Path(args.out), data_root=args.data, deepspeed=args.deepspeed,
                         max_steps=args.max_steps, save_every=args.save_every, stop_at=args.stop_at,
                         resume=args.resume, init=args.init)
    return train(cfg, options)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fiber-fast train", description=__doc__.splitlines()[0])
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
