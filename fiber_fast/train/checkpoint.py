"""Atomic DeepSpeed checkpoints of a run (keep the last K), RNG capture, and ``--init`` weight loading.

Layout: ``RUN/checkpoints/step00000012/`` (DeepSpeed's files for one tag) and ``RUN/checkpoints/latest``
(the tag to resume from). A save writes ``tmp-step...`` first, then rank 0 renames it to its tag and
replaces ``latest`` (write + ``os.replace``): a kill at any point leaves ``latest`` naming a complete
checkpoint. The filesystem must be shared by the ranks (DeepSpeed's own assumption for one save dir).
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from fiber_fast.models.checkpoint import RUN_WEIGHTS

from .distributed import is_distributed, rank, world_size

LATEST = "latest"
TMP_PREFIX = "tmp-"
OLD_PREFIX = "old-"


def tag_of(step: int) -> str:
    return f"step{step:08d}"


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU, and CUDA when present) RNG states of this process."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` captured."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def gather_objects(value: Any) -> list[Any]:
    """``value`` of every rank, in rank order (a one-element list without a process group)."""
    if not is_distributed():
        return [value]
    values: list[Any] = [None] * world_size()
    dist.all_gather_object(values, value)
    return values


def _barrier() -> None:
    if is_distributed():
        dist.barrier()


class CheckpointManager:
    """Saves/loads a run's DeepSpeed checkpoints atomically and keeps the last ``keep_last``."""

    def __init__(self, run_dir: str | Path, keep_last: int = 2) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.dir = Path(run_dir) / "checkpoints"
        self.keep_last = keep_last

    def latest_tag(self) -> str | None:
        """The tag ``latest`` names, if that checkpoint folder exists."""
        path = self.dir / LATEST
        if not path.is_file():
            return None
        tag = path.read_text(encoding="utf-8").strip()
        return tag if tag and (self.dir / tag).is_dir() else None

    def save(self, engine: Any, step: int, client_state: dict[str, Any]) -> str:
        """Collective: every rank calls it. Returns the tag written."""
        tag, tmp = tag_of(step), TMP_PREFIX + tag_of(step)
        if rank() == 0:
            self.dir.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(self.dir / tmp, ignore_errors=True)
        _barrier()
        engine.save_checkpoint(str(self.dir), tag=tmp, client_state=client_state, save_latest=False)
        _barrier()
        if rank() == 0:
            final = self.dir / tag
            if final.exists():  # a step redone after a resume: move the old copy aside first
                final.rename(self.dir / (OLD_PREFIX + tag))
            (self.dir / tmp).rename(final)
            pointer = self.dir / (LATEST + ".tmp")
            pointer.write_text(tag, encoding="utf-8")
            os.replace(pointer, self.dir / LATEST)
            self._prune(keep=tag)
        _barrier()
        return tag

    def _prune(self, keep: str) -> None:
        tags = sorted(p.name for p in self.dir.iterdir() if p.is_dir() and p.name.startswith("step"))
        stale = [t for t in tags[:-self.keep_last] if t != keep]
        stale += [p.name for p in self.dir.iterdir() if p.is_dir() and p.name.startswith((TMP_PREFIX, OLD_PREFIX))]
        for name in stale:
            shutil.rmtree(self.dir / name, ignore_errors=True)

    def load(self, engine: Any) -> dict[str, Any] | None:
        """Load the latest complete checkpoint into ``engine`` (model, optimizer, scheduler); its client state."""
        tag = self.latest_tag()
        if tag is None:
            return None
        path, client_state = engine.load_checkpoint(str(self.dir), tag=tag, load_optimizer_states=True,
                                                    load_lr_scheduler_states=True)
        if path is None:
            raise RuntimeError(f"DeepSpeed could not load checkpoint {self.dir / tag}")
        return {**(client_state or {}), "tag": tag}


def _unwrap_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keys of a task's state dict (``model.`` prefix, DeepSpeed's ``module.``) -> FiberModel keys."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "model."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def read_init_state(source: str | Path) -> dict[str, torch.Tensor]:
    """FiberModel weights of a coarse run or checkpoint for ``--init``.

    ``source``: a ``.safetensors`` file (``models.save_checkpoint``), a run folder (its ``model.safetensors``,
    else its latest DeepSpeed checkpoint), a ``checkpoints`` folder, or one DeepSpeed tag folder.
    """
    source = Path(source)
    if source.is_file():
        from safetensors.torch import load_file

        return _unwrap_keys(load_file(str(source)))
    if (source / RUN_WEIGHTS).is_file():
        return read_init_state(source / RUN_WEIGHTS)
    for folder in (source / "checkpoints", source):
        if (folder / LATEST).is_file():
            tag = (folder / LATEST).read_text(encoding="utf-8").strip()
            return _read_deepspeed(folder, tag)
    if any(source.glob("*model_states.pt")):
        return _read_deepspeed(source.parent, source.name)
    raise FileNotFoundError(f"--init {source}: no .safetensors file, run folder or DeepSpeed checkpoint there")


def _read_deepspeed(folder: Path, tag: str) -> dict[str, torch.Tensor]:
    if any((folder / tag).glob("*optim_states.pt")):
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        return _unwrap_keys(get_fp32_state_dict_from_zero_checkpoint(str(folder), tag=tag))
    states = torch.load(folder / tag / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)
    return _unwrap_keys(states["module"])


def load_shared_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, list[str]]:
    """Copy every entry of ``state`` whose name and shape match ``model``'s; report the rest.

    A Swin ``relative_position_bias_table`` whose window differs (a coarse model at a small size
    shrinks its last stage's window; the fine stage's detection variant keeps it) is interpolated
    bicubically to the model's table, as Swin checkpoints are moved between window sizes.

    Returns ``{"loaded", "resized" (tables interpolated, also in "loaded"), "missing" (model keys not in
    state; a tied alias of a loaded tensor, e.g. the MLM decoder of the word embeddings, counts as
    loaded), "unexpected" (state keys not in model), "mismatched" (same name, other shape, not loaded)}``.
    """
    from fiber_fast.models.checkpoint import resize_relative_position_table

    own = model.state_dict(keep_vars=True)
    shared = {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    resized = {k: resize_relative_position_table(v, own[k].shape[0]) for k, v in state.items()
               if k.endswith("relative_position_bias_table") and k in own and k not in shared
               and v.shape[1:] == own[k].shape[1:]}
    shared.update(resized)
    model.load_state_dict(shared, strict=False)
    loaded_storage = {own[k].data_ptr() for k in shared}
    missing = [k for k in own if k not in state and own[k].data_ptr() not in loaded_storage]
    return {"loaded": sorted(shared), "resized": sorted(resized), "missing": sorted(missing),
            "unexpected": sorted(set(state) - set(own)),
            "mismatched": sorted(k for k in state if k in own and k not in shared)}
