"""Sums and means along one axis as BLAS matrix-vector products, and the row maximum through argmax.

NumPy reduces along a short last axis (64-768 elements, as in LayerNorm and softmax rows) several times
slower than a matrix-vector product with a vector of ones does the same sum, so the hot layers use these.
Its max over such an axis goes row by row as well, while argmax is vectorised: row_max reads the maxima
through it, twice as fast on attention's (B, H, T, T) scores.
Derivation notes: docs/derivations/layernorm.md (the "Means as matrix products" point).
"""

from __future__ import annotations

import functools

import numpy as np
import numpy.typing as npt


@functools.lru_cache(maxsize=64)
def _filled(n: int, value: float, dtype: np.dtype) -> npt.NDArray[np.floating]:
    """A read-only (n,) vector of `value`, made once per (n, value, dtype): saves an allocation per call."""
    vec = np.full(n, value, dtype=dtype)  # (n,)
    vec.flags.writeable = False
    return vec


def row_sum(a: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
    """Sum over the last axis, kept as (..., 1): a @ ones(K)."""
    return (a @ _filled(a.shape[-1], 1.0, a.dtype))[..., None]  # (..., 1)


def row_mean(a: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
    """Mean over the last axis, kept as (..., 1): a @ full(K, 1/K)."""
    K = a.shape[-1]
    return (a @ _filled(K, 1.0 / K, a.dtype))[..., None]  # (..., 1)


def row_max(a: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
    """Max over the last axis, kept as (..., 1): the entry argmax points at.  The same values as
    a.max(axis=-1, keepdims=True), NaN rows included (argmax stops at the first NaN)."""
    return np.take_along_axis(a, a.argmax(axis=-1)[..., None], axis=-1)  # (..., 1)


def column_sum(a: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
    """Sum over every axis but the last, (..., C) -> (C,): ones(N) @ a with the leading axes folded into N."""
    a2 = a.reshape(-1, a.shape[-1])  # (N, C)
    return _filled(a2.shape[0], 1.0, a.dtype) @ a2  # (C,)
