"""Softmax over the last axis: out_i = exp(x_i - max x) / sum_j exp(x_j - max x).

Forward x (..., K) -> out (..., K), rows sum to 1; backward dout (..., K) -> dx (..., K).
Derivation: docs/derivations/softmax.md
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, upstream
from .reductions import row_max, row_sum


class SoftmaxCache(NamedTuple):
    out: npt.NDArray[np.floating]  # (..., K) the probabilities: the Jacobian is written in them alone


def softmax_forward(x: npt.NDArray[np.floating]) -> tuple[npt.NDArray[np.floating], SoftmaxCache]:
    """out = exp(x - max(x)) / sum(exp(x - max(x))) along the last axis.  x (..., K) -> out (..., K).

    Subtracting the row max makes every exponent <= 0, so nothing overflows.  See docs/derivations/softmax.md.
    """
    float_array("x", x, min_ndim=1)
    if x.shape[-1] == 0:
        raise ValueError(f"x: expected a non-empty last axis, got shape {x.shape}")
    return _softmax_forward(x)


def _softmax_forward(x: npt.NDArray[np.floating]) -> tuple[npt.NDArray[np.floating], SoftmaxCache]:
    """softmax_forward without the argument checks."""
    out = x - row_max(x)  # (..., K) new array, max entry 0 (row_max: reductions.py, via argmax)
    np.exp(out, out=out)  # in place: no second (..., K) temporary
    out /= row_sum(out)  # (..., 1) row sums via BLAS
    return out, SoftmaxCache(out)


def softmax_backward(dout: npt.NDArray[np.floating], cache: SoftmaxCache) -> npt.NDArray[np.floating]:
    """dx = out * (dout - sum(dout * out)) along the last axis.  (..., K) -> (..., K).

    See docs/derivations/softmax.md (terms 1-2).
    """
    upstream("dout", dout, cache.out.shape, cache.out.dtype)
    return _softmax_backward(dout, cache)


def _softmax_backward(dout: npt.NDArray[np.floating], cache: SoftmaxCache) -> npt.NDArray[np.floating]:
    """softmax_backward without the argument checks."""
    out = cache.out
    inner = np.einsum("...k,...k->...", dout, out)[..., None]  # (..., 1) p . dout, the scalar inside (2); one pass
    dx = dout - inner  # (..., K) (1) - (2) = p * dout - p (p . dout), factor p applied next
    dx *= out
    return dx
