"""The npgpt command as a user runs it (subprocesses): every case of issue 10 ends in one line and the right
exit status, no run is lost, and the command works after a plain install.

Each test names the numbered item of issue 10 it covers.  Tiny configurations throughout: the whole file
runs in well under a minute.
"""

from __future__ import annotations

import errno
import json
import re
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

from npgpt.training.checkpoint import load_checkpoint
from npgpt.training.data import bundled_corpus_path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "OPENBLAS_NUM_THREADS": "1",
       "OMP_NUM_THREADS": "1"}
ENV.pop("NPGPT_AVAILABLE_MEMORY", None)
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "8", "--batch-size", "4",
        "--eval-iters", "1", "--sample-len", "0", "--warmup-iters", "2"]
POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and permissions")


def npgpt(*args, cwd, env=None, timeout=120, stdin=None):
    return subprocess.run([sys.executable, "-m", "npgpt", *map(str, args)], cwd=cwd, env=env or ENV,
                          capture_output=True, text=True, timeout=timeout, stdin=stdin)


def one_line_error(proc, code=2):
    """The single 'error: ...' line of a failed run (no traceback), after checking the exit status."""
    assert "Traceback" not in proc.stderr, proc.stderr
    err = proc.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, proc.stderr
    assert proc.returncode == code, (proc.returncode, err)
    return err


@pytest.fixture()
def work(tmp_path):
    (tmp_path / "small.txt").write_text(bundled_corpus_path().read_text(encoding="utf-8")[:12_000],
                                        encoding="utf-8")
    return tmp_path


def start(work, *args):
    """A long tiny run in the background, printing a line per step."""
    return subprocess.Popen([sys.executable, "-m", "npgpt", "train", "small.txt", *TINY, "--max-iters", "100000",
                             "--eval-interval", "5", "--log-interval", "1", *map(str, args)], cwd=work, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(proc, text, timeout=60):
    """Read proc's stdout until a line containing text; returns the lines read."""
    lines, t0 = [], time.time()
    while time.time() - t0 < timeout:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    proc.kill()
    raise AssertionError(f"{text!r} never appeared: {''.join(lines)} {proc.stderr.read()}")


# -------------------------------------------------------------------------------------------- item 2

@pytest.mark.parametrize("flags", [["--n-embd", "65536", "--n-head", "1"], ["--batch-size", "1000000000"]])
def test_2_oversized_config_is_refused_before_any_work(work, flags):
    t0 = time.time()
    proc = npgpt("train", "small.txt", *flags, "--out-dir", "big", cwd=work)
    err = one_line_error(proc)
    assert err.startswith("error: not enough memory: this configuration needs about ") and " is available" in err
    assert time.time() - t0 < 30 and not (work / "big").exists()  # before the out dir, the model, any step


def test_2_memory_estimate_against_a_stated_limit(work):
    """NPGPT_AVAILABLE_MEMORY (bytes) stands in for a small machine: a tiny run fits in 200 MB, the default
    model with a large batch does not."""
    env = {**ENV, "NPGPT_AVAILABLE_MEMORY": str(200 << 20)}
    ok = npgpt("train", "small.txt", *TINY, "--max-iters", "1", "--out-dir", "a", cwd=work, env=env)
    assert ok.returncode == 0, ok.stderr
    err = one_line_error(npgpt("train", "small.txt", "--batch-size", "512", "--out-dir", "b", cwd=work, env=env))
    assert "but 200.0 MiB is available" in err


def test_2_estimate_is_close_to_the_measured_peak():
    """The estimate is within a factor 0.7-2.5 of the peak memory a training step adds (measured with
    tracemalloc, which NumPy reports its buffers to), on two shapes.  The model runs in this one process
    (threads=1): tracemalloc cannot see the activations of batch slices in worker processes."""
    code = r"""
import sys, json, tracemalloc, numpy as np
import npgpt.runtime.model
npgpt.runtime.model.default_threads = lambda: 1
from npgpt.training import TrainConfig, GradAccumulator
from npgpt.families import build_model, param_count as _count_params
from npgpt.optim import AdamW
from npgpt.training.footprint import training_bytes
out = []
for kw in (dict(n_layer=2, n_head=2, n_embd=64, block_size=64, batch_size=8),
           dict(n_layer=1, n_head=4, n_embd=32, block_size=128, batch_size=16)):
    cfg = TrainConfig(**kw)
    tracemalloc.start()
    model = build_model(cfg.model_config(65))
    opt = AdamW(model.params, lr=1e-3)
    acc = GradAccumulator(model)
    x = np.random.default_rng(0).integers(0, 65, (cfg.batch_size, cfg.block_size))
    for _ in range(2):
        loss, grads = acc.run(model, [(x, x)])
        opt.step(grads)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    est = training_bytes(_count_params(model.config), cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, 65,
                         cfg.batch_size)
    out.append(est / peak)
print(json.dumps(out))
"""
    proc = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for ratio in json.loads(proc.stdout):
        assert 0.7 <= ratio <= 2.5, ratio


# -------------------------------------------------------------------------------------------- item 3

def test_3_sample_survives_an_ascii_only_stdout(work):
    (work / "utf8.txt").write_text("naïve café — «ünïcödé» 中文 🙂\n" * 200, encoding="utf-8")
    env = {**ENV, "PYTHONIOENCODING": "ascii"}
    proc = npgpt("train", "utf8.txt", *TINY[:-4], "--sample-len", "200", "--max-iters", "2", "--eval-interval",
                 "2", cwd=work, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "sample (200 tokens" in proc.stdout and "?" in proc.stdout.split("sample (200 tokens")[1]
    proc = npgpt("sample", "--num-samples", "1", "--max-new-tokens", "50", "--prompt", "café", cwd=work, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "caf?" in proc.stdout


# -------------------------------------------------------------------------------------------- item 5

@POSIX
def test_5_second_run_on_the_same_out_dir_is_refused_naming_the_pid(work):
    a = start(work)
    try:
        wait_for(a, "iter")
        b = npgpt("train", "small.txt", *TINY, "--max-iters", "2", cwd=work)
        err = one_line_error(b)
        assert f"out: in use by another training run (PID {a.pid}; lock file out/.lock)" in err
    finally:
        a.send_signal(signal.SIGTERM)
        a.communicate(timeout=60)
    assert a.returncode == 143
    assert not (work / "out" / ".lock").exists()  # released at the end


def test_5_stale_lock_of_a_dead_process_is_taken_over(work):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (work / "out").mkdir()
    (work / "out" / ".lock").write_text(f"{dead.pid} {os.uname().nodename}\n")
    proc = npgpt("train", "small.txt", *TINY, "--max-iters", "2", "--eval-interval", "2", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert f"note: took over the lock of a run that is no longer running (PID {dead.pid})" in proc.stdout
    assert not (work / "out" / ".lock").exists()


# -------------------------------------------------------------------------------------------- item 6

@POSIX
def test_6_read_only_out_dir_is_refused_before_the_first_step(work):
    """chmod 555 for a normal user; root ignores permissions, so for root a read-only tmpfs (needs mount
    privileges; skipped without them)."""
    ro = work / "ro"
    ro.mkdir()
    mounted = False
    if os.geteuid() == 0:
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)],
                          capture_output=True).returncode:
            pytest.skip("root ignores permissions and cannot mount a read-only file system here")
        mounted = True
    else:
        ro.chmod(0o555)
    try:
        proc = npgpt("train", "small.txt", *TINY, "--max-iters", "500", "--eval-interval", "250", "--out-dir", "ro",
                     cwd=work)
    finally:
        if mounted:
            subprocess.run(["umount", str(ro)], check=True)
        ro.chmod(0o755)
    err = one_line_error(proc)
    assert err.startswith("error: ro: not writable (") and err.endswith("); choose another out_dir (--out-dir)")
    assert "iter" not in proc.stdout  # not a single step was spent
    assert ".tmp" not in err and ".lock" not in err


def test_6_a_failing_write_names_the_target_not_the_temp_file(tmp_path):
    from npgpt.io.atomic import atomic_write
    target = tmp_path / "missing_dir" / "ckpt.npz"
    with pytest.raises(OSError) as e:
        atomic_write(target, lambda f: f.write(b"x"))
    assert e.value.filename == str(target)


# -------------------------------------------------------------------------------------------- item 7

def test_7_divergence_beyond_nan_exits_1_and_draws_the_plot(work):
    proc = npgpt("train", "small.txt", *TINY, "--lr", "1e4", "--warmup-iters", "100000", "--min-lr", "0",
                 "--max-iters", "2000", "--eval-interval", "5", cwd=work)
    err = one_line_error(proc, code=1)
    assert "above 9.12 (2 ln V + 1: twice the loss of uniform predictions over V=58 tokens, plus 1); the run " \
           "diverged: stopped without saving" in err
    assert "done" not in proc.stdout
    assert list((work / "out").glob("loss.*"))  # the plot is drawn at this stop too
    best, latest = load_checkpoint(work / "out" / "best.npz"), load_checkpoint(work / "out" / "ckpt.npz")
    assert best.meta["best_checkpoint"][1] <= min(v for _, _, v in latest.meta["history"]["evals"][1:])
    for ck in (best, latest):
        assert max(v for _, _, v in ck.meta["history"]["evals"]) < 9.12  # no diverged state was ever saved


# -------------------------------------------------------------------------------------------- item 8

def test_8_leftover_temp_files_are_removed_at_start(work):
    (work / "out").mkdir()
    left = [work / "out" / ".ckpt.npz.0123456789ab.tmp", work / "out" / ".best.npz.ba9876543210.tmp"]
    for p in left:
        p.write_bytes(b"half a checkpoint")
    keep = work / "out" / "notes.tmp"
    keep.write_text("mine")
    proc = npgpt("train", "small.txt", *TINY, "--max-iters", "2", "--eval-interval", "2", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "note: removed 2 temporary file(s) left by an interrupted save in out" in proc.stdout
    assert not any(p.exists() for p in left) and keep.exists()


@POSIX
def test_8_kill_9_then_restart_leaves_no_temp_files(work):
    a = start(work)
    wait_for(a, "saved")
    a.kill()
    a.wait()
    (work / "out" / ".ckpt.npz.00aa11bb22cc.tmp").write_bytes(b"")  # as a kill during np.savez leaves it
    it = load_checkpoint(work / "out" / "ckpt.npz").meta["iteration"]
    proc = npgpt("train", "small.txt", *TINY, "--resume", "--max-iters", it + 2, "--out-dir", "out", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert not list((work / "out").glob(".*.tmp")) and not (work / "out" / ".lock").exists()


# -------------------------------------------------------------------------------------------- item 9

def test_9_corrupt_checkpoints_never_suggest_allow_pickle(work):
    out = work / "out"
    out.mkdir()
    cases = {"random": np.random.default_rng(0).bytes(5000)}
    np.savez(work / "obj.npz", metadata=np.array(json.dumps({"format": "npgpt-checkpoint"})),
             **{"param/wte.weight": np.array([{"a": 1}], dtype=object)})
    cases["object array"] = (work / "obj.npz").read_bytes()
    for name, data in cases.items():
        (out / "ckpt.npz").write_bytes(data)
        for proc in (npgpt("sample", "--ckpt", "out/ckpt.npz", cwd=work),
                     npgpt("train", "small.txt", *TINY, "--resume", cwd=work)):
            err = one_line_error(proc)
            assert "pickle" not in err, (name, err)
            assert err.startswith("error: out/ckpt.npz: "), err


# ------------------------------------------------------------------------------------------- item 10

def test_10_out_dir_that_is_a_file(work):
    (work / "afile").write_text("x")
    err = one_line_error(npgpt("train", "small.txt", *TINY, "--out-dir", "afile", cwd=work))
    assert err == "error: afile: exists and is not a directory; choose another out_dir (--out-dir)"


def test_10_oracle_check_on_a_training_checkpoint(work):
    assert npgpt("train", "small.txt", *TINY, "--max-iters", "2", "--eval-interval", "2", cwd=work).returncode == 0
    err = one_line_error(npgpt("oracle", "check", "out/ckpt.npz", cwd=work))
    assert err == ("error: out/ckpt.npz: this is a training checkpoint (written by npgpt train), not a golden "
                   "case; check the files written by `npgpt oracle dump`")


def test_10_disk_full_during_a_save(work):
    """ENOSPC on the third save (the second evaluation): one line naming the file, exit 2, and the checkpoint
    of the first evaluation intact and resumable."""
    code = r"""
import errno, sys
import npgpt.training.checkpoint as c
real, calls = c.atomic_write, []
def full(path, write):
    calls.append(path)
    if len(calls) >= 3:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    real(path, write)
c.atomic_write = full
from npgpt.cli import main
sys.exit(main(sys.argv[1:]))
"""
    args = ["train", "small.txt", *TINY, "--max-iters", "10", "--eval-interval", "2"]
    proc = subprocess.run([sys.executable, "-c", code, *args], cwd=work, env=ENV, capture_output=True, text=True,
                          timeout=120)
    err = one_line_error(proc)  # iteration 4 is a new best: best.npz is written first, and fails
    assert err.startswith("error: out/best.npz: no space left on the device (disk full): the checkpoint was not "
                          "written; the last good checkpoint (out/ckpt.npz, iteration 2) and the best "
                          "(out/best.npz, iteration 2, "), err
    assert load_checkpoint(work / "out" / "ckpt.npz").meta["iteration"] == 2
    assert load_checkpoint(work / "out" / "best.npz").meta["iteration"] == 2
    assert list((work / "out").glob("loss.*"))


@POSIX
def test_10_really_full_disk(work):
    """On a real 1 MiB tmpfs (needs mount privileges; skipped otherwise): refused up front, naming the space."""
    mnt = work / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        err = one_line_error(npgpt("train", "small.txt", *TINY, "--out-dir", "mnt/run", cwd=work))
        assert err.startswith("error: mnt/run: not enough free disk space for the checkpoints (needs about ")
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_10_errno_text_always_has_a_path():
    from npgpt.training.outdir import describe_os_error
    assert describe_os_error(OSError(errno.ENOSPC, "No space left on device", "out/ckpt.npz")) == \
        "out/ckpt.npz: no space left on the device (disk full)"
    assert describe_os_error(OSError(errno.EEXIST, "File exists"), "out") == "out: already exists"


# ------------------------------------------------------------------------------------------- item 11

@POSIX
def test_11_sigterm_saves_reports_and_exits_143(work):
    a = start(work)
    lines = wait_for(a, "saved")
    lines += wait_for(a, "iter")
    a.send_signal(signal.SIGTERM)
    out, err = a.communicate(timeout=60)
    assert a.returncode == 143, err
    last = out.strip().splitlines()[-1]
    it = int(last.split("at iteration ")[1].split("/")[0])
    assert last == f"terminated (SIGTERM) at iteration {it}/100000: checkpoint saved to out/ckpt.npz; " \
                   f"continue with resume (--resume)"
    assert load_checkpoint(work / "out" / "ckpt.npz").meta["iteration"] == it
    assert list((work / "out").glob("loss.*")) and not (work / "out" / ".lock").exists()


@POSIX
def test_11_sigterm_to_the_process_group_saves_too(work):
    """`timeout`, systemd and Slurm signal every process of the group, the batch-slice workers included: the
    workers leave SIGTERM to the parent, which saves and exits 143 as above."""
    a = subprocess.Popen([sys.executable, "-m", "npgpt", "train", "small.txt", *TINY, "--max-iters", "100000",
                          "--eval-interval", "1000", "--log-interval", "1"], cwd=work, env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    wait_for(a, "iter")
    wait_for(a, "iter")  # past the first steps, before the first evaluation: nothing saved yet
    os.killpg(a.pid, signal.SIGTERM)
    out, err = a.communicate(timeout=60)
    assert a.returncode == 143 and "Traceback" not in err, err
    last = out.strip().splitlines()[-1]
    it = int(last.split("at iteration ")[1].split("/")[0])
    assert last.startswith(f"terminated (SIGTERM) at iteration {it}/100000: checkpoint saved to out/ckpt.npz")
    assert load_checkpoint(work / "out" / "ckpt.npz").meta["iteration"] == it


def test_resume_into_a_busy_directory_says_it_is_busy(work):
    """A run that has not saved yet holds out/: --resume says so, not "no checkpoint to resume from"."""
    a = start(work, "--eval-interval", "100000")
    try:
        wait_for(a, "iter")
        err = one_line_error(npgpt("train", "small.txt", *TINY, "--resume", cwd=work))
        assert err.startswith(f"error: out: in use by another training run (PID {a.pid};"), err
    finally:
        a.kill()
        a.communicate()


# ------------------------------------------------------------------------------------------- item 12

def test_12_module_entry_points_print_help(work):
    for mod in (["-m", "npgpt"], ["-m", "npgpt.oracle"]):
        proc = subprocess.run([sys.executable, *mod, "--help"], cwd=work, env=ENV, capture_output=True, text=True)
        assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr
    for cmd in ("train", "sample", "oracle"):
        proc = npgpt(cmd, "--help", cwd=work)
        assert proc.returncode == 0 and "usage:" in proc.stdout, (cmd, proc.stderr)
    assert "--max-iters" in npgpt("train", "--help", cwd=work).stdout


def test_12_license_file():
    text = (ROOT / "LICENSE").read_text()
    assert text.startswith("MIT License") and "WITHOUT WARRANTY OF ANY KIND" in text


@pytest.mark.skipif(shutil.which("git") is None, reason="copies the source tree")
def test_12_wheel_has_the_command_and_the_license(tmp_path):
    """A wheel built from the sources declares `npgpt = npgpt.cli:main` and carries LICENSE; installed into
    a fresh virtual environment (numpy from the system), `npgpt train` trains and `npgpt sample` samples."""
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".hypothesis", ".pytest_cache", "out", "build",
                                                             "*.egg-info", "__pycache__", ".ci", ".benchmarks"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                           str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    if proc.returncode:
        pytest.skip(f"cannot build a wheel offline here: {proc.stderr.strip()[-200:]}")
    wheel = next((tmp_path / "dist").glob("npgpt-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry = next(n for n in names if n.endswith("entry_points.txt"))
        assert "npgpt = npgpt.cli:main" in z.read(entry).decode()
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
        assert "npgpt/cli/main.py" in names and "npgpt/data/tinyshakespeare.txt" in names
    venv = tmp_path / "venv"
    if subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                      capture_output=True).returncode:
        pytest.skip("venv is not available")
    pip = venv / "bin" / "pip"
    proc = subprocess.run([str(pip), "install", "-q", "--no-deps", "--no-index", str(wheel)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    env = {k: v for k, v in ENV.items() if k != "PYTHONPATH"}
    run = tmp_path / "run"
    run.mkdir()
    exe = str(venv / "bin" / "npgpt")
    proc = subprocess.run([exe, "train", *TINY, "--max-iters", "2", "--eval-interval", "2"], cwd=run, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "tinyshakespeare.txt" in proc.stdout and (run / "out" / "ckpt.npz").exists()
    proc = subprocess.run([exe, "sample", "--num-samples", "1", "--max-new-tokens", "5"], cwd=run, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "sample 1/1" in proc.stdout, proc.stderr


# ------------------------------------------------------------------------------------------- item 13

def test_13_min_lr_is_derived_from_lr(work):
    proc = npgpt("train", "small.txt", *TINY, "--lr", "1e-5", "--max-iters", "2", "--eval-interval", "2", cwd=work)
    assert proc.returncode == 0, proc.stderr
    err = one_line_error(npgpt("train", "small.txt", *TINY, "--lr", "1e-5", "--min-lr", "1e-4", cwd=work))
    assert err == "error: min_lr: expected at most lr=1e-05, got 0.0001"


def test_13_a_finished_run_is_extended_and_equals_one_long_run(work):
    """--resume --max-iters 8 after a finished 4-step run continues to 8; the result is bit-identical to
    an 8-step run whose cosine decay ended at step 4 (the schedule of the run being extended)."""
    base = [*TINY, "--eval-interval", "2"]
    assert npgpt("train", "small.txt", *base, "--max-iters", "4", "--out-dir", "a", cwd=work).returncode == 0
    proc = npgpt("train", "small.txt", *base, "--max-iters", "8", "--out-dir", "a", "--resume", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "resuming from a/ckpt.npz at iteration 4" in proc.stdout and "done: 8 steps" in proc.stdout
    proc = npgpt("train", "small.txt", *base, "--max-iters", "8", "--lr-decay-iters", "4", "--out-dir", "b",
                 cwd=work)
    assert proc.returncode == 0, proc.stderr
    a, b = load_checkpoint(work / "a" / "ckpt.npz"), load_checkpoint(work / "b" / "ckpt.npz")
    for k in b.params:
        assert np.array_equal(a.params[k], b.params[k]) and np.array_equal(a.adam_v[k], b.adam_v[k]), k
    assert a.meta["history"] == b.meta["history"] and a.meta["iteration"] == 8
    err = one_line_error(npgpt("train", "small.txt", *base, "--max-iters", "3", "--out-dir", "a", "--resume",
                               cwd=work))
    assert "max_iters: the checkpoint a/ckpt.npz has already completed 8 steps" in err


# ---------------------------------------------------------------------------------- the other bad inputs

@pytest.mark.parametrize("args,expected", [
    (["train", "--no-such-flag"], "error: unrecognized arguments: --no-such-flag (see npgpt train --help)"),
    (["train", "--lr", "fast"], "error: argument --lr: invalid float value: 'fast' (see npgpt train --help)"),
    (["train", "--arch", "mamba"], "error: argument --arch: invalid choice: 'mamba' (choose from gpt2, llama, "
                                   "qwen3, gemma3, olmo2, moe) (see npgpt train --help)"),
    (["train", "small.txt", "--block-size", "100000"], "error: text too short: the training split (the first "
     "90%) has 10800 tokens, but block_size=100000 needs at least 100001; use a longer text or a smaller block_size"),
    (["frobnicate"], None),
])
def test_bad_input_is_one_line(work, args, expected):
    err = one_line_error(npgpt(*args, cwd=work))
    if expected is not None:
        unquoted = re.sub(r"'(\w+)'(?=[,)])", r"\1", err)  # argparse quotes the choices since Python 3.12
        assert unquoted.replace("python -m npgpt", "npgpt") == expected
    assert not (work / "out").exists()


def test_prompt_of_only_unknown_characters(work):
    assert npgpt("train", "small.txt", *TINY, "--max-iters", "2", "--eval-interval", "2", cwd=work).returncode == 0
    err = one_line_error(npgpt("sample", "--prompt", "~€", cwd=work))
    assert err == "error: prompt: characters not in the checkpoint's vocabulary: '~' (position 0), '€' (position 1)"


def test_sample_without_a_newline_in_the_vocabulary(work):
    """No --prompt on a text without "\n": the sample starts from token 0, as train's own sample does."""
    (work / "flat.txt").write_text("abcdefgh" * 200, encoding="utf-8")
    assert npgpt("train", "flat.txt", *TINY, "--max-iters", "2", "--eval-interval", "2", cwd=work).returncode == 0
    proc = npgpt("sample", "--num-samples", "1", "--max-new-tokens", "20", cwd=work)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    body = proc.stdout.splitlines()[1]  # the line after the sample's header: 20 new characters, no start token
    assert len(body) == 20 and set(body) <= set("abcdefgh")


def test_one_sample_is_streamed_and_is_the_same_text(work):
    """--num-samples 1 prints each token as it is drawn; the text is tok.decode of the same generation."""
    from npgpt.training.checkpoint import load_checkpoint, stored_tokenizer
    from npgpt.gpt2.generate import generate
    assert npgpt("train", "small.txt", *TINY, "--max-iters", "2", "--eval-interval", "2", cwd=work).returncode == 0
    proc = npgpt("sample", "--num-samples", "1", "--max-new-tokens", "30", "--prompt", "First", "--seed", "7",
                 cwd=work)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    ck = load_checkpoint(work / "out" / "ckpt.npz")
    tok = stored_tokenizer("ckpt", ck)
    out = generate(ck.params, ck.config, tok.encode("First")[None].astype(np.int64), 30, temperature=0.8,
                   rng=np.random.default_rng(7))
    assert proc.stdout == f"---------- sample 1/1 ----------\n{tok.decode(out[0])}\n{'-' * 36}\n"


def test_the_stream_waits_for_a_character_cut_between_tokens(capsys):
    """A byte-level BPE can split one character over two tokens: the stream prints it whole, once."""
    from npgpt.tokenizers import TextStream as _TextStream
    from npgpt.tokenizers import train_bpe
    tok = train_bpe("héllo wörld " * 20, 300)
    ids = tok.encode("héllo wörld €")
    stream = _TextStream(tok)
    for b in [bytes([x]) for x in "€".encode()]:  # the three bytes of one character, as three byte tokens
        stream.write(np.array([b[0]]))
    stream.write(ids)
    stream.close()
    assert capsys.readouterr().out == "€" + "héllo wörld €" + "\n"


def test_sample_prompt_with_a_special_token_and_eval_names_the_file(work):
    """A GPT-2 tokenizer's "<|endoftext|>" in --prompt is that token (as in training and eval text); eval of
    a text with unknown characters names the file and every such character."""
    tok = ROOT / "tests" / "fixtures" / "gpt2_tokenizer" / "gpt2.tiktoken"
    assert npgpt("train", "small.txt", *TINY, "--max-iters", "2", "--eval-interval", "2", "--tokenizer", tok,
                 "--out-dir", "bpe", cwd=work).returncode == 0
    proc = npgpt("sample", "--ckpt", "bpe/ckpt.npz", "--prompt", "<|endoftext|>Hi", "--num-samples", "1",
                 "--max-new-tokens", "5", cwd=work)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.splitlines()[1].startswith("<|endoftext|>Hi")
    assert npgpt("train", "small.txt", *TINY, "--max-iters", "2", "--eval-interval", "2", cwd=work).returncode == 0
    (work / "oov.txt").write_text("First ~Citizen€", encoding="utf-8")
    err = one_line_error(npgpt("eval", "out/ckpt.npz", "oov.txt", cwd=work))
    assert err.startswith("error: oov.txt: characters not in the vocabulary (") and \
        err.endswith("): '~' (position 6), '€' (position 14)"), err


@POSIX
def test_output_into_a_closed_pipe_stops_quietly(work):
    """`npgpt sample | head -1`: no 'error: Broken pipe', no traceback, exit 141 (128 + SIGPIPE).  The output
    (40 x 2000 characters) is larger than a pipe's 64 KiB buffer, so the sampler is still writing when we close."""
    assert npgpt("train", "small.txt", *TINY, "--max-iters", "2", "--eval-interval", "2", cwd=work).returncode == 0
    p = subprocess.Popen([sys.executable, "-m", "npgpt", "sample", "--num-samples", "40", "--max-new-tokens", "2000"],
                         cwd=work, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    p.stdout.readline()
    p.stdout.close()
    err = p.stderr.read().decode()
    p.wait(timeout=120)
    assert p.returncode == 141 and err == "", err


# ---------------------------------------------------------------------------------------------- issue 42

@POSIX
@pytest.mark.parametrize("command", ["train", "eval"])
def test_42_7_a_device_is_refused_at_once(work, command):
    """`npgpt train /dev/zero` read without end (12 GB in 23 s): now one line, before anything is built."""
    if command == "eval":
        assert npgpt("train", "small.txt", *TINY, "--max-iters", "2", "--eval-interval", "2", cwd=work).returncode == 0
        args = ["eval", "out/ckpt.npz", "/dev/zero"]
    else:
        args = ["train", "/dev/zero", *TINY, "--max-iters", "2"]
    t0 = time.time()
    err = one_line_error(npgpt(*args, cwd=work, timeout=60))
    assert err == "error: /dev/zero: a character device, not a regular file; expected a text file"
    assert time.time() - t0 < 30
    assert command == "eval" or not (work / "out").exists()


@POSIX
def test_42_7_a_pipe_is_still_read(work):
    """`npgpt train /dev/stdin` fed by a pipe: a FIFO is read in bounded chunks, to its end."""
    text = (work / "small.txt").read_text(encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "npgpt", "train", "/dev/stdin", *TINY, "--max-iters", "1"],
                          cwd=work, env=ENV, capture_output=True, text=True, timeout=120, input=text)
    assert proc.returncode == 0, proc.stderr
    assert "data: /dev/stdin: 12,000 characters" in proc.stdout


@pytest.mark.parametrize("content,expected", [
    ("a" * 3000, "error: one.txt: the text has a single distinct character ('a'): nothing can be learned from a "
                 "vocabulary of one; train on a text with more than one character"),
    ("\0" * 3000, "error: one.txt: the text has a single distinct character ('\\x00'): nothing can be learned from "
                  "a vocabulary of one; the file is all NUL bytes: is it a binary file?"),
], ids=["one-character", "nul-bytes"])
def test_42_a_text_of_one_character(work, content, expected):
    (work / "one.txt").write_text(content, encoding="utf-8")
    err = one_line_error(npgpt("train", "one.txt", *TINY, "--max-iters", "2", cwd=work))
    assert err == expected
    assert not (work / "out").exists()


def test_42_bpe_merges_that_run_out_are_named(work):
    """bpe:10000000 on a small text stops where no pair repeats: a note says at how many ids, the run goes on."""
    proc = npgpt("train", "small.txt", *TINY, "--max-iters", "1", "--tokenizer", "bpe:10000000", cwd=work)
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stdout.splitlines() if line.startswith("note: bpe:")]
    assert len(notes) == 1, proc.stdout
    V = load_checkpoint(work / "out" / "ckpt.npz").config.vocab_size
    assert 256 < V < 10_000_000
    assert notes[0] == (f"note: bpe:10000000: the merges ran out at {V} ids (no pair of tokens occurs twice more "
                        f"in the training split); the vocabulary is {V}")


def test_42_lr_decay_iters_below_warmup_iters(work):
    err = one_line_error(npgpt("train", "small.txt", "--warmup-iters", "100", "--lr-decay-iters", "50", cwd=work))
    assert err == ("error: lr_decay_iters: expected at least warmup_iters=100, got 50 (the decay would end "
                   "before the warmup does)")
    assert not (work / "out").exists()


def test_42_12_sample_from_a_checkpoint_whose_tokenizer_is_too_small(work):
    """A checkpoint whose tokenizer covers fewer ids than the model draws: refused when loading, naming the
    file, before the sample's header is printed (it was `error: ids: token id 53 is out of range [0, 10)`)."""
    from npgpt.training.checkpoint import save_checkpoint
    from npgpt.tokenizers import CharTokenizer
    assert npgpt("train", "small.txt", *TINY, "--max-iters", "2", "--eval-interval", "2", cwd=work).returncode == 0
    ck = load_checkpoint(work / "out" / "ckpt.npz")
    meta = {k: v for k, v in ck.meta.items() if k not in ("format", "version", "model_config", "model_family")}
    meta["tokenizer"] = CharTokenizer("abcdefghij").to_dict()
    save_checkpoint(work / "small" / "ckpt.npz", ck.params, ck.adam_m, ck.adam_v, ck.config, meta)
    proc = npgpt("sample", "--ckpt", "small/ckpt.npz", "--num-samples", "1", "--max-new-tokens", "50", cwd=work)
    err = one_line_error(proc)
    assert proc.stdout == ""
    V = ck.config.vocab_size
    assert err == (f"error: small/ckpt.npz: its tokenizer has 10 tokens but the model's vocabulary {V}: a sample "
                   f"could draw ids 10 to {V - 1}, which no token stands for; the file was edited or is damaged")
