"""Inverted dropout: out = x * m / (1 - p), m_i ~ Bernoulli(1 - p); p is the probability of dropping.

Identity when train is False or p == 0, so evaluation needs no rescaling.
Forward x (...) -> out (...); backward dout (...) -> dx (...).
Derivation: docs/derivations/dropout.md
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, generator, probability, upstream


class DropoutCache(NamedTuple):
    scaled_mask: npt.NDArray[np.floating] | None  # (...) m / (1 - p), or None for the identity
    shape: tuple[int, ...]  # x's shape, to check dout against
    dtype: np.dtype  # x's dtype, likewise


def dropout_forward(
    x: npt.NDArray[np.floating], p: float, rng: np.random.Generator | None, train: bool = True
) -> tuple[npt.NDArray[np.floating], DropoutCache]:
    """out = x * m / (1 - p) with m_i = 1 with probability 1 - p, else 0.  x (...) -> out (...).

    rng is a numpy Generator (only drawn from when train and p > 0).  See docs/derivations/dropout.md.
    """
    float_array("x", x, min_ndim=1)
    p = probability("p", p)
    if train and p > 0.0:
        generator("rng", rng)
    return _dropout_forward(x, p, rng, train)


def _dropout_forward(
    x: npt.NDArray[np.floating], p: float, rng: np.random.Generator | None, train: bool = True
) -> tuple[npt.NDArray[np.floating], DropoutCache]:
    """dropout_forward without the argument checks (p a Python float, rng a Generator when it draws)."""
    if not train or p == 0.0:
        return x.copy(), DropoutCache(None, x.shape, x.dtype)  # a copy: outputs never alias inputs
    assert rng is not None  # checked by dropout_forward (or the composite calling this kernel)
    keep = rng.random(x.shape) >= p  # (...) True with probability 1 - p; float64 draws: same mask in any dtype
    scaled_mask = keep.astype(x.dtype)  # (...) m, 0 or 1
    scaled_mask *= 1.0 / (1.0 - p)  # the 1/(1-p) keeps E[out] = x
    return x * scaled_mask, DropoutCache(scaled_mask, x.shape, x.dtype)


def dropout_backward(dout: npt.NDArray[np.floating], cache: DropoutCache) -> npt.NDArray[np.floating]:
    """dx = dout * m / (1 - p): the same mask and scale as the forward (identity when it was off).

    See docs/derivations/dropout.md (term 1).
    """
    upstream("dout", dout, cache.shape, cache.dtype)
    return _dropout_backward(dout, cache)


def _dropout_backward(dout: npt.NDArray[np.floating], cache: DropoutCache) -> npt.NDArray[np.floating]:
    """dropout_backward without the argument checks."""
    if cache.scaled_mask is None:
        return dout.copy()
    return dout * cache.scaled_mask  # (1)
