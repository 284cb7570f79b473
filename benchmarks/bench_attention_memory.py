"""Peak memory of one attention layer's forward + backward: dense sdpa vs tiled sdpa, side by side.

Baby width (H = 6 heads of D = 64, B = 1), causal, float32 by default, T = 1024, 2048, 4096.  The peak is
tracemalloc's: every NumPy array allocated between the forward's start and the backward's end (the inputs
q, k, v and dout are allocated before and not counted).  The dense pair keeps (B, H, T, T) probabilities, so
its peak grows with T^2; the tiled pair keeps out and lse only, so its peak grows with T.

    python benchmarks/bench_attention_memory.py [--T 1024 2048 4096] [--block 128] [--dtype float32]
                                                 [--skip-dense-above 4096] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tracemalloc

from _benchutil import set_thread_env, use_repo_npgpt

set_thread_env(1)
use_repo_npgpt()

import numpy as np  # noqa: E402

from npgpt.layers.sdpa import sdpa_backward, sdpa_forward  # noqa: E402
from npgpt.layers.sdpa_tiled import sdpa_tiled_backward, sdpa_tiled_forward  # noqa: E402

MIB = 2.0 ** 20


def peak_mib(fn) -> float:
    """Peak traced memory (MiB) while fn runs, counted from its start."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / MIB
    finally:
        tracemalloc.stop()


def measure(T: int, H: int, D: int, B: int, block: int, dtype: np.dtype, dense: bool) -> dict:
    rng = np.random.default_rng(0)
    q, k, v, dout = (rng.standard_normal((B, H, T, D)).astype(dtype) for _ in range(4))  # (B, H, T, D) each

    def run_dense() -> None:
        _, _, cache = sdpa_forward(q, k, v, causal=True)
        sdpa_backward(dout, cache)

    def run_tiled() -> None:
        _, _, cache = sdpa_tiled_forward(q, k, v, causal=True, block_q=block, block_k=block)
        sdpa_tiled_backward(dout, cache)

    row = {"T": T, "tiled_mib": peak_mib(run_tiled), "dense_mib": peak_mib(run_dense) if dense else None,
           "one_TxT_mib": B * H * T * T * np.dtype(dtype).itemsize / MIB,
           "inputs_mib": 4 * B * H * T * D * np.dtype(dtype).itemsize / MIB}
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, nargs="+", default=[1024, 2048, 4096])
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--block", type=int, default=128)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--skip-dense-above", type=int, default=4096, help="no dense run for larger T")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    if min(args.T) < 1 or args.block < 1:
        print("bench_attention_memory: --T and --block must be positive", file=sys.stderr)
        return 2
    dtype = np.dtype(args.dtype)
    print(f"one attention layer, forward + backward, causal: B={args.batch} H={args.heads} D={args.head_dim} "
          f"{args.dtype}, tiled blocks {args.block}x{args.block}; peak MiB by tracemalloc")
    print(f"{'T':>6} {'dense':>10} {'tiled':>10} {'dense/tiled':>12} {'one (B,H,T,T)':>14} {'q,k,v,dout':>11}")
    rows = []
    for T in args.T:
        r = measure(T, args.heads, args.head_dim, args.batch, args.block, dtype, T <= args.skip_dense_above)
        rows.append(r)
        dense = "skipped" if r["dense_mib"] is None else f"{r['dense_mib']:.1f}"
        ratio = "" if r["dense_mib"] is None else f"{r['dense_mib'] / r['tiled_mib']:.1f}x"
        print(f"{T:>6} {dense:>10} {r['tiled_mib']:>10.1f} {ratio:>12} {r['one_TxT_mib']:>14.1f} "
              f"{r['inputs_mib']:>11.1f}", flush=True)
    for a, b in zip(rows, rows[1:]):
        growth = b["tiled_mib"] / a["tiled_mib"]
        print(f"tiled peak x{growth:.2f} from T={a['T']} to T={b['T']} (x{b['T'] / a['T']:.0f} in T)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
