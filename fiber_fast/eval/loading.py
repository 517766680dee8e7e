"""What ``fiber-fast eval`` loads: the model of a run or checkpoint, the run's data sizes, the sharded loaders."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch
import yaml
from torch.utils.data import DataLoader

from fiber_fast.models.checkpoint import RUN_CONFIG, RUN_WEIGHTS

from .distributed import ShardSampler


def resolve_checkpoint(run_or_checkpoint: str | Path) -> Path:
    """The ``.safetensors`` file of ``run_or_checkpoint``: the file itself, or ``RUN/model.safetensors``."""
    path = Path(run_or_checkpoint)
    if path.is_dir():
        path = path / RUN_WEIGHTS
        if not path.is_file():
            raise FileNotFoundError(f"{run_or_checkpoint} is a folder without {RUN_WEIGHTS} (a run writes it when "
                                    f"training ends); pass a run folder or a .safetensors file")
    elif not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if path.suffix != ".safetensors":
        raise ValueError(f"checkpoint {path} must be a .safetensors file written by models.save_checkpoint")
    return path


def stored_config(run_or_checkpoint: str | Path, family: str = "fiber") -> tuple[Path, Any]:
    """The ``.safetensors`` file of ``run_or_checkpoint`` and the config stored in it (its header only), which
    must be of ``family`` (``"fiber"``: ``FiberConfig``, ``"oscar"``: ``OscarConfig``); a checkpoint of the
    other family raises ``ValueError`` naming the ``--model`` flag that evaluates it."""
    from fiber_fast.models import FiberConfig, OscarConfig, read_checkpoint_config

    families = {"fiber": FiberConfig, "oscar": OscarConfig}
    if family not in families:
        raise ValueError(f"family must be one of {sorted(families)}, got {family!r}")
    path = resolve_checkpoint(run_or_checkpoint)
    config = read_checkpoint_config(path)
    if not isinstance(config, families[family]):
        other = next(name for name, cls in families.items() if isinstance(config, cls))
        raise ValueError(f"{run_or_checkpoint} holds a {type(config).__name__} model, not a "
                         f"{families[family].__name__} one: evaluate it with --model {other}")
    return path, config


def load_model(run_or_checkpoint: str | Path, device: str | torch.device = "cpu", eager: bool = False,
               family: str = "fiber") -> torch.nn.Module:
    """The model of ``family`` (``"fiber"``: ``build_fiber``, ``"oscar"``: ``build_oscar``) from the config stored
    in the checkpoint (``stored_config``: a checkpoint of the other family is refused), weights loaded strictly,
    in eval mode."""
    from fiber_fast.models import build_fiber, build_oscar, load_checkpoint

    path, config = stored_config(run_or_checkpoint, family)
    model = {"fiber": build_fiber, "oscar": build_oscar}[family](config, eager=eager)
    load_checkpoint(model, path)
    return model.to(device).eval()


def run_data_config(run_or_checkpoint: str | Path) -> dict[str, Any]:
    """The ``data`` section a run trained with (``RUN/train_config.yaml``), ``{}`` for a bare checkpoint."""
    path = Path(run_or_checkpoint)
    config = (path if path.is_dir() else path.parent) / RUN_CONFIG
    if not config.is_file():
        return {}
    return dict((yaml.safe_load(config.read_text(encoding="utf-8")) or {}).get("data") or {})


def eval_loader(task: str, data: str | Path, split: str, tokenizer: Any, batch_size: int, max_text_len: int,
                image_size: int | None = None, min_size: int | None = None, max_size: int | None = None,
                annotations: str | Path | None = None, num_workers: int = 0) -> DataLoader:
    """A loader over ``DATA``'s split, sharded over ranks without repeats (``ShardSampler``), in file order.

    retrieval: ``captions_SPLIT.json`` (coarse batches, square ``image_size``); grounding/detection:
    ``grounding_SPLIT.json`` (fine batches, shorter side ``min_size``, longer side at most ``max_size``).
    ``annotations`` replaces the JSON; images come from ``DATA/images``.
    """
    from fiber_fast.data import (
        CaptionsDataset,
        CoarseTransform,
        FineTransform,
        GroundingDataset,
        collate_coarse,
        collate_fine,
    )

    data = Path(data)
    if task == "retrieval":
        dataset = CaptionsDataset(annotations or data / f"captions_{split}.json", data / "images",
                                  CoarseTransform(image_size))
        collate = partial(collate_coarse, tokenizer=tokenizer, max_text_len=max_text_len)
    else:
        dataset = GroundingDataset(annotations or data / f"grounding_{split}.json", data / "images",
                                   FineTransform([min_size], max_size))
        collate = partial(collate_fine, tokenizer=tokenizer, max_text_len=max_text_len)
    return DataLoader(dataset, batch_size=batch_size, sampler=ShardSampler(len(dataset)), collate_fn=collate,
                      num_workers=num_workers)
