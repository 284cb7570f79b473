"""Causal multi-head self-attention: c_attn -> split q, k, v into heads -> attention -> merge -> c_proj.

Forward  x (B, T, C), w_attn (C, 3C), b_attn (3C,), w_proj (C, C), b_proj (C,) -> out (B, T, C).
Backward dout (B, T, C) -> dx, dw_attn, db_attn, dw_proj, db_proj.
KV-cached decoding is the same forward with `kv`: the new positions attend over the cached ones too.
Derivation: docs/derivations/self_attention.md
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, head_count, is_int, param, upstream
from .attention import AttentionCache, _attention_backward, _attention_forward
from .attention_chunks import AttentionChunksCache, _attention_chunks_backward, _attention_chunks_forward
from .linear import LinearCache, _linear_backward, _linear_forward
from .merge_heads import MergeHeadsCache, _merge_heads_backward, _merge_heads_forward
from .sdpa import causal_options
from .sdpa_tiled import SdpaTiledCache, _sdpa_tiled_backward, _sdpa_tiled_forward
from .split_heads import SplitHeadsCache, _split_heads_forward

Array = npt.NDArray[np.floating]
QUERY_CHUNK = 64  # longer sequences run the dense pair on chunks of this many queries (attention_chunks.py)


class KVSlot(NamedTuple):
    """One layer's key/value cache for decoding: keys and values of positions 0 .. start-1 are in
    k[:, :, :start] and v[:, :, :start]; a forward with this slot writes its T new positions' keys and values
    at start .. start+T-1 (the one write a layer makes) and attends over all start + T of them."""

    k: Array  # (B, H, capacity, D)
    v: Array  # (B, H, capacity, D)
    start: int  # positions already cached


class SelfAttentionCache(NamedTuple):
    c_attn: LinearCache  # x and w_attn
    split: SplitHeadsCache  # the same rearrangement for q, k and v
    attention: AttentionCache | AttentionChunksCache | SdpaTiledCache  # q, k, v (views into qkv), the weights
    merge: MergeHeadsCache  # shapes only
    c_proj: LinearCache  # the merged heads y and w_proj


def self_attention_forward(x: Array, w_attn: Array, b_attn: Array, w_proj: Array, b_proj: Array,
                           n_head: int, kv: KVSlot | None = None,
                           attention_block: int | None = None) -> tuple[Array, SelfAttentionCache]:
    """q, k, v = split(x @ w_attn + b_attn); out = merge(attention(q, k, v)) @ w_proj + b_proj.

    x (B, T, C) -> out (B, T, C); the 3C columns of c_attn are [q | k | v].  With kv (decoding; no backward),
    k and v are the cached positions' followed by the new ones.  attention_block: None for the dense pair,
    an int for sdpa_tiled with blocks that size (same result); the dense pair runs by chunks of QUERY_CHUNK
    queries once T is longer (same result).  See docs/derivations/self_attention.md.
    """
    float_array("x", x, ndim=3)
    C = x.shape[-1]
    for name, a, shape in (("w_attn", w_attn, (C, 3 * C)), ("b_attn", b_attn, (3 * C,)),
                           ("w_proj", w_proj, (C, C)), ("b_proj", b_proj, (C,))):
        param(name, a, shape, x.dtype)
    n_head = head_count("n_head", n_head, C)
    if kv is not None:
        check_kv("kv", kv, x, n_head)
    if attention_block is not None and (not is_int(attention_block) or attention_block < 1):
        raise ValueError(f"attention_block: expected None or a positive integer, got {attention_block!r}")
    return _self_attention_forward(x, w_attn, b_attn, w_proj, b_proj, n_head, kv, attention_block)


def check_kv(name: str, kv: object, x: Array, n_head: int) -> None:
    """Check a KVSlot against the input x (B, T, C) it will extend: shapes, dtype, room for T positions."""
    B, T, C = x.shape
    if not isinstance(kv, KVSlot):
        raise ValueError(f"{name}: expected a KVSlot, got {type(kv).__name__}")
    want = (B, n_head, None, C // n_head)
    for part, a in (("k", kv.k), ("v", kv.v)):
        float_array(f"{name}.{part}", a, ndim=4)
        if (a.shape[0], a.shape[1], a.shape[3]) != (B, n_head, C // n_head) or a.dtype != x.dtype:
            raise ValueError(f"{name}.{part}: expected {x.dtype} of shape {want} (B, H, capacity, D), "
                             f"got {a.dtype} {a.shape}")
    if kv.v.shape != kv.k.shape:
        raise ValueError(f"{name}.v: expected shape {kv.k.shape} (same as k), got {kv.v.shape}")
    if not is_int(kv.start) or not 0 <= kv.start <= kv.k.shape[2] - T:
        raise ValueError(f"{name}.start: {kv.start} cached + {T} new positions exceed the capacity "
                         f"{kv.k.shape[2]}")


def _self_attention_forward(x: Array, w_attn: Array, b_attn: Array, w_proj: Array, b_proj: Array,
                            n_head: int, kv: KVSlot | None = None,
                            attention_block: int | None = None) -> tuple[Array, SelfAttentionCache]:
    """self_attention_forward without the argument checks (n_head a Python int dividing C)."""
    C = x.shape[-1]
    qkv, c_attn_cache = _linear_forward(x, w_attn, b_attn)  # (B, T, 3C)
    q, split_cache = _split_heads_forward(qkv[..., :C], n_head)  # (B, H, T, D) views into qkv
    k, _ = _split_heads_forward(qkv[..., C:2 * C], n_head)  # (B, H, T, D)
    v, _ = _split_heads_forward(qkv[..., 2 * C:], n_head)  # (B, H, T, D)
    if kv is not None:  # decoding: the new keys and values join the cached ones
        t0, t1 = kv.start, kv.start + x.shape[1]
        kv.k[:, :, t0:t1] = k
        kv.v[:, :, t0:t1] = v
        k, v = kv.k[:, :, :t1], kv.v[:, :, :t1]  # (B, H, t1, D) views: every position so far
    att_cache: AttentionCache | AttentionChunksCache | SdpaTiledCache
    if attention_block is None and q.shape[2] <= QUERY_CHUNK:
        y, att_cache = _attention_forward(q, k, v)  # (B, H, T, D) causal, aligned bottom-right when Tk > T
    elif attention_block is None:  # the same, without the all-masked key blocks right of each query chunk
        y, att_cache = _attention_chunks_forward(q, k, v, QUERY_CHUNK)  # (B, H, T, D)
    else:  # the same attention by key blocks: no (T, T) array
        y, _, att_cache = _sdpa_tiled_forward(q, k, v, None, None, causal_options(q.shape[-1]), attention_block,
                                              attention_block)  # (B, H, T, D)
    y, merge_cache = _merge_heads_forward(y)  # (B, T, C)
    out, c_proj_cache = _linear_forward(y, w_proj, b_proj)  # (B, T, C)
    return out, SelfAttentionCache(c_attn_cache, split_cache, att_cache, merge_cache, c_proj_cache)


def self_attention_backward(dout: Array, cache: SelfAttentionCache) -> tuple[Array, Array, Array, Array, Array]:
    """Reverse of the forward; dq, dk, dv land side by side in one (B, T, 3C) gradient for c_attn.

    Returns dx, dw_attn, db_attn, dw_proj, db_proj.  See docs/derivations/self_attention.md.
    """
    upstream("dout", dout, cache.split.x_shape, cache.split.dtype)
    att = cache.attention
    Tk = att.k_shape[2] if isinstance(att, AttentionChunksCache) else att.k.shape[2]
    if Tk != cache.split.x_shape[1]:
        raise ValueError("cache: the forward attended over a KV cache (decoding), which has no backward")
    return _self_attention_backward(dout, cache)


def _self_attention_backward(dout: Array, cache: SelfAttentionCache, dw_attn_out: Array | None = None,
                             dw_proj_out: Array | None = None) -> tuple[Array, Array, Array, Array, Array]:
    """self_attention_backward without the argument checks; dw_attn_out, dw_proj_out as _linear_backward's
    dw_out."""
    dy, dw_proj, db_proj = _linear_backward(dout, cache.c_proj, dw_proj_out)  # (1) (B, T, C)
    dy = _merge_heads_backward(dy, cache.merge)  # (2) (B, H, T, D)
    if isinstance(cache.attention, AttentionCache):
        dq, dk, dv = _attention_backward(dy, cache.attention)  # (3) (B, H, T, D) each
    elif isinstance(cache.attention, AttentionChunksCache):
        dq, dk, dv = _attention_chunks_backward(dy, cache.attention)  # (3) by the forward's query chunks
    else:
        dq, dk, dv, _, _ = _sdpa_tiled_backward(dy, cache.attention, None)  # (3) the tiled pair
    B, T, C = cache.split.x_shape
    H = cache.split.n_head
    dqkv = np.empty((B, T, 3 * C), dtype=dq.dtype)  # (4) (B, T, 3C) = [dq | dk | dv], heads side by side in each
    parts = dqkv.reshape(B, T, 3, H, C // H)  # (B, T, 3, H, D) a view: part i, head h = columns iC + hD on
    for i, g in enumerate((dq, dk, dv)):
        parts[:, :, i] = g.swapaxes(1, 2)  # (B, T, H, D) split_heads_backward of g, written in its third: one copy
    dx, dw_attn, db_attn = _linear_backward(dqkv, cache.c_attn, dw_attn_out)  # (5) (B, T, C)
    return dx, dw_attn, db_attn, dw_proj, db_proj
