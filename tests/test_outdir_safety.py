"""Issue 42, items 1-6 and two smaller ones: a trained run is never lost to the out dir's lock, a fresh run, a
deleted directory, a failed save, the loss plot or a second signal.

Real processes and real signals, as a user runs `npgpt train`.  The races are made deterministic by holding
the final save open (HOOK: the interruption save writes its temporary file, then blocks on a FIFO until the
test opens it), or by stopping the run with SIGSTOP, never by sleeping and hoping.  Full disks are real
tmpfs mounts (root only; skipped elsewhere) or an injected ENOSPC.
"""

from __future__ import annotations

import errno
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from npgpt.training.checkpoint import load_checkpoint
from npgpt.training.data import bundled_corpus_path

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "OPENBLAS_NUM_THREADS": "1",
       "OMP_NUM_THREADS": "1"}
ENV.pop("NPGPT_AVAILABLE_MEMORY", None)
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "8", "--batch-size", "4",
        "--eval-iters", "1", "--sample-len", "0", "--warmup-iters", "2"]
POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals, FIFOs and mounts")

# `python -c HOOK train ...`: npgpt's command with two holds.  After step 7 (between the saves of steps 5 and
# 10) it creates ./stepped and waits on the FIFO ./step until the test opens it, so a signal sent meanwhile
# always leaves an interruption save to do.  That save (report._save) blocks once its temporary file is
# written: it creates ./saving, then waits on the FIFO ./go.
HOOK = r"""
import os, sys
from pathlib import Path
import npgpt.training.checkpoint as c
import npgpt.training.loop as L
import npgpt.training.report as r
real_step = L._step
def step(run):
    loss = real_step(run)
    if run.st.it == 7:
        Path("stepped").write_text("")
        with open("step", "rb") as g:
            g.read()
    return loss
L._step = step
real_write, real_save, final = c.atomic_write, r._save, []
def save(run, path):
    final.append(path)
    real_save(run, path)
def write(path, fn):
    if not final:
        return real_write(path, fn)
    def held(f):
        fn(f)
        f.flush()
        Path("saving").write_text(str(os.getpid()))
        with open("go", "rb") as g:
            g.read()
    return real_write(path, held)
c.atomic_write = write
r._save = save
from npgpt.cli import main
sys.exit(main(sys.argv[1:]))
"""

# `python -c FILL MOUNT train ...`: after the first evaluation's two saves, the file system at MOUNT is filled
# to the last byte (a real ENOSPC at the next save).
FILL = r"""
import errno, sys
import npgpt.training.checkpoint as c
mount = sys.argv.pop(1)
real, calls = c.atomic_write, []
def write(path, fn):
    calls.append(path)
    if len(calls) == 3:
        with open(mount + "/filler", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)

            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    return real(path, fn)
c.atomic_write = write
from npgpt.cli import main
sys.exit(main(sys.argv[1:]))
"""

# the same with an injected ENOSPC (no mount needed): every save after the first evaluation's two fails
INJECT = r"""
import errno, sys
import npgpt.training.checkpoint as c
real, calls = c.atomic_write, []
def write(path, fn):
    calls.append(path)
    if len(calls) >= 3:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    return real(path, fn)
c.atomic_write = write
from npgpt.cli import main
sys.exit(main(sys.argv[1:]))
"""


def npgpt(*args, cwd, code=None, timeout=180):
    head = [sys.executable, "-m", "npgpt"] if code is None else [sys.executable, "-c", code]
    return subprocess.run([*head, *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True,
                          timeout=timeout)


def one_line_error(proc, code=2):
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


def start(work, *args, hook=False):
    """A long tiny run in the background, a line per step, an evaluation (and a save) every 5 steps."""
    head = [sys.executable, "-c", HOOK] if hook else [sys.executable, "-m", "npgpt"]
    return subprocess.Popen([*head, "train", "small.txt", *TINY, "--max-iters", "100000", "--eval-interval", "5",
                             "--log-interval", "1", *map(str, args)], cwd=work, env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def wait_for(proc, text, timeout=120):
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


def wait_for_file(proc, path, timeout=120):
    """Until path exists (the hooked save is blocked); fails if the process ends first."""
    t0 = time.time()
    while not path.exists():
        if proc.poll() is not None or time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"{path} never appeared: {proc.communicate()}")
        time.sleep(0.01)


def release(fifo, proc=None, timeout=120):
    """Let a process blocked on the FIFO go on.  Without proc: once, if anybody waits on it; with proc: until
    it does (a signal can take it out of its open() for a moment), or until proc ends."""
    t0 = time.time()
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            if proc is None or proc.poll() is not None or time.time() - t0 > timeout:
                return
            time.sleep(0.01)
            continue
        os.close(fd)
        return


def held_at_the_final_save(work, sig):
    """A hooked run, interrupted by sig after step 7: returns once its interruption save is held open."""
    os.mkfifo(work / "go")
    os.mkfifo(work / "step")
    a = start(work, hook=True)
    wait_for_file(a, work / "stepped")
    a.send_signal(sig)
    release(work / "step", a)
    wait_for_file(a, work / "saving")  # the final save is under way, and held open
    return a


def trained(work, out="out", *extra):
    proc = npgpt("train", "small.txt", *TINY, "--max-iters", "4", "--eval-interval", "2", "--out-dir", out, *extra,
                 cwd=work)
    assert proc.returncode == 0, proc.stderr


def snapshot(d):
    return {p.name: p.read_bytes() for p in sorted(Path(d).iterdir()) if p.is_file()}


@pytest.fixture()
def tmpfs(work):
    """A 4 MiB tmpfs at work/mnt (root only)."""
    mnt = work / "mnt"
    mnt.mkdir()
    if sys.platform == "win32" or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)],
                                                 capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


# ------------------------------------------------------------------------------------------------- item 1

@POSIX
def test_1_the_lock_is_held_until_the_interruption_save_is_written(work):
    a = held_at_the_final_save(work, signal.SIGTERM)
    try:
        assert list((work / "out").glob(".ckpt.npz.*.tmp"))
        for extra in (["--resume", "--max-iters", "1"], ["--overwrite"]):
            b = npgpt("train", "small.txt", *TINY, "--max-iters", "2", *extra, cwd=work)
            err = one_line_error(b)
            assert err.startswith(f"error: out: in use by another training run (PID {a.pid}; "), err
        assert list((work / "out").glob(".ckpt.npz.*.tmp"))  # not taken for the leftover of a killed save
    finally:
        release(work / "go")
        out, err = a.communicate(timeout=120)
    assert a.returncode == 143, err
    assert out.strip().splitlines()[-1] == ("terminated (SIGTERM) at iteration 7/100000: checkpoint saved to "
                                            "out/ckpt.npz; continue with resume (--resume)")
    assert load_checkpoint(work / "out" / "ckpt.npz").meta["iteration"] == 7
    assert not list((work / "out").glob(".*.tmp")) and not (work / "out" / ".lock").exists()


def test_1_the_lock_is_held_while_the_plot_and_hf_are_written(work, monkeypatch):
    """In process: at the moment the loss plot is drawn (the last write), out/.lock is still there."""
    import npgpt.training.report as report
    from npgpt.training import TrainConfig, train
    seen = []
    real = report._plot

    def plot(run):
        seen.append((Path(run.cfg.out_dir) / ".lock").exists())
        return real(run)
    monkeypatch.setattr(report, "_plot", plot)
    cfg = TrainConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, batch_size=4, eval_iters=1, sample_len=0,
                      warmup_iters=2, max_iters=2, eval_interval=2, out_dir=str(work / "out"))
    train(work / "small.txt", cfg, log=lambda s: None)
    assert seen and all(seen)
    assert not (work / "out" / ".lock").exists()


# ------------------------------------------------------------------------------------------------- item 2

def test_2_a_fresh_run_over_a_trained_directory_is_refused(work):
    trained(work)
    before = snapshot(work / "out")
    err = one_line_error(npgpt("train", "small.txt", *TINY, "--max-iters", "3", cwd=work))
    assert err == ("error: out: holds a trained run (ckpt.npz at iteration 4, best.npz at iteration 4); continue "
                   "it with --resume, train into a new --out-dir, or start over with --overwrite (which replaces "
                   "them)"), err
    assert snapshot(work / "out") == before


def test_2_overwrite_starts_over(work):
    trained(work)
    proc = npgpt("train", "small.txt", *TINY, "--max-iters", "3", "--eval-interval", "3", "--overwrite", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "note: --overwrite: this run replaces out/ckpt.npz and out/best.npz of the run that was there at its " \
           "first save" in proc.stdout
    assert load_checkpoint(work / "out" / "ckpt.npz").meta["iteration"] == 3
    assert load_checkpoint(work / "out" / "best.npz").meta["iteration"] == 3
    err = one_line_error(npgpt("train", "small.txt", *TINY, "--resume", "--overwrite", cwd=work))
    assert err == "error: overwrite: cannot be combined with resume (--resume continues the run, --overwrite " \
                  "replaces it)"


def test_2_only_best_npz_offers_resume_from_it(work):
    trained(work)
    (work / "out" / "ckpt.npz").unlink()
    err = one_line_error(npgpt("train", "small.txt", *TINY, "--max-iters", "3", cwd=work))
    assert err == ("error: out: holds a trained run (best.npz at iteration 4, no ckpt.npz); to continue it from "
                   "best.npz, copy it to out/ckpt.npz and use --resume; or train into a new --out-dir, or start "
                   "over with --overwrite (which replaces it)"), err
    err = one_line_error(npgpt("train", "small.txt", *TINY, "--resume", cwd=work))
    assert err == ("error: out/ckpt.npz: no checkpoint to resume from, but out/best.npz is there (iteration 4): "
                   "copy it to out/ckpt.npz to continue the run from it"), err
    shutil.copy(work / "out" / "best.npz", work / "out" / "ckpt.npz")
    proc = npgpt("train", "small.txt", *TINY, "--resume", "--max-iters", "6", cwd=work)
    assert proc.returncode == 0, proc.stderr
    assert "resuming from out/ckpt.npz at iteration 4" in proc.stdout


# ------------------------------------------------------------------------------------------------- item 3

@POSIX
def test_3_the_out_dir_deleted_during_the_run_stops_it(work):
    a = start(work)
    wait_for(a, "saved")
    shutil.rmtree(work / "out")
    out, err = a.communicate(timeout=120)
    assert "Traceback" not in err, err
    assert a.returncode == 2, err
    assert re.fullmatch(r"error: out: the output directory was deleted during the run: stopped at iteration \d+ "
                        r"without saving \(nothing is written anywhere else\)\n", err), err
    assert not (work / "out").exists()  # not recreated, not even for the plot


@POSIX
def test_3_a_second_run_on_the_deleted_directory_shares_nothing(work):
    a = start(work)
    wait_for(a, "saved")
    os.kill(a.pid, signal.SIGSTOP)  # a stays between two saves while the directory changes hands
    try:
        shutil.rmtree(work / "out")
        b = start(work, "--seed", "7")
        wait_for(b, "saved")
    finally:
        os.kill(a.pid, signal.SIGCONT)
    out, err = a.communicate(timeout=120)
    assert a.returncode == 2, err
    assert re.fullmatch(rf"error: out/.lock: the run's lock file now belongs to another run \(PID {b.pid}\): "
                        r"stopped at iteration \d+ without saving, so that two runs never share out\n", err), err
    b.send_signal(signal.SIGTERM)
    out_b, err_b = b.communicate(timeout=120)
    assert b.returncode == 143, err_b
    for name in ("ckpt.npz", "best.npz"):
        assert load_checkpoint(work / "out" / name).meta["train_config"]["seed"] == 7
    assert not (work / "out" / ".lock").exists()


def test_3_the_lock_file_deleted_during_the_run_stops_it(work):
    from npgpt.training import TrainConfig, train
    cfg = TrainConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, batch_size=4, eval_iters=1, sample_len=0,
                      warmup_iters=2, max_iters=20, eval_interval=4, out_dir=str(work / "out"))

    def unlock(it, loss):
        if it == 5:
            (work / "out" / ".lock").unlink()
    with pytest.raises(ValueError) as e:
        train(work / "small.txt", cfg, log=lambda s: None, callback=unlock)
    lock = work / "out" / ".lock"
    assert str(e.value) == (f"{lock}: the run's lock file was deleted during the run: stopped at iteration 8 "
                            f"without saving, since another run may now use {work / 'out'}")
    assert load_checkpoint(work / "out" / "ckpt.npz").meta["iteration"] == 4
    assert not lock.exists()


# ------------------------------------------------------------------------------------------------- item 4

def _check_the_error_names_what_is_on_disk(err, out):
    m = re.search(r"the last good checkpoint \((.*)/ckpt\.npz, iteration (\d+)\) and the best \(.*/best\.npz, "
                  r"iteration (\d+), val loss ([0-9.]+)\) are untouched", err)
    assert m, err
    ckpt, best = load_checkpoint(out / "ckpt.npz").meta, load_checkpoint(out / "best.npz").meta
    assert int(m.group(2)) == ckpt["iteration"]
    assert int(m.group(3)) == best["iteration"]
    assert f"{best['best_checkpoint'][1]:.4f}" == m.group(4)
    assert ckpt["best_checkpoint"][0] <= best["iteration"]  # ckpt.npz never names a best.npz that was not written
    assert not list(out.glob(".*.tmp"))
    assert all(p.stat().st_size > 0 for p in out.glob("loss.*"))  # a plot is whole or absent


ARGS4 = ["train", "small.txt", *TINY, "--eval-iters", "4", "--max-iters", "20", "--eval-interval", "2"]


@POSIX
def test_4_a_really_full_disk_during_a_save(work, tmpfs):
    proc = npgpt(tmpfs, *ARGS4, "--out-dir", "mnt/run", cwd=work, code=FILL)
    err = one_line_error(proc)
    assert err.startswith("error: mnt/run/best.npz: no space left on the device (disk full): the checkpoint was not "
                          "written; "), err
    _check_the_error_names_what_is_on_disk(err, tmpfs / "run")


def test_4_an_injected_enospc_during_a_save(work):
    err = one_line_error(npgpt(*ARGS4, cwd=work, code=INJECT))
    assert err.startswith("error: out/best.npz: no space left on the device (disk full): "), err
    _check_the_error_names_what_is_on_disk(err, work / "out")


@POSIX
def test_4_an_immutable_ckpt_npz(work):
    """chattr +i on ckpt.npz (root, on a file system with the flag; skipped elsewhere): best.npz of the resumed
    run is written, ckpt.npz cannot be, and the error names both files' real iterations."""
    trained(work, "out", "--eval-iters", "4", "--max-iters", "2")  # iteration 4 of the resumed run: a new best
    ckpt = work / "out" / "ckpt.npz"
    if shutil.which("chattr") is None or subprocess.run(["chattr", "+i", str(ckpt)], capture_output=True).returncode:
        pytest.skip("cannot make a file immutable here")
    try:
        proc = npgpt("train", "small.txt", *TINY, "--eval-iters", "4", "--resume", "--max-iters", "12", cwd=work)
    finally:
        subprocess.run(["chattr", "-i", str(ckpt)], check=True)
    err = one_line_error(proc)
    assert err.startswith("error: out/ckpt.npz: operation not permitted: the checkpoint was not written; "), err
    _check_the_error_names_what_is_on_disk(err, work / "out")


# ------------------------------------------------------------------------------------------------- item 5

def _fill(mnt):
    with open(mnt / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC


@POSIX
def test_5_a_failed_plot_keeps_the_old_one(tmpfs):
    from npgpt.training.plot import plot_losses
    losses = [4.0 - 0.01 * i for i in range(300)]
    good = plot_losses(tmpfs / "loss", losses[:10], [(0, 4.2, 4.3), (10, 3.9, 4.0)], fmt="svg")
    old = good.read_bytes()
    _fill(tmpfs)
    with pytest.raises(OSError) as e:
        plot_losses(tmpfs / "loss", losses, [(0, 4.2, 4.3), (10, 3.9, 4.0), (300, 1.0, 2.0)], fmt="svg")
    assert e.value.errno == errno.ENOSPC and e.value.filename == str(good)
    assert good.read_bytes() == old
    assert sorted(p.name for p in tmpfs.iterdir()) == ["filler", "loss.svg"]


@POSIX
def test_5_a_fresh_plot_on_a_full_disk_leaves_no_empty_file(tmpfs):
    from npgpt.training.plot import plot_losses
    _fill(tmpfs)
    with pytest.raises(OSError):
        plot_losses(tmpfs / "loss", [4.0, 3.9], [(0, 4.2, 4.3)], fmt="svg")
    assert sorted(p.name for p in tmpfs.iterdir()) == ["filler"]


# ------------------------------------------------------------------------------------------------- item 6

@POSIX
@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_6_a_second_signal_during_the_interruption_save(work, sig, code):
    a = held_at_the_final_save(work, sig)
    try:
        assert list((work / "out").glob(".ckpt.npz.*.tmp"))
        a.send_signal(sig)  # the second one, while the save is held open
        out, err = a.communicate(timeout=120)
    finally:
        release(work / "go")
        if a.poll() is None:
            a.kill()
    assert a.returncode == code, (a.returncode, err)
    assert err == "error: interrupted: stopped at once; the last checkpoint written is kept\n"
    assert load_checkpoint(work / "out" / "ckpt.npz").meta["iteration"] == 5  # the last one written, whole
    assert not list((work / "out").glob(".*.tmp")) and not (work / "out" / ".lock").exists()


# ------------------------------------------------------------------------------------------- smaller ones

def test_the_closing_sample_is_streamed(work):
    """A huge --sample-len shows its first characters at once: the sample is printed as it is drawn."""
    a = subprocess.Popen([sys.executable, "-m", "npgpt", "train", "small.txt", *TINY[:-4], "--warmup-iters", "2",
                          "--max-iters", "2", "--eval-interval", "2", "--sample-len", "10000000"], cwd=work, env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    rule = b"-" * 72 + b"\n"
    head, deadline = b"", time.time() + 90
    try:
        while time.time() < deadline and not (rule in head and len(head.split(rule, 1)[1]) >= 20):
            if select.select([a.stdout], [], [], 1.0)[0]:
                chunk = os.read(a.stdout.fileno(), 4096)
                if not chunk:
                    break
                head += chunk
    finally:
        a.kill()
        a.communicate()
    assert b"sample (10000000 tokens, temperature 1.0):\n" + rule in head, head
    assert len(head.split(rule, 1)[1]) >= 20, head
