"""benchmarks/bench_matmul.py: its list of a step's products is the one bench_train counts FLOPs for, and
the slices match how npgpt's GPT runs each config.  No timing is checked."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import bench_matmul  # noqa: E402
import bench_train  # noqa: E402


@pytest.mark.parametrize("name", ["small", "baby", "gpt2-124m"])
def test_products_are_the_linear_and_head_flops_of_a_step(name):
    cfg = bench_train.CONFIGS[name]
    fl = bench_train.step_flops(cfg)
    total = sum(2 * M * K * N * calls for _, M, K, N, _, _, calls in bench_matmul.products(cfg))
    assert total == 3 * (fl["linear"] + fl["head"])  # forward, dx and dw of every product


def test_split_follows_the_model():
    import numpy as np

    import npgpt

    cfg = bench_train.CONFIGS["small"]
    model = npgpt.GPT(bench_train.npgpt_config(cfg), seed=0, dtype=np.float32, threads=2, init=False)
    assert model._group is not None  # batch slices in worker processes
    assert bench_matmul.npgpt_split(cfg, 2)[:2] == (2, 1)
    assert bench_matmul.npgpt_split(cfg, 1)[:2] == (1, 1)
    assert bench_matmul.npgpt_split(bench_train.CONFIGS["gpt2-124m"], 2)[:2] == (1, 2)  # above SLICE_PARAMS


def test_one_round_prints_the_table():
    env = dict(os.environ, PYTHONPATH=ROOT)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "bench_matmul.py"), "--configs", "small",
                        "--rounds", "1"], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "head dwte = dlogits.T @ x" in r.stdout and "these products, one step" in r.stdout
