"""The routers' shared choice: the K largest scores of each row, ties to the lower index.

Not a layer pair (the choice is piecewise constant and has no gradient); router_softmax_topk.py,
router_topk_softmax.py and router_deepseek.py use it.  Tie rule: docs/derivations/router_softmax_topk.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from .._checks import float_array, is_int

Array = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.intp]


def topk_indices(scores: Array, k: int) -> IntArray:
    """Indices of the k largest entries of each row, largest first; among equal entries the lower index first.

    scores (N, E) -> (N, k).  A stable sort of -scores: equal keys keep their index order.  -0.0 and 0.0 are equal.
    """
    order = np.argsort(-scores, axis=-1, kind="stable")  # (N, E) descending, stable
    return order[:, :k]  # (N, k)


def check_router_logits(logits: Array, top_k: Any, name: str = "logits") -> tuple[int, int, int]:
    """Validate router logits (N, E) and top_k; return (N, E, K).  NaN or inf anywhere is an error."""
    float_array(name, logits, ndim=2)
    N, E = logits.shape
    if E == 0:
        raise ValueError(f"{name}: expected at least one expert (E >= 1), got shape {logits.shape}")
    if not is_int(top_k) or not 1 <= int(top_k) <= E:
        raise ValueError(f"top_k: expected an integer in [1, E={E}], got {top_k!r}")
    finite = np.isfinite(logits)  # (N, E)
    if not finite.all():
        r, e = (int(i) for i in np.argwhere(~finite)[0])
        raise ValueError(f"{name}: non-finite value {logits[r, e]} at row {r}, expert {e}: a router cannot choose "
                         f"experts from NaN or infinite scores")
    return N, E, int(top_k)
