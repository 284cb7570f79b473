"""docs/training.md's table of bad inputs ("## Errors") is what the code prints (issue 42).

Each row of the table is either reproduced here, in a subprocess as a user runs it (the row's first `code`
span, with "…" standing for any text, must be the whole line the command prints, and the exit status must be
the row's), or named in ELSEWHERE with the test that covers it (rows that need signals, full disks, long runs
or a second process).  A new row must go into one of the two: the last test fails otherwise.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from npgpt.training.data import bundled_corpus_path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "training.md"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "OPENBLAS_NUM_THREADS": "1",
       "OMP_NUM_THREADS": "1"}
ENV.pop("NPGPT_AVAILABLE_MEMORY", None)
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "8", "--batch-size", "4",
        "--eval-iters", "1", "--sample-len", "0", "--warmup-iters", "2"]
POSIX = sys.platform != "win32"


def table_rows() -> list[tuple[str, str, str]]:
    """(input, message cell, exit) of every row of the table under "## Errors"."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split("\n## Errors\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| ") or line.startswith("| input |"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        rows.append((cells[0], cells[1], cells[2]))
    return rows


def first_code_span(cell: str) -> str:
    m = re.search(r"`([^`]+)`", cell)
    assert m, f"no `message` in {cell!r}"
    return m.group(1)


def npgpt(work: Path, *args: object, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "npgpt", *map(str, args)], cwd=work, env=ENV,
                          capture_output=True, timeout=300, input=stdin)


def trained(work: Path) -> None:
    """A finished tiny run in work/out."""
    if not (work / "out" / "ckpt.npz").exists():
        proc = npgpt(work, "train", "small.txt", *TINY, "--max-iters", "2", "--eval-interval", "2")
        assert proc.returncode == 0, proc.stderr


def _one_char(content: str) -> Callable[[Path], subprocess.CompletedProcess]:
    def run(work: Path) -> subprocess.CompletedProcess:
        (work / "one.txt").write_text(content, encoding="utf-8")
        return npgpt(work, "train", "one.txt", *TINY, "--max-iters", "2")
    return run


def _bin(work: Path) -> subprocess.CompletedProcess:
    (work / "bin.txt").write_bytes(b"hello \xff world")
    return npgpt(work, "train", "bin.txt")


def _empty(work: Path) -> subprocess.CompletedProcess:
    (work / "empty.txt").write_bytes(b"")
    return npgpt(work, "train", "empty.txt")


def _a_dir(work: Path) -> subprocess.CompletedProcess:
    (work / "out").mkdir(exist_ok=True)
    return npgpt(work, "train", "out")


def _afile(work: Path) -> subprocess.CompletedProcess:
    (work / "afile").write_text("x")
    return npgpt(work, "train", "small.txt", "--out-dir", "afile")


def _eval_device(work: Path) -> subprocess.CompletedProcess:
    trained(work)
    return npgpt(work, "eval", "out/ckpt.npz", "/dev/zero")


def _nan_init(work: Path) -> subprocess.CompletedProcess:
    from tokenizer_fixtures import gpt2_tok

    from npgpt import GPT, GPTConfig
    from npgpt.families import save_dir as save_gpt2_dir
    model = GPT(GPTConfig(vocab_size=50257, block_size=32, n_layer=1, n_head=2, n_embd=8), seed=0)
    model.params["h.0.attn.c_proj.weight"][1, 2] = np.nan
    save_gpt2_dir(model, gpt2_tok(), work / "nan_gpt2")
    return npgpt(work, "train", "small.txt", "--init-from", "nan_gpt2", "--block-size", "16", "--max-iters", "2")


def _small_tokenizer(work: Path) -> subprocess.CompletedProcess:
    from npgpt.training.checkpoint import load_checkpoint, save_checkpoint
    from npgpt.tokenizers import CharTokenizer
    trained(work)
    ck = load_checkpoint(work / "out" / "ckpt.npz")
    meta = {k: v for k, v in ck.meta.items() if k not in ("format", "version", "model_config", "model_family")}
    meta["tokenizer"] = CharTokenizer("abcdefghij").to_dict()
    save_checkpoint(work / "small" / "ckpt.npz", ck.params, ck.adam_m, ck.adam_v, ck.config, meta)
    return npgpt(work, "sample", "--ckpt", "small/ckpt.npz")


def _cut_tiktoken(work: Path) -> subprocess.CompletedProcess:
    from tokenizer_fixtures import TIKTOKEN_FILE
    lines = Path(TIKTOKEN_FILE).read_bytes().split(b"\n")
    (work / "cut.tiktoken").write_bytes(b"\n".join(lines[:1749] + [lines[1749][:-1]]))
    return npgpt(work, "train", "small.txt", "--tokenizer", "cut.tiktoken")


def _oracle_over(work: Path) -> subprocess.CompletedProcess:
    (work / "mine").mkdir()
    np.savez(work / "mine" / "block.npz", weights=np.arange(3.0))
    return npgpt(work, "oracle", "dump", "--out", "mine")


def _over_trained(*args: str, best_only: bool = False) -> Callable[[Path], subprocess.CompletedProcess]:
    def run(work: Path) -> subprocess.CompletedProcess:
        trained(work)
        if best_only:
            (work / "out" / "ckpt.npz").unlink()
        return npgpt(work, "train", "small.txt", *TINY, "--max-iters", "2", "--eval-interval", "2", *args)
    return run


# input cell -> how to reproduce it in a fresh directory holding small.txt
REPRODUCED: dict[str, Callable[[Path], subprocess.CompletedProcess]] = {
    "TEXT_FILE missing": lambda w: npgpt(w, "train", "nope.txt"),
    "TEXT_FILE is a directory": _a_dir,
    "empty file": _empty,
    "not UTF-8": _bin,
    "an unknown flag": lambda w: npgpt(w, "train", "--no-such-flag"),
    "a flag of the wrong type": lambda w: npgpt(w, "train", "--lr", "fast"),
    "a value out of range": lambda w: npgpt(w, "train", "small.txt", "--max-iters", "0"),
    "`--min-lr` above `--lr`": lambda w: npgpt(w, "train", "small.txt", "--lr", "1e-05", "--min-lr", "0.0001"),
    "`--out-dir` is a file": _afile,
    "`--resume` without a checkpoint": lambda w: npgpt(w, "train", "small.txt", "--resume", "--out-dir",
                                                         "nothing_here"),
    "TEXT_FILE is a device (`npgpt train /dev/zero`)": lambda w: npgpt(w, "train", "/dev/zero", *TINY),
    "`npgpt eval CKPT /dev/zero`": _eval_device,
    "a text of one distinct character": _one_char("a" * 3000),
    "a text of NUL bytes only (a binary file)": _one_char("\0" * 3000),
    "`--tokenizer bpe:10000000` (more ids than the text's merges give)":
        lambda w: npgpt(w, "train", "small.txt", *TINY, "--max-iters", "1", "--tokenizer", "bpe:10000000"),
    "`--lr-decay-iters` below `--warmup-iters`":
        lambda w: npgpt(w, "train", "small.txt", "--warmup-iters", "100", "--lr-decay-iters", "50"),
    "a `.tiktoken` cut in the middle of a number (`--tokenizer cut.tiktoken`)": _cut_tiktoken,
    "`--init-from` a directory whose weights hold NaN": _nan_init,
    "`npgpt sample`, a checkpoint whose tokenizer is smaller than its model's vocabulary": _small_tokenizer,
    "`npgpt oracle dump --out mine`, `mine/block.npz` not a golden file": _oracle_over,
    "`npgpt oracle dump --vocab 1`": lambda w: npgpt(w, "oracle", "dump", "--out", "v1", "--vocab", "1"),
    "a fresh run (no `--resume`) into an out dir that holds a trained run": _over_trained(),
    "`--overwrite` over a trained run": _over_trained("--overwrite"),
    "a fresh run into an out dir that holds only `best.npz`": _over_trained(best_only=True),
    "`--resume` where the out dir holds only `best.npz`": _over_trained("--resume", best_only=True),
    "`--resume --overwrite`": lambda w: npgpt(w, "train", "small.txt", "--resume", "--overwrite"),
}
DEVICE_ROWS = {"TEXT_FILE is a device (`npgpt train /dev/zero`)", "`npgpt eval CKPT /dev/zero`"}

# input cell -> where the row is checked instead
ELSEWHERE = {
    "text too short for block_size": "test_examples.py::test_train_example_bad_input",
    "`--block-size` larger than the text": "test_cli.py::test_bad_input_is_one_line",
    "an unknown `--arch`": "test_cli.py::test_bad_input_is_one_line (argparse quotes choices by version)",
    "a config too large for the memory (`--n-embd 65536 --n-head 1`)": "test_cli.py::test_2_*",
    "`--batch-size 1000000000`": "test_cli.py::test_2_*",
    "`--out-dir` read-only": "test_cli.py (read-only directory)",
    "`--out-dir` in use by another run": "test_cli.py (a second run on a busy out dir)",
    "`--out-dir` locked by a dead run": "test_cli.py (stale lock)",
    "temporary files of a killed save": "test_cli.py (left-over temporary files)",
    "`OPENBLAS_CORETYPE` pins AVX2 kernels on an AVX-512 CPU": "test_train.py (depends on the CPU)",
    "not enough disk space (before the run)": "test_cli.py (disk space)",
    "disk full during a save": "test_cli.py (injected ENOSPC)",
    "`--resume`, checkpoint from another configuration": "test_cli.py (resume)",
    "`--resume` with another text": "test_cli.py (resume)",
    "`--resume --max-iters` below the steps done": "test_cli.py::test_extending_*",
    "checkpoint of random bytes (`--resume` or `npgpt sample`)": "test_checkpoint.py",
    "another program's npz / truncated": "test_checkpoint.py",
    "`npgpt oracle check out/ckpt.npz`": "test_oracle.py",
    "`npgpt sample --prompt \"~€\"` (only unknown characters)": "test_cli.py::test_prompt_of_only_unknown_characters",
    "a loss above 2 ln V + 1, or NaN": "test_train.py (divergence)",
    "Ctrl-C": "test_cli.py (SIGINT)",
    "SIGTERM": "test_cli.py (SIGTERM)",
    "not enough memory after all (the estimate is an estimate)": "test_cli.py (MemoryError)",
    "TEXT_FILE is a pipe that does not end": "test_textfile.py::test_a_fifo_that_does_not_end_is_cut_at_the_cap",
    "(Python) `npgpt.gpt2.llmc.read_model(\"/dev/zero\")`":
        "test_llmc.py::test_an_endless_file_is_refused_from_its_header",
    "(Python) `check_layer` on a forward with an integer output": "test_gradcheck.py",
    "(Python) `check_layer` with integer-only inputs": "test_gradcheck.py",
    "`--out-dir` in use by a run that is still writing its last files (the interruption checkpoint, the plot, "
    "`hf/`)": "test_outdir_safety.py::test_1_* (the final save held open on a FIFO)",
    "the out dir deleted during the run (`rm -rf out`)": "test_outdir_safety.py::test_3_the_out_dir_deleted_*",
    "the out dir deleted, and a second run started on it before the first one's next save":
        "test_outdir_safety.py::test_3_a_second_run_* (SIGSTOP holds the first run between two saves)",
    "the lock file deleted during the run": "test_outdir_safety.py::test_3_the_lock_file_deleted_*",
    "disk full while a new best is saved": "test_outdir_safety.py::test_4_* (a real tmpfs, and an injected ENOSPC)",
    "`ckpt.npz` immutable (`chattr +i`) when a resumed run saves": "test_outdir_safety.py::test_4_an_immutable_*",
    "the loss plot cannot be written (disk full)": "test_outdir_safety.py::test_5_* (a real tmpfs)",
    "a second SIGTERM (or Ctrl-C) during the interruption save": "test_outdir_safety.py::test_6_*",
    "a huge `--sample-len`": "test_outdir_safety.py::test_the_closing_sample_is_streamed",
}


@pytest.fixture()
def work(tmp_path):
    (tmp_path / "small.txt").write_text(bundled_corpus_path().read_text(encoding="utf-8")[:12_000],
                                        encoding="utf-8")
    return tmp_path


def test_every_row_is_reproduced_or_placed():
    inputs = [r[0] for r in table_rows()]
    assert len(inputs) == len(set(inputs)), "two rows with the same input"
    unplaced = [i for i in inputs if i not in REPRODUCED and i not in ELSEWHERE]
    assert not unplaced, f"rows neither reproduced here nor in ELSEWHERE: {unplaced}"
    stale = [i for i in (*REPRODUCED, *ELSEWHERE) if i not in inputs]
    assert not stale, f"no such row in docs/training.md any more: {stale}"


@pytest.mark.parametrize("row", sorted(REPRODUCED))
def test_the_row_is_what_the_command_prints(work, row):
    if row in DEVICE_ROWS and not (POSIX and os.path.exists("/dev/zero")):
        pytest.skip("POSIX devices")
    rows = {r[0]: r for r in table_rows()}
    _, cell, status = rows[row]
    proc = REPRODUCED[row](work)
    stdout = proc.stdout.decode()
    stderr = proc.stderr.decode().replace("python -m npgpt", "npgpt")  # the table shows the installed command
    assert "Traceback" not in stderr, stderr
    assert proc.returncode == int(status), (proc.returncode, stderr[-2000:])
    want = re.compile(".*".join(map(re.escape, first_code_span(cell).split("…"))))
    if status == "0":  # a note: one line of stdout
        assert any(want.fullmatch(line) for line in stdout.splitlines()), stdout
    else:
        assert stderr.count("\n") == 1 and want.fullmatch(stderr.strip()), (stderr, want.pattern)
