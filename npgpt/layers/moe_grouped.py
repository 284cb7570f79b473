"""The MoE layer of moe.py, grouped for speed: every (token, choice) row sorted by expert once, one gather of
the inputs, one product per expert on a contiguous slice, and one gather back per choice.

Same arguments, results and gradient dict as moe_forward / moe_backward (tests/test_moe.py holds the two equal);
each token's K contributions are added in ascending expert order, as the clear loop adds them.
Forward x (..., C), params -> out (..., C), router_logits (N, E); backward dout -> dx, grads.
Derivation: docs/derivations/moe.md ("The grouped version")
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import upstream
from .moe import (
    MoESpec,
    Params,
    RouteCache,
    SharedCache,
    _expert_backward,
    _expert_forward,
    _grads_in_order,
    _route,
    _route_backward,
    _shared_backward,
    _shared_forward,
    _zero_expert_grads,
    check_moe,
)

Array = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.intp]


class MoEGroupedCache(NamedTuple):
    x2: Array  # (N, C) input rows
    x_shape: tuple[int, ...]
    params: Params
    spec: MoESpec
    route: RouteCache
    weights: Array  # (N, K)
    indices: IntArray  # (N, K) chosen experts (for load statistics and balance_bias_update)
    rows: IntArray  # (N*K,) the token of each sorted row
    ws: Array  # (N*K,) the routing weight of each sorted row
    pos: IntArray  # (N, K) where each token's choices sit among the sorted rows, ascending (= by expert)
    order: IntArray  # (N*K,) flat (token, choice) index of each sorted row
    bounds: IntArray  # (E + 1,) expert e owns sorted rows bounds[e]:bounds[e + 1]
    ys: Array  # (N*K, C) expert outputs before the routing weight, sorted rows
    caches: list[Any]  # per expert: its cache, or None when it got no row
    shared: SharedCache | None


def moe_grouped_forward(x: Array, params: Params, spec: MoESpec) -> tuple[Array, Array, MoEGroupedCache]:
    """moe_forward, grouped.  x (..., C) -> out (..., C), router_logits (N, E).  See docs/derivations/moe.md."""
    check_moe(x, params, spec)
    return _moe_grouped_forward(x, params, spec)


def _sum_choices(vals: Array, pos: IntArray) -> Array:
    """out[n] = vals[pos[n, 0]] + vals[pos[n, 1]] + ..., left to right.  vals (N*K, C), pos (N, K) -> (N, C)."""
    out = vals[pos[:, 0]]  # (N, C) a new array
    for k in range(1, pos.shape[1]):
        out += vals[pos[:, k]]
    return out


def _moe_grouped_forward(x: Array, params: Params, spec: MoESpec) -> tuple[Array, Array, MoEGroupedCache]:
    """Unchecked kernel of moe_grouped_forward."""
    C = x.shape[-1]
    E, K = spec.n_experts, spec.top_k
    x2 = x.reshape(-1, C)  # (N, C)
    N = x2.shape[0]
    z, weights, idx, rc = _route(x2, params, spec)  # (N, E), (N, K), (N, K)
    order = np.argsort(idx.reshape(-1), kind="stable")  # (N*K,) by expert, then by token as the clear loop
    bounds = np.searchsorted(idx.reshape(-1)[order], np.arange(E + 1))  # (E + 1,) each expert's slice
    rows = order // K  # (N*K,) token of each sorted row
    inv = np.empty_like(order)  # (N*K,) sorted position of each flat (token, choice)
    inv[order] = np.arange(N * K)
    pos = np.sort(inv.reshape(N, K), axis=1)  # (N, K) ascending position = ascending expert
    xs = x2[rows]  # (N*K, C) one gather: each expert's tokens are contiguous
    ys = np.empty_like(xs)  # (N*K, C)
    caches: list[Any] = []
    for e in range(E):
        a, b = bounds[e], bounds[e + 1]
        if a == b:
            caches.append(None)
            continue
        ys[a:b], ec = _expert_forward(xs[a:b], e, params, spec)  # (n_e, C) one product per expert
        caches.append(ec)
    ws = weights.reshape(-1)[order]  # (N*K,)
    out = _sum_choices(ys * ws[:, None], pos)  # (N, C) the K weighted outputs, in expert order
    sc = None
    if spec.shared != "none":
        ysh, sc = _shared_forward(x2, params, spec)  # (N, C)
        out += ysh
    return out.reshape(x.shape), z, MoEGroupedCache(x2, x.shape, params, spec, rc, weights, idx, rows, ws, pos,
                                                    order, bounds, ys, caches, sc)


def moe_grouped_backward(dout: Array, cache: MoEGroupedCache, drouter_logits: Array | None = None
                         ) -> tuple[Array, dict[str, Array]]:
    """moe_backward, grouped: dx and every trainable parameter's gradient.  See docs/derivations/moe.md."""
    upstream("dout", dout, cache.x_shape, cache.x2.dtype)
    if drouter_logits is not None:
        upstream("drouter_logits", drouter_logits, (cache.x2.shape[0], cache.spec.n_experts), cache.x2.dtype)
    return _moe_grouped_backward(dout, cache, drouter_logits)


def _moe_grouped_backward(dout: Array, cache: MoEGroupedCache, drouter_logits: Array | None
                          ) -> tuple[Array, dict[str, Array]]:
    """Unchecked kernel of moe_grouped_backward."""
    x2, x_shape, params, spec, rc, weights, _, rows, ws, pos, order, bounds, ys, caches, sc = cache
    dout2 = dout.reshape(x2.shape)  # (N, C)
    d = dout2[rows]  # (N*K, C) each sorted row's upstream gradient
    dweights = np.empty_like(weights)  # (N, K)
    dweights.reshape(-1)[order] = (d * ys).sum(axis=1)  # (N*K,) d w = dout . y
    d *= ws[:, None]  # (N*K, C) dy
    grads = _zero_expert_grads(params, spec, x2.dtype)
    dxs = np.empty_like(d)  # (N*K, C)
    for e, ec in enumerate(caches):
        if ec is None:
            continue
        a, b = bounds[e], bounds[e + 1]
        dxs[a:b] = _expert_backward(d[a:b], e, ec, params, spec, grads)  # (n_e, C)
    dx = _sum_choices(dxs, pos)  # (N, C) in expert order
    _route_backward(dweights, drouter_logits, x2, params, spec, rc, dx, grads)
    if sc is not None:
        _shared_backward(dout2, x2, params, spec, sc, dx, grads)
    return dx.reshape(x_shape), _grads_in_order(grads, spec, params)
