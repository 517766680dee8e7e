"""webdataset tar shards in img2dataset layout (``KEY.jpg`` + ``KEY.txt`` [+ ``KEY.json``]), streamed.

:class:`ShardDataset` is an ``IterableDataset``. Each epoch it orders the shards with ``seed + epoch``
(the same order on every rank), gives each (rank, worker) stream its part - whole shards when there
are at least as many shards as streams, else every n-th sample - and shuffles samples through a buffer
seeded by (seed, epoch, rank, worker). A stream is a pure function of those numbers, so it resumes by
skipping the raw samples it had consumed (``positions[worker]``, set by the loader from each batch's
``_position``) without decoding them. Tar reading is webdataset's (``tariterators.tarfile_samples``).

The DataLoader takes batches from its workers in turn, starting at worker 0, so a resumed loader
rotates the streams (``stream_offset``: DataLoader worker ``w`` reads stream ``(w + offset) % W``) to
continue the turn where the interrupted run stopped.
"""

from __future__ import annotations

import glob
import json
import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info
from webdataset.tariterators import tarfile_samples

from fiber_fast.data.errors import DataError, check_on_error, handle
from fiber_fast.data.images import decode_image_bytes

IMAGE_SUFFIXES: tuple[str, ...] = ("jpg", "jpeg", "png", "webp")
TAR_BLOCK = 512


def list_shards(pattern: str | Path) -> list[str]:
    """Sorted shard paths of a glob pattern (``DIR/train-*.tar``) or a folder (its ``*.tar``)."""
    pattern = str(pattern)
    paths = sorted(glob.glob(str(Path(pattern) / "*.tar"))) if Path(pattern).is_dir() else sorted(glob.glob(pattern))
    if not paths:
        raise FileNotFoundError(f"no tar shards match {pattern}")
    return paths


def _image_id(key: str, meta: dict[str, Any]) -> int:
    """``image_id`` from the sample's JSON, else the key's digits, else a stable CRC32 of the key."""
    if isinstance(meta.get("image_id"), int):
        return meta["image_id"]
    digits = key.split("_")[0]
    return int(digits) if digits.isdigit() else zlib.crc32(key.encode())


class ShardDataset(IterableDataset):
    """Streams ``{"pixel_values", "caption", "image_id", "errors", "_position"}`` items from tar shards.

    ``urls``: shard paths (see :func:`list_shards`); ``transform``: PIL image -> tensor (coarse);
    ``rank``/``world_size``: this process's place; ``positions``: raw samples each worker has already
    consumed this epoch and ``stream_offset`` (resume); ``_position`` = ``(stream, raw samples consumed
    after this item)``.
    A sample without an image or caption, an undecodable image or an unreadable tar raises
    :class:`DataError` naming the shard and key, or with ``on_error="skip"`` is dropped and reported in
    the next item's ``errors`` (a truncated tar: its readable samples are kept, the break reported once).
    """

    def __init__(self, urls: list[str], transform: Callable[[Any], torch.Tensor] | None = None,
                 on_error: str = "raise", seed: int = 0, rank: int = 0, world_size: int = 1,
                 shuffle: bool = True, shuffle_buffer: int = 1000) -> None:
        super().__init__()
        if not urls:
            raise ValueError("urls must list at least one shard")
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.urls = list(urls)
        self.transform = transform
        self.on_error = check_on_error(on_error)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.shuffle, self.shuffle_buffer = shuffle, shuffle_buffer
        self.epoch = 0
        self.positions: dict[int, int] = {}
        self.stream_offset = 0
        self.errors: list[str] = []

    def _raw_samples(self, urls: list[str], pending: list[str]) -> Iterator[dict[str, Any]]:
        """webdataset's raw samples of ``urls`` in order; an unreadable tar is reported once, then left."""
        for url in urls:
            reported = False
            if os.path.isfile(url) and os.path.getsize(url) % TAR_BLOCK:
                # tarfile reads a cut inside a header block as a clean end; the size gives such a cut away
                pending.append(handle(DataError("shard", url, f"unreadable tar (size {os.path.getsize(url)} is not "
                                                f"a multiple of {TAR_BLOCK} bytes: truncated)"), self.on_error))
                reported = True

            def on_tar_error(exn: Exception, url: str = url) -> bool:
                nonlocal reported
                if isinstance(exn, DataError):  # ours, raised one level down; webdataset appended to its args
                    raise DataError(exn.kind, exn.source, exn.reason) from None
                if not reported:
                    reason = str(exn.args[0]).split(" @ ")[0] if exn.args else repr(exn)
                    pending.append(handle(DataError("shard", url, f"unreadable tar ({reason})"), self.on_error))
                    reported = True
                return True

            yield from tarfile_samples([{"url": url}], handler=on_tar_error)

    def stream_parts(self, worker: int, num_workers: int) -> tuple[list[str], int, int]:
        """The shards one stream reads, and its sample stride and offset within them."""
        order = list(self.urls)
        if self.shuffle:
            perm = torch.randperm(len(order), generator=torch.Generator().manual_seed(self.seed + self.epoch))
            order = [order[i] for i in perm.tolist()]
        streams = self.world_size * num_workers
        stream = self.rank * num_workers + worker
        if len(order) >= streams:
            return order[stream::streams], 1, 0
        return order, streams, stream

    def _shuffled(self, samples: Iterator[dict[str, Any]], worker: int) -> Iterator[dict[str, Any]]:
        if not self.shuffle or self.shuffle_buffer <= 1:
            yield from samples
            return
        rng = np.random.default_rng([self.seed, self.epoch, self.rank, worker])
        buffer: list[dict[str, Any]] = []
        for sample in samples:
            if len(buffer) < self.shuffle_buffer:
                buffer.append(sample)
                continue
            slot = int(rng.integers(len(buffer)))
            buffer[slot], sample = sample, buffer[slot]
            yield sample
        order = rng.permutation(len(buffer))
        yield from (buffer[i] for i in order)

    def _decode(self, raw: dict[str, Any]) -> dict[str, Any]:
        source = f"{raw.get('__url__', '?')} key {raw.get('__key__', '?')}"
        image_suffix = next((s for s in IMAGE_SUFFIXES if s in raw), None)
        if image_suffix is None or "txt" not in raw:
            raise DataError("sample", source, f"needs an image ({'/'.join(IMAGE_SUFFIXES)}) and a txt caption, "
                            f"has {sorted(k for k in raw if not k.startswith('__'))}")
        try:
            caption = raw["txt"].decode("utf-8").strip()
            meta = json.loads(raw["json"]) if "json" in raw else {}
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise DataError("sample", source, f"caption or json unreadable ({error})") from error
        image = decode_image_bytes(raw[image_suffix], f"{source}.{image_suffix}")
        return {"pixel_values": self.transform(image) if self.transform is not None else image,
                "caption": caption, "image_id": _image_id(raw["__key__"], meta if isinstance(meta, dict) else {})}

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        worker = (worker + self.stream_offset) % num_workers
        urls, stride, offset = self.stream_parts(worker, num_workers)
        pending: list[str] = []
        raw_stream = self._raw_samples(urls, pending)
        if stride > 1:
            raw_stream = (s for i, s in enumerate(raw_stream) if i % stride == offset)
        skip = self.positions.get(worker, 0)
        for position, raw in enumerate(self._shuffled(raw_stream, worker), start=1):
            if position <= skip:
                continue
            try:
                item = self._decode(raw)
            except DataError as error:
                pending.append(handle(error, self.on_error))
                continue
            item["errors"], pending = pending, []
            item["_position"] = (worker, position)
            yield item
