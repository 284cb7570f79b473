"""Strided sliding-window perplexity: equal to a direct computation when the text fits one window, equal to
an independent per-token loop over the documented contexts for any stride, stride-invariant for a model
without context, every token scored once, bits per byte, progress, bad input."""

from __future__ import annotations

import math

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given

from npgpt import GPT, GPTConfig
from npgpt.tokenizers import CharTokenizer
from npgpt.training.evaluate import evaluate_ids, evaluate_text, windows
from npgpt.gpt2 import gpt_forward

CFG = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8)


def model64(seed: int = 0, cfg: GPTConfig = CFG) -> GPT:
    m = GPT(cfg, seed=seed, dtype=np.float64)
    rng = np.random.default_rng(seed + 100)
    for p in m.params.values():  # far from the init, so attention and positions matter
        p[...] = rng.normal(0.0, 0.5, size=p.shape)
    return m.eval()


def ids_of(n: int, seed: int = 1, V: int = CFG.vocab_size) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, V, size=n)


def loop_reference(model: GPT, ids: np.ndarray, stride: int) -> float:
    """Sum of -log p(t_j | context) with the context the docs promise: target j is scored by the first
    window that has it and did not belong to the previous window; that window starts at k * stride."""
    T = model.config.block_size
    total, covered, k = 0.0, 0, 0
    while covered < len(ids) - 1:
        start = k * stride
        end = min(start + T, len(ids) - 1)  # last target of window k
        for j in range(covered + 1, end + 1):
            ctx = ids[start:j]  # the tokens before t_j inside window k
            logits, _, _ = gpt_forward(model.params, model.config, ctx[None, :])
            row = logits[0, -1]
            lse = math.log(sum(math.exp(v - row.max()) for v in row)) + row.max()
            total += lse - row[ids[j]]
        covered = end
        k += 1
    return total


def test_one_window_equals_the_direct_loss():
    m = model64()
    ids = ids_of(CFG.block_size + 1)  # T inputs, T targets: exactly one window
    direct = gpt_forward(m.params, CFG, ids[None, :-1], ids[None, 1:])[1]
    for stride in (1, 3, CFG.block_size):
        r = evaluate_ids(m, ids, stride)
        assert r.n_windows == 1 and r.n_tokens == CFG.block_size
        assert r.mean_loss == pytest.approx(float(direct), rel=1e-12)
        assert r.perplexity == pytest.approx(math.exp(float(direct)), rel=1e-12)


@given(st.integers(2, 40), st.integers(1, CFG.block_size), st.integers(1, 3))
def test_equals_the_per_token_loop_for_any_stride(n, stride, batch_size):
    m = model64(seed=n)
    ids = ids_of(n, seed=stride)
    r = evaluate_ids(m, ids, stride, batch_size=batch_size)
    assert r.n_tokens == n - 1
    assert r.mean_loss * r.n_tokens == pytest.approx(loop_reference(m, ids, stride), rel=1e-10)


def test_stride_invariant_for_a_model_without_context():
    m = model64(seed=3)
    m.params["wpe.weight"][...] = 0.0  # no position information ...
    for i in range(CFG.n_layer):  # ... and no attention output: each prediction sees only its own token
        m.params[f"h.{i}.attn.c_proj.weight"][...] = 0.0
        m.params[f"h.{i}.attn.c_proj.bias"][...] = 0.0
    ids = ids_of(61, seed=5)
    losses = [evaluate_ids(m, ids, s).mean_loss for s in range(1, CFG.block_size + 1)]
    assert np.ptp(losses) < 1e-12


def test_more_context_helps_a_model_that_uses_it():
    # a model trained on nothing still differs by stride; but counts and windows follow the formula
    m = model64(seed=4)
    ids = ids_of(100, seed=6)
    T = CFG.block_size
    for s in (1, 2, 4, T):
        r = evaluate_ids(m, ids, s)
        assert r.n_windows == 1 + math.ceil((len(ids) - 1 - T) / s)
        assert r.stride == s
    assert evaluate_ids(m, ids).stride == T // 2  # the documented default


def test_windows_cover_every_target_once():
    for n, T, s in [(2, 8, 4), (9, 8, 4), (10, 8, 4), (50, 8, 3), (50, 8, 8), (50, 8, 1)]:
        seen = []
        for start, length, first in windows(n, T, s):
            assert 0 <= first < length <= T
            seen += [start + o + 1 for o in range(first, length)]
            if start:  # later windows: at least T - stride + 1 tokens of context for every scored token
                assert first + 1 >= T - s + 1 or length < T
        assert seen == list(range(1, n))


def test_text_bits_per_byte_and_progress():
    text = "hello world, hello there. " * 5
    tok = CharTokenizer(text)
    cfg = GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=8)
    m = model64(cfg=cfg)
    calls = []
    r = evaluate_text(m, tok, text, stride=5, progress=lambda done, total: calls.append((done, total)))
    assert r.n_tokens == len(text) - 1 and r.n_bytes == len(text) - 1  # ASCII: a byte per character
    assert r.bits_per_byte == pytest.approx(r.mean_loss / math.log(2), rel=1e-12)
    assert calls[-1] == (len(text) - 1, len(text) - 1)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)
    same = evaluate_ids(m, tok.encode(text), stride=5)
    assert same.mean_loss == r.mean_loss
    withbos = evaluate_text(m, tok, text[1:], stride=5, bos=int(tok.encode(text[0])[0]))
    assert withbos.mean_loss == pytest.approx(r.mean_loss, rel=1e-12) and withbos.n_bytes == len(text) - 1


def test_restores_training_mode():
    m = model64().train()
    evaluate_ids(m, ids_of(20), 4)
    assert m.training


@pytest.mark.parametrize("kwargs, msg", [
    ({"stride": 0}, r"stride: expected an integer in \[1, block_size=8\], got 0"),
    ({"stride": 9}, "stride: expected an integer in"),
    ({"stride": 2.0}, "stride: expected an integer"),
    ({"batch_size": 0}, "batch_size: expected a positive integer"),
])
def test_bad_arguments(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        evaluate_ids(model64(), ids_of(20), **kwargs)


def test_bad_ids():
    m = model64()
    with pytest.raises(ValueError, match="need at least 2 tokens"):
        evaluate_ids(m, [3])
    with pytest.raises(ValueError, match=r"token id 11 is out of range for the model's vocabulary \[0, 11\)"):
        evaluate_ids(m, [1, 11])
    with pytest.raises(ValueError, match="expected a 1-D sequence"):
        evaluate_ids(m, [[1, 2]])
    with pytest.raises(ValueError, match="model: expected a GPT"):
        evaluate_ids("gpt2", [1, 2])  # type: ignore[arg-type]


def test_eval_command_on_a_gpt2_directory(tmp_path):
    import argparse
    import io

    from tokenizer_fixtures import gpt2_tok

    from npgpt.cli.eval import add_eval_arguments, run_eval
    from npgpt.families import save_dir as save_gpt2_dir

    cfg = GPTConfig(vocab_size=50257, block_size=32, n_layer=1, n_head=2, n_embd=8)
    save_gpt2_dir(GPT(cfg, seed=0), gpt2_tok(), tmp_path / "gpt2")
    (tmp_path / "t.txt").write_text("Hello world. " * 30, encoding="utf-8")
    p = argparse.ArgumentParser()
    add_eval_arguments(p)
    out, err = io.StringIO(), io.StringIO()
    assert run_eval(p.parse_args([str(tmp_path / "gpt2"), str(tmp_path / "t.txt"), "--stride", "8"]), out, err) == 0
    lines = out.getvalue().splitlines()
    assert "stride 8" in lines[0] and "91 tokens scored (390 bytes)" in lines[0]  # <|endoftext|> first: all scored
    assert lines[1].startswith("mean loss") and lines[2].startswith("perplexity") and lines[3].startswith("bits")
    assert err.getvalue().splitlines()[-1].startswith("eval: 91/91 tokens (100%)")
    loss = float(lines[1].split()[2])
    assert abs(loss - math.log(50257)) < 0.05  # an untrained GPT-2 is nearly uniform
    with pytest.raises(ValueError, match=r"--stride: expected an integer in \[1, block_size=32\], got 33"):
        run_eval(p.parse_args([str(tmp_path / "gpt2"), str(tmp_path / "t.txt"), "--stride", "33"]), out, err)
    with pytest.raises(ValueError, match="no such file or directory"):
        run_eval(p.parse_args([str(tmp_path / "nope"), str(tmp_path / "t.txt")]), out, err)
    (tmp_path / "out").mkdir()  # npgpt train's out_dir given for its checkpoint: named, not guessed
    (tmp_path / "out" / "best.npz").write_bytes(b"")
    (tmp_path / "out" / "ckpt.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"out: a training directory, not a Hugging Face one: pass one of its "
                                         r"checkpoints, .*best\.npz or .*ckpt\.npz$"):
        run_eval(p.parse_args([str(tmp_path / "out"), str(tmp_path / "t.txt")]), out, err)
