"""Causal scaled dot-product attention: out = softmax(mask(q k^T / sqrt(D))) v, mask aligned bottom-right.

Forward q (B, H, Tq, D), k, v (B, H, Tk, D) with Tk >= Tq -> out (B, H, Tq, D); query i sees keys
0..i + Tk - Tq (Tq == Tk: plain causal; Tq < Tk: the last Tq positions of a KV-cached sequence).
Backward dout (B, H, Tq, D) -> dq (B, H, Tq, D), dk, dv (B, H, Tk, D).
Derivation: docs/derivations/attention.md
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, same_dtype, shape_is, upstream
from .softmax import SoftmaxCache, _softmax_backward, _softmax_forward

Array = npt.NDArray[np.floating]


class AttentionCache(NamedTuple):
    q_scaled: Array  # (B, H, Tq, D) q * scale, needed for dk
    k: Array  # (B, H, Tk, D) needed for dq
    v: Array  # (B, H, Tk, D) needed for datt
    softmax: SoftmaxCache  # att (B, H, Tq, Tk) probabilities: needed for dv and dscores
    scale: float


@functools.lru_cache(maxsize=32)
def causal_mask(T: int, dtype: np.dtype) -> Array:
    """(T, T) additive mask: 0 on and below the diagonal, -inf above (read-only, cached per T and dtype).

    exp(-inf) is exactly 0, so future keys get exactly zero weight and zero gradient.  The bottom-right
    aligned (Tq, Tk) mask is the view causal_mask(Tk)[Tk - Tq:].
    """
    mask = np.zeros((T, T), dtype=dtype)  # (T, T)
    mask[np.triu_indices(T, k=1)] = -np.inf
    mask.flags.writeable = False
    return mask


def attention_forward(q: Array, k: Array, v: Array) -> tuple[Array, AttentionCache]:
    """out = softmax(q k^T / sqrt(D) + M) v, M_ij = -inf for j > i + Tk - Tq (bottom-right causal).

    q (B, H, Tq, D), k, v (B, H, Tk, D), Tk >= Tq -> out (B, H, Tq, D).  See docs/derivations/attention.md.
    """
    check_qkv(q, k, v)
    return _attention_forward(q, k, v)


def check_qkv(q: Array, k: Array, v: Array) -> None:
    """attention_forward's checks: q (B, H, Tq, D), k and v (B, H, Tk, D) of one float dtype, Tk >= Tq."""
    float_array("q", q, ndim=4)
    float_array("k", k, ndim=4)
    float_array("v", v, ndim=4)
    same_dtype("q", q, k=k, v=v)
    B, H, Tq, D = q.shape
    if k.shape[:2] != (B, H) or k.shape[3] != D:
        raise ValueError(f"k: expected shape ({B}, {H}, Tk, {D}) to match q {q.shape}, got {k.shape}")
    if k.shape[2] < Tq:
        raise ValueError(f"k: expected Tk >= Tq = {Tq} keys (causal, aligned bottom-right), got shape {k.shape}")
    shape_is("v", v, k.shape)


def _attention_forward(q: Array, k: Array, v: Array) -> tuple[Array, AttentionCache]:
    """The unchecked kernel of attention_forward (composites and the model call this)."""
    Tq, D = q.shape[2], q.shape[3]
    Tk = k.shape[2]
    scale = 1.0 / math.sqrt(D)  # Python float: float32 stays float32
    q_scaled = q * scale  # (B, H, Tq, D) scaling q, not the (B, H, Tq, Tk) scores: Tk/D times fewer multiplies
    if Tq == 1:  # one new query (KV-cached decoding): it sees every key, so there is nothing to mask, and
        scores = q_scaled @ k.swapaxes(-1, -2)  # (B, H, 1, Tk) a single row does not repay copying k^T
    else:
        kT = np.ascontiguousarray(k.swapaxes(-1, -2))  # (B, H, D, Tk) copy: q @ kT beats q @ k.T even with it
        scores = q_scaled @ kT  # (B, H, Tq, Tk)
        scores += causal_mask(Tk, q.dtype)[Tk - Tq:]  # (Tq, Tk) view, in place: unseen keys become -inf
    att, sm_cache = _softmax_forward(scores)  # (B, H, Tq, Tk) rows sum to 1, zero right of the shifted diagonal
    out = att @ v  # (B, H, Tq, D)
    return out, AttentionCache(q_scaled, k, v, sm_cache, scale)


def attention_backward(dout: Array, cache: AttentionCache) -> tuple[Array, Array, Array]:
    """dv = att^T dout;  datt = dout v^T;  dscores = softmax_backward(datt);  dq = dscores k s;  dk = dscores^T q s.

    dout (B, H, Tq, D) -> dq (B, H, Tq, D), dk, dv (B, H, Tk, D).  See docs/derivations/attention.md (terms 1-5).
    """
    upstream("dout", dout, cache.q_scaled.shape, cache.q_scaled.dtype)
    return _attention_backward(dout, cache)


def _attention_backward(dout: Array, cache: AttentionCache) -> tuple[Array, Array, Array]:
    """The unchecked kernel of attention_backward."""
    q_scaled, k, v, sm_cache, scale = cache
    att = sm_cache.out  # (B, H, Tq, Tk)
    dv = att.swapaxes(-1, -2) @ dout  # (1) (B, H, Tk, D)
    datt = dout @ np.ascontiguousarray(v.swapaxes(-1, -2))  # (2) (B, H, Tq, Tk) via a (B, H, D, Tk) copy, as kT
    dscores = _softmax_backward(datt, sm_cache)  # (3) (B, H, Tq, Tk) exactly 0 where att is 0 (unseen keys)
    dq = dscores @ k  # (4) (B, H, Tq, D)
    dq *= scale  # the s of (4), on (B, H, Tq, D) rather than on dscores (B, H, Tq, Tk)
    dk = dscores.swapaxes(-1, -2) @ q_scaled  # (5) (B, H, Tk, D): the s of (5) is already inside q_scaled
    return dq, dk, dv
