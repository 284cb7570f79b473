"""Finite-difference gradient checking, public so other projects can test their own layers with it.

numerical_gradient: central differences of sum(f(inputs) * dout) with respect to one input.
relative_error: the worst element-wise relative error, with a floor so near-zero elements are not noise.
check_layer: run a (forward, backward) pair and compare every analytic gradient with the numerical one.

check_layer's verdict, per element of every gradient:  |a - n| <= atol + rtol * max(|a|, |n|), where the
absolute part atol is at least the finite differences' own round-off (estimated from the output and dout)
plus rtol * 1e-4 * the largest gradient element of any checked input.  Use float64 inputs: in float32 the
differences cannot resolve 1e-6 (see check_layer).  Guide: docs/oracle.md
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "DOUT_SEED",
    "GradcheckError",
    "GradcheckResult",
    "check_layer",
    "fd_noise",
    "numerical_gradient",
    "relative_error",
]


class GradcheckError(AssertionError):
    """Raised by check_layer when an analytic gradient disagrees with finite differences."""


@dataclass(frozen=True)
class GradcheckResult:
    """The worst error seen for one input: which input, which element, and both values there."""

    name: str
    error: float  # relative_error(analytic, numeric)
    index: tuple[int, ...]  # the element where it occurred
    analytic: float
    numeric: float

    def __str__(self) -> str:
        return (f"{self.name}{list(self.index)}: analytic {self.analytic:.10g} vs numeric {self.numeric:.10g}"
                f" (relative error {self.error:.3g})")


def _output(forward: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> np.ndarray:
    out = forward(*args, **kwargs)
    if isinstance(out, tuple):  # (out, cache) pairs
        out = out[0]
    return np.array(out, dtype=np.float64, copy=True)  # a copy: out may be a view of the perturbed input


def numerical_gradient(
    forward: Callable[..., Any],
    inputs: Sequence[Any],
    wrt: int,
    dout: npt.ArrayLike,
    h: float = 1e-3,
    kwargs: dict[str, Any] | None = None,
) -> npt.NDArray[np.float64]:
    """d/dx sum(forward(*inputs)[0] * dout) for x = inputs[wrt], by a fourth-order central difference:

        g = sum(dout * (8 (f(x+h) - f(x-h)) - (f(x+2h) - f(x-2h)))) / 12h,   truncation error O(h^4).

    The outputs are subtracted element by element before the weighted sum, so no large sum cancels.
    forward may return an array or an (out, cache) pair.  The caller's arrays are not modified (a copy is
    perturbed).  Cost: 4 forward calls per element of inputs[wrt], so keep the shapes small; use float64.
    """
    kwargs = dict(kwargs or {})
    args = list(inputs)
    x = np.array(args[wrt], copy=True, order="C")  # C order: the flat view below must alias x
    args[wrt] = x
    d = np.asarray(dout, dtype=np.float64)
    grad = np.zeros(x.shape, dtype=np.float64)
    flat_x, flat_g = x.reshape(-1), grad.reshape(-1)  # views: writing flat_x perturbs x
    for j in range(flat_x.size):
        orig = flat_x[j]
        outs = []
        for step in (h, -h, 2.0 * h, -2.0 * h):
            flat_x[j] = orig + step
            outs.append(_output(forward, args, kwargs))
        flat_x[j] = orig
        diff = 8.0 * (outs[0] - outs[1]) - (outs[2] - outs[3])
        flat_g[j] = float(np.sum(diff * d)) / (12.0 * h)
    return grad


def relative_error(analytic: npt.ArrayLike, numeric: npt.ArrayLike, floor: float = 1e-4) -> float:
    """max_i |a_i - n_i| / max(|a_i|, |n_i|, floor * max(|a|, |n|)).

    Each element is judged against its own size, except that elements smaller than `floor` times the largest
    element are judged against that floor (finite differences cannot resolve them more finely).
    0.0 when both are all zero.  Shapes must match.
    """
    a = np.asarray(analytic, dtype=np.float64)
    n = np.asarray(numeric, dtype=np.float64)
    if a.shape != n.shape:
        raise ValueError(f"analytic: expected shape {n.shape} (the numeric gradient's), got {a.shape}")
    return float(np.max(_elementwise_error(a, n, floor), initial=0.0))


def _elementwise_error(a: np.ndarray, n: np.ndarray, floor: float = 1e-4) -> np.ndarray:
    scale = max(float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(n), initial=0.0)))
    if scale == 0.0:
        return np.zeros(a.shape)
    denom = np.maximum(np.maximum(np.abs(a), np.abs(n)), floor * scale)
    return np.abs(a - n) / denom


# The default upstream gradient's seed: a fixed stream of its own, so it is never the same draw as a caller's
# default_rng(0) (or any small seed) inputs.  ASCII "npgpt.gradcheck" as an integer.
DOUT_SEED = int.from_bytes(b"npgpt.gradcheck", "big")
DEFAULT_RTOL = 1e-6
FLOOR = 1e-4  # the absolute part of the tolerance is at least rtol * FLOOR * (largest gradient element)
NOISE_SAFETY = 10.0  # multiplies the round-off estimate of the numerical gradient


def fd_noise(out: npt.ArrayLike, dout: npt.ArrayLike, h: float, dtype: Any = np.float64) -> float:
    """An upper estimate of the round-off in one numerical_gradient element:

        NOISE_SAFETY * (18 / 12) * eps * sum(|out| * |dout|) / h

    (each of the four outputs of the stencil carries ~eps relative error, weighted 8 + 8 + 1 + 1 and divided
    by 12 h).  eps is that of `dtype`, the precision forward computes in.
    """
    eps = float(np.finfo(dtype).eps)
    s = float(np.sum(np.abs(np.asarray(out, dtype=np.float64)) * np.abs(np.asarray(dout, dtype=np.float64))))
    return NOISE_SAFETY * 1.5 * eps * s / h


def check_layer(
    forward: Callable[..., Any],
    backward: Callable[[Any, Any], Any],
    inputs: Sequence[Any],
    *,
    wrt: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
    dout: npt.ArrayLike | None = None,
    rng: np.random.Generator | None = None,
    kwargs: dict[str, Any] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    tol: float | None = None,
    h: float = 1e-3,
    raise_on_failure: bool = True,
) -> list[GradcheckResult]:
    """Compare backward(dout, cache) with finite differences for every differentiable input.

    forward(*inputs, **kwargs) -> (out, cache); backward(dout, cache) -> grad or tuple of grads, one per
    input in `wrt` (default: every floating-point ndarray input, in order).  dout defaults to standard
    normal noise from `rng`, else from a generator seeded with DOUT_SEED (never a caller's default_rng(0)).
    An element passes when |a - n| <= atol + rtol * max(|a|, |n|); rtol defaults to 1e-6 (`tol` is its old
    name), atol to rtol * 1e-4 * the largest gradient element over all checked inputs; the estimated
    finite-difference round-off (fd_noise) is always added to atol.  Every input is checked before anything
    is raised, so the GradcheckError names every failing input (worst element, both values).  Also checks
    that forward leaves its inputs unmodified.  Returns one result per input.

    float32: finite differences in float32 resolve a gradient only to ~1e-3, so correct float32 code cannot
    pass rtol=1e-6.  Check the same code with float64 inputs (x.astype(np.float64)); to check the float32
    path itself, compare it with the float64 analytic gradients (assert_allclose, rtol ~1e-4), or pass
    rtol=1e-2, h=1e-2 explicitly.  Without an explicit rtol, float32/float16 inputs are a ValueError saying so.
    """
    kwargs = dict(kwargs or {})
    if tol is not None and rtol is not None:
        raise ValueError("tol: give rtol or its old name tol, not both")
    rtol_given = rtol is not None or tol is not None
    rtol = float(rtol if rtol is not None else tol if tol is not None else DEFAULT_RTOL)
    if not (math.isfinite(rtol) and rtol > 0.0):
        raise ValueError(f"rtol: expected a finite number > 0, got {rtol!r}")
    if atol is not None and not (math.isfinite(atol) and atol >= 0.0):
        raise ValueError(f"atol: expected a finite number >= 0, got {atol!r}")
    rng = rng if rng is not None else np.random.default_rng(DOUT_SEED)
    inputs = list(inputs)
    if wrt is None:
        wrt = [i for i, x in enumerate(inputs) if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating)]
    if names is None:
        names = [f"inputs[{i}]" for i in range(len(inputs))]
    _check_differentiable(inputs, wrt, names)
    low = [i for i in wrt if isinstance(inputs[i], np.ndarray) and np.issubdtype(inputs[i].dtype, np.floating)
           and np.finfo(inputs[i].dtype).eps > np.finfo(np.float64).eps]
    if low and not rtol_given:
        i = low[0]
        raise ValueError(f"{names[i]}: {inputs[i].dtype} input: finite differences in {inputs[i].dtype} resolve a "
                         f"gradient only to about 1e-3, so correct code cannot pass the default rtol=1e-6; check "
                         f"with float64 inputs (x.astype(np.float64)), or pass rtol=1e-2, h=1e-2 explicitly")
    before = [np.copy(x) if isinstance(x, np.ndarray) else None for x in inputs]
    result = forward(*inputs, **kwargs)
    if not (isinstance(result, tuple) and len(result) == 2):
        got = f"a tuple of {len(result)}" if isinstance(result, tuple) else type(result).__name__
        raise ValueError(f"forward: expected it to return (out, cache), got {got}; wrap a forward with more "
                         f"outputs, e.g. sdpa_forward's (out, lse, cache), so that it returns (out, cache)")
    out, cache = result
    for i, x in enumerate(inputs):
        b = before[i]
        if b is not None and not np.array_equal(b, x, equal_nan=True):
            raise GradcheckError(f"{names[i]}: forward modified this input in place")
    out = np.asarray(out)
    if not np.issubdtype(out.dtype, np.inexact):  # zero finite differences would be blamed on the backward
        raise ValueError(f"forward: returned {_a(out.dtype.name)} output; finite differences of an integer output "
                         f"are all zero, so no gradient can be checked: return a floating-point output")
    d = rng.standard_normal(out.shape) if dout is None else np.asarray(dout, dtype=np.float64)
    d = d.astype(out.dtype)
    grads = backward(d if d.ndim else d[()], cache)
    if not isinstance(grads, tuple):
        grads = (grads,)
    if len(grads) != len(wrt):
        raise GradcheckError(f"backward returned {len(grads)} gradient(s), expected {len(wrt)} (one per wrt input)")
    pairs = []
    for g, i in zip(grads, wrt):
        x = inputs[i]
        g = np.asarray(g)
        if g.shape != np.shape(x):
            raise GradcheckError(f"{names[i]}: gradient has shape {g.shape}, expected {np.shape(x)}")
        pairs.append((i, g.astype(np.float64), numerical_gradient(forward, inputs, i, d, h=h, kwargs=kwargs)))
    scale = max((max(float(np.max(np.abs(a), initial=0.0)), float(np.max(np.abs(n), initial=0.0)))
                 for _, a, n in pairs), default=0.0)
    noise = fd_noise(out, d, h, out.dtype if np.issubdtype(out.dtype, np.floating) else np.float64)
    abs_tol = (atol if atol is not None else rtol * FLOOR * scale) + noise
    results, failed = [], []
    for i, a, n in pairs:
        # error <= rtol exactly when |a - n| <= abs_tol + rtol * max(|a|, |n|)
        with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 where a == n == 0 and the floor is 0
            errs = np.abs(a - n) / (np.maximum(np.abs(a), np.abs(n)) + abs_tol / rtol)  # same shape as x
        errs[a == n] = 0.0  # equal values (zeros, equal infinities) are not an error
        bad = np.isnan(errs)
        flat = int(np.argmax(bad)) if bad.any() else int(np.argmax(errs)) if errs.size else 0
        j = np.unravel_index(flat, errs.shape) if errs.size else ()
        worst = float(errs[j]) if errs.size else 0.0
        res = GradcheckResult(names[i], worst, tuple(int(k) for k in j),
                              float(a[j]) if errs.size else 0.0, float(n[j]) if errs.size else 0.0)
        results.append(res)
        if not worst <= rtol:
            failed.append(res)
    if raise_on_failure and failed:
        hint = ""
        if low:
            hint = (f"; {inputs[low[0]].dtype} inputs: finite differences are this coarse in low precision, "
                    f"check with float64 inputs or larger rtol/h (see check_layer's docstring)")
        raise GradcheckError("gradient check failed for " + "; ".join(str(r) for r in failed)
                             + f"; tolerance rtol={rtol:g}, atol={abs_tol:.3g}{hint}")
    return results


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _check_differentiable(inputs: Sequence[Any], wrt: Sequence[int], names: Sequence[str]) -> None:
    """Something to differentiate: at least one input, and every wrt input floating point (an integer array
    perturbed by h does not change, so its numerical gradient is zero whatever the backward says)."""
    if not wrt:
        kinds = sorted({np.asarray(x).dtype.name if isinstance(x, np.ndarray) else type(x).__name__
                        for x in inputs})
        raise ValueError(f"inputs: none is a floating-point array (got {', '.join(kinds) or 'no inputs'}), so there "
                         f"is no gradient to check; pass float64 inputs (x.astype(np.float64))")
    for i in wrt:
        x = inputs[i]
        if isinstance(x, np.ndarray) and not np.issubdtype(x.dtype, np.inexact):
            raise ValueError(f"{names[i]}: {_a(x.dtype.name)} input has no gradient to check; pass it as float64 "
                             f"(x.astype(np.float64)) or leave it out of wrt")
