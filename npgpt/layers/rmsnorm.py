"""Root-mean-square normalisation over the last axis: out = x / sqrt(mean(x^2) + eps) * w (Llama, T5).

Gemma's variant scales by (1 + w) instead (offset=1.0).  No centring and no bias, unlike LayerNorm.
Forward  x (..., C), w (C,) -> out (..., C).  Backward dout (..., C) -> dx (..., C), dw (C,).
Derivation: docs/derivations/rmsnorm.md
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, real_number, same_dtype, shape_is, upstream
from .reductions import column_sum, row_mean

Array = npt.NDArray[np.floating]
Stats = Literal["input", "float64"]


class RMSNormCache(NamedTuple):
    xhat: Array  # (..., C) x * rstd, in the statistics' dtype: needed for dw and dx
    rstd: Array  # (..., 1) 1 / sqrt(mean(x^2) + eps), in the statistics' dtype
    w_eff: Array  # (C,) the scale actually applied: w, or 1 + w for Gemma
    dtype: np.dtype  # the input's dtype: every gradient is returned in it


def rmsnorm_forward(x: Array, w: Array, eps: float = 1e-6, offset: float = 0.0,
                    stats: Stats = "input") -> tuple[Array, RMSNormCache]:
    """out = x * rsqrt(mean(x^2) + eps) * (offset + w), over the last axis.  x (..., C), w (C,) -> (..., C).

    offset=1.0 is Gemma's (1 + w).  stats="input" computes in x's dtype (what HF's LlamaRMSNorm does for a
    float32 or float64 input); "float64" computes the statistics and xhat in float64, then rounds once.
    See docs/derivations/rmsnorm.md.
    """
    float_array("x", x, min_ndim=1)
    float_array("w", w, ndim=1)
    same_dtype("x", x, w=w)
    shape_is("w", w, (x.shape[-1],))
    eps = real_number("eps", eps)
    if not eps > 0:
        raise ValueError(f"eps: expected a positive number, got {eps}")
    offset = real_number("offset", offset)
    if stats not in ("input", "float64"):
        raise ValueError(f"stats: expected 'input' or 'float64', got {stats!r}")
    return _rmsnorm_forward(x, w, eps, offset, stats)


def _rmsnorm_forward(x: Array, w: Array, eps: float, offset: float, stats: Stats) -> tuple[Array, RMSNormCache]:
    """Unchecked kernel of rmsnorm_forward."""
    xs = x.astype(np.float64) if stats == "float64" else x  # (..., C) the statistics' dtype
    ms = row_mean(xs * xs)  # (..., 1) mean square
    ms += eps
    rstd = 1.0 / np.sqrt(ms)  # (..., 1)
    xhat = xs * rstd  # (..., C)
    w_eff = w + offset if offset != 0.0 else w  # (C,) Python float offset: w's dtype is kept
    out = xhat.astype(x.dtype, copy=False) * w_eff  # (..., C) HF rounds xhat to the input dtype, then scales
    return out, RMSNormCache(xhat, rstd, w_eff, x.dtype)


def rmsnorm_backward(dout: Array, cache: RMSNormCache) -> tuple[Array, Array]:
    """dx = rstd * (g - xhat * mean(g * xhat)), g = dout * w_eff;  dw = sum(dout * xhat) over leading axes.

    See docs/derivations/rmsnorm.md (terms 1-4).
    """
    upstream("dout", dout, cache.xhat.shape, cache.dtype)
    return _rmsnorm_backward(dout, cache)


def _rmsnorm_backward(dout: Array, cache: RMSNormCache) -> tuple[Array, Array]:
    """Unchecked kernel of rmsnorm_backward."""
    xhat, rstd, w_eff, dtype = cache
    d = dout.astype(xhat.dtype, copy=False)  # (..., C) float64 when the statistics were
    dw = column_sum(d * xhat.astype(dtype, copy=False)).astype(dtype, copy=False)  # (1) (C,)
    g = d * w_eff.astype(xhat.dtype, copy=False)  # (2) (..., C) dxhat
    proj = row_mean(g * xhat)  # (3) (..., 1) mean(g * xhat): the path through rstd
    dx = g - xhat * proj  # (4) (..., C) ...
    dx *= rstd  # (4) ... times rstd
    return dx.astype(dtype, copy=False), dw
