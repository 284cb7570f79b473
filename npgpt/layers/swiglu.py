"""Gated linear unit over the two projections' outputs: out = act(gate) * up (SwiGLU with silu, GeGLU with GELU).

Llama, Mistral, Qwen: act = silu(x) = x * sigmoid(x).  Gemma: GELU, tanh approximation.  Shazeer (2020).
Forward gate (...), up (...) -> out (...); backward dout (...) -> dgate, dup (...).
Derivation: docs/derivations/swiglu.md
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, same_dtype, shape_is, upstream
from .gelu import GeluCache, _gelu_backward, _squash

Array = npt.NDArray[np.floating]
Activation = Literal["silu", "gelu_tanh", "gelu"]
ACTIVATIONS = ("silu", "gelu_tanh", "gelu")


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


def _act(gate: Array, activation: str, up: Array | None = None,
         dout: Array | None = None) -> tuple[Array, Array | None]:
    """act(gate) and, given up and dout, dgate = dout * up * act'(gate), elementwise.  (...) -> (...), (...) or None.

    The two GELUs are gelu.py's own: act = gate p, with p its cached sigmoid(2u) or Phi, and its backward."""
    if activation == "silu":
        s = _sigmoid(gate)  # (...) sigmoid(x)
        a = gate * s  # (...) silu
        if up is None or dout is None:
            return a, None
        da = s * (1.0 + gate * (1.0 - s))  # (...) silu' = s + x s (1 - s)
        da *= up
        da *= dout  # (...) dgate, in da's buffer
        return a, da
    approximate = "tanh" if activation == "gelu_tanh" else "erf"
    p = _squash(gate, approximate)  # (...) sigmoid(2u) (gelu_tanh) or Phi(gate) (gelu)
    a = gate * p  # (...)
    if up is None or dout is None:
        return a, None
    return a, _gelu_backward(dout * up, GeluCache(gate, p, approximate))  # dout * up: the GELU's upstream


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
    a, _ = _act(gate, activation)  # (...) the derivative waits for the backward
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
    a, dgate = _act(gate, activation, up, dout)  # (1) (...) act recomputed rather than cached: one (..., F)
    # array less per layer
    assert dgate is not None
    return dgate, dout * a  # (1), (2) (...)
