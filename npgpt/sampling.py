"""Sampling, the same for every family: top-k and top-p filters, one draw, and the decoding loop.

`nxt = sample_next(logits[:, -1], temperature, top_k, top_p, rng)`; `decode_loop(idx, block_size, n, full,
new_cache, cached)` runs a family's forward (with or without its KV cache) token by token.  A family's
generate.py supplies the three forwards; nothing here knows a family.  Derivation: docs/generate.md
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from ._checks import is_real, positive_int
from .layers.softmax import softmax_forward

Array = npt.NDArray[np.floating]


def top_k_filter(logits: Array, k: int) -> Array:
    """Keep every logit at least as large as the k-th largest of its row (ties at the boundary all kept);
    the rest become -inf.  logits (..., V) -> (..., V), a new array."""
    V = logits.shape[-1]
    if not 1 <= k:
        raise ValueError(f"top_k: expected a positive integer, got {k}")
    if k >= V:
        return logits.copy()
    kth = np.partition(logits, V - k, axis=-1)[..., V - k:V - k + 1]  # (..., 1) k-th largest value
    return np.where(logits >= kth, logits, -np.inf)


def top_p_filter(logits: Array, p: float) -> Array:
    """Nucleus filter: keep token i when the probability of the tokens strictly more likely than i is below p
    (so the smallest set reaching mass p is kept, with ties at its edge); the rest become -inf."""
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p: expected a probability in (0, 1], got {p}")
    if p >= 1.0:
        return logits.copy()  # everything is kept (a cumulative sum could round past 1 and drop a tail)
    probs, _ = softmax_forward(logits.astype(np.float64))  # (..., V)
    order = np.argsort(-probs, axis=-1, kind="stable")  # (..., V) most likely first
    sorted_p = np.take_along_axis(probs, order, axis=-1)  # (..., V)
    # mass strictly above each sorted token: cumulative sum before the first token of its tie group
    before = np.cumsum(sorted_p, axis=-1) - sorted_p  # (..., V)
    first_of_tie = np.maximum.accumulate(
        np.where(np.diff(sorted_p, axis=-1, prepend=np.inf) != 0, np.arange(sorted_p.shape[-1]), 0), axis=-1)
    above = np.take_along_axis(before, first_of_tie, axis=-1)  # (..., V)
    keep_sorted = above < p
    keep = np.empty_like(keep_sorted)
    np.put_along_axis(keep, order, keep_sorted, axis=-1)
    return np.where(keep, logits, -np.inf)


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise a ValueError naming the first sampling argument out of range."""
    if not is_real(temperature) or temperature < 0.0 or not math.isfinite(temperature):
        raise ValueError(f"temperature: expected a finite number >= 0, got {temperature!r}")
    if top_k is not None:
        positive_int("top_k", top_k)
    if top_p is not None and not (is_real(top_p) and 0.0 < top_p <= 1.0):
        raise ValueError(f"top_p: expected a probability in (0, 1], got {top_p!r}")


def sample_next(logits: Array, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
                rng: np.random.Generator | None = None) -> npt.NDArray[np.int64]:
    """One token id per row of logits (B, V): argmax at temperature 0, else a draw from
    softmax(logits / temperature) after the top-k and top-p filters."""
    check_sampling(temperature, top_k, top_p)
    if temperature == 0.0:
        return np.argmax(logits, axis=-1).astype(np.int64)
    z: Array = logits.astype(np.float64) / temperature  # (B, V)
    if top_k is not None:
        z = top_k_filter(z, top_k)
    if top_p is not None:
        z = top_p_filter(z, top_p)
    probs, _ = softmax_forward(z)  # (B, V)
    rng = rng if rng is not None else np.random.default_rng()
    u = rng.random((probs.shape[0], 1))  # (B, 1) one uniform per row: inverse-CDF sampling
    cdf = np.cumsum(probs, axis=-1)  # (B, V)
    out = (cdf <= u * cdf[:, -1:]).sum(axis=-1)  # first token whose cumulative mass exceeds u: never a p=0 one
    return np.minimum(out, probs.shape[-1] - 1).astype(np.int64)



def decode_loop(idx: npt.NDArray[np.integer], block_size: int, max_new_tokens: int,
                full: Callable[[npt.NDArray[np.int64]], Array], new_cache: Callable[[int], Any],
                cached: Callable[[npt.NDArray[np.int64], Any], Array], *, temperature: float = 1.0,
                top_k: int | None = None, top_p: float | None = None, rng: np.random.Generator | None = None,
                use_cache: bool = True, on_token: Callable[[npt.NDArray[np.int64]], object] | None = None,
                vocab_limit: int | None = None) -> npt.NDArray[np.int64]:
    """The sampling loop every model family shares: full(window) -> logits (B, T, V) without a cache;
    new_cache(B) and cached(window, kv) -> logits for the window's positions with one.  The cache is
    (re)filled at the first step and whenever the block_size window slides; otherwise one new position.
    on_token(ids (B,)), if given, sees each step's new tokens as soon as they are drawn (streamed output).
    vocab_limit: draw only ids below it (a model whose vocabulary is padded past its tokenizer's ids)."""
    seq = idx.astype(np.int64)  # (B, T)
    kv: Any = None
    for _ in range(max_new_tokens):
        window = seq[:, -block_size:]  # (B, <= block_size) what the model can see
        if not use_cache:
            logits = full(window)  # (B, T, V)
        elif kv is None or kv.length != window.shape[1] - 1:
            kv = new_cache(seq.shape[0])  # (re)fill: first step, or the window slid
            logits = cached(window, kv)
        else:
            logits = cached(window[:, -1:], kv)  # one new position
        nxt = sample_next(logits[:, -1, :vocab_limit], temperature, top_k, top_p, rng)  # (B,)
        seq = np.concatenate([seq, nxt[:, None]], axis=1)  # (B, T + 1)
        if on_token is not None:
            on_token(nxt)
    return seq
