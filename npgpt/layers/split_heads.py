"""Split channels into heads: (B, T, C) -> (B, H, T, D) with D = C // H; channel c = h * D + d.

A pure rearrangement, so the backward is the inverse rearrangement of the gradient.
Derivation: docs/derivations/split_heads.md
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, head_count, upstream


class SplitHeadsCache(NamedTuple):
    x_shape: tuple[int, ...]  # (B, T, C): with n_head, all the backward needs
    n_head: int  # H
    dtype: np.dtype  # to check dout against


def split_heads_forward(
    x: npt.NDArray[np.floating], n_head: int
) -> tuple[npt.NDArray[np.floating], SplitHeadsCache]:
    """out[b, h, t, d] = x[b, t, h * D + d].  x (B, T, C) -> out (B, H, T, D).

    Returns a view (no copy); see docs/derivations/split_heads.md.
    """
    float_array("x", x, ndim=3)
    n_head = head_count("n_head", n_head, x.shape[-1])
    return _split_heads_forward(x, n_head)


def _split_heads_forward(
    x: npt.NDArray[np.floating], n_head: int
) -> tuple[npt.NDArray[np.floating], SplitHeadsCache]:
    """split_heads_forward without the argument checks (n_head a Python int)."""
    B, T, C = x.shape
    out = x.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3)  # (B, H, T, D)
    return out, SplitHeadsCache(x.shape, n_head, x.dtype)


def split_heads_backward(dout: npt.NDArray[np.floating], cache: SplitHeadsCache) -> npt.NDArray[np.floating]:
    """dx[b, t, h * D + d] = dout[b, h, t, d].  (B, H, T, D) -> (B, T, C), a new array.

    The inverse permutation; see docs/derivations/split_heads.md (term 1).
    """
    B, T, C = cache.x_shape
    H = cache.n_head
    upstream("dout", dout, (B, H, T, C // H), cache.dtype)
    return _split_heads_backward(dout, cache)


def _split_heads_backward(dout: npt.NDArray[np.floating], cache: SplitHeadsCache) -> npt.NDArray[np.floating]:
    """split_heads_backward without the argument checks."""
    B, T, C = cache.x_shape
    return dout.transpose(0, 2, 1, 3).copy().reshape(B, T, C)  # (1) (B, T, C)
