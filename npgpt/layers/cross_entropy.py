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
ROW_BLOCK = 1 << 18  # elements per row block of the softmax (1 MiB in float32): a block's passes stay in cache


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
    sm = _softmax_rows(logits2, t, with_mean=bool(label_smoothing))
    probs, sumexp = sm.probs, sm.sumexp  # (N, V), (N,)
    # -log p[target] = log(sum exp(shifted)) - shifted[target]
    nll = np.log(sumexp) - sm.shifted_target  # (N,)
    plain = keep is None and reduction == "mean" and label_smoothing == 0.0 and z_loss == 0.0 and th is None
    if plain:  # GPT-2's training path: the same bits it always gave
        loss = nll.mean(dtype=logits.dtype)  # 0-d
        return np.asarray(loss, dtype=logits.dtype), CrossEntropyCache(probs, t, logits.shape)
    lse = None
    if label_smoothing:
        assert sm.shifted_mean is not None  # asked for with_mean
        smooth = np.log(sumexp) - sm.shifted_mean  # (N,) -mean_v log p_v = lse - mean(z)
        nll = (1.0 - label_smoothing) * nll + label_smoothing * smooth  # (N,)
    if z_loss:
        lse = np.log(sumexp) + sm.row_max[:, 0]  # (N,) logsumexp of the (capped) logits
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


class _Softmax(NamedTuple):
    probs: Array  # (N, V) softmax of each row
    row_max: Array  # (N, 1) each row's largest entry
    sumexp: Array  # (N,) sum_v exp(z - row_max), at least 1
    shifted_target: Array  # (N,) z[n, t_n] - row_max_n
    shifted_mean: Array | None  # (N,) mean_v (z - row_max), when asked for (label smoothing)


def _softmax_rows(z: Array, t: npt.NDArray[np.integer], with_mean: bool) -> _Softmax:
    """Softmax of z (N, V) and the pieces of the loss, a block of ROW_BLOCK // V rows at a time: each block's
    passes (max, shift, gather, exp, sum, normalise) run while it is in cache, and the shifted logits are
    exponentiated in place in the probabilities' buffer, so no other (N, V) array is made.  Every pass is
    per row, so the bits are those of whole-array passes."""
    N, V = z.shape
    probs = np.empty_like(z)  # (N, V)
    row_max = np.empty((N, 1), dtype=z.dtype)  # (N, 1)
    sumexp, shifted_target = np.empty(N, dtype=z.dtype), np.empty(N, dtype=z.dtype)  # (N,), (N,)
    shifted_mean = np.empty(N, dtype=z.dtype) if with_mean else None  # (N,)
    k = max(1, ROW_BLOCK // V)  # rows per block
    for lo in range(0, N, k):
        r = slice(lo, min(lo + k, N))
        row_max[r] = z[r].max(axis=-1, keepdims=True)  # (k, 1)
        shifted = np.subtract(z[r], row_max[r], out=probs[r])  # (k, V) max entry 0: exp cannot overflow
        shifted_target[r] = shifted[np.arange(r.stop - lo), t[r]]  # (k,) read before the exp overwrites it
        if shifted_mean is not None:
            shifted_mean[r] = shifted.mean(axis=-1)  # (k,)
        np.exp(shifted, out=shifted)  # (k, V) in place
        sumexp[r] = shifted.sum(axis=-1)  # (k,)
        shifted /= sumexp[r, None]  # (k, V) normalised in place: the block of probs
    return _Softmax(probs, row_max, sumexp, shifted_target, shifted_mean)


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
    if isinstance(dloss, (np.ndarray, np.floating)):  # a NumPy scalar carries a dtype too: no silent mixing
        if dloss.ndim != 0 or dloss.dtype != probs.dtype:
            raise ValueError(f"dloss: expected a Python number or a 0-d {probs.dtype} array (the loss's type), "
                             f"got {dloss.dtype} of shape {dloss.shape}")
        dloss = float(dloss)
    return _cross_entropy_backward(real_number("dloss", dloss), cache)


def _cross_entropy_backward(dloss: Array | float, cache: CrossEntropyCache, reuse_probs: bool = False) -> Array:
    """Unchecked kernel of cross_entropy_backward (dloss a float, or an (...) array for reduction="none").
    reuse_probs=True writes dlogits into cache.probs instead of a new (N, V) array, which spends the cache:
    only for a caller that drops it right after (a second backward from it would be wrong)."""
    probs, t, logits_shape = cache.probs, cache.targets, cache.logits_shape
    N, V = probs.shape
    if cache.default:
        rows, scale = np.arange(N), float(dloss) / N  # (N,); (3) the mean's 1/N and the upstream scalar
        at_target = (probs[rows, t] - 1.0) * scale  # (N,) (2) minus one-hot of the target, then (3)
        dlogits = np.multiply(probs, scale, out=probs if reuse_probs else None)  # (N, V) (1) softmax term, (3)
        dlogits[rows, t] = at_target  # (N, V) the same roundings as subtracting 1 there and then scaling
        return dlogits.reshape(logits_shape)
    s, c = cache.label_smoothing, cache.z_loss
    dlogits = probs if reuse_probs else probs.copy()  # (N, V) (1)
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
