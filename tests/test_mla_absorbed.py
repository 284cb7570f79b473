"""mla_absorb / mla_absorbed_forward: the absorbed form of latent attention (kv_b_proj folded into the query and
output projections, attention over the cached latent), held equal to the plain form in float64 for prefill,
token-by-token decoding and chunked prefill, and to transformers through the golden file."""

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import rand, seeds
from hypothesis import given
from hypothesis import strategies as st
from mla_helpers import YARN, configs, make_params, make_tables

from npgpt.layers.mla import MLAConfig, MLAKVSlot, mla_forward
from npgpt.layers.mla_absorbed import LatentSlot, mla_absorb, mla_absorbed_forward

GOLDEN = Path(__file__).parent / "fixtures" / "mla_golden.npz"
TOL = 1e-13  # relative to the output's largest element


def _close(a, b, tol=TOL):
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * max(np.abs(b).max(), 1e-300))


def _setup(config, B, T, seed):
    rng = np.random.default_rng(seed)
    cos, sin = make_tables(rng, config, T)
    p = make_params(rng, config)
    return rng, rand(rng, B, T, config.n_embd), p, cos, sin


def _slot(config, B, capacity, dtype=np.float64):
    return LatentSlot(np.zeros((B, 1, capacity, config.kv_lora_rank + config.qk_rope_head_dim), dtype=dtype))


@given(config=configs(), B=st.integers(1, 2), T=st.integers(1, 5), seed=seeds)
def test_prefill_equals_plain(config, B, T, seed):
    """A causal pass over T positions: the output and the attention probabilities equal the plain form's."""
    _, x, p, cos, sin = _setup(config, B, T, seed)
    plain, pc = mla_forward(x, p, config, cos, sin)
    out, cache = mla_absorbed_forward(x, mla_absorb(p, config), config, cos, sin)
    _close(out, plain)
    np.testing.assert_allclose(cache.attn.probs, pc.attn.probs, rtol=0, atol=1e-14)


@given(config=configs(), B=st.integers(1, 2), T=st.integers(2, 6), seed=seeds, data=st.data())
def test_decode_equals_plain(config, B, T, seed, data):
    """Token by token through a LatentSlot, and a prefill of t1 positions then single tokens, equal the plain
    form's one causal pass and its own KV-cached decoding."""
    _, x, p, cos, sin = _setup(config, B, T, seed)
    w = mla_absorb(p, config)
    full, _ = mla_forward(x, p, config, cos, sin)
    latent = _slot(config, B, T)
    kv = MLAKVSlot(np.zeros((B, config.n_head, T, config.qk_head_dim)),
                   np.zeros((B, config.n_head, T, config.v_head_dim)))
    for t in range(T):
        o, _ = mla_absorbed_forward(x[:, t:t + 1], w, config, cos[t:t + 1], sin[t:t + 1], latent=latent, start=t)
        o_plain, _ = mla_forward(x[:, t:t + 1], p, config, cos[t:t + 1], sin[t:t + 1], kv=kv, start=t)
        _close(o[:, 0], full[:, t])
        _close(o[:, 0], o_plain[:, 0])
    t1 = data.draw(st.integers(1, T - 1))
    latent = _slot(config, B, T + 3)
    outs = [mla_absorbed_forward(x[:, :t1], w, config, cos[:t1], sin[:t1], latent=latent, start=0)[0]]
    for t in range(t1, T):
        outs.append(mla_absorbed_forward(x[:, t:t + 1], w, config, cos[t:t + 1], sin[t:t + 1], latent=latent,
                                         start=t)[0])
    _close(np.concatenate(outs, axis=1), full)


@given(config=configs(), B=st.integers(1, 2), T=st.integers(1, 4), seed=seeds)
def test_cache_holds_the_latent_and_the_shared_rope_key(config, B, T, seed):
    """The slot's row per position is [c | rope(k_rope)]: kv_a_layernorm's output and the rotated key part
    every head shares, r + R numbers instead of the plain form's H (Dqk + Dv)."""
    _, x, p, cos, sin = _setup(config, B, T, seed)
    _, pc = mla_forward(x, p, config, cos, sin)
    latent = _slot(config, B, T)
    mla_absorbed_forward(x, mla_absorb(p, config), config, cos, sin, latent=latent, start=0)
    r, Dn = config.kv_lora_rank, config.qk_nope_head_dim
    np.testing.assert_array_equal(latent.kv[:, 0, :, :r], pc.c.reshape(B, T, r))
    np.testing.assert_array_equal(latent.kv[:, 0, :, r:], pc.attn.k[:, 0, :, Dn:])


@given(config=configs(), seed=seeds)
def test_absorbed_weights(config, seed):
    """w_q keeps the rope rows of the query projection; the absorbed parts are the products of the derivation
    (26)-(27), head by head; everything else is the parameters themselves."""
    rng = np.random.default_rng(seed)
    p = make_params(rng, config)
    w = mla_absorb(p, config)
    H, r, R = config.n_head, config.kv_lora_rank, config.qk_rope_head_dim
    Dn, Dv, Dqk, C = config.qk_nope_head_dim, config.v_head_dim, config.qk_head_dim, config.n_embd
    wq = p["self_attn.q_proj.weight" if config.q_lora_rank is None else "self_attn.q_b_proj.weight"]
    wkv = p["self_attn.kv_b_proj.weight"]
    wo = p["self_attn.o_proj.weight"]
    for h in range(H):
        rows = w.w_q[h * (r + R):(h + 1) * (r + R)]
        w_uk = wkv[h * (Dn + Dv):h * (Dn + Dv) + Dn]  # (Dn, r)
        w_uv = wkv[h * (Dn + Dv) + Dn:(h + 1) * (Dn + Dv)]  # (Dv, r)
        np.testing.assert_allclose(rows[:r], w_uk.T @ wq[h * Dqk:h * Dqk + Dn], rtol=1e-13, atol=1e-14)
        np.testing.assert_array_equal(rows[r:], wq[h * Dqk + Dn:(h + 1) * Dqk])
        np.testing.assert_allclose(w.w_o[:, h * r:(h + 1) * r], wo[:, h * Dv:(h + 1) * Dv] @ w_uv,
                                   rtol=1e-13, atol=1e-14)
    assert w.w_o.shape == (C, H * r)
    assert w.kv_a is p["self_attn.kv_a_proj_with_mqa.weight"] and w.kv_norm is p["self_attn.kv_a_layernorm.weight"]
    assert (w.q_a is None) == (config.q_lora_rank is None)
    assert (w.o_bias is None) == (not config.attention_bias)


@pytest.mark.parametrize("case", ["v3_lora_yarn_bias", "v3_qproj_halfsplit", "v2_lora"])
def test_golden_transformers_float64(case):
    """The absorbed form also reproduces transformers' outputs in the golden file (1e-12)."""
    with np.load(GOLDEN) as f:
        a = {k[len(case) + 1:]: f[k] for k in f.files if k.startswith(case + ".")}
    config = MLAConfig(**json.loads(str(a["config"])))
    p = {k[2:]: v for k, v in a.items() if k.startswith("p.")}
    out, _ = mla_absorbed_forward(a["x"], mla_absorb(p, config), config, a["cos"], a["sin"])
    _close(out, a["out"], 1e-12)


def test_float32():
    rng = np.random.default_rng(3)
    config = MLAConfig(n_embd=8, n_head=2, kv_lora_rank=4, qk_nope_head_dim=3, qk_rope_head_dim=2, v_head_dim=5,
                       q_lora_rank=3, attention_bias=True, rope_scaling=YARN)
    x, p = rand(rng, 2, 4, 8), make_params(rng, config)
    cos, sin = make_tables(rng, config, 4)
    p32 = {k: v.astype(np.float32) for k, v in p.items()}
    out32, _ = mla_absorbed_forward(x.astype(np.float32), mla_absorb(p32, config), config, cos.astype(np.float32),
                                    sin.astype(np.float32))
    out64, _ = mla_forward(x, p, config, cos, sin)
    assert out32.dtype == np.float32
    _close(out32, out64, 1e-5)


def test_inputs_unmodified():
    rng = np.random.default_rng(4)
    config = MLAConfig(n_embd=5, n_head=2, kv_lora_rank=3, qk_nope_head_dim=2, qk_rope_head_dim=4, v_head_dim=1)
    x, p = rand(rng, 1, 3, 5), make_params(rng, config)
    cos, sin = make_tables(rng, config, 3)
    before = {k: v.copy() for k, v in p.items()}
    x0 = x.copy()
    w = mla_absorb(p, config)
    mla_absorbed_forward(x, w, config, cos, sin)
    assert np.array_equal(x, x0) and all(np.array_equal(p[k], before[k]) for k in p)


_cfg = MLAConfig(n_embd=4, n_head=2, kv_lora_rank=3, qk_nope_head_dim=2, qk_rope_head_dim=2, v_head_dim=3,
                 q_lora_rank=2)
_rng = np.random.default_rng(9)
_p = make_params(_rng, _cfg)
_w = mla_absorb(_p, _cfg)
_x = rand(_rng, 1, 3, 4)
_cos, _sin = make_tables(_rng, _cfg, 3)


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: mla_absorb({**_p, "self_attn.kv_b_proj.weight": np.zeros((10, 2))}, _cfg),
                 r"^self_attn.kv_b_proj.weight: expected shape \(10, 3\)", id="absorb-kv-b-shape"),
    pytest.param(lambda: mla_absorb(_p, dict(n_head=2)), "^config:", id="absorb-config"),
    pytest.param(lambda: mla_absorbed_forward(_x, _p, _cfg, _cos, _sin), "^w: expected MLAAbsorbedWeights",
                 id="w-dict"),
    pytest.param(lambda: mla_absorbed_forward(_x, _w._replace(w_o=np.zeros((4, 5))), _cfg, _cos, _sin),
                 r"^w.w_o: expected a float64 array of shape \(4, 6\)", id="w-o-shape"),
    pytest.param(lambda: mla_absorbed_forward(_x, mla_absorb(_p, MLAConfig(**{**_cfg.__dict__, "n_head": 2})),
                                              MLAConfig(**{**_cfg.__dict__, "kv_lora_rank": 2}), _cos, _sin),
                 r"^w.w_q:", id="w-other-config"),
    pytest.param(lambda: mla_absorbed_forward(_x[0], _w, _cfg, _cos, _sin), "^x:", id="x-2d"),
    pytest.param(lambda: mla_absorbed_forward(_x, _w, _cfg, _cos[:2], _sin), "^cos:", id="cos-shape"),
    pytest.param(lambda: mla_absorbed_forward(_x, _w, _cfg, _cos, _sin, latent=np.zeros((1, 1, 5, 5))),
                 "^latent: expected a LatentSlot", id="latent-array"),
    pytest.param(lambda: mla_absorbed_forward(_x, _w, _cfg, _cos, _sin, latent=_slot(_cfg, 1, 5)._replace(
        kv=np.zeros((1, 2, 5, 5)))), r"^latent.kv: expected shape \(1, 1, 'T_max', 5\)", id="latent-heads"),
    pytest.param(lambda: mla_absorbed_forward(_x, _w, _cfg, _cos, _sin, latent=_slot(_cfg, 1, 4), start=2),
                 "^start: 2 [+] T=3 positions exceed the cache's capacity 4", id="latent-full"),
    pytest.param(lambda: mla_absorbed_forward(_x, _w, _cfg, _cos, _sin, latent=_slot(_cfg, 1, 5, np.float32)),
                 "^latent.kv: expected dtype float64", id="latent-dtype"),
    pytest.param(lambda: mla_absorbed_forward(_x, _w, _cfg, _cos, _sin, start=1), "^start: expected 0", id="start"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
