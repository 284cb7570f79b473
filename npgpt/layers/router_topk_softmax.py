"""Router: the K largest logits, then a softmax over those K alone (gpt-oss).

Forward logits (N, E) -> weights (N, K), indices (N, K); backward dweights (N, K) -> dlogits (N, E), zero outside
the chosen experts.  Ties: the lower expert index wins.
Derivation: docs/derivations/router_topk_softmax.md
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import upstream
from .topk import check_router_logits, topk_indices

Array = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.intp]


class RouterTopKSoftmaxCache(NamedTuple):
    weights: Array  # (N, K) softmax over the chosen logits
    indices: IntArray  # (N, K) chosen experts, largest logit first
    n_experts: int  # E


def router_topk_softmax_forward(logits: Array, top_k: int) -> tuple[Array, IntArray, RouterTopKSoftmaxCache]:
    """indices = top-K of logits; weights = softmax(logits[indices]).  logits (N, E) -> (N, K), (N, K).

    See docs/derivations/router_topk_softmax.md.
    """
    check_router_logits(logits, top_k)
    return _router_topk_softmax_forward(logits, int(top_k))


def _router_topk_softmax_forward(logits: Array, top_k: int) -> tuple[Array, IntArray, RouterTopKSoftmaxCache]:
    """Unchecked kernel of router_topk_softmax_forward."""
    idx = topk_indices(logits, top_k)  # (1) (N, K) ties: lower index first
    zs = np.take_along_axis(logits, idx, axis=-1)  # (2) (N, K) the chosen logits, largest first
    w = np.exp(zs - zs[:, :1])  # (3) (N, K) the first column is each row's maximum
    w /= w.sum(axis=-1, keepdims=True)
    return w, idx, RouterTopKSoftmaxCache(w, idx, logits.shape[1])


def router_topk_softmax_backward(dweights: Array, cache: RouterTopKSoftmaxCache) -> Array:
    """dlogits[chosen] = w * (dw - sum(w dw)), 0 elsewhere; the choice is held fixed.  (N, K) -> (N, E).

    See docs/derivations/router_topk_softmax.md (term 4).
    """
    upstream("dweights", dweights, cache.weights.shape, cache.weights.dtype)
    return _router_topk_softmax_backward(dweights, cache)


def _router_topk_softmax_backward(dweights: Array, cache: RouterTopKSoftmaxCache) -> Array:
    """Unchecked kernel of router_topk_softmax_backward."""
    w, idx, E = cache
    dsel = w * (dweights - (dweights * w).sum(axis=-1, keepdims=True))  # (4) (N, K) softmax backward
    dlogits = np.zeros((w.shape[0], E), dtype=w.dtype)  # (N, E)
    np.put_along_axis(dlogits, idx, dsel, axis=-1)
    return dlogits
