"""The router z-loss of ST-MoE (Zoph et al., 2022): the mean over rows of logsumexp(router logits)^2.

It keeps the logits small, so the router's softmax stays well conditioned.  The model adds coef * z to its loss:
backward with dloss = coef.  Forward logits (..., E) -> loss (); backward dloss -> dlogits (..., E).
Derivation: docs/derivations/router_z_loss.md
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, real_number

Array = npt.NDArray[np.floating]


class RouterZLossCache(NamedTuple):
    probs: Array  # (M, E) softmax of the logits, rows folded
    lse: Array  # (M, 1) logsumexp of each row
    shape: tuple[int, ...]  # the logits' shape


def router_z_loss_forward(router_logits: Array) -> tuple[Array, RouterZLossCache]:
    """z = mean_rows (log sum_e exp(logits_e))^2.  (..., E) -> ().  See docs/derivations/router_z_loss.md."""
    float_array("router_logits", router_logits, min_ndim=1)
    if router_logits.size == 0:
        raise ValueError(f"router_logits: expected at least one row and one expert, got shape {router_logits.shape}")
    if not np.isfinite(router_logits).all():
        raise ValueError("router_logits: expected finite values (NaN or inf found)")
    return _router_z_loss_forward(router_logits)


def _router_z_loss_forward(z: Array) -> tuple[Array, RouterZLossCache]:
    """Unchecked kernel of router_z_loss_forward."""
    z2 = z.reshape(-1, z.shape[-1])  # (M, E)
    m = z2.max(axis=-1, keepdims=True)  # (M, 1)
    e = np.exp(z2 - m)  # (M, E)
    s = e.sum(axis=-1, keepdims=True)  # (M, 1)
    lse = m + np.log(s)  # (1) (M, 1)
    loss = float(np.mean(lse * lse))  # (2)
    return np.asarray(loss, dtype=z.dtype), RouterZLossCache(e / s, lse, z.shape)


def router_z_loss_backward(dloss: Any, cache: RouterZLossCache) -> Array:
    """dlogits = dloss * 2 lse softmax(logits) / M.  -> (..., E).  See docs/derivations/router_z_loss.md (3)."""
    return _router_z_loss_backward(real_number("dloss", dloss), cache)


def _router_z_loss_backward(dloss: float, cache: RouterZLossCache) -> Array:
    """Unchecked kernel of router_z_loss_backward."""
    p, lse, shape = cache
    dz = p * (lse * (2.0 * dloss / p.shape[0]))  # (3) (M, E) d lse / d z = softmax
    return dz.reshape(shape)
