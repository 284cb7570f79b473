#!/usr/bin/env python
"""Training-step throughput and memory of npgpt against an equivalent eager PyTorch model.

One step = forward + backward + global-norm clip (1.0) + AdamW, float32, on a fixed set of random batches.

    python benchmarks/bench_train.py                      # both configs, npgpt vs torch, 2 threads
    python benchmarks/bench_train.py --configs baby --steps 5 --repeats 7 --json out.json
    python benchmarks/bench_train.py --no-torch           # npgpt's figures only (also when torch is absent)
    python benchmarks/bench_train.py --verify             # check the torch model computes what npgpt does

Each (framework, config) runs in its own fresh worker process with OMP/OPENBLAS/MKL_NUM_THREADS set to
--threads (and torch.set_num_threads).  The workers stay alive and the timed runs are issued round-robin
(npgpt, torch, torch-sdpa, npgpt, ...) so machine noise hits every framework alike.  See benchmarks/README.md
for what each figure means and how FLOPs and memory are counted.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import time

import _benchutil as bu

CONFIGS = {
    # model shapes, batch, and the default timing plan (steps per timed run, warm-up steps)
    "small": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=65, batch=12, steps=20, warmup=5),
    "baby": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, vocab_size=65, batch=4, steps=3, warmup=2),
}
TARGETS = {  # npgpt tokens/s as a multiple of the faster torch variant; % of measured matmul peak
    "small": dict(speed=1.0, peak_frac=None),
    "baby": dict(speed=0.8, peak_frac=0.60),
}
FRAMEWORKS = ("npgpt", "torch", "torch-sdpa")  # torch: manual matmul+mask+softmax attention; torch-sdpa: fused
GAP_S = 0.3  # pause between runs of different workers: lets the previous pool's spinning threads go idle
SEED = 0


# ---------------------------------------------------------------- FLOP model

def step_flops(cfg: dict) -> dict:
    """Matmul FLOPs of one training step, counted analytically (2*M*N*K per matmul).

    Forward: the four linear layers per block (c_attn C->3C, c_proj C->C, c_fc C->4C, mlp.c_proj 4C->C:
    2*B*T*C*12C), attention q@k^T and att@v over the full T x T (no causal halving: both npgpt and the
    manual torch variant compute the full square), and the tied LM head (2*B*T*C*V).  Backward = 2x forward
    (two matmuls per forward matmul), so the step counts 3x forward.  Not counted: LayerNorm, GELU, softmax,
    embeddings, cross-entropy, clipping and AdamW (all O(B*T*C) or O(params)).
    """
    B, T, C, L, V = cfg["batch"], cfg["block_size"], cfg["n_embd"], cfg["n_layer"], cfg["vocab_size"]
    linear = L * 2 * B * T * C * (3 * C + C + 4 * C + 4 * C)
    attention = L * 2 * (2 * B * T * T * C)  # q@k^T (B,H,T,D)x(B,H,D,T) and att@v, summed over heads
    head = 2 * B * T * C * V
    fwd = linear + attention + head
    return dict(linear=linear, attention=attention, head=head, forward=fwd, step=3 * fwd)


def make_batches(cfg: dict, n: int = 4):
    """n (idx, targets) pairs of shape (batch, block_size) cut from one random token stream (numpy int64)."""
    import numpy as np

    rng = np.random.default_rng(1234)
    B, T = cfg["batch"], cfg["block_size"]
    out = []
    for _ in range(n):
        stream = rng.integers(0, cfg["vocab_size"], size=(B, T + 1), dtype=np.int64)
        out.append((np.ascontiguousarray(stream[:, :-1]), np.ascontiguousarray(stream[:, 1:])))
    return out


def npgpt_config(cfg: dict):
    import npgpt

    return npgpt.GPTConfig(vocab_size=cfg["vocab_size"], block_size=cfg["block_size"], n_layer=cfg["n_layer"],
                           n_head=cfg["n_head"], n_embd=cfg["n_embd"], dropout=0.0)


def torch_model(cfg: dict, attention: str):
    import torch_gpt

    return torch_gpt.TorchGPT(cfg["vocab_size"], cfg["block_size"], cfg["n_layer"], cfg["n_head"], cfg["n_embd"],
                              attention=attention, seed=SEED)


# ---------------------------------------------------------------- worker process (one per framework x config)

def worker_main(framework: str, config_name: str) -> None:
    proto = os.fdopen(os.dup(1), "w", buffering=1)  # the protocol channel: the original stdout
    os.dup2(2, 1)  # anything else printed goes to stderr
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    cfg = CONFIGS[config_name]

    def send(obj: dict) -> None:
        proto.write(json.dumps(obj) + "\n")

    import numpy as np

    bu.use_repo_npgpt()
    from npgpt.memory import reuse_freed_memory

    reuse_freed_memory()  # the same glibc setting for every framework, as train() uses (docs/performance.md)
    if framework == "npgpt":
        import npgpt

        a = np.ones((256, 256), np.float32)
        a @ a  # start the BLAS thread pool before the baseline reading
    else:
        import torch

        torch.set_num_threads(threads)
        a = torch.ones(256, 256)
        a @ a
    rss_imports = bu.rss_mib()

    batches = make_batches(cfg)
    if framework == "npgpt":
        # the same number of cores as torch: batch slices (and AdamW chunks) on `threads` worker threads
        model = npgpt.GPT(npgpt_config(cfg), seed=SEED, dtype=np.float32, threads=threads)
        opt = npgpt.AdamW(model.params, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, threads=threads)
        nparams = model.num_params()

        def step(i: int):
            x, y = batches[i % len(batches)]
            _, loss = model.forward(x, y)
            grads = model.backward()
            npgpt.clip_grad_norm(grads, 1.0)
            opt.step(grads)
            return loss
    else:
        import torch_gpt

        model = torch_model(cfg, "sdpa" if framework == "torch-sdpa" else "manual")
        model.train()
        opt = torch_gpt.make_optimizer(model, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
        nparams = sum(p.numel() for p in model.parameters())
        tbatches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches]

        def step(i: int):
            x, y = tbatches[i % len(tbatches)]
            return torch_gpt.train_step(model, opt, x, y, 1.0).detach()

    gc.collect()
    rss_before = bu.rss_mib()
    hwm_reset = bu.reset_peak_rss()
    send(dict(ready=True, rss_imports=rss_imports, rss_before=rss_before, hwm_reset=hwm_reset, nparams=nparams))
    i = 0
    first_loss = None
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "run":
            t0 = time.perf_counter()
            for _ in range(cmd["steps"]):
                loss = step(i)
                if first_loss is None:
                    first_loss = float(loss)
                i += 1
            dt = time.perf_counter() - t0
            send(dict(seconds=dt, loss=float(loss), first_loss=first_loss, steps_done=i))
        elif cmd["cmd"] == "mem":
            send(dict(peak=bu.peak_rss_mib(), rss_now=bu.rss_mib()))
        elif cmd["cmd"] == "quit":
            break


class Worker:
    def __init__(self, framework: str, config_name: str, threads: int, mode: str = "--_worker") -> None:
        env = bu.set_thread_env(threads, dict(os.environ))
        self.framework = framework
        argv = [mode, framework] + ([config_name] if mode == "--_worker" else [])
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__)] + argv, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env, cwd=bu.ROOT)
        self.info = self.recv()

    def recv(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{self.framework} worker exited (code {self.proc.wait()}); see stderr above")
        return json.loads(line)

    def call(self, **cmd) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self.recv()

    def close(self) -> None:
        try:
            self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        self.proc.wait(timeout=60)


# ---------------------------------------------------------------- matmul peak (its own process)

PEAK_N, PEAK_REPS = 2048, 10


def peak_main(kind: str, serve: bool = False) -> None:
    """Time a float32 PEAK_N^3 matmul.  One-shot (prints one JSON line), or with serve=True a worker that
    answers {"cmd": "run", "reps": k} with k timings, so the peak can be re-measured inside each config's
    round-robin, under the same machine conditions as the training runs."""
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    proto = None
    if serve:
        proto = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((PEAK_N, PEAK_N), dtype=np.float32)
    b = rng.standard_normal((PEAK_N, PEAK_N), dtype=np.float32)
    out = {}
    if kind == "numpy":
        c = np.empty_like(a)
        mm = lambda: np.matmul(a, b, out=c)  # noqa: E731
        out["info"] = bu.numpy_info()
    else:
        import torch

        torch.set_num_threads(threads)
        ta, tb = torch.from_numpy(a), torch.from_numpy(b)
        tc = torch.empty_like(ta)
        mm = lambda: torch.mm(ta, tb, out=tc)  # noqa: E731
        out["info"] = bu.torch_info()
    for _ in range(2):
        mm()
    if serve:
        proto.write(json.dumps({"ready": True}) + "\n")
        for line in sys.stdin:
            cmd = json.loads(line)
            if cmd["cmd"] != "run":
                break
            ts = []
            for _ in range(cmd["reps"]):
                t0 = time.perf_counter()
                mm()
                ts.append(time.perf_counter() - t0)
            proto.write(json.dumps({"times": ts}) + "\n")
        return
    times = []
    for _ in range(PEAK_REPS):
        t0 = time.perf_counter()
        mm()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    out.update(seconds=med, gflops=2 * PEAK_N ** 3 / med / 1e9, best_gflops=2 * PEAK_N ** 3 / min(times) / 1e9)
    print(json.dumps(out))


def measure_peak(kind: str, threads: int) -> dict:
    env = bu.set_thread_env(threads, dict(os.environ))
    before, t0 = bu.cpu_snapshot(), os.times()
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--_peak", kind], capture_output=True,
                       text=True, env=env, cwd=bu.ROOT)
    after, t1 = bu.cpu_snapshot(), os.times()
    if r.returncode:
        sys.stderr.write(r.stderr)
        raise RuntimeError(f"matmul peak measurement ({kind}) failed")
    out = json.loads(r.stdout.strip().splitlines()[-1])
    ours = sum(t1[:4]) - sum(t0[:4])  # this process and the finished child, in seconds
    hz = os.sysconf("SC_CLK_TCK")
    out["other_load"] = max(0.0, ((after[1] - before[1]) / hz - ours) / (after[0] - before[0]))
    return out


# ---------------------------------------------------------------- benchmark driver

PEAK_REPS_PER_ROUND = 3


def bench_config(name: str, frameworks: list[str], args) -> dict:
    cfg = dict(CONFIGS[name])
    steps = args.steps or cfg["steps"]
    warmup = cfg["warmup"] if args.warmup is None else args.warmup
    tokens = cfg["batch"] * cfg["block_size"]
    fl = step_flops(cfg)
    print(f"\n=== {name}: n_layer={cfg['n_layer']} n_head={cfg['n_head']} n_embd={cfg['n_embd']} "
          f"block_size={cfg['block_size']} batch={cfg['batch']} vocab={cfg['vocab_size']}  "
          f"({tokens} tokens/step)")
    print(f"    model FLOPs/step (matmuls only, fwd x3 for fwd+bwd, full T x T attention, no causal halving): "
          f"{fl['step'] / 1e9:.3f} GFLOP  [forward {fl['forward'] / 1e9:.3f}: linear "
          f"{fl['linear'] / 1e9:.3f}, attention {fl['attention'] / 1e9:.3f}, LM head {fl['head'] / 1e9:.4f}]")
    print(f"    plan: {warmup} warm-up steps each, then {args.repeats} timed runs x {steps} steps, round-robin "
          f"over {', '.join(frameworks)}, then {PEAK_REPS_PER_ROUND} x {PEAK_N}^3 numpy matmuls for the peak")
    workers = {}
    peak_worker = None
    peak_times: list[float] = []
    try:
        for fw in frameworks:  # started one after the other: no overlap while building
            workers[fw] = Worker(fw, name, args.threads)
        peak_worker = Worker("numpy", name, args.threads, mode="--_peakworker")
        for fw in frameworks:
            if warmup:
                workers[fw].call(cmd="run", steps=warmup)
            time.sleep(GAP_S)
        runs: dict[str, list[float]] = {fw: [] for fw in frameworks}
        other: dict[str, list[float]] = {fw: [] for fw in frameworks}  # cores used by other processes
        steal: dict[str, list[float]] = {fw: [] for fw in frameworks}
        last = {}
        for r in range(args.repeats):
            cells = []
            for fw in frameworks:
                before = bu.cpu_snapshot(workers[fw].proc.pid)
                res = workers[fw].call(cmd="run", steps=steps)
                o, st = bu.foreign_load(before, bu.cpu_snapshot(workers[fw].proc.pid))
                runs[fw].append(res["seconds"] / steps)
                other[fw].append(o)
                steal[fw].append(st)
                last[fw] = res
                cells.append(f"{fw} {1e3 * runs[fw][-1]:8.1f}")
                time.sleep(GAP_S)
            pt = peak_worker.call(cmd="run", reps=PEAK_REPS_PER_ROUND)["times"]
            peak_times += pt
            cells.append(f"matmul {2 * PEAK_N ** 3 / statistics.median(pt) / 1e9:5.1f} GFLOP/s")
            time.sleep(GAP_S)
            busy = max(max(other[fw][-1], steal[fw][-1]) for fw in frameworks)
            print(f"    run {r + 1}/{args.repeats} ms/step: " + "   ".join(cells)
                  + (f"   [other load up to {busy:.2f} cores]" if busy >= 0.1 else ""), flush=True)
        mem = {fw: workers[fw].call(cmd="mem") for fw in frameworks}
    finally:
        for w in list(workers.values()) + ([peak_worker] if peak_worker else []):
            w.close()
    peak_gflops = 2 * PEAK_N ** 3 / statistics.median(peak_times) / 1e9
    out = {"config": cfg, "flops": fl, "steps_per_run": steps, "warmup": warmup, "frameworks": {},
           "peak_gflops": peak_gflops, "peak_best_gflops": 2 * PEAK_N ** 3 / min(peak_times) / 1e9}
    print(f"\n    matmul peak during these runs: {peak_gflops:.1f} GFLOP/s (median of {len(peak_times)}; best "
          f"{out['peak_best_gflops']:.1f})  <- %peak below")
    for fw in frameworks:
        med = statistics.median(runs[fw])
        info = workers[fw].info
        out["frameworks"][fw] = dict(
            ms_per_step=1e3 * med, ms_min=1e3 * min(runs[fw]), ms_max=1e3 * max(runs[fw]),
            runs_ms=[1e3 * t for t in runs[fw]], tokens_per_s=tokens / med, gflops=fl["step"] / med / 1e9,
            peak_frac=fl["step"] / med / 1e9 / peak_gflops, nparams=info["nparams"],
            rss_imports_mib=info["rss_imports"], rss_before_mib=info["rss_before"],
            peak_rss_mib=mem[fw]["peak"], hwm_reset=info["hwm_reset"],
            mem_step_mib=mem[fw]["peak"] - info["rss_before"],
            mem_total_mib=mem[fw]["peak"] - info["rss_imports"],
            first_loss=last[fw]["first_loss"], last_loss=last[fw]["loss"], steps_done=last[fw]["steps_done"],
            other_load=statistics.mean(other[fw]), other_load_max=max(other[fw]), steal=statistics.mean(steal[fw]))
    print(f"    {'framework':<11} {'tokens/s':>9} {'ms/step':>9} {'(min-max)':>15} {'GFLOP/s':>8} "
          f"{'%peak':>6} {'mem step':>9} {'mem total':>10} {'params':>9} {'loss 1st->last':>15}")
    for fw, d in out["frameworks"].items():
        print(f"    {fw:<11} {d['tokens_per_s']:9.0f} {d['ms_per_step']:9.1f} "
              f"{'(' + format(d['ms_min'], '.1f') + '-' + format(d['ms_max'], '.1f') + ')':>15} "
              f"{d['gflops']:8.1f} {100 * d['peak_frac']:5.1f}% {d['mem_step_mib']:8.1f}M {d['mem_total_mib']:9.1f}M "
              f"{d['nparams']:9d} {d['first_loss']:7.3f}->{d['last_loss']:.3f}")
    worst = max(d["other_load_max"] for d in out["frameworks"].values())
    print("    other processes during the timed runs (cores, mean/max): " + ", ".join(
        f"{fw} {d['other_load']:.2f}/{d['other_load_max']:.2f}" for fw, d in out["frameworks"].items())
        + "; hypervisor steal: " + ", ".join(f"{fw} {d['steal']:.2f}" for fw, d in out["frameworks"].items()))
    if worst >= 0.25:
        print(f"    WARNING: other processes used up to {worst:.2f} of the machine's cores during the timed runs; "
              f"these figures are noisy (compare the min-max spread; rerun on a quiet machine)")
    if not all(d["hwm_reset"] for d in out["frameworks"].values()):
        print("    note: VmHWM could not be reset here, so 'mem step' includes model construction")
    return out


def verdicts(name: str, res: dict) -> dict:
    fws = res["frameworks"]
    n = fws["npgpt"]
    tgt = TARGETS[name]
    v: dict = {}
    torch_fws = [fw for fw in fws if fw != "npgpt"]
    if torch_fws:
        best = max(torch_fws, key=lambda fw: fws[fw]["tokens_per_s"])
        t = fws[best]
        ratio = n["tokens_per_s"] / t["tokens_per_s"]
        v["speed"] = dict(vs=best, ratio=ratio, target=tgt["speed"], ok=ratio >= tgt["speed"])
        # memory: against plain `torch` (same attention formulation as npgpt; stable, unlike "the faster one")
        mref = "torch" if "torch" in fws else best
        m = fws[mref]
        v["memory"] = dict(vs=mref, npgpt=n["mem_total_mib"], torch=m["mem_total_mib"],
                           ok=n["mem_total_mib"] <= m["mem_total_mib"],
                           step_npgpt=n["mem_step_mib"], step_torch=m["mem_step_mib"],
                           step_ok=n["mem_step_mib"] <= m["mem_step_mib"],
                           others={fw: dict(total=fws[fw]["mem_total_mib"], step=fws[fw]["mem_step_mib"],
                                            ok=n["mem_total_mib"] <= fws[fw]["mem_total_mib"])
                                   for fw in torch_fws if fw != mref})
    if tgt["peak_frac"] is not None:
        v["peak"] = dict(frac=n["peak_frac"], target=tgt["peak_frac"], ok=n["peak_frac"] >= tgt["peak_frac"])
    return v


def pf(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def print_summary(results: dict, peak: dict) -> None:
    print("\n=== Summary (npgpt vs the FASTER torch variant; targets: small >= 1.0x torch tokens/s; "
          "baby >= 0.8x torch and >= 60% of matmul peak; memory <= torch's)")
    print(f"    matmul peak at the start (numpy/OpenBLAS float32 {PEAK_N}^3, median of {PEAK_REPS}): "
          f"{peak['numpy']['gflops']:.1f} GFLOP/s" + (f";  torch/MKL: {peak['torch']['gflops']:.1f} GFLOP/s"
                                                       if "torch" in peak else "")
          + ";  during each config's runs: " + ", ".join(f"{n} {r['peak_gflops']:.1f}" for n, r in results.items())
          + " GFLOP/s (used for %peak)")
    for name, res in results.items():
        fws, v = res["frameworks"], res["verdicts"]
        n = fws["npgpt"]
        load = max(d["other_load"] for d in fws.values())
        print(f"\n  {name}" + (f"    ** UNRELIABLE: other processes used {load:.2f} cores on average during these "
                                f"runs; PASS/FAIL on speed and %peak mean little **" if load >= 0.25 else ""))
        if "speed" in v:
            s, m = v["speed"], v["memory"]
            t = fws[s["vs"]]
            print(f"    tokens/s      npgpt {n['tokens_per_s']:9.0f}   {s['vs']} {t['tokens_per_s']:9.0f}   "
                  f"ratio {s['ratio']:.3f}x  (target >= {s['target']:.1f}x)  {pf(s['ok'])}")
            print(f"                  (fastest runs only: npgpt {n['ms_min']:.1f} ms vs {s['vs']} {t['ms_min']:.1f} ms "
                  f"-> {t['ms_min'] / n['ms_min']:.3f}x; informative)")
            others = [fw for fw in fws if fw not in ("npgpt", s["vs"])]
            for fw in others:
                print(f"                  ({fw}: {fws[fw]['tokens_per_s']:.0f} tokens/s, npgpt/{fw} "
                      f"{n['tokens_per_s'] / fws[fw]['tokens_per_s']:.3f}x)")
            print(f"    memory total  npgpt {m['npgpt']:7.1f} MiB   {m['vs']} {m['torch']:7.1f} MiB   "
                  f"(peak RSS during steps - RSS after imports)  {pf(m['ok'])}")
            for fw, o in m["others"].items():
                print(f"                  (vs {fw}: {o['total']:.1f} MiB -> {pf(o['ok'])}; secondary: fused "
                      f"attention keeps no T x T matrices)")
            print(f"    memory step   npgpt {m['step_npgpt']:7.1f} MiB   {m['vs']} {m['step_torch']:7.1f} MiB   "
                  f"(peak RSS during steps - RSS before 1st step; informative, see note)  "
                  f"{'<=' if m['step_ok'] else '>'} {m['vs']}")
            for fw, o in m["others"].items():
                print(f"                  ({fw}: step {o['step']:.1f} MiB)")
        else:
            print(f"    tokens/s      npgpt {n['tokens_per_s']:9.0f}   (torch not measured: speed and memory "
                  f"targets n/a)")
            print(f"    memory total  npgpt {n['mem_total_mib']:7.1f} MiB   step {n['mem_step_mib']:7.1f} MiB")
        if "peak" in v:
            p = v["peak"]
            print(f"    %peak         npgpt {100 * p['frac']:5.1f}% of {res['peak_gflops']:.1f} GFLOP/s  "
                  f"(target >= {100 * p['target']:.0f}%)  {pf(p['ok'])}")
        else:
            print(f"    %peak         npgpt {100 * n['peak_frac']:5.1f}%  (no target for {name})")
    print("\n  Notes: GFLOP/s = analytic matmul FLOPs per step / median step time (LayerNorm, GELU, softmax, "
          "AdamW not counted;\n  attention counted over the full T x T, no causal halving, also for torch-sdpa "
          "which may skip the masked half).\n  'memory total' = peak RSS during the warm-up and timed steps minus "
          "RSS after importing the framework: it\n  covers params, grads, optimizer state, activations and "
          "workspace for both frameworks; PASS/FAIL\n  compares it with plain `torch` (same attention "
          "formulation as npgpt), and also shows the verdict against torch-sdpa.\n  'memory step' = the same peak "
          "minus RSS "
          "right before the first step; npgpt allocates grads and AdamW moments at\n  construction (before that "
          "reading) while torch allocates them during the first step, so this figure favours npgpt.")


def verify(args) -> int:
    """Check the torch model against npgpt, in lockstep for 3 steps and both attention variants:
    before each step npgpt's float32 params are copied into the torch model, then the losses and every
    gradient are compared; then both optimizers are fed npgpt's gradients (clip + AdamW on each side) and the
    updated params are compared.  Comparing at identical params isolates each step's arithmetic; a free-running
    comparison would also measure how AdamW amplifies float32 rounding on near-zero gradients."""
    bu.set_thread_env(args.threads)
    bu.use_repo_npgpt()
    import numpy as np
    import torch

    import npgpt
    import torch_gpt

    torch.set_num_threads(args.threads)
    tol = 1e-4
    ok = True
    for name in args.configs:
        cfg = CONFIGS[name]
        batches = make_batches(cfg)
        for attention in ("manual", "sdpa"):
            model = npgpt.GPT(npgpt_config(cfg), seed=SEED, dtype=np.float32)
            opt = npgpt.AdamW(model.params, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
            tm = torch_model(cfg, attention)
            topt = torch_gpt.make_optimizer(tm, lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
            named = dict(tm.named_parameters())
            shown = ["wte.weight", "h.0.attn.c_attn.weight", f"h.{cfg['n_layer'] - 1}.mlp.c_proj.weight",
                     "ln_f.weight"]
            print(f"\n--verify {name} / torch {attention} attention (tolerance {tol:g})")
            for s in range(3):
                torch_gpt.copy_from_npgpt(tm, model.params)
                x, y = batches[s % len(batches)]
                _, loss = model.forward(x, y)
                grads = model.backward()
                topt.zero_grad(set_to_none=True)
                _, tloss = tm(torch.from_numpy(x), torch.from_numpy(y))
                tloss.backward()
                dloss = abs(float(loss) - tloss.item())
                worst, worst_key, absdiff = 0.0, None, {}
                for k, g in grads.items():
                    tg = torch_gpt.to_npgpt_layout(k, named[k].grad)
                    absdiff[k] = float(np.max(np.abs(g - tg)))
                    err = absdiff[k] / (float(np.max(np.abs(tg))) + 1e-6)
                    if err > worst:
                        worst, worst_key = err, k
                good = dloss <= tol and worst <= tol
                ok &= good
                print(f"  step {s}: loss npgpt {float(loss):.6f} torch {tloss.item():.6f} |diff| {dloss:.1e}; "
                      f"grads max|diff|/(max|g|+1e-6): worst {worst:.1e} ({worst_key})  {pf(good)}")
                print("          max|grad diff|: " + ", ".join(f"{k} {absdiff[k]:.1e}" for k in shown))
                with torch.no_grad():  # both optimizers get npgpt's gradients
                    for k, g in grads.items():
                        src = torch.from_numpy(g.copy())
                        named[k].grad.copy_(src.T if torch_gpt._is_linear_weight(k) else src)
                npgpt.clip_grad_norm(grads, 1.0)
                opt.step(grads)
                torch.nn.utils.clip_grad_norm_(tm.parameters(), 1.0)
                topt.step()
                pdiff, pkey = 0.0, None
                for k, p in model.params.items():
                    d = float(np.max(np.abs(p - torch_gpt.to_npgpt_layout(k, named[k]))))
                    if d > pdiff:
                        pdiff, pkey = d, k
                good = pdiff <= tol
                ok &= good
                print(f"          params after clip + AdamW step {s + 1}: max|diff| {pdiff:.1e} ({pkey})  {pf(good)}")
    print(f"\nverify: {'all checks PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--_worker":
        worker_main(sys.argv[2], sys.argv[3])
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--_peak":
        peak_main(sys.argv[2])
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--_peakworker":
        peak_main(sys.argv[2], serve=True)
        return 0
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    ap.add_argument("--steps", type=int, default=None, help="steps per timed run (default: small 20, baby 3)")
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per framework; the median is reported")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps (default: small 5, baby 2)")
    ap.add_argument("--threads", type=int, default=2, help="threads for every framework (default 2)")
    ap.add_argument("--no-torch", action="store_true", help="measure npgpt only")
    ap.add_argument("--json", metavar="OUT", help="also write every figure to this JSON file")
    ap.add_argument("--verify", action="store_true", help="check the torch model against npgpt and exit")
    args = ap.parse_args()
    if args.verify:
        if not bu.torch_available():
            print("--verify needs torch, which is not installed")
            return 2
        return verify(args)

    use_torch = not args.no_torch and bu.torch_available()
    frameworks = ["npgpt"] + (["torch", "torch-sdpa"] if use_torch else [])
    t_start = time.perf_counter()
    print("npgpt training-step benchmark")
    for line in bu.env_report():
        print("  " + line)
    print(f"  Threads: {args.threads} for every framework (OMP/OPENBLAS/MKL_NUM_THREADS in each worker, "
          f"torch.set_num_threads; npgpt GPT(threads=...) and AdamW(threads=...))")
    print("  glibc malloc: freed memory kept for reuse in every worker, torch's included "
          "(npgpt.memory.reuse_freed_memory)")
    peak = {"numpy": measure_peak("numpy", args.threads)}
    if use_torch:
        peak["torch"] = measure_peak("torch", args.threads)
    for kind in peak:
        for line in peak[kind]["info"]:
            print("  " + line)
    if not use_torch:
        print("  torch: " + ("skipped (--no-torch)" if args.no_torch else "not installed") +
              " -> npgpt's figures only")
    print(f"  float32 matmul peak, {PEAK_N}x{PEAK_N} @ {PEAK_N}x{PEAK_N}, median of {PEAK_REPS}: numpy/OpenBLAS "
          f"{peak['numpy']['gflops']:.1f} GFLOP/s (best {peak['numpy']['best_gflops']:.1f})"
          + (f"; torch {peak['torch']['gflops']:.1f} GFLOP/s (best {peak['torch']['best_gflops']:.1f})"
             if use_torch else "") + "\n  (%peak uses the numpy peak re-measured inside each config's round-robin, "
          "see below)")
    print("  other processes while measuring the peak (cores, whole process incl. imports): "
          + ", ".join(f"{k} {v['other_load']:.2f}" for k, v in peak.items()) + f"; load average {bu.loadavg()}")

    results = {}
    for name in args.configs:
        res = bench_config(name, frameworks, args)
        res["verdicts"] = verdicts(name, res)
        results[name] = res
    print_summary(results, peak)
    print(f"\n  total wall time {time.perf_counter() - t_start:.0f} s; load average at the end {bu.loadavg()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(env=bu.env_report(), threads=args.threads, peak=peak, results=results), f, indent=1)
        print(f"  wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
