"""The Llama family's one-token decoding step (npgpt/llama/decode.py) against forward_cached, the model's own
forward over the cache: logits and cached keys/values at every position, on grouped-query, multi-query and
plain models with every activation, RoPE scaling and a tied head; float32 kept; the stacked copies; inputs
untouched; and that generate runs it for exactly the sampled tokens."""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npgpt.llama import LlamaConfig, LlamaKVCache, forward_cached, param_shapes
from npgpt.llama.decode import _decode_step, decode_weights, decode_weights_nbytes

gen = importlib.import_module("npgpt.llama.generate")
dec = importlib.import_module("npgpt.llama.decode")

SCALINGS = [None, {"rope_type": "linear", "factor": 2.5},
            {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
             "original_max_position_embeddings": 4}]


def noisy_params(config: LlamaConfig, seed: int, dtype=np.float64) -> dict[str, np.ndarray]:
    """N(0, 1/fan_in) matrices and norm weights 1 + noise: no term degenerate."""
    rng = np.random.default_rng(seed)
    return {k: (1.0 + 0.3 * rng.standard_normal(s) if len(s) == 1 else rng.standard_normal(s) / math.sqrt(s[-1]))
            .astype(dtype) for k, s in param_shapes(config).items()}


def step(params, config, tokens, kv, weights):
    """One position through the step, advancing the cache as generate does."""
    logits = _decode_step(params, config, tokens, kv.slots, kv.length, weights)
    kv.length += 1
    return logits


@given(B=st.integers(1, 3), n_layer=st.integers(1, 2), heads=st.sampled_from([(1, 1), (2, 2), (4, 2), (6, 2), (3, 1)]),
       half=st.integers(1, 3), F=st.integers(1, 9), act=st.sampled_from(["silu", "gelu_pytorch_tanh", "gelu"]),
       scaling=st.sampled_from(range(len(SCALINGS))), tie=st.booleans(), prefill=st.integers(0, 4),
       seed=st.integers(0, 50))
def test_each_step_equals_forward_cached(B, n_layer, heads, half, F, act, scaling, tie, prefill, seed):
    Hq, Hkv = heads
    D = 2 * half  # RoPE rotates channel pairs
    config = LlamaConfig(vocab_size=11, block_size=8, n_layer=n_layer, n_head=Hq, n_kv_head=Hkv, n_embd=Hq * D,
                         intermediate_size=F, hidden_act=act, rope_scaling=SCALINGS[scaling],
                         tie_word_embeddings=tie, rms_norm_eps=1e-5, rope_theta=50.0)
    params = noisy_params(config, seed)
    seq = np.random.default_rng(seed).integers(0, config.vocab_size, size=(B, config.block_size))
    fast, ref = LlamaKVCache(config, B, np.float64), LlamaKVCache(config, B, np.float64)
    if prefill:  # the prompt goes through forward_cached in both, as generate does
        forward_cached(params, config, seq[:, :prefill], fast)
        forward_cached(params, config, seq[:, :prefill], ref)
    weights = decode_weights(params, config)
    for t in range(prefill, config.block_size):
        logits = step(params, config, seq[:, t], fast, weights)
        expected = forward_cached(params, config, seq[:, t:t + 1], ref)[:, 0]
        assert logits.shape == (B, config.vocab_size) and fast.length == ref.length == t + 1
        np.testing.assert_allclose(logits, expected, rtol=1e-12, atol=1e-12, err_msg=f"position {t}")
    for a, b in zip(fast.slots, ref.slots):  # the rotated keys and the values it wrote are the model's
        np.testing.assert_allclose(a.k, b.k, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(a.v, b.v, rtol=1e-12, atol=1e-12)


def test_float32_stays_float32_and_agrees():
    config = LlamaConfig(vocab_size=17, block_size=10, n_layer=2, n_head=4, n_kv_head=2, n_embd=16,
                         intermediate_size=24)
    p64 = noisy_params(config, 3)
    p32 = {k: v.astype(np.float32) for k, v in p64.items()}
    w32, w64 = decode_weights(p32, config), decode_weights(p64, config)
    seq = np.random.default_rng(1).integers(0, config.vocab_size, size=(2, config.block_size))
    kv32, kv64 = LlamaKVCache(config, 2, np.float32), LlamaKVCache(config, 2, np.float64)
    for t in range(config.block_size):
        a = step(p32, config, seq[:, t], kv32, w32)
        b = step(p64, config, seq[:, t], kv64, w64)
        assert a.dtype == np.float32 and kv32.slots[0].k.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_large_gates_saturate_without_warnings():
    # silu's exp(-gate) overflows to inf for very negative gates: the step must give silu = 0 there, silently
    config = LlamaConfig(vocab_size=7, block_size=4, n_layer=1, n_head=2, n_kv_head=1, n_embd=4, intermediate_size=6)
    params = noisy_params(config, 0)
    params["model.layers.0.mlp.gate_proj.weight"] *= 1e5
    kv, ref = LlamaKVCache(config, 1, np.float64), LlamaKVCache(config, 1, np.float64)
    with np.errstate(all="raise"):
        out = step(params, config, np.array([3]), kv, decode_weights(params, config))
    np.testing.assert_allclose(out, forward_cached(params, config, np.array([[3]]), ref)[:, 0], rtol=1e-12)
    assert np.isfinite(out).all()


def test_decode_weights_are_contiguous_stacked_copies():
    config = LlamaConfig(vocab_size=7, block_size=4, n_layer=3, n_head=4, n_kv_head=2, n_embd=8, intermediate_size=5)
    params = noisy_params(config, 4, np.float32)
    weights = decode_weights(params, config)
    assert len(weights) == 3
    for i, w in enumerate(weights):
        p = f"model.layers.{i}."
        q, k, v = (params[p + f"self_attn.{n}_proj.weight"] for n in "qkv")  # (8, 8), (4, 8), (4, 8)
        gate, up = params[p + "mlp.gate_proj.weight"], params[p + "mlp.up_proj.weight"]  # (5, 8) each
        assert w.qkv.shape == (8, 16) and w.gate_up.shape == (8, 10)
        for a in w:
            assert a.dtype == np.float32 and a.flags.c_contiguous
        np.testing.assert_array_equal(w.qkv, np.concatenate([q.T, k.T, v.T], axis=1))
        np.testing.assert_array_equal(w.gate_up, np.concatenate([gate.T, up.T], axis=1))
        for src in (q, k, v, gate, up):
            assert not np.shares_memory(w.qkv, src) and not np.shares_memory(w.gate_up, src)


def test_inputs_are_not_modified():
    config = LlamaConfig(vocab_size=7, block_size=4, n_layer=2, n_head=2, n_kv_head=1, n_embd=4, intermediate_size=6)
    params = noisy_params(config, 1)
    before = {k: v.copy() for k, v in params.items()}
    weights = decode_weights(params, config)
    copies = [tuple(a.copy() for a in w) for w in weights]
    tokens = np.array([1, 5])
    kv = LlamaKVCache(config, 2, np.float64)
    step(params, config, tokens, kv, weights)
    step(params, config, tokens, kv, weights)
    for k, v in params.items():
        np.testing.assert_array_equal(v, before[k], err_msg=k)
    for w, c in zip(weights, copies):
        for a, b in zip(w, c):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(tokens, [1, 5])
    assert not kv.slots[0].k[:, :, 2:].any()  # nothing written past the positions stepped


def test_generate_runs_the_step_for_every_sampled_token(monkeypatch):
    # a 3-token prompt, 4 new tokens, block_size 8: the prompt through forward_cached, then 3 one-token steps
    # (the 4th token is sampled from the 3rd step's logits); the tokens are those of the uncached loop
    config = LlamaConfig(vocab_size=13, block_size=8, n_layer=2, n_head=4, n_kv_head=2, n_embd=8,
                         intermediate_size=12)
    params = noisy_params(config, 2)
    calls = []
    real = gen._decode_step
    monkeypatch.setattr(gen, "_decode_step", lambda *a: calls.append((a[4], len(a[5]))) or real(*a))
    prompt = np.array([[1, 2, 3], [4, 5, 6]])
    a = gen.generate(params, config, prompt, 4, rng=np.random.default_rng(0))
    b = gen.generate(params, config, prompt, 4, rng=np.random.default_rng(0), use_cache=False)
    assert calls == [(3, 2), (4, 2), (5, 2)]  # the positions it was given, each with both layers' copies
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("new, positions", [(1, []), (6, [2, 3])])
def test_generate_past_the_window_refills_through_forward_cached(monkeypatch, new, positions):
    # block_size 4, a 2-token prompt: one new token needs no step; six take steps at positions 2 and 3, then
    # the window slides and every later token refills the cache through forward_cached
    config = LlamaConfig(vocab_size=9, block_size=4, n_layer=1, n_head=2, n_kv_head=2, n_embd=4, intermediate_size=6)
    params = noisy_params(config, 5)
    calls = []
    real = gen._decode_step
    monkeypatch.setattr(gen, "_decode_step", lambda *a: calls.append(a[4]) or real(*a))
    prompt = np.array([[1, 2]])
    a = gen.generate(params, config, prompt, new, temperature=0.0)
    b = gen.generate(params, config, prompt, new, temperature=0.0, use_cache=False)
    np.testing.assert_array_equal(a, b)
    assert calls == positions and a.shape == (1, 2 + new)


def test_decode_weights_nbytes_counts_the_copies():
    config = LlamaConfig(vocab_size=7, block_size=4, n_layer=3, n_head=4, n_kv_head=2, n_embd=8, intermediate_size=5)
    weights = decode_weights(noisy_params(config, 6, np.float32), config)
    assert decode_weights_nbytes(config, np.float32) == sum(a.nbytes for w in weights for a in w) == 3 * 4 * (128 + 80)


def test_above_the_copy_limit_every_token_goes_through_forward_cached(monkeypatch):
    # a model whose copies would pass the limit makes none and never runs the step; it samples the same tokens
    config = LlamaConfig(vocab_size=13, block_size=8, n_layer=2, n_head=4, n_kv_head=2, n_embd=8,
                         intermediate_size=12)
    params = noisy_params(config, 7)
    prompt = np.array([[1, 2, 3]])
    a = gen.generate(params, config, prompt, 4, rng=np.random.default_rng(1))
    calls = []
    monkeypatch.setattr(dec, "COPY_LIMIT_BYTES", decode_weights_nbytes(config, np.float64) - 1)
    monkeypatch.setattr(gen, "_decode_step", lambda *a: calls.append(a) or pytest.fail("the step ran"))
    monkeypatch.setattr(gen, "decode_weights", lambda *a: pytest.fail("the copies were made"))
    b = gen.generate(params, config, prompt, 4, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert calls == []
