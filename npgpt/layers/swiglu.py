"""Gated linear unit over the two projections' outputs: out = act(gate) * up (SwiGLU with silu, GeGLU with GELU).

Llama, Mistral, Qwen: act = silu(x) = x * sigmoid(x).  Gemma: GELU, tanh approximation.  Shazeer (2020).
Forward gate (...), up (...) -> out (...); backward dout (...) -> dgate, dup (...).
Derivation: docs/derivations/swiglu.md
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from scipy.special import erf

from .._checks import float_array, same_dtype, shape_is, upstream

Array = npt.NDArray[np.floating]
Activation = Literal["silu", "gelu_tanh", "gelu"]
ACTIVATIONS = ("silu", "gelu_tanh", "gelu")

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)  # Python floats keep float32 arrays float32
GELU_COEF = 0.044715
INV_SQRT_2 = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


class SwiGLUCache(NamedTuple):
    gate: Array  # (...) the gate pre-activation: act and act' are recomputed from it
    up: Array  # (...) needed for dgate
    activation: str


def _sigmoid(z: Array) -> Array:
    """1 / (1 + exp(-z)) in a new array.  (...) -> (...).  Through np.exp: twice as fast as scipy's expit here."""
    s = np.negative(z)  # (...)
    with np.errstate(over="ignore", under="ignore"):  # exp(-z) = inf for z << 0 gives s = 0: intended
        np.exp(s, out=s)
    s += 1.0
    np.reciprocal(s, out=s)
    return s


def _act(gate: Array, activation: str, grad: bool) -> tuple[Array, Array | None]:
    """act(gate) and, if grad, act'(gate), elementwise.  (...) -> (...), (...) or None."""
    if activation == "silu":
        s = _sigmoid(gate)  # (...) sigmoid(x)
        a = gate * s  # (...) silu
        da = s * (1.0 + gate * (1.0 - s)) if grad else None  # (...) silu' = s + x s (1 - s)
    elif activation == "gelu_tanh":
        # 0.5 (1 + tanh(u)) = sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3), as in gelu.py
        p = _sigmoid(2.0 * SQRT_2_OVER_PI * (gate + GELU_COEF * gate * gate * gate))  # (...)
        a = gate * p  # (...)
        # act' = p + x p', p' = 2 p (1 - p) u'(x), u' = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
        da = p * (1.0 + 2.0 * SQRT_2_OVER_PI * gate * (1.0 - p) * (1.0 + 3.0 * GELU_COEF * gate * gate)) \
            if grad else None
    else:
        phi_cdf = 0.5 * (1.0 + erf(gate * INV_SQRT_2))  # (...) Phi(x)
        a = gate * phi_cdf  # (...)
        da = phi_cdf + gate * INV_SQRT_2PI * np.exp(-0.5 * gate * gate) if grad else None  # Phi(x) + x phi(x)
    return a, da


def swiglu_forward(gate: Array, up: Array, activation: Activation = "silu") -> tuple[Array, SwiGLUCache]:
    """out = act(gate) * up, elementwise; act is silu (SwiGLU), gelu_tanh or gelu (GeGLU).  (...) each.

    See docs/derivations/swiglu.md.
    """
    float_array("gate", gate, min_ndim=1)
    float_array("up", up)
    same_dtype("gate", gate, up=up)
    shape_is("up", up, gate.shape)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    return _swiglu_forward(gate, up, activation)


def _swiglu_forward(gate: Array, up: Array, activation: str) -> tuple[Array, SwiGLUCache]:
    """Unchecked kernel of swiglu_forward."""
    a, _ = _act(gate, activation, grad=False)  # (...) the derivative waits for the backward
    return a * up, SwiGLUCache(gate, up, activation)  # (...)


def swiglu_backward(dout: Array, cache: SwiGLUCache) -> tuple[Array, Array]:
    """dgate = dout * up * act'(gate);  dup = dout * act(gate).  (...) each.

    See docs/derivations/swiglu.md (terms 1-2).
    """
    upstream("dout", dout, cache.gate.shape, cache.gate.dtype)
    return _swiglu_backward(dout, cache)


def _swiglu_backward(dout: Array, cache: SwiGLUCache) -> tuple[Array, Array]:
    """Unchecked kernel of swiglu_backward."""
    gate, up, activation = cache
    a, da = _act(gate, activation, grad=True)  # (...) recomputed rather than cached: one (..., F) array less per layer
    assert da is not None
    dup = dout * a  # (2) (...)
    da *= up
    da *= dout  # (1) (...) dgate, in da's buffer
    return da, dup
