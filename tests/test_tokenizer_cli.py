"""The tokenizer, fine-tuning and eval paths of the npgpt command, as a user runs them (subprocesses):
--tokenizer bpe:VOCAB and PATH, --init-from a GPT-2 directory (its OUT_DIR/hf loads in transformers),
`npgpt sample` and `npgpt eval` on the results, and every bad input as one line, exit 2, nothing written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tokenizer_fixtures import TIKTOKEN_FILE, gpt2_tok

from npgpt import GPT, GPTConfig
from npgpt.training.checkpoint import load_checkpoint
from npgpt.training.data import bundled_corpus_path
from npgpt.tokenizers import tokenizer_from_dict
from npgpt.families import load_dir as load_gpt2_dir, save_dir as save_gpt2_dir
from npgpt.tokenizers import BPETokenizer

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "OPENBLAS_NUM_THREADS": "1",
       "OMP_NUM_THREADS": "1"}
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16", "--batch-size", "4",
        "--eval-iters", "2", "--warmup-iters", "2", "--eval-interval", "10", "--sample-len", "20"]


def npgpt(*args, cwd, timeout=600):
    return subprocess.run([sys.executable, "-m", "npgpt", *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=timeout)


def ok(proc):
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def one_line_error(proc):
    assert "Traceback" not in proc.stderr, proc.stderr
    err = proc.stderr.strip()
    assert err.startswith("error: ") and "\n" not in err, proc.stderr
    assert proc.returncode == 2, (proc.returncode, err)
    return err


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("tokcli")
    (d / "small.txt").write_text(bundled_corpus_path().read_text(encoding="utf-8")[:30_000], encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def tiny_gpt2(work):
    """A GPT-2 directory with the real tokenizer and tiny shapes, made here (not committed: ~1.6 MB)."""
    d = work / "tiny_gpt2"
    save_gpt2_dir(GPT(GPTConfig(vocab_size=50257, block_size=32, n_layer=1, n_head=2, n_embd=8), seed=0),
                  gpt2_tok(), d)
    return d


def test_bpe_tokenizer_train_sample_eval(work):
    out = ok(npgpt("train", "small.txt", *TINY, "--tokenizer", "bpe:300", "--max-iters", "20", "--out-dir", "bpe",
                   cwd=work))
    assert "vocabulary 300" in out and "transformers directory: bpe/hf" in out
    ck = load_checkpoint(work / "bpe" / "ckpt.npz")
    tok = tokenizer_from_dict(ck.meta["tokenizer"])  # stored as JSON, rebuilt without pickle
    assert isinstance(tok, BPETokenizer) and tok.vocab_size == 300 and ck.config.vocab_size == 300
    assert ck.meta["train_config"]["tokenizer"] == "bpe:300"
    text = (work / "small.txt").read_text(encoding="utf-8")
    assert tok.decode(tok.encode(text)) == text
    sample = ok(npgpt("sample", "--ckpt", "bpe/ckpt.npz", "--prompt", "ROMEO:", "--num-samples", "1",
                      "--max-new-tokens", "10", cwd=work))
    assert "ROMEO:" in sample
    ev = npgpt("eval", "bpe/ckpt.npz", "small.txt", "--stride", "8", cwd=work)
    lines = ok(ev).splitlines()
    assert "stride 8" in lines[0] and lines[1].startswith("mean loss") and lines[3].startswith("bits per byte")
    assert "eval: " in ev.stderr and "(100%)" in ev.stderr
    # the same numbers from the transformers directory written at the end (the same final parameters)
    ev_hf = ok(npgpt("eval", "bpe/hf", "small.txt", "--stride", "8", cwd=work)).splitlines()
    assert ev_hf[1:] == lines[1:]
    # resuming keeps the tokenizer (a resumed run must agree with the stored --tokenizer)
    ok(npgpt("train", "small.txt", "--resume", "--max-iters", "25", "--out-dir", "bpe", cwd=work))
    assert tokenizer_from_dict(load_checkpoint(work / "bpe" / "ckpt.npz").meta["tokenizer"]) == tok


def test_tokenizer_from_a_path(work):
    out = ok(npgpt("train", "small.txt", "--n-layer", "1", "--n-head", "1", "--n-embd", "8", "--block-size", "8",
                   "--batch-size", "2", "--eval-iters", "1", "--eval-interval", "2", "--max-iters", "2",
                   "--sample-len", "5", "--tokenizer", TIKTOKEN_FILE, "--out-dir", "gpt2tok", cwd=work))
    assert "vocabulary 50257" in out
    tok = tokenizer_from_dict(load_checkpoint(work / "gpt2tok" / "ckpt.npz").meta["tokenizer"])
    assert tok == gpt2_tok()


def test_init_from_fine_tunes_and_writes_a_transformers_directory(work, tiny_gpt2):
    out = ok(npgpt("train", "small.txt", "--init-from", tiny_gpt2, "--block-size", "32", "--batch-size", "4",
                   "--max-iters", "30", "--lr", "3e-2", "--warmup-iters", "3", "--eval-iters", "4",
                   "--eval-interval", "15", "--sample-len", "10", "--out-dir", "ft", cwd=work))
    evals = [line for line in out.splitlines() if line.startswith("eval at iter")]
    first, last = (float(e.split("val loss ")[1].split()[0]) for e in (evals[0], evals[-1]))
    assert first > 10.0 and last < first - 1.0  # from ~ln(50257) = 10.8 down
    model, tok = load_gpt2_dir(work / "ft" / "hf")
    assert tok == gpt2_tok() and model.config.n_embd == 8
    ck = load_checkpoint(work / "ft" / "ckpt.npz")
    for k, v in ck.params.items():  # the directory holds the run's final parameters
        assert np.array_equal(model.params[k], v), k
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(work / "ft" / "hf")).eval()
    ids = tok.encode("First Citizen:\nBefore we proceed")
    assert transformers.AutoTokenizer.from_pretrained(str(work / "ft" / "hf")).encode(
        "First Citizen:\nBefore we proceed") == ids.tolist()
    with torch.no_grad():
        theirs = hf(torch.tensor(ids[None].astype(np.int64))).logits.numpy()
    np.testing.assert_allclose(model.forward(ids[None].astype(np.int64))[0], theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("args, msg", [
    (["--tokenizer", "bpe:abc"], "expected bpe:VOCAB with VOCAB an integer >= 256"),
    (["--tokenizer", "bpe:100"], "vocab_size: expected an integer >= 256"),
    (["--tokenizer", "no/such/tokenizer"], "no/such/tokenizer: no such file or directory"),
    (["--tokenizer", ""], "tokenizer: expected char, bpe:VOCAB or a path"),
])
def test_bad_tokenizer_flags(work, args, msg):
    err = one_line_error(npgpt("train", "small.txt", *TINY, "--max-iters", "2", *args, "--out-dir", "bad",
                               cwd=work))
    assert msg in err
    assert not (work / "bad" / "ckpt.npz").exists()


def test_bad_init_from_directories(work, tiny_gpt2, tmp_path):
    no_tok = tmp_path / "no_tok"
    no_tok.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(tiny_gpt2 / f, no_tok / f)
    mamba = tmp_path / "mamba"
    shutil.copytree(tiny_gpt2, mamba)
    cfg = json.loads((mamba / "config.json").read_text())
    (mamba / "config.json").write_text(json.dumps({**cfg, "model_type": "mamba"}))
    cases = [
        ([no_tok], "no tokenizer files (expected tokenizer.json, or vocab.json + merges.txt"),
        ([mamba], "model_type 'mamba' is not supported (supported: "),
        ([tmp_path / "missing"], "missing: no such file or directory (expected a Hugging Face model directory)"),
        ([work / "small.txt"], "small.txt: not a directory"),
        ([tiny_gpt2, "--n-layer", "5"], "and --init-from takes the directory's shapes; leave --n-layer out (got 5)"),
        ([tiny_gpt2, "--tokenizer", "bpe:300"], "--init-from uses the directory's own tokenizer"),
        ([tiny_gpt2, "--block-size", "64"], "block_size: 64 is larger than"),
        ([tiny_gpt2, "--arch", "llama"], "arch: --init-from takes the directory's own architecture; leave --arch out"),
    ]
    (work / "keep").mkdir(exist_ok=True)
    (work / "keep" / "ckpt.npz").write_bytes(b"previous run")
    for extra, msg in cases:
        err = one_line_error(npgpt("train", "small.txt", "--max-iters", "2", "--init-from", *extra,
                                   "--out-dir", "keep", "--overwrite", cwd=work))  # kept until the first save
        assert msg in err, err
    assert (work / "keep" / "ckpt.npz").read_bytes() == b"previous run"  # nothing overwritten


def test_init_from_weights_holding_nan(work, tmp_path):
    """Issue 42, item 9: --init-from a directory whose weights hold NaN ended with exit 1 and "the train loss
    is nan ... try a lower lr"; now the file is damaged, naming the tensor, exit 2, nothing written."""
    model = GPT(GPTConfig(vocab_size=50257, block_size=32, n_layer=1, n_head=2, n_embd=8), seed=0)
    model.params["h.0.attn.c_proj.weight"][1, 2] = np.nan
    save_gpt2_dir(model, gpt2_tok(), tmp_path / "nan_gpt2")
    err = one_line_error(npgpt("train", "small.txt", "--max-iters", "2", "--init-from", tmp_path / "nan_gpt2",
                               "--block-size", "16", "--out-dir", tmp_path / "out", cwd=work))
    assert err == (f"error: {tmp_path / 'nan_gpt2' / 'model.safetensors'}: tensor 'h.0.attn.c_proj.weight' holds "
                   f"non-finite values (NaN or inf); the file is damaged")
    assert not (tmp_path / "out").exists()


def test_eval_bad_input(work, tiny_gpt2, tmp_path):
    (tmp_path / "t.txt").write_text("hello there " * 10)
    assert "no such file or directory" in one_line_error(npgpt("eval", tmp_path / "nope", tmp_path / "t.txt",
                                                                 cwd=work))
    assert "--stride: expected an integer in [1, block_size=32], got 99" in one_line_error(
        npgpt("eval", tiny_gpt2, tmp_path / "t.txt", "--stride", "99", cwd=work))
    assert "no such file" in one_line_error(npgpt("eval", tiny_gpt2, tmp_path / "missing.txt", cwd=work))
    err = one_line_error(npgpt("eval", tiny_gpt2, cwd=work))
    assert "TEXT_FILE" in err


def test_eval_a_llama_checkpoint(work):
    ok(npgpt("train", "small.txt", *TINY, "--arch", "llama", "--max-iters", "2", "--sample-len", "0",
             "--out-dir", "llama", cwd=work))
    lines = ok(npgpt("eval", "llama/ckpt.npz", "small.txt", "--stride", "16", cwd=work)).splitlines()
    assert lines[1].startswith("mean loss") and float(lines[1].split()[2]) > 0
