"""Cores and threads: how many cores, the batch split into slices, a thread pool, BLAS thread counts,
and a note when OPENBLAS_CORETYPE holds the BLAS below the CPU.

NumPy runs elementwise work (LayerNorm, GELU, softmax) on one core, so with BLAS using every core only the
matrix products scale.  The GPT therefore splits each batch into one slice per core (batch_slices), run in
worker processes (data_parallel.py), each with single-threaded BLAS (blas_threads, single_threaded_blas).
AdamW's few large elementwise passes split well over threads (run_parallel): they hand the GIL over a dozen
times a step, not hundreds.  See docs/performance.md.
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import importlib
import os
from concurrent.futures import ThreadPoolExecutor, wait
from functools import lru_cache
from typing import TypeVar
from collections.abc import Callable, Iterator, Mapping, Sequence

R = TypeVar("R")


def usable_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@lru_cache(maxsize=1)
def _openblas() -> ctypes.CDLL | None:
    """The OpenBLAS that NumPy has loaded (one with openblas_set_num_threads_local, OpenBLAS >= 0.3.27), or None
    (another BLAS, an older OpenBLAS, or no /proc to find it in)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line}
    except OSError:
        return None
    for path in sorted(paths, key=lambda p: "numpy" not in p):  # NumPy's own OpenBLAS first
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        if hasattr(lib, "openblas_set_num_threads_local"):
            return lib
    return None


@lru_cache(maxsize=1)
def _blas_set_threads_local() -> Callable[[int], int] | None:
    """OpenBLAS's per-thread thread-count setter from the BLAS NumPy has loaded, or None (see _openblas)."""
    lib = _openblas()
    if lib is None:
        return None
    fn = lib.openblas_set_num_threads_local
    fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
    return fn


# log2 of the CPU cycles an idle OpenBLAS thread spins before it sleeps: 2^20, about 0.4 ms (OpenBLAS's own
# default is 2^28, about 0.1 s on the hosts of docs/performance.md).
BLAS_SPIN_LOG2 = 20


@lru_cache(maxsize=1)
def short_blas_spin() -> bool:
    """Make NumPy's OpenBLAS threads sleep after about 0.4 ms without work, not 0.1 s; True if it did.

    After each threaded product OpenBLAS's helper threads spin, and for 0.1 s that takes a core from whatever
    runs next (AdamW's threads, after a whole-batch backward: docs/performance.md).  It sets
    OPENBLAS_THREAD_TIMEOUT, has OpenBLAS read its environment again, and stops the helpers, which the next
    threaded product starts anew.  Nothing is changed if the user set OPENBLAS_THREAD_TIMEOUT or the BLAS lacks
    these entry points."""
    lib = _openblas()
    names = ("openblas_read_env", "openblas_thread_timeout", "blas_thread_shutdown_")
    if "OPENBLAS_THREAD_TIMEOUT" in os.environ or lib is None or not all(hasattr(lib, n) for n in names):
        return False
    os.environ["OPENBLAS_THREAD_TIMEOUT"] = str(BLAS_SPIN_LOG2)  # the value OpenBLAS reads at its start-up
    lib.openblas_read_env()  # ... which this call repeats
    lib.openblas_thread_timeout.restype = ctypes.c_int
    if lib.openblas_thread_timeout() != BLAS_SPIN_LOG2:  # an OpenBLAS that reads it some other way
        del os.environ["OPENBLAS_THREAD_TIMEOUT"]
        lib.openblas_read_env()
        return False
    lib.blas_thread_shutdown_()  # the helpers took the old timeout when they started: the next product restarts them
    return True


# OPENBLAS_CORETYPE values whose kernels use AVX-512 (OpenBLAS's x86-64 core names); any other named core does not
AVX512_CORES = frozenset({"skylakex", "cooperlake", "sapphirerapids"})


def blas_kernel_note(env: Mapping[str, str] | None = None, cpu: Mapping[str, bool] | None = None) -> str | None:
    """One line for the user when OPENBLAS_CORETYPE pins NumPy's OpenBLAS to kernels without AVX-512 on a CPU
    that has it (the products then run at about half speed: docs/performance.md), else None."""
    env = os.environ if env is None else env
    core = env.get("OPENBLAS_CORETYPE")
    if not core or core.strip().lower() in AVX512_CORES:
        return None
    if cpu is None:
        try:  # NumPy's own detection of the CPU's features (a private module, so looked up with care)
            cpu = getattr(importlib.import_module("numpy._core._multiarray_umath"), "__cpu_features__", None)
        except ImportError:
            return None
        if not isinstance(cpu, Mapping):
            return None
    if not cpu.get("AVX512F", False):
        return None
    return (f"note: OPENBLAS_CORETYPE={core} pins NumPy's OpenBLAS to kernels without AVX-512, which this CPU has; "
            f"unset it to let OpenBLAS use them (products ran twice as fast on a Zen 5 host: docs/performance.md)")


def default_threads() -> int:
    """How many batch slices to run at once: one per core when NumPy's BLAS can be made single-threaded in
    each worker (otherwise workers and BLAS threads would fight over the cores), else 1."""
    return usable_cores() if _blas_set_threads_local() is not None else 1


@lru_cache(maxsize=4)
def worker_pool(n: int) -> ThreadPoolExecutor:
    """A pool of n threads (shared by all models and optimizers) whose BLAS calls use a single thread each,
    where NumPy's BLAS allows it."""
    set_local = _blas_set_threads_local()
    if set_local is None:
        return ThreadPoolExecutor(max_workers=n, thread_name_prefix="npgpt")
    return ThreadPoolExecutor(max_workers=n, thread_name_prefix="npgpt", initializer=set_local, initargs=(1,))


def batch_slices(B: int, n: int) -> list[slice]:
    """Split range(B) into min(n, B) contiguous slices whose sizes differ by at most one (B >= 1)."""
    n = max(1, min(n, B))
    bounds = [B * i // n for i in range(n + 1)]
    return [slice(bounds[i], bounds[i + 1]) for i in range(n)]


def run_parallel(calls: Sequence[Callable[[], R]]) -> list[R]:
    """Run calls[0] on this thread and the others on worker threads, all at once; their results, in order.

    The calling thread takes a share of the work (with single-threaded BLAS while it does) rather than
    sleeping until the workers finish: on a virtual machine every sleep and wake-up costs tens of microseconds.
    Workers run in copies of the caller's context, so np.errstate and the like carry over.
    """
    if len(calls) == 1:
        return [calls[0]()]
    futures = [worker_pool(len(calls) - 1).submit(contextvars.copy_context().run, call) for call in calls[1:]]
    set_local = _blas_set_threads_local()
    previous = set_local(1) if set_local is not None else 0
    try:
        first = calls[0]()
    except BaseException:
        wait(futures)  # never leave a worker running on arrays the caller is about to unwind
        raise
    finally:
        if set_local is not None:
            set_local(previous)
    return [first, *(future.result() for future in futures)]


@contextlib.contextmanager
def blas_threads(n: int) -> Iterator[None]:
    """This thread's BLAS calls use n threads inside the block (where NumPy's BLAS allows it); with n > 1 its idle
    helper threads soon sleep (short_blas_spin)."""
    if n > 1:
        short_blas_spin()
    set_local = _blas_set_threads_local()
    previous = set_local(n) if set_local is not None else 0
    try:
        yield
    finally:
        if set_local is not None:
            set_local(previous)


def single_threaded_blas() -> contextlib.AbstractContextManager[None]:
    """This thread's BLAS calls use one thread inside the block: the caller is one core of a split batch."""
    return blas_threads(1)
