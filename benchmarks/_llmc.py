"""llm.c's CPU trainer as a benchmark framework: build llmc_driver.c against a checkout, write its inputs.

    exe = build(path, cache)           # gcc -Ofast -march=native -fopenmp -I path llmc_driver.c, cached by hash
    model_bin, batches_bin = inputs    # written by bench_train.py's --_llmc_prep worker (npgpt.gpt2.llmc.write_model)

Nothing here imports numpy: the parent process of bench_train.py stays light.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
DRIVER = os.path.join(HERE, "llmc_driver.c")
CFLAGS = ("-Ofast", "-march=native", "-fopenmp")
SOURCES = ("train_gpt2.c", "llmc/utils.h", "llmc/tokenizer.h", "llmc/dataloader.h", "llmc/rand.h")


class LlmcError(Exception):
    """A one-line reason llm.c cannot be measured (bad checkout, no compiler, build failure)."""


def check_checkout(path: str) -> str:
    """The checkout's absolute path, or LlmcError when it lacks train_gpt2.c or llmc/utils.h."""
    path = os.path.abspath(path)
    for rel in ("train_gpt2.c", os.path.join("llmc", "utils.h")):
        if not os.path.isfile(os.path.join(path, rel)):
            raise LlmcError(f"--llmc {path}: no {rel} there (expected a checkout of karpathy/llm.c)")
    return path


def compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("gcc")
    if not cc:
        raise LlmcError("llm.c: no gcc on PATH (set CC to another C compiler that takes gcc's flags)")
    return cc


def build_command(cc: str, checkout: str, out: str) -> list[str]:
    return [cc, *CFLAGS, "-I", checkout, DRIVER, "-o", out, "-lm"]


def build(checkout: str, cache: str) -> tuple[str, list[str], bool]:
    """(executable, the gcc command, whether it was built now) for the driver against this checkout.  The
    binary lives in cache/llmc-<hash>/, the hash covering the driver, llm.c's sources, the flags and the
    compiler's version, so an edit to any of them rebuilds it."""
    checkout = check_checkout(checkout)
    cc = compiler()
    h = hashlib.sha256()
    for p in [DRIVER] + [os.path.join(checkout, s) for s in SOURCES]:
        if os.path.isfile(p):
            with open(p, "rb") as f:
                h.update(f.read())
    try:
        version = subprocess.run([cc, "--version"], capture_output=True, text=True).stdout
    except OSError as e:
        raise LlmcError(f"llm.c: cannot run {cc} ({e.strerror or e})") from None
    h.update(" ".join(CFLAGS).encode() + version.encode())
    d = os.path.join(cache, "llmc-" + h.hexdigest()[:16])
    exe = os.path.join(d, "llmc_driver")
    cmd = build_command(cc, checkout, exe)
    if os.path.isfile(exe) and os.access(exe, os.X_OK):
        return exe, cmd, False
    os.makedirs(d, exist_ok=True)
    tmp = exe + f".tmp{os.getpid()}"
    r = subprocess.run(cmd[:-3] + ["-o", tmp, "-lm"], capture_output=True, text=True)
    if r.returncode:
        tail = (r.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise LlmcError(f"llm.c: build failed ({' '.join(cmd)}): {tail}")
    os.replace(tmp, exe)
    return exe, cmd, True


def run_args(exe: str, model_bin: str, batches_bin: str, B: int, T: int, nbatches: int, warmup: int, steps: int,
             lr: float, betas: tuple[float, float], eps: float, weight_decay: float) -> list[str]:
    return [exe, model_bin, batches_bin, str(B), str(T), str(nbatches), str(warmup), str(steps), repr(lr),
            repr(betas[0]), repr(betas[1]), repr(eps), repr(weight_decay)]


def parse_result(stdout: str) -> dict:
    """The driver's "RESULT {json}" line as a dict (LlmcError when it is missing)."""
    import json

    for line in reversed(stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise LlmcError("llm.c driver printed no RESULT line")
