"""The ``fiber-fast`` command line (also ``python -m fiber_fast``).

Each subcommand lives in a module of its own that exposes ``add_arguments(parser)`` and
``run(args) -> int``. Only the chosen subcommand's module is imported, so ``fiber-fast --help`` and
``fiber-fast bench`` never import DeepSpeed or the model stack.

Launchers: ``torchrun --nproc_per_node 2 -m fiber_fast train ...`` and
``deepspeed --module fiber_fast train ...`` both work; the ``deepspeed`` launcher's
``--local_rank=N`` argument is accepted before the subcommand (the rank is read from the
environment, ``LOCAL_RANK``, which every launcher sets).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Subcommand:
    """A ``fiber-fast`` subcommand: its path of names, the module that implements it, one help line."""

    names: tuple[str, ...]
    module: str
    help: str


SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand(("data", "synth"), "fiber_fast.data.synth_cli",
               "write the synthetic image-text-box set (captions JSON, shards, grounding JSON, tokenizer)"),
    Subcommand(("train",), "fiber_fast.train.train_cli", "train FIBER (coarse, fine) or OSCAR under DeepSpeed"),
    Subcommand(("eval",), "fiber_fast.eval.eval_cli", "evaluate a run: retrieval, phrase grounding or detection"),
    Subcommand(("oscar", "extract"), "fiber_fast.eval.extract_cli",
               "tag images with a fine-stage FIBER run: OSCAR region features and tags in Oscar's TSV layout"),
    Subcommand(("demo",), "fiber_fast.demo", "synthetic data -> coarse -> fine -> evaluation, table and pictures"),
    Subcommand(("bench",), "fiber_fast.bench_cli",
               "run the microbenchmarks (speed, memory, projected GPU time) and print tables"),
)
_GROUP_HELP = {"data": "datasets: `fiber-fast data synth` writes the synthetic set",
               "oscar": "OSCAR inputs: `fiber-fast oscar extract` writes region features and tags"}


def _chosen(argv: Sequence[str]) -> tuple[str, ...]:
    """The subcommand names at the front of ``argv`` (options before them skipped)."""
    words = [arg for arg in argv if not arg.startswith("-")]
    for command in SUBCOMMANDS:
        if tuple(words[:len(command.names)]) == command.names:
            return command.names
    return ()


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The ``fiber-fast`` parser; the arguments of the subcommand named in ``argv`` are filled in."""
    from fiber_fast import __version__

    parser = argparse.ArgumentParser(prog="fiber-fast", description="fiber-fast: fused kernels, model and "
                                     "two-stage trainer for FIBER-style vision-language pre-training.")
    parser.add_argument("--version", action="version", version=f"fiber-fast {__version__}")
    parser.add_argument("--local_rank", "--local-rank", type=int, default=None, help=argparse.SUPPRESS)
    chosen = _chosen(argv)
    groups: dict[tuple[str, ...], argparse._SubParsersAction] = {
        (): parser.add_subparsers(dest="command", metavar="COMMAND", required=True)}
    for command in SUBCOMMANDS:
        for depth in range(1, len(command.names) + 1):
            prefix = command.names[:depth]
            if prefix in groups:
                continue
            name = prefix[-1]
            if depth < len(command.names):
                group = groups[prefix[:-1]].add_parser(name, help=_GROUP_HELP.get(name))
                groups[prefix] = group.add_subparsers(dest=f"{name}_command", metavar="COMMAND", required=True)
                continue
            sub = groups[prefix[:-1]].add_parser(name, help=command.help, description=command.help)
            if command.names == chosen:
                module = importlib.import_module(command.module)
                module.add_arguments(sub)
                sub.set_defaults(func=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``fiber-fast``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(argv).parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
