"""The text tokenizer: train a small byte-level BPE on captions, save it as a RoBERTa-style HF folder.

Real runs load ``roberta-base``'s tokenizer from a local folder with :func:`load_tokenizer`; the
synthetic set ships its own (``DIR/tokenizer``), trained here. Special tokens and ids follow
RoBERTa: ``<s>`` 0, ``<pad>`` 1, ``</s>`` 2, ``<unk>`` 3, ``<mask>`` 4.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable
from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerFast, RobertaTokenizerFast

SPECIAL_TOKENS: tuple[str, ...] = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


def train_tokenizer(texts: Iterable[str], out: str | Path, vocab_size: int = 1000,
                    model_max_length: int = 512) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE on ``texts`` and save it to ``out`` as a RoBERTa tokenizer folder.

    The folder holds ``tokenizer.json``, ``vocab.json``, ``merges.txt`` and ``tokenizer_config.json``
    and reloads offline with ``AutoTokenizer.from_pretrained(out)``. Returns the loaded tokenizer.
    """
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(texts), vocab_size=vocab_size, min_frequency=1,
                            special_tokens=list(SPECIAL_TOKENS), show_progress=False)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        bpe.save_model(scratch)  # vocab.json + merges.txt, what RobertaTokenizerFast.from_pretrained reads
        tokenizer = RobertaTokenizerFast.from_pretrained(scratch, model_max_length=model_max_length)
    tokenizer.save_pretrained(str(out))
    return load_tokenizer(out)


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    """Load a local tokenizer folder offline; it must be a *fast* tokenizer (offsets are needed)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"tokenizer folder {path} does not exist (the synthetic set writes DIR/tokenizer; "
                                f"for real data save roberta-base's tokenizer to a local folder)")
    tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if not tokenizer.is_fast:
        raise TypeError(f"tokenizer at {path} is not a fast tokenizer; offset mappings need one (tokenizer.json)")
    return tokenizer
