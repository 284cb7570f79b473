"""The transformer's MLP: out = c_proj(gelu(c_fc(x))), hidden width 4C in GPT-2.

Forward  x (..., C), w_fc (C, 4C), b_fc (4C,), w_proj (4C, C), b_proj (C,) -> out (..., C).
Backward dout (..., C) -> dx, dw_fc, db_fc, dw_proj, db_proj.
Derivation: docs/derivations/mlp.md
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, param, upstream
from .gelu import GeluCache, _gelu_backward, _gelu_forward
from .linear import LinearCache, _linear_backward, _linear_forward

Array = npt.NDArray[np.floating]


class MLPCache(NamedTuple):
    fc: LinearCache  # keeps x for dw_fc
    gelu: GeluCache  # keeps the pre-activation h for the GELU derivative
    proj: LinearCache  # keeps gelu(h) for dw_proj


def mlp_forward(x: Array, w_fc: Array, b_fc: Array, w_proj: Array, b_proj: Array,
                approximate: Literal["tanh", "erf"] = "tanh") -> tuple[Array, MLPCache]:
    """out = gelu(x @ w_fc + b_fc) @ w_proj + b_proj.  x (..., C) -> h (..., 4C) -> out (..., C).

    See docs/derivations/mlp.md.
    """
    float_array("x", x, min_ndim=1)
    C = x.shape[-1]
    float_array("w_fc", w_fc, ndim=2)
    hidden = w_fc.shape[1]
    for name, a, shape in (("w_fc", w_fc, (C, hidden)), ("b_fc", b_fc, (hidden,)),
                           ("w_proj", w_proj, (hidden, C)), ("b_proj", b_proj, (C,))):
        param(name, a, shape, x.dtype)
    if approximate not in ("tanh", "erf"):
        raise ValueError(f"approximate: expected 'tanh' or 'erf', got {approximate!r}")
    return _mlp_forward(x, w_fc, b_fc, w_proj, b_proj, approximate)


def _mlp_forward(x: Array, w_fc: Array, b_fc: Array, w_proj: Array, b_proj: Array,
                 approximate: Literal["tanh", "erf"] = "tanh") -> tuple[Array, MLPCache]:
    """mlp_forward without the argument checks."""
    h, fc_cache = _linear_forward(x, w_fc, b_fc)  # (..., 4C)
    a, gelu_cache = _gelu_forward(h, approximate)  # (..., 4C)
    out, proj_cache = _linear_forward(a, w_proj, b_proj)  # (..., C)
    return out, MLPCache(fc_cache, gelu_cache, proj_cache)


def mlp_backward(dout: Array, cache: MLPCache) -> tuple[Array, Array, Array, Array, Array]:
    """Chain the three backward passes in reverse: c_proj, GELU, c_fc.

    Returns dx, dw_fc, db_fc, dw_proj, db_proj.  See docs/derivations/mlp.md.
    """
    x_shape, w_proj = cache.fc.x_shape, cache.proj.w
    upstream("dout", dout, (*x_shape[:-1], w_proj.shape[1]), w_proj.dtype)
    return _mlp_backward(dout, cache)


def _mlp_backward(dout: Array, cache: MLPCache) -> tuple[Array, Array, Array, Array, Array]:
    """mlp_backward without the argument checks."""
    da, dw_proj, db_proj = _linear_backward(dout, cache.proj)  # (1) (..., 4C)
    dh = _gelu_backward(da, cache.gelu)  # (2) (..., 4C)
    dx, dw_fc, db_fc = _linear_backward(dh, cache.fc)  # (3) (..., C)
    return dx, dw_fc, db_fc, dw_proj, db_proj
