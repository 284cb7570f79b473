"""The load-balancing auxiliary loss of Switch Transformer, exactly as transformers' load_balancing_loss_func:

    aux = E * sum_e f_e P_e,  f_e = share of the top-K choices that went to expert e (times K),
                              P_e = mean router probability of expert e,
both over every layer's rows (and only unmasked tokens when an attention mask is given).  The model adds
router_aux_loss_coef * aux to its loss: backward with dloss = router_aux_loss_coef.
Forward logits (L, N, E) -> loss (); backward dloss -> dlogits (L, N, E); f_e is piecewise constant (no gradient).
Derivation: docs/derivations/load_balancing_loss.md
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, real_number
from .topk import check_router_logits, topk_indices

Array = npt.NDArray[np.floating]


class LoadBalancingCache(NamedTuple):
    probs: Array  # (L, N, E) softmax of each layer's logits
    f: Array  # (E,) tokens_per_expert: choices of e per counted row (sums to K)
    mask: Array | None  # (N,) the attention mask as weights, or None
    rows: float  # total counted rows: L * N, or L * sum(mask)


def load_balancing_loss_forward(router_logits: Array, top_k: int, attention_mask: Any = None
                                ) -> tuple[Array, LoadBalancingCache]:
    """aux = E sum_e f_e P_e over all layers' rows.  router_logits (L, N, E) (or (N, E): one layer),
    attention_mask (B, T) with B*T = N or None -> loss ().  See docs/derivations/load_balancing_loss.md."""
    float_array("router_logits", router_logits)
    if router_logits.ndim == 2:
        router_logits = router_logits[None]
    if router_logits.ndim != 3:
        raise ValueError(f"router_logits: expected (L, N, E) or (N, E), got shape {router_logits.shape}")
    L, N, E = router_logits.shape
    check_router_logits(router_logits.reshape(L * N, E), top_k, name="router_logits")
    mask = None
    if attention_mask is not None:
        if not isinstance(attention_mask, np.ndarray) or attention_mask.size != N:
            got = getattr(attention_mask, "shape", type(attention_mask).__name__)
            raise ValueError(f"attention_mask: expected an array of N={N} entries (B, T), got {got}")
        mask = attention_mask.reshape(N).astype(router_logits.dtype)  # (N,)
        if not np.isfinite(mask).all() or mask.sum() <= 0:
            raise ValueError("attention_mask: expected finite weights with a positive sum (1 = token, 0 = pad)")
    return _load_balancing_loss_forward(router_logits, int(top_k), mask)


def _load_balancing_loss_forward(z: Array, top_k: int, mask: Array | None) -> tuple[Array, LoadBalancingCache]:
    """Unchecked kernel of load_balancing_loss_forward.  z (L, N, E)."""
    L, N, E = z.shape
    p = np.exp(z - z.max(axis=-1, keepdims=True))  # (L, N, E)
    p /= p.sum(axis=-1, keepdims=True)  # (1) softmax
    idx = topk_indices(p.reshape(L * N, E), top_k)  # (2) (L*N, K) ties: lower index, as the routers
    m = np.ones(N, dtype=z.dtype) if mask is None else mask  # (N,)
    rows = float(L * m.sum())
    counts = np.bincount(idx.reshape(-1), weights=np.repeat(np.tile(m, L), top_k), minlength=E)  # (E,)
    f = (counts / rows).astype(z.dtype)  # (3) (E,) tokens_per_expert
    P = np.einsum("lne,n->e", p, m) / rows  # (4) (E,) router_prob_per_expert
    loss = E * float(np.sum(f * P))  # (5)
    return np.asarray(loss, dtype=z.dtype), LoadBalancingCache(p, f, mask, rows)


def load_balancing_loss_backward(dloss: Any, cache: LoadBalancingCache) -> Array:
    """dlogits = p * (g - sum_e p g) with g_e = dloss E f_e m_n / rows.  -> (L, N, E).

    See docs/derivations/load_balancing_loss.md (term 6).
    """
    return _load_balancing_loss_backward(real_number("dloss", dloss), cache)


def _load_balancing_loss_backward(dloss: float, cache: LoadBalancingCache) -> Array:
    """Unchecked kernel of load_balancing_loss_backward."""
    p, f, mask, rows = cache
    E = p.shape[-1]
    g = (dloss * E / rows) * f  # (E,) d loss / d p[l, n, e] for an unmasked row
    dz = p * (g - (p @ g)[..., None])  # (6) (L, N, E) softmax backward
    if mask is not None:
        dz *= mask[:, None]  # (L, N, E) a padded row counts with its mask weight
    return dz
