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
from .gelu import GeluCache, _gelu_backward, _gelu_forward, gelu_from_squash
from .linear import LinearCache, _linear_backward, _linear_forward

Array = npt.NDArray[np.floating]


class MLPCache(NamedTuple):
    fc: LinearCache  # keeps x for dw_fc
    gelu: GeluCache  # keeps the pre-activation h and p = sigmoid(2u) for the GELU derivative
    w_proj: Array  # (4C, C); gelu(h) for dw_proj is rebuilt from the gelu cache, not kept


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
    a, gelu_cache = _gelu_forward(h, approximate)  # (..., 4C) freed after c_proj: the cache holds h and p
    out, _ = _linear_forward(a, w_proj, b_proj)  # (..., C)
    return out, MLPCache(fc_cache, gelu_cache, w_proj)


def mlp_backward(dout: Array, cache: MLPCache) -> tuple[Array, Array, Array, Array, Array]:
    """Chain the three backward passes in reverse: c_proj, GELU, c_fc.

    Returns dx, dw_fc, db_fc, dw_proj, db_proj.  See docs/derivations/mlp.md.
    """
    x_shape, w_proj = cache.fc.x_shape, cache.w_proj
    upstream("dout", dout, (*x_shape[:-1], w_proj.shape[1]), w_proj.dtype)
    return _mlp_backward(dout, cache)


def _mlp_backward(dout: Array, cache: MLPCache, dw_fc_out: Array | None = None,
                  dw_proj_out: Array | None = None) -> tuple[Array, Array, Array, Array, Array]:
    """mlp_backward without the argument checks; dw_fc_out, dw_proj_out as _linear_backward's dw_out."""
    h, p, _ = cache.gelu
    a = gelu_from_squash(h, p)  # (..., 4C) GELU(h) = h p again: one cheap pass
    proj = LinearCache(a.reshape(-1, a.shape[-1]), cache.w_proj, a.shape)
    da, dw_proj, db_proj = _linear_backward(dout, proj, dw_proj_out)  # (1) (..., 4C)
    dh = _gelu_backward(da, cache.gelu)  # (2) (..., 4C)
    dx, dw_fc, db_fc = _linear_backward(dh, cache.fc, dw_fc_out)  # (3) (..., C)
    return dx, dw_fc, db_fc, dw_proj, db_proj
