#!/usr/bin/env python
"""One MoE layer training step: npgpt's grouped and clear MoE layers against PyTorch eager running transformers'
MixtralSparseMoeBlock, float32, side by side.

One step = forward and backward of the layer (gradients of x and of every parameter) for a fixed input and a fixed
upstream gradient; no optimizer (the layer has no optimizer state of its own).  Default shape: Mixtral-style,
E=8 experts, top-2, C=384 (the baby GPT's width), F=768 per expert (= 4C/K: the two chosen experts together are as
wide as a dense 4C MLP), B*T = 4*256 tokens.

Every timed run is a FRESH process (import, build, warm up, time the steps, print one JSON line, exit) with
OMP/OPENBLAS/MKL_NUM_THREADS = --threads (torch.set_num_threads too; npgpt's products inside
npgpt.runtime.parallel.blas_threads(threads)).  A round runs each framework once, in an order rotated by one every
round; each figure is min / median / max over the rounds of each run's median step time.

    python benchmarks/bench_moe.py                  # 5 rounds (~2 min on a quiet 2-core machine)
    python benchmarks/bench_moe.py --profile        # where the time goes, one process per framework
    python benchmarks/bench_moe.py --verify         # npgpt and torch compute the same step (float64)
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

FRAMEWORKS = ("npgpt-grouped", "npgpt-clear", "torch")
SEED = 1234


def build(args, dtype):
    """npgpt spec and params (Mixtral names), input x and upstream gradient dout, all from one seed."""
    import numpy as np

    bu.use_repo_npgpt()
    from npgpt.layers.moe import moe_init_params, moe_spec

    rng = np.random.default_rng(SEED)
    spec = moe_spec("mixtral", args.experts, args.top_k)
    p = moe_init_params(spec, args.C, args.F, rng, dtype=np.float64, std=0.02)
    p["block_sparse_moe.gate.weight"] *= 20.0  # a router with opinions: uneven loads, as in training
    x = rng.standard_normal((args.B, args.T, args.C))
    dout = rng.standard_normal(x.shape)
    cast = {k: v.astype(dtype) for k, v in p.items()}
    return spec, cast, x.astype(dtype), dout.astype(dtype)


def torch_block(args, spec, params, torch):
    """transformers' MixtralSparseMoeBlock with npgpt's parameters (per-expert w1/w3 stacked into gate_up_proj)."""
    import numpy as np
    import transformers as tr
    from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock

    from npgpt.layers.moe import expert_keys

    cfg = tr.MixtralConfig(hidden_size=args.C, intermediate_size=args.F, num_local_experts=args.experts,
                           num_experts_per_tok=args.top_k, num_hidden_layers=1, num_attention_heads=1,
                           num_key_value_heads=1, vocab_size=8)
    block = MixtralSparseMoeBlock(cfg)
    first = next(iter(params.values()))
    block = block.to(torch.float64 if first.dtype.itemsize == 8 else torch.float32)
    with torch.no_grad():
        block.gate.weight.copy_(torch.from_numpy(params["block_sparse_moe.gate.weight"]))
        for e in range(args.experts):
            g, u, d = expert_keys(spec, e)
            block.experts.gate_up_proj[e].copy_(torch.from_numpy(np.concatenate([params[g], params[u]])))
            block.experts.down_proj[e].copy_(torch.from_numpy(params[d]))
    block.train()
    return block


def run_main(fw: str, args) -> None:
    """One timed run in this fresh process."""
    import numpy as np

    threads = args.threads
    spec, p, x, dout = build(args, np.float32)
    if fw == "torch":
        import torch

        torch.set_num_threads(threads)
        block = torch_block(args, spec, p, torch)
        xt, dt = torch.from_numpy(x), torch.from_numpy(dout)
        params = list(block.parameters())

        def step():
            for q in params:
                q.grad = None
            xi = xt.detach().requires_grad_(True)
            y = block(xi)
            y.backward(dt)
            return xi.grad
        ctx = None
    else:
        from npgpt.layers.moe import moe_backward, moe_forward
        from npgpt.layers.moe_grouped import moe_grouped_backward, moe_grouped_forward
        from npgpt.runtime.parallel import blas_threads

        fwd, bwd = ((moe_grouped_forward, moe_grouped_backward) if fw == "npgpt-grouped"
                    else (moe_forward, moe_backward))

        def step():
            out, _, cache = fwd(x, p, spec)
            return bwd(dout, cache)
        ctx = blas_threads(threads)
    times, cpu = [], []
    if ctx is not None:
        ctx.__enter__()
    for i in range(args.warmup + args.steps):
        t0, c0 = time.perf_counter(), time.process_time()
        step()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    if ctx is not None:
        ctx.__exit__(None, None, None)
    print(json.dumps({"fw": fw, "step_s": times, "median": statistics.median(times),
                      "cpu_median": statistics.median(cpu)}))


def profile_main(fw: str, args) -> None:
    """Where one step's time goes, in this process."""
    import numpy as np

    spec, p, x, dout = build(args, np.float32)
    if fw == "torch":
        import torch

        torch.set_num_threads(args.threads)
        block = torch_block(args, spec, p, torch)
        xt, dt = torch.from_numpy(x), torch.from_numpy(dout)
        for _ in range(args.warmup):
            block(xt.detach().requires_grad_(True)).backward(dt)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                block(xt.detach().requires_grad_(True)).backward(dt)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=14, max_name_column_width=40))
        return
    from npgpt.layers import moe as m
    from npgpt.layers import moe_grouped as g
    from npgpt.runtime.parallel import blas_threads

    fwd, bwd = (g.moe_grouped_forward, g.moe_grouped_backward) if fw == "npgpt-grouped" else (m.moe_forward,
                                                                                              m.moe_backward)
    idx = m.moe_forward(x, p, spec)[2].indices  # (N, K) the routing, for the products below
    x2 = x.reshape(-1, args.C)
    rows = [x2[np.nonzero(idx == e)[0]] for e in range(args.experts)]
    keys = [m.expert_keys(spec, e) for e in range(args.experts)]
    wr = p["block_sparse_moe.gate.weight"]
    z = x2 @ wr.T

    def products():
        """Every expert's 3 forward and 6 backward products on its own rows (same shapes), and the router's."""
        for xe, (kg, ku, kd) in zip(rows, keys):
            gt, up = xe @ p[kg].T, xe @ p[ku].T  # (n_e, F)
            y = gt @ p[kd].T  # (n_e, C) the down product's shape
            _ = y.T @ gt, y @ p[kd]  # dW_down (C, F), dh (n_e, F)
            _ = gt.T @ xe, up.T @ xe  # dW_gate, dW_up (F, C)
            _ = gt @ p[kg], up @ p[ku]  # dx from both (n_e, C)
        _ = x2 @ wr.T, z.T @ x2, z @ wr  # the router's forward and backward products

    with blas_threads(args.threads):
        for _ in range(args.warmup):
            bwd(dout, fwd(x, p, spec)[2])
            products()
        t_total, t_f, t_mm = [], [], []
        for _ in range(args.steps):  # alternated, so that a busy machine slows both alike
            t0 = time.perf_counter()
            cache = fwd(x, p, spec)[2]
            t1 = time.perf_counter()
            bwd(dout, cache)
            t2 = time.perf_counter()
            products()
            t_mm.append(time.perf_counter() - t2)
            t_total.append(t2 - t0)
            t_f.append(t1 - t0)
    tot, f, mm = (statistics.median(v) * 1e3 for v in (t_total, t_f, t_mm))
    loads = np.bincount(idx.reshape(-1), minlength=args.experts)
    print(f"{fw}: step {tot:.1f} ms (forward {f:.1f}, backward {tot - f:.1f}); the 9 products per expert alone "
          f"{mm:.1f} ms ({100 * mm / tot:.0f}%); everything else (router softmax/top-K, sort, gathers, silu, "
          f"weighting, scatter back) {tot - mm:.1f} ms.  Expert loads (rows): {loads.tolist()}")


def verify(args) -> int:
    """float64: npgpt's grouped step and torch's give the same output and gradients (1e-10)."""
    import numpy as np
    import torch

    from npgpt.layers.moe import expert_keys
    from npgpt.layers.moe_grouped import moe_grouped_backward, moe_grouped_forward

    spec, p, x, dout = build(args, np.float64)
    block = torch_block(args, spec, p, torch)
    # float64 comparison: Mixtral's router softmax is a float32 island in transformers (docs/derivations/moe.md)
    sys.path.insert(0, os.path.join(bu.ROOT, "tests"))
    from moe_hf import float64_forward

    float64_forward(block.gate)
    xt = torch.from_numpy(x).requires_grad_(True)
    y = block(xt)
    y.backward(torch.from_numpy(dout))
    out, _, cache = moe_grouped_forward(x, p, spec)
    dx, g = moe_grouped_backward(dout, cache)
    errs = {"out": np.abs(out - y.detach().numpy()).max(), "dx": np.abs(dx - xt.grad.numpy()).max(),
            "gate": np.abs(g["block_sparse_moe.gate.weight"] - block.gate.weight.grad.numpy()).max()}
    F = args.F
    for e in range(args.experts):
        kg, ku, kd = expert_keys(spec, e)
        gu = block.experts.gate_up_proj.grad[e].numpy()
        errs[f"expert {e}"] = max(np.abs(g[kg] - gu[:F]).max(), np.abs(g[ku] - gu[F:]).max(),
                                  np.abs(g[kd] - block.experts.down_proj.grad[e].numpy()).max())
    worst = max(errs.values())
    print("max abs difference, float64:", {k: f"{v:.1e}" for k, v in errs.items()})
    return 0 if worst < 1e-10 else 1


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experts", type=int, default=8)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--C", type=int, default=384)
    ap.add_argument("--F", type=int, default=768)
    ap.add_argument("--B", type=int, default=4)
    ap.add_argument("--T", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--frameworks", nargs="+", default=list(FRAMEWORKS), choices=FRAMEWORKS)
    ap.add_argument("--profile", action="store_true", help="where the time goes (one process per framework)")
    ap.add_argument("--verify", action="store_true", help="npgpt == torch in float64")
    ap.add_argument("--_run", help=argparse.SUPPRESS)
    ap.add_argument("--_profile", help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def child_argv(args, flag: str, fw: str) -> list[str]:
    keep = ["--experts", str(args.experts), "--top-k", str(args.top_k), "--C", str(args.C), "--F", str(args.F),
            "--B", str(args.B), "--T", str(args.T), "--threads", str(args.threads), "--warmup", str(args.warmup),
            "--steps", str(args.steps)]
    return [sys.executable, os.path.abspath(__file__), *keep, flag, fw]


def main() -> int:
    args = parse_args()
    if args._run:
        run_main(args._run, args)
        return 0
    if args._profile:
        profile_main(args._profile, args)
        return 0
    bu.use_repo_npgpt()
    if args.verify:
        return verify(args)
    env = bu.set_thread_env(args.threads, dict(os.environ))
    env.pop("OPENBLAS_CORETYPE", None)
    fws = [f for f in args.frameworks if f != "torch" or bu.torch_available()]
    print(f"MoE layer step (forward + backward), float32: E={args.experts}, K={args.top_k}, C={args.C}, F={args.F}, "
          f"B*T={args.B}*{args.T}; {args.threads} threads each; {args.rounds} rounds of fresh processes, "
          f"{args.warmup} warm-up + {args.steps} timed steps each")
    if args.profile:
        for fw in fws:
            r = subprocess.run(child_argv(args, "--_profile", fw), env=env, capture_output=True, text=True)
            print(r.stdout.strip() or r.stderr.strip()[-2000:])
        return 0
    res: dict[str, list[float]] = {fw: [] for fw in fws}
    cpu: dict[str, list[float]] = {fw: [] for fw in fws}
    for rnd in range(args.rounds):
        order = fws[rnd % len(fws):] + fws[:rnd % len(fws)]
        for fw in order:
            r = subprocess.run(child_argv(args, "--_run", fw), env=env, capture_output=True, text=True)
            if r.returncode:
                print(f"{fw}: failed: {r.stderr.strip().splitlines()[-1:]}")
                continue
            out = json.loads(r.stdout.strip().splitlines()[-1])
            res[fw].append(out["median"])
            cpu[fw].append(out["cpu_median"])
    print(f"\n{'framework':<15} {'min':>9} {'median':>9} {'max':>9}   (ms per step)")
    for fw, v in res.items():
        if v:
            print(f"{fw:<15} {min(v) * 1e3:9.1f} {statistics.median(v) * 1e3:9.1f} {max(v) * 1e3:9.1f}")
    print(f"\n{'framework':<15} {'min':>9} {'median':>9} {'max':>9}   (CPU ms per step, all threads: steadier than "
          f"wall time on a busy machine, but counts spinning threads)")
    for fw, v in cpu.items():
        if v:
            print(f"{fw:<15} {min(v) * 1e3:9.1f} {statistics.median(v) * 1e3:9.1f} {max(v) * 1e3:9.1f}")
    if res.get("torch") and res.get("npgpt-grouped"):
        t, gm = statistics.median(res["torch"]), statistics.median(res["npgpt-grouped"])
        ratio = t / gm
        print(f"\ntorch eager / npgpt grouped: {ratio:.2f}x (target >= 1.5x: {'met' if ratio >= 1.5 else 'MISSED'})")
        if res.get("npgpt-clear"):
            print(f"torch eager / npgpt clear:   {t / statistics.median(res['npgpt-clear']):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
