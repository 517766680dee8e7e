"""Data for fiber-fast: readers, the synthetic set, transforms, tokenisation, collate, samplers, loaders,
and OSCAR's region files (``oscar_tsv``).

Batch formats (``collate_coarse``/``collate_fine``/``collate_oscar``) and the synthetic layout are described in the
modules' docstrings; ``build_loader(config)`` puts them together for a training stage.
"""

from fiber_fast.data.captions import CaptionRecord, CaptionsDataset, read_coco_captions
from fiber_fast.data.collate import collate_coarse, collate_fine, positive_map, tokenize
from fiber_fast.data.errors import DataError, ErrorCounter
from fiber_fast.data.grounding import GroundingDataset, GroundingRecord, read_grounding
from fiber_fast.data.images import load_image
from fiber_fast.data.loader import StageLoader, build_loader
from fiber_fast.data.oscar_collate import collate_oscar, encode_pairs, pad_regions
from fiber_fast.data.oscar_dataset import OscarDataset
from fiber_fast.data.oscar_tsv import RegionRecord, RegionStore, StoredRegions, region_geometry, write_region_tsv
from fiber_fast.data.sampler import ResumableDistributedSampler
from fiber_fast.data.shards import ShardDataset, list_shards
from fiber_fast.data.tokenizer import load_tokenizer, train_tokenizer
from fiber_fast.data.transforms import IMAGENET_MEAN, IMAGENET_STD, CoarseTransform, FineTransform, resized_size

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "CaptionRecord", "CaptionsDataset", "CoarseTransform", "DataError",
    "ErrorCounter", "FineTransform", "GroundingDataset", "GroundingRecord", "OscarDataset", "RegionRecord",
    "RegionStore", "ResumableDistributedSampler", "ShardDataset", "StageLoader", "StoredRegions", "build_loader",
    "collate_coarse", "collate_fine", "collate_oscar", "encode_pairs", "list_shards", "load_image", "load_tokenizer",
    "pad_regions", "positive_map", "read_coco_captions", "read_grounding", "region_geometry", "resized_size",
    "tokenize", "train_tokenizer", "write_region_tsv",
]
