"""npgpt.oracle: golden files round-trip exactly, tampering is caught and named, float32 and float64 dumps
agree, the CLI's exit codes, and docs/oracle.md describing exactly what is written."""

from __future__ import annotations

import ast
import json
import math
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from npgpt import layers
from npgpt.gpt2 import BLOCK_PARAM_NAMES, BlockCache, GPTCache
from npgpt.oracle.__main__ import main as oracle_main
from npgpt.oracle.moe_cases import E as MOE_E  # the MoE cases' fixed sizes (docs/oracle.md's E and K)
from npgpt.oracle.moe_cases import K as MOE_K
from npgpt.oracle import (
    CASE_NAMES,
    OracleError,
    check_path,
    compare_arrays,
    dump_cases,
    load_case,
)

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "oracle.md"


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "npgpt.oracle", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd or ROOT, timeout=120)


def cli(capsys, *args, prog: str | None = None) -> subprocess.CompletedProcess:
    """The CLI in this process (same code as `python -m npgpt.oracle`, without an interpreter start-up); an
    argparse exit (SystemExit) gives its status like a return."""
    capsys.readouterr()
    try:
        code = oracle_main([str(a) for a in args], **({} if prog is None else {"prog": prog}))
    except SystemExit as e:
        code = e.code
    captured = capsys.readouterr()
    return subprocess.CompletedProcess(args, code, captured.out, captured.err)


@pytest.fixture(scope="module")
def dump64(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("golden64")
    dump_cases(out, dtype="float64", seed=0)
    return out


@pytest.fixture(scope="module")
def dump32(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("golden32")
    dump_cases(out, dtype="float32", seed=0)
    return out


def tamper(src: Path, dst: Path, key: str, rel: float = 1e-6) -> tuple[int, ...]:
    """Copy a case file with the largest element of `key` scaled by (1 + rel), written by numpy's own savez."""
    arrays = dict(np.load(src, allow_pickle=False))
    a = arrays[key].copy()
    i = np.unravel_index(int(np.argmax(np.abs(a))), a.shape)
    a[i] *= 1.0 + rel
    arrays[key] = a
    np.savez(dst, **arrays)
    return tuple(int(j) for j in i)


# ------------------------------------------------------------------------------------------ round trip

def test_dump_writes_one_file_per_case(dump64):
    names = sorted(p.name for p in dump64.glob("*.npz"))
    assert names == sorted(f"{c}.npz" for c in CASE_NAMES)
    assert set(CASE_NAMES) >= {"embedding", "linear", "layernorm", "gelu_tanh", "gelu_erf", "softmax", "attention",
                               "split_heads", "merge_heads", "dropout", "cross_entropy", "mlp", "self_attention",
                               "block", "gpt_train"}


@pytest.mark.parametrize("fixture", ["dump64", "dump32"])
def test_round_trip_is_exact(fixture, request):
    report = check_path(request.getfixturevalue(fixture))
    assert report.ok and report.exit_code == 0, "\n".join(report.lines())
    assert len(report.files) == len(CASE_NAMES)
    assert all(r.max_abs == 0.0 and r.max_rel == 0.0 for r in report.results)  # same code, same inputs
    keys = {(r.file, r.key) for r in report.results}
    assert ("gpt_train.npz", "train.losses") in keys and ("block.npz", "grad.p.mlp.c_fc.weight") in keys
    assert ("dropout.npz", "keep") in keys and ("cross_entropy.npz", "grad.logits") in keys


def test_dump_returns_paths_and_is_deterministic(dump64, tmp_path):
    paths = dump_cases(tmp_path / "again", seed=0)
    assert [p.name for p in paths] == [f"{c}.npz" for c in CASE_NAMES]
    for p in paths:
        assert p.read_bytes() == (dump64 / p.name).read_bytes(), p.name
    other, _ = load_case(dump_cases(tmp_path / "seed1", seed=1)[1])
    assert not np.array_equal(other["in.x"], load_case(dump64 / "linear.npz")[0]["in.x"])


def test_cli_dump_then_check(tmp_path):
    out = tmp_path / "g"
    dumped = run_cli("dump", "--out", out, "--seed", "3", "--batch", "1", "--seq", "4", "--channels", "6",
                     "--heads", "3", "--vocab", "9", "--layers", "1")
    assert dumped.returncode == 0, dumped.stderr
    assert len(list(out.glob("*.npz"))) == len(CASE_NAMES)
    checked = run_cli("check", out)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    lines = checked.stdout.strip().splitlines()
    assert lines[-1].startswith("OK: ") and f"in {len(CASE_NAMES)} files" in lines[-1]
    assert any("layernorm.npz" in ln and "grad.w" in ln and ln.endswith("ok") for ln in lines)
    assert load_case(out / "linear.npz")[1]["sizes"] == {"B": 1, "T": 4, "C": 6, "H": 3, "D": 2, "V": 9, "L": 1}


# ------------------------------------------------------------------------------------------ tampering

@pytest.mark.parametrize("file,key", [
    ("linear.npz", "grad.w"),
    ("layernorm.npz", "grad.b"),
    ("cross_entropy.npz", "grad.logits"),
    ("block.npz", "grad.p.attn.c_attn.weight"),
    ("gpt_train.npz", "grad.h.1.mlp.c_fc.weight"),
    ("gpt_train.npz", "final.wte.weight"),
    ("gpt_train.npz", "train.losses"),
    ("attention.npz", "out"),
    ("mla.npz", "grad.p.self_attn.kv_b_proj.weight"),
    ("mla_absorbed.npz", "latent"),
])
def test_tampered_file_fails_naming_the_tensor(dump64, tmp_path, capsys, file, key):
    bad = tmp_path / file
    tamper(dump64 / file, bad, key)
    report = check_path(bad)
    assert report.exit_code == 1
    assert [(r.file, r.key) for r in report.failures] == [(file, key)]
    assert f"{file}:{key}" in report.lines()[-1]

    res = run_cli("check", bad) if key == "grad.w" else cli(capsys, "check", bad)
    assert res.returncode == 1
    fail_lines = [ln for ln in res.stdout.splitlines() if "FAIL" in ln]
    assert len(fail_lines) == 2 and key in fail_lines[0] and file in fail_lines[0]  # its line, then the summary
    assert res.stdout.strip().splitlines()[-1].startswith("FAILED: 1 of ")


def test_tolerance_flags_override(dump64, tmp_path, capsys):
    bad = tmp_path / "linear.npz"
    tamper(dump64 / "linear.npz", bad, "grad.w", rel=1e-6)
    assert cli(capsys, "check", bad).returncode == 1
    assert cli(capsys, "check", bad, "--rtol", "1e-5").returncode == 0
    assert check_path(bad, rtol=1e-5).ok
    assert not check_path(dump64 / "linear.npz", rtol=0.0, atol=0.0).failures  # exact: still passes


def test_missing_and_extra_keys_fail(dump64, tmp_path):
    arrays = dict(np.load(dump64 / "linear.npz"))
    del arrays["grad.b"]
    arrays["grad.extra"] = np.zeros(3)
    np.savez(tmp_path / "linear.npz", **arrays)
    report = check_path(tmp_path / "linear.npz")
    assert report.exit_code == 1
    notes = {r.key: r.note for r in report.failures}
    assert "missing" in notes["grad.b"] and "not in npgpt's layout" in notes["grad.extra"]


# ------------------------------------------------------------------------------------------ --against

def test_against_identical_dumps(dump64, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(dump64, copy)
    res = cli(capsys, "check", copy, "--against", dump64)
    assert res.returncode == 0, res.stdout
    report = check_path(copy, against=dump64)
    assert report.ok and all(r.max_abs == 0.0 for r in report.results)
    # every key of every file is compared, inputs included
    assert ("linear.npz", "in.x") in {(r.file, r.key) for r in report.results}


def test_against_tampered_dump(dump64, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(dump64, copy)
    tamper(dump64 / "mlp.npz", copy / "mlp.npz", "grad.w_proj")
    res = run_cli("check", copy, "--against", dump64)
    assert res.returncode == 1
    assert "mlp.npz:grad.w_proj" in res.stdout.strip().splitlines()[-1]
    assert cli(capsys, "check", copy / "mlp.npz", "--against", dump64 / "mlp.npz").returncode == 1
    assert cli(capsys, "check", copy / "linear.npz", "--against", dump64 / "linear.npz").returncode == 0


def test_against_a_dump_missing_a_key(dump64, tmp_path):
    arrays = dict(np.load(dump64 / "softmax.npz"))
    del arrays["grad.x"]
    np.savez(tmp_path / "softmax.npz", **arrays)
    report = check_path(tmp_path / "softmax.npz", against=dump64 / "softmax.npz")
    assert [(r.key, "missing" in r.note) for r in report.failures] == [("grad.x", True)]


# ------------------------------------------------------------------------------------------ float32 vs float64

def test_float32_dump_agrees_with_float64_dump(dump32, dump64):
    for name in CASE_NAMES:
        a32, m32 = load_case(dump32 / f"{name}.npz")
        a64, m64 = load_case(dump64 / f"{name}.npz")
        assert m32["dtype"] == "float32" and m64["dtype"] == "float64"
        assert set(a32) == set(a64), name
        for key, x in a32.items():  # same inputs up to rounding
            if key.startswith(("in.", "param.")) or key in ("dout", "idx", "targets"):
                expected = a64[key].astype(np.float32) if x.dtype.kind == "f" else a64[key]
                assert x.dtype == expected.dtype and np.array_equal(x, expected), (name, key)
        if name == "dropout":
            continue  # npgpt draws the mask in the input's dtype: different masks (checked below)
        report = check_path(dump32 / f"{name}.npz", against=dump64 / f"{name}.npz")
        assert report.ok, "\n".join(report.lines())
        assert all(r.rtol in (1e-4, 1e-3) for r in report.results)  # float32 tolerances were chosen


def test_float32_dropout_agrees_where_the_masks_agree(dump32, dump64):
    a32, meta = load_case(dump32 / "dropout.npz")
    a64, _ = load_case(dump64 / "dropout.npz")
    same = a32["keep"] == a64["keep"]
    assert same.any()
    for key in ("out", "grad.x"):
        assert compare_arrays(a32[key][same], a64[key][same], 1e-6, 1e-7)[2], key
    p = meta["args"]["p"]
    assert np.array_equal(a32["out"], a32["in.x"] * a32["keep"].astype(np.float32) * np.float32(1.0 / (1.0 - p)))


# ------------------------------------------------------------------------------------------ unreadable files

def _assert_exit_2(cli: subprocess.CompletedProcess, fragment: str) -> None:
    assert cli.returncode == 2
    assert cli.stdout == ""
    lines = cli.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], cli.stderr


def test_unreadable_files_exit_2(dump64, tmp_path, capsys):
    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"this is not a zip archive\n" * 10)
    _assert_exit_2(run_cli("check", garbage), "garbage.npz")  # the real command line once
    _assert_exit_2(cli(capsys, "check", garbage), "garbage.npz")

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes((dump64 / "linear.npz").read_bytes()[:300])
    _assert_exit_2(cli(capsys, "check", truncated), "truncated.npz")

    _assert_exit_2(cli(capsys, "check", tmp_path / "does_not_exist.npz"), "does_not_exist.npz")

    arrays = dict(np.load(dump64 / "linear.npz"))
    del arrays["meta"]
    np.savez(tmp_path / "nometa.npz", **arrays)
    _assert_exit_2(cli(capsys, "check", tmp_path / "nometa.npz"), "meta")

    arrays = dict(np.load(dump64 / "linear.npz"))
    arrays["in.w"] = arrays["in.w"][:, :5]
    np.savez(tmp_path / "badshape.npz", **arrays)
    _assert_exit_2(cli(capsys, "check", tmp_path / "badshape.npz"), "badshape.npz")

    np.save(tmp_path / "plain.npy", np.zeros(3))
    _assert_exit_2(cli(capsys, "check", tmp_path / "plain.npy"), "plain.npy")

    with pytest.raises(OracleError, match="garbage.npz"):
        check_path(garbage)
    assert issubclass(OracleError, ValueError)


def test_unreadable_file_in_a_directory_exit_2(dump64, tmp_path, capsys):
    d = tmp_path / "d"
    shutil.copytree(dump64, d)
    (d / "zz_broken.npz").write_bytes(b"PK\x03\x04 broken")
    _assert_exit_2(cli(capsys, "check", d), "zz_broken.npz")
    _assert_exit_2(cli(capsys, "check", dump64, "--against", tmp_path / "empty_or_missing"), "")


def test_dump_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="^channels:"):
        dump_cases(tmp_path, channels=6, heads=4)
    with pytest.raises(ValueError, match="^dtype:"):
        dump_cases(tmp_path, dtype="float16")
    with pytest.raises(ValueError, match="^seed:"):
        dump_cases(tmp_path, seed=-1)
    with pytest.raises(ValueError, match="shape_options"):
        dump_cases(tmp_path, width=3)
    with pytest.raises(ValueError, match="^rtol:"):
        check_path(tmp_path, rtol=-1.0)
    assert oracle_main(["dump", "--out", str(tmp_path / "x"), "--channels", "7", "--heads", "2"]) == 2


# ------------------------------------------------------------------------------------------ command-line errors

def one_line_error(res: subprocess.CompletedProcess) -> str:
    """The single stderr line of a run that exited 2 with nothing on stdout."""
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert res.stdout == "" and res.stderr.endswith("\n") and res.stderr.count("\n") == 1, res.stderr
    assert "Traceback" not in res.stderr and "[Errno" not in res.stderr and "usage:" not in res.stderr
    return res.stderr[:-1]


def test_dump_out_naming_a_file_exit_2(tmp_path, capsys):
    """--out an existing file, or a path under one: the path and what is wrong, not `[Errno 17] ...`."""
    afile = tmp_path / "afile"
    afile.write_text("not a directory\n")
    assert one_line_error(cli(capsys, "dump", "--out", afile)) == \
        f"error: {afile}: exists and is not a directory; --out must be a directory, not a file"
    assert one_line_error(cli(capsys, "dump", "--out", afile / "sub")) == \
        f"error: {afile / 'sub'}: a part of the path is not a directory"
    assert afile.read_text() == "not a directory\n"
    res = run_cli("dump", "--out", "afile", cwd=tmp_path)  # the real command line once, a relative path
    assert one_line_error(res) == "error: afile: exists and is not a directory; --out must be a directory, not a file"


def test_dump_never_overwrites_a_file_that_is_not_a_golden_file(tmp_path, capsys):
    """Issue 42, item 11: `dump --out DIR` replaced an unrelated DIR/block.npz without a word.  A file of a
    case's name that is not a golden file is refused, naming it, before anything is written; a previous
    dump is replaced as before."""
    out = tmp_path / "mine"
    out.mkdir()
    np.savez(out / "block.npz", weights=np.arange(3.0))
    (out / "notes.txt").write_text("keep\n")
    before = (out / "block.npz").read_bytes()
    res = run_cli("dump", "--out", "mine", cwd=tmp_path)
    assert one_line_error(res) == ("error: mine/block.npz: exists and is not an npgpt golden file; nothing was "
                                   "written: choose another --out directory, or move the file away")
    assert (out / "block.npz").read_bytes() == before and sorted(p.name for p in out.iterdir()) == \
        ["block.npz", "notes.txt"]
    (out / "block.npz").unlink()
    (out / "gpt_train.npz").mkdir()  # a directory of a case's name
    assert one_line_error(cli(capsys, "dump", "--out", out)) == (
        f"error: {out / 'gpt_train.npz'}: exists and is not an npgpt golden file; nothing was written: choose "
        f"another --out directory, or move the file away")
    (out / "gpt_train.npz").rmdir()
    assert cli(capsys, "dump", "--out", out).returncode == 0  # unrelated files beside the cases are left alone
    assert cli(capsys, "dump", "--out", out, "--seed", "1").returncode == 0  # a previous dump is replaced
    assert (out / "notes.txt").read_text() == "keep\n" and load_case(out / "block.npz")[1]["seed"] == 1


def test_dump_refuses_a_vocabulary_of_one(tmp_path, capsys):
    """Issue 42: with --vocab 1 every softmax over the vocabulary is 1, so the cross-entropy cases would have
    loss 0 and zero gradients, which docs/oracle.md promises never happen."""
    res = cli(capsys, "dump", "--out", tmp_path / "v1", "--vocab", "1")
    assert one_line_error(res) == ("error: vocab: expected at least 2, got 1 (with one token every cross-entropy "
                                   "is 0 and its gradients vanish: the cases would be degenerate)")
    assert not (tmp_path / "v1").exists()
    with pytest.raises(ValueError, match="vocab: expected at least 2"):
        dump_cases(tmp_path / "v1", vocab=1)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write anywhere")
def test_dump_into_a_read_only_directory_exit_2(tmp_path, capsys):
    rodir = tmp_path / "rodir"
    rodir.mkdir()
    rodir.chmod(0o555)
    try:
        assert one_line_error(cli(capsys, "dump", "--out", rodir / "g")) == f"error: {rodir / 'g'}: permission denied"
    finally:
        rodir.chmod(0o755)


def test_os_errors_in_plain_words(tmp_path, capsys, monkeypatch):
    """Any OSError of dump or check goes through npgpt.training.outdir.describe_os_error (also as root, where a
    read-only directory cannot be made to fail)."""
    import errno

    import npgpt.oracle.__main__ as oracle_cli

    def refuse(path, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(oracle_cli, "dump_cases", refuse)
    monkeypatch.setattr(oracle_cli, "check_path", refuse)
    assert one_line_error(cli(capsys, "dump", "--out", "rodir/g")) == "error: rodir/g: permission denied"
    assert one_line_error(cli(capsys, "check", "golden")) == "error: golden: permission denied"

    def full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")  # no filename: --out names it

    monkeypatch.setattr(oracle_cli, "dump_cases", full)
    assert one_line_error(cli(capsys, "dump", "--out", tmp_path / "g")) == \
        f"error: {tmp_path / 'g'}: no space left on the device (disk full)"


def test_argument_errors_are_one_line(capsys):
    """argparse's usage block is replaced by one line naming the argument and pointing at --help."""
    assert one_line_error(run_cli("check")) == \
        "error: the following arguments are required: path (see python -m npgpt.oracle check --help)"
    assert one_line_error(cli(capsys, "check", "--atol", "abc", "x")) == \
        "error: argument --atol: invalid float value: 'abc' (see python -m npgpt.oracle check --help)"
    assert one_line_error(cli(capsys, "dump", "--out", "g", "--seed", "x")) == \
        "error: argument --seed: invalid int value: 'x' (see python -m npgpt.oracle dump --help)"
    assert one_line_error(cli(capsys, "dump")) == \
        "error: the following arguments are required: --out (see python -m npgpt.oracle dump --help)"
    assert one_line_error(cli(capsys)) == \
        "error: the following arguments are required: command (see python -m npgpt.oracle --help)"
    # the list of choices is quoted differently by Python versions
    assert re.fullmatch(r"error: argument command: invalid choice: 'bogus' \(choose from '?dump'?, '?check'?\) "
                        r"\(see python -m npgpt\.oracle --help\)", one_line_error(cli(capsys, "bogus")))


def test_prog_names_the_command(capsys):
    """main(prog=...) names the command in usage and error lines (`npgpt oracle` passes "npgpt oracle")."""
    assert one_line_error(cli(capsys, "check", prog="npgpt oracle")) == \
        "error: the following arguments are required: path (see npgpt oracle check --help)"
    assert one_line_error(cli(capsys, "bogus", "x", prog="npgpt oracle")).endswith("(see npgpt oracle --help)")
    top = cli(capsys, "--help", prog="npgpt oracle")
    assert top.returncode == 0 and top.stderr == ""
    assert top.stdout.startswith("usage: npgpt oracle [-h] {dump,check} ...\n")
    assert "python -m" not in top.stdout and "dump" in top.stdout and "check" in top.stdout
    sub = cli(capsys, "check", "--help", prog="npgpt oracle")
    assert sub.returncode == 0 and sub.stdout.startswith("usage: npgpt oracle check ")
    assert all(flag in sub.stdout for flag in ("--against", "--rtol", "--atol", "path"))
    default = run_cli("--help")
    assert default.returncode == 0 and default.stdout.startswith("usage: python -m npgpt.oracle [-h]")


# ------------------------------------------------------------------------------------------ contents

@pytest.mark.parametrize("fixture,float_dtype", [("dump64", np.float64), ("dump32", np.float32)])
def test_only_numeric_arrays_and_a_json_meta(fixture, float_dtype, request):
    for path in sorted(request.getfixturevalue(fixture).glob("*.npz")):
        with np.load(path, allow_pickle=False) as z:
            for key in z.files:
                a = z[key]
                assert a.flags.c_contiguous and a.dtype.byteorder in ("<", "|", "="), (path.name, key)
                if key == "meta":
                    assert a.dtype.kind == "U" and a.shape == ()
                else:
                    assert a.dtype in (float_dtype, np.int64, np.uint8), (path.name, key, a.dtype)


def test_meta_fields(dump64):
    for name in CASE_NAMES:
        arrays, meta = load_case(dump64 / f"{name}.npz")
        assert meta["format"] == "npgpt-oracle" and meta["format_version"] == 1 and meta["case"] == name
        assert {"forward", "backward", "inputs", "grads", "args", "dtype", "seed", "sizes", "npgpt_version",
                "numpy_version", "tolerance"} <= set(meta)
        trains = "optimizer" in meta  # a case that takes optimizer steps stores final.<param> after them
        assert trains == any(k.startswith("final.") for k in arrays), name
        assert meta["tolerance"] == {"rtol": 1e-10, "atol": 1e-12, **({"by_prefix": {
            "final.": {"rtol": 1e-8, "atol": 1e-10}}} if trains else {})}
        for n in meta["inputs"]:
            assert f"in.{n}" in arrays
        if not meta["backward"]:  # a forward-only case (mla_absorbed): no upstream gradient, no gradients
            assert meta["grads"] == [] and "dout" not in arrays and not any(k.startswith("grad.") for k in arrays)
            continue
        for n in meta["grads"]:
            assert arrays[f"grad.{n}"].shape == arrays[f"in.{n}"].shape
        # every float input has exactly one gradient, but DeepSeek's correction bias: a buffer that only steers
        # the router's choice (piecewise constant, so no gradient)
        float_inputs = [k[3:] for k, a in arrays.items() if k.startswith("in.") and a.dtype.kind == "f"
                        and not k.endswith("e_score_correction_bias")]
        assert sorted(float_inputs) == sorted(meta["grads"])
    assert [n for n in CASE_NAMES if not load_case(dump64 / f"{n}.npz")[1]["backward"]] == [
        "mla_absorbed", "router_softmax_topk_ties", "router_topk_softmax_ties", "router_deepseek_ties"]
    trained = [n for n in CASE_NAMES if "optimizer" in load_case(dump64 / f"{n}.npz")[1]]
    assert trained == [n for n in CASE_NAMES if n.endswith("_train")] and trained[:2] == ["gpt_train", "llama_train"]
    for name in trained:
        _, meta = load_case(dump64 / f"{name}.npz")
        hp = meta["args"]["adamw"]
        config = meta["args"]["config"]  # eps 1e-6 where a k bias meets partial rotary (docs/oracle.md)
        eps = 1e-6 if config.get("attention_bias") and config.get("partial_rotary_factor", 1.0) < 1 else 1e-8
        assert {k: hp[k] for k in ("lr", "betas", "eps", "weight_decay", "steps", "grad_clip", "lr_schedule")} == \
            {"lr": 1e-3, "betas": [0.9, 0.95], "eps": eps, "weight_decay": 0.1, "steps": 10, "grad_clip": None,
             "lr_schedule": "constant"}
        assert meta["optimizer"] == "npgpt.AdamW"


def test_gpt_train_case_is_a_real_training_run(dump64):
    a, meta = load_case(dump64 / "gpt_train.npz")
    losses = a["train.losses"]
    assert losses.shape == (10,) and losses[0] == a["loss"]
    assert np.all(np.diff(losses) < 0)  # one batch, ten steps: the loss goes down every step
    assert math.log(meta["sizes"]["V"]) - 0.5 < float(a["loss"]) < math.log(meta["sizes"]["V"]) + 0.5
    for name in meta["args"]["param_names"]:
        assert not np.array_equal(a[f"final.{name}"], a[f"param.{name}"]), name
        assert np.any(a[f"grad.{name}"] != 0), name


def test_layer_inputs_are_not_degenerate(dump64):
    a, _ = load_case(dump64 / "layernorm.npz")
    assert not np.allclose(a["in.w"], 1.0) and not np.allclose(a["in.b"], 0.0)
    b, _ = load_case(dump64 / "block.npz")
    for name in BLOCK_PARAM_NAMES:
        if name.endswith("bias"):
            assert np.all(b[f"in.p.{name}"] != 0), name
    e, _ = load_case(dump64 / "embedding.npz")
    assert len(np.unique(e["in.idx"])) < e["in.idx"].size  # a repeated id exercises the scatter-add
    c, _ = load_case(dump64 / "cross_entropy.npz")
    assert c["dout"].shape == () and c["dout"] != 1.0


def test_mla_absorbed_file_is_the_plain_form_on_its_inputs(dump64):
    """mla_absorbed.npz's out is mla_forward's output on the same stored inputs, its latent the plain forward's
    normalised latent c beside the rotated shared key, and its absorbed matrices mla_absorb's."""
    from npgpt.layers import MLAConfig, mla_absorb, mla_forward
    from npgpt.layers.rope import rope_inv_freq, rope_tables

    a, meta = load_case(dump64 / "mla_absorbed.npz")
    args = meta["args"]
    config = MLAConfig(**args["config"])
    assert args["scale"] == config.scale != config.qk_head_dim ** -0.5  # YaRN's mscale_all_dim is exercised
    p = {k[len("in.p."):]: v for k, v in a.items() if k.startswith("in.p.")}
    T, r = a["in.x"].shape[1], config.kv_lora_rank
    cos, sin = rope_tables(np.arange(args["offset"], args["offset"] + T),
                           rope_inv_freq(config.qk_rope_head_dim, args["rope_theta"]), np.float64)
    out, cache = mla_forward(a["in.x"], p, config, cos, sin)
    assert compare_arrays(a["out"], out, 1e-12, 1e-13)[2]
    assert np.max(np.abs(a["out"] - out)) > 0  # a different computation, not a copy
    assert compare_arrays(a["latent"][..., :r], cache.c.reshape(a["latent"].shape[:2] + (r,)), 1e-13, 1e-14)[2]
    w = mla_absorb(p, config)
    assert np.array_equal(a["w_q"], w.w_q) and np.array_equal(a["w_o"], w.w_o)
    plain, _ = load_case(dump64 / "mla.npz")  # same config, its own inputs, and a backward
    assert set(k for k in plain if k.startswith("in.")) == set(k for k in a if k.startswith("in."))


@pytest.mark.parametrize("router", ["softmax_topk", "topk_softmax", "deepseek"])
def test_tie_cases_pin_the_lower_index_rule(dump64, router):
    """Each *_ties.npz row was built to tie: the stored choice is the lower-index rule's (TIE_INDICES, worked out
    by hand beside each row in moe_cases.py), and the tied experts share their weight."""
    from npgpt.oracle.moe_cases import TIE_INDICES

    a, meta = load_case(dump64 / f"router_{router}_ties.npz")
    assert meta["backward"] == "" and a["indices"].tolist() == TIE_INDICES[router]
    z = np.take_along_axis(a["in.logits"], a["indices"], axis=1)  # (E, K) the chosen experts' logits
    tied = z[:, 0] == z[:, 1]
    assert tied.sum() >= 3 and np.all(a["weights"][tied, 0] == a["weights"][tied, 1])


def test_moe_grouped_file_checks_the_clear_layer_too(dump64):
    """moe_grouped_deepseek_v3.npz holds the clear layer's results on its inputs, to round-off."""
    from npgpt.layers import MoESpec, moe_backward, moe_forward

    a, meta = load_case(dump64 / "moe_grouped_deepseek_v3.npz")
    p = {k[len("in.p."):]: v for k, v in a.items() if k.startswith("in.p.")}
    out, z, cache = moe_forward(a["in.x"], p, MoESpec(**meta["args"]["spec"]))
    dx, g = moe_backward(a["dout"], cache, a["drouter_logits"])
    for key, got in [("out", out), ("router_logits", z), ("grad.x", dx), *((f"grad.p.{k}", v) for k, v in g.items())]:
        assert compare_arrays(a[key], got, 1e-13, 1e-14)[2], key


# ------------------------------------------------------------------------------------------ docs/oracle.md

LAYOUT_SIZES = {"batch": 2, "seq": 5, "channels": 12, "heads": 3, "vocab": 7, "layers": 2}  # all distinct


def _doc_sections() -> dict[str, list[list[str]]]:
    """Heading (##, ### or ####) -> the cells of every table row whose first cell is `code` (a ## heading ends the
    ### section before it, so a family's overview table is not read as part of the previous case's layout)."""
    sections: dict[str, list[list[str]]] = {}
    for chunk in re.split(r"^#{2,4} ", DOC.read_text(), flags=re.M)[1:]:
        title, _, body = chunk.partition("\n")
        rows = [[c.strip() for c in line.strip().strip("|").split("|")]
                for line in body.splitlines() if line.startswith("| `")]
        sections[title.strip()] = rows
    return sections


def _shape(text: str, sizes: dict[str, int]) -> tuple[int, ...]:
    inner = text.strip()
    assert inner.startswith("(") and inner.endswith(")"), text
    out = []
    for tok in filter(None, (t.strip() for t in inner[1:-1].split(","))):
        if tok.isdigit():  # a fixed length, e.g. the (1, C) of Qwen2-MoE's shared-expert gate
            out.append(int(tok))
            continue
        m = re.fullmatch(r"(\d*)([A-Z])", tok)
        assert m, f"undocumented shape token {tok!r} in {text!r}"
        out.append(int(m.group(1) or 1) * sizes[m.group(2)])
    return tuple(out)


def documented_layout(L: int, sizes: dict[str, int], dtype: str) -> dict[str, dict[str, tuple]]:
    """{case: {key: (shape, dtype)}} exactly as docs/oracle.md's tables state it."""
    sections = _doc_sections()
    # a "... parameter names" table lists the names of the whole-model case whose section precedes it
    # (GPT-2's for gpt_train.npz, Hugging Face's Llama names for llama_train.npz)
    params: dict[str, dict[str, tuple[int, ...]]] = {}
    case = None
    for title, rows in sections.items():
        m = re.fullmatch(r"`(\w+)\.npz`", title)
        if m:
            case = m.group(1)
        elif title.lower().endswith("parameter names"):
            assert case is not None and case not in params, title
            params[case] = {}
            for name, shape in ((r[0].strip("`"), r[1]) for r in rows):
                for i in (range(L) if "{i}" in name else [None]):
                    params[case][name.replace("{i}", str(i))] = _shape(shape, sizes)
    dtypes = {"float": dtype, "int64": "int64", "uint8": "uint8", "unicode": "unicode"}
    layout: dict[str, dict[str, tuple]] = {}
    for title, rows in sections.items():
        m = re.fullmatch(r"`(\w+)\.npz`", title)
        if not m:
            continue
        keys: dict[str, tuple] = {}
        for key, shape, dt, *_ in rows:
            key = key.strip("`")
            if "<name>" in key:
                assert shape == "(as `<name>`)", shape
                for name, s in params[m.group(1)].items():
                    keys[key.replace("<name>", name)] = (s, dtypes[dt])
            elif "{e}" in key:  # one key per expert (the MoE cases' per-expert tensors)
                for e in range(sizes["E"]):
                    keys[key.replace("{e}", str(e))] = (_shape(shape, sizes), dtypes[dt])
            else:
                keys[key] = (_shape(shape, sizes), dtypes[dt])
        layout[m.group(1)] = keys
    assert set(params) == {n for n in CASE_NAMES if n.endswith("_train")}, set(params)
    return layout


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_written_files_match_the_documented_layout(tmp_path, dtype):
    paths = dump_cases(tmp_path, dtype=dtype, seed=5, **LAYOUT_SIZES)
    s = LAYOUT_SIZES
    sizes = {"B": s["batch"], "T": s["seq"], "C": s["channels"], "H": s["heads"], "D": s["channels"] // s["heads"],
             "V": s["vocab"], "L": s["layers"], "S": 10, "N": s["batch"] * s["seq"], "E": MOE_E, "K": MOE_K}
    layout = documented_layout(s["layers"], sizes, dtype)
    assert set(layout) == set(CASE_NAMES)
    descr = {"float64": "<f8", "float32": "<f4", "int64": "<i8", "uint8": "|u1"}
    for path in paths:
        documented = layout[path.stem]
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            assert [i.filename for i in infos] == [f"{k}.npy" for k in [i.filename[:-4] for i in infos]]
            written = {i.filename[:-4] for i in infos}
            assert written == set(documented), (path.name, written ^ set(documented))
            for info in infos:
                key = info.filename[:-4]
                shape, dt = documented[key]
                assert info.compress_type == zipfile.ZIP_STORED
                data = zf.read(info)
                # parse the member exactly as docs/oracle.md tells a C or Rust reader to
                assert data[:6] == b"\x93NUMPY" and data[6:8] == b"\x01\x00", (path.name, key)
                hlen = int.from_bytes(data[8:10], "little")
                assert (10 + hlen) % 64 == 0 and data[10 + hlen - 1:10 + hlen] == b"\n"
                header = ast.literal_eval(data[10:10 + hlen].decode("ascii"))
                assert header["fortran_order"] is False and header["shape"] == shape, (path.name, key, header)
                payload = data[10 + hlen:]
                if dt == "unicode":
                    n = int(header["descr"][2:])
                    assert header["descr"].startswith("<U") and len(payload) == 4 * n
                    text = payload.decode("utf-32-le").rstrip("\x00")
                    assert payload[::4].decode("ascii").rstrip("\x00") == text  # every fourth byte: ASCII JSON
                    assert json.loads(text)["case"] == path.stem
                else:
                    assert header["descr"] == descr[dt], (path.name, key, header["descr"])
                    assert len(payload) == math.prod(shape) * int(header["descr"][2:]), (path.name, key)


def test_documented_cache_fields_match_the_code():
    rows = {r[0].strip("`"): re.findall(r"`(\w+)`", r[1]) for r in _doc_sections()["What each cache holds"]}
    caches = {name: getattr(layers, name) for name in layers.__all__ if name.endswith("Cache")}
    caches["GPTCache"], caches["BlockCache"] = GPTCache, BlockCache
    assert set(rows) == set(caches)
    for name, cls in caches.items():
        assert rows[name] == list(cls._fields), name


def test_documented_tolerances_match_the_code():
    from npgpt.oracle import FINAL_TOLERANCES, TOLERANCES

    def fmt(x: float) -> str:  # 1e-04 -> 1e-4, as the doc writes it
        return f"{x:.0e}".replace("e-0", "e-")

    text = DOC.read_text()
    for dtype in ("float64", "float32"):
        (r, a), (fr, fa) = TOLERANCES[dtype], FINAL_TOLERANCES[dtype]
        assert f"| {dtype} | {fmt(r)} | {fmt(a)} | {fmt(fr)}, {fmt(fa)} |" in text, dtype


# ------------------------------------------------------------------------------------------ the example

def test_the_example_test_file_passes():
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-o", "addopts=", "-q", "-p", "no:cacheprovider",
                           str(ROOT / "examples" / "oracle_test_example.py")],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert " passed" in proc.stdout and "failed" not in proc.stdout


# ------------------------------------------------------------------------------------------ tolerances are fair

@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_a_differently_ordered_training_run_passes_the_default_tolerances(tmp_path, dtype):
    """The functional model with a textbook AdamW written in another order (m_hat and v_hat formed explicitly)
    rounds differently from the flat-buffer path that wrote the dump; a correct implementation like that must
    pass `check --against` at the defaults."""
    from npgpt import GPTConfig, gpt_backward, gpt_forward

    dump_cases(tmp_path / "golden", dtype=dtype, seed=2, batch=3, seq=8, channels=16, heads=4, vocab=20)
    a, meta = load_case(tmp_path / "golden" / "gpt_train.npz")
    config, hp, names = GPTConfig.from_dict(meta["args"]["config"]), meta["args"]["adamw"], meta["args"]["param_names"]
    params = {k: a[f"param.{k}"].copy() for k in names}  # separate arrays: AdamW's per-tensor path
    (b1, b2), lr, eps, wd = hp["betas"], hp["lr"], hp["eps"], hp["weight_decay"]
    m = {k: np.zeros_like(p) for k, p in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    mine = dict(a)
    losses = []
    for step in range(hp["steps"]):
        logits, loss, cache = gpt_forward(params, config, a["idx"], a["targets"])
        grads = gpt_backward(cache)
        if step == 0:
            mine.update(logits=logits, loss=loss, **{f"grad.{k}": g for k, g in grads.items()})
        losses.append(loss)
        t = step + 1
        for k, p in params.items():
            m[k] = b1 * m[k] + (1 - b1) * grads[k]
            v[k] = b2 * v[k] + (1 - b2) * grads[k] ** 2
            m_hat, v_hat = m[k] / (1 - b1 ** t), v[k] / (1 - b2 ** t)
            decayed = p * (1 - lr * wd) if p.ndim == 2 else p
            params[k] = (decayed - lr * m_hat / (np.sqrt(v_hat) + eps)).astype(p.dtype)
    mine["train.losses"] = np.array(losses, dtype=dtype)
    mine.update({f"final.{k}": p for k, p in params.items()})
    np.savez(tmp_path / "mine.npz", meta=np.array(json.dumps(meta)), **mine)
    report = check_path(tmp_path / "mine.npz", against=tmp_path / "golden" / "gpt_train.npz")
    assert report.ok, "\n".join(report.lines())
    assert any(r.max_abs > 0 for r in report.results)  # it really did round differently


# ------------------------------------------------------------------------------------------ not a golden case

def test_check_on_a_training_checkpoint_exit_2(tmp_path, capsys):
    """A checkpoint is an .npz too: the loader names what it is instead of calling `metadata` a bad key."""
    tiny = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "8", "--batch-size", "4",
            "--eval-iters", "1", "--sample-len", "0", "--warmup-iters", "2", "--max-iters", "2",
            "--eval-interval", "2"]  # as tests/test_cli.py's tiny runs
    (tmp_path / "small.txt").write_text("the quick brown fox jumps over the lazy dog. " * 40, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    train = subprocess.run([sys.executable, "-m", "npgpt", "train", "small.txt", *tiny], capture_output=True,
                           text=True, env=env, cwd=tmp_path, timeout=120)
    assert train.returncode == 0, train.stderr
    expected = ("error: out/ckpt.npz: this is a training checkpoint (written by npgpt train), not a golden case; "
                "check the files written by `npgpt oracle dump`")
    res = run_cli("check", "out/ckpt.npz", cwd=tmp_path)
    assert (res.returncode, res.stdout, res.stderr.splitlines()) == (2, "", [expected]), res.stderr
    with pytest.raises(OracleError, match="training checkpoint"):
        load_case(tmp_path / "out" / "ckpt.npz")
    _assert_exit_2(cli(capsys, "check", tmp_path / "out"), ".npz: this is a training checkpoint")  # a directory


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, capsys, monkeypatch):
    """Ctrl-C during a dump: `error: interrupted: stopped at once`, status 130, no traceback."""
    import npgpt.oracle.__main__ as oracle_cli

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(oracle_cli, "dump_cases", interrupted)
    res = cli(capsys, "dump", "--out", tmp_path / "g")
    assert (res.returncode, res.stdout, res.stderr) == (130, "", "error: interrupted: stopped at once\n")


def test_a_failed_write_leaves_no_file_behind(tmp_path):
    """write_npz is atomic: an array it cannot store (an object array) leaves neither the file nor a
    temporary one, and an existing file of that name keeps its bytes."""
    from npgpt.oracle.fileformat import write_npz
    good = {"a": np.arange(3.0)}
    bad = {"a": np.arange(3.0), "b": np.array([object()], dtype=object)}
    with pytest.raises(ValueError):
        write_npz(tmp_path / "x.npz", bad)
    assert list(tmp_path.iterdir()) == []
    write_npz(tmp_path / "x.npz", good)
    before = (tmp_path / "x.npz").read_bytes()
    with pytest.raises(ValueError):
        write_npz(tmp_path / "x.npz", bad)
    assert [p.name for p in tmp_path.iterdir()] == ["x.npz"] and (tmp_path / "x.npz").read_bytes() == before


# ------------------------------------------------------------------------------------------ dense-family cases

def test_dense_family_cases_are_self_contained(dump64):
    """Each decoder-layer and training case of the dense families carries its whole LlamaConfig in meta (a port
    needs nothing else), in its family's block style, and its variant really bends the numbers."""
    from npgpt.llama import LlamaConfig, layer_param_shapes
    from npgpt.oracle.case import Sizes
    from npgpt.oracle.decoder_cases import BLOCK_VARIANTS, TRAIN_FAMILIES, _as_family_says, block_config, train_config

    for family in TRAIN_FAMILIES:
        a, meta = load_case(dump64 / f"{family}_train.npz")
        config = LlamaConfig.from_dict(meta["args"]["config"])
        assert config == train_config(family, Sizes(**{k: meta["sizes"][k] for k in "BTCHVL"}))
        assert meta["args"]["family"] == family and _as_family_says(family, config) == config, family
        assert a["train.losses"][-1] < a["train.losses"][0], family
    for variant in BLOCK_VARIANTS:
        a, meta = load_case(dump64 / f"decoder_block_{variant}.npz")
        config = LlamaConfig.from_dict(meta["args"]["config"])
        assert config == block_config(variant, Sizes(**{k: meta["sizes"][k] for k in "BTCHVL"}))
        assert meta["args"]["param_names"] == list(layer_param_shapes(config))
        assert all(np.abs(a[k]).max() > 0 for k in a if k.startswith("grad.") and "k_proj.bias" not in k), variant
    s, _ = load_case(dump64 / "softcap.npz")
    assert np.abs(s["in.x"]).max() > 2.0 and np.abs(s["out"]).max() < 2.0  # the cap bends the large inputs
