"""Perplexity of a text far longer than the block size, by strided sliding windows.

    r = evaluate_text(model, tokenizer, text, stride=128)     # or evaluate_ids(model, ids, ...)
    r.mean_loss, r.perplexity, r.bits_per_byte                 # nats/token, exp(mean_loss), bits per UTF-8 byte

Tokens t_0..t_{N-1}; every t_j with j >= 1 is scored exactly once, as -log p(t_j | the tokens before it in
its window).  Window k reads t[s_k : s_k + T] (T = block_size, s_k = k * stride) and scores only the targets
the previous window did not: the first window scores all of its T targets, each later one its last `stride`
(fewer at the end), so each of those has at least T - stride + 1 tokens of context.  stride = T gives
non-overlapping windows (cheapest, least context); stride = 1 gives every token a full window (slowest).
Default stride: T // 2.  Guide: docs/evaluate.md
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from ..runtime.model import Model
from .._checks import is_int, is_py_int

Progress = Callable[[int, int], None]


class EvalResult(NamedTuple):
    mean_loss: float  # mean negative log-likelihood of the scored tokens, in nats
    perplexity: float  # exp(mean_loss)
    bits_per_byte: float  # total NLL in bits / UTF-8 bytes of the scored tokens (nan when the byte count is unknown)
    n_tokens: int  # number of scored tokens (every token after the first, or all with a bos)
    n_bytes: int  # UTF-8 bytes those tokens spell (0 when unknown)
    n_windows: int  # number of model calls' windows
    stride: int


def windows(n_tokens: int, block_size: int, stride: int) -> list[tuple[int, int, int]]:
    """(start, length, first scored offset) of each window over n_tokens tokens: the window reads
    ids[start : start + length] and scores the targets ids[start + o + 1] for o in [offset, length)."""
    out = []
    done = 0  # targets 1..done are scored
    start = 0
    while done < n_tokens - 1:
        length = min(block_size, n_tokens - 1 - start)
        end = start + length  # last target index of this window
        out.append((start, length, done - start))
        done = end
        start += stride
    return out


def evaluate_ids(model: Model, ids: Sequence[int] | npt.NDArray[np.integer], stride: int | None = None, *,
                 n_bytes: int | None = None, batch_size: int = 4, progress: Progress | None = None) -> EvalResult:
    """Strided sliding-window loss of a token sequence (see the module docstring).

    ids (N,) with N >= 2; stride in [1, block_size], default block_size // 2; n_bytes: UTF-8 bytes of the
    scored tokens (ids[1:]) for bits per byte; batch_size windows per forward (memory: batch_size * T * V
    floats of logits); progress(scored so far, total) after every batch.
    """
    if not all(hasattr(model, a) for a in ("forward", "config", "training", "eval", "train")):
        raise ValueError(f"model: expected a GPT (or a model with its interface), got {type(model).__name__}")
    arr = np.asarray(ids)
    if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"ids: expected a 1-D sequence of token ids, got shape {arr.shape} dtype {arr.dtype}")
    if arr.size < 2:
        raise ValueError(f"ids: need at least 2 tokens to score one, got {arr.size}")
    V, T = model.config.vocab_size, model.config.block_size
    if arr.min() < 0 or arr.max() >= V:
        bad = int(arr.min()) if arr.min() < 0 else int(arr.max())
        raise ValueError(f"ids: token id {bad} is out of range for the model's vocabulary [0, {V})")
    stride = max(T // 2, 1) if stride is None else stride
    if not is_int(stride) or not 1 <= stride <= T:
        raise ValueError(f"stride: expected an integer in [1, block_size={T}], got {stride!r}")
    if not is_py_int(batch_size) or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    arr = arr.astype(np.int64)
    wins = windows(arr.size, T, int(stride))
    total = arr.size - 1
    nll = 0.0
    scored = 0
    was_training = model.training
    model.eval()
    try:
        # windows of equal length batch together; only the last one or two can be shorter
        i = 0
        while i < len(wins):
            length = wins[i][1]
            j = i
            while j < len(wins) and j - i < batch_size and wins[j][1] == length:
                j += 1
            group = wins[i:j]
            x = np.stack([arr[s:s + length] for s, _, _ in group])  # (B, L)
            y = np.stack([arr[s + 1:s + length + 1] for s, _, _ in group])  # (B, L)
            logits, _ = model.forward(x)  # (B, L, V)
            lp = _target_log_probs(logits, y)  # (B, L) float64
            for b, (_, _, first) in enumerate(group):
                nll -= float(lp[b, first:].sum())
                scored += length - first
            if progress is not None:
                progress(scored, total)
            i = j
    finally:
        model.train(was_training)
    assert scored == total, (scored, total)
    mean = nll / total
    bpb = nll / math.log(2.0) / n_bytes if n_bytes else float("nan")
    return EvalResult(mean, math.exp(mean), bpb, total, n_bytes or 0, len(wins), int(stride))


def _target_log_probs(logits: npt.NDArray[np.floating], y: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """log softmax(logits)[..., y] in float64, (B, L), without materialising a float64 (B, L, V) copy."""
    m = logits.max(axis=-1, keepdims=True)  # (B, L, 1)
    lse = np.log(np.exp(logits - m).sum(axis=-1, dtype=np.float64)) + m[..., 0]  # (B, L)
    picked = np.take_along_axis(logits, y[..., None], axis=-1)[..., 0].astype(np.float64)  # (B, L)
    return picked - lse


def evaluate_text(model: Model, tokenizer: Any, text: str, stride: int | None = None, *, bos: int | None = None,
                  batch_size: int = 4, progress: Progress | None = None) -> EvalResult:
    """evaluate_ids on tokenizer.encode(text), with bits per byte over the bytes of the scored tokens.

    bos: an id put before the text (GPT-2's <|endoftext|>, say), so that the first token is scored too.
    """
    if not isinstance(text, str):
        raise ValueError(f"text: expected a str, got {type(text).__name__}")
    ids = [int(i) for i in _encode(tokenizer, text)]
    if bos is not None:
        ids = [int(bos)] + ids
    if len(ids) < 2:
        raise ValueError(f"text: encodes to {len(ids)} token(s); at least 2 are needed to score one")
    first = b"" if bos is not None else _token_bytes(tokenizer, ids[0])
    n_bytes = len(text.encode("utf-8", "surrogatepass")) - len(first)
    return evaluate_ids(model, ids, stride, n_bytes=n_bytes, batch_size=batch_size, progress=progress)


def _encode(tokenizer: Any, text: str) -> Sequence[int]:
    from ..tokenizers import encode_text

    return encode_text(tokenizer, text).tolist()  # a BPE's special tokens' text is those tokens


def _token_bytes(tokenizer: Any, i: int) -> bytes:
    if hasattr(tokenizer, "token_bytes"):
        return tokenizer.token_bytes(i)
    return str(tokenizer.decode([i])).encode("utf-8")
