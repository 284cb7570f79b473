"""Plumbing of benchmarks/bench_train.py with a tiny plan: fresh-process runs, the JSON it writes, the n/a
columns, the llm.c driver build.  No timing is checked (the figures of a 1-step run mean nothing)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "bench_train.py")
LLMC = os.environ.get("NPGPT_LLMC", os.path.join(ROOT, "..", "shared", "peers", "llm.c"))
TINY = ["--configs", "small", "--steps", "1", "--warmup", "1", "--rounds", "1"]


def run(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = dict(os.environ, NPGPT_BENCH_CACHE=str(tmp_path / "cache"))
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=600)


def test_npgpt_only_plan_writes_every_figure(tmp_path):
    out = tmp_path / "out.json"
    r = run(TINY + ["--frameworks", "npgpt", "--json", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr
    res = json.loads(out.read_text())["results"]["small"]
    n = res["frameworks"]["npgpt"]
    assert set(res["frameworks"]) == {"npgpt"}
    assert len(n["runs"]) == 1 and len(n["runs"][0]["step_s"]) == 1 and len(n["runs"][0]["warmup_s"]) == 1
    assert n["ms_min"] <= n["ms_per_step"] <= n["ms_max"]
    assert n["peak_mib"] > n["above_imports_mib"] > 0
    assert n["nparams"] == 809856  # small: 4 layers of 12C^2 + 13C, wte 65 x 128, wpe 64 x 128, ln_f
    assert res["matmul"]["gflops"] > 0
    assert "| small (L4 H4 C128 T64 B12, V65) |" in r.stdout  # the side-by-side row
    assert "n/a   small: npgpt vs torch.compile: n/a" in r.stdout  # not measured -> n/a, not FAIL


def test_bad_llmc_path_is_one_line_exit_2(tmp_path):
    r = run(TINY + ["--llmc", str(tmp_path / "nowhere")], tmp_path)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "train_gpt2.c" in r.stderr


@pytest.mark.skipif(shutil.which("gcc") is None or not os.path.isfile(os.path.join(LLMC, "train_gpt2.c")),
                    reason="needs gcc and an llm.c checkout (NPGPT_LLMC)")
def test_llmc_driver_runs_from_an_npgpt_checkpoint(tmp_path):
    out = tmp_path / "out.json"
    r = run(TINY + ["--frameworks", "llmc", "--llmc", LLMC, "--json", str(out)], tmp_path)
    assert r.returncode == 0, r.stderr
    fws = json.loads(out.read_text())["results"]["small"]["frameworks"]
    assert set(fws) == {"npgpt", "llmc"}
    # the same weights and batch: llm.c's first loss is npgpt's (float32 arithmetic in another order)
    assert fws["llmc"]["first_loss"] == pytest.approx(fws["npgpt"]["first_loss"], abs=1e-4)
    assert fws["llmc"]["nparams"] == 809856 + (128 - 65) * 128  # plus wte's padding rows


def test_openblas_coretype_dropped_unless_kept(monkeypatch):
    """The timed processes get OpenBLAS's own kernel choice for the CPU unless --keep-openblas-coretype."""
    monkeypatch.syspath_prepend(os.path.join(ROOT, "benchmarks"))
    import bench_train

    monkeypatch.setenv("OPENBLAS_CORETYPE", "Prescott")
    for argv, kept in (([], False), (["--keep-openblas-coretype"], True)):
        ctx = bench_train.Context(bench_train.parse_args(argv))
        try:
            for fw in ("npgpt", "torch-compile", "matmul"):
                env = ctx.env(fw)
                assert env.get("OPENBLAS_CORETYPE") == ("Prescott" if kept else None)
                assert env["OPENBLAS_NUM_THREADS"] == "2"
        finally:
            ctx.close()
