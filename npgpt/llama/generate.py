"""KV-cached generation for the Llama family: the core's own forward with a cache of rotated keys and values.

`LlamaKVCache(config, B, dtype)` preallocates (B, Hkv, block_size, D) keys and values per layer;
`forward_cached` runs T new tokens through _llama_forward with it; `generate` samples like npgpt.gpt2.generate's,
each sampled token through decode.py's one-position step.
Walkthrough: docs/llama.md ("Generation with a KV cache")
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

from .._checks import is_int, token_ids
from ..sampling import check_sampling, decode_loop
from .block import KVSlot
from .config import LlamaConfig
from .core import _llama_forward, llama_forward
from . import decode
from .decode import DecodeWeights, _decode_step, decode_weights, decode_weights_nbytes

Array = npt.NDArray[np.floating]


class LlamaKVCache:
    """Per-layer preallocated rotated keys and values for batch B, up to block_size positions."""

    def __init__(self, config: LlamaConfig, batch: int, dtype: npt.DTypeLike) -> None:
        shape = (batch, config.n_kv_head, config.block_size, config.head_size)
        self.slots = [KVSlot(np.zeros(shape, dtype), np.zeros(shape, dtype)) for _ in range(config.n_layer)]
        self.length = 0  # positions filled


def forward_cached(params: Mapping[str, Array], config: LlamaConfig, idx: npt.NDArray[np.integer],
                   kv: LlamaKVCache) -> Array:
    """Logits (B, T, V) of T new tokens at positions kv.length .. kv.length + T - 1, attending over the cache.

    The same forward as training (_llama_forward), with the cache as the attention's extra keys and values.
    """
    T = idx.shape[1]
    start = kv.length
    if start + T > config.block_size:
        raise ValueError(f"idx: {start} cached + {T} new positions exceed block_size={config.block_size}")
    logits, _, _ = _llama_forward(params, config, idx, None, kv.slots, start)  # (B, T, V)
    kv.length = start + T
    return logits


def generate(params: Mapping[str, Array], config: LlamaConfig, idx: npt.NDArray[np.integer], max_new_tokens: int,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             rng: np.random.Generator | None = None, use_cache: bool = True,
             on_token: Callable[[npt.NDArray[np.int64]], object] | None = None,
             vocab_limit: int | None = None) -> npt.NDArray[np.int64]:
    """Append max_new_tokens tokens to idx (B, T); KV-cached by default (same logits as full forwards).
    on_token(ids (B,)) sees each step's new tokens as they are drawn, as in npgpt.gpt2.generate."""
    token_ids("idx", idx, config.vocab_size)
    if idx.shape[1] < 1:
        raise ValueError("idx: expected a prompt of at least one token")
    if not is_int(max_new_tokens) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens: expected a non-negative integer, got {max_new_tokens!r}")
    check_sampling(temperature, top_k, top_p)
    dtype = params["model.embed_tokens.weight"].dtype
    small = decode_weights_nbytes(config, dtype) <= decode.COPY_LIMIT_BYTES
    weights = decode_weights(params, config) if use_cache and max_new_tokens > 0 and small else None  # once
    return decode_loop(idx, config.block_size, max_new_tokens,
                       full=lambda window: llama_forward(params, config, window)[0],
                       new_cache=lambda B: LlamaKVCache(config, B, dtype),
                       cached=lambda window, kv: _cached_logits(params, config, window, kv, weights),
                       temperature=temperature, top_k=top_k, top_p=top_p, rng=rng, use_cache=use_cache,
                       on_token=on_token, vocab_limit=vocab_limit)


def _cached_logits(params: Mapping[str, Array], config: LlamaConfig, window: npt.NDArray[np.int64],
                   kv: LlamaKVCache, weights: Sequence[DecodeWeights] | None) -> Array:
    """forward_cached's logits (B, Tn, V), with a one-position window (every sampled token) through
    decode.py's step: the same logits to rounding, with no caches and fewer NumPy calls.  weights None
    (the copies would pass decode.COPY_LIMIT_BYTES): every window through forward_cached."""
    if weights is not None and window.shape[1] == 1:
        logits = _decode_step(params, config, window[:, 0], kv.slots, kv.length, weights)  # (B, V)
        kv.length += 1
        return logits[:, None]  # (B, 1, V)
    return forward_cached(params, config, window, kv)  # (B, Tn, V) the prompt, or the refill past block_size
