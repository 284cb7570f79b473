#!/usr/bin/env python
"""Sampling throughput of npgpt with and without the key/value cache.

    python benchmarks/bench_generate.py                   # baby config, block_size 256, 256 new tokens
    python benchmarks/bench_generate.py --config small --block-size 64 --new-tokens 63
    python benchmarks/bench_generate.py --family llama    # a Llama of the same widths (Hkv = H/3, F = 8C/3)

Batch 1, float32, a 1-token prompt, temperature 1 (no top-k / top-p), the same seeded rng for both modes.
use_cache=True runs one new position per token through the blocks against cached keys and values;
use_cache=False re-runs the full forward over the whole window for every token.  Reported: tokens/s of each,
the speed-up (target >= 10x), and whether both modes sampled the same tokens.  A third row times the cached
loop with every token through forward_cached (the model's own forward) instead of the one-token step of
npgpt/decode.py (npgpt/llama/decode.py for --family llama), which generate uses: the step's gain, measured
alongside.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import _benchutil as bu
from bench_train import CONFIGS

TARGET_SPEEDUP = 10.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", choices=list(CONFIGS), default="baby")
    ap.add_argument("--family", choices=["gpt2", "llama"], default="gpt2",
                    help="llama: the config's layers, heads and width with n_kv_head = n_head / 3 (at least 1) "
                         "and intermediate_size = 8C/3, SwiGLU, untied head")
    ap.add_argument("--block-size", type=int, default=256)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="seed of the sampling rng (and of the model init)")
    ap.add_argument("--repeats", type=int, default=3, help="timed cached runs (median reported)")
    ap.add_argument("--nocache-repeats", type=int, default=3, help="timed uncached runs (median reported)")
    ap.add_argument("--json", metavar="OUT")
    args = ap.parse_args()

    bu.set_thread_env(args.threads)  # before numpy is imported
    bu.use_repo_npgpt()
    import numpy as np

    import npgpt

    cfg = CONFIGS[args.config]
    model: npgpt.GPT | npgpt.Llama
    if args.family == "gpt2":
        config = npgpt.GPTConfig(vocab_size=cfg["vocab_size"], block_size=args.block_size, n_layer=cfg["n_layer"],
                                 n_head=cfg["n_head"], n_embd=cfg["n_embd"], dropout=0.0)
        model = npgpt.GPT(config, seed=args.seed, dtype=np.float32)
        from npgpt.gpt2.generate import KVCache as Cache, forward_cached
        shapes = f"n_head={config.n_head}"
    else:
        H = cfg["n_head"]
        Hkv = max(g for g in range(1, max(1, H // 3) + 1) if H % g == 0)  # n_head / 3, or the nearest divisor
        config = npgpt.LlamaConfig(vocab_size=cfg["vocab_size"], block_size=args.block_size, n_layer=cfg["n_layer"],
                                   n_head=H, n_kv_head=Hkv, n_embd=cfg["n_embd"],
                                   intermediate_size=8 * cfg["n_embd"] // 3)
        model = npgpt.Llama(config, seed=args.seed, dtype=np.float32)
        from npgpt.llama import LlamaKVCache as Cache, forward_cached
        shapes = f"n_head={config.n_head} n_kv_head={config.n_kv_head} intermediate_size={config.intermediate_size}"
    model.eval()
    prompt = np.zeros((1, 1), dtype=np.int64)
    n = args.new_tokens

    print("npgpt generation benchmark")
    for line in bu.env_report() + bu.numpy_info():
        print("  " + line)
    print(f"  Threads: {args.threads} (OMP/OPENBLAS/MKL_NUM_THREADS)")
    print(f"  model: {args.family}, {args.config} shapes (n_layer={config.n_layer} {shapes} n_embd={config.n_embd} "
          f"vocab={config.vocab_size}) with block_size={config.block_size}, {model.num_params()} params, float32")
    print(f"  task: batch 1, 1-token prompt, {n} new tokens, temperature 1.0, no top-k/top-p, "
          f"rng default_rng({args.seed})" + (f"  (the window slides after {config.block_size} tokens: the cache is "
                                             f"rebuilt each step from then on)" if 1 + n > config.block_size + 1
                                             else ""))

    from npgpt.gpt2.generate import decode_loop

    def through_forward_cached(rng: np.random.Generator) -> np.ndarray:
        """generate's cached loop with every token through forward_cached, the pre-decode.py path."""
        return decode_loop(prompt, config.block_size, n, full=lambda w: model.forward(w)[0],
                           new_cache=lambda B: Cache(config, B, np.dtype(np.float32)),
                           cached=lambda w, kv: forward_cached(model.params, config, w, kv), rng=rng)

    def run(mode: bool | str) -> tuple[float, np.ndarray, float]:
        rng = np.random.default_rng(args.seed)
        before = bu.cpu_snapshot()
        t0 = time.perf_counter()
        if mode == "forward_cached":
            out = through_forward_cached(rng)
        else:
            out = model.generate(prompt, n, temperature=1.0, top_k=None, top_p=None, rng=rng, use_cache=bool(mode))
        dt = time.perf_counter() - t0
        other, _ = bu.foreign_load(before, bu.cpu_snapshot())
        return dt, out, other

    MODES: list[bool | str] = [True, "forward_cached", False]  # generate's cached loop, the old step, no cache
    for use_cache in (True, False):  # warm-up: BLAS threads, allocator, causal-mask cache
        model.generate(prompt, min(8, n), rng=np.random.default_rng(args.seed), use_cache=use_cache)

    times: dict[bool | str, list[float]] = {m: [] for m in MODES}
    others: dict[bool | str, list[float]] = {m: [] for m in MODES}
    seqs = {}
    reps = {True: args.repeats, "forward_cached": args.repeats, False: args.nocache_repeats}
    plan = [m for r in range(max(reps.values())) for m in MODES if r < reps[m]]  # alternating while runs are left
    for mode in plan:
        dt, out, other = run(mode)
        times[mode].append(dt)
        others[mode].append(other)
        seqs[mode] = out
        label = "forward_cached" if mode == "forward_cached" else f"use_cache={mode!s}"
        print(f"  run {label:<15}  {dt:8.3f} s  {n / dt:9.1f} tokens/s"
              + (f"   [other load {other:.2f} cores]" if other >= 0.1 else ""), flush=True)

    res = {}
    for mode in MODES:
        med = statistics.median(times[mode])
        res[mode] = dict(seconds=med, tokens_per_s=n / med, ms_per_token=1e3 * med / n,
                         runs_s=times[mode], other_load=statistics.mean(others[mode]))
    speedup = res[True]["tokens_per_s"] / res[False]["tokens_per_s"]
    a, b = seqs[True][0], seqs[False][0]
    diff = np.nonzero(a != b)[0]
    if not np.array_equal(seqs["forward_cached"], seqs[True]):
        print("  NOTE: the forward_cached loop sampled other tokens (rounding near a sampling boundary)")
    same = "identical" if diff.size == 0 else f"differ from position {int(diff[0])} on (rounding near a " \
                                                  f"sampling boundary)"
    print(f"\n  with KV cache    {res[True]['tokens_per_s']:9.1f} tokens/s  ({res[True]['ms_per_token']:.2f} ms/token, "
          f"median of {len(times[True])})")
    print(f"  without cache    {res[False]['tokens_per_s']:9.1f} tokens/s  ({res[False]['ms_per_token']:.2f} ms/token, "
          f"median of {len(times[False])})")
    old = res["forward_cached"]
    print(f"  cached, every token through forward_cached (the model's forward, not the one-token step): "
          f"{old['tokens_per_s']:.1f} tokens/s ({old['ms_per_token']:.2f} ms/token); "
          f"the step is {res[True]['tokens_per_s'] / old['tokens_per_s']:.2f}x that")
    print(f"  speed-up         {speedup:9.1f}x   (target >= {TARGET_SPEEDUP:.0f}x)  "
          f"{'PASS' if speedup >= TARGET_SPEEDUP else 'FAIL'}")
    print(f"  sampled tokens:  {same}")
    worst = max(max(o) for o in others.values())
    print(f"  other processes during the runs (cores, mean): cached {res[True]['other_load']:.2f}, "
          f"uncached {res[False]['other_load']:.2f}; load average {bu.loadavg()}")
    if worst >= 0.25:
        print(f"  WARNING: other processes used up to {worst:.2f} cores during the runs; figures are noisy")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(args=vars(args), cached=res[True], uncached=res[False],
                           cached_forward_cached=res["forward_cached"], speedup=speedup,
                           same_tokens=bool(diff.size == 0)), f, indent=1)
        print(f"  wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
