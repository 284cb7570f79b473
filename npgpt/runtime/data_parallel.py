"""Data parallelism: each batch slice's forward and backward in its own process, gradients summed.

The batch's mean loss is sum_i share_i * (slice i's mean loss), share_i = n_i / n, n_i the targets slice i's
loss counts (all of them for a GPT; those not ignored, -100, for a Llama) and n their sum.  So slice i runs
the functional core's forward on its rows, its backward starts from dloss = share_i, and the slices' gradients
add.  Slice 0 runs in the calling process and slices 1.. in worker processes (slice_worker.py) that read the
parameters from the model's shared buffer and write their gradients into shared buffers of their own; the
sum is in slice order (slice 0 + slice 1 + ...), so the bits are the same on every run.  Each model owns one
SliceGroup, made with its family's Core (core.py): nothing here knows which family it runs.  See docs/model.md.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import threading
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from .layout import FlatTensors, ParamLayout
from .parallel import batch_slices, blas_threads, single_threaded_blas
from . import memory
from .core import Core
from .slice_worker import SliceWorker, _unlink, open_shared, shared_array

Array = npt.NDArray[np.floating]

_pool: list[SliceWorker] = []  # worker processes, shared by every model; started on first use
_pool_lock = threading.Lock()
_keys = itertools.count(1)


def _workers(n: int, reuse_memory: bool) -> list[SliceWorker]:
    """n live workers from the shared pool (dead ones are replaced; each model attaches itself to them)."""
    with _pool_lock:
        _pool[:] = [w for w in _pool if w.alive()]
        while len(_pool) < n:
            _pool.append(SliceWorker(reuse_memory))
        return _pool[:n]


@atexit.register
def _close_pool() -> None:
    for w in _pool:
        w.close()
    _pool.clear()


@contextlib.contextmanager
def _exchange(workers: list[SliceWorker]) -> Iterator[None]:
    """Mark the workers busy for one forward or backward exchange (sends, the parent's slice, recvs)."""
    for w in workers:
        w.busy = True
    try:
        yield
    finally:
        for w in workers:
            w.busy = False


def _call(w: SliceWorker, *msg: object) -> object:
    """One command to w and its reply, with w marked busy in between."""
    with _exchange([w]):
        w.send(*msg)
        return w.recv()


def slice_shares(targets: npt.NDArray[np.integer] | None, slices: Sequence[slice],
                 ignore_index: int | None) -> list[float]:
    """share_i = d(batch's mean loss) / d(slice i's mean loss) = n_i / n: the fraction of the batch's counted
    targets (those that are not ignore_index) in slice i.  Without targets or ignore_index: of the rows."""
    if targets is None or ignore_index is None:
        counts = [s.stop - s.start for s in slices]
    else:
        counts = [int(np.count_nonzero(targets[s] != ignore_index)) for s in slices]
    total = max(sum(counts), 1)  # every target ignored: each slice's loss is 0, and so is every share
    return [c / total for c in counts]


class SliceGroup:
    """The worker side of one model: its shared parameter buffer, one shared gradient buffer per worker, and the
    protocol of a data-parallel forward and backward.  The model owns one when it splits batches (threads > 1)."""

    def __init__(self, core: Core, config: Any, layout: ParamLayout, dtype: np.dtype) -> None:
        self.core, self.config, self.layout, self.dtype = core, config, layout, np.dtype(dtype)
        self.key = next(_keys)
        buffer, path = shared_array(layout.size, dtype)  # (P,) the model's params live here
        self._fd = os.open(path, os.O_RDWR)  # held open: workers started later can still map it ...
        proc_path = f"/proc/{os.getpid()}/fd/{self._fd}"
        if os.path.exists(proc_path):  # ... by this name (Linux), so the file itself can go right away
            _unlink(path)
            path = proc_path
        self._params_path = path
        self.params: FlatTensors = layout.views(buffer)
        self.grads: dict[int, FlatTensors] = {}  # worker PID -> that worker's gradient buffer
        self.logits: dict[int, np.ndarray] = {}  # worker PID -> its shared logits arena

    def _attached(self, n: int) -> list[SliceWorker]:
        workers = _workers(n, memory.applied())  # workers keep freed memory too when this process does
        for w in workers:  # detaches deferred by close() (see there) go out now, between exchanges
            while w.detach_later:
                _call(w, "detach", w.detach_later.pop())
        live = {w.proc.pid for w in workers}
        for pid in set(self.grads) - live:  # a worker that died: drop its buffers' mappings
            self.grads.pop(pid, None)
            self.logits.pop(pid, None)
        for w in workers:
            if self.key not in w.attached:
                grads, path = shared_array(self.layout.size, self.dtype)  # (P,)
                try:
                    _call(w, "attach", self.key, self.core, self.config, self.layout, self.dtype, self._params_path,
                          path)
                finally:
                    _unlink(path)
                self.grads[w.proc.pid] = self.layout.views(grads)
                w.attached.add(self.key)
        return workers

    def forward(self, idx: npt.NDArray[np.integer], targets: npt.NDArray[np.integer] | None,
                slices: Sequence[slice], *, train: bool,
                rng: np.random.Generator) -> tuple[Array, Array | None, Any, list[float]]:
        """The core's forward of every slice at once (inputs already checked): the logits (B, T, V), the batch's
        mean loss (None without targets), slice 0's cache (the workers keep theirs) and the slices' shares of
        the loss (slice_shares), which backward() takes."""
        workers = self._attached(len(slices) - 1)
        with _exchange(workers):
            return self._forward(workers, idx, targets, slices, train, rng)

    def _forward(self, workers: list[SliceWorker], idx: npt.NDArray[np.integer],
                 targets: npt.NDArray[np.integer] | None, slices: Sequence[slice], train: bool,
                 rng: np.random.Generator) -> tuple[Array, Array | None, Any, list[float]]:
        seeds = rng.integers(2**63, size=len(slices)) if train and getattr(self.config, "dropout", 0.0) > 0 \
            else None  # one dropout seed per slice (a config without dropout draws none)
        err = np.geterr()
        for i, (w, s) in enumerate(zip(workers, slices[1:]), start=1):
            w.send("forward", self.key, idx[s], None if targets is None else targets[s], train,
                   None if seeds is None else int(seeds[i]), err)
        with single_threaded_blas():  # this process is one of the cores, like each worker
            logits0, loss0, cache = self.core.forward(self.params, self.config, idx[slices[0]],
                                                      None if targets is None else targets[slices[0]], train,
                                                      None if seeds is None else np.random.default_rng(int(seeds[0])))
        parts, losses = [logits0], [loss0]
        for w in workers:
            _, loss, shape, new_path = w.recv()
            if new_path is not None:  # the worker grew its logits arena
                try:
                    self.logits[w.proc.pid] = open_shared(new_path, int(np.prod(shape)), self.dtype)
                finally:
                    _unlink(new_path)
            parts.append(self.logits[w.proc.pid][:int(np.prod(shape))].reshape(shape))  # a view of the arena
            losses.append(loss)
        logits = np.concatenate(parts)  # (B, T, V) a copy: the arenas are reused by the next forward
        shares = slice_shares(targets, slices, self.core.ignore_index)  # d(mean loss) / d(slice's mean loss)
        if targets is None:
            return logits, None, cache, shares
        total = sum(share * float(loss) for loss, share in zip(losses, shares) if loss is not None)
        return logits, np.asarray(total, dtype=logits.dtype), cache, shares

    def backward(self, cache: Any, shares: Sequence[float], out: FlatTensors) -> None:
        """Every slice's backward at once, slice i's from dloss = shares[i]; their gradients summed in slice order
        into out (the model's grads)."""
        if cache.ce is None:
            raise ValueError("cache: the forward was run without targets, so there is no loss to differentiate")
        workers = self._attached(len(shares) - 1)
        with _exchange(workers):
            self._backward(workers, cache, shares, out)

    def _backward(self, workers: list[SliceWorker], cache: Any, shares: Sequence[float], out: FlatTensors) -> None:
        err = np.geterr()
        for w, share in zip(workers, shares[1:]):
            w.send("backward", self.key, share, err)
        with single_threaded_blas():
            self.core.write_grads(out, cache, shares[0])  # slice 0's, each as it is known
        for w in workers:  # slice order: the same bits every run
            w.recv()
            out.buffer += self.grads[w.proc.pid].buffer  # (P,) one pass over the whole model

    def close(self) -> None:
        """Detach from the workers (they drop their views of this model's buffers)."""
        if not self._params_path.startswith("/proc/"):
            _unlink(self._params_path)
        try:
            os.close(self._fd)
        except OSError:
            pass
        for w in list(_pool):
            if self.key in w.attached and w.alive():
                if w.busy:  # the GC ran our finalizer inside another model's exchange with w: talking to w
                    w.detach_later.append(self.key)  # now would read that model's reply, so detach later
                    w.attached.discard(self.key)
                    continue
                try:
                    _call(w, "detach", self.key)
                except RuntimeError:
                    pass
                w.attached.discard(self.key)


def model_forward(core: Core, group: SliceGroup | None, threads: int, params: FlatTensors, config: Any,
                  idx: npt.NDArray[np.integer], targets: npt.NDArray[np.integer] | None, *, train: bool,
                  rng: np.random.Generator) -> tuple[Array, Array | None, Any, list[float]]:
    """A model's forward through its family's core (inputs already checked): the batch whole in this process, with
    `threads` BLAS threads, when there is no group or the batch is one row; else one slice per thread through
    the group.  logits (B, T, V), the mean loss (None without targets), slice 0's cache and the slices' shares."""
    slices = batch_slices(idx.shape[0], threads if group is not None else 1)
    if len(slices) > 1:
        assert group is not None
        return group.forward(idx, targets, slices, train=train, rng=rng)
    with blas_threads(threads) if threads > 1 else contextlib.nullcontext():  # threads=1: BLAS as NumPy set it
        logits, loss, cache = core.forward(params, config, idx, targets, train, rng)
    return logits, loss, cache, [1.0]


def model_backward(core: Core, group: SliceGroup | None, threads: int, cache: Any, shares: Sequence[float],
                   out: FlatTensors) -> None:
    """model_forward's backward: every gradient of the batch's mean loss into out (the model's grads)."""
    if len(shares) > 1:
        assert group is not None
        group.backward(cache, shares, out)
        return
    with blas_threads(threads) if threads > 1 else contextlib.nullcontext():
        core.write_grads(out, cache, 1.0)  # each gradient into out as it is known
