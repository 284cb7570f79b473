"""Mean cross-entropy of logits against integer targets, fused with its softmax.

loss = (1/N) sum_n [logsumexp(logits_n) - logits_n[target_n]] over all N = B*T positions.
Forward logits (B, T, V), targets (B, T) -> scalar loss; backward dloss (scalar) -> dlogits (B, T, V).
Derivation: docs/derivations/cross_entropy.md
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, real_number, shape_is, token_ids


class CrossEntropyCache(NamedTuple):
    probs: npt.NDArray[np.floating]  # (N, V) softmax(logits): the fused backward is probs - onehot
    targets: npt.NDArray[np.integer]  # (N,)
    logits_shape: tuple[int, ...]  # (..., V)


def cross_entropy_forward(
    logits: npt.NDArray[np.floating], targets: npt.NDArray[np.integer]
) -> tuple[npt.NDArray[np.floating], CrossEntropyCache]:
    """loss = mean over positions of logsumexp(logits) - logits[target].  logits (..., V), targets (...).

    Returns a 0-d array in the logits' dtype.  See docs/derivations/cross_entropy.md.
    """
    float_array("logits", logits, min_ndim=1)
    V = logits.shape[-1]
    token_ids("targets", targets, V, ndim=None)
    shape_is("targets", targets, logits.shape[:-1])
    if targets.size == 0:
        raise ValueError("targets: expected at least one position, got none")
    logits2 = logits.reshape(-1, V)  # (N, V)
    t = targets.reshape(-1)  # (N,)
    N = t.shape[0]
    shifted = logits2 - logits2.max(axis=-1, keepdims=True)  # (N, V) max entry 0: exp cannot overflow
    probs = np.exp(shifted)  # (N, V)
    sumexp = probs.sum(axis=-1)  # (N,)
    # -log p[target] = log(sum exp(shifted)) - shifted[target]
    nll = np.log(sumexp) - shifted[np.arange(N), t]  # (N,)
    loss = nll.mean(dtype=logits.dtype)  # 0-d
    probs /= sumexp[:, None]  # (N, V) normalised in place for the backward
    return np.asarray(loss, dtype=logits.dtype), CrossEntropyCache(probs, t, logits.shape)


def cross_entropy_backward(
    dloss: npt.NDArray[np.floating] | float, cache: CrossEntropyCache
) -> npt.NDArray[np.floating]:
    """dlogits = dloss * (softmax(logits) - onehot(targets)) / N.  scalar -> (..., V).

    The softmax and log-sum-exp Jacobians cancel into this one line.  See docs/derivations/cross_entropy.md.
    """
    probs, t, logits_shape = cache
    if isinstance(dloss, np.ndarray):
        if dloss.ndim != 0 or dloss.dtype != probs.dtype:
            raise ValueError(f"dloss: expected a Python number or a 0-d {probs.dtype} array (the loss's type), "
                             f"got {dloss.dtype} of shape {dloss.shape}")
        dloss = float(dloss)
    d = real_number("dloss", dloss)
    N = t.shape[0]
    dlogits = probs.copy()  # (N, V) (1) softmax term
    dlogits[np.arange(N), t] -= 1.0  # (2) minus one-hot of the target
    dlogits *= d / N  # (3) the mean's 1/N and the upstream scalar
    return dlogits.reshape(logits_shape)
