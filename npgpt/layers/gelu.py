"""GELU: out = x * Phi(x), with GPT-2's tanh approximation by default or the exact erf form.

tanh: out = 0.5 * x * (1 + tanh(u)), u = sqrt(2/pi) * (x + 0.044715 x^3).   erf: out = 0.5 * x * (1 + erf(x/sqrt(2))).
Forward x (...) -> out (...); backward dout (...) -> dx (...).
Derivation: docs/derivations/gelu.md
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from scipy.special import erf

from .._checks import float_array, upstream

GELU_COEF = 0.044715
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)  # Python floats keep float32 arrays float32
INV_SQRT_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class GeluCache(NamedTuple):
    x: npt.NDArray[np.floating]  # (...) the input: both derivatives need it
    t: npt.NDArray[np.floating]  # (...) tanh(u) ("tanh") or Phi(x) ("erf"): the backward's dearest term
    approximate: str  # which derivative backward uses


def _squash(x: npt.NDArray[np.floating], approximate: str) -> npt.NDArray[np.floating]:
    """t = tanh(u), u = sqrt(2/pi) (x + 0.044715 x^3), for "tanh"; t = Phi(x) for "erf".  (...) -> (...)."""
    if approximate == "tanh":
        t = x * x  # (...) x^2
        t *= SQRT_2_OVER_PI * GELU_COEF
        t += SQRT_2_OVER_PI
        t *= x  # u = x (sqrt(2/pi) + sqrt(2/pi) 0.044715 x^2), built in one buffer, one pass per op
        np.tanh(t, out=t)  # (...) tanh(u), in place
        return t
    t = erf(x * INV_SQRT_2)  # (...)
    t += 1.0
    t *= 0.5  # Phi(x)
    return t


def gelu_forward(
    x: npt.NDArray[np.floating], approximate: Literal["tanh", "erf"] = "tanh"
) -> tuple[npt.NDArray[np.floating], GeluCache]:
    """out = 0.5 x (1 + tanh(sqrt(2/pi)(x + 0.044715 x^3)))  [approximate="tanh", GPT-2]
    or out = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2))  [approximate="erf"].  x (...) -> out (...).

    See docs/derivations/gelu.md.
    """
    float_array("x", x, min_ndim=1)
    if approximate not in ("tanh", "erf"):
        raise ValueError(f"approximate: expected 'tanh' or 'erf', got {approximate!r}")
    return _gelu_forward(x, approximate)


def _gelu_forward(
    x: npt.NDArray[np.floating], approximate: Literal["tanh", "erf"] = "tanh"
) -> tuple[npt.NDArray[np.floating], GeluCache]:
    """gelu_forward without the argument checks."""
    t = _squash(x, approximate)  # (...) tanh(u) or Phi(x), kept for the backward
    return gelu_from_squash(x, t, approximate), GeluCache(x, t, approximate)


def gelu_from_squash(x: npt.NDArray[np.floating], t: npt.NDArray[np.floating],
                     approximate: str) -> npt.NDArray[np.floating]:
    """out = 0.5 x (1 + t) ("tanh") or x t ("erf") from the cached t, in a new array.  (...) -> (...).

    The MLP calls it in its backward to rebuild GELU(h) for dw_proj (the same bits as the forward's)."""
    if approximate == "tanh":
        out = t + 1.0  # (...)
        out *= x
        out *= 0.5  # out = 0.5 x (1 + tanh(u))
        return out
    return t * x  # (...) out = x Phi(x)


def gelu_backward(dout: npt.NDArray[np.floating], cache: GeluCache) -> npt.NDArray[np.floating]:
    """tanh: dx = dout * (0.5 (1 + t) + 0.5 x (1 - t^2) sqrt(2/pi) (1 + 3 * 0.044715 x^2)), t = tanh(u).
    erf:  dx = dout * (Phi(x) + x phi(x)).

    See docs/derivations/gelu.md (terms 1-2 for each form).
    """
    upstream("dout", dout, cache.x.shape, cache.x.dtype)
    return _gelu_backward(dout, cache)


def _gelu_backward(dout: npt.NDArray[np.floating], cache: GeluCache) -> npt.NDArray[np.floating]:
    """gelu_backward without the argument checks."""
    x, t, approximate = cache  # t: tanh(u) or Phi(x) from the forward
    if approximate == "tanh":
        # (1) + (2) = 0.5 (1 + t) (1 + x (1 - t) u'(x)), since 1 - t^2 = (1 - t)(1 + t); the 0.5 goes inside
        dx = x * x  # (...) x^2
        dx *= 1.5 * SQRT_2_OVER_PI * GELU_COEF
        dx += 0.5 * SQRT_2_OVER_PI  # u'(x) / 2 = sqrt(2/pi) (1 + 3 * 0.044715 x^2) / 2
        dx *= x
        s = 1.0 - t  # (...) scratch; the cached t itself is never written
        dx *= s  # x (1 - t) u'(x) / 2
        dx += 0.5
        np.add(t, 1.0, out=s)  # 1 + t
        dx *= s  # (1) + (2)
    else:
        # (1) Phi(x)  +  (2) x phi(x), phi the standard normal density
        dx = np.exp(-0.5 * x * x)  # (...)
        dx *= INV_SQRT_2PI
        dx *= x
        dx += t
    dx *= dout
    return dx
