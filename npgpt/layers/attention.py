"""Causal scaled dot-product attention: out = softmax(mask(q k^T / sqrt(D))) v.

Forward q, k, v (B, H, T, D) -> out (B, H, T, D); query t sees keys 0..t only.
Backward dout (B, H, T, D) -> dq, dk, dv (B, H, T, D).
Derivation: docs/derivations/attention.md
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, same_dtype, shape_is, upstream
from .softmax import SoftmaxCache, softmax_backward, softmax_forward


class AttentionCache(NamedTuple):
    q_scaled: npt.NDArray[np.floating]  # (B, H, T, D) q * scale, needed for dk
    k: npt.NDArray[np.floating]  # (B, H, T, D) needed for dq
    v: npt.NDArray[np.floating]  # (B, H, T, D) needed for datt
    softmax: SoftmaxCache  # att (B, H, T, T) probabilities: needed for dv and dscores
    scale: float


@functools.lru_cache(maxsize=32)
def causal_mask(T: int, dtype: np.dtype) -> npt.NDArray[np.floating]:
    """(T, T) additive mask: 0 on and below the diagonal, -inf above (read-only, cached per T and dtype).

    exp(-inf) is exactly 0, so future keys get exactly zero weight and zero gradient.
    """
    mask = np.zeros((T, T), dtype=dtype)  # (T, T)
    mask[np.triu_indices(T, k=1)] = -np.inf
    mask.flags.writeable = False
    return mask


def attention_forward(
    q: npt.NDArray[np.floating], k: npt.NDArray[np.floating], v: npt.NDArray[np.floating]
) -> tuple[npt.NDArray[np.floating], AttentionCache]:
    """out = softmax(q k^T / sqrt(D) + M) v with M = -inf above the diagonal.  (B, H, T, D) each.

    See docs/derivations/attention.md.
    """
    float_array("q", q, ndim=4)
    float_array("k", k, ndim=4)
    float_array("v", v, ndim=4)
    same_dtype("q", q, k=k, v=v)
    shape_is("k", k, q.shape)
    shape_is("v", v, q.shape)
    T, D = q.shape[2], q.shape[3]
    scale = 1.0 / math.sqrt(D)  # Python float: float32 stays float32
    q_scaled = q * scale  # (B, H, T, D) scaling q, not the (B, H, T, T) scores: T/D times fewer multiplies
    kT = np.ascontiguousarray(k.swapaxes(-1, -2))  # (B, H, D, T) copy: q @ kT beats q @ k.T even with it
    scores = q_scaled @ kT  # (B, H, T, T)
    scores += causal_mask(T, q.dtype)  # in place: future positions become -inf
    att, sm_cache = softmax_forward(scores)  # (B, H, T, T) rows sum to 1, zero above the diagonal
    out = att @ v  # (B, H, T, D)
    return out, AttentionCache(q_scaled, k, v, sm_cache, scale)


def attention_backward(
    dout: npt.NDArray[np.floating], cache: AttentionCache
) -> tuple[npt.NDArray[np.floating], npt.NDArray[np.floating], npt.NDArray[np.floating]]:
    """dv = att^T dout;  datt = dout v^T;  dscores = softmax_backward(datt);  dq = dscores k s;  dk = dscores^T q s.

    (B, H, T, D) each.  See docs/derivations/attention.md (terms 1-5).
    """
    q_scaled, k, v, sm_cache, scale = cache
    upstream("dout", dout, q_scaled.shape, q_scaled.dtype)
    att = sm_cache.out  # (B, H, T, T)
    dv = att.swapaxes(-1, -2) @ dout  # (1) (B, H, T, D)
    datt = dout @ np.ascontiguousarray(v.swapaxes(-1, -2))  # (2) (B, H, T, T) via a (B, H, D, T) copy, as kT
    dscores = softmax_backward(datt, sm_cache)  # (3) (B, H, T, T) exactly 0 where att is 0 (the future)
    dq = dscores @ k  # (4) (B, H, T, D)
    dq *= scale  # the s of (4), on (B, H, T, D) rather than on dscores (B, H, T, T)
    dk = dscores.swapaxes(-1, -2) @ q_scaled  # (5) (B, H, T, D): the s of (5) is already inside q_scaled
    return dq, dk, dv
