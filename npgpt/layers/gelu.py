"""GELU: out = x * Phi(x), with GPT-2's tanh approximation by default or the exact erf form.

tanh: out = 0.5 * x * (1 + tanh(u)) = x * sigmoid(2u), u = sqrt(2/pi) * (x + 0.044715 x^3).
erf: out = 0.5 * x * (1 + erf(x/sqrt(2))).   Forward x (...) -> out (...); backward dout (...) -> dx (...).
Derivation: docs/derivations/gelu.md
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, upstream

GELU_COEF = 0.044715
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)  # Python floats keep float32 arrays float32
INV_SQRT_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class GeluCache(NamedTuple):
    x: npt.NDArray[np.floating]  # (...) the input: both derivatives need it
    p: npt.NDArray[np.floating]  # (...) Phi(x) ("erf") or its approximation sigmoid(2u) ("tanh"), out = x p
    approximate: str  # which derivative backward uses


def _squash(x: npt.NDArray[np.floating], approximate: str) -> npt.NDArray[np.floating]:
    """p = sigmoid(2u) = (1 + tanh(u)) / 2, u = sqrt(2/pi) (x + 0.044715 x^3), for "tanh"; p = Phi(x) for "erf".

    (...) -> (...).  The tanh form goes through exp: twice as fast as np.tanh on the AVX2 host it was timed on,
    though on an AVX-512 Zen 4 a tanh-based squash was faster (0.55 against 0.76 ms on (512, 1536) float32)."""
    if approximate == "tanh":
        p = x * x  # (...) x^2
        p *= -2.0 * SQRT_2_OVER_PI * GELU_COEF
        p -= 2.0 * SQRT_2_OVER_PI
        p *= x  # -2u = x (-2 sqrt(2/pi) - 2 sqrt(2/pi) 0.044715 x^2), built in one buffer, one pass per op
        with np.errstate(over="ignore", under="ignore"):  # exp(-2u) = inf for x << 0 gives p = 0: intended
            np.exp(p, out=p)  # (...) exp(-2u), in place
        p += 1.0
        np.reciprocal(p, out=p)  # (...) 1 / (1 + exp(-2u)) = sigmoid(2u)
        return p
    from scipy.special import erf  # here, not at the top: importing scipy.special takes ~0.4 s, and only
    # the erf form needs it (every CLI command and test subprocess starts that much sooner)
    p = erf(x * INV_SQRT_2)  # (...)
    p += 1.0
    p *= 0.5  # Phi(x)
    return p


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
    p = _squash(x, approximate)  # (...) sigmoid(2u) or Phi(x), kept for the backward
    return gelu_from_squash(x, p), GeluCache(x, p, approximate)


def gelu_from_squash(x: npt.NDArray[np.floating], p: npt.NDArray[np.floating]) -> npt.NDArray[np.floating]:
    """out = x p from the cached p, in a new array (either form).  (...) -> (...).

    The MLP calls it in its backward to rebuild GELU(h) for dw_proj (the same bits as the forward's)."""
    return x * p  # (...)


def gelu_backward(dout: npt.NDArray[np.floating], cache: GeluCache) -> npt.NDArray[np.floating]:
    """dx = dout * (p + x p'(x)).
    tanh: p = sigmoid(2u), p' = 2 p (1 - p) u'(x), u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2).
    erf: p = Phi(x), p' = phi(x), the standard normal density.

    See docs/derivations/gelu.md (terms 1-2 for each form).
    """
    upstream("dout", dout, cache.x.shape, cache.x.dtype)
    return _gelu_backward(dout, cache)


def _gelu_backward(dout: npt.NDArray[np.floating], cache: GeluCache) -> npt.NDArray[np.floating]:
    """gelu_backward without the argument checks."""
    x, p, approximate = cache  # p: sigmoid(2u) or Phi(x) from the forward
    if approximate == "tanh":
        # (1) + (2) = p + 2 x p (1 - p) u'(x) = p (1 + 2 x (1 - p) u'(x))
        dx = x * x  # (...) x^2
        dx *= 6.0 * SQRT_2_OVER_PI * GELU_COEF
        dx += 2.0 * SQRT_2_OVER_PI  # 2 u'(x) = 2 sqrt(2/pi) (1 + 3 * 0.044715 x^2)
        dx *= x
        s = 1.0 - p  # (...) scratch; the cached p itself is never written
        dx *= s  # 2 x (1 - p) u'(x)
        dx += 1.0
        dx *= p  # (1) + (2)
    else:
        # (1) Phi(x)  +  (2) x phi(x), phi the standard normal density
        dx = np.exp(-0.5 * x * x)  # (...)
        dx *= INV_SQRT_2PI
        dx *= x
        dx += p
    dx *= dout
    return dx
