"""Worker processes for data parallelism: each runs a family's functional core (a runtime.core.Core, sent by
reference when a model attaches) on its slice of the batch.

Threads would share one interpreter, and every NumPy call hands its GIL back and forth: on a VM each hand-off
can cost tens of microseconds, and far more when any other process wants the core (docs/performance.md).
A worker process has its own interpreter, so the slices never wait for each other until their results meet.
Arrays go through shared files mapped by both sides (/dev/shm where there is one), never through the pipe:
the model's parameters live in a shared buffer, the worker writes its gradients into its own shared buffer
and its logits into a shared arena.  Messages are small pickles over the worker's stdin/stdout, between two
processes of this package only.  Started with `python -c`, so a user's script is never imported again (unlike
multiprocessing's spawn).
"""

from __future__ import annotations

import mmap
import os
import pickle
import select
import subprocess
import sys
import tempfile
import time
from typing import IO, Any

import numpy as np
import numpy.typing as npt

from .memory import reuse_freed_memory

_SHM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
# How long a side that waits for the other polls before it sleeps.  A process that sleeps is woken through
# the scheduler, and if any other process has taken its core meanwhile (even a `nice 19` one) the wake-up can
# wait for that process's time slice: milliseconds, at every one of the step's four meeting points.
# OpenMP runtimes (PyTorch's) spin for the same reason.  See docs/performance.md.
SPIN_SECONDS = 0.05


def _spin_until_readable(fd: int, seconds: float = SPIN_SECONDS) -> None:
    """Poll fd until it has data or `seconds` have passed (then the caller's blocking read sleeps)."""
    if os.name != "posix":  # select() takes no pipes on Windows: just block
        return
    deadline = time.perf_counter() + seconds
    while not select.select([fd], [], [], 0)[0] and time.perf_counter() < deadline:
        pass


def shared_array(size: int, dtype: npt.DTypeLike) -> tuple[np.ndarray, str]:
    """A new zeroed 1-D array of `size` elements in a shared file, and the file's path (the caller unlinks it
    once every process has mapped it; the mapping outlives the name)."""
    dtype = np.dtype(dtype)
    fd, path = tempfile.mkstemp(prefix="npgpt-", dir=_SHM_DIR)
    try:
        nbytes = max(1, size * dtype.itemsize)
        os.ftruncate(fd, nbytes)
        buf = mmap.mmap(fd, nbytes)
    finally:
        os.close(fd)
    return np.frombuffer(buf, dtype=dtype, count=size), path


def open_shared(path: str, size: int, dtype: npt.DTypeLike) -> np.ndarray:
    """Map a file made by shared_array (size elements of dtype)."""
    dtype = np.dtype(dtype)
    with open(path, "r+b") as f:
        buf = mmap.mmap(f.fileno(), max(1, size * dtype.itemsize))
    return np.frombuffer(buf, dtype=dtype, count=size)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def _send(f: IO[bytes], msg: object) -> None:
    pickle.dump(msg, f, protocol=pickle.HIGHEST_PROTOCOL)
    f.flush()


class SliceWorker:
    """One worker process, seen from the parent: send a command, read its reply.

    The worker's BLAS is single-threaded (OPENBLAS/OMP/MKL_NUM_THREADS=1): it owns one core, as the parent's
    own slice owns the other."""

    def __init__(self, reuse_memory: bool) -> None:
        env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # npgpt/runtime/ -> the
        # directory that holds the npgpt package, even uninstalled
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        code = f"from npgpt.runtime.slice_worker import _serve; _serve({bool(reuse_memory)})"
        self.proc = subprocess.Popen([sys.executable, "-c", code],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.pending = 0  # replies not yet read (a KeyboardInterrupt can leave one behind)
        self.attached: set[int] = set()  # the models (keys) whose buffers this worker has mapped
        self.busy = False  # inside a model's forward or backward exchange (between its send and its recv)
        self.detach_later: list[int] = []  # models collected during an exchange: detached before the next one

    def send(self, *msg: Any) -> None:
        assert self.proc.stdin is not None
        while self.pending:  # a reply left over from an interrupted call belongs to nobody now
            self.recv()
        try:
            _send(self.proc.stdin, msg)
        except (BrokenPipeError, OSError):
            raise RuntimeError(self._died()) from None
        self.pending += 1

    def recv(self) -> Any:
        assert self.proc.stdout is not None
        _spin_until_readable(self.proc.stdout.fileno())
        try:
            reply = pickle.load(self.proc.stdout)
        except (EOFError, pickle.UnpicklingError, OSError):
            raise RuntimeError(self._died()) from None
        self.pending -= 1
        if isinstance(reply, tuple) and reply and reply[0] == "error":
            raise RuntimeError(f"data-parallel worker (PID {self.proc.pid}): {reply[1]}")
        return reply

    def _died(self) -> str:
        self.pending = 0
        code = self.proc.poll()
        return (f"data-parallel worker (PID {self.proc.pid}) exited unexpectedly"
                + (f" (exit code {code})" if code is not None else "") + "; use threads=1 to run without workers")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # EOF: the worker's loop ends
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()


def _serve(reuse_memory: bool) -> None:
    """The worker's loop: attach / forward / backward / detach, each answered with one reply."""
    import signal
    import warnings

    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, and `timeout` or a scheduler signalling the whole
        signal.signal(sig, signal.SIG_IGN)  # process group, are the parent's to handle: it closes our stdin
    warnings.simplefilter("ignore", RuntimeWarning)  # the parent checks the loss (NaN, overflow) itself
    if reuse_memory:
        reuse_freed_memory()
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # anything printed by accident must not corrupt the protocol
    models: dict[int, dict[str, Any]] = {}
    spin = 0.0
    while True:
        _spin_until_readable(inp.fileno(), spin)
        try:
            msg = pickle.load(inp)
        except EOFError:
            return
        try:
            reply = _handle(msg, models)
        except Exception as e:  # noqa: BLE001 - reported to the parent, which raises it
            reply = ("error", f"{type(e).__name__}: {e}")
        # after a forward the backward follows at once, so wait for it awake; after anything else (the
        # backward: the optimizer step and the next batch come first) sleep, and leave the core to the parent
        spin = SPIN_SECONDS if msg[0] == "forward" else 0.0
        _send(out, reply)


def _handle(msg: tuple, models: dict[int, dict[str, Any]]) -> tuple:
    kind, key = msg[0], msg[1]
    if kind == "attach":  # (attach, key, core, config, layout, dtype, params_path, grads_path)
        _, _, core, config, layout, dtype, params_path, grads_path = msg
        models[key] = {"config": config, "core": core,
                       "params": layout.views(open_shared(params_path, layout.size, dtype)),
                       "grads": layout.views(open_shared(grads_path, layout.size, dtype)), "cache": None,
                       "logits": None}
        return ("ok",)
    if kind == "detach":
        models.pop(key, None)
        return ("ok",)
    m = models[key]
    if kind == "forward":  # (forward, key, idx, targets, train, seed, errstate)
        _, _, idx, targets, train, seed, err = msg
        m["cache"] = None  # free the last step's activations first
        rng = None if seed is None else np.random.default_rng(seed)
        with np.errstate(**err):
            logits, loss, m["cache"] = m["core"].forward(m["params"], m["config"], idx, targets, train, rng)
        new_path = None
        arena = m["logits"]
        if arena is None or arena.size < logits.size:  # grow the shared logits arena
            arena, new_path = shared_array(logits.size, logits.dtype)
            m["logits"] = arena
        arena[:logits.size] = logits.reshape(-1)
        return ("forward", None if loss is None else float(loss), logits.shape, new_path)
    if kind == "backward":  # (backward, key, dloss, errstate)
        _, _, dloss, err = msg
        cache, m["cache"] = m["cache"], None
        with np.errstate(**err):
            m["core"].write_grads(m["grads"], cache, dloss)
        return ("ok",)
    raise ValueError(f"unknown command {kind!r}")
