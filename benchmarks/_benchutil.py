"""Shared helpers for the benchmark scripts: thread limits, memory readings, machine description.

Nothing here imports numpy or torch at module level: set_thread_env must run before either is imported.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import platform
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
               "NUMEXPR_NUM_THREADS")


def use_repo_npgpt() -> None:
    """Put the repository root first on sys.path so the working tree's npgpt is what gets measured."""
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)


def set_thread_env(n: int, env: dict | None = None) -> dict:
    """Limit every BLAS / OpenMP pool to n threads (in `env`, default os.environ).  Must precede the import
    of numpy or torch in the process that reads it."""
    env = os.environ if env is None else env
    for k in THREAD_VARS:
        env[k] = str(n)
    return env


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


# ---------------------------------------------------------------- memory (Linux /proc)

def proc_status_kb(field: str, pid: int | str = "self") -> int | None:
    """A field of /proc/PID/status in kB (VmRSS: resident now, VmHWM: resident high-water mark)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def rss_mib() -> float:
    kb = proc_status_kb("VmRSS")
    if kb is None:  # not Linux: no current RSS, fall back to the high-water mark
        import resource
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0


def reset_peak_rss(pid: int | str = "self") -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/PID/clear_refs).  False if impossible,
    in which case the peak read later is the process-lifetime peak."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mib(pid: int | str = "self") -> float:
    kb = proc_status_kb("VmHWM", pid)
    if kb is None:
        import resource
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024.0


# ---------------------------------------------------------------- machine description

def cpu_model() -> str:
    name, extra = None, []
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        for line in info.splitlines():
            if line.startswith("model name") and name is None:
                name = line.split(":", 1)[1].strip()
            if line.startswith(("cpu family", "model\t", "cpu MHz")) and len(extra) < 3:
                extra.append(line.split(":", 1)[0].strip() + " " + line.split(":", 1)[1].strip())
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                simd = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16") if f in flags]
                extra.append("flags " + ",".join(simd))
                break
    except OSError:
        pass
    name = name or platform.processor() or "unknown"
    return f"{name} ({'; '.join(extra)})" if extra else name


def core_counts() -> str:
    logical = os.cpu_count()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = logical
    return f"{logical} logical CPUs, {usable} usable by this process"


def openblas_runtime() -> str:
    """The OpenBLAS kernel set chosen at run time and its thread count, read from the library numpy loaded
    (via threadpoolctl if installed, else ctypes on the mapped library).  Call after importing numpy."""
    try:
        import threadpoolctl  # type: ignore

        parts = [f"{d.get('internal_api')} {d.get('version')} core={d.get('architecture')} "
                 f"threads={d.get('num_threads')}" for d in threadpoolctl.threadpool_info()]
        return "; ".join(parts) + " (threadpoolctl)"
    except ImportError:
        pass
    libs = set()
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                path = line.split()[-1]
                name = os.path.basename(path).lower()
                if "openblas" in name and ".so" in name:
                    libs.add(path)
    except OSError:
        return "unknown (no /proc/self/maps)"
    out = []
    for path in sorted(libs):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        core = threads = None
        for sym in ("openblas_get_corename", "scipy_openblas_get_corename64_", "scipy_openblas_get_corename",
                    "openblas_get_corename64_"):
            if hasattr(lib, sym):
                fn = getattr(lib, sym)
                fn.restype = ctypes.c_char_p
                core = fn().decode()
                break
        for sym in ("openblas_get_num_threads", "scipy_openblas_get_num_threads64_",
                    "scipy_openblas_get_num_threads", "openblas_get_num_threads64_"):
            if hasattr(lib, sym):
                fn = getattr(lib, sym)
                fn.restype = ctypes.c_int
                threads = fn()
                break
        owner = os.path.basename(os.path.dirname(path))  # e.g. numpy.libs, scipy.libs
        out.append(f"{os.path.basename(path)} ({owner}): core={core} threads={threads}")
    return "; ".join(out) if out else "no OpenBLAS library mapped"


def numpy_info() -> list[str]:
    import numpy as np

    lines = [f"numpy {np.__version__}"]
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        lines.append(f"numpy BLAS: {blas.get('name')} {blas.get('version')} "
                     f"[{blas.get('openblas configuration', '').strip()}]")
        simd = cfg.get("SIMD Extensions", {})
        lines.append(f"numpy SIMD: baseline {','.join(simd.get('baseline', []))}; "
                     f"found {','.join(simd.get('found', []))}")
    except Exception as e:  # older numpy: no mode="dicts"
        lines.append(f"numpy BLAS: (show_config unavailable: {e})")
    lines.append(f"OpenBLAS at run time: {openblas_runtime()}")
    return lines


def torch_info() -> list[str]:
    import torch

    lines = [f"torch {torch.__version__}, threads={torch.get_num_threads()}, "
             f"CPU capability {torch.backends.cpu.get_cpu_capability()}"]
    cfg = torch.__config__.show()
    for key in ("BLAS_INFO", "LAPACK_INFO"):
        i = cfg.find(key + "=")
        if i >= 0:
            lines.append("torch " + cfg[i:cfg.find(",", i)])
    for line in cfg.splitlines():
        if "Math Kernel Library" in line or "MKL-DNN" in line or "OpenMP" in line:
            lines.append("torch built with " + line.strip(" -"))
    return lines


ORIGINAL_ENV = dict(os.environ)  # as the process started, before set_thread_env


def env_report() -> list[str]:
    lines = [f"Python {platform.python_version()} on {platform.system()} {platform.release()}",
             f"CPU: {cpu_model()}", f"Cores: {core_counts()}"]
    ob = {k: v for k, v in ORIGINAL_ENV.items() if "openblas" in k.lower()}
    lines.append("OpenBLAS env vars in the caller's environment: "
                 + (", ".join(f"{k}={v}" for k, v in sorted(ob.items())) or "none")
                 + ("" if "OPENBLAS_CORETYPE" in ob else " (OPENBLAS_CORETYPE not set: kernel auto-detected)"))
    return lines


# ---------------------------------------------------------------- other load on the machine

def cpu_snapshot(pid: int | None = None, helpers: tuple[int, ...] = ()) -> tuple[float, int, int, int]:
    """(wall time, busy jiffies of the whole machine, steal jiffies, jiffies used by process pid incl. all its
    threads, plus its helper processes, e.g. npgpt's slice workers) from /proc; zeros where unavailable."""
    import time

    busy = steal = mine = 0
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        busy = v[0] + v[1] + v[2] + v[5] + v[6]  # user nice system irq softirq (guest time is inside user)
        steal = v[7] if len(v) > 7 else 0
        for p in (pid or os.getpid(), *helpers):
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            mine += int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, ValueError, IndexError):
        pass
    return time.perf_counter(), busy, steal, mine


def foreign_load(before: tuple, after: tuple) -> tuple[float, float]:
    """Average number of cores used by everything except the measured process between two snapshots, and
    the average number of cores stolen by the hypervisor."""
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    dt = after[0] - before[0]
    if dt <= 0:
        return 0.0, 0.0
    other = (after[1] - before[1]) - (after[3] - before[3])
    return max(0.0, other / hz / dt), max(0.0, (after[2] - before[2]) / hz / dt)


def loadavg() -> str:
    try:
        with open("/proc/loadavg") as f:
            return " ".join(f.read().split()[:3])
    except OSError:
        return "n/a"


def mem_available_mib() -> float | None:
    """MemAvailable from /proc/meminfo in MiB (None where unavailable)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


def cache_dir() -> str:
    """Where benchmarks keep built binaries and generated inputs: $NPGPT_BENCH_CACHE, else
    $XDG_CACHE_HOME/npgpt-bench, else ~/.cache/npgpt-bench (never inside the repository)."""
    if os.environ.get("NPGPT_BENCH_CACHE"):
        return os.environ["NPGPT_BENCH_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "npgpt-bench")
