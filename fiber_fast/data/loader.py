"""The DataLoader of a stage, built from a config dict, resumable and counting bad data.

``build_loader(config)`` returns a :class:`StageLoader`: iterate it for the batches of the rest of
the current epoch (exactly the dicts of ``collate_coarse``/``collate_fine``/``collate_oscar``); when an
epoch runs out the next begins on the following iteration. ``state_dict()`` after a batch records that batch as
consumed, so a run killed after step k and resumed from its state sees exactly the batches k+1, ...
of the uninterrupted run (same config, world size and number of workers). ``errors`` counts the
items skipped with ``on_error="skip"`` (``errors.as_dict()`` for the metrics log).

Config keys (defaults in brackets):
    root              data folder (the synthetic layout: images/, captions_*.json, grounding_*.json,
                      shards/, tokenizer/; for "oscar" also the region folders regions_*/)
    split             ["train"]
    format            "captions" | "shards" (coarse batches) | "grounding" (fine batches) | "oscar" (OSCAR
                      batches: captions joined with region features and tags by image id)
    batch_size        per rank
    image_size        coarse: square side [384]
    min_sizes, max_size   fine: shorter-side choices [480..800 step 32] and longer-side cap [1333]
    max_text_len      [40 coarse, 256 fine, 35 oscar (word tokens, specials not counted)]
    num_workers       [0]
    seed              [0]  (sampler order, shard order, shuffle buffer, multi-scale choices)
    shuffle, drop_last  [True for train, False otherwise]
    on_error          ["raise"] | "skip"
    tokenizer         [ROOT/tokenizer]
    annotations       [ROOT/captions_SPLIT.json (captions, oscar) or ROOT/grounding_SPLIT.json (grounding)]
    image_root        [ROOT/images]
    shards            [ROOT/shards/SPLIT-*.tar]
    shuffle_buffer    [1000]
  oscar only (fiber_fast.data.oscar_dataset / oscar_collate):
    regions           [ROOT/regions_SPLIT] a region folder in Oscar's TSV layout (fiber_fast.data.oscar_tsv;
                      written by `fiber-fast oscar extract`), image ids = str(caption image_id)
    max_tag_len       [30] tag tokens kept after the words
    max_regions       [50] regions per image kept (the highest scores)
    contrast          [2] 2: Oscar's matched/polluted-tags; 3: Oscar+'s 3-way (also polluted captions)
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from fiber_fast.data.captions import CaptionsDataset
from fiber_fast.data.collate import collate_coarse, collate_fine
from fiber_fast.data.errors import ErrorCounter
from fiber_fast.data.grounding import GroundingDataset
from fiber_fast.data.oscar_collate import collate_oscar
from fiber_fast.data.oscar_dataset import OscarDataset
from fiber_fast.data.sampler import ResumableDistributedSampler
from fiber_fast.data.shards import ShardDataset, list_shards
from fiber_fast.data.tokenizer import load_tokenizer
from fiber_fast.data.transforms import CoarseTransform, FineTransform

FORMATS: tuple[str, ...] = ("captions", "shards", "grounding", "oscar")
GLIP_MIN_SIZES: tuple[int, ...] = tuple(range(480, 801, 32))


class _CollateWithMeta:
    """Runs the stage's collate (in the worker) and adds ``_errors`` and ``_stream`` for the loader."""

    def __init__(self, collate: Callable[..., dict[str, torch.Tensor]], tokenizer: PreTrainedTokenizerBase,
                 max_text_len: int) -> None:
        self.collate, self.tokenizer, self.max_text_len = collate, tokenizer, max_text_len

    def __call__(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = self.collate(samples, self.tokenizer, self.max_text_len)
        batch["_errors"] = [message for sample in samples for message in sample.get("errors", ())]
        positions = [sample["_position"] for sample in samples if "_position" in sample]
        if positions:
            batch["_stream"] = max(positions, key=lambda p: p[1])
        return batch


def _rank_and_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


class StageLoader:
    """Iterable of stage batches with ``state_dict``/``load_state_dict``, ``epoch`` and ``errors``."""

    def __init__(self, dataset: CaptionsDataset | GroundingDataset | OscarDataset | ShardDataset,
                 loader_kwargs: dict[str, Any],
                 sampler: ResumableDistributedSampler | None, tokenizer: PreTrainedTokenizerBase,
                 batch_size: int, drop_last: bool) -> None:
        self.dataset, self.sampler, self.tokenizer = dataset, sampler, tokenizer
        self.batch_size, self.drop_last = batch_size, drop_last
        self._loader_kwargs = loader_kwargs
        self.epoch = 0
        self.positions: dict[int, int] = {}  # shards: raw samples consumed per stream this epoch
        self.next_stream = 0  # shards: the stream whose batch comes next
        self.errors = ErrorCounter()
        self.errors.extend(dataset.errors)

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` on the next iteration (a no-op for the current epoch, so resumes keep their place)."""
        if epoch != self.epoch:
            self.epoch, self.positions, self.next_stream = epoch, {}, 0
            if self.sampler is not None:
                self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        """Batches left in the current epoch (map-style formats only)."""
        if self.sampler is None:
            raise TypeError("a shard stream has no length; count steps instead")
        left = len(self.sampler)
        return left // self.batch_size if self.drop_last else -(-left // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        self.dataset.epoch = self.epoch
        if self.sampler is not None:
            self.sampler.set_epoch(self.epoch)
            loader = DataLoader(self.dataset, sampler=self.sampler, **self._loader_kwargs)
        else:
            self.dataset.positions, self.dataset.stream_offset = dict(self.positions), self.next_stream
            loader = DataLoader(self.dataset, **self._loader_kwargs)
        for batch in loader:
            self.errors.extend(batch.pop("_errors"))
            stream = batch.pop("_stream", None)
            if stream is not None:
                self.positions[stream[0]] = stream[1]
                self.next_stream = (stream[0] + 1) % self._num_workers
            if self.sampler is not None:
                self.sampler.advance(batch["input_ids"].shape[0])
            yield batch
        self.set_epoch(self.epoch + 1)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "positions": dict(self.positions), "next_stream": self.next_stream,
                "num_workers": self._num_workers,
                "sampler": self.sampler.state_dict() if self.sampler is not None else None,
                "errors": dict(self.errors.counts)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue where ``state`` was taken; the shard format needs the same ``num_workers``."""
        if self.sampler is None and state["positions"] and state["num_workers"] != self._num_workers:
            raise ValueError(f"shard positions were saved with num_workers={state['num_workers']}, this loader has "
                             f"{self._num_workers}: resume with the same number of workers")
        self.epoch = int(state["epoch"])
        self.positions = {int(k): int(v) for k, v in state["positions"].items()}
        self.next_stream = int(state.get("next_stream", 0))
        if self.sampler is not None:
            self.sampler.load_state_dict(state["sampler"])
        self.errors.counts = Counter(state.get("errors", {}))  # the saved counts include the construction-time ones

    @property
    def _num_workers(self) -> int:
        return max(1, int(self._loader_kwargs.get("num_workers", 0)))


def build_loader(config: Mapping[str, Any], tokenizer: PreTrainedTokenizerBase | None = None,
                 rank: int | None = None, world_size: int | None = None) -> StageLoader:
    """A :class:`StageLoader` for one stage and split from ``config`` (keys in the module docstring).

    ``rank``/``world_size`` default to torch.distributed's (or ``RANK``/``WORLD_SIZE``, else 0/1);
    ``tokenizer`` defaults to ``load_tokenizer(config["tokenizer"] or ROOT/tokenizer)``.
    """
    unknown = set(config) - {"root", "split", "format", "batch_size", "image_size", "min_sizes", "max_size",
                             "max_text_len", "num_workers", "seed", "shuffle", "drop_last", "on_error", "tokenizer",
                             "annotations", "image_root", "shards", "shuffle_buffer", "regions", "max_tag_len",
                             "max_regions", "contrast"}
    if unknown:
        raise ValueError(f"unknown data config keys {sorted(unknown)}")
    fmt = config.get("format")
    if fmt not in FORMATS:
        raise ValueError(f"data config 'format' must be one of {FORMATS}, got {fmt!r}")
    if "root" not in config or "batch_size" not in config:
        raise ValueError("data config needs 'root' and 'batch_size'")
    root, split = Path(config["root"]), config.get("split", "train")
    train = split == "train"
    batch_size, seed = int(config["batch_size"]), int(config.get("seed", 0))
    shuffle, drop_last = bool(config.get("shuffle", train)), bool(config.get("drop_last", train))
    on_error = config.get("on_error", "raise")
    rank, world_size = _rank_and_world(rank, world_size)
    if tokenizer is None:
        tokenizer = load_tokenizer(config.get("tokenizer", root / "tokenizer"))
    image_root = config.get("image_root", root / "images")
    sampler = None
    if fmt == "grounding":
        transform = FineTransform(config.get("min_sizes", GLIP_MIN_SIZES), config.get("max_size", 1333))
        dataset = GroundingDataset(config.get("annotations", root / f"grounding_{split}.json"), image_root,
                                   transform, on_error=on_error, seed=seed)
        collate, max_text_len = collate_fine, int(config.get("max_text_len", 256))
    elif fmt == "oscar":
        dataset = OscarDataset(config.get("annotations", root / f"captions_{split}.json"),
                               config.get("regions", root / f"regions_{split}"),
                               contrast=int(config.get("contrast", 2)), seed=seed, on_error=on_error)
        collate = partial(collate_oscar, max_tag_len=int(config.get("max_tag_len", 30)),
                          max_regions=int(config.get("max_regions", 50)))
        max_text_len = int(config.get("max_text_len", 35))
    else:
        transform = CoarseTransform(int(config.get("image_size", 384)))
        collate, max_text_len = collate_coarse, int(config.get("max_text_len", 40))
        if fmt == "captions":
            dataset = CaptionsDataset(config.get("annotations", root / f"captions_{split}.json"), image_root,
                                      transform, on_error=on_error)
        else:
            dataset = ShardDataset(list_shards(config.get("shards", root / "shards" / f"{split}-*.tar")), transform,
                                   on_error=on_error, seed=seed, rank=rank, world_size=world_size, shuffle=shuffle,
                                   shuffle_buffer=int(config.get("shuffle_buffer", 1000)))
    if not isinstance(dataset, ShardDataset):
        sampler = ResumableDistributedSampler(len(dataset), rank, world_size, seed, shuffle=shuffle,
                                              drop_last=drop_last)
    num_workers = int(config.get("num_workers", 0))
    if num_workers > 0:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # forked workers each tokenise
    loader_kwargs = {"batch_size": batch_size, "drop_last": drop_last, "num_workers": num_workers,
                     "collate_fn": _CollateWithMeta(collate, tokenizer, max_text_len)}
    return StageLoader(dataset, loader_kwargs, sampler, tokenizer, batch_size, drop_last)
