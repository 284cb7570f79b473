"""Causal multi-head self-attention: c_attn -> split q, k, v into heads -> attention -> merge -> c_proj.

Forward  x (B, T, C), w_attn (C, 3C), b_attn (3C,), w_proj (C, C), b_proj (C,) -> out (B, T, C).
Backward dout (B, T, C) -> dx, dw_attn, db_attn, dw_proj, db_proj.
Derivation: docs/derivations/self_attention.md
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, head_count, param, upstream
from .attention import AttentionCache, attention_backward, attention_forward
from .linear import LinearCache, _linear_backward, _linear_forward
from .merge_heads import MergeHeadsCache, _merge_heads_backward, _merge_heads_forward
from .split_heads import SplitHeadsCache, _split_heads_backward, _split_heads_forward

Array = npt.NDArray[np.floating]


class SelfAttentionCache(NamedTuple):
    c_attn: LinearCache  # x and w_attn
    split: SplitHeadsCache  # the same rearrangement for q, k and v
    attention: AttentionCache  # q, k, v (views into qkv) and the attention weights
    merge: MergeHeadsCache  # shapes only
    c_proj: LinearCache  # the merged heads y and w_proj


def self_attention_forward(x: Array, w_attn: Array, b_attn: Array, w_proj: Array, b_proj: Array,
                           n_head: int) -> tuple[Array, SelfAttentionCache]:
    """q, k, v = split(x @ w_attn + b_attn); out = merge(attention(q, k, v)) @ w_proj + b_proj.

    x (B, T, C) -> out (B, T, C); the 3C columns of c_attn are [q | k | v].  See docs/derivations/self_attention.md.
    """
    float_array("x", x, ndim=3)
    C = x.shape[-1]
    for name, a, shape in (("w_attn", w_attn, (C, 3 * C)), ("b_attn", b_attn, (3 * C,)),
                           ("w_proj", w_proj, (C, C)), ("b_proj", b_proj, (C,))):
        param(name, a, shape, x.dtype)
    return _self_attention_forward(x, w_attn, b_attn, w_proj, b_proj, head_count("n_head", n_head, C))


def _self_attention_forward(x: Array, w_attn: Array, b_attn: Array, w_proj: Array, b_proj: Array,
                            n_head: int) -> tuple[Array, SelfAttentionCache]:
    """self_attention_forward without the argument checks (n_head a Python int dividing C)."""
    C = x.shape[-1]
    qkv, c_attn_cache = _linear_forward(x, w_attn, b_attn)  # (B, T, 3C)
    q, split_cache = _split_heads_forward(qkv[..., :C], n_head)  # (B, H, T, D) views into qkv
    k, _ = _split_heads_forward(qkv[..., C:2 * C], n_head)  # (B, H, T, D)
    v, _ = _split_heads_forward(qkv[..., 2 * C:], n_head)  # (B, H, T, D)
    y, att_cache = attention_forward(q, k, v)  # (B, H, T, D)
    y, merge_cache = _merge_heads_forward(y)  # (B, T, C)
    out, c_proj_cache = _linear_forward(y, w_proj, b_proj)  # (B, T, C)
    return out, SelfAttentionCache(c_attn_cache, split_cache, att_cache, merge_cache, c_proj_cache)


def self_attention_backward(dout: Array, cache: SelfAttentionCache) -> tuple[Array, Array, Array, Array, Array]:
    """Reverse of the forward; dq, dk, dv land side by side in one (B, T, 3C) gradient for c_attn.

    Returns dx, dw_attn, db_attn, dw_proj, db_proj.  See docs/derivations/self_attention.md.
    """
    upstream("dout", dout, cache.split.x_shape, cache.split.dtype)
    return _self_attention_backward(dout, cache)


def _self_attention_backward(dout: Array, cache: SelfAttentionCache) -> tuple[Array, Array, Array, Array, Array]:
    """self_attention_backward without the argument checks."""
    dy, dw_proj, db_proj = _linear_backward(dout, cache.c_proj)  # (1) (B, T, C)
    dy = _merge_heads_backward(dy, cache.merge)  # (2) (B, H, T, D)
    dq, dk, dv = attention_backward(dy, cache.attention)  # (3) (B, H, T, D) each
    dqkv = np.concatenate([_split_heads_backward(g, cache.split) for g in (dq, dk, dv)], axis=-1)  # (4) (B, T, 3C)
    dx, dw_attn, db_attn = _linear_backward(dqkv, cache.c_attn)  # (5) (B, T, C)
    return dx, dw_attn, db_attn, dw_proj, db_proj
