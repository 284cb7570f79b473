"""Layer normalisation over the last axis: out = (x - mean) / sqrt(var + eps) * w + b.

Forward  x (..., C), w (C,), b (C,) -> out (..., C); var is the biased (1/C) variance.
Backward dout (..., C) -> dx (..., C), dw (C,), db (C,).
Derivation: docs/derivations/layernorm.md
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, real_number, same_dtype, shape_is, upstream
from .reductions import column_sum, row_mean


class LayerNormCache(NamedTuple):
    xhat: npt.NDArray[np.floating]  # (..., C) normalised input: needed for dw and for dx
    rstd: npt.NDArray[np.floating]  # (..., 1) 1 / sqrt(var + eps): the only statistic dx needs
    w: npt.NDArray[np.floating]  # (C,) scale, needed for dxhat


def layernorm_forward(
    x: npt.NDArray[np.floating],
    w: npt.NDArray[np.floating],
    b: npt.NDArray[np.floating],
    eps: float = 1e-5,
) -> tuple[npt.NDArray[np.floating], LayerNormCache]:
    """out = xhat * w + b, xhat = (x - mean(x)) * rsqrt(var(x) + eps), over the last axis.

    x (..., C), w (C,), b (C,) -> out (..., C).  See docs/derivations/layernorm.md.
    """
    float_array("x", x, min_ndim=1)
    float_array("w", w, ndim=1)
    float_array("b", b, ndim=1)
    same_dtype("x", x, w=w, b=b)
    C = x.shape[-1]
    shape_is("w", w, (C,))
    shape_is("b", b, (C,))
    eps = real_number("eps", eps)  # a Python float keeps float32 float32 (a NumPy float64 scalar would promote)
    if not eps > 0:
        raise ValueError(f"eps: expected a positive number, got {eps}")
    return _layernorm_forward(x, w, b, eps)


def _layernorm_forward(
    x: npt.NDArray[np.floating], w: npt.NDArray[np.floating], b: npt.NDArray[np.floating], eps: float = 1e-5
) -> tuple[npt.NDArray[np.floating], LayerNormCache]:
    """layernorm_forward without the argument checks (eps a Python float)."""
    mean = row_mean(x)  # (..., 1)
    xc = x - mean  # (..., C) centred; becomes xhat in place below
    var = row_mean(xc * xc)  # (..., 1) biased variance
    var += eps
    rstd = 1.0 / np.sqrt(var)  # (..., 1)
    xc *= rstd  # (..., C) xhat, in place: no extra temporary
    out = xc * w  # (..., C)
    out += b
    return out, LayerNormCache(xc, rstd, w)


def layernorm_backward(
    dout: npt.NDArray[np.floating], cache: LayerNormCache
) -> tuple[npt.NDArray[np.floating], npt.NDArray[np.floating], npt.NDArray[np.floating]]:
    """dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)), dxhat = dout * w.

    dw = sum(dout * xhat), db = sum(dout), summed over all leading axes.  See docs/derivations/layernorm.md.
    """
    upstream("dout", dout, cache.xhat.shape, cache.xhat.dtype)
    return _layernorm_backward(dout, cache)


def _layernorm_backward(
    dout: npt.NDArray[np.floating], cache: LayerNormCache
) -> tuple[npt.NDArray[np.floating], npt.NDArray[np.floating], npt.NDArray[np.floating]]:
    """layernorm_backward without the argument checks."""
    xhat, rstd, w = cache
    db = column_sum(dout)  # (1) (C,)
    dout_xhat = dout * xhat  # (..., C) shared by (2) and (5)
    dw = column_sum(dout_xhat)  # (2) (C,)
    w_mean = w * (1.0 / w.shape[0])  # (C,) g = dout * w (3), so a row mean of g-terms is a product with w / C
    term_mean = (dout @ w_mean)[..., None]  # (4) (..., 1) mean(g), without forming g
    term_var = (dout_xhat @ w_mean)[..., None]  # (5) (..., 1) mean(g * xhat)
    dx = dout * w  # (3) (..., C) g = dxhat; (6) is built in place in this new array
    dx -= term_mean
    dx -= np.multiply(xhat, term_var, out=dout_xhat)  # xhat * term_var, in the spent dout_xhat buffer
    dx *= rstd  # (6) (..., C)
    return dx, dw, db
