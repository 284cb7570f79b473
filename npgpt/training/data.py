"""Data for training: text loading, a train/val split and a seeded batch sampler (tokenizers: npgpt/tokenizers/).

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
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .._checks import is_int
from ..io.textfile import read_user_bytes

__all__ = ["BatchSampler", "IntArray", "bundled_corpus_path", "load_text", "split"]

IntArray = npt.NDArray[np.int64]


def load_text(path: str | os.PathLike[str]) -> str:
    """The UTF-8 text of a file.  Every problem is a one-line ValueError naming the path: missing, a
    directory, a device, unreadable, empty, or not UTF-8 (with the byte offset of the first bad byte)."""
    p = Path(path)
    data = read_user_bytes(p)  # a device (/dev/zero) refused, a pipe read in chunks up to a cap
    if not data:
        raise ValueError(f"{p}: file is empty")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{p}: not UTF-8 text (invalid byte 0x{data[e.start]:02x} at byte offset "
                         f"{e.start})") from None


def bundled_corpus_path() -> Path:
    """Path of the bundled Tiny Shakespeare (about 1.1 MB, 65 distinct characters)."""
    return Path(__file__).resolve().parent.parent / "data" / "tinyshakespeare.txt"


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
            if not is_int(value) or value < 1:
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
