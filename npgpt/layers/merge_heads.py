"""Merge heads back into channels: (B, H, T, D) -> (B, T, C) with C = H * D; channel c = h * D + d.

The inverse of split_heads; its backward is split_heads' forward applied to the gradient.
Derivation: docs/derivations/merge_heads.md
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, upstream


class MergeHeadsCache(NamedTuple):
    x_shape: tuple[int, ...]  # (B, H, T, D): all the backward needs
    dtype: np.dtype  # to check dout against


def merge_heads_forward(x: npt.NDArray[np.floating]) -> tuple[npt.NDArray[np.floating], MergeHeadsCache]:
    """out[b, t, h * D + d] = x[b, h, t, d].  x (B, H, T, D) -> out (B, T, C), a new contiguous array.

    See docs/derivations/merge_heads.md.
    """
    float_array("x", x, ndim=4)
    return _merge_heads_forward(x)


def _merge_heads_forward(x: npt.NDArray[np.floating]) -> tuple[npt.NDArray[np.floating], MergeHeadsCache]:
    """merge_heads_forward without the argument checks."""
    B, H, T, D = x.shape
    out = x.transpose(0, 2, 1, 3).copy().reshape(B, T, H * D)  # (B, T, C)
    return out, MergeHeadsCache(x.shape, x.dtype)


def merge_heads_backward(dout: npt.NDArray[np.floating], cache: MergeHeadsCache) -> npt.NDArray[np.floating]:
    """dx[b, h, t, d] = dout[b, t, h * D + d].  (B, T, C) -> (B, H, T, D), a new array.

    The inverse permutation; see docs/derivations/merge_heads.md (term 1).
    """
    B, H, T, D = cache.x_shape
    upstream("dout", dout, (B, T, H * D), cache.dtype)
    return _merge_heads_backward(dout, cache)


def _merge_heads_backward(dout: npt.NDArray[np.floating], cache: MergeHeadsCache) -> npt.NDArray[np.floating]:
    """merge_heads_backward without the argument checks."""
    B, H, T, D = cache.x_shape
    return dout.reshape(B, T, H, D).transpose(0, 2, 1, 3).copy()  # (1) (B, H, T, D)
