"""Affine map in GPT-2's Conv1D layout: out = x @ w + b, w stored (C_in, C_out).

Forward  x (..., C_in), w (C_in, C_out), b (C_out,) -> out (..., C_out).
Backward dout (..., C_out) -> dx (..., C_in), dw (C_in, C_out), db (C_out,).
Derivation: docs/derivations/linear.md
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, same_dtype, shape_is, upstream
from .reductions import column_sum


class LinearCache(NamedTuple):
    x2: npt.NDArray[np.floating]  # (N, C_in) the input with all leading axes folded into N: needed for dw
    w: npt.NDArray[np.floating]  # (C_in, C_out) needed for dx
    x_shape: tuple[int, ...]  # (..., C_in) to unfold dx


def linear_forward(
    x: npt.NDArray[np.floating], w: npt.NDArray[np.floating], b: npt.NDArray[np.floating]
) -> tuple[npt.NDArray[np.floating], LinearCache]:
    """out = x @ w + b.  x (..., C_in), w (C_in, C_out), b (C_out,) -> out (..., C_out).

    See docs/derivations/linear.md.
    """
    float_array("x", x, min_ndim=1)
    float_array("w", w, ndim=2)
    float_array("b", b, ndim=1)
    same_dtype("x", x, w=w, b=b)
    C_in, C_out = w.shape
    if C_in == 0 or C_out == 0:
        raise ValueError(f"w: expected non-empty dimensions (C_in, C_out), got shape {w.shape}")
    if x.shape[-1] != C_in:
        raise ValueError(f"x: expected last dimension {C_in} (w is {w.shape}), got shape {x.shape}")
    shape_is("b", b, (C_out,))
    return _linear_forward(x, w, b)


def _linear_forward(
    x: npt.NDArray[np.floating], w: npt.NDArray[np.floating], b: npt.NDArray[np.floating]
) -> tuple[npt.NDArray[np.floating], LinearCache]:
    """linear_forward without the argument checks."""
    C_in, C_out = w.shape
    x2 = x.reshape(-1, C_in)  # (N, C_in) one large 2-D matmul instead of a batched one
    out = x2 @ w  # (N, C_out)
    out += b  # in place: saves a second (N, C_out) temporary
    return out.reshape(*x.shape[:-1], C_out), LinearCache(x2, w, x.shape)


def linear_backward(
    dout: npt.NDArray[np.floating], cache: LinearCache
) -> tuple[npt.NDArray[np.floating], npt.NDArray[np.floating], npt.NDArray[np.floating]]:
    """dx = dout @ w.T, dw = x.T @ dout, db = sum of dout over all leading axes.

    See docs/derivations/linear.md (terms 1-3).
    """
    upstream("dout", dout, (*cache.x_shape[:-1], cache.w.shape[1]), cache.w.dtype)
    return _linear_backward(dout, cache)


def _linear_backward(
    dout: npt.NDArray[np.floating], cache: LinearCache, dw_out: npt.NDArray[np.floating] | None = None
) -> tuple[npt.NDArray[np.floating], npt.NDArray[np.floating], npt.NDArray[np.floating]]:
    """linear_backward without the argument checks.  dw_out: a (C_in, C_out) array (a model's gradient
    buffer) that receives dw and is returned as it, so dw is never a temporary to copy there."""
    x2, w, x_shape = cache
    dout2 = dout.reshape(-1, w.shape[1])  # (N, C_out)
    dx = (dout2 @ w.T).reshape(x_shape)  # (1) (N, C_in) -> (..., C_in)
    dw = np.matmul(x2.T, dout2, out=dw_out)  # (2) (C_in, C_out) a new array, or dw_out
    db = column_sum(dout2)  # (3) (C_out,) sum over the N rows, via BLAS
    return dx, dw, db
