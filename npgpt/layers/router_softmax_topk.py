"""Router: softmax over the E experts, keep the K largest probabilities, optionally renormalise them to sum 1.

Mixtral (always renormalised), Qwen2-MoE and Qwen3-MoE (`norm_topk_prob`).  The gate projection that makes the
logits is a plain linear the MoE layer does.  Forward logits (N, E) -> weights (N, K), indices (N, K);
backward dweights (N, K) -> dlogits (N, E).  Ties: the lower expert index wins.
Derivation: docs/derivations/router_softmax_topk.md
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import upstream
from .topk import check_router_logits, topk_indices

Array = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.intp]


class RouterSoftmaxTopKCache(NamedTuple):
    probs: Array  # (N, E) softmax of all logits: the backward of the unnormalised case needs every entry
    weights: Array  # (N, K) the returned weights
    indices: IntArray  # (N, K) chosen experts, largest probability first
    norm_topk_prob: bool


def _softmax_rows(z: Array) -> Array:
    """exp(z - max) / sum, row by row.  (N, E) -> (N, E)."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))  # (N, E)
    e /= e.sum(axis=-1, keepdims=True)
    return e


def router_softmax_topk_forward(logits: Array, top_k: int, norm_topk_prob: bool = True
                                ) -> tuple[Array, IntArray, RouterSoftmaxTopKCache]:
    """p = softmax(logits); indices = top-K of p; weights = p[indices] (/ their sum if norm_topk_prob).

    logits (N, E) -> weights (N, K), indices (N, K).  See docs/derivations/router_softmax_topk.md.
    """
    check_router_logits(logits, top_k)
    if not isinstance(norm_topk_prob, (bool, np.bool_)):
        raise ValueError(f"norm_topk_prob: expected a bool, got {norm_topk_prob!r}")
    return _router_softmax_topk_forward(logits, int(top_k), bool(norm_topk_prob))


def _router_softmax_topk_forward(logits: Array, top_k: int, norm_topk_prob: bool
                                 ) -> tuple[Array, IntArray, RouterSoftmaxTopKCache]:
    """Unchecked kernel of router_softmax_topk_forward."""
    p = _softmax_rows(logits)  # (1) (N, E)
    idx = topk_indices(p, top_k)  # (2) (N, K) ties: lower index first
    w = np.take_along_axis(p, idx, axis=-1)  # (3) (N, K)
    if norm_topk_prob:
        w /= w.sum(axis=-1, keepdims=True)  # (4) (N, K) as HF: divide the chosen probabilities by their sum
    return w, idx, RouterSoftmaxTopKCache(p, w, idx, norm_topk_prob)


def router_softmax_topk_backward(dweights: Array, cache: RouterSoftmaxTopKCache) -> Array:
    """dlogits from dweights; the choice (indices) is held fixed, as it is almost everywhere.

    dweights (N, K) -> dlogits (N, E).  See docs/derivations/router_softmax_topk.md (terms 5-7).
    """
    upstream("dweights", dweights, cache.weights.shape, cache.weights.dtype)
    return _router_softmax_topk_backward(dweights, cache)


def _router_softmax_topk_backward(dweights: Array, cache: RouterSoftmaxTopKCache) -> Array:
    """Unchecked kernel of router_softmax_topk_backward."""
    p, w, idx, norm = cache
    dlogits = np.zeros_like(p)  # (N, E)
    if norm:
        # w = softmax of the chosen logits alone: the unchosen logits get exactly zero
        dsel = w * (dweights - (dweights * w).sum(axis=-1, keepdims=True))  # (5) (N, K)
        np.put_along_axis(dlogits, idx, dsel, axis=-1)
        return dlogits
    np.put_along_axis(dlogits, idx, dweights, axis=-1)  # (6) dp (N, E): dweights at the chosen entries, 0 elsewhere
    dlogits -= (dweights * w).sum(axis=-1, keepdims=True)  # (7) dp - sum_j p_j dp_j, then times p
    dlogits *= p  # (N, E)
    return dlogits
