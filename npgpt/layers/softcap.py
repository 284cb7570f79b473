"""Tanh softcap: out = c tanh(x / c), which squashes x smoothly into (-c, c) and is ~x for |x| << c.

Gemma 2 and 3 cap their final logits this way (the attention scores' cap is sdpa.py's softcap option).
Forward x (...), c > 0 -> out (...); backward dout (...) -> dx = dout (1 - tanh^2(x / c)).
Derivation: docs/derivations/softcap.md
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, real_number, upstream

Array = npt.NDArray[np.floating]


class SoftcapCache(NamedTuple):
    t: Array  # (...) tanh(x / c): the derivative needs only this


def softcap_forward(x: Array, cap: float) -> tuple[Array, SoftcapCache]:
    """out = c tanh(x / c), elementwise.  x (...) -> out (...).  See docs/derivations/softcap.md."""
    float_array("x", x)
    c = real_number("cap", cap)
    if not c > 0.0 or not math.isfinite(c):
        raise ValueError(f"cap: expected a finite number > 0, got {cap!r}")
    return _softcap_forward(x, c)


def _softcap_forward(x: Array, cap: float) -> tuple[Array, SoftcapCache]:
    """Unchecked kernel of softcap_forward (cap a Python float: float32 stays float32)."""
    t = np.tanh(x / cap)  # (1) (...) x / c, then tanh, as HF's Gemma 2 does
    return t * cap, SoftcapCache(t)  # (2) (...)


def softcap_backward(dout: Array, cache: SoftcapCache) -> Array:
    """dx = dout (1 - t^2), t = tanh(x / c): the c of (2) cancels the 1 / c inside (1).

    See docs/derivations/softcap.md (term 3).
    """
    upstream("dout", dout, cache.t.shape, cache.t.dtype)
    return _softcap_backward(dout, cache)


def _softcap_backward(dout: Array, cache: SoftcapCache) -> Array:
    """Unchecked kernel of softcap_backward."""
    t = cache.t
    dx = t * t  # (...) t^2
    np.subtract(1.0, dx, out=dx)  # 1 - t^2
    dx *= dout  # (3) (...)
    return dx
