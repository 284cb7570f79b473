"""Llama's MLP: out = down_proj(act(gate_proj(x)) * up_proj(x)), three bias-free projections.

Weights in nn.Linear's (C_out, C_in) layout, as HF stores them: w_gate, w_up (F, C), w_down (C, F).
Forward x (..., C) -> out (..., C); backward dout -> dx, dw_gate, dw_up, dw_down.
Derivation: docs/derivations/gated_mlp.md
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, param, upstream
from .swiglu import ACTIVATIONS, Activation, SwiGLUCache, _swiglu_backward, _swiglu_forward

Array = npt.NDArray[np.floating]


class GatedMLPCache(NamedTuple):
    x2: Array  # (N, C) input, leading axes folded: for dw_gate, dw_up
    a: Array  # (N, F) act(gate) * up: for dw_down
    glu: SwiGLUCache  # gate and up pre-activations
    w_gate: Array  # (F, C)
    w_up: Array  # (F, C)
    w_down: Array  # (C, F)
    x_shape: tuple[int, ...]


def gated_mlp_forward(x: Array, w_gate: Array, w_up: Array, w_down: Array,
                      activation: Activation = "silu") -> tuple[Array, GatedMLPCache]:
    """out = (act(x w_gate^T) * (x w_up^T)) w_down^T.  x (..., C) -> gate, up (..., F) -> out (..., C).

    See docs/derivations/gated_mlp.md.
    """
    float_array("x", x, min_ndim=1)
    C = x.shape[-1]
    float_array("w_gate", w_gate, ndim=2)
    F = w_gate.shape[0]
    for name, w, shape in (("w_gate", w_gate, (F, C)), ("w_up", w_up, (F, C)), ("w_down", w_down, (C, F))):
        param(name, w, shape, x.dtype)
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {', '.join(ACTIVATIONS)}, got {activation!r}")
    return _gated_mlp_forward(x, w_gate, w_up, w_down, activation)


def _gated_mlp_forward(x: Array, w_gate: Array, w_up: Array, w_down: Array,
                       activation: str) -> tuple[Array, GatedMLPCache]:
    """Unchecked kernel of gated_mlp_forward."""
    C = x.shape[-1]
    x2 = x.reshape(-1, C)  # (N, C)
    gate = x2 @ w_gate.T  # (N, F) gate_proj
    up = x2 @ w_up.T  # (N, F) up_proj
    a, glu_cache = _swiglu_forward(gate, up, activation)  # (N, F)
    out = a @ w_down.T  # (N, C) down_proj
    return out.reshape(x.shape), GatedMLPCache(x2, a, glu_cache, w_gate, w_up, w_down, x.shape)


def gated_mlp_backward(dout: Array, cache: GatedMLPCache) -> tuple[Array, Array, Array, Array]:
    """Reverse of the forward: down_proj, the gated unit, then both input projections into one dx.

    Returns dx, dw_gate, dw_up, dw_down.  See docs/derivations/gated_mlp.md (terms 1-5).
    """
    upstream("dout", dout, cache.x_shape, cache.x2.dtype)
    return _gated_mlp_backward(dout, cache)


def _gated_mlp_backward(dout: Array, cache: GatedMLPCache) -> tuple[Array, Array, Array, Array]:
    """Unchecked kernel of gated_mlp_backward."""
    x2, a, glu_cache, w_gate, w_up, w_down, x_shape = cache
    dout2 = dout.reshape(-1, w_down.shape[0])  # (N, C)
    dw_down = dout2.T @ a  # (1) (C, F)
    da = dout2 @ w_down  # (2) (N, F)
    dgate, dup = _swiglu_backward(da, glu_cache)  # (3) (N, F) each
    dw_gate = dgate.T @ x2  # (4) (F, C)
    dw_up = dup.T @ x2  # (4) (F, C)
    dx = dgate @ w_gate  # (5) (N, C) the two projections read the same x: their gradients add
    dx += dup @ w_up
    return dx.reshape(x_shape), dw_gate, dw_up, dw_down
