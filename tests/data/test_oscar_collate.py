"""OSCAR batches: token layout and segment ids for RoBERTa-style BPE and BERT WordPiece, region padding."""

from __future__ import annotations

import pytest
import torch
from tokenizers import BertWordPieceTokenizer
from tokenizers.processors import TemplateProcessing
from transformers import BertTokenizerFast, PreTrainedTokenizerFast

from fiber_fast.data import collate_oscar, encode_pairs, pad_regions, train_tokenizer

CORPUS = ["a red circle left of a blue square", "two green triangles above a small diamond",
          "circle square triangle diamond", "a large yellow diamond next to the red square"] * 3
CAPTIONS = ["A red circle left of a blue square", "two green triangles"]
TAGS = ["circle square square", "triangle triangle diamond circle"]


@pytest.fixture(scope="module")
def roberta(tmp_path_factory: pytest.TempPathFactory) -> PreTrainedTokenizerFast:
    return train_tokenizer(CORPUS, tmp_path_factory.mktemp("bpe"), vocab_size=300)


@pytest.fixture(scope="module")
def bert() -> PreTrainedTokenizerFast:
    """A BERT-style uncased WordPiece tokenizer with BERT's pair template, built here (no download)."""
    wordpiece = BertWordPieceTokenizer(lowercase=True)
    wordpiece.train_from_iterator(CORPUS, vocab_size=200, min_frequency=1, show_progress=False,
                                  special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    backend = wordpiece._tokenizer
    backend.post_processor = TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", backend.token_to_id("[CLS]")), ("[SEP]", backend.token_to_id("[SEP]"))])
    return BertTokenizerFast(tokenizer_object=backend)


def _expected(tokenizer: PreTrainedTokenizerFast, kind: str, caption: str, tags: str, words: int,
              tag_tokens: int) -> tuple[list[int], list[int]]:
    """The layout written out by hand from the segments' own token ids."""
    a = tokenizer(caption, add_special_tokens=False)["input_ids"][:words]
    b = tokenizer(tags, add_special_tokens=False)["input_ids"][:tag_tokens]
    if kind == "bert":
        cls, sep = tokenizer.convert_tokens_to_ids(["[CLS]", "[SEP]"])
        return [cls, *a, sep, *b, sep], [0] * (len(a) + 2) + [1] * (len(b) + 1)
    bos, eos = tokenizer.convert_tokens_to_ids(["<s>", "</s>"])
    return [bos, *a, eos, eos, *b, eos], [0] * (len(a) + 2) + [1] * (len(b) + 2)


@pytest.mark.parametrize("kind", ["roberta", "bert"])
def test_pair_layout_without_truncation_is_the_tokenizers_pair_encoding(kind: str, request) -> None:
    tokenizer = request.getfixturevalue(kind)
    out = encode_pairs(tokenizer, CAPTIONS, TAGS, max_text_len=64, max_tag_len=64)
    reference = tokenizer(CAPTIONS, TAGS, padding="longest", return_tensors="pt")
    assert torch.equal(out["input_ids"], reference["input_ids"])
    assert torch.equal(out["attention_mask"], reference["attention_mask"])
    if kind == "bert":  # BERT's own type ids are right; RoBERTa's are all zero
        assert torch.equal(out["token_type_ids"], reference["token_type_ids"])
    else:
        assert not reference.get("token_type_ids", torch.zeros(1)).any()
    for row in range(2):
        ids, types = _expected(tokenizer, kind, CAPTIONS[row], TAGS[row], 64, 64)
        assert out["input_ids"][row, :len(ids)].tolist() == ids
        assert out["token_type_ids"][row, :len(ids)].tolist() == types
        assert not out["token_type_ids"][row, len(ids):].any()
        assert (out["input_ids"][row, len(ids):] == tokenizer.pad_token_id).all()


@pytest.mark.parametrize("kind", ["roberta", "bert"])
def test_words_and_tags_truncated_separately(kind: str, request) -> None:
    tokenizer = request.getfixturevalue(kind)
    out = encode_pairs(tokenizer, CAPTIONS + ["circle"], TAGS + [""], max_text_len=4, max_tag_len=3)
    for row, (caption, tags) in enumerate(zip(CAPTIONS + ["circle"], TAGS + [""], strict=True)):
        ids, types = _expected(tokenizer, kind, caption, tags, 4, 3)
        length = int(out["attention_mask"][row].sum())
        assert out["input_ids"][row, :length].tolist() == ids
        assert out["token_type_ids"][row, :length].tolist() == types
    first = tokenizer.convert_ids_to_tokens(out["input_ids"][0])
    assert first[0] in ("[CLS]", "<s>") and len(first) == (10 if kind == "bert" else 11)


def test_bad_arguments(roberta: PreTrainedTokenizerFast) -> None:
    with pytest.raises(ValueError, match="equally long"):
        encode_pairs(roberta, CAPTIONS, TAGS[:1], 8, 8)
    with pytest.raises(ValueError, match="max_text_len"):
        encode_pairs(roberta, CAPTIONS, TAGS, 0, 8)


def test_pad_regions_keeps_top_scores_in_stored_order() -> None:
    features = [torch.arange(4 * 3, dtype=torch.float32).reshape(4, 3) + 1, torch.full((1, 3), 7.0),
                torch.zeros(0, 3)]
    scores = [torch.tensor([0.1, 0.9, 0.5, 0.9]), torch.tensor([0.3]), torch.zeros(0)]
    padded, mask = pad_regions(features, scores, max_regions=2)
    assert padded.shape == (3, 2, 3) and padded.dtype == torch.float32
    assert torch.equal(padded[0], features[0][[1, 3]])  # the two highest (0.9, 0.9) in stored order
    assert torch.equal(padded[1], torch.tensor([[7.0, 7.0, 7.0], [0.0, 0.0, 0.0]]))
    assert not padded[2].any()
    assert mask.tolist() == [[True, True], [True, False], [False, False]]
    wide, wide_mask = pad_regions(features, scores, max_regions=10)
    assert wide.shape == (3, 4, 3) and torch.equal(wide[0], features[0]) and wide_mask.sum().item() == 5
    empty, empty_mask = pad_regions([torch.zeros(0, 3)], [torch.zeros(0)], max_regions=5)
    assert empty.shape == (1, 1, 3) and not empty_mask.any()
    tied, _ = pad_regions([features[0]], [torch.tensor([0.5, 0.5, 0.5, 0.5])], max_regions=2)
    assert torch.equal(tied[0], features[0][:2])  # ties go to the earlier regions
    with pytest.raises(ValueError, match="one F"):
        pad_regions([torch.zeros(1, 3), torch.zeros(1, 4)], [torch.zeros(1), torch.zeros(1)], 2)


def test_collate_oscar_batch(roberta: PreTrainedTokenizerFast) -> None:
    generator = torch.Generator().manual_seed(0)
    samples = [{"caption": CAPTIONS[i], "tags": TAGS[i].split(),
                "region_features": torch.randn(n, 8, generator=generator),
                "region_scores": torch.rand(n, generator=generator), "relation_label": label, "image_id": image_id}
               for i, (n, label, image_id) in enumerate([(3, 0, 11), (6, 2, 42)])]
    batch = collate_oscar(samples, roberta, max_text_len=6, max_tag_len=2, max_regions=5)
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "region_features", "region_mask",
                          "relation_labels", "image_ids"}
    for key in ("input_ids", "token_type_ids", "attention_mask", "relation_labels", "image_ids"):
        assert batch[key].dtype == torch.int64, key
    assert batch["relation_labels"].tolist() == [0, 2] and batch["image_ids"].tolist() == [11, 42]
    assert batch["region_features"].shape == (2, 5, 8) and batch["region_mask"].sum(dim=1).tolist() == [3, 5]
    text = encode_pairs(roberta, CAPTIONS, TAGS, 6, 2)
    for key, value in text.items():
        assert torch.equal(batch[key], value), key
