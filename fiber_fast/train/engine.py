"""Process group and DeepSpeed engine set-up for the trainer (one process, torchrun or deepspeed launcher)."""

from __future__ import annotations

import json
import os
import random
import socket
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import TrainConfig
from .distributed import is_distributed

FORBIDDEN_KEYS = ("optimizer", "scheduler")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def init_distributed() -> None:
    """Join the launcher's process group, or make a 1-rank group when run as one plain process.

    Backend: NCCL with CUDA, gloo otherwise (what DeepSpeed's CPU accelerator uses).
    """
    if is_distributed():
        return
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=os.environ.get("MASTER_PORT", str(_free_port())))
    import deepspeed

    deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def deepspeed_config(cfg: TrainConfig, path: str | Path | None) -> dict[str, Any]:
    """The DeepSpeed JSON (or one built from the YAML's ``zero_stage``/``precision``) with the batch keys filled.

    Keys the JSON sets win over the YAML; absent or ``"auto"`` ones come from ``batch``. The trainer builds
    the optimizer and scheduler itself, so the JSON must not name them.
    """
    if path is not None:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    else:
        config = {"zero_optimization": {"stage": cfg.zero_stage}, "bf16": {"enabled": cfg.precision == "bf16"},
                  "fp16": {"enabled": cfg.precision == "fp16"}}
    clashing = [key for key in FORBIDDEN_KEYS if key in config]
    if clashing:
        raise ValueError(f"DeepSpeed config {path} sets {clashing}: the trainer builds AdamW with FIBER's parameter "
                         "groups and its own lr schedule; remove those keys (set optim: in the run YAML)")
    defaults = {"train_micro_batch_size_per_gpu": cfg.batch.micro_batch,
                "gradient_accumulation_steps": cfg.batch.grad_accum, "gradient_clipping": cfg.batch.clip_grad,
                "zero_allow_untested_optimizer": True, "steps_per_print": 10**9}
    for key, value in defaults.items():
        if config.get(key, "auto") == "auto":
            config[key] = value
    if config.get("train_batch_size") == "auto":
        del config["train_batch_size"]
    return config


def precision_of(config: dict[str, Any]) -> torch.dtype:
    """Model dtype a DeepSpeed config trains in."""
    if config.get("bf16", {}).get("enabled"):
        return torch.bfloat16
    if config.get("fp16", {}).get("enabled"):
        return torch.float16
    return torch.float32
