"""Data parallelism for the GPT: each batch slice's forward and backward on its own thread, gradients summed.

The batch's mean loss is sum_i share_i * (slice i's mean loss), share_i = B_i / B.  So slice i runs the
functional core's forward on its rows, its backward starts from dloss = share_i, and the slices' gradients
add.  The sum is ordered (slice 0 + slice 1 + ...), so the bits are those of every other run; it is also
streamed: gpt_grads hands over each tensor's gradient as soon as it is known, and the last slice to deliver
a tensor adds all of them while the others carry on.  Threads and pool: parallel.py.  See docs/model.md.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt

from .config import GPTConfig
from .gpt import GPTCache, _gpt_forward, gpt_grads
from .parallel import run_parallel

Array = npt.NDArray[np.floating]


def forward_slices(params: Mapping[str, Array], config: GPTConfig, idx: npt.NDArray[np.integer],
                   targets: npt.NDArray[np.integer] | None, slices: Sequence[slice], *, train: bool,
                   rng: np.random.Generator) -> tuple[Array, Array | None, list[tuple[GPTCache, float]]]:
    """The core's forward of each slice of the batch at once (inputs already checked).  Returns the logits
    (B, T, V), the batch's mean loss (None without targets) and each slice's (cache, share of the batch).

    Each slice draws its dropout from its own Generator, seeded from rng: deterministic despite the threads.
    """
    B = idx.shape[0]
    seeds = rng.integers(2**63, size=len(slices)) if train and config.dropout > 0 else None
    results = run_parallel([functools.partial(
        _gpt_forward, params, config, idx[s], None if targets is None else targets[s],
        train=train, rng=None if seeds is None else np.random.default_rng(int(seeds[i])))
        for i, s in enumerate(slices)])
    shares = [(s.stop - s.start) / B for s in slices]  # d(mean loss) / d(slice's mean loss)
    caches = [(cache, share) for (_, _, cache), share in zip(results, shares)]
    logits = np.concatenate([r[0] for r in results])  # (B, T, V)
    if targets is None:
        return logits, None, caches
    total = sum(share * float(loss) for (_, loss, _), share in zip(results, shares) if loss is not None)
    return logits, np.asarray(total, dtype=logits.dtype), caches


def backward_slices(caches: Sequence[tuple[GPTCache, float]], out: Mapping[str, Array]) -> None:
    """Every slice's backward at once, their gradients summed in slice order into out[name] (arrays keyed
    like params, e.g. GPT.grads)."""
    n = len(caches)
    arrived: dict[str, list[Array | None]] = {}  # per tensor, the slices' gradients that are in so far
    lock = threading.Lock()

    def run_slice(i: int) -> None:
        cache, share = caches[i]
        for name, grad in gpt_grads(cache, share):
            with lock:  # held for bookkeeping only, never for arithmetic, so slices rarely wait on it
                got = arrived.setdefault(name, [None] * n)
                got[i] = grad
                if any(g is None for g in got):
                    continue  # a later slice will sum this tensor
                del arrived[name]
            # the last slice to arrive sums them all, always in slice order: the same bits on every run
            grads = [g for g in got if g is not None]  # all n of them, by the check above
            np.add(grads[0], grads[1], out=out[name])
            for g in grads[2:]:
                out[name] += g

    run_parallel([functools.partial(run_slice, i) for i in range(n)])
