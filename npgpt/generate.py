"""Sampling from a GPT with a key/value cache, so each new token costs one position, not a whole forward.

The cache keeps every layer's keys and values (B, H, block_size, D); a step runs only the new positions
through the blocks and attends over the cached keys.  Once the text is longer than block_size the window
slides: positions are re-numbered, so the cache is rebuilt from the last block_size tokens (exactly what the
full forward would see).  Derivation: docs/generate.md
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt

from ._checks import token_ids
from .config import GPTConfig
from .layers import causal_mask, gelu_forward, layernorm_forward, linear_forward, softmax_forward

Array = npt.NDArray[np.floating]


class KVCache:
    """Per-layer keys and values of the positions seen so far: k[i], v[i] are (B, H, block_size, D)."""

    def __init__(self, config: GPTConfig, batch: int, dtype: np.dtype) -> None:
        shape = (batch, config.n_head, config.block_size, config.head_size)
        self.k = [np.zeros(shape, dtype=dtype) for _ in range(config.n_layer)]  # (B, H, block, D) each
        self.v = [np.zeros(shape, dtype=dtype) for _ in range(config.n_layer)]
        self.length = 0  # positions filled


def forward_cached(params: Mapping[str, Array], config: GPTConfig, idx: npt.NDArray[np.integer],
                   kv: KVCache) -> Array:
    """Logits (B, Tn, V) for new tokens idx (B, Tn) at positions kv.length .. kv.length + Tn - 1.

    Appends their keys and values to kv.  Same arithmetic as gpt_forward in eval mode, without caches for
    backward.
    """
    B, Tn = idx.shape
    t0 = kv.length
    if t0 + Tn > config.block_size:
        raise ValueError(f"idx: {t0} cached + {Tn} new positions exceed block_size={config.block_size}")
    C, H, D = config.n_embd, config.n_head, config.head_size
    scale = 1.0 / math.sqrt(D)
    L = t0 + Tn  # keys visible to the last new query
    x = params["wte.weight"][idx] + params["wpe.weight"][t0:L]  # (B, Tn, C)
    # (Tn, L) query t0+i sees keys 0..t0+i; a single new query sees every key, so it needs no mask at all
    mask = causal_mask(L, x.dtype)[t0:L] if Tn > 1 else None
    for i in range(config.n_layer):
        p = lambda name, i=i: params[f"h.{i}.{name}"]  # noqa: E731
        h, _ = layernorm_forward(x, p("ln_1.weight"), p("ln_1.bias"))  # (B, Tn, C)
        qkv, _ = linear_forward(h, p("attn.c_attn.weight"), p("attn.c_attn.bias"))  # (B, Tn, 3C)
        qkv = qkv.reshape(B, Tn, 3, H, D).transpose(2, 0, 3, 1, 4)  # (3, B, H, Tn, D)
        kv.k[i][:, :, t0:L] = qkv[1]
        kv.v[i][:, :, t0:L] = qkv[2]
        scores = qkv[0] @ kv.k[i][:, :, :L].swapaxes(-1, -2)  # (B, H, Tn, L)
        scores *= scale
        if mask is not None:
            scores += mask
        att, _ = softmax_forward(scores)  # (B, H, Tn, L)
        y = att @ kv.v[i][:, :, :L]  # (B, H, Tn, D)
        y = y.transpose(0, 2, 1, 3).reshape(B, Tn, C)  # (B, Tn, C) merge heads
        a, _ = linear_forward(y, p("attn.c_proj.weight"), p("attn.c_proj.bias"))  # (B, Tn, C)
        x = x + a
        h, _ = layernorm_forward(x, p("ln_2.weight"), p("ln_2.bias"))  # (B, Tn, C)
        h, _ = linear_forward(h, p("mlp.c_fc.weight"), p("mlp.c_fc.bias"))  # (B, Tn, 4C)
        h, _ = gelu_forward(h)  # (B, Tn, 4C)
        m, _ = linear_forward(h, p("mlp.c_proj.weight"), p("mlp.c_proj.bias"))  # (B, Tn, C)
        x = x + m
    kv.length = L
    xf, _ = layernorm_forward(x, params["ln_f.weight"], params["ln_f.bias"])  # (B, Tn, C)
    return xf @ params["wte.weight"].T  # (B, Tn, V)


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
    if not isinstance(temperature, (int, float)) or temperature < 0.0 or not math.isfinite(temperature):
        raise ValueError(f"temperature: expected a finite number >= 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1):
        raise ValueError(f"top_k: expected a positive integer, got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0.0 < top_p <= 1.0):
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


def generate(params: Mapping[str, Array], config: GPTConfig, idx: npt.NDArray[np.integer], max_new_tokens: int,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             rng: np.random.Generator | None = None, use_cache: bool = True) -> npt.NDArray[np.int64]:
    """Append max_new_tokens tokens to idx (B, T) and return the (B, T + max_new_tokens) result.

    With use_cache (default) each new token runs one position through the model; without it every step is a
    full forward of the last block_size tokens.  Both give the same logits (to rounding).
    """
    from .model import gpt_forward

    token_ids("idx", idx, config.vocab_size)
    if idx.shape[1] < 1:
        raise ValueError("idx: expected a prompt of at least one token")
    if not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens: expected a non-negative integer, got {max_new_tokens!r}")
    check_sampling(temperature, top_k, top_p)
    seq = idx.astype(np.int64)
    dtype = params["wte.weight"].dtype
    kv: KVCache | None = None
    for _ in range(max_new_tokens):
        window = seq[:, -config.block_size:]  # (B, <= block_size) what the model can see
        if not use_cache:
            logits, _, _ = gpt_forward(params, config, window)  # (B, T, V)
        elif kv is None or kv.length != window.shape[1] - 1:
            kv = KVCache(config, seq.shape[0], dtype)  # (re)fill: first step, or the window slid
            logits = forward_cached(params, config, window, kv)
        else:
            logits = forward_cached(params, config, window[:, -1:], kv)  # one new position
        nxt = sample_next(logits[:, -1], temperature, top_k, top_p, rng)  # (B,)
        seq = np.concatenate([seq, nxt[:, None]], axis=1)
    return seq
