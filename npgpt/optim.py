"""AdamW (decoupled weight decay), global-norm gradient clipping and a warmup + cosine learning rate.

AdamW step t, for every parameter p with gradient g:
    m = b1 m + (1 - b1) g;   v = b2 v + (1 - b2) g^2;   m_hat = m / (1 - b1^t);   v_hat = v / (1 - b2^t)
    p = p - lr * wd * p   (2-D weight matrices only)
    p = p - lr * m_hat / (sqrt(v_hat) + eps)
Derivation and conventions: docs/optim.md
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from ._checks import integer
from .runtime.layout import FlatTensors, ParamLayout
from .runtime.parallel import batch_slices, run_parallel, usable_cores

Array = npt.NDArray[np.floating]
BLOCK = 1 << 17  # elements per sub-block of the flat path: its five arrays (p, g, m, v, scratch) stay in cache
WHOLE = 1 << 20  # a thread's chunk up to this size runs as one block: it is cached anyway, so sub-blocks only cost
PIECE = 1 << 20  # elements per piece of clip_grad_norm's sum of squares: one dot product each, added exactly


class AdamW:
    """Hand-written AdamW over a dict of parameter arrays, updated in place.

    Two paths, chosen by what params is, never by inspecting memory:
    - a FlatTensors (GPT's params: views into one buffer with a ParamLayout): the moments get the same layout
      and each step cuts the buffers into one chunk per `threads` worker thread (default: one per core from
      65,536 parameters on), which runs all the update's passes on one cache-sized sub-block at a time.
      step() then requires grads in that same layout (GPT's grads are) and raises otherwise; decay applies to
      the layout's `decayed` tensors.
    - any other mapping: one tensor at a time; decay applies to the 2-D arrays.
    Both run the same update function, so they round identically.  lr may be changed between steps.
    """

    def __init__(self, params: Mapping[str, Array], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.95),
                 eps: float = 1e-8, weight_decay: float = 0.1, threads: int | None = None) -> None:
        if not params:
            raise ValueError("params: expected at least one parameter array")
        for k, p in params.items():
            if not isinstance(p, np.ndarray) or p.dtype not in (np.float32, np.float64):
                raise ValueError(f"params[{k!r}]: expected a float32 or float64 array")
        if len(betas) != 2:
            raise ValueError(f"betas: expected two numbers (beta1, beta2), got {betas!r}")
        b1, b2 = betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"betas: expected two numbers in [0, 1), got {betas}")
        if not lr >= 0.0 or not eps > 0.0 or not weight_decay >= 0.0:
            raise ValueError(f"lr, eps, weight_decay: expected lr >= 0, eps > 0, weight_decay >= 0, "
                             f"got {lr}, {eps}, {weight_decay}")
        self.params = params if isinstance(params, FlatTensors) else dict(params)
        self.lr, self.betas, self.eps, self.weight_decay = float(lr), (float(b1), float(b2)), float(eps), \
            float(weight_decay)
        self.t = 0  # steps taken
        total = sum(p.size for p in self.params.values())
        # the update is elementwise, so splitting it over threads cannot change a single bit of the result
        self.threads = integer("threads", threads if threads is not None else
                               (usable_cores() if total >= 1 << 16 else 1), minimum=1)
        self.m: Mapping[str, Array]
        self.v: Mapping[str, Array]
        if isinstance(self.params, FlatTensors):
            self.layout: ParamLayout | None = self.params.layout
            dtype = self.params.buffer.dtype
            self.m, self.v = self.layout.zeros(dtype), self.layout.zeros(dtype)  # moments: same layout
            self._decay = self.layout.decay_runs()
        else:
            self.layout = None
            self.m = {k: np.zeros_like(p) for k, p in self.params.items()}
            self.v = {k: np.zeros_like(p) for k, p in self.params.items()}

    def step(self, grads: Mapping[str, Array]) -> None:
        """One AdamW update of every parameter in place, from grads keyed like params."""
        if set(grads) != set(self.params):
            missing, extra = set(self.params) - set(grads), set(grads) - set(self.params)
            raise ValueError(f"grads: keys differ from params (missing {sorted(missing)}, extra {sorted(extra)})")
        for k, g in grads.items():
            if g.shape != self.params[k].shape:
                raise ValueError(f"grads[{k!r}]: expected shape {self.params[k].shape}, got {g.shape}")
        if self.layout is not None and not (isinstance(grads, FlatTensors) and grads.layout == self.layout
                                            and grads.buffer.dtype == self.params[next(iter(grads))].dtype):
            raise ValueError("grads: expected a FlatTensors in the params' layout and dtype (as GPT.grads and "
                             "layout.zeros(dtype) give); AdamW over separate arrays takes dict(params)")
        self.t += 1
        b1, b2 = self.betas
        lr, wd, eps = self.lr, self.weight_decay, self.eps
        bc1 = 1.0 - b1 ** self.t  # bias corrections: m and v start at 0, so early averages are too small
        bc2 = 1.0 - b2 ** self.t
        coef = _Coefficients(b1, b2, 1.0 / math.sqrt(bc2), eps, 1.0 - lr * wd, lr / bc1)
        if isinstance(self.params, FlatTensors):
            assert isinstance(grads, FlatTensors) and isinstance(self.m, FlatTensors) \
                and isinstance(self.v, FlatTensors)  # checked above and in __init__
            # the whole model as one array, cut into one chunk per thread
            p, g, m, v = self.params.buffer, grads.buffer, self.m.buffer, self.v.buffer
            chunks = batch_slices(p.size, self.threads)
            jobs = [(p[c], g[c], m[c], v[c], _clip_runs(self._decay, c), coef,
                     BLOCK if c.stop - c.start > WHOLE else c.stop - c.start) for c in chunks]
            run_parallel([functools.partial(_adamw_blocked, *args) for args in jobs])
            return
        for k, p in self.params.items():  # one tensor at a time, the same update
            decay = [slice(None)] if p.ndim == 2 else []
            _adamw_update(p, grads[k], self.m[k], self.v[k], np.empty_like(p), decay, coef)

    def state_dict(self) -> dict[str, Any]:
        """Copies of everything the optimizer holds: hyperparameters, step count, m and v per parameter."""
        return {"lr": self.lr, "betas": self.betas, "eps": self.eps, "weight_decay": self.weight_decay,
                "t": self.t, "m": {k: a.copy() for k, a in self.m.items()},
                "v": {k: a.copy() for k, a in self.v.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from state_dict(); shapes and keys must match this optimizer's params."""
        missing = [k for k in ("lr", "betas", "eps", "weight_decay", "t", "m", "v") if k not in state]
        if missing:
            raise ValueError(f"state: missing entries {missing}")
        for name in ("m", "v"):
            d = state[name]
            if set(d) != set(self.params):
                raise ValueError(f"state['{name}']: keys differ from this optimizer's params")
            for k, a in d.items():
                if np.shape(a) != self.params[k].shape:
                    raise ValueError(f"state['{name}'][{k!r}]: expected shape {self.params[k].shape}, "
                                     f"got {np.shape(a)}")
        for name in ("m", "v"):
            for k, a in state[name].items():
                getattr(self, name)[k][...] = a
        self.lr, self.eps, self.weight_decay = float(state["lr"]), float(state["eps"]), float(state["weight_decay"])
        self.betas = (float(state["betas"][0]), float(state["betas"][1]))
        self.t = int(state["t"])


class _Coefficients(NamedTuple):
    b1: float
    b2: float
    inv_sqrt_bc2: float  # 1 / sqrt(1 - b2^t): turns sqrt(v) into sqrt(v_hat)
    eps: float
    decay: float  # 1 - lr * weight_decay
    step_size: float  # lr / (1 - b1^t): lr times m's bias correction


def _adamw_update(p: Array, g: Array, m: Array, v: Array, s: Array, decay_runs: list[slice],
                  c: _Coefficients) -> None:
    """The AdamW update of one array (or one chunk of the flat buffer) in place; s is scratch space.
    Every path calls this, so every path rounds identically."""
    m *= c.b1
    np.multiply(g, 1.0 - c.b1, out=s)
    m += s  # m = b1 m + (1 - b1) g
    v *= c.b2
    np.multiply(g, g, out=s)
    s *= 1.0 - c.b2
    v += s  # v = b2 v + (1 - b2) g^2
    np.sqrt(v, out=s)
    s *= c.inv_sqrt_bc2
    s += c.eps  # sqrt(v_hat) + eps
    np.divide(m, s, out=s)
    for run in decay_runs:
        p[run] *= c.decay  # decoupled weight decay, 2-D matrices only
    s *= c.step_size  # lr * m_hat / (sqrt(v_hat) + eps)
    p -= s


def _adamw_blocked(p: Array, g: Array, m: Array, v: Array, decay_runs: list[slice], c: _Coefficients,
                   block: int) -> None:
    """_adamw_update over 1-D p, g, m, v (one thread's chunk of the flat buffers) in sub-blocks of `block`
    elements: all the passes run on one sub-block while it is in cache, then the next; the scratch is one block."""
    s = np.empty(min(block, p.size), dtype=p.dtype)  # (block,) this thread's scratch
    first = 0  # the first decay run that has not ended before this sub-block
    for lo in range(0, p.size, block):
        sub = slice(lo, min(lo + block, p.size))
        while first < len(decay_runs) and decay_runs[first].stop <= lo:
            first += 1
        runs = _clip_runs(decay_runs[first:], sub)
        _adamw_update(p[sub], g[sub], m[sub], v[sub], s[:sub.stop - lo], runs, c)


def _clip_runs(runs: list[slice], chunk: slice) -> list[slice]:
    """The parts of the flat-buffer slices `runs` (sorted, disjoint: as decay_runs() gives them) inside
    `chunk`, relative to the chunk's start."""
    out = []
    for r in runs:
        if r.start >= chunk.stop:
            break  # this run and every later one start after the chunk
        lo, hi = max(r.start, chunk.start), min(r.stop, chunk.stop)
        if lo < hi:
            out.append(slice(lo - chunk.start, hi - chunk.start))
    return out


def clip_grad_norm(grads: Mapping[str, Array], max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most max_norm; return the norm before.

    norm = sqrt(sum over every tensor of sum(g^2)).  No change when norm <= max_norm.
    """
    if not max_norm > 0.0:
        raise ValueError(f"max_norm: expected a positive number, got {max_norm}")
    arrays = [grads.buffer] if isinstance(grads, FlatTensors) else list(grads.values())  # one pass, or a loop
    total = math.sqrt(math.fsum(x for a in arrays for x in _piece_squares(a.reshape(-1))))
    if total > max_norm:
        scale = max_norm / (total + 1e-6)
        for a in arrays:
            a *= scale
    return total


def _piece_squares(a: Array) -> list[float]:
    """sum(a^2) of each PIECE-element piece of the 1-D a: one dot product each, in a's dtype.

    clip_grad_norm adds the pieces exactly (math.fsum).  One float32 dot over a whole model's 124M gradients
    puts the norm off by about 2e-3 relative (measured: its partial sums stay float32, so the error grows with
    the length); in pieces of 2^20 it stays near 1e-6 at any size, as fast.  Up to 2^20: one dot, as before."""
    return [float(np.dot(a[lo:lo + PIECE], a[lo:lo + PIECE])) for lo in range(0, a.size, PIECE)]


def cosine_lr(it: int, max_lr: float, min_lr: float, warmup_iters: int, decay_iters: int) -> float:
    """Learning rate at iteration it (0-based): linear warmup from max_lr/warmup_iters to max_lr over
    warmup_iters steps, then cosine decay to min_lr at decay_iters, then min_lr."""
    if it < warmup_iters:
        return max_lr * (it + 1) / warmup_iters
    if it >= decay_iters:
        return min_lr
    ratio = (it - warmup_iters) / max(1, decay_iters - warmup_iters)  # 0 -> 1
    coeff = 0.5 * (1.0 + math.cos(math.pi * ratio))  # 1 -> 0
    return min_lr + coeff * (max_lr - min_lr)
