"""Repeat key/value heads for grouped-query attention (llm.c's repkv): query head h reads kv head h // n_rep.

Forward x (B, Hkv, T, D) -> out (B, Hkv * n_rep, T, D); backward sums each group of n_rep head gradients.
Derivation: docs/derivations/repeat_kv.md
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, is_int, upstream

Array = npt.NDArray[np.floating]


class RepeatKVCache(NamedTuple):
    n_rep: int
    shape: tuple[int, ...]  # (B, Hkv, T, D) the input's shape
    dtype: np.dtype


def repeat_kv_forward(x: Array, n_rep: int) -> tuple[Array, RepeatKVCache]:
    """out[:, h] = x[:, h // n_rep].  (B, Hkv, T, D) -> (B, Hkv * n_rep, T, D), a new array.

    See docs/derivations/repeat_kv.md.
    """
    float_array("x", x, ndim=4)
    if not is_int(n_rep) or n_rep < 1:
        raise ValueError(f"n_rep: expected a positive integer, got {n_rep!r}")
    return _repeat_kv_forward(x, int(n_rep))


def _repeat_kv_forward(x: Array, n_rep: int) -> tuple[Array, RepeatKVCache]:
    """Unchecked kernel of repeat_kv_forward."""
    out = np.repeat(x, n_rep, axis=1)  # (B, Hkv * n_rep, T, D) heads h*n_rep .. h*n_rep + n_rep - 1 copy head h
    return out, RepeatKVCache(n_rep, x.shape, x.dtype)


def repeat_kv_backward(dout: Array, cache: RepeatKVCache) -> Array:
    """dx[:, j] = sum over r < n_rep of dout[:, j * n_rep + r].  (B, Hkv * n_rep, T, D) -> (B, Hkv, T, D).

    See docs/derivations/repeat_kv.md (term 1).
    """
    B, Hkv, T, D = cache.shape
    upstream("dout", dout, (B, Hkv * cache.n_rep, T, D), cache.dtype)
    return _repeat_kv_backward(dout, cache)


def _repeat_kv_backward(dout: Array, cache: RepeatKVCache) -> Array:
    """Unchecked kernel of repeat_kv_backward."""
    B, Hkv, T, D = cache.shape
    if cache.n_rep == 1:
        return dout.copy()  # (B, Hkv, T, D) a new array, as every backward returns
    return dout.reshape(B, Hkv, cache.n_rep, T, D).sum(axis=2)  # (1) (B, Hkv, T, D) a group's copies add
