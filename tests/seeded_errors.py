#!/usr/bin/env python
"""Seeded errors: are the layer tests sharp enough to notice a 0.1% error anywhere?

For every layer pair (and composite) in LAYERS this runs the layer's own test file under pytest in a subprocess,
with one error injected by tests/_seed_error_plugin.py:

    forward  : the output's largest-magnitude element times 1.001                        (kind "out")
               (each output, for a forward with several: FORWARD_OUTPUTS, e.g. sdpa's out and lse)
    backward : for each returned gradient separately, the whole gradient times 1.001     (kind "scale")
               its largest-magnitude element times 1.001                                  (kind "elem_max")
               its middle element (flat index size // 2) times 1.001, unless that is ~0  (kind "elem_mid")

A forward-only layer (backward "" in the registry, e.g. mla_absorbed, held equal to mla's forward by its
tests) gets only its output errors.

A mutation is caught when pytest exits with 1 (tests failed).  A mutation that never changed anything (e.g. the
middle element was exactly 0 in every call) is reported as a no-op and left out of the count.  The clean suite
is run first and must pass.  Exit status 0 only if the clean run passes and every mutation is caught.

    python tests/seeded_errors.py            # everything, one subprocess per CPU
    python tests/seeded_errors.py -j 1 --only linear,block
    python tests/seeded_errors.py --quick    # the subset .ci/run uses (see mutations())

Runs use `-x -q -p no:cacheprovider` and HYPOTHESIS_PROFILE=ci (without shrinking: see the plugin).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(ROOT))

from npgpt.families import all_pairs  # noqa: E402

# layer -> (module, forward, backward, names of the backward's gradients in return order), from the one list of
# pairs (npgpt/layers/registry.py and each family's PAIRS); a forward-only layer has backward "" and no gradients
LAYERS: dict[str, tuple[str, str, str, list[str]]] = {
    p.name: (p.module_name, p.forward, p.backward, list(p.grads)) for p in all_pairs()}
# the forward's outputs before its cache, when there are several (default: ["out"]); each gets an "out" error
FORWARD_OUTPUTS: dict[str, list[str]] = {p.name: list(p.outputs) for p in all_pairs() if p.outputs != ("out",)}
# --quick keeps CI's cost bounded: the attention family's test files are slow (5-6 s a run), so --quick mutates
# only sdpa (both outputs, dq, and dsinks for an optional input's path) and attention_chunks (its output and dk,
# the gradient its chunks add up), and leaves sdpa_tiled, merge_attention and sdpa_qkv to the full run.
# layer -> (forward outputs, gradients) under --quick; () = none.
QUICK_PICK: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "sdpa": (("out", "lse"), ("dq", "dsinks")),
    "attention_chunks": (("out",), ("dk",)),
    "sdpa_tiled": ((), ()), "merge_attention": ((), ()), "sdpa_qkv": ((), ()),
}
BACKWARD_KINDS = ("scale", "elem_max", "elem_mid")
# no:hypothesispytest only drops hypothesis' pytest reporting, which on a failure imports libcst to write a
# patch file into .hypothesis/ (~1 s per run); @given tests run the same without it.
PYTEST_ARGS = ["-x", "-q", "-p", "no:cacheprovider", "-p", "no:hypothesispytest"]


@dataclass
class Mutation:
    layer: str
    label: str  # e.g. "linear_backward dw elem_max"
    spec: str  # NPGPT_SEED_ERROR value
    test_file: str


@dataclass
class Outcome:
    mutation: Mutation
    status: str  # caught | MISSED | no-op | NOT CALLED | ERROR (rc n) | TIMEOUT
    seconds: float
    calls: int = 0
    applied: int = 0


QUICK_MAX_GRADS = 6  # --quick: at most this many of a backward's gradients (spread over its list)


def mutations(only: set[str] | None, quick: bool = False) -> list[Mutation]:
    """Every layer's forward output, and each of its gradients with every kind of error.

    quick (CI, about a third of the runs): every forward output and every kind still, but each gradient gets
    one kind (rotating through the kinds), and of a backward with more than QUICK_MAX_GRADS gradients (the
    block's 13) only dx and an evenly spread QUICK_MAX_GRADS - 1 of the rest; a layer in QUICK_PICK gets only
    the outputs and gradients listed there.
    """
    out = []
    for layer, (module, fwd, bwd, grads) in LAYERS.items():
        if only and layer not in only:
            continue
        test_file = f"test_{layer}.py"
        outputs = FORWARD_OUTPUTS.get(layer, ["out"])
        for j, output in enumerate(outputs):
            if quick and layer in QUICK_PICK and output not in QUICK_PICK[layer][0]:
                continue
            label = f"{fwd} out" if output == "out" else f"{fwd} {output} out"
            out.append(Mutation(layer, label, f"{module}:{fwd}:out:{j}", test_file))
        if not bwd:  # forward only: nothing to mutate but its outputs
            continue
        picked: Sequence[int] = range(len(grads))
        if quick and layer in QUICK_PICK:
            picked = [i for i, g in enumerate(grads) if g in QUICK_PICK[layer][1]]
        elif quick and len(grads) > QUICK_MAX_GRADS:
            step = (len(grads) - 1) / (QUICK_MAX_GRADS - 1)
            picked = sorted({0, *(1 + round(j * step) for j in range(QUICK_MAX_GRADS - 1))} & set(picked))
        for n, i in enumerate(picked):
            kinds = (BACKWARD_KINDS[n % len(BACKWARD_KINDS)],) if quick else BACKWARD_KINDS
            for kind in kinds:
                out.append(Mutation(layer, f"{bwd} {grads[i]} {kind}", f"{module}:{bwd}:{kind}:{i}", test_file))
    return out


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("NPGPT_GRADCHECK_REPORT", None)
    env.pop("NPGPT_SEED_ERROR", None)
    env["HYPOTHESIS_PROFILE"] = "ci"
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS), *filter(None, [env.get("PYTHONPATH")])])
    env.update(extra)
    return env


def run_clean(files: list[str], timeout: float) -> tuple[int, float, str]:
    """The unmutated suite (plugin loaded but idle): (returncode, seconds, last output lines)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", *files, "-q", "-p", "no:cacheprovider",
                           "-p", "_seed_error_plugin"], cwd=ROOT, env=_env({}), capture_output=True, text=True,
                          timeout=timeout)
    tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
    return proc.returncode, time.perf_counter() - t0, tail


def run_mutation(m: Mutation, timeout: float) -> Outcome:
    with tempfile.TemporaryDirectory() as tmp:
        stats_path = os.path.join(tmp, "stats.json")
        env = _env({"NPGPT_SEED_ERROR": m.spec, "NPGPT_SEED_ERROR_STATS": stats_path})
        t0 = time.perf_counter()
        try:
            proc = subprocess.run([sys.executable, "-m", "pytest", str(TESTS / m.test_file), *PYTEST_ARGS,
                                   "-p", "_seed_error_plugin"], cwd=ROOT, env=env, capture_output=True, text=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired:
            return Outcome(m, "TIMEOUT", time.perf_counter() - t0)
        seconds = time.perf_counter() - t0
        try:
            with open(stats_path, encoding="utf-8") as f:
                stats = json.load(f)
        except OSError:
            stats = {"calls": 0, "applied": 0}
    o = Outcome(m, "", seconds, stats["calls"], stats["applied"])
    if proc.returncode not in (0, 1):
        o.status = f"ERROR (rc {proc.returncode})"
        sys.stderr.write(f"--- {m.label}: pytest exit {proc.returncode}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}\n")
    elif o.calls == 0:
        o.status = "NOT CALLED"
    elif o.applied == 0:
        o.status = "no-op" if proc.returncode == 0 else "no-op (suite failed anyway)"
    else:
        o.status = "caught" if proc.returncode == 1 else "MISSED"
    return o


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, help="parallel pytest processes")
    ap.add_argument("--only", default="", help="comma-separated layer names (default: all of LAYERS)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per pytest run")
    ap.add_argument("--quick", action="store_true", help="the CI subset: one error kind per gradient")
    args = ap.parse_args()
    only = {s.strip() for s in args.only.split(",") if s.strip()} or None
    if only and only - set(LAYERS):
        ap.error(f"unknown layer(s): {sorted(only - set(LAYERS))}")

    t_start = time.perf_counter()
    muts = mutations(only, quick=args.quick)
    if not muts:
        ap.error("no mutations selected: --quick picks none for these layers (run without --quick)")
    files = [str(TESTS / f"test_{layer}.py") for layer in LAYERS if any(m.layer == layer for m in muts)]
    rc, secs, tail = run_clean(files, args.timeout)
    print(f"clean suite ({len(files)} files): {'green' if rc == 0 else f'RED (exit {rc})'} in {secs:.1f}s")
    if rc != 0:
        print(tail)
        return 1

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        outcomes = list(pool.map(lambda m: run_mutation(m, args.timeout), muts))

    width = max(len(o.mutation.label) for o in outcomes)
    print(f"\n{'mutation':<{width}}  {'caught':<28} {'applied/calls':>13} {'time':>6}")
    for o in outcomes:
        caught = {"caught": "yes"}.get(o.status, "no" if o.status in ("MISSED", "NOT CALLED", "TIMEOUT")
                                       or o.status.startswith("ERROR") else "-")
        print(f"{o.mutation.label:<{width}}  {caught + ' (' + o.status + ')':<28} "
              f"{o.applied:>6}/{o.calls:<6} {o.seconds:>5.1f}s")
    counted = [o for o in outcomes if not o.status.startswith("no-op")]
    caught = sum(o.status == "caught" for o in counted)
    noops = len(outcomes) - len(counted)
    print(f"\ncaught {caught} of {len(counted)}" + (f"  ({noops} no-op mutation(s) skipped)" if noops else "")
          + f"   [{time.perf_counter() - t_start:.0f}s]")
    return 0 if caught == len(counted) else 1


if __name__ == "__main__":
    sys.exit(main())
