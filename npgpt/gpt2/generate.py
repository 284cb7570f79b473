"""Sampling from a GPT with a key/value cache, so each new token costs one position, not a whole forward.

The cache keeps every layer's keys and values (B, H, block_size, D); a step runs only the new positions
through the model's own forward, whose attention takes the cache as an argument and attends over it;
each sampled token, one position, goes through decode.py's one-token step, which gives the same logits.
Once the text is longer than block_size the window slides: positions are re-numbered, so the cache is
rebuilt from the last block_size tokens (exactly what the full forward would see).  Derivation: docs/generate.md
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from .._checks import integer, token_ids
from ..sampling import check_sampling, decode_loop
from .config import GPTConfig
from .decode import _decode_step, transposed_proj
from .core import _gpt_forward, gpt_forward
from ..layers.self_attention import KVSlot

Array = npt.NDArray[np.floating]


class KVCache:
    """Per-layer keys and values of the positions seen so far: k[i], v[i] are (B, H, block_size, D)."""

    def __init__(self, config: GPTConfig, batch: int, dtype: np.dtype) -> None:
        shape = (batch, config.n_head, config.block_size, config.head_size)
        self.k = [np.zeros(shape, dtype=dtype) for _ in range(config.n_layer)]  # (B, H, block, D) each
        self.v = [np.zeros(shape, dtype=dtype) for _ in range(config.n_layer)]
        self.length = 0  # positions filled

    def slots(self) -> list[KVSlot]:
        """One KVSlot per layer, for a forward of the positions after the cached ones."""
        return [KVSlot(k, v, self.length) for k, v in zip(self.k, self.v)]


def forward_cached(params: Mapping[str, Array], config: GPTConfig, idx: npt.NDArray[np.integer],
                   kv: KVCache) -> Array:
    """Logits (B, Tn, V) for new tokens idx (B, Tn) at positions kv.length .. kv.length + Tn - 1.

    The model's own forward (gpt.py) with the cache as the attention's kv argument: it appends the new keys
    and values, and kv.length advances by Tn.
    """
    token_ids("idx", idx, config.vocab_size)
    Tn = idx.shape[1]
    if kv.length + Tn > config.block_size:
        raise ValueError(f"idx: {kv.length} cached + {Tn} new positions exceed block_size={config.block_size}")
    logits, _, _ = _gpt_forward(params, config, idx, kv=kv.slots())  # (B, Tn, V)
    kv.length += Tn
    return logits


def generate(params: Mapping[str, Array], config: GPTConfig, idx: npt.NDArray[np.integer], max_new_tokens: int,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             rng: np.random.Generator | None = None, use_cache: bool = True,
             on_token: Callable[[npt.NDArray[np.int64]], object] | None = None,
             vocab_limit: int | None = None) -> npt.NDArray[np.int64]:
    """Append max_new_tokens tokens to idx (B, T) and return the (B, T + max_new_tokens) result.

    With use_cache (default) each new token runs one position through the model; without it every step is a
    full forward of the last block_size tokens.  Both give the same logits (to rounding).  on_token(ids (B,))
    is called with each step's new tokens as they are drawn (to stream them).
    """
    token_ids("idx", idx, config.vocab_size)
    if idx.shape[1] < 1:
        raise ValueError("idx: expected a prompt of at least one token")
    integer("max_new_tokens", max_new_tokens, minimum=0)
    check_sampling(temperature, top_k, top_p)
    dtype = params["wte.weight"].dtype
    proj_t = transposed_proj(params, config) if use_cache and max_new_tokens > 0 else []  # once per call
    return decode_loop(idx, config.block_size, max_new_tokens,
                       full=lambda window: gpt_forward(params, config, window)[0],
                       new_cache=lambda B: KVCache(config, B, dtype),
                       cached=lambda window, kv: _cached_logits(params, config, window, kv, proj_t),
                       temperature=temperature, top_k=top_k, top_p=top_p, rng=rng, use_cache=use_cache,
                       on_token=on_token, vocab_limit=vocab_limit)


def decode_step(params: Mapping[str, Array], config: GPTConfig, tokens: npt.NDArray[np.integer],
                kv: KVCache, proj_t: Sequence[Array] | None = None) -> Array:
    """Logits (B, V) for one token per row, tokens (B,), at position kv.length, which then advances by one.

    The same logits as forward_cached(params, config, tokens[:, None], kv)[:, 0] (to rounding), through
    decode.py's one-position step: what generate runs for every sampled token.  proj_t: the (C, 4C) copies
    of decode.transposed_proj(params, config), made once for many steps (None: made for this call).
    See docs/generate.md.
    """
    token_ids("tokens", tokens, config.vocab_size, ndim=1)
    if tokens.shape[0] != kv.k[0].shape[0]:
        raise ValueError(f"tokens: expected {kv.k[0].shape[0]} ids (the cache's batch), got shape {tokens.shape}")
    if kv.length >= config.block_size:
        raise ValueError(f"kv: all block_size={config.block_size} positions are filled; no room for a token")
    if proj_t is None:
        proj_t = transposed_proj(params, config)
    C, dtype = config.n_embd, params["wte.weight"].dtype
    if len(proj_t) != config.n_layer or any(not isinstance(w, np.ndarray) or w.shape != (C, 4 * C)
                                            or w.dtype != dtype for w in proj_t):
        raise ValueError(f"proj_t: expected {config.n_layer} {dtype} arrays of shape ({C}, {4 * C}) "
                         f"(decode.transposed_proj), got {[getattr(w, 'shape', type(w).__name__) for w in proj_t]}")
    logits = _decode_step(params, config, tokens, kv.k, kv.v, kv.length, proj_t)  # (B, V)
    kv.length += 1
    return logits


def _cached_logits(params: Mapping[str, Array], config: GPTConfig, window: npt.NDArray[np.int64],
                   kv: KVCache, proj_t: Sequence[Array]) -> Array:
    """forward_cached's logits (B, Tn, V), with a one-position window (every sampled token) through
    decode.py's step: the same logits to rounding, with no caches and fewer NumPy calls."""
    if window.shape[1] == 1:
        logits = _decode_step(params, config, window[:, 0], kv.k, kv.v, kv.length, proj_t)  # (B, V)
        kv.length += 1
        return logits[:, None]  # (B, 1, V)
    return forward_cached(params, config, window, kv)  # (B, Tn, V) the prompt, or the refill past block_size
