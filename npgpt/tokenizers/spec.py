"""The training example's --tokenizer choice: "char", "bpe:VOCAB" (trained on the training split) or a path.

    tok = tokenizer_from_spec("bpe:512", train_text)     # or "char", or "path/to/tokenizer/files"
    ids = encode_text(tok, text)                          # what training, sampling and eval encode with

Guide: docs/tokenizers.md
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from .bpe import BPETokenizer
from .files import load_tokenizer
from .train_bpe import train_bpe

_BPE_SPEC = re.compile(r"bpe:(\d+)")
SPEC_HELP = ("char (the text's characters), bpe:VOCAB (a byte-level BPE of VOCAB ids trained on the training "
             "split, e.g. bpe:512), or a path to tokenizer files (a .gguf file, a tokenizer.json, a SentencePiece "
             ".model, a .tiktoken file, or a directory with tokenizer.json, vocab.json + merges.txt or "
             "tokenizer.model)")


def tokenizer_from_spec(spec: str, train_text: str, full_text: str | None = None) -> Any:
    """The tokenizer a --tokenizer value names.  "char" builds the character vocabulary of full_text (the
    whole file, so the validation split has no unknown characters; train_text when None); "bpe:VOCAB"
    trains on train_text only; anything else is a path for load_tokenizer."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"tokenizer: expected {SPEC_HELP}; got {spec!r}")
    if spec == "char":
        from ..data import CharTokenizer

        return CharTokenizer(full_text if full_text is not None else train_text)
    m = _BPE_SPEC.fullmatch(spec)
    if m:
        return train_bpe(train_text, int(m.group(1)))
    if spec.startswith("bpe"):
        raise ValueError(f"tokenizer: {spec!r}: expected bpe:VOCAB with VOCAB an integer >= 256, e.g. bpe:512")
    return load_tokenizer(spec)


def encode_text(tok: Any, text: str) -> np.ndarray:
    """Ids of a text the user gave (a training file, a prompt, an eval text): for a BPE tokenizer its special
    tokens' text ("<|endoftext|>", GPT-2's document separator) is encoded as those tokens."""
    if isinstance(tok, BPETokenizer):
        return tok.encode(text, allowed_special="all")
    return np.asarray(tok.encode(text))
