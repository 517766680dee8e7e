"""build_loader: every format, and kill-and-resume giving exactly the uninterrupted batches."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from fiber_fast.data import StageLoader, build_loader, load_tokenizer, train_tokenizer


def _config(root: Path, fmt: str, **extra) -> dict:
    base = {"root": str(root), "format": fmt, "batch_size": 4, "image_size": 32, "min_sizes": [48, 64, 80],
            "max_size": 96, "seed": 5}
    return {**base, **extra}


def _take(loader: StageLoader, count: int) -> list[dict[str, torch.Tensor]]:
    """``count`` batches, running over epoch ends as a step-based trainer does."""
    out: list[dict[str, torch.Tensor]] = []
    while len(out) < count:
        for batch in loader:
            out.append(batch)
            if len(out) == count:
                break
    return out


def _assert_same(first: list[dict], second: list[dict]) -> None:
    assert len(first) == len(second)
    for a, b in zip(first, second, strict=True):
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


@pytest.mark.parametrize("fmt,num_workers,stop", [
    ("captions", 0, 7), ("captions", 0, 20), ("captions", 2, 5), ("grounding", 0, 4), ("shards", 2, 5),
    ("shards3", 2, 9), ("shards3", 2, 12)])
def test_kill_and_resume_sees_the_same_remaining_batches(synth_dir: Path, fmt: str, num_workers: int,
                                                         stop: int) -> None:
    """Epochs: 20 captions batches, 10 grounding, 20 shards (2 workers x 10); with 3 shards ("shards3")
    the 2 workers' streams hold 10 and 5 batches, so the kill at 12 comes after one stream ran out.
    The kill at 20 is at an epoch end (the resumed pass over epoch 0 is empty, epoch 1 follows)."""
    config = _config(synth_dir, fmt, num_workers=num_workers)
    if fmt.startswith("shards"):
        config.update(format="shards", shuffle_buffer=16)
    if fmt == "shards3":
        config["shards"] = str(synth_dir / "shards" / "train-00000[0-2].tar")
    total = stop + 8  # crosses an epoch end
    uninterrupted = _take(build_loader(config), total)
    killed = build_loader(config)
    before = _take(killed, stop)
    state = killed.state_dict()
    resumed = build_loader(config)
    resumed.load_state_dict(state)
    _assert_same(before + _take(resumed, total - stop), uninterrupted)


def test_batches_per_format_and_epoch_advance(synth_dir: Path) -> None:
    coarse = build_loader(_config(synth_dir, "captions"))
    assert len(coarse) == 20 and coarse.epoch == 0
    batches = list(coarse)
    assert len(batches) == 20 and coarse.epoch == 1 and len(coarse) == 20
    assert set(batches[0]) == {"pixel_values", "input_ids", "attention_mask", "image_ids"}
    assert batches[0]["pixel_values"].shape == (4, 3, 32, 32)
    assert list(coarse)[0]["image_ids"].tolist() != batches[0]["image_ids"].tolist()  # epoch 1 reshuffles
    fine = next(iter(build_loader(_config(synth_dir, "grounding", split="val"))))
    assert set(fine) == {"pixel_values", "pixel_mask", "image_sizes", "input_ids", "attention_mask", "boxes",
                         "box_mask", "positive_map", "image_ids"}
    val = build_loader(_config(synth_dir, "captions", split="val", batch_size=5))
    assert [b["input_ids"].shape[0] for b in val] == [5, 5, 5, 1]  # val: no shuffle, no drop_last
    with pytest.raises(ValueError, match="format"):
        build_loader(_config(synth_dir, "coco"))
    with pytest.raises(ValueError, match="unknown data config keys"):
        build_loader({**_config(synth_dir, "captions"), "batchsize": 3})


def test_ranks_see_disjoint_samples(synth_dir: Path) -> None:
    seen = []
    for rank in range(2):
        loader = build_loader(_config(synth_dir, "captions", batch_size=1), rank=rank, world_size=2)
        seen.append({(int(b["image_ids"]), tuple(b["input_ids"][0].tolist())) for b in loader})
    assert len(seen[0]) + len(seen[1]) == 80 and not seen[0] & seen[1]


def test_shard_resume_needs_the_same_worker_count(synth_dir: Path) -> None:
    loader = build_loader(_config(synth_dir, "shards"))
    _take(loader, 1)
    other = build_loader(_config(synth_dir, "shards", num_workers=2))
    with pytest.raises(ValueError, match="same number of workers"):
        other.load_state_dict(loader.state_dict())
    with pytest.raises(TypeError, match="no length"):
        len(other)


def test_tokenizer_reloads_offline_and_trains_deterministically(synth_dir: Path, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    reloaded = AutoTokenizer.from_pretrained(str(synth_dir / "tokenizer"))
    ours = load_tokenizer(synth_dir / "tokenizer")
    assert reloaded.is_fast and reloaded.get_vocab() == ours.get_vocab()
    assert [reloaded.convert_tokens_to_ids(t) for t in ("<s>", "<pad>", "</s>", "<unk>", "<mask>")] == [0, 1, 2, 3, 4]
    caption = "a small red circle to the left of a large blue square"
    ids = reloaded(caption)["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2 and reloaded.decode(ids, skip_special_tokens=True) == caption
    assert len(ids) == 2 + len(caption.split())  # every caption word is one token
    texts = ["a red circle", "a blue square above a red circle"] * 5
    first, second = train_tokenizer(texts, tmp_path / "a"), train_tokenizer(texts, tmp_path / "b")
    assert first.get_vocab() == second.get_vocab()
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tokenizer(tmp_path / "none")


def test_iterating_twice_mid_epoch_continues(synth_dir: Path) -> None:
    loader = build_loader(_config(synth_dir, "captions"))
    whole = list(itertools.islice(iter(build_loader(_config(synth_dir, "captions"))), 6))
    _assert_same(_take(loader, 3) + _take(loader, 3), whole)
