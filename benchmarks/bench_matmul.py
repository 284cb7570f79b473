"""The matrix products of one training step, timed in NumPy's BLAS and in PyTorch's, side by side.

A training step of the benchmark's configs is mostly matrix products, so how npgpt compares with PyTorch on
a host is set first by how NumPy's BLAS (OpenBLAS) compares with PyTorch's (MKL on x86) on these shapes.
This script times every product of one step's linear layers and LM head, forward and both backward ones:
- NumPy as npgpt runs them: with threads > 1 a model of up to npgpt.runtime.model.SLICE_PARAMS parameters cuts the
  batch into slices, one per core, each product on one thread and batch/threads of the rows; a larger
  model runs the whole batch on that many BLAS threads;
- PyTorch as its eager model runs them: the whole batch, torch.set_num_threads(threads).
Each framework runs in a fresh process per round, in an order that alternates; figures are medians over
the rounds with min-max.  Attention's batched products and everything elementwise are not included.

    python benchmarks/bench_matmul.py                       # small, baby and gpt2-124m, 3 rounds
    python benchmarks/bench_matmul.py --configs gpt2-124m --rounds 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import _benchutil as bu
from bench_train import CONFIGS, npgpt_config

FRAMEWORKS = ("numpy", "torch")
MIN_SECONDS = 0.2  # each product repeated for at least this long after two untimed calls


def products(cfg: dict) -> list[tuple[str, int, int, int, bool, bool, int]]:
    """(name, M, K, N, a transposed, b transposed, calls per step) of one step's linear and head products
    over the batch's R = batch * T rows: out = a @ b with a (M, K), b (K, N), stored transposed where marked."""
    C, V, L = cfg["n_embd"], cfg["vocab_size"], cfg["n_layer"]
    R = cfg["batch"] * cfg["T"]
    out = []
    for name, c_in, c_out in (("c_attn", C, 3 * C), ("attn.c_proj", C, C), ("c_fc", C, 4 * C),
                              ("mlp.c_proj", 4 * C, C)):
        out += [(f"{name} forward x @ w", R, c_in, c_out, False, False, L),
                (f"{name} dx = dout @ w.T", R, c_out, c_in, False, True, L),
                (f"{name} dw = x.T @ dout", c_in, R, c_out, True, False, L)]
    out += [("head forward x @ wte.T", R, C, V, False, True, 1),
            ("head dx = dlogits @ wte", R, V, C, False, False, 1),
            ("head dwte = dlogits.T @ x", V, R, C, True, False, 1)]
    return out


def npgpt_split(cfg: dict, threads: int) -> tuple[int, int, int]:
    """(slices, BLAS threads per product, rows of the largest slice) as npgpt's GPT(threads=threads) runs
    this config's batch: the model's own rule (SLICE_PARAMS) and its own batch_slices."""
    import math

    bu.use_repo_npgpt()
    from npgpt.gpt2.core import param_shapes
    from npgpt.runtime.model import SLICE_PARAMS
    from npgpt.runtime.parallel import batch_slices

    nparams = sum(math.prod(s) for s in param_shapes(npgpt_config(cfg)).values())
    if threads > 1 and nparams <= SLICE_PARAMS:
        slices = batch_slices(cfg["batch"], threads)
        return len(slices), 1, max(s.stop - s.start for s in slices) * cfg["T"]
    return 1, threads, cfg["batch"] * cfg["T"]


def median_seconds(matmul, a, b, c) -> float:
    """Median seconds of matmul(a, b, out=c): two untimed calls, then repeats for MIN_SECONDS (at least 3)."""
    for _ in range(2):
        matmul(a, b, out=c)
    times: list[float] = []
    t_end = time.perf_counter() + MIN_SECONDS
    while time.perf_counter() < t_end or len(times) < 3:
        t0 = time.perf_counter()
        matmul(a, b, out=c)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def child_main(framework: str, name: str, threads: int) -> None:
    """In a fresh process: time every product of config `name`; print one JSON line of seconds and GFLOP/s."""
    cfg = CONFIGS[name]
    import numpy as np

    R = cfg["batch"] * cfg["T"]
    if framework == "numpy":
        slices, blas, rows = npgpt_split(cfg, threads)
        from npgpt.runtime.parallel import blas_threads  # on the path since npgpt_split

        ctx = blas_threads(blas)
    else:
        import contextlib

        import torch

        torch.set_num_threads(threads)
        slices, blas, rows, ctx = 1, threads, R, contextlib.nullcontext()
    rng = np.random.default_rng(0)
    res = []
    with ctx:
        for label, M, K, N, ta, tb, calls in products(cfg):
            M, K = (rows if M == R else M), (rows if K == R else K)  # a slice's rows when sliced
            A = rng.standard_normal((K, M) if ta else (M, K), dtype=np.float32)
            B = rng.standard_normal((N, K) if tb else (K, N), dtype=np.float32)
            if framework == "numpy":
                a, b, c = (A.T if ta else A), (B.T if tb else B), np.empty((M, N), np.float32)
                s = median_seconds(np.matmul, a, b, c)
            else:
                At, Bt = torch.from_numpy(A), torch.from_numpy(B)
                s = median_seconds(torch.matmul, At.T if ta else At, Bt.T if tb else Bt, torch.empty(M, N))
            res.append(dict(label=label, M=M, K=K, N=N, calls=calls, seconds=s, gflops=2 * M * K * N / s / 1e9))
    print(json.dumps(dict(slices=slices, blas_threads=blas, products=res)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--configs", nargs="+", choices=("small", "baby", "gpt2-124m"),
                    default=["small", "baby", "gpt2-124m"])
    ap.add_argument("--rounds", type=int, default=3, help="fresh processes per framework (default 3)")
    ap.add_argument("--threads", type=int, default=2, help="cores for each framework (default 2)")
    ap.add_argument("--_child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rounds < 1 or args.threads < 1:
        ap.error("--rounds and --threads must be at least 1")
    if args._child:
        child_main(args._child[0], args._child[1], args.threads)
        return 0
    fws = [fw for fw in FRAMEWORKS if fw == "numpy" or bu.torch_available()]
    env = bu.set_thread_env(args.threads, dict(os.environ))
    env.pop("OPENBLAS_CORETYPE", None)  # OpenBLAS picks its kernels for this CPU, as bench_train.py does
    print("matrix products of one training step, NumPy's BLAS against PyTorch's")
    print(f"  CPU: {bu.cpu_model()}; {args.threads} threads; {args.rounds} fresh processes per framework")
    if "torch" not in fws:
        print("  torch is not installed: NumPy alone")
    for name in args.configs:
        runs: dict[str, list[dict]] = {fw: [] for fw in fws}
        for r in range(args.rounds):
            for fw in (fws if r % 2 == 0 else fws[::-1]):
                p = subprocess.run([sys.executable, os.path.abspath(__file__), "--threads", str(args.threads),
                                    "--_child", fw, name], capture_output=True, text=True, env=env)
                if p.returncode:
                    print(f"  {fw} {name}: failed: {(p.stderr.strip().splitlines() or ['?'])[-1]}")
                    return 1
                runs[fw].append(json.loads(p.stdout.strip().splitlines()[-1]))
        report(name, runs)
    return 0


def report(name: str, runs: dict[str, list[dict]]) -> None:
    """One config's table: GFLOP/s per product and framework, then the products' time per step."""
    cfg = CONFIGS[name]
    print(f"\n=== {name} (L{cfg['n_layer']} C{cfg['n_embd']} T{cfg['T']} B{cfg['batch']}, V{cfg['vocab_size']})")
    for fw, rs in runs.items():
        how = (f"{rs[0]['slices']} batch slices at once, 1 BLAS thread each" if rs[0]["slices"] > 1 else
               f"the whole batch, {rs[0]['blas_threads']} BLAS threads")
        print(f"    {fw}: {how}")
    fws = list(runs)
    head = "".join(f" {fw + ' GFLOP/s':>15} {'(min-max)':>13}" for fw in fws)
    print(f"    {'product':<28} {'M x K x N (numpy)':>20} {'calls':>5}{head}" + ("  speed-up" if len(fws) > 1 else ""))
    step = {fw: [0.0] * len(rs) for fw, rs in runs.items()}
    for i, item in enumerate(runs["numpy"][0]["products"]):
        cells, meds = [], []
        for fw in fws:
            g = [r["products"][i]["gflops"] for r in runs[fw]]
            meds.append(statistics.median(r["products"][i]["seconds"] for r in runs[fw]))
            cells.append(f" {statistics.median(g):15.1f} {f'({min(g):.0f}-{max(g):.0f})':>13}")
            for k, r in enumerate(runs[fw]):
                step[fw][k] += r["products"][i]["seconds"] * r["products"][i]["calls"]
        ratio = f"  {meds[1] / meds[0]:7.2f}x" if len(fws) > 1 else ""  # torch's seconds / numpy's
        shape = f"{item['M']} x {item['K']} x {item['N']}"
        print(f"    {item['label']:<28} {shape:>20} {item['calls']:5d}{''.join(cells)}{ratio}")
    ms = {fw: statistics.median(v) * 1e3 for fw, v in step.items()}
    line = ", ".join(f"{fw} {ms[fw]:.1f} ms ({min(v) * 1e3:.1f}-{max(v) * 1e3:.1f})" for fw, v in step.items())
    print("    speed-up: torch's time for the product / numpy's (above 1: numpy is faster); sliced, numpy's "
          "time is one slice's, the slices running at once")
    print(f"    these products, one step (a slice's share when sliced: the slices run at once): {line}")
    if len(fws) > 1:
        print(f"    torch's time / numpy's: {ms['torch'] / ms['numpy']:.2f}  (above 1: NumPy's BLAS is faster here)")


if __name__ == "__main__":
    sys.exit(main())
