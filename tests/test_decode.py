"""The one-token decoding step (npgpt/decode.py, through generate.decode_step) against forward_cached, the
model's own forward over the cache: logits and cached keys/values at every position, float32 kept, the
argument checks, and that generate runs it for every sampled token."""

from __future__ import annotations

import importlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npgpt import GPT, GPTConfig, KVCache, decode_step, forward_cached, generate
from npgpt.gpt2.decode import transposed_proj

gen = importlib.import_module("npgpt.gpt2.generate")  # the module: npgpt.gpt2.generate is also the function


def noisy_params(config: GPTConfig, seed: int, dtype=np.float64):
    """Params pushed away from the init (LayerNorm gains and biases included), so no term is degenerate."""
    model = GPT(config, seed=seed, dtype=dtype)
    rng = np.random.default_rng(700 + seed)
    for p in model.params.values():
        p += (0.3 * rng.standard_normal(p.shape)).astype(dtype)
    return model.params


@given(B=st.integers(1, 3), n_layer=st.integers(1, 3), n_head=st.sampled_from([1, 2, 4]),
       head_size=st.integers(1, 6), prefill=st.integers(0, 5), seed=st.integers(0, 50))
def test_each_step_equals_forward_cached(B, n_layer, n_head, head_size, prefill, seed):
    config = GPTConfig(vocab_size=11, block_size=9, n_layer=n_layer, n_head=n_head, n_embd=n_head * head_size)
    params = noisy_params(config, seed)
    seq = np.random.default_rng(seed).integers(0, config.vocab_size, size=(B, config.block_size))
    fast, ref = KVCache(config, B, np.float64), KVCache(config, B, np.float64)
    if prefill:  # the prompt goes through forward_cached in both, as generate does
        forward_cached(params, config, seq[:, :prefill], fast)
        forward_cached(params, config, seq[:, :prefill], ref)
    proj_t = transposed_proj(params, config)  # made once, as generate does
    for t in range(prefill, config.block_size):
        logits = decode_step(params, config, seq[:, t], fast, proj_t if t % 2 else None)  # given, or made
        expected = forward_cached(params, config, seq[:, t:t + 1], ref)[:, 0]
        assert logits.shape == (B, config.vocab_size) and fast.length == ref.length == t + 1
        np.testing.assert_allclose(logits, expected, rtol=1e-12, atol=1e-12, err_msg=f"position {t}")
    for i in range(n_layer):  # the keys and values it wrote are the ones the model's forward writes
        np.testing.assert_allclose(fast.k[i], ref.k[i], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(fast.v[i], ref.v[i], rtol=1e-12, atol=1e-12)


def test_float32_stays_float32_and_agrees():
    config = GPTConfig(vocab_size=17, block_size=12, n_layer=2, n_head=3, n_embd=24)
    p64 = noisy_params(config, 3)
    p32 = {k: v.astype(np.float32) for k, v in p64.items()}
    seq = np.random.default_rng(1).integers(0, config.vocab_size, size=(2, config.block_size))
    kv32, kv64 = KVCache(config, 2, np.float32), KVCache(config, 2, np.float64)
    for t in range(config.block_size):
        a = decode_step(p32, config, seq[:, t], kv32)
        b = decode_step(p64, config, seq[:, t], kv64)
        assert a.dtype == np.float32 and kv32.k[0].dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_large_pre_activations_saturate_without_warnings():
    # GELU's exp(-2u) overflows to inf for very negative inputs: the step must give GELU = 0 there, silently
    config = GPTConfig(vocab_size=7, block_size=4, n_layer=1, n_head=1, n_embd=4)
    params = noisy_params(config, 0)
    params["h.0.mlp.c_fc.bias"][:] = -1e4
    kv, ref = KVCache(config, 1, np.float64), KVCache(config, 1, np.float64)
    with np.errstate(all="raise"):
        out = decode_step(params, config, np.array([3]), kv)
    np.testing.assert_allclose(out, forward_cached(params, config, np.array([[3]]), ref)[:, 0], rtol=1e-12)
    assert np.isfinite(out).all()


def test_transposed_proj_is_a_contiguous_copy_of_each_output_weight():
    config = GPTConfig(vocab_size=7, block_size=4, n_layer=3, n_head=2, n_embd=6)
    params = noisy_params(config, 4, np.float32)
    proj_t = transposed_proj(params, config)
    assert len(proj_t) == 3
    for i, w in enumerate(proj_t):
        src = params[f"h.{i}.mlp.c_proj.weight"]  # (4C, C)
        assert w.shape == (6, 24) and w.dtype == np.float32 and w.flags.c_contiguous
        np.testing.assert_array_equal(w, src.T)
        assert not np.shares_memory(w, src)


@pytest.mark.parametrize("bad", ["short", "shape", "dtype"])
def test_bad_proj_t_is_named(bad):
    config = GPTConfig(vocab_size=7, block_size=4, n_layer=2, n_head=2, n_embd=4)
    params = noisy_params(config, 0)
    proj_t = transposed_proj(params, config)
    proj_t = {"short": proj_t[:1], "shape": [w.T for w in proj_t],
              "dtype": [w.astype(np.float32) for w in proj_t]}[bad]
    kv = KVCache(config, 1, np.float64)
    with pytest.raises(ValueError, match=r"^proj_t: expected 2 float64 arrays of shape \(4, 16\)"):
        decode_step(params, config, np.array([1]), kv, proj_t)
    assert kv.length == 0


def test_inputs_are_not_modified():
    config = GPTConfig(vocab_size=7, block_size=4, n_layer=2, n_head=2, n_embd=4)
    params = noisy_params(config, 1)
    before = {k: v.copy() for k, v in params.items()}
    tokens = np.array([1, 5])
    kv = KVCache(config, 2, np.float64)
    decode_step(params, config, tokens, kv)
    decode_step(params, config, tokens, kv)
    for k, v in params.items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    np.testing.assert_array_equal(tokens, [1, 5])
    assert not kv.k[0][:, :, 2:].any()  # nothing written past the positions stepped


CONFIG = GPTConfig(vocab_size=7, block_size=3, n_layer=1, n_head=2, n_embd=4)


@pytest.mark.parametrize("tokens, match", [
    (np.array([[1], [2]]), r"^tokens: expected 1 dimensions"),
    (np.array([1, 7]), r"^tokens: token id 7 is out of range"),
    (np.array([1.0, 2.0]), r"^tokens: expected an integer dtype"),
    (np.array([1, 2, 3]), r"^tokens: expected 2 ids \(the cache's batch\)"),
])
def test_bad_tokens_are_named(tokens, match):
    with pytest.raises(ValueError, match=match):
        decode_step(noisy_params(CONFIG, 0), CONFIG, tokens, KVCache(CONFIG, 2, np.float64))


def test_a_full_cache_is_refused_and_left_alone():
    params = noisy_params(CONFIG, 0)
    kv = KVCache(CONFIG, 1, np.float64)
    for t in range(CONFIG.block_size):
        decode_step(params, CONFIG, np.array([t]), kv)
    k = [a.copy() for a in kv.k]
    with pytest.raises(ValueError, match=r"^kv: all block_size=3 positions are filled"):
        decode_step(params, CONFIG, np.array([0]), kv)
    assert kv.length == CONFIG.block_size
    for a, b in zip(kv.k, k):
        np.testing.assert_array_equal(a, b)


def test_generate_runs_the_step_for_every_sampled_token(monkeypatch):
    # a 3-token prompt, 4 new tokens, block_size 8: the prompt through forward_cached, then 3 one-token steps
    # (the 4th token is sampled from the 3rd step's logits); the tokens are those of the uncached loop
    config = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=8)
    params = noisy_params(config, 2)
    calls = []
    real = gen._decode_step
    monkeypatch.setattr(gen, "_decode_step", lambda *a: calls.append((a[5], len(a[6]))) or real(*a))
    prompt = np.array([[1, 2, 3], [4, 5, 6]])
    a = generate(params, config, prompt, 4, rng=np.random.default_rng(0))
    b = generate(params, config, prompt, 4, rng=np.random.default_rng(0), use_cache=False)
    assert calls == [(3, 2), (4, 2), (5, 2)]  # the positions it was given, each with both layers' copies
    np.testing.assert_array_equal(a, b)
