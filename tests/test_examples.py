"""examples/train_char_gpt.py and examples/sample.py as a user runs them: end to end in a subprocess, and a
one-line error (no traceback, non-zero exit, an existing checkpoint untouched) for every bad input."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from npgpt.training.checkpoint import load_checkpoint
from npgpt.training.data import bundled_corpus_path

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "examples" / "train_char_gpt.py"
SAMPLE = ROOT / "examples" / "sample.py"
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "8", "--batch-size", "4",
        "--eval-iters", "2", "--warmup-iters", "2"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONIOENCODING": "utf-8"}


def py(script, *args, cwd):
    return subprocess.run([sys.executable, str(script), *map(str, args)], cwd=cwd, env=ENV, capture_output=True,
                          text=True, timeout=120)


def assert_one_line_error(proc, pattern=None):
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    err = proc.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, proc.stderr
    if pattern is not None:
        assert pattern in err, err
    return err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A small text and a finished tiny run in <dir>/out: (dir, completed process)."""
    d = tmp_path_factory.mktemp("ex")
    (d / "small.txt").write_text(bundled_corpus_path().read_text(encoding="utf-8")[:12_000], encoding="utf-8")
    proc = py(TRAIN, "small.txt", *TINY, "--max-iters", 20, "--eval-interval", 10, "--sample-len", 60, cwd=d)
    return d, proc


def test_train_example_end_to_end(trained):
    d, proc = trained
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    out = proc.stdout
    for needed in ("data: small.txt: 12,000 characters", "eval at iter 0:", "eval at iter 20: train loss",
                   "saved out/ckpt.npz", "iter 20/20 | loss", "tok/s", "ETA", "done: 20 steps",
                   "final: train loss", "loss curve: out/loss.", "sample (60 tokens"):
        assert needed in out, needed
    assert (d / "out" / "ckpt.npz").is_file()
    assert list((d / "out").glob("loss.*")), "no loss plot"
    ck = load_checkpoint(d / "out" / "ckpt.npz")
    assert ck.meta["iteration"] == 20 and ck.meta["train_config"]["n_embd"] == 16


def test_sample_example(trained):
    d, _ = trained
    proc = py(SAMPLE, "--ckpt", "out/ckpt.npz", "--prompt", "ROMEO:", "--num-samples", 2, "--max-new-tokens", 25,
              "--temperature", 0.9, "--top-k", 10, "--top-p", 0.95, "--seed", 3, cwd=d)
    assert proc.returncode == 0, proc.stderr
    assert "sample 1/2" in proc.stdout and "sample 2/2" in proc.stdout
    bodies = proc.stdout.split("----------")
    assert sum(b.strip().startswith("ROMEO:") for b in bodies) == 2
    again = py(SAMPLE, "--ckpt", "out/ckpt.npz", "--prompt", "ROMEO:", "--num-samples", 2, "--max-new-tokens", 25,
               "--temperature", 0.9, "--top-k", 10, "--top-p", 0.95, "--seed", 3, cwd=d)
    assert again.stdout == proc.stdout  # seeded


@pytest.mark.parametrize("args,pattern", [
    (["--prompt", "a~b€"], "characters not in the checkpoint's vocabulary: '~' (position 1), '€' (position 3)"),
    (["--ckpt", "missing.npz"], "no such checkpoint file"),
    (["--ckpt", "small.txt"], "not a readable .npz checkpoint"),
    (["--temperature", "-1"], "--temperature"),
    (["--num-samples", "x"], "invalid int value"),
])
def test_sample_example_errors(trained, args, pattern):
    d, _ = trained
    assert_one_line_error(py(SAMPLE, "--ckpt", "out/ckpt.npz", *args, cwd=d), pattern)


def _bad_inputs(d):
    """name -> (extra files to write into d, args, expected part of the message, exit status)."""
    rng = np.random.default_rng(0)
    good = (d / "out" / "ckpt.npz").read_bytes()
    np.savez(d / "foreign.npz", weights=np.zeros(3))
    resume = ["small.txt", *TINY, "--max-iters", 20, "--eval-interval", 10, "--out-dir", "run", "--resume"]
    return {
        "missing file": (None, ["nope.txt", *TINY], "nope.txt: no such file", 2),
        "directory": (None, ["out", *TINY], "is a directory", 2),
        "empty file": ({"empty.txt": b""}, ["empty.txt", *TINY], "empty.txt: file is empty", 2),
        "not utf-8": ({"bin.txt": b"hello \xff\xfe"}, ["bin.txt", *TINY], "not UTF-8 text (invalid byte 0xff at byte "
                                                                           "offset 6)", 2),
        "too short": ({"short.txt": b"to be or not to be" * 3}, ["short.txt", *TINY, "--overwrite"], "text too short",
                      2),
        "bad flag value": (None, ["--lr", "fast"], "argument --lr: invalid float value: 'fast'", 2),
        "bad config value": (None, ["--max-iters", "0"], "max_iters: expected a positive integer, got 0", 2),
        "indivisible heads": (None, ["--n-head", "3"], "n_embd: expected a multiple of n_head=3", 2),
        "resume other config": (None, [*resume, "--n-embd", "32"],
                                "different configuration: n_embd (checkpoint 16, requested 32)", 2),
        "resume other text": ({"other.txt": b"abcdefghijklmnopqrstuvwxyz\n" * 20},
                              ["other.txt", *resume[1:]], "trained on a different text", 2),
        "resume foreign npz": ({"run/ckpt.npz": (d / "foreign.npz").read_bytes()}, resume,
                               "not an npgpt checkpoint", 2),
        "resume corrupt": ({"run/ckpt.npz": rng.bytes(3000)}, resume, "corrupt or truncated", 2),
        "resume truncated": ({"run/ckpt.npz": good[: len(good) // 2]}, resume, "corrupt or truncated", 2),
        "resume nothing": (None, [*resume[:-3], "--out-dir", "empty_run", "--resume"], "no checkpoint to resume", 2),
        "nan loss": (None, ["small.txt", *TINY, "--lr", "1e6", "--max-iters", 40, "--eval-interval", 1000,
                            "--out-dir", "run", "--overwrite"], "the run diverged: stopped without saving", 1),
    }


@pytest.mark.parametrize("case", ["missing file", "directory", "empty file", "not utf-8", "too short",
                                  "bad flag value", "bad config value", "indivisible heads", "resume other config",
                                  "resume other text", "resume foreign npz", "resume corrupt", "resume truncated",
                                  "resume nothing", "nan loss"])
def test_train_example_bad_input(trained, tmp_path, case):
    d, _ = trained
    shutil.copy(d / "small.txt", tmp_path / "small.txt")
    (tmp_path / "out").mkdir()
    (tmp_path / "run").mkdir()
    shutil.copy(d / "out" / "ckpt.npz", tmp_path / "out" / "ckpt.npz")
    shutil.copy(d / "out" / "ckpt.npz", tmp_path / "run" / "ckpt.npz")
    files, args, pattern, code = _bad_inputs(d)[case]
    for name, data in (files or {}).items():
        (tmp_path / name).write_bytes(data)
    before = {p: p.read_bytes() for p in (tmp_path / "out" / "ckpt.npz", tmp_path / "run" / "ckpt.npz")}
    proc = py(TRAIN, *args, cwd=tmp_path)
    err = assert_one_line_error(proc, pattern)
    assert proc.returncode == code, err
    for p, data in before.items():  # existing checkpoints (good or bad) are left byte-identical
        assert p.read_bytes() == data, p
    left = sorted(x.name for x in (tmp_path / "run").iterdir() if not x.name.startswith("loss."))
    assert left == ["ckpt.npz"]  # no temp files, no lock (a diverged run also draws its plot)


def _ckpt_state(path):
    ck = load_checkpoint(path)
    return ck.params, ck.adam_m, ck.adam_v, ck.meta["history"], ck.meta["iteration"], ck.meta["samplers"]


def _default_sigint() -> None:
    """In the child, before Python starts: Ctrl-C with its default disposition, as in a terminal (a test runner
    started in the background inherits SIGINT ignored, and the trainer rightly leaves an ignored signal alone)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_ctrl_c_then_resume_matches_an_uninterrupted_run(trained, tmp_path):
    d, _ = trained
    shutil.copy(d / "small.txt", tmp_path / "small.txt")
    args = ["small.txt", *TINY, "--max-iters", 500, "--eval-interval", 50, "--log-interval", 10,
            "--dropout", 0.1, "--sample-len", 0]
    p = subprocess.Popen([sys.executable, str(TRAIN), *map(str, args), "--out-dir", "a"], cwd=tmp_path, env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=_default_sigint)
    for line in p.stdout:
        if line.startswith("eval at iter 100"):
            p.send_signal(signal.SIGINT)  # Ctrl-C somewhere after iteration 100
            break
    out, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "interrupted at iteration" in out
    stopped = load_checkpoint(tmp_path / "a" / "ckpt.npz").meta["iteration"]
    assert 100 <= stopped < 500
    resumed = py(TRAIN, "--resume", "--out-dir", "a", "small.txt", cwd=tmp_path)  # other flags: from the checkpoint
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from a/ckpt.npz at iteration {stopped}" in resumed.stdout
    full = py(TRAIN, *args, "--out-dir", "b", cwd=tmp_path)
    assert full.returncode == 0, full.stderr
    a, b = _ckpt_state(tmp_path / "a" / "ckpt.npz"), _ckpt_state(tmp_path / "b" / "ckpt.npz")
    for group_a, group_b in zip(a[:3], b[:3]):
        assert all(np.array_equal(group_a[k], group_b[k]) for k in group_b)
    assert a[3:] == b[3:]  # loss history, iteration, sampler states


def test_one_flag_per_config_field_with_its_type_and_default():
    import dataclasses

    from npgpt.cli import build_parser
    from npgpt.training import TrainConfig
    top = build_parser()
    parser = next(a for a in top._actions if a.dest == "command").choices["train"]
    actions = {a.dest: a for a in parser._actions}
    for f in dataclasses.fields(TrainConfig):
        a = actions[f.name]
        assert "--" + f.name.replace("_", "-") in a.option_strings
        assert a.help.startswith(f.metadata["help"])  # the help is the field's own metadata
        if f.default is not None:
            assert f"(default: {f.default})" in a.help
    assert vars(parser.parse_args(["--lr", "0.002", "--resume", "x.txt"])) == {"lr": 0.002, "resume": True,
                                                                              "text_file": "x.txt"}
    assert vars(parser.parse_args([])) == {"text_file": None}  # defaults come from TrainConfig itself
