"""Data for training: the tokenizer protocol, the character tokenizer, text loading, a train/val split and a
seeded batch sampler.

    text = load_text(path)                       # or load_text(bundled_corpus_path()): Tiny Shakespeare
    tok = CharTokenizer(text)                    # vocabulary: the sorted unique characters of the text
    train_ids, val_ids = split(tok.encode(text)) # first 90% / last 10%; ids uint8 for <= 256 characters
    sampler = BatchSampler(train_ids, block_size=64, batch_size=12, seed=1337)
    x, y = sampler.next()                        # (B, T) int64 each; y[:, t] = x[:, t + 1] in the text
    tok2 = tokenizer_from_dict(tok.to_dict())    # what a checkpoint stores (JSON, no pickle) and loads back

Token ids are stored in the smallest unsigned dtype that holds the vocabulary (uint8, uint16, uint32):
1 byte per character of a 50 MB text instead of 8; only each batch is widened to int64.

The sampler draws random windows from its own Generator; get_state()/set_state() save and restore it as
JSON-able data, so a resumed run draws exactly the batches an uninterrupted one would.
Guide: docs/training.md
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
IdArray = npt.NDArray[np.unsignedinteger[Any]]  # compact token ids: uint8, uint16 or uint32

ENCODE_CHUNK = 1 << 20  # characters encoded at a time: bounds the temporaries to a few MB for any text size


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

    def encode(self, text: str) -> IdArray:
        """Ids (N,) of the N characters of text, in ids_dtype(vocab_size) (uint8 for up to 256 characters).
        A character outside the vocabulary is a ValueError naming it and its position."""
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
                pos = int(np.argmin(found))
                raise ValueError(f"character {piece[pos]!r} at position {start + pos} is not in the vocabulary "
                                 f"({self.vocab_size} characters)")
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


def load_text(path: str | os.PathLike[str]) -> str:
    """The UTF-8 text of a file.  Every problem is a one-line ValueError naming the path: missing, a
    directory, unreadable, empty, or not UTF-8 (with the byte offset of the first bad byte)."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{p}: is a directory, expected a text file") from None
    except OSError as e:
        if p.is_dir():
            raise ValueError(f"{p}: is a directory, expected a text file") from None
        raise ValueError(f"{p}: cannot read ({e.strerror or e})") from None
    if not data:
        raise ValueError(f"{p}: file is empty")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{p}: not UTF-8 text (invalid byte 0x{data[e.start]:02x} at byte offset "
                         f"{e.start})") from None


def bundled_corpus_path() -> Path:
    """Path of the bundled Tiny Shakespeare (about 1.1 MB, 65 distinct characters)."""
    return Path(__file__).resolve().parent / "data" / "tinyshakespeare.txt"


def split(ids: np.ndarray, val_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(train, val): the first 1 - val_fraction of ids and the rest (contiguous, not shuffled)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected a number in (0, 1), got {val_fraction!r}")
    n = int(len(ids) * (1.0 - val_fraction))
    return ids[:n], ids[n:]


class BatchSampler:
    """Random (x, y) windows of a token sequence, drawn from the sampler's own seeded Generator.

    next() -> x, y, each (batch_size, block_size) int64, where row b is data[o_b : o_b + T] and
    data[o_b + 1 : o_b + T + 1] for a random offset o_b (so y is x shifted left by one).
    """

    def __init__(self, data: np.ndarray, block_size: int, batch_size: int,
                 seed: int | np.random.SeedSequence = 0, name: str = "data") -> None:
        for arg, value in (("block_size", block_size), ("batch_size", batch_size)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{arg}: expected a positive integer, got {value!r}")
        data = np.asarray(data)
        if data.ndim != 1 or not np.issubdtype(data.dtype, np.integer):
            raise ValueError(f"{name}: expected a 1-D integer array of token ids, got shape {data.shape} "
                             f"dtype {data.dtype}")
        if len(data) < block_size + 1:
            raise ValueError(f"{name}: {len(data)} tokens is too short for block_size={block_size} "
                             f"(a batch needs at least block_size + 1 = {block_size + 1})")
        self.data = data  # kept in its own (compact) dtype; each batch is widened to int64
        self.block_size, self.batch_size, self.name = int(block_size), int(batch_size), name
        self.rng = np.random.default_rng(seed)
        self._window = np.arange(self.block_size + 1)  # (T + 1,)

    def next(self) -> tuple[IntArray, IntArray]:
        """One batch (x, y), each (batch_size, block_size) int64."""
        T = self.block_size
        offsets = self.rng.integers(0, len(self.data) - T, size=self.batch_size)  # (B,) in [0, N - T - 1]
        rows = self.data[offsets[:, None] + self._window].astype(np.int64)  # (B, T + 1)
        return np.ascontiguousarray(rows[:, :T]), np.ascontiguousarray(rows[:, 1:])

    def get_state(self) -> dict[str, Any]:
        """The Generator's state (numpy's bit_generator.state): JSON-able, for checkpoints."""
        return _jsonable(self.rng.bit_generator.state)

    def set_state(self, state: Any) -> None:
        """Restore a state from get_state(): later batches are exactly those that followed it."""
        try:
            self.rng.bit_generator.state = state
        except (TypeError, ValueError, KeyError) as e:
            raise ValueError(f"{self.name} sampler: invalid state ({e})") from None


def _jsonable(state: Any) -> Any:
    """bit_generator.state with numpy scalars/arrays turned into plain Python values."""
    if isinstance(state, dict):
        return {k: _jsonable(v) for k, v in state.items()}
    if isinstance(state, np.ndarray):
        return state.tolist()
    if isinstance(state, np.generic):
        return state.item()
    return state
