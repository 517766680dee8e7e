"""A small synthetic set shared by the data tests (written once per session by the real generator)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from transformers import PreTrainedTokenizerBase

from fiber_fast.data.synth import generate
from fiber_fast.data.tokenizer import load_tokenizer

SYNTH_IMAGES, SYNTH_VAL, SYNTH_SIZE, SYNTH_SHARD = 48, 8, 64, 20


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(out, images=SYNTH_IMAGES, size=SYNTH_SIZE, seed=3, val_images=SYNTH_VAL, shard_size=SYNTH_SHARD)
    return out


@pytest.fixture(scope="session")
def tokenizer(synth_dir: Path) -> PreTrainedTokenizerBase:
    return load_tokenizer(synth_dir / "tokenizer")


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """Per-image tensor ops are tiny: one intra-op thread (as in DataLoader workers) avoids contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
