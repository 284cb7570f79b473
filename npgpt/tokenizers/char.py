"""The character tokenizer: one id per distinct character of a text (moved here from npgpt/data.py, which
re-exports it).

    tok = CharTokenizer(text)                    # vocabulary: the sorted unique characters of the text
    ids = tok.encode(text)                       # uint8 for <= 256 characters
Guide: docs/training.md
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from .protocol import TOKENIZER_LOADERS, ids_dtype

IdArray = npt.NDArray[np.unsignedinteger[Any]]  # compact token ids: uint8, uint16 or uint32
ENCODE_CHUNK = 1 << 20  # characters encoded at a time: bounds the temporaries to a few MB for any text size


class CharTokenizer:
    """Maps each character of a vocabulary to its index: the vocabulary is the sorted unique characters of
    the text it was built from (sorted by code point, so the same text always gives the same ids)."""

    def __init__(self, text: str) -> None:
        if not isinstance(text, str):
            raise ValueError(f"text: expected a str, got {type(text).__name__}")
        if not text:
            raise ValueError("text: expected at least one character to build a vocabulary from")
        self._set_chars(sorted(set(text)))

    def _set_chars(self, chars: list[str]) -> None:
        self.chars = chars  # id -> character
        self.stoi = {c: i for i, c in enumerate(chars)}  # character -> id
        # code points in id order; ascending because chars are sorted, so searchsorted finds ids
        self._codes = np.array([ord(c) for c in chars], dtype=np.uint32)  # (V,)

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def unknown(self, text: str, limit: int = 10) -> str | None:
        """The characters of text outside the vocabulary, each with its first position ("'~' (position 5),
        ..."; the first `limit` by position, then how many more), or None when there are none."""
        first = {c: text.index(c) for c in set(text) - self.stoi.keys()}  # character -> its first position
        if not first:
            return None
        bad = sorted(first, key=first.__getitem__)
        where = ", ".join(f"{c!r} (position {first[c]})" for c in bad[:limit])
        return where + (f" and {len(bad) - limit} more" if len(bad) > limit else "")

    def encode(self, text: str) -> IdArray:
        """Ids (N,) of the N characters of text, in ids_dtype(vocab_size) (uint8 for up to 256 characters).
        Characters outside the vocabulary are a ValueError naming each with its first position."""
        if not isinstance(text, str):
            raise ValueError(f"text: expected a str, got {type(text).__name__}")
        out = np.empty(len(text), dtype=ids_dtype(self.vocab_size))  # (N,)
        for start in range(0, len(text), ENCODE_CHUNK):  # chunks: the temporaries stay small
            piece = text[start:start + ENCODE_CHUNK]
            # one code point per character, vectorised: much faster than a dict lookup per character
            codes = np.frombuffer(piece.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)  # (n,)
            ids = np.searchsorted(self._codes, codes)  # (n,) where each code point would go
            found = self._codes[np.minimum(ids, len(self._codes) - 1)] == codes  # (n,)
            if not found.all():
                raise ValueError(f"text: characters not in the vocabulary ({self.vocab_size} character"
                                 f"{'s' if self.vocab_size != 1 else ''}): "
                                 f"{self.unknown(text)}")
            out[start:start + len(piece)] = ids
        return out

    def decode(self, ids: Any) -> str:
        """The text of a sequence of ids (any integer array-like of shape (N,))."""
        arr = np.asarray(ids)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"ids: expected a 1-D sequence of integers, got shape {arr.shape} dtype {arr.dtype}")
        if arr.size and (arr.min() < 0 or arr.max() >= self.vocab_size):
            bad = int(arr.min()) if arr.min() < 0 else int(arr.max())
            raise ValueError(f"ids: token id {bad} is out of range [0, {self.vocab_size})")
        return "".join(self.chars[i] for i in arr.tolist())

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form, for checkpoints: {"type": "char", "chars": "<the vocabulary in id order>"}."""
        return {"type": "char", "chars": "".join(self.chars)}

    @classmethod
    def from_dict(cls, d: Any) -> CharTokenizer:
        """Inverse of to_dict; the characters must be unique and sorted, as the constructor makes them."""
        if not isinstance(d, dict) or d.get("type") != "char" or not isinstance(d.get("chars"), str):
            raise ValueError("tokenizer: expected {'type': 'char', 'chars': str}")
        chars = list(d["chars"])
        if not chars or chars != sorted(set(chars)):
            raise ValueError("tokenizer: 'chars' must be a non-empty string of unique characters in sorted order")
        tok = cls.__new__(cls)
        tok._set_chars(chars)
        return tok

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharTokenizer) and self.chars == other.chars

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size})"


TOKENIZER_LOADERS["char"] = CharTokenizer.from_dict
