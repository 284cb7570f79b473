"""The tokenizer protocol and the registry that rebuilds a tokenizer from a checkpoint's JSON record.

    tok2 = tokenizer_from_dict(tok.to_dict())    # what a checkpoint stores (JSON, no pickle) and loads back
    ids_dtype(50257)                             # uint16: the smallest unsigned dtype for the ids

Families register their loader: TOKENIZER_LOADERS["char"] (char.py), TOKENIZER_LOADERS["bpe"] (bpe.py),
TOKENIZER_LOADERS["tokenizer_json"] (tokenizer_json.py: every tokenizer.json, GGUF and SentencePiece vocabulary).
Guide: docs/tokenizers.md
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Tokenizer(Protocol):
    """What the training loop, sampling and evaluation need from a tokenizer.

    encode(text) -> (N,) unsigned integer ids (see ids_dtype); decode(ids) -> text; vocab_size; to_dict() ->
    a JSON-able description with a "type" key, stored in checkpoints (no pickle) and turned back into an
    equal tokenizer by tokenizer_from_dict.
    """

    @property
    def vocab_size(self) -> int: ...

    def encode(self, text: str) -> np.ndarray: ...

    def decode(self, ids: Any) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


# "type" of a to_dict() description -> the function that rebuilds the tokenizer from it.  A new tokenizer
# family registers itself here (TOKENIZER_LOADERS["bpe"] = ...).
TOKENIZER_LOADERS: dict[str, Callable[[dict[str, Any]], Tokenizer]] = {}


def tokenizer_from_dict(d: Any) -> Tokenizer:
    """The tokenizer a to_dict() description (e.g. a checkpoint's "tokenizer" entry) describes."""
    kind = d.get("type") if isinstance(d, dict) else None
    if kind not in TOKENIZER_LOADERS:
        raise ValueError(f"tokenizer: unknown type {kind!r}; expected one of {sorted(TOKENIZER_LOADERS)}")
    return TOKENIZER_LOADERS[kind](d)


def ids_dtype(vocab_size: int) -> np.dtype[Any]:
    """The smallest unsigned dtype holding ids 0 .. vocab_size - 1."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if vocab_size - 1 <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise ValueError(f"vocab_size: {vocab_size} does not fit in uint32")
