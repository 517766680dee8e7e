"""OSCAR pre-training items: (caption, tags, region features) joined by image id, with tag pollution.

The captions come from a COCO-captions JSON (``read_coco_captions``), the tags and regions from a
:class:`~fiber_fast.data.oscar_tsv.RegionStore` whose image ids are ``str(caption image_id)``.
Pollution follows Oscar's ``OscarTSVDataset.random_sent``: with probability 0.5 the item is the
caption with its own image's tags (relation label 0); otherwise the tag sequence is replaced by the
tags of a uniformly drawn *other* image (label 1). With ``contrast=3`` (Oscar+/VinVL,
``texta_false_prob=0.25``) the second half is split: 0.25 polluted tags (label 1), 0.25 the caption
replaced by a caption of another image (label 2). The region features always stay the item's own
image's. The draws come from ``item_generator(seed, epoch, index)``, so an item is the same whatever
the worker, read order or resume point.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from fiber_fast.data.captions import CaptionRecord, read_coco_captions
from fiber_fast.data.errors import DataError, check_on_error, handle
from fiber_fast.data.grounding import item_generator
from fiber_fast.data.oscar_tsv import RegionStore
from fiber_fast.data.records import read_with_replacement

MATCHED, POLLUTED_TAGS, POLLUTED_CAPTION = 0, 1, 2
POLLUTION_PROBABILITY = 0.5
CONTRAST_CHOICES: tuple[int, ...] = (2, 3)


class OscarDataset(Dataset):
    """One item per caption whose image has a row in the region store.

    ``dataset[i]`` -> ``{"caption": str, "tags": list[str], "region_features": (R, D + 6) float32,
    "region_scores": (R,) float32, "relation_label": int (0 matched, 1 polluted tags, 2 polluted caption),
    "image_id": int (the regions' image), "tags_image_id": int, "caption_image_id": int, "errors": list[str]}``.
    A caption whose image has no region row is reported at construction (``errors``); a corrupt region
    row raises :class:`DataError` naming file, line and image, or with ``on_error="skip"`` the item is
    replaced by the next one (its message in the item's ``errors``). Set ``dataset.epoch`` per epoch.
    """

    def __init__(self, annotations: str | Path, regions: str | Path | RegionStore, contrast: int = 2,
                 seed: int = 0, on_error: str = "raise") -> None:
        if contrast not in CONTRAST_CHOICES:
            raise ValueError(f"contrast must be one of {CONTRAST_CHOICES} (Oscar's binary or Oscar+'s 3-way), "
                             f"got {contrast!r}")
        self.on_error = check_on_error(on_error)
        self.store = regions if isinstance(regions, RegionStore) else RegionStore(regions)
        records, self.errors = read_coco_captions(annotations, self.on_error)
        self.records: list[CaptionRecord] = []
        for record in records:
            if str(record.image_id) in self.store:
                self.records.append(record)
            else:
                self.errors.append(handle(DataError(
                    "annotation", f"{annotations} annotation {record.caption_id}",
                    f"image_id {record.image_id} has no row in the region files of {self.store.root}"), self.on_error))
        self.image_ids = sorted({record.image_id for record in self.records})
        if len(self.image_ids) < 2:
            raise ValueError(f"{annotations} joined with {self.store.root} gives {len(self.image_ids)} image(s); "
                             "tag pollution needs at least 2")
        self.captions_of: dict[int, list[int]] = {image_id: [] for image_id in self.image_ids}
        for index, record in enumerate(self.records):
            self.captions_of[record.image_id].append(index)
        self._image_position = {image_id: i for i, image_id in enumerate(self.image_ids)}
        self.contrast, self.seed, self.epoch = contrast, seed, 0

    def __len__(self) -> int:
        return len(self.records)

    def draw(self, index: int) -> tuple[int, int, int]:
        """``(relation label, other image id, caption index)`` of item ``index`` this epoch. The other image
        (never the item's own) gives the polluted tags (label 1) or the polluted caption (label 2: the record
        index of one of its captions, drawn uniformly); both are drawn for every label."""
        generator = item_generator(self.seed, self.epoch, index)
        dice, other_draw, caption_draw = torch.rand(3, generator=generator).tolist()
        others = len(self.image_ids) - 1
        other = min(int(other_draw * others), others - 1)
        own = self._image_position[self.records[index].image_id]
        other_id = self.image_ids[other + 1 if other >= own else other]
        captions = self.captions_of[other_id]
        caption_index = captions[min(int(caption_draw * len(captions)), len(captions) - 1)]
        if dice >= POLLUTION_PROBABILITY:
            return MATCHED, other_id, caption_index
        if self.contrast == 3 and dice < POLLUTION_PROBABILITY / 2:
            return POLLUTED_CAPTION, other_id, caption_index
        return POLLUTED_TAGS, other_id, caption_index

    def _load(self, index: int) -> dict[str, Any]:
        record = self.records[index]
        label, other_id, caption_index = self.draw(index)
        regions = self.store.read(str(record.image_id))
        tags, tags_image, caption, caption_image = regions.tags, record.image_id, record.caption, record.image_id
        if label == POLLUTED_TAGS:
            tags, tags_image = self.store.read_tags(str(other_id)), other_id
        elif label == POLLUTED_CAPTION:
            caption, caption_image = self.records[caption_index].caption, other_id
        return {"caption": caption, "tags": tags, "region_features": regions.features,
                "region_scores": regions.scores, "relation_label": label, "image_id": record.image_id,
                "tags_image_id": tags_image, "caption_image_id": caption_image}

    def __getitem__(self, index: int) -> dict[str, Any]:
        return read_with_replacement(self._load, index, len(self), self.on_error)
