"""Finite-difference gradient checking, public so other projects can test their own layers with it.

numerical_gradient: central differences of sum(f(inputs) * dout) with respect to one input.
relative_error: the worst element-wise relative error, with a floor so near-zero elements are not noise.
check_layer: run a (forward, backward) pair and compare every analytic gradient with the numerical one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["GradcheckError", "GradcheckResult", "numerical_gradient", "relative_error", "check_layer"]


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
    tol: float = 1e-6,
    h: float = 1e-3,
    raise_on_failure: bool = True,
) -> list[GradcheckResult]:
    """Compare backward(dout, cache) with finite differences for every differentiable input.

    forward(*inputs, **kwargs) -> (out, cache); backward(dout, cache) -> grad or tuple of grads, one per
    input in `wrt` (default: every floating-point ndarray input, in order).  dout defaults to standard
    normal noise from `rng`.  Also checks that forward leaves its inputs unmodified.  Raises GradcheckError
    naming the input, the element and both values when an error exceeds `tol`; returns one result per input.
    """
    kwargs = dict(kwargs or {})
    rng = rng if rng is not None else np.random.default_rng(0)
    inputs = list(inputs)
    if wrt is None:
        wrt = [i for i, x in enumerate(inputs) if isinstance(x, np.ndarray) and np.issubdtype(x.dtype, np.floating)]
    if names is None:
        names = [f"inputs[{i}]" for i in range(len(inputs))]
    before = [np.copy(x) if isinstance(x, np.ndarray) else None for x in inputs]
    out, cache = forward(*inputs, **kwargs)
    for i, x in enumerate(inputs):
        kept = before[i]
        if kept is not None and not np.array_equal(kept, x, equal_nan=True):
            raise GradcheckError(f"{names[i]}: forward modified this input in place")
    out = np.asarray(out)
    d = rng.standard_normal(out.shape) if dout is None else np.asarray(dout, dtype=np.float64)
    d = d.astype(out.dtype)
    grads = backward(d if d.ndim else d[()], cache)
    if not isinstance(grads, tuple):
        grads = (grads,)
    if len(grads) != len(wrt):
        raise GradcheckError(f"backward returned {len(grads)} gradient(s), expected {len(wrt)} (one per wrt input)")
    results = []
    for g, i in zip(grads, wrt):
        x = inputs[i]
        g = np.asarray(g)
        if g.shape != x.shape:
            raise GradcheckError(f"{names[i]}: gradient has shape {g.shape}, expected {x.shape}")
        num = numerical_gradient(forward, inputs, i, d, h=h, kwargs=kwargs)
        errs = _elementwise_error(g.astype(np.float64), num)
        j = np.unravel_index(int(np.argmax(errs)), errs.shape) if errs.size else ()
        worst = float(errs[j]) if errs.size else 0.0
        res = GradcheckResult(names[i], worst, tuple(int(k) for k in j),
                              float(g[j]) if errs.size else 0.0, float(num[j]) if errs.size else 0.0)
        results.append(res)
        if raise_on_failure and not worst <= tol:
            raise GradcheckError(f"gradient check failed for {res}; tolerance {tol:g}")
    return results
