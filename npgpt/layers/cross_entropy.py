"""Cross-entropy of logits against integer targets, fused with its softmax, plus the loss variants of today's LLMs.

loss = (1/N) sum_n [logsumexp(logits_n) - logits_n[target_n]] over all N = B*T positions (the default).
Options: ignore_index, reduction mean/sum/none, label smoothing, z-loss (coef * logsumexp^2), final-logit
softcapping (cap * tanh(logits / cap)).  Forward logits (..., V), targets (...) -> loss (scalar, or (...) for
reduction="none"); backward dloss (the loss's shape) -> dlogits (..., V).
Derivation: docs/derivations/cross_entropy.md
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, is_int, real_number, shape_is, token_ids

Array = npt.NDArray[np.floating]
Reduction = Literal["mean", "sum", "none"]


class CrossEntropyCache(NamedTuple):
    probs: Array  # (N, V) softmax of the (capped) logits: the fused backward is probs - onehot
    targets: npt.NDArray[np.integer]  # (N,) ignored positions replaced by 0 (their rows are zeroed anyway)
    logits_shape: tuple[int, ...]  # (..., V)
    keep: npt.NDArray[np.bool_] | None = None  # (N,) False at ignored positions; None: none ignored
    reduction: str = "mean"
    label_smoothing: float = 0.0
    z_loss: float = 0.0
    lse: Array | None = None  # (N,) logsumexp of the (capped) logits, for the z-loss gradient
    tanh: Array | None = None  # (N, V) tanh(logits / cap), for the softcap's derivative 1 - tanh^2

    @property
    def default(self) -> bool:
        """True for the plain mean cross-entropy (the GPT-2 training path's backward)."""
        return self.keep is None and self.reduction == "mean" and self.label_smoothing == 0.0 \
            and self.z_loss == 0.0 and self.tanh is None


def cross_entropy_forward(
    logits: Array, targets: npt.NDArray[np.integer], *, ignore_index: int | None = None,
    reduction: Reduction = "mean", label_smoothing: float = 0.0, z_loss: float = 0.0,
    softcap: float | None = None,
) -> tuple[Array, CrossEntropyCache]:
    """loss_n = (1 - s) (lse_n - z_n[t_n]) + s (lse_n - mean_v z_n) + c lse_n^2,  z = cap tanh(logits / cap).

    Reduced by mean over the kept targets (0 when every target is ignore_index), sum, or none (shape (...)).
    logits (..., V), targets (...).  The loss is in the logits' dtype.  See docs/derivations/cross_entropy.md.
    """
    float_array("logits", logits, min_ndim=1)
    V = logits.shape[-1]
    if ignore_index is not None:
        if not is_int(ignore_index):
            raise ValueError(f"ignore_index: expected an integer or None, got {ignore_index!r}")
        if not isinstance(targets, np.ndarray) or not np.issubdtype(targets.dtype, np.integer):
            token_ids("targets", targets, V, ndim=None)  # raises the usual message
        token_ids("targets", np.where(targets == ignore_index, 0, targets), V, ndim=None)
    else:
        token_ids("targets", targets, V, ndim=None)
    shape_is("targets", targets, logits.shape[:-1])
    if targets.size == 0:
        raise ValueError("targets: expected at least one position, got none")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction: expected 'mean', 'sum' or 'none', got {reduction!r}")
    label_smoothing = real_number("label_smoothing", label_smoothing)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing: expected a number in [0, 1], got {label_smoothing}")
    z_loss = real_number("z_loss", z_loss)
    if not z_loss >= 0.0 or not math.isfinite(z_loss):
        raise ValueError(f"z_loss: expected a finite coefficient >= 0, got {z_loss}")
    if softcap is not None:
        softcap = real_number("softcap", softcap)
        if not softcap > 0.0 or not math.isfinite(softcap):
            raise ValueError(f"softcap: expected a finite number > 0 or None, got {softcap}")
    return _cross_entropy_forward(logits, targets, ignore_index, reduction, label_smoothing, z_loss, softcap)


def _cross_entropy_forward(logits: Array, targets: npt.NDArray[np.integer], ignore_index: int | None = None,
                           reduction: str = "mean", label_smoothing: float = 0.0, z_loss: float = 0.0,
                           softcap: float | None = None) -> tuple[Array, CrossEntropyCache]:
    """Unchecked kernel of cross_entropy_forward."""
    V = logits.shape[-1]
    logits2 = logits.reshape(-1, V)  # (N, V)
    t = targets.reshape(-1)  # (N,)
    N = t.shape[0]
    th = None
    if softcap is not None:
        th = np.tanh(logits2 * (1.0 / softcap))  # (N, V)
        logits2 = th * softcap  # (N, V) capped logits z, in (-cap, cap)
    keep = None
    if ignore_index is not None:
        keep = t != ignore_index  # (N,)
        t = np.where(keep, t, 0)  # (N,) any valid row index for the ignored positions
    row_max = logits2.max(axis=-1, keepdims=True)  # (N, 1)
    shifted = logits2 - row_max  # (N, V) max entry 0: exp cannot overflow
    probs = np.exp(shifted)  # (N, V)
    sumexp = probs.sum(axis=-1)  # (N,)
    # -log p[target] = log(sum exp(shifted)) - shifted[target]
    nll = np.log(sumexp) - shifted[np.arange(N), t]  # (N,)
    probs /= sumexp[:, None]  # (N, V) normalised in place for the backward
    plain = keep is None and reduction == "mean" and label_smoothing == 0.0 and z_loss == 0.0 and th is None
    if plain:  # GPT-2's training path: exactly the calls it always made
        loss = nll.mean(dtype=logits.dtype)  # 0-d
        return np.asarray(loss, dtype=logits.dtype), CrossEntropyCache(probs, t, logits.shape)
    lse = None
    if label_smoothing:
        smooth = np.log(sumexp) - shifted.mean(axis=-1)  # (N,) -mean_v log p_v = lse - mean(z)
        nll = (1.0 - label_smoothing) * nll + label_smoothing * smooth  # (N,)
    if z_loss:
        lse = np.log(sumexp) + row_max[:, 0]  # (N,) logsumexp of the (capped) logits
        nll = nll + z_loss * (lse * lse)  # (N,)
    if keep is not None:
        nll = np.where(keep, nll, 0.0).astype(logits.dtype, copy=False)  # (N,) ignored positions cost 0
    if reduction == "none":
        loss = nll.reshape(logits.shape[:-1])  # (...)
    elif reduction == "sum":
        loss = np.asarray(nll.sum(dtype=logits.dtype))
    else:
        n_kept = N if keep is None else int(keep.sum())
        loss = np.asarray(nll.sum(dtype=logits.dtype) / max(n_kept, 1), dtype=logits.dtype)  # 0 if all ignored
    cache = CrossEntropyCache(probs, t, logits.shape, keep, reduction, label_smoothing, z_loss, lse, th)
    return loss.astype(logits.dtype, copy=False), cache


def cross_entropy_backward(dloss: Array | float, cache: CrossEntropyCache) -> Array:
    """dlogits = w_n * (probs - (1 - s) onehot - s / V + 2 c lse_n probs) * (1 - tanh^2 if capped).

    w_n = dloss / N_kept (mean), dloss (sum), dloss_n (none), 0 at ignored positions.  The softmax and
    log-sum-exp Jacobians cancel into this line.  See docs/derivations/cross_entropy.md (terms 1-7).
    """
    probs = cache.probs
    if cache.reduction == "none":
        shape = cache.logits_shape[:-1]
        if not isinstance(dloss, (np.ndarray, np.floating)) or dloss.shape != shape or dloss.dtype != probs.dtype:
            raise ValueError(f"dloss: expected a {probs.dtype} array of shape {shape} (the per-position loss), "
                             f"got {getattr(dloss, 'dtype', type(dloss).__name__)} of shape {np.shape(dloss)}")
        return _cross_entropy_backward(np.asarray(dloss), cache)
    if isinstance(dloss, np.ndarray):
        if dloss.ndim != 0 or dloss.dtype != probs.dtype:
            raise ValueError(f"dloss: expected a Python number or a 0-d {probs.dtype} array (the loss's type), "
                             f"got {dloss.dtype} of shape {dloss.shape}")
        dloss = float(dloss)
    return _cross_entropy_backward(real_number("dloss", dloss), cache)


def _cross_entropy_backward(dloss: Array | float, cache: CrossEntropyCache) -> Array:
    """Unchecked kernel of cross_entropy_backward (dloss a float, or an (...) array for reduction="none")."""
    probs, t, logits_shape = cache.probs, cache.targets, cache.logits_shape
    N, V = probs.shape
    if cache.default:
        d = float(dloss)
        dlogits = probs.copy()  # (N, V) (1) softmax term
        dlogits[np.arange(N), t] -= 1.0  # (2) minus one-hot of the target
        dlogits *= d / N  # (3) the mean's 1/N and the upstream scalar
        return dlogits.reshape(logits_shape)
    s, c = cache.label_smoothing, cache.z_loss
    dlogits = probs.copy()  # (N, V) (1)
    if c and cache.lse is not None:
        dlogits *= (1.0 + 2.0 * c * cache.lse)[:, None]  # (5) z-loss: + 2 c lse p
    dlogits[np.arange(N), t] -= 1.0 - s  # (2), (4) minus the smoothed target's one-hot part
    if s:
        dlogits -= s / V  # (4) minus its uniform part
    if cache.reduction == "none":
        w = np.asarray(dloss, dtype=probs.dtype).reshape(N)  # (N,) per-position upstream gradient
    else:
        n_kept = N if cache.keep is None else int(cache.keep.sum())
        scale = float(dloss) / max(n_kept, 1) if cache.reduction == "mean" else float(dloss)
        w = np.full(N, scale, dtype=probs.dtype)  # (N,)
    if cache.keep is not None:
        w = np.where(cache.keep, w, 0.0).astype(probs.dtype, copy=False)  # (N,) ignored rows get 0
    dlogits *= w[:, None]  # (3), (6) each position's weight
    if cache.tanh is not None:
        dlogits *= 1.0 - cache.tanh * cache.tanh  # (7) through z = cap tanh(logits / cap)
    return dlogits.reshape(logits_shape)
