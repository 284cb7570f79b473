"""DeepSeek-V3's router: sigmoid scores, a correction bias that steers the choice only, group-limited top-K,
optional renormalisation, and `routed_scaling_factor`.  Also the loss-free balancing update of that bias.

Forward logits (N, E), e_score_correction_bias (E,) -> weights (N, K), indices (N, K); backward dweights (N, K)
-> dlogits (N, E), zero outside the chosen experts (the bias gets none: it only moves the choice).
Ties: the lower group index, then the lower expert index, wins.
Derivation: docs/derivations/router_deepseek.md
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, is_int, param, real_number, upstream
from .topk import check_router_logits, topk_indices

Array = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.intp]
NORM_EPS = 1e-20  # HF adds this to the chosen scores' sum before dividing (a no-op unless every score is ~0)


class RouterDeepseekCache(NamedTuple):
    s_sel: Array  # (N, K) sigmoid scores of the chosen experts (uncorrected)
    denom: Array | None  # (N, 1) sum of s_sel + NORM_EPS when renormalised, else None
    weights: Array  # (N, K) the returned weights
    indices: IntArray  # (N, K) chosen experts, largest corrected score first
    n_experts: int  # E
    routed_scaling_factor: float


def check_groups(E: int, top_k: int, n_group: Any, topk_group: Any) -> tuple[int, int]:
    """Validate n_group (divides E, groups of >= 2 when there are several) and topk_group; return both."""
    if not is_int(n_group) or int(n_group) < 1 or E % int(n_group):
        raise ValueError(f"n_group: expected a positive divisor of the number of experts E={E}, got {n_group!r}")
    n_group = int(n_group)
    if n_group > 1 and E // n_group < 2:
        raise ValueError(f"n_group: each of the {n_group} groups would hold {E // n_group} expert(s); a group's "
                         f"score is the sum of its top 2, so E/n_group must be >= 2")
    if not is_int(topk_group) or not 1 <= int(topk_group) <= n_group:
        raise ValueError(f"topk_group: expected an integer in [1, n_group={n_group}], got {topk_group!r}")
    topk_group = int(topk_group)
    if top_k > topk_group * (E // n_group):
        raise ValueError(f"top_k: {top_k} experts cannot come from topk_group={topk_group} groups of "
                         f"{E // n_group} (at most {topk_group * (E // n_group)})")
    return n_group, topk_group


def router_deepseek_forward(logits: Array, e_score_correction_bias: Array, top_k: int, n_group: int = 1,
                            topk_group: int = 1, norm_topk_prob: bool = True, routed_scaling_factor: float = 1.0
                            ) -> tuple[Array, IntArray, RouterDeepseekCache]:
    """s = sigmoid(logits); choose by s + bias within the best topk_group groups; w = r s[chosen] (/ sum).

    logits (N, E), bias (E,) -> weights (N, K), indices (N, K).  See docs/derivations/router_deepseek.md.
    """
    N, E, K = check_router_logits(logits, top_k)
    param("e_score_correction_bias", e_score_correction_bias, (E,), logits.dtype, ref="logits")
    if not np.isfinite(e_score_correction_bias).all():
        raise ValueError("e_score_correction_bias: expected finite values")
    n_group, topk_group = check_groups(E, K, n_group, topk_group)
    if not isinstance(norm_topk_prob, (bool, np.bool_)):
        raise ValueError(f"norm_topk_prob: expected a bool, got {norm_topk_prob!r}")
    r = real_number("routed_scaling_factor", routed_scaling_factor)
    if not math.isfinite(r):
        raise ValueError(f"routed_scaling_factor: expected a finite number, got {routed_scaling_factor!r}")
    return _router_deepseek_forward(logits, e_score_correction_bias, K, n_group, topk_group, bool(norm_topk_prob),
                                    r)


def _sigmoid(z: Array) -> Array:
    """1 / (1 + exp(-z)), overflow of exp to inf giving the right limit 0.  (...) -> (...)."""
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-z))  # (...)


def _choose(scores: Array, top_k: int, n_group: int, topk_group: int) -> IntArray:
    """Group-limited top-K of the corrected scores (N, E) -> indices (N, K)."""
    N, E = scores.shape
    if n_group > 1:
        g = scores.reshape(N, n_group, E // n_group)  # (N, n_group, G)
        top2 = np.sort(g, axis=-1)[..., -2:]  # (N, n_group, 2) the two largest of each group
        group_scores = top2[..., 1] + top2[..., 0]  # (2) (N, n_group) largest + second, as HF sums them
        keep = topk_indices(group_scores, topk_group)  # (3) (N, topk_group) ties: the lower group index
        masked = np.full_like(g, -np.inf)  # (N, n_group, G) groups left out cannot be chosen
        rows = np.arange(N)[:, None]  # (N, 1)
        masked[rows, keep] = g[rows, keep]
        scores = masked.reshape(N, E)  # (N, E)
    return topk_indices(scores, top_k)  # (4) (N, K) ties: the lower expert index


def _router_deepseek_forward(logits: Array, bias: Array, top_k: int, n_group: int, topk_group: int,
                             norm_topk_prob: bool, r: float) -> tuple[Array, IntArray, RouterDeepseekCache]:
    """Unchecked kernel of router_deepseek_forward."""
    s = _sigmoid(logits)  # (1) (N, E)
    idx = _choose(s + bias, top_k, n_group, topk_group)  # (2)-(4) (N, K) the bias moves the choice only
    s_sel = np.take_along_axis(s, idx, axis=-1)  # (5) (N, K) uncorrected scores
    denom = None
    w = s_sel
    if norm_topk_prob:
        denom = s_sel.sum(axis=-1, keepdims=True) + NORM_EPS  # (N, 1)
        w = s_sel / denom  # (6) (N, K)
    w = w * r  # (7) (N, K)
    return w, idx, RouterDeepseekCache(s_sel, denom, w, idx, logits.shape[1], r)


def router_deepseek_backward(dweights: Array, cache: RouterDeepseekCache) -> Array:
    """dlogits at the chosen experts (the choice held fixed), 0 elsewhere.  dweights (N, K) -> dlogits (N, E).

    See docs/derivations/router_deepseek.md (terms 8-9).
    """
    upstream("dweights", dweights, cache.weights.shape, cache.weights.dtype)
    return _router_deepseek_backward(dweights, cache)


def _router_deepseek_backward(dweights: Array, cache: RouterDeepseekCache) -> Array:
    """Unchecked kernel of router_deepseek_backward."""
    s_sel, denom, w, idx, E, r = cache
    ds = dweights * r  # (N, K) through (7)
    if denom is not None:
        wn = s_sel / denom  # (N, K) the weights before scaling
        ds = (ds - (ds * wn).sum(axis=-1, keepdims=True)) / denom  # (8) (N, K) through (6)
    dsel = ds * s_sel * (1.0 - s_sel)  # (9) (N, K) sigmoid' = s (1 - s)
    dlogits = np.zeros((w.shape[0], E), dtype=w.dtype)  # (N, E)
    np.put_along_axis(dlogits, idx, dsel, axis=-1)
    return dlogits


def balance_bias_update(e_score_correction_bias: Array, indices: npt.NDArray[np.integer],
                        rate: float) -> Array:
    """DeepSeek-V3's loss-free balancing, between steps: bias + rate * sign(mean load - load), a new array.

    bias (E,), indices (N, K) the step's chosen experts (all layers' rows stacked is fine) -> bias (E,).
    load_e = how many (token, slot) pairs chose e.  No gradient.  See docs/derivations/router_deepseek.md.
    """
    float_array("e_score_correction_bias", e_score_correction_bias, ndim=1)
    E = e_score_correction_bias.shape[0]
    if not isinstance(indices, np.ndarray) or not np.issubdtype(indices.dtype, np.integer):
        raise ValueError("indices: expected a numpy integer array of chosen experts")
    if indices.size and (indices.min() < 0 or indices.max() >= E):
        raise ValueError(f"indices: expected expert indices in [0, E={E}), got values in "
                         f"[{indices.min()}, {indices.max()}]")
    rate = real_number("rate", rate)
    load = np.bincount(indices.reshape(-1), minlength=E).astype(e_score_correction_bias.dtype)  # (E,)
    mean = load.mean() if E else 0.0
    return e_score_correction_bias + rate * np.sign(mean - load)  # (E,) overloaded experts go down
