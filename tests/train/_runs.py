"""Helpers of the DeepSpeed run tests: run YAMLs, ZeRO JSONs, a torchrun launcher, metrics reading."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from fiber_fast.train.metrics import read_metrics

REPO = Path(__file__).resolve().parents[2]

COARSE = """stage: coarse
seed: 0
max_steps: 6
model: {preset: tiny}
data: {format: captions, image_size: 64}
optim: {lr: 3.0e-4, warmup_steps: 1, schedule: linear}
batch: {micro_batch: 4, grad_accum: 1, clip_grad: 1.0}
objectives: {queue_size: 16}
log: {progress: false}
"""

FINE = """stage: fine
seed: 0
max_steps: 4
model: {preset: tiny}
data: {format: grounding, min_sizes: [64], max_size: 96}
optim: {lr: 2.0e-4, language_lr: 2.0e-5, warmup_steps: 1}
batch: {micro_batch: 2, grad_accum: 2}
log: {progress: false}
"""


def zero_json(folder: Path, stage: int) -> Path:
    path = folder / f"zero{stage}.json"
    config = {"zero_optimization": {"stage": stage}, "gradient_clipping": 1.0, "bf16": {"enabled": False},
              "zero_allow_untested_optimizer": True}
    if stage == 3:
        config["zero_optimization"]["stage3_param_persistence_threshold"] = 0
    path.write_text(json.dumps(config))
    return path


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(args: list[str], nproc: int = 2, timeout: float = 900) -> subprocess.CompletedProcess:
    """``torchrun --nproc_per_node N -m fiber_fast.train.train_cli ARGS``; raises with the output on failure."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={_free_port()}",
           "-m", "fiber_fast.train.train_cli", *args]
    result = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {result.returncode}\n{result.stdout[-4000:]}\n"
                             f"{result.stderr[-6000:]}")
    return result


def losses(run: Path) -> list[float]:
    return [record["loss"] for record in read_metrics(run / "metrics.jsonl")]
