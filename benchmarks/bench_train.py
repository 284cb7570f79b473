#!/usr/bin/env python
"""Training-step speed and peak memory of npgpt against PyTorch eager, torch.compile and llm.c's CPU trainer.

One step = forward + backward + AdamW, float32, no gradient clipping (--clip adds a global-norm clip to 1.0),
on the same fixed random batches for every framework.

    python benchmarks/bench_train.py                          # the full table (all six configs; ~40 min on 2 cores)
    python benchmarks/bench_train.py --llmc ../shared/peers/llm.c   # ... with llm.c as the fourth framework
    python benchmarks/bench_train.py --quick                  # small only, 3 rounds (~1-2 min)
    python benchmarks/bench_train.py --configs long1024 long2048 long4096 --json long.json
    python benchmarks/bench_train.py --verify                 # check the torch models compute what npgpt does

Every timed run is a FRESH process (build the model, warm up, time the steps, report the peak RSS, exit),
with OMP/OPENBLAS/MKL_NUM_THREADS = --threads and without OPENBLAS_CORETYPE (OpenBLAS picks its kernels for
the CPU, as MKL and llm.c's -march=native build do; --keep-openblas-coretype keeps the caller's).  A round
runs each framework once, plus a float32 matmul-peak process, in an order rotated by one every round; each
figure is the median over the rounds, shown with min-max.  torch and llm.c are optional: what is not
measured prints as n/a.  benchmarks/README.md explains every figure.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import _benchutil as bu
import _llmc

CONFIGS = {
    # model shapes, the batch (batch sequences of T tokens; block_size is the model's maximum length), and
    # attention_block: npgpt's tiled attention (memory linear in T) with blocks of that many positions
    "small": dict(n_layer=4, n_head=4, n_embd=128, block_size=64, T=64, vocab_size=65, batch=12),
    "baby": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, T=256, vocab_size=65, batch=4),
    "gpt2-124m": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, T=64, vocab_size=50257, batch=4),
    "long1024": dict(n_layer=6, n_head=6, n_embd=384, block_size=1024, T=1024, vocab_size=65, batch=1,
                     attention_block=512),
    "long2048": dict(n_layer=6, n_head=6, n_embd=384, block_size=2048, T=2048, vocab_size=65, batch=1,
                     attention_block=512),
    "long4096": dict(n_layer=6, n_head=6, n_embd=384, block_size=4096, T=4096, vocab_size=65, batch=1,
                     attention_block=512),
}
LONG = ("long1024", "long2048", "long4096")
PLAN = {  # per config: warm-up steps and timed steps in each process, rounds (fresh processes per framework)
    # Many short processes rather than a few long ones: a process's steps spread 4-12% (IQR over the median)
    # while the medians of fresh processes of the same framework spread 7-40% (benchmarks/README.md), so the
    # rounds are what steadies a median.
    "small": dict(warmup=3, steps=10, rounds=9),
    "baby": dict(warmup=3, steps=5, rounds=9),
    "gpt2-124m": dict(warmup=3, steps=3, rounds=5),
    "long1024": dict(warmup=3, steps=4, rounds=3),
    "long2048": dict(warmup=3, steps=3, rounds=3),
    "long4096": dict(warmup=3, steps=2, rounds=3),
}
FRAMEWORKS = ("npgpt", "torch", "torch-sdpa", "torch-compile", "llmc")
TORCH_FWS = ("torch", "torch-sdpa", "torch-compile")
LONG_FRAMEWORKS = ("npgpt", "torch-sdpa", "torch")  # the long configs: memory against torch's fused attention
LABEL = {"npgpt": "npgpt", "torch": "torch eager, manual attention", "torch-sdpa": "torch eager, SDPA attention",
         "torch-compile": "torch.compile (inductor, SDPA model)", "llmc": "llm.c train_gpt2.c",
         "matmul": "numpy float32 matmul peak"}
TARGETS = {  # npgpt's speed as (other framework's ms/step) / (npgpt's ms/step); %peak of the measured matmul
    "small": dict(eager=1.25, compile=1.2),
    "baby": dict(eager=1.15, compile=1.1),
    "gpt2-124m": dict(eager=1.1, llmc=2.5, peak_frac=0.60),
}
LINEAR_MAX_RATIO = 2.15  # memory "linear in T": at most this factor per doubling of T (quadratic tends to 4)
OPT = dict(lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
CLIP = 1.0
N_BATCHES = 4
GAP_S = 0.5  # pause between processes: lets the previous process's threads and page cache settle
SEED = 0
PEAK_N, PEAK_REPS = 2048, 6


# ---------------------------------------------------------------- shared pieces

def step_flops(cfg: dict) -> dict:
    """Matmul FLOPs of one training step, counted analytically (2*M*N*K per matmul).

    Forward: the four linear layers per block (c_attn C->3C, c_proj C->C, c_fc C->4C, mlp.c_proj 4C->C:
    2*B*T*C*12C), attention q@k^T and att@v over the full T x T (no causal halving), and the tied LM head
    (2*B*T*C*V).  Backward = 2x forward (two matmuls per forward matmul), so the step counts 3x forward.  Not
    counted: LayerNorm, GELU, softmax, embeddings, cross-entropy, clipping and AdamW.
    """
    B, T, C, L, V = cfg["batch"], cfg["T"], cfg["n_embd"], cfg["n_layer"], cfg["vocab_size"]
    linear = L * 2 * B * T * C * (3 * C + C + 4 * C + 4 * C)
    attention = L * 2 * (2 * B * T * T * C)  # q@k^T (B,H,T,D)x(B,H,D,T) and att@v, summed over heads
    head = 2 * B * T * C * V
    fwd = linear + attention + head
    return dict(linear=linear, attention=attention, head=head, forward=fwd, step=3 * fwd)


def make_batches(cfg: dict, n: int = N_BATCHES):
    """n (idx, targets) pairs of shape (batch, T) cut from one seeded random token stream (numpy int64)."""
    import numpy as np

    rng = np.random.default_rng(1234)
    B, T = cfg["batch"], cfg["T"]
    out = []
    for _ in range(n):
        stream = rng.integers(0, cfg["vocab_size"], size=(B, T + 1), dtype=np.int64)
        out.append((np.ascontiguousarray(stream[:, :-1]), np.ascontiguousarray(stream[:, 1:])))
    return out


def npgpt_config(cfg: dict):
    import npgpt

    return npgpt.GPTConfig(vocab_size=cfg["vocab_size"], block_size=cfg["block_size"], n_layer=cfg["n_layer"],
                           n_head=cfg["n_head"], n_embd=cfg["n_embd"], dropout=0.0,
                           attention_block=cfg.get("attention_block"))


def torch_model(cfg: dict, attention: str):
    import torch_gpt

    return torch_gpt.TorchGPT(cfg["vocab_size"], cfg["block_size"], cfg["n_layer"], cfg["n_head"], cfg["n_embd"],
                              attention=attention, seed=SEED)


def shape_label(name: str) -> str:
    c = CONFIGS[name]
    return (f"{name} (L{c['n_layer']} H{c['n_head']} C{c['n_embd']} T{c['T']} B{c['batch']}, V{c['vocab_size']}"
            + (f", block {c['block_size']}" if c["block_size"] != c["T"] else "") + ")")


# ---------------------------------------------------------------- worker processes (one timed run each)

def _protocol():
    """The original stdout as the protocol channel; anything else printed goes to stderr."""
    proto = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    return proto


def run_main(framework: str, name: str, spec: dict) -> None:
    """One timed run in this fresh process: import, build, warm up, time spec['steps'] steps, report."""
    proto = _protocol()
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    cfg = CONFIGS[name]
    import numpy as np

    bu.use_repo_npgpt()
    if framework != "npgpt":  # npgpt's model applies it itself: its library path is timed as a user calls it
        from npgpt.runtime.memory import reuse_freed_memory

        reuse_freed_memory()  # the same glibc setting for every framework, as every npgpt model uses
    info: list[str] = []
    if framework == "npgpt":
        import npgpt

        a = np.ones((256, 256), np.float32)
        a @ a  # start the BLAS thread pool before the baseline reading
    else:
        import torch

        torch.set_num_threads(threads)
        a = torch.ones(256, 256)
        a @ a
        info = bu.torch_info()
    rss_imports = bu.rss_mib()

    batches = make_batches(cfg)
    clip = CLIP if spec["clip"] else None
    if framework == "npgpt":
        # the same number of cores as torch: batch slices (and AdamW chunks) on `threads` worker threads
        model = npgpt.GPT(npgpt_config(cfg), seed=SEED, dtype=np.float32, threads=threads)
        opt = npgpt.AdamW(model.params, **OPT, threads=threads)
        nparams = model.num_params()

        def step(i: int) -> float:
            x, y = batches[i % len(batches)]
            _, loss = model.forward(x, y)
            grads = model.backward()
            if clip is not None:
                npgpt.clip_grad_norm(grads, clip)
            opt.step(grads)
            return float(loss)
    else:
        import torch_gpt

        tmodel = torch_model(cfg, "manual" if framework == "torch" else "sdpa")
        tmodel.train()
        forward = torch_gpt.compile_model(tmodel) if framework == "torch-compile" else tmodel
        topt = torch_gpt.make_optimizer(tmodel, **OPT)
        nparams = sum(p.numel() for p in tmodel.parameters())
        tbatches = [(torch.from_numpy(x), torch.from_numpy(y)) for x, y in batches]

        def step(i: int) -> float:
            x, y = tbatches[i % len(tbatches)]
            return float(torch_gpt.train_step(tmodel, topt, x, y, clip, forward).detach())

    gc.collect()
    rss_built = bu.rss_mib()
    warm, times, losses = [], [], []
    for i in range(spec["warmup"]):
        t0 = time.perf_counter()
        losses.append(step(i))
        warm.append(time.perf_counter() - t0)
    peak_warmup = bu.peak_rss_mib()  # lifetime high-water mark so far (includes torch.compile's compiler)
    hwm_reset = bu.reset_peak_rss()  # from here VmHWM covers the timed steps only
    workers = npgpt_workers(model) if framework == "npgpt" else []  # batch slices in worker processes
    peak_warmup += sum(worker_peak_mib(pid) for pid in workers)
    hwm_reset = all([hwm_reset] + [bu.reset_peak_rss(pid) for pid in workers])
    before = bu.cpu_snapshot(helpers=tuple(workers))  # the slice workers' CPU is npgpt's own, not other load
    t_start = time.perf_counter()
    for i in range(spec["warmup"], spec["warmup"] + spec["steps"]):
        t0 = time.perf_counter()
        losses.append(step(i))
        times.append(time.perf_counter() - t0)
    seconds = time.perf_counter() - t_start
    other, steal = bu.foreign_load(before, bu.cpu_snapshot(helpers=tuple(workers)))
    proto.write(json.dumps(dict(
        seconds=seconds, step_s=times, warmup_s=warm, nparams=int(nparams), rss_imports=rss_imports,
        rss_built=rss_built, peak_warmup=peak_warmup, hwm_reset=hwm_reset, workers=len(workers),
        peak=bu.peak_rss_mib() + sum(worker_peak_mib(pid) for pid in workers),
        first_loss=losses[0], loss=losses[-1], other_load=other, steal=steal, info=info)) + "\n")


def worker_peak_mib(pid: int) -> float:
    """A slice worker's peak RSS without its shared-memory pages (RssShmem: the model's parameter buffer and the
    worker's gradient buffer, both also mapped, and counted, in the main process).  Its imports stay in, and
    so do library pages shared with the main process: the sum over-counts rather than misses."""
    shmem = bu.proc_status_kb("RssShmem", pid) or 0
    return bu.peak_rss_mib(pid) - shmem / 1024.0


def npgpt_workers(model) -> list[int]:
    """PIDs of the worker processes running this model's batch slices (npgpt/data_parallel.py), if any: their
    peak RSS (worker_peak_mib) is added to npgpt's."""
    group = getattr(model, "_group", None)
    if group is None:
        return []
    from npgpt.runtime import data_parallel

    return [w.proc.pid for w in data_parallel._pool if group.key in w.attached and w.alive()]


def peak_main() -> None:
    """The float32 numpy matmul peak in this fresh process: PEAK_N^3, 2 untimed calls, PEAK_REPS timed."""
    proto = _protocol()
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.standard_normal((PEAK_N, PEAK_N), dtype=np.float32)
    b = rng.standard_normal((PEAK_N, PEAK_N), dtype=np.float32)
    c = np.empty_like(a)
    for _ in range(2):
        np.matmul(a, b, out=c)
    before = bu.cpu_snapshot()
    times = []
    for _ in range(PEAK_REPS):
        t0 = time.perf_counter()
        np.matmul(a, b, out=c)
        times.append(time.perf_counter() - t0)
    other, steal = bu.foreign_load(before, bu.cpu_snapshot())
    med = statistics.median(times)
    proto.write(json.dumps(dict(seconds=med, gflops=2 * PEAK_N ** 3 / med / 1e9, times=times,
                                other_load=other, steal=steal, info=bu.numpy_info())) + "\n")


def llmc_prep_main(name: str, outdir: str) -> None:
    """Write the inputs of llm.c's driver for config `name`: a random npgpt model (seed SEED) as an llm.c
    checkpoint (padded vocabulary: npgpt.gpt2.llmc's default, V rounded up to a multiple of 128, as llm.c's own
    converter does) and the benchmark's batches as int32 (N_BATCHES, 2, B, T)."""
    import numpy as np

    bu.use_repo_npgpt()
    import npgpt
    from npgpt.gpt2 import llmc

    cfg = CONFIGS[name]
    model = npgpt.GPT(npgpt_config(cfg), seed=SEED, dtype=np.float32, threads=1)
    os.makedirs(outdir, exist_ok=True)
    llmc.write_model(os.path.join(outdir, "model.bin"), model)
    arr = np.stack([np.stack([x, y]) for x, y in make_batches(cfg)]).astype("<i4")  # (N, 2, B, T)
    tmp = os.path.join(outdir, f"batches.bin.tmp{os.getpid()}")
    arr.tofile(tmp)
    os.replace(tmp, os.path.join(outdir, "batches.bin"))


# ---------------------------------------------------------------- parent: spawning and the rotation

class Context:
    """What the parent knows for the whole invocation: thread count, clip, llm.c's binary, compile cache."""

    def __init__(self, args) -> None:
        self.threads, self.clip = args.threads, args.clip
        self.keep_coretype = args.keep_openblas_coretype
        self.cache = args.cache
        self.llmc_exe: str | None = None
        self.llmc_reason = "pass --llmc PATH to a checkout"  # why llm.c is n/a
        self.llmc_inputs: dict[str, tuple[str, str]] = {}
        self.inductor_dir = tempfile.mkdtemp(prefix="npgpt-bench-inductor-")

    def env(self, framework: str) -> dict:
        env = bu.set_thread_env(self.threads, dict(os.environ))
        if not self.keep_coretype:  # OpenBLAS picks its kernels for this CPU, as MKL and -march=native do
            env.pop("OPENBLAS_CORETYPE", None)
        if framework == "torch-compile":
            env["TORCHINDUCTOR_CACHE_DIR"] = self.inductor_dir  # fresh per invocation: round 1 compiles cold
            env["TORCHINDUCTOR_COMPILE_THREADS"] = "1"  # compile in-process: no worker pool outside our RSS
        return env

    def close(self) -> None:
        shutil.rmtree(self.inductor_dir, ignore_errors=True)


def spawn(argv: list[str], env: dict) -> tuple[dict | None, str, float]:
    """Run one fresh process; (its JSON result or None, an error line, wall seconds)."""
    t0 = time.perf_counter()
    try:
        r = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=bu.ROOT)
    except OSError as e:
        return None, f"cannot start {argv[0]}: {e.strerror or e}", 0.0
    wall = time.perf_counter() - t0
    if r.returncode:
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()] or ["(no output)"]
        return None, f"exit code {r.returncode}: {lines[-1][:300]}", wall
    try:
        if argv[0].endswith("llmc_driver"):
            return _llmc.parse_result(r.stdout), "", wall
        return json.loads(r.stdout.strip().splitlines()[-1]), "", wall
    except (ValueError, IndexError, _llmc.LlmcError) as e:
        return None, f"unreadable result ({e})", wall


def run_once(fw: str, name: str, plan: dict, ctx: Context) -> tuple[dict | None, str, float]:
    me = os.path.abspath(__file__)
    if fw == "matmul":
        return spawn([sys.executable, me, "--_peak"], ctx.env(fw))
    if fw == "llmc":
        cfg = CONFIGS[name]
        model_bin, batches_bin = ctx.llmc_inputs[name]
        argv = _llmc.run_args(ctx.llmc_exe or "", model_bin, batches_bin, cfg["batch"], cfg["T"], N_BATCHES,
                              plan["warmup"], plan["steps"], OPT["lr"], OPT["betas"], OPT["eps"],
                              OPT["weight_decay"])
        return spawn(argv, ctx.env(fw))
    spec = dict(warmup=plan["warmup"], steps=plan["steps"], clip=ctx.clip)
    return spawn([sys.executable, me, "--_run", fw, name, json.dumps(spec)], ctx.env(fw))


def manual_attention_fits(name: str) -> tuple[bool, float]:
    """Whether torch's manual attention fits in 70% of the available memory, and the estimate in MiB: about
    3 B*H*T*T float arrays per layer plus 4 transient (measured: 2.6 GiB above imports at long2048), + 1 GiB."""
    c = CONFIGS[name]
    est = (3 * c["n_layer"] + 4) * c["batch"] * c["n_head"] * c["T"] ** 2 * 4 / 2 ** 20 + 1024
    avail = bu.mem_available_mib()
    return (avail is None or est <= 0.7 * avail), est


def choose_frameworks(name: str, args, have_torch: bool, ctx: Context) -> tuple[list[str], list[str]]:
    """(frameworks to run for this config, notes on what is skipped and why)."""
    base = LONG_FRAMEWORKS if name in LONG else FRAMEWORKS
    wanted = [fw for fw in base if args.frameworks is None or fw in args.frameworks]
    out, notes = [], []
    for fw in wanted:
        if fw in TORCH_FWS and not have_torch:
            notes.append(f"{fw}: n/a ({'--no-torch' if args.no_torch else 'torch not installed'})")
        elif fw == "llmc" and ctx.llmc_exe is None:
            notes.append(f"llm.c: n/a ({ctx.llmc_reason})")
        elif fw == "torch" and name in LONG:
            fits, est = manual_attention_fits(name)
            if fits:
                out.append(fw)
            else:
                notes.append(f"torch (manual attention): skipped, needs ~{est:.0f} MiB > 70% of available memory")
        else:
            out.append(fw)
    if name in LONG:
        notes.append("torch.compile and llm.c are not run on the long configs (llm.c keeps 4 x L*B*H*T*T floats "
                     "of attention activations; the comparison there is torch's SDPA)")
    return out, notes


def prepare_llmc(name: str, ctx: Context) -> str | None:
    """Write (once, cached) the checkpoint and batches llm.c's driver reads for `name`; an error or None."""
    cfg = CONFIGS[name]
    key = json.dumps([cfg, SEED, N_BATCHES], sort_keys=True)  # a new shape or batch set: new files
    d = os.path.join(ctx.cache, "llmc-inputs", f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}")
    model_bin, batches_bin = os.path.join(d, "model.bin"), os.path.join(d, "batches.bin")
    if not (os.path.isfile(model_bin) and os.path.isfile(batches_bin)):
        env = bu.set_thread_env(1, dict(os.environ))
        r = subprocess.run([sys.executable, os.path.abspath(__file__), "--_llmc_prep", name, d], env=env,
                           cwd=bu.ROOT, capture_output=True, text=True)
        if r.returncode:
            lines = r.stderr.strip().splitlines() or ["(no output)"]
            return f"writing the llm.c checkpoint failed: {lines[-1]}"
    ctx.llmc_inputs[name] = (model_bin, batches_bin)
    return None


def summarize(fw: str, runs: list[dict], name: str, plan: dict, peak_gflops: float | None) -> dict:
    cfg = CONFIGS[name]
    ms = [1e3 * r["seconds"] / plan["steps"] for r in runs]
    med = statistics.median(ms)
    tokens = cfg["batch"] * cfg["T"]
    gflops = step_flops(cfg)["step"] / (med / 1e3) / 1e9
    peaks = [r["peak"] if r["hwm_reset"] else max(r["peak"], r["peak_warmup"]) for r in runs]
    above = [p - r["rss_imports"] for p, r in zip(peaks, runs)]
    d = dict(ms_per_step=med, ms_min=min(ms), ms_max=max(ms), ms_runs=ms, tokens_per_s=tokens / (med / 1e3),
             gflops=gflops, peak_frac=(gflops / peak_gflops if peak_gflops else None),
             peak_mib=statistics.median(peaks), peak_min=min(peaks), peak_max=max(peaks),
             above_imports_mib=statistics.median(above),
             rss_imports_mib=statistics.median(r["rss_imports"] for r in runs),
             peak_warmup_mib=statistics.median(r["peak_warmup"] for r in runs),
             hwm_reset=all(r["hwm_reset"] for r in runs), nparams=runs[0]["nparams"],
             first_loss=runs[0]["first_loss"], last_loss=runs[0]["loss"],
             other_load=statistics.mean(r["other_load"] for r in runs),
             other_load_max=max(r["other_load"] for r in runs), steal=statistics.mean(r["steal"] for r in runs),
             first_step_s=[r["warmup_s"][0] if r["warmup_s"] else None for r in runs], runs=runs)
    if fw == "torch-compile" and runs[0]["warmup_s"]:
        # compile time: the first step (dynamo trace + AOTAutograd + inductor codegen/compile of forward and
        # backward) minus an ordinary step; round 1 starts from an empty inductor cache, later rounds reuse it
        extra = [r["warmup_s"][0] - med / 1e3 for r in runs]
        d["compile_cold_s"] = extra[0]
        d["compile_warm_s"] = statistics.median(extra[1:]) if len(extra) > 1 else None
    return d


def bench_config(name: str, frameworks: list[str], plan: dict, ctx: Context, notes: list[str]) -> dict:
    cfg = CONFIGS[name]
    fl = step_flops(cfg)
    tokens = cfg["batch"] * cfg["T"]
    print(f"\n=== {shape_label(name)}: {tokens} tokens/step"
          + (f", npgpt attention_block={cfg['attention_block']} (tiled attention)" if "attention_block" in cfg
             else ""))
    print(f"    model FLOPs/step (matmuls, 3x forward, full T x T attention): {fl['step'] / 1e9:.3f} GFLOP  "
          f"[forward: linear {fl['linear'] / 1e9:.3f}, attention {fl['attention'] / 1e9:.3f}, "
          f"LM head {fl['head'] / 1e9:.4f}]")
    members = frameworks + ["matmul"]
    print(f"    plan: {plan['rounds']} rounds; each round one fresh process per framework ({', '.join(members)}), "
          f"order rotated by one per round; each process {plan['warmup']} warm-up + {plan['steps']} timed steps")
    for n in notes:
        print("    " + n)
    runs: dict[str, list[dict]] = {fw: [] for fw in members}
    errors: dict[str, str] = {}
    for r in range(plan["rounds"]):
        k = r % len(members)
        order = members[k:] + members[:k]
        busy = 0.0
        failed = []
        print(f"    round {r + 1}/{plan['rounds']} ms/step:", end="", flush=True)  # cells appear as runs finish
        for fw in order:
            if fw in errors:
                continue
            res, err, wall = run_once(fw, name, plan, ctx)
            time.sleep(GAP_S)
            if res is None:
                errors[fw] = err
                failed.append(fw)
                print(f"  {fw} FAILED", end="", flush=True)
                continue
            res["wall_s"] = wall
            runs[fw].append(res)
            busy = max(busy, res["other_load"], res["steal"])
            cell = f"matmul {res['gflops']:.1f} GFLOP/s" if fw == "matmul" else \
                f"{fw} {1e3 * res['seconds'] / plan['steps']:.1f}"
            print("  " + cell, end="", flush=True)
        print(f"   [other load up to {busy:.2f} cores]" if busy >= 0.1 else "", flush=True)
        for fw in failed:
            print(f"    {fw}: process failed ({errors[fw]}); no further runs of it for {name}", flush=True)
    peak_gflops = statistics.median(r["gflops"] for r in runs["matmul"]) if runs["matmul"] else None
    out: dict = dict(config=cfg, plan=plan, flops=fl, frameworks={}, errors=errors,
                     matmul=dict(gflops=peak_gflops, runs=runs["matmul"]))
    for fw in frameworks:
        if runs[fw]:
            out["frameworks"][fw] = summarize(fw, runs[fw], name, plan, peak_gflops)
    print_config_table(out)
    return out


def print_config_table(res: dict) -> None:
    fws = res["frameworks"]
    pk = res["matmul"]["gflops"]
    print(f"    {'framework':<14} {'ms/step':>9} {'(min-max)':>17} {'tokens/s':>9} {'GFLOP/s':>8} {'%peak':>6} "
          f"{'peak RSS':>9} {'(above imports)':>15} {'params':>10} {'loss 1st->last':>15}")
    for fw, d in fws.items():
        rng = f"({d['ms_min']:.1f}-{d['ms_max']:.1f})"
        pct = f"{100 * d['peak_frac']:5.1f}%" if d["peak_frac"] is not None else "   n/a"
        print(f"    {fw:<14} {d['ms_per_step']:9.1f} {rng:>17} {d['tokens_per_s']:9.0f} {d['gflops']:8.1f} {pct:>6} "
              f"{d['peak_mib']:8.0f}M {d['above_imports_mib']:14.0f}M {d['nparams']:10d} "
              f"{d['first_loss']:7.3f}->{d['last_loss']:.3f}")
    if pk is not None:
        g = [r["gflops"] for r in res["matmul"]["runs"]]
        print(f"    matmul peak (numpy float32 {PEAK_N}^3, fresh process per round): {pk:.1f} GFLOP/s "
              f"(min-max {min(g):.1f}-{max(g):.1f})  <- the %peak denominator")
    if "torch-compile" in fws:
        c = fws["torch-compile"]
        if "compile_cold_s" in c:
            warm = f"{c['compile_warm_s']:.1f} s" if c.get("compile_warm_s") is not None else "n/a"
            print(f"    torch.compile: compile time (first step minus a timed step) {c['compile_cold_s']:.1f} s "
                  f"with an empty inductor cache, {warm} with the cache warm (median of later rounds); not in ms/step")
    if fws:
        worst = max(d["other_load_max"] for d in fws.values())
        print("    other processes during the timed steps (cores, mean/max): " + ", ".join(
            f"{fw} {d['other_load']:.2f}/{d['other_load_max']:.2f}" for fw, d in fws.items())
            + "; hypervisor steal: " + ", ".join(f"{fw} {d['steal']:.2f}" for fw, d in fws.items()))
        if worst >= 0.25:
            print(f"    WARNING: other processes used up to {worst:.2f} cores during timed steps; these figures are "
                  f"noisy (see the min-max spread; rerun on a quiet machine)")
        if not all(d["hwm_reset"] for d in fws.values()):
            print("    note: VmHWM could not be reset here, so peak RSS is the whole process's (incl. warm-up)")


# ---------------------------------------------------------------- the report

def fmt_ms(d: dict | None) -> str:
    return "n/a" if d is None else f"{d['ms_per_step']:.1f} ({d['ms_min']:.1f}-{d['ms_max']:.1f})"


def best_eager(fws: dict) -> str | None:
    eager = [fw for fw in ("torch", "torch-sdpa") if fw in fws]
    return min(eager, key=lambda fw: fws[fw]["ms_per_step"]) if eager else None


def speed_ratio(fws: dict, other: str | None) -> float | None:
    """npgpt's speed against `other`: other's ms/step / npgpt's (> 1: npgpt is faster)."""
    if other is None or other not in fws or "npgpt" not in fws:
        return None
    return fws[other]["ms_per_step"] / fws["npgpt"]["ms_per_step"]


def ratio_range(fws: dict, other: str) -> str:
    """The ratio from the fastest and slowest runs of each side: (other min / npgpt max)-(other max / npgpt min)."""
    n, o = fws["npgpt"], fws[other]
    return f"{o['ms_min'] / n['ms_max']:.2f}-{o['ms_max'] / n['ms_min']:.2f}"


def print_side_by_side(results: dict) -> None:
    print("\n=== Side by side (ms/step: median over fresh-process rounds, min-max; (x) = npgpt's speed-up, "
          "the other's ms / npgpt's ms)")
    print("| config | npgpt ms/step | PyTorch eager (faster variant) | torch.compile (inductor) | "
          "llm.c train_gpt2.c (-Ofast, OpenMP) |")
    print("|---|---|---|---|---|")
    for name, res in results.items():
        fws = res["frameworks"]
        cells = [shape_label(name), fmt_ms(fws.get("npgpt"))]
        be = best_eager(fws)
        for other in (be, "torch-compile", "llmc"):
            if other is None or other not in fws:
                cells.append("n/a")
                continue
            tag = {"torch": "manual ", "torch-sdpa": "sdpa "}.get(other, "")
            r = speed_ratio(fws, other)
            cells.append(f"{tag}{fmt_ms(fws[other])}" + (f" (npgpt {r:.2f}x)" if r is not None else ""))
        print("| " + " | ".join(cells) + " |")
    print("\n=== Peak memory (MiB: the process's peak RSS during the timed steps, median over rounds; "
          "in brackets: above the RSS after importing the framework)")
    print("| config | npgpt | torch eager (manual) | torch eager (SDPA) | torch.compile | llm.c |")
    print("|---|---|---|---|---|---|")
    for name, res in results.items():
        fws = res["frameworks"]
        cells = [name]
        for fw in ("npgpt", "torch", "torch-sdpa", "torch-compile", "llmc"):
            d = fws.get(fw)
            cells.append("n/a" if d is None else f"{d['peak_mib']:.0f} [{d['above_imports_mib']:.0f}]")
        print("| " + " | ".join(cells) + " |")
    if "torch-compile" in {fw for r in results.values() for fw in r["frameworks"]}:
        print("  (torch.compile's figure includes what the compiler left allocated: freed memory is kept for reuse "
              "in every worker, so RSS does not drop after compiling)")


def memory_vs_T(results: dict) -> dict:
    """For each framework, the long configs' memory above imports against T and the factor per doubling."""
    longs = [n for n in LONG if n in results]
    out: dict = {}
    if len(longs) < 2:
        return out
    for fw in LONG_FRAMEWORKS:
        pts = [(CONFIGS[n]["T"], results[n]["frameworks"][fw]["above_imports_mib"],
                results[n]["frameworks"][fw]["peak_mib"]) for n in longs if fw in results[n]["frameworks"]]
        if len(pts) < 2:
            continue
        factors = [(b[1] / a[1]) ** (1.0 / math.log2(b[0] / a[0])) if a[1] > 0 else float("inf")
                   for a, b in zip(pts, pts[1:])]  # per doubling of T
        out[fw] = dict(points=pts, factors=factors, linear=all(f <= LINEAR_MAX_RATIO for f in factors))
    return out


def print_memory_vs_T(mvt: dict) -> None:
    if not mvt:
        return
    print("\n=== Memory vs T (long configs, B1; MiB above the RSS after imports; factor per doubling of T: "
          f"linear <= {LINEAR_MAX_RATIO}, quadratic -> 4)")
    for fw, d in mvt.items():
        parts = [f"T={d['points'][0][0]}: {d['points'][0][1]:.0f}"]
        for (t, m, _), f in zip(d["points"][1:], d["factors"]):
            parts.append(f"T={t}: {m:.0f} (x{f:.2f})")
        print(f"    {fw:<11} " + ", ".join(parts) + f"   -> {'linear' if d['linear'] else 'NOT linear'} in T")


def pf(ok: bool | None) -> str:
    return "n/a" if ok is None else ("PASS" if ok else "FAIL")


def targets(results: dict, mvt: dict) -> list[dict]:
    """Every target of the issue as {what, value, target, ok (None = not measured)}."""
    out = []

    def add(what: str, value: str, target: str, ok: bool | None) -> None:
        out.append(dict(what=what, value=value, target=target, ok=ok))

    for name, tgt in TARGETS.items():
        fws = results.get(name, {}).get("frameworks", {}) if name in results else {}
        if "eager" in tgt:
            be = best_eager(fws)
            r = speed_ratio(fws, be)
            add(f"{name}: npgpt vs PyTorch eager" + (f" ({be}, the faster variant)" if be else ""),
                f"{r:.2f}x ({ratio_range(fws, be)})" if r is not None else "n/a", f">= {tgt['eager']}x",
                None if r is None else r >= tgt["eager"])
        if "compile" in tgt:
            r = speed_ratio(fws, "torch-compile")
            add(f"{name}: npgpt vs torch.compile", f"{r:.2f}x ({ratio_range(fws, 'torch-compile')})"
                if r is not None else "n/a", f">= {tgt['compile']}x", None if r is None else r >= tgt["compile"])
        if "llmc" in tgt:
            r = speed_ratio(fws, "llmc")
            add(f"{name}: npgpt vs llm.c", f"{r:.2f}x ({ratio_range(fws, 'llmc')})" if r is not None else "n/a",
                f">= {tgt['llmc']}x", None if r is None else r >= tgt["llmc"])
        if "peak_frac" in tgt:
            n = fws.get("npgpt")
            f = n["peak_frac"] if n else None
            add(f"{name}: npgpt % of the float32 matmul peak",
                f"{100 * f:.1f}% of {results[name]['matmul']['gflops']:.1f} GFLOP/s" if f is not None else "n/a",
                f">= {100 * tgt['peak_frac']:.0f}%", None if f is None else f >= tgt["peak_frac"])
    for name in CONFIGS:
        if name not in results:
            add(f"{name}: npgpt peak memory below PyTorch eager's", "n/a (not run)", "below", None)
            continue
        fws = results[name]["frameworks"]
        n = fws.get("npgpt")
        eager = [fw for fw in ("torch", "torch-sdpa") if fw in fws]
        if n is None or not eager:
            add(f"{name}: npgpt peak memory below PyTorch eager's", "n/a", "below", None)
            continue
        ok = all(n["peak_mib"] < fws[fw]["peak_mib"] for fw in eager)
        ok_above = all(n["above_imports_mib"] < fws[fw]["above_imports_mib"] for fw in eager)
        vals = ", ".join(f"{fw} {fws[fw]['peak_mib']:.0f}" for fw in eager)
        add(f"{name}: npgpt peak memory below every PyTorch eager variant's",
            f"npgpt {n['peak_mib']:.0f} MiB vs {vals} (above imports: {'also' if ok_above else 'NOT'} below)",
            "below", ok)
    fws = results.get("long4096", {}).get("frameworks", {})
    if "npgpt" in fws and "torch-sdpa" in fws:
        n, t = fws["npgpt"], fws["torch-sdpa"]
        add("long4096: npgpt peak memory below PyTorch SDPA's", f"npgpt {n['peak_mib']:.0f} MiB vs torch-sdpa "
            f"{t['peak_mib']:.0f} (above imports {n['above_imports_mib']:.0f} vs {t['above_imports_mib']:.0f})",
            "below", n["peak_mib"] < t["peak_mib"])
    else:
        add("long4096: npgpt peak memory below PyTorch SDPA's", "n/a", "below", None)
    if "npgpt" in mvt:
        d = mvt["npgpt"]
        add("long: npgpt memory linear in T", ", ".join(f"x{f:.2f}" for f in d["factors"]) + " per doubling",
            f"<= {LINEAR_MAX_RATIO} per doubling", d["linear"])
    else:
        add("long: npgpt memory linear in T", "n/a (needs two long configs)", "linear", None)
    return out


def print_targets(tg: list[dict], results: dict) -> None:
    print("\n=== Targets (issue 15; 2 threads each, side by side in this run; speed-up = other's ms / npgpt's ms, "
          "range from the fastest/slowest runs)")
    for t in tg:
        print(f"    {pf(t['ok']):<4}  {t['what']}: {t['value']}   (target {t['target']})")
    noisy = [n for n, r in results.items() for d in r["frameworks"].values() if d["other_load"] >= 0.25]
    if noisy:
        print(f"    ** other processes used >= 0.25 cores on average during {', '.join(sorted(set(noisy)))}: "
              f"speed verdicts there mean little **")


# ---------------------------------------------------------------- --verify

def verify(args) -> int:
    """Check the torch models against npgpt, in lockstep for 3 steps, for manual attention, SDPA and (unless
    --no-compile-verify) the torch.compile'd SDPA model: before each step npgpt's float32 params are copied into
    the torch model, then the losses and every gradient are compared; then both optimizers are fed npgpt's
    gradients (clip + AdamW on each side) and the updated params are compared."""
    bu.set_thread_env(args.threads)
    bu.use_repo_npgpt()
    import numpy as np
    import torch

    import npgpt
    import torch_gpt

    torch.set_num_threads(args.threads)
    tol = 1e-4
    ok = True
    variants = ["manual", "sdpa"] + ([] if args.no_compile_verify else ["compile"])
    for name in args.configs or ["small", "baby"]:
        cfg = CONFIGS[name]
        batches = make_batches(cfg)
        for variant in variants:
            model = npgpt.GPT(npgpt_config(cfg), seed=SEED, dtype=np.float32)
            opt = npgpt.AdamW(model.params, **OPT)
            tm = torch_model(cfg, "manual" if variant == "manual" else "sdpa")
            fwd = torch_gpt.compile_model(tm) if variant == "compile" else tm
            topt = torch_gpt.make_optimizer(tm, **OPT)
            named = dict(tm.named_parameters())
            shown = ["wte.weight", "h.0.attn.c_attn.weight", f"h.{cfg['n_layer'] - 1}.mlp.c_proj.weight",
                     "ln_f.weight"]
            print(f"\n--verify {name} / torch {variant}" + (" (SDPA model)" if variant == "compile" else "")
                  + f" (tolerance {tol:g})")
            for s in range(3):
                torch_gpt.copy_from_npgpt(tm, model.params)
                x, y = batches[s % len(batches)]
                _, loss = model.forward(x, y)
                grads = model.backward()
                topt.zero_grad(set_to_none=True)
                _, tloss = fwd(torch.from_numpy(x), torch.from_numpy(y))
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
                npgpt.clip_grad_norm(grads, CLIP)
                opt.step(grads)
                torch.nn.utils.clip_grad_norm_(tm.parameters(), CLIP)
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


# ---------------------------------------------------------------- main

def parse_args(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", nargs="+", choices=list(CONFIGS), default=None,
                    help="configs to run (default: all six; --verify: small baby)")
    ap.add_argument("--quick", action="store_true", help="small only, 3 rounds (unless --configs/--rounds say else)")
    ap.add_argument("--frameworks", nargs="+", choices=list(FRAMEWORKS), default=None,
                    help="run only these (npgpt is always run)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per process (default: per config, see PLAN)")
    ap.add_argument("--warmup", type=int, default=None, help="warm-up steps per process (default: per config)")
    ap.add_argument("--rounds", "--repeats", dest="rounds", type=int, default=None,
                    help="fresh processes per framework and config; the median is reported (default: per config)")
    ap.add_argument("--threads", type=int, default=2, help="threads for every framework (default 2)")
    ap.add_argument("--no-torch", action="store_true", help="skip every torch framework")
    ap.add_argument("--llmc", metavar="PATH", help="an llm.c checkout (train_gpt2.c + llmc/): time its CPU trainer")
    ap.add_argument("--keep-openblas-coretype", action="store_true",
                    help="keep the caller's OPENBLAS_CORETYPE in the timed processes (default: drop it, so NumPy's "
                         "OpenBLAS uses the kernels it picks for this CPU, as PyTorch's MKL and llm.c's "
                         "-march=native build do)")
    ap.add_argument("--clip", action="store_true", help=f"clip gradients to global norm {CLIP} (llm.c cannot)")
    ap.add_argument("--cache", default=bu.cache_dir(), help="where llm.c's binary and inputs are kept "
                                                            "(default %(default)s)")
    ap.add_argument("--json", metavar="OUT", help="also write every figure to this JSON file")
    ap.add_argument("--verify", action="store_true", help="check the torch models against npgpt and exit")
    ap.add_argument("--no-compile-verify", action="store_true", help="--verify without the torch.compile model")
    args = ap.parse_args(argv)
    for k in ("steps", "warmup", "rounds", "threads"):
        v = getattr(args, k)
        if v is not None and v < (0 if k == "warmup" else 1):
            ap.error(f"--{k}: expected {'a non-negative' if k == 'warmup' else 'a positive'} integer, got {v}")
    if args.frameworks is not None and "npgpt" not in args.frameworks:
        args.frameworks = ["npgpt"] + args.frameworks
    return args


def plan_for(name: str, args) -> dict:
    p = dict(PLAN[name])
    if args.quick and args.rounds is None:
        p["rounds"] = 3
    for k in ("steps", "warmup", "rounds"):
        if getattr(args, k) is not None:
            p[k] = getattr(args, k)
    return p


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--_run":
        run_main(sys.argv[2], sys.argv[3], json.loads(sys.argv[4]))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--_peak":
        peak_main()
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--_llmc_prep":
        llmc_prep_main(sys.argv[2], sys.argv[3])
        return 0
    args = parse_args()
    if args.verify:
        if not bu.torch_available():
            print("--verify needs torch, which is not installed")
            return 2
        return verify(args)
    configs = args.configs or (["small"] if args.quick else list(CONFIGS))
    have_torch = not args.no_torch and bu.torch_available()
    ctx = Context(args)
    t_start = time.perf_counter()
    print("npgpt training-step benchmark")
    for line in bu.env_report():
        print("  " + line)
    print(f"  Threads: {args.threads} for every framework (OMP/OPENBLAS/MKL_NUM_THREADS in each process; "
          f"torch.set_num_threads; npgpt GPT(threads=...) and AdamW(threads=...); llm.c OpenMP)")
    print("  Step: forward + backward + AdamW (lr 1e-3, betas (0.9, 0.95), eps 1e-8, weight decay 0.1), float32, "
          + (f"global-norm clip to {CLIP} (not llm.c: it has no clipping)" if args.clip else "no gradient clipping")
          + f"; the same {N_BATCHES} seeded random batches, cycled, for every framework")
    pinned = os.environ.get("OPENBLAS_CORETYPE")
    if pinned is not None:
        print(f"  OpenBLAS kernels: OPENBLAS_CORETYPE={pinned} from the caller's environment "
              + ("KEPT in every timed process (--keep-openblas-coretype): NumPy's products use those kernels, "
                 "while PyTorch's MKL and llm.c's -march=native build still use the ones they pick for this CPU"
                 if args.keep_openblas_coretype else
                 "DROPPED in every timed process, so OpenBLAS picks its kernels for this CPU as PyTorch's MKL "
                 "and llm.c's -march=native build do (--keep-openblas-coretype keeps it)"))
    print("  glibc malloc: freed memory kept for reuse in every Python worker (npgpt's Model applies "
          "npgpt.runtime.memory.reuse_freed_memory itself; the other frameworks' workers call it)")
    if args.llmc:
        try:
            _llmc.check_checkout(args.llmc)
        except _llmc.LlmcError as e:
            print(str(e), file=sys.stderr)
            return 2
        try:
            ctx.llmc_exe, cmd, built = _llmc.build(args.llmc, args.cache)
            print(f"  llm.c: {'built' if built else 'cached'} {ctx.llmc_exe}\n    with: {' '.join(cmd)}")
            print("    its update applies weight decay to every parameter (npgpt and torch: 2-D ones only) and "
                  "is a single-threaded loop")
        except _llmc.LlmcError as e:
            ctx.llmc_reason = str(e)
            print(f"  {e} -> llm.c n/a")
    if not have_torch:
        print("  torch: " + ("skipped (--no-torch)" if args.no_torch else "not installed") + " -> its columns n/a")
    else:
        print("  torch.compile: inductor, default mode, on the SDPA model; forward + loss compiled, backward "
              "through AOTAutograd's compiled graph, AdamW eager; compile time reported apart from ms/step")

    results = {}
    info_printed = False
    try:
        for name in configs:
            frameworks, notes = choose_frameworks(name, args, have_torch, ctx)
            if "llmc" in frameworks:
                err = prepare_llmc(name, ctx)
                if err:
                    frameworks.remove("llmc")
                    notes.append(f"llm.c: n/a ({err})")
            res = bench_config(name, frameworks, plan_for(name, args), ctx, notes)
            results[name] = res
            if not info_printed and res["matmul"]["runs"]:
                info = res["matmul"]["runs"][0]["info"] + next(
                    (d["runs"][0]["info"] for d in res["frameworks"].values() if d["runs"][0].get("info")), [])
                print("    libraries: " + "\n               ".join(info))
                info_printed = True
    finally:
        ctx.close()
    print_side_by_side(results)
    mvt = memory_vs_T(results)
    print_memory_vs_T(mvt)
    tg = targets(results, mvt)
    print_targets(tg, results)
    print(f"\n  total wall time {time.perf_counter() - t_start:.0f} s; load average at the end {bu.loadavg()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(dict(env=bu.env_report(), args=vars(args), results=results, memory_vs_T=mvt, targets=tg),
                      f, indent=1)
        print(f"  wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
