"""mla_forward / mla_backward: DeepSeek's multi-head latent attention (plain form), low-rank query and key-value
paths with RMSNorm on the latents, a RoPE key part shared by the heads, v_head_dim != qk_head_dim, KV cache;
parity with transformers' DeepseekV3Attention and DeepseekV2Attention in float64 (golden file and live)."""

import importlib.util
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import forward_backward_pure, gradcheck, rand, ref_softmax_row, seeds
from hypothesis import given
from hypothesis import strategies as st
from mla_helpers import YARN, configs, make_params, make_tables

from npgpt.layers.mla import (
    MLA_PARAM_NAMES,
    MLAConfig,
    MLAKVSlot,
    mla_backward,
    mla_forward,
    mla_param_shapes,
    mla_softmax_scale,
)
from npgpt.layers.rope import rope_inv_freq, rope_tables

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = FIXTURES / "mla_golden.npz"
def names_of(config):
    return list(mla_param_shapes(config))


def flat_forward(x, *ps, config, cos, sin):
    return mla_forward(x, dict(zip(names_of(config), ps)), config, cos, sin)


def flat_backward(dout, cache):
    dx, g = mla_backward(dout, cache)
    return (dx, *(g[n] for n in names_of(cache.config)))


# ---------------------------------------------------------------------------------------------- reference


def ref_scale(config):
    """qk_head_dim^-1/2, times (0.1 mscale_all_dim ln(factor) + 1)^2 under YaRN."""
    s = (config.qk_nope_head_dim + config.qk_rope_head_dim) ** -0.5
    if config.rope_scaling is not None:
        m = 0.1 * config.rope_scaling["mscale_all_dim"] * math.log(config.rope_scaling["factor"]) + 1.0
        s *= m * m
    return s


def ref_mla(x, p, config, cos, sin):
    """HF's recipe one vector at a time with math.fsum: latents, RMSNorm, RoPE written as transformers writes it
    (interleaved: de-interleave (2i, 2i+1) then rotate halves), then causal softmax per head and query."""
    B, T, C = x.shape
    H, r, R = config.n_head, config.kv_lora_rank, config.qk_rope_head_dim
    Dn, Dv = config.qk_nope_head_dim, config.v_head_dim
    eps = config.latent_norm_eps

    def lin(name, v):
        W = p["self_attn." + name + ".weight"]
        b = p.get("self_attn." + name + ".bias")
        return [math.fsum([W[o, i] * v[i] for i in range(len(v))] + ([b[o]] if b is not None else []))
                for o in range(W.shape[0])]

    def rms(v, w):
        ms = math.fsum(t * t for t in v) / len(v)
        return [v[i] / math.sqrt(ms + eps) * w[i] for i in range(len(v))]

    def rope(v, t):
        if config.rope_interleave:
            v = v[0::2] + v[1::2]
        h = R // 2
        return ([v[i] * cos[t, i] - v[i + h] * sin[t, i] for i in range(h)]
                + [v[i + h] * cos[t, i] + v[i] * sin[t, i] for i in range(h)])

    out = np.empty((B, T, C))
    s = ref_scale(config)
    for b in range(B):
        q, k, v = [], [], []
        for t in range(T):
            xt = list(x[b, t])
            if config.q_lora_rank is None:
                qt = lin("q_proj", xt)
            else:
                qt = lin("q_b_proj", rms(lin("q_a_proj", xt), p["self_attn.q_a_layernorm.weight"]))
            ckr = lin("kv_a_proj_with_mqa", xt)
            kvt = lin("kv_b_proj", rms(ckr[:r], p["self_attn.kv_a_layernorm.weight"]))
            kr = rope(ckr[r:], t)
            q.append([qt[h * (Dn + R):h * (Dn + R) + Dn] + rope(qt[h * (Dn + R) + Dn:(h + 1) * (Dn + R)], t)
                      for h in range(H)])
            k.append([kvt[h * (Dn + Dv):h * (Dn + Dv) + Dn] + kr for h in range(H)])
            v.append([kvt[h * (Dn + Dv) + Dn:(h + 1) * (Dn + Dv)] for h in range(H)])
        for t in range(T):
            y = []
            for h in range(H):
                pr = ref_softmax_row([math.fsum(a * c for a, c in zip(q[t][h], k[j][h])) * s for j in range(t + 1)])
                y += [math.fsum(pr[j] * v[j][h][d] for j in range(t + 1)) for d in range(Dv)]
            out[b, t] = lin("o_proj", y)
    return out


# ---------------------------------------------------------------------------------------------- properties


@given(config=configs(min_rank=2), B=st.integers(1, 2), T=st.integers(1, 4), seed=seeds)
def test_gradcheck(config, B, T, seed):
    """dx and every parameter's gradient match finite differences (latent ranks >= 2: a rank-1 RMSNorm is
    sign(c), whose tiny slope finite differences cannot resolve; rmsnorm's own tests cover it)."""
    rng = np.random.default_rng(seed)
    cos, sin = make_tables(rng, config, T)
    p = make_params(rng, config)
    gradcheck("mla", flat_forward, flat_backward, [latent_rows_away_from_zero(rng, config, p, B, T), *p.values()],
              names=["x", *p], rng=rng, kwargs={"config": config, "cos": cos, "sin": sin})


def latent_rows_away_from_zero(rng, config, p, B, T, min_rms=0.2):
    """x (B, T, C) whose query and key-value latents (before their RMSNorm) have rms >= min_rms in every row:
    near 0 RMSNorm bends on the scale of the row's norm, and a finite difference of step 1e-3 across a row of
    rms 0.04 is off by ~1e-5 (its truncation error), though the analytic gradient is right (h = 1e-4 agrees)."""
    names = ["kv_a_proj_with_mqa"] + ([] if config.q_lora_rank is None else ["q_a_proj"])
    for _ in range(100):
        x = rand(rng, B, T, config.n_embd)
        rms = [np.sqrt(np.mean((x @ p[f"self_attn.{n}.weight"].T + p.get(f"self_attn.{n}.bias", 0.0))
                               [..., :config.kv_lora_rank if n == "kv_a_proj_with_mqa" else None] ** 2, axis=-1))
               for n in names]
        if min(float(r.min()) for r in rms) >= min_rms:
            return x
    return x  # not met in 100 draws: the check may then be loose, not wrong


@given(config=configs(), B=st.integers(1, 2), T=st.integers(1, 4), seed=seeds)
def test_forward_matches_reference(config, B, T, seed):
    """Equals the vector-at-a-time recipe (transformers' RoPE layout, fsum dot products)."""
    rng = np.random.default_rng(seed)
    cos, sin = make_tables(rng, config, T)
    p = make_params(rng, config)
    x = rand(rng, B, T, config.n_embd)
    out, _ = mla_forward(x, p, config, cos, sin)
    np.testing.assert_allclose(out, ref_mla(x, p, config, cos, sin), rtol=1e-12, atol=1e-12)


@given(config=configs(), B=st.integers(1, 2), T=st.integers(2, 5), seed=seeds, data=st.data())
def test_causal(config, B, T, seed, data):
    """Position t never sees t' > t: changing x after t0 leaves out[:, :t0] unchanged, and an upstream gradient
    before t0 only gives no gradient to x from t0 on."""
    t0 = data.draw(st.integers(1, T - 1))
    rng = np.random.default_rng(seed)
    cos, sin = make_tables(rng, config, T)
    p = make_params(rng, config)
    x = rand(rng, B, T, config.n_embd)
    x2 = x.copy()
    x2[:, t0:] = rand(rng, B, T - t0, config.n_embd)
    out, cache = mla_forward(x, p, config, cos, sin)
    out2, _ = mla_forward(x2, p, config, cos, sin)
    np.testing.assert_allclose(out2[:, :t0], out[:, :t0], rtol=0, atol=1e-14 * np.abs(out).max())
    assert not np.array_equal(out2[:, t0:], out[:, t0:])
    dout = rand(rng, B, T, config.n_embd)
    dout[:, t0:] = 0.0
    dx, _ = mla_backward(dout, cache)
    assert np.all(dx[:, t0:] == 0.0) and np.any(dx[:, :t0] != 0.0)


@given(config=configs(), B=st.integers(1, 2), T=st.integers(1, 4), seed=seeds)
def test_shapes_and_shared_rope_key(config, B, T, seed):
    """Output (B, T, C); a gradient per parameter of the config (its shape), None for the others; the key's R
    rope channels are one vector repeated in every head, the nope channels differ per head."""
    rng = np.random.default_rng(seed)
    cos, sin = make_tables(rng, config, T)
    p = make_params(rng, config)
    out, cache = mla_forward(rand(rng, B, T, config.n_embd), p, config, cos, sin)
    assert out.shape == (B, T, config.n_embd)
    k = cache.attn.k  # (B, H, T, Dqk)
    H, Dn = config.n_head, config.qk_nope_head_dim
    assert k.shape == (B, H, T, config.qk_head_dim) and cache.attn.v.shape == (B, H, T, config.v_head_dim)
    assert np.array_equal(k[..., Dn:], np.broadcast_to(k[:, :1, :, Dn:], k[..., Dn:].shape))
    if H > 1:
        assert not np.allclose(k[:, 0, :, :Dn], k[:, 1, :, :Dn])
    _, g = mla_backward(rand(rng, B, T, config.n_embd), cache)
    assert list(g) == list(MLA_PARAM_NAMES)
    for name in MLA_PARAM_NAMES:
        if name in p:
            assert g[name].shape == p[name].shape and g[name].dtype == np.float64, name
        else:
            assert g[name] is None, name


@given(config=configs(), B=st.integers(1, 2), T=st.integers(2, 5), seed=seeds, data=st.data())
def test_kv_cache_decode_equals_prefill(config, B, T, seed, data):
    """Token by token (and a prefill of t1 then the rest) through an MLAKVSlot equals one causal pass."""
    rng = np.random.default_rng(seed)
    cos, sin = make_tables(rng, config, T)
    p = make_params(rng, config)
    x = rand(rng, B, T, config.n_embd)
    full, _ = mla_forward(x, p, config, cos, sin)
    H = config.n_head

    def slot():
        return MLAKVSlot(np.zeros((B, H, T + 1, config.qk_head_dim)), np.zeros((B, H, T + 1, config.v_head_dim)))
    kv = slot()
    for t in range(T):
        o, _ = mla_forward(x[:, t:t + 1], p, config, cos[t:t + 1], sin[t:t + 1], kv=kv, start=t)
        np.testing.assert_allclose(o[:, 0], full[:, t], rtol=1e-13, atol=1e-13)
    t1 = data.draw(st.integers(1, T - 1))
    kv = slot()
    a, _ = mla_forward(x[:, :t1], p, config, cos[:t1], sin[:t1], kv=kv, start=0)
    b, cache = mla_forward(x[:, t1:], p, config, cos[t1:], sin[t1:], kv=kv, start=t1)
    np.testing.assert_allclose(np.concatenate([a, b], axis=1), full, rtol=1e-13, atol=1e-13)
    with pytest.raises(ValueError, match="^cache: the forward read keys from a kv cache"):
        mla_backward(b, cache)


def test_per_row_tables():
    """(B, 1, T, R/2) tables (a position per row, e.g. left padding) equal per-sequence (T, R/2) runs."""
    rng = np.random.default_rng(5)
    config = MLAConfig(n_embd=6, n_head=2, kv_lora_rank=3, qk_nope_head_dim=2, qk_rope_head_dim=4, v_head_dim=3,
                       q_lora_rank=2)
    p = make_params(rng, config)
    x = rand(rng, 2, 3, 6)
    pos = np.array([[0, 1, 2], [7, 8, 9]])
    cos, sin = rope_tables(pos, rope_inv_freq(4, 100.0), np.float64)  # (2, 1, 3, 2)
    out, cache = mla_forward(x, p, config, cos, sin)
    dx, g = mla_backward(x, cache)
    for b in range(2):
        ob, cb = mla_forward(x[b:b + 1], p, config, cos[b, 0], sin[b, 0])
        np.testing.assert_allclose(out[b:b + 1], ob, rtol=1e-13, atol=1e-14)
        np.testing.assert_allclose(dx[b:b + 1], mla_backward(x[b:b + 1], cb)[0], rtol=1e-12, atol=1e-13)


@given(config=configs(), seed=seeds)
def test_inputs_unmodified(config, seed):
    rng = np.random.default_rng(seed)
    cos, sin = make_tables(rng, config, 3)
    forward_backward_pure(mla_forward, mla_backward, [rand(rng, 2, 3, config.n_embd), make_params(rng, config),
                                                      config, cos, sin], rng)


def test_float32():
    """float32 in -> float32 out and gradients, within float32 round-off of float64."""
    rng = np.random.default_rng(6)
    config = MLAConfig(n_embd=8, n_head=2, kv_lora_rank=4, qk_nope_head_dim=3, qk_rope_head_dim=2, v_head_dim=5,
                       q_lora_rank=3, attention_bias=True, rope_scaling=YARN)
    x, p = rand(rng, 2, 4, 8), make_params(rng, config)
    cos, sin = make_tables(rng, config, 4)
    out32, c32 = mla_forward(x.astype(np.float32), {k: v.astype(np.float32) for k, v in p.items()}, config,
                             cos.astype(np.float32), sin.astype(np.float32))
    out64, c64 = mla_forward(x, p, config, cos, sin)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=0, atol=1e-5 * np.abs(out64).max())
    dout = rand(rng, 2, 4, 8)
    dx32, g32 = mla_backward(dout.astype(np.float32), c32)
    dx64, g64 = mla_backward(dout, c64)
    np.testing.assert_allclose(dx32, dx64, rtol=0, atol=1e-5 * np.abs(dx64).max())
    assert dx32.dtype == np.float32
    for k in MLA_PARAM_NAMES:
        if k not in p:
            assert g32[k] is None
            continue
        assert g32[k].dtype == np.float32
        np.testing.assert_allclose(g32[k], g64[k], rtol=0, atol=1e-5 * np.abs(g64[k]).max(), err_msg=k)


def test_softmax_scale():
    """HF's yarn_apply_mscale: qk_head_dim^-1/2 (mscale_all_dim)^2 for any non-default rope type with a nonzero
    mscale_all_dim and factor > 1; unchanged otherwise."""
    assert mla_softmax_scale(6) == 6 ** -0.5
    assert mla_softmax_scale(6, YARN) == pytest.approx(6 ** -0.5 * (0.08 * math.log(4.0) + 1.0) ** 2, rel=1e-15)
    assert mla_softmax_scale(6, {**YARN, "mscale_all_dim": 0}) == 6 ** -0.5
    assert mla_softmax_scale(6, {**YARN, "factor": 1.0}) == 6 ** -0.5
    assert mla_softmax_scale(6, {**YARN, "rope_type": "default"}) == 6 ** -0.5
    assert mla_softmax_scale(192, {"type": "yarn", "factor": 40, "mscale_all_dim": 1.0}) == pytest.approx(
        192 ** -0.5 * (0.1 * math.log(40) + 1) ** 2, rel=1e-15)  # DeepSeek-V3's own numbers, old key "type"


# ---------------------------------------------------------------------------------------------- transformers


def _fixture_module():
    spec = importlib.util.spec_from_file_location("make_mla_fixture", FIXTURES / "make_mla_fixture.py")
    mk = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mk)
    return mk


def _rel(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def _check_against(ref, x, p, config, cos, sin, dout, out_tol=1e-12, grad_tol=1e-11):
    out, cache = mla_forward(x, p, config, cos, sin)
    dx, g = mla_backward(dout, cache)
    assert _rel(out, ref["out"]) <= out_tol
    assert _rel(dx, ref["grad.x"]) <= grad_tol
    names = [k[len("grad."):] for k in ref if k.startswith("grad.self_attn.")]
    assert sorted(names) == sorted(p)
    for name in names:
        assert _rel(g[name], ref["grad." + name]) <= grad_tol, name


def _golden_cases():
    with np.load(GOLDEN) as f:
        return sorted({k.split(".")[0] for k in f.files if k != "versions"})


@pytest.mark.parametrize("case", _golden_cases())
def test_golden_transformers_float64(case):
    """The committed file (tests/fixtures/make_mla_fixture.py): transformers' DeepseekV3Attention (interleaved
    and half-split RoPE, q_lora_rank set or None, YaRN's mscale in the softmax scale, biases) and
    DeepseekV2Attention (complex-number RoPE), float32 islands made float64: out to 1e-12, gradients to 1e-11."""
    with np.load(GOLDEN) as f:
        a = {k[len(case) + 1:]: f[k] for k in f.files if k.startswith(case + ".")}
    config = MLAConfig(**json.loads(str(a["config"])))
    p = {k[2:]: v for k, v in a.items() if k.startswith("p.")}
    _check_against(a, a["x"], p, config, a["cos"], a["sin"], a["dout"])


@pytest.mark.parametrize("family, fields", [
    ("v3", dict(n_embd=9, n_head=3, q_lora_rank=4, kv_lora_rank=5, qk_nope_head_dim=3, qk_rope_head_dim=2,
                v_head_dim=4, attention_bias=False, rope_interleave=True, rope_scaling=YARN)),
    ("v3", dict(n_embd=7, n_head=2, q_lora_rank=None, kv_lora_rank=3, qk_nope_head_dim=2, qk_rope_head_dim=6,
                v_head_dim=1, attention_bias=True, rope_interleave=False)),
    ("v2", dict(n_embd=6, n_head=1, q_lora_rank=None, kv_lora_rank=2, qk_nope_head_dim=4, qk_rope_head_dim=4,
                v_head_dim=6, attention_bias=True, rope_interleave=True, rope_scaling=YARN)),
])
def test_live_transformers(family, fields):
    """Live: transformers on new shapes, float64 with its float32 islands patched (1e-12 / 1e-11); stock
    transformers (islands left) is off by float32 round-off only, and visibly so; in float32, npgpt and stock
    transformers agree to float32 round-off in the output and every gradient."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    mk = _fixture_module()
    config = MLAConfig(**fields)
    a = mk.make_inputs(config, 2, 5, 17)
    p = {k[2:]: v for k, v in a.items() if k.startswith("p.")}
    _check_against(mk.hf_run(family, config, a), a["x"], p, config, a["cos"], a["sin"], a["dout"])
    stock = mk.hf_run(family, config, a, float64_islands=False)
    out, _ = mla_forward(a["x"], p, config, a["cos"], a["sin"])
    assert 1e-12 < _rel(out, stock["out"]) < 1e-5
    # float32 against stock float32 transformers (nothing patched, attention through torch SDPA): round-off only
    ref32 = mk.hf_run(family, config, a, dtype="float32")
    f32 = {k: v.astype(np.float32) for k, v in a.items() if v.dtype == np.float64}
    out32, cache32 = mla_forward(f32["x"], {k[2:]: v for k, v in f32.items() if k.startswith("p.")}, config,
                                 f32["cos"], f32["sin"])
    dx32, g32 = mla_backward(f32["dout"], cache32)
    assert out32.dtype == np.float32 and _rel(out32, ref32["out"]) < 1e-5
    assert _rel(dx32, ref32["grad.x"]) < 1e-5
    for name in p:
        assert _rel(g32[name], ref32["grad." + name]) < 1e-5, name


def test_live_golden_is_reproducible():
    """Live: rerunning the fixture's recipe on its first case gives the committed numbers."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    mk = _fixture_module()
    case = "v3_lora_yarn_bias"
    family, fields, B, T, seed = mk.CASES[case]
    config = MLAConfig(**fields)
    ref = mk.hf_run(family, config, mk.make_inputs(config, B, T, seed))
    with np.load(GOLDEN) as f:
        for k, v in ref.items():
            np.testing.assert_allclose(v, f[f"{case}.{k}"], rtol=1e-14, atol=1e-15, err_msg=k)


def test_live_softmax_scale_matches_transformers():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers.modeling_rope_utils import yarn_apply_mscale
    for rs in (YARN, {**YARN, "mscale_all_dim": 1.0, "factor": 40.0}, {**YARN, "mscale_all_dim": 0},
               {"rope_type": "linear", "factor": 2.0, "mscale_all_dim": 0.5}):
        assert mla_softmax_scale(24, rs) == pytest.approx(yarn_apply_mscale(rs, 24 ** -0.5), rel=1e-15)


# ---------------------------------------------------------------------------------------------- bad input

_cfg = MLAConfig(n_embd=4, n_head=2, kv_lora_rank=3, qk_nope_head_dim=2, qk_rope_head_dim=2, v_head_dim=3,
                 q_lora_rank=2)
_rng = np.random.default_rng(9)
_p = make_params(_rng, _cfg)
_x = rand(_rng, 1, 3, 4)
_cos, _sin = make_tables(_rng, _cfg, 3)
_out, _cache = mla_forward(_x, _p, _cfg, _cos, _sin)
_base = dict(n_embd=4, n_head=2, kv_lora_rank=3, qk_nope_head_dim=2, qk_rope_head_dim=2, v_head_dim=3)


def _with(name, value):
    return {**_p, name: value}


def _without(name):
    return {k: v for k, v in _p.items() if k != name}


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: MLAConfig(**{**_base, "qk_rope_head_dim": 3}), "^qk_rope_head_dim: RoPE rotates channel "
                 "pairs", id="rope-odd"),
    pytest.param(lambda: MLAConfig(**{**_base, "kv_lora_rank": 0}), "^kv_lora_rank:", id="kv-rank-zero"),
    pytest.param(lambda: MLAConfig(**{**_base, "q_lora_rank": 0}), "^q_lora_rank:", id="q-rank-zero"),
    pytest.param(lambda: MLAConfig(**{**_base, "q_lora_rank": 2.0}), "^q_lora_rank:", id="q-rank-float"),
    pytest.param(lambda: MLAConfig(**{**_base, "v_head_dim": True}), "^v_head_dim:", id="v-dim-bool"),
    pytest.param(lambda: MLAConfig(**{**_base, "qk_nope_head_dim": -1}), "^qk_nope_head_dim:", id="nope-negative"),
    pytest.param(lambda: MLAConfig(**{**_base, "n_head": 0}), "^n_head:", id="heads-zero"),
    pytest.param(lambda: MLAConfig(**{**_base, "attention_bias": 1}), "^attention_bias:", id="bias-int"),
    pytest.param(lambda: MLAConfig(**{**_base, "rope_interleave": "yes"}), "^rope_interleave:", id="interleave-str"),
    pytest.param(lambda: MLAConfig(**{**_base, "latent_norm_eps": 0.0}), "^latent_norm_eps:", id="eps-zero"),
    pytest.param(lambda: MLAConfig(**{**_base, "rope_scaling": {"rope_type": "yarn", "mscale_all_dim": 1.0}}),
                 "^rope_scaling.factor:", id="yarn-no-factor"),
    pytest.param(lambda: MLAConfig(**{**_base, "rope_scaling": {**YARN, "mscale_all_dim": "1"}}),
                 "^rope_scaling.mscale_all_dim:", id="mscale-str"),
    pytest.param(lambda: MLAConfig(**{**_base, "rope_scaling": [("factor", 2.0)]}), "^rope_scaling:",
                 id="scaling-list"),
    pytest.param(lambda: mla_forward(_x, _with("self_attn.kv_b_proj.weight", np.zeros((10, 4))), _cfg, _cos, _sin),
                 r"^self_attn.kv_b_proj.weight: expected shape \(10, 3\), got \(10, 4\)", id="kv-b-shape"),
    pytest.param(lambda: mla_forward(_x, _with("self_attn.q_b_proj.weight", np.zeros((6, 2))), _cfg, _cos, _sin),
                 r"^self_attn.q_b_proj.weight: expected shape \(8, 2\)", id="q-b-rows-Dqk"),
    pytest.param(lambda: mla_forward(_x, _with("self_attn.o_proj.weight", np.zeros((4, 4))), _cfg, _cos, _sin),
                 r"^self_attn.o_proj.weight: expected shape \(4, 6\)", id="o-shape-Dv"),
    pytest.param(lambda: mla_forward(_x, _with("self_attn.kv_a_layernorm.weight", np.ones(4)), _cfg, _cos, _sin),
                 r"^self_attn.kv_a_layernorm.weight: expected shape \(3,\)", id="kv-norm-shape"),
    pytest.param(lambda: mla_forward(_x, _with("self_attn.kv_a_proj_with_mqa.weight", np.zeros((5, 4),
                                                                                              dtype=np.float32)),
                                     _cfg, _cos, _sin),
                 "^self_attn.kv_a_proj_with_mqa.weight: expected dtype float64", id="dtype"),
    pytest.param(lambda: mla_forward(_x, _without("self_attn.q_a_layernorm.weight"), _cfg, _cos, _sin),
                 r"^p: missing parameter\(s\) \['self_attn.q_a_layernorm.weight'\]", id="missing"),
    pytest.param(lambda: mla_forward(_x, _with("self_attn.q_proj.weight", np.zeros((8, 4))), _cfg, _cos, _sin),
                 r"^p: unexpected parameter\(s\) \['self_attn.q_proj.weight'\] for q_lora_rank=2", id="q-proj-extra"),
    pytest.param(lambda: mla_forward(_x, _with("self_attn.o_proj.bias", np.zeros(4)), _cfg, _cos, _sin),
                 r"^p: unexpected parameter\(s\) \['self_attn.o_proj.bias'\]", id="bias-extra"),
    pytest.param(lambda: mla_forward(_x, _p, replace(_cfg, attention_bias=True), _cos, _sin),
                 r"^p: missing parameter\(s\) \['self_attn.q_a_proj.bias'", id="bias-missing"),
    pytest.param(lambda: mla_forward(_x, list(_p.values()), _cfg, _cos, _sin), "^p:", id="p-list"),
    pytest.param(lambda: mla_forward(_x, _p, dict(_base), _cos, _sin), "^config:", id="config-dict"),
    pytest.param(lambda: mla_forward(_x[0], _p, _cfg, _cos, _sin), "^x:", id="x-2d"),
    pytest.param(lambda: mla_forward(np.zeros((1, 3, 5)), _p, _cfg, _cos, _sin), "^x: expected shape", id="x-C"),
    pytest.param(lambda: mla_forward(_x, _p, _cfg, _cos[:2], _sin), "^cos: expected shape", id="cos-T"),
    pytest.param(lambda: mla_forward(_x, _p, _cfg, _cos, np.zeros((3, 2))), "^sin: expected shape", id="sin-R"),
    pytest.param(lambda: mla_forward(_x, _p, _cfg, _cos.astype(np.float32), _sin), "^cos: expected dtype",
                 id="cos-dtype"),
    pytest.param(lambda: mla_forward(_x, _p, _cfg, _cos, _sin, start=2), "^start: expected 0 without", id="start"),
    pytest.param(lambda: mla_forward(_x, _p, _cfg, _cos, _sin, kv=(np.zeros((1, 2, 5, 4)), np.zeros((1, 2, 5, 3)))),
                 "^kv: expected an MLAKVSlot", id="kv-tuple"),
    pytest.param(lambda: mla_forward(_x, _p, _cfg, _cos, _sin, kv=MLAKVSlot(np.zeros((1, 2, 5, 3)),
                                                                            np.zeros((1, 2, 5, 3)))),
                 r"^kv.k: expected shape \(1, 2, 'T_max', 4\)", id="kv-k-Dqk"),
    pytest.param(lambda: mla_forward(_x, _p, _cfg, _cos, _sin, kv=MLAKVSlot(np.zeros((1, 2, 5, 4)),
                                                                            np.zeros((1, 2, 5, 3))), start=3),
                 "^start: 3 [+] T=3 positions exceed the cache's capacity 5", id="kv-full"),
    pytest.param(lambda: mla_forward(_x, _p, _cfg, _cos, _sin, kv=MLAKVSlot(np.zeros((1, 2, 5, 4)),
                                                                            np.zeros((1, 2, 5, 3))), start=-1),
                 "^start:", id="kv-start-negative"),
    pytest.param(lambda: mla_backward(_out[:, :2], _cache), "^dout:", id="dout-shape"),
    pytest.param(lambda: mla_backward(_out.astype(np.float32), _cache), "^dout:", id="dout-dtype"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
