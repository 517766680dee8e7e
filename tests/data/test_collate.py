"""collate_coarse / collate_fine: shapes, dtypes, padding, truncation and the positive map."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import PreTrainedTokenizerBase

from fiber_fast.data import GroundingDataset, collate_coarse, collate_fine, positive_map, tokenize
from fiber_fast.data.transforms import FineTransform

CAPTIONS = ["a small red circle", "a large blue square to the left of a small green triangle, and a small red circle"]


def test_collate_coarse_pads_to_the_longest_caption(tokenizer: PreTrainedTokenizerBase) -> None:
    samples = [{"pixel_values": torch.full((3, 8, 8), float(i)), "caption": c, "image_id": 10 + i}
               for i, c in enumerate(CAPTIONS)]
    batch = collate_coarse(samples, tokenizer, max_text_len=40)
    assert set(batch) == {"pixel_values", "input_ids", "attention_mask", "image_ids"}
    singles = [tokenizer(c)["input_ids"] for c in CAPTIONS]
    longest = max(len(s) for s in singles)
    assert batch["input_ids"].shape == (2, longest) and batch["input_ids"].dtype == torch.int64
    assert batch["attention_mask"].dtype == torch.int64 and batch["image_ids"].tolist() == [10, 11]
    assert batch["pixel_values"].shape == (2, 3, 8, 8) and batch["pixel_values"].dtype == torch.float32
    for row, ids in enumerate(singles):
        assert batch["input_ids"][row, :len(ids)].tolist() == ids
        assert (batch["input_ids"][row, len(ids):] == tokenizer.pad_token_id).all()
        assert batch["attention_mask"][row].tolist() == [1] * len(ids) + [0] * (longest - len(ids))
    short = collate_coarse(samples, tokenizer, max_text_len=6)
    assert short["input_ids"].shape == (2, 6) and short["input_ids"][1, -1] == tokenizer.eos_token_id
    with pytest.raises(ValueError, match="share one size"):
        collate_coarse([samples[0], {**samples[1], "pixel_values": torch.zeros(3, 4, 4)}], tokenizer)


def test_positive_map_hand_built() -> None:
    # "a small red circle": <s> a small red circle </s> <pad>
    offsets = torch.tensor([[0, 0], [0, 1], [2, 7], [8, 11], [12, 18], [0, 0], [0, 0]])
    spans = [[(2, 18)], [(8, 11)], [(0, 1), (12, 18)], [(7, 8)]]
    expected = torch.tensor([[0, 0, 1, 1, 1, 0, 0], [0, 0, 0, 1, 0, 0, 0], [0, 1, 0, 0, 1, 0, 0], [0] * 7],
                            dtype=torch.float32)
    torch.testing.assert_close(positive_map(offsets, spans), expected)


def test_collate_fine_batch_and_positive_map_on_the_synthetic_set(synth_dir: Path,
                                                                  tokenizer: PreTrainedTokenizerBase) -> None:
    dataset = GroundingDataset(synth_dir / "grounding_train.json", synth_dir / "images",
                               FineTransform([64, 80, 96], max_size=128), seed=1)
    samples = [dataset[i] for i in range(6)]
    batch = collate_fine(samples, tokenizer, max_text_len=64)
    sizes = [tuple(s["pixel_values"].shape[-2:]) for s in samples]
    hp, wp = batch["pixel_values"].shape[-2:]
    assert hp % 32 == 0 and wp % 32 == 0 and hp - 32 < max(h for h, _ in sizes) <= hp
    assert batch["image_sizes"].tolist() == [list(s) for s in sizes] and batch["image_sizes"].dtype == torch.int64
    assert batch["pixel_mask"].dtype == torch.bool
    for i, (h, w) in enumerate(sizes):
        assert batch["pixel_mask"][i].sum() == h * w and batch["pixel_mask"][i, :h, :w].all()
        torch.testing.assert_close(batch["pixel_values"][i, :, :h, :w], samples[i]["pixel_values"])
        assert (batch["pixel_values"][i, :, h:, :] == 0).all() and (batch["pixel_values"][i, :, :, w:] == 0).all()
    counts = [len(s["boxes"]) for s in samples]
    g, t = max(counts), batch["input_ids"].shape[1]
    assert batch["boxes"].shape == (6, g, 4) and batch["box_mask"].shape == (6, g)
    assert batch["positive_map"].shape == (6, g, t) and batch["positive_map"].dtype == torch.float32
    assert batch["box_mask"].sum(1).tolist() == counts
    for i, sample in enumerate(samples):
        torch.testing.assert_close(batch["boxes"][i, :counts[i]], sample["boxes"])
        assert (batch["boxes"][i, counts[i]:] == 0).all() and (batch["positive_map"][i, counts[i]:] == 0).all()
        for box, spans in enumerate(sample["tokens_positive"]):
            tokens = batch["input_ids"][i][batch["positive_map"][i, box] > 0]
            phrase = " ".join(sample["caption"][s:e] for s, e in spans)
            assert tokenizer.decode(tokens).strip() == phrase


def test_collate_fine_drops_boxes_whose_phrase_is_truncated(tokenizer: PreTrainedTokenizerBase) -> None:
    caption = CAPTIONS[1]
    spans = [[(2, 19)], [(caption.index("small green"), caption.index(", and"))], [(caption.rindex("small red"),
                                                                                   len(caption))]]
    sample = {"pixel_values": torch.zeros(3, 40, 50), "caption": caption, "image_id": 1,
              "boxes": torch.tensor([[0.0, 0, 5, 5], [1, 1, 6, 6], [2, 2, 7, 7]]), "tokens_positive": spans}
    batch = collate_fine([sample], tokenizer, max_text_len=8)  # <s> + 6 tokens + </s>: only the first phrase
    assert batch["input_ids"].shape == (1, 8) and batch["box_mask"].tolist() == [[True]]
    torch.testing.assert_close(batch["boxes"][0], sample["boxes"][:1])
    assert tokenizer.decode(batch["input_ids"][0][batch["positive_map"][0, 0] > 0]).strip() == "large blue square"
    assert batch["pixel_values"].shape == (1, 3, 64, 64)


def test_tokenize_checks_arguments(tokenizer: PreTrainedTokenizerBase) -> None:
    with pytest.raises(ValueError, match="max_text_len"):
        tokenize(tokenizer, ["a"], 2)
    out = tokenize(tokenizer, ["a red circle"], 40, offsets=True)
    assert out["offset_mapping"].shape == (*out["input_ids"].shape, 2)
