"""rope_frequencies: every Hugging Face rope_type (default, linear, dynamic, yarn, longrope, llama3), as transformers.

Three layers of checks: the committed float64 goldens (tests/fixtures/rope_scaling_hf.json, made by
tests/fixtures/make_rope_scaling_fixture.py), the same numbers live from transformers when it is installed, and
properties that hold whatever transformers does (linear = positions / s, YaRN's limits, dynamic's base, ...).
"""

import importlib
import importlib.util
import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import batch_sizes, gradcheck, n_heads, rand, seeds, seq_lens
from hypothesis import given
from hypothesis import strategies as st

from npgpt.layers.rope import (
    SCALING_TYPES,
    rope_backward,
    rope_forward,
    rope_frequencies,
    rope_inv_freq,
    rope_softmax_scale,
    rope_tables,
)

FIXTURES = Path(__file__).parent / "fixtures"
GOLDEN = json.loads((FIXTURES / "rope_scaling_hf.json").read_text(encoding="utf-8"))
CASES = {c["name"]: c for c in GOLDEN["cases"]}
RTOL = 1e-15  # float64 vs transformers run in float64: pow may differ in the last bit (measured <= 3.9e-16)


def ours(case):
    """npgpt's (inv_freq, attention_factor) for a golden case, R = int(head_dim * partial_rotary_factor) as HF."""
    params = case["rope_parameters"]
    R = int(case["head_dim"] * params.get("partial_rotary_factor", 1.0))
    return rope_frequencies(R, params["rope_theta"], params, case["seq_len"],
                            max_position_embeddings=case["max_position_embeddings"])


def default_inv_freq(R, theta):
    return np.array([theta ** (-2.0 * i / R) for i in range(R // 2)])


def test_goldens_cover_every_type():
    assert {c["rope_parameters"]["rope_type"] for c in GOLDEN["cases"]} == set(SCALING_TYPES)


@pytest.mark.parametrize("name", list(CASES))
def test_matches_transformers_golden(name):
    """inv_freq to round-off and attention_factor exactly, against transformers' float64 numbers."""
    case = CASES[name]
    inv_freq, attention_factor = ours(case)
    assert inv_freq.dtype == np.float64 and inv_freq.shape == (len(case["inv_freq"]),)
    np.testing.assert_allclose(inv_freq, case["inv_freq"], rtol=RTOL, atol=0)
    assert attention_factor == pytest.approx(case["attention_factor"], rel=1e-15, abs=0)


def _fixture_module():
    spec = importlib.util.spec_from_file_location("make_rope_scaling_fixture",
                                                  FIXTURES / "make_rope_scaling_fixture.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", list(CASES))
def test_matches_transformers_live(name):
    """Live: transformers' init function (float64) now equals npgpt, and the committed golden is current."""
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    make = _fixture_module()
    assert make.CASES[name][2] == CASES[name]["rope_parameters"], "regenerate rope_scaling_hf.json"
    hf_inv_freq, hf_attention_factor = make.hf_frequencies(name)
    inv_freq, attention_factor = ours(CASES[name])
    np.testing.assert_allclose(inv_freq, hf_inv_freq, rtol=RTOL, atol=0)
    np.testing.assert_allclose(CASES[name]["inv_freq"], hf_inv_freq, rtol=RTOL, atol=0)
    assert attention_factor == pytest.approx(hf_attention_factor, rel=1e-15, abs=0)


@pytest.mark.parametrize("params, max_pos, positions", [
    ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}, 256, [0, 5, 63, 200]),
    ({"rope_type": "dynamic", "factor": 2.0}, 32, [0, 3, 20, 31]),  # within max_position_embeddings: default
    ({"rope_type": "dynamic", "factor": 2.0}, 32, [0, 3, 20, 47]),  # seq_len 48 > 32: the base grows
    ({"rope_type": "longrope", "short_factor": [1.0, 1.1, 1.2, 1.5], "long_factor": [1.0, 2.0, 4.0, 9.0],
      "original_max_position_embeddings": 16}, 64, [0, 3, 9, 15]),  # seq_len 16 = L: the short factors
    ({"rope_type": "longrope", "short_factor": [1.0, 1.1, 1.2, 1.5], "long_factor": [1.0, 2.0, 4.0, 9.0],
      "original_max_position_embeddings": 16}, 64, [0, 3, 9, 16]),  # seq_len 17 > L: the long factors
])
def test_matches_hf_rotary_module(params, max_pos, positions):
    """Live: LlamaRotaryEmbedding's cos/sin (float32, its dynamic/longrope update included) for one call equal
    rope_tables(positions, *rope_frequencies(..., seq_len=max(positions) + 1)), HF's half-split duplicated."""
    torch = pytest.importorskip("torch")
    tr = pytest.importorskip("transformers")
    from transformers.models.llama import modeling_llama as ml
    cfg = tr.LlamaConfig(hidden_size=16, num_attention_heads=2, head_dim=8, max_position_embeddings=max_pos,
                         rope_parameters={**params, "rope_theta": 10000.0})
    emb = ml.LlamaRotaryEmbedding(cfg)
    pos = np.array([positions])
    cos_hf, sin_hf = emb(torch.zeros(1, dtype=torch.float32), torch.from_numpy(pos))
    inv_freq, attention_factor = rope_frequencies(8, 10000.0, params, int(pos.max()) + 1,
                                                  max_position_embeddings=max_pos)
    cos, sin = rope_tables(pos, inv_freq, np.float32, attention_factor)  # (1, 1, T, 4)
    np.testing.assert_allclose(np.concatenate([cos, cos], -1)[:, 0], cos_hf.numpy(), rtol=0, atol=2e-6)
    np.testing.assert_allclose(np.concatenate([sin, sin], -1)[:, 0], sin_hf.numpy(), rtol=0, atol=2e-6)


def test_hf_dynamic_keeps_the_longest_frequencies_until_a_short_call():
    """Live, documents HF's state: after a call at seq_len 48, a call at 40 (> max_position_embeddings = 32)
    still uses seq_len 48's inv_freq; a call at 20 (< 32) resets to the default.  npgpt is stateless: pass the
    running maximum as seq_len to reproduce the first, any seq_len <= 32 for the second."""
    torch = pytest.importorskip("torch")
    tr = pytest.importorskip("transformers")
    from transformers.models.llama import modeling_llama as ml
    params = {"rope_type": "dynamic", "factor": 2.0}
    cfg = tr.LlamaConfig(hidden_size=16, num_attention_heads=2, head_dim=8, max_position_embeddings=32,
                         rope_parameters={**params, "rope_theta": 10000.0})
    emb = ml.LlamaRotaryEmbedding(cfg)
    for seq_len, as_if in ((48, 48), (40, 48), (20, 20), (40, 40)):
        emb(torch.zeros(1), torch.arange(seq_len)[None])
        want, _ = rope_frequencies(8, 10000.0, params, as_if, max_position_embeddings=32)
        np.testing.assert_allclose(emb.inv_freq.double().numpy(), want, rtol=1e-6)


# ---------------------------------------------------------------------------------------------- properties

@given(half=st.integers(1, 64), theta=st.sampled_from([10000.0, 500000.0, 1e6]))
def test_default_and_identity_scalings(half, theta):
    """default = theta^(-2i/R); linear 1, dynamic within max_position_embeddings, yarn 1 and llama3 with a huge
    original context all leave it unchanged."""
    R = 2 * half
    base, af = rope_frequencies(R, theta, None)
    np.testing.assert_allclose(base, default_inv_freq(R, theta), rtol=1e-14)
    assert af == 1.0 and np.array_equal(base, rope_inv_freq(R, theta))
    assert np.array_equal(rope_frequencies(R, theta, {"rope_type": "default"})[0], base)
    assert np.array_equal(rope_frequencies(R, theta, {"rope_type": "linear", "factor": 1})[0], base)
    if R > 2:
        for L in (None, 0, 1, 100, 4096):
            f, af = rope_frequencies(R, theta, {"rope_type": "dynamic", "factor": 8.0}, L,
                                     max_position_embeddings=4096)
            assert np.array_equal(f, base) and af == 1.0
    f, af = rope_frequencies(R, theta, {"rope_type": "yarn", "factor": 1.0, "original_max_position_embeddings": 512})
    np.testing.assert_allclose(f, base, rtol=1e-15)
    assert af == 1.0


@given(B=batch_sizes, H=n_heads, T=seq_lens, half=st.integers(1, 4), seed=seeds,
       factor=st.sampled_from([2.0, 4.0, 0.5]), interleaved=st.booleans())
def test_linear_is_positions_divided_by_factor(B, H, T, half, seed, factor, interleaved):
    rng = np.random.default_rng(seed)
    x = rand(rng, B, H, T, 2 * half)
    pos = rng.integers(0, 2000, size=T)
    scaled, _ = rope_forward(x, positions=pos * 4, scaling={"rope_type": "linear", "factor": factor},
                             interleaved=interleaved)
    angle = (pos * 4 / factor)[:, None] * rope_inv_freq(2 * half)  # (T, R/2)
    cos, sin = np.cos(angle), np.sin(angle)
    a, b = (slice(0, None, 2), slice(1, None, 2)) if interleaved else (slice(0, half), slice(half, None))
    np.testing.assert_allclose(scaled[..., a], x[..., a] * cos - x[..., b] * sin, rtol=1e-11, atol=1e-11)
    np.testing.assert_allclose(scaled[..., b], x[..., b] * cos + x[..., a] * sin, rtol=1e-11, atol=1e-11)


@given(half=st.integers(2, 64), factor=st.sampled_from([2.0, 4.0, 8.0, 40.0]),
       old=st.sampled_from([64, 512, 4096, 32768]), theta=st.sampled_from([10000.0, 150000.0, 1e6]),
       betas=st.sampled_from([(32, 1), (16, 2), (64, 4), (8, 8)]), truncate=st.booleans())
def test_yarn_limits(half, factor, old, theta, betas, truncate):
    """YaRN keeps the waves that turn >= beta_fast times in L positions (extrapolation), divides those that turn
    <= beta_slow times by s (interpolation), and in between takes inv_freq_i / s^(ramp_i), ramp rising 0 -> 1
    (a mix of the two, monotone); the attention factor is 0.1 ln s + 1."""
    R = 2 * half
    beta_fast, beta_slow = betas
    base = rope_inv_freq(R, theta)
    f, af = rope_frequencies(R, theta, {"rope_type": "yarn", "factor": factor, "beta_fast": beta_fast,
                                        "beta_slow": beta_slow, "truncate": truncate,
                                        "original_max_position_embeddings": old})
    assert af == pytest.approx(0.1 * math.log(factor) + 1.0, rel=1e-15)
    turns = old * base / (2 * math.pi)  # (R/2,) rotations of each pair over the original context
    fast = turns > beta_fast * (1 + 1e-9)
    slow = turns < beta_slow * (1 - 1e-9)
    np.testing.assert_allclose(f[fast], base[fast], rtol=1e-15)  # high frequencies: untouched
    np.testing.assert_allclose(f[slow], base[slow] / factor, rtol=1e-15)  # low frequencies: interpolated
    mix = (f - base / factor) / (base - base / factor)  # (R/2,) the share kept of the original, in [0, 1]
    assert np.all(mix >= -1e-12) and np.all(mix <= 1 + 1e-12)
    assert np.all(np.diff(mix) <= 1e-12)  # falls from extrapolation to interpolation along i
    assert np.all(np.diff(f) < 0)  # frequencies still fall with i


def test_yarn_attention_factor_variants():
    """attention_factor given wins; mscale and mscale_all_dim both set: their ratio (DeepSeek-V3's both 1: 1.0);
    only one of them set: ignored, as HF's `if mscale and mscale_all_dim`; s <= 1: 1."""
    y = {"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096}
    assert rope_frequencies(64, 1e4, {**y, "attention_factor": 0.5})[1] == 0.5
    assert rope_frequencies(64, 1e4, {**y, "mscale": 1.0, "mscale_all_dim": 1.0})[1] == 1.0
    ratio = (0.1 * 0.7 * math.log(40) + 1) / (0.1 * 1.4 * math.log(40) + 1)
    assert rope_frequencies(64, 1e4, {**y, "mscale": 0.7, "mscale_all_dim": 1.4})[1] == pytest.approx(ratio)
    assert rope_frequencies(64, 1e4, {**y, "mscale": 0.7})[1] == pytest.approx(0.1 * math.log(40) + 1)
    assert rope_frequencies(64, 1e4, {**y, "factor": 0.5})[1] == 1.0
    none = rope_frequencies(64, 1e4, {**y, "factor": None}, max_position_embeddings=4096 * 40)
    assert none[1] == rope_frequencies(64, 1e4, y)[1] and np.array_equal(none[0], rope_frequencies(64, 1e4, y)[0])


def test_softmax_scale_factor():
    """DeepSeek's fold of mscale_all_dim into the softmax scale: mscale(s, m_all)^2, else 1."""
    y = {"rope_type": "yarn", "factor": 40.0, "original_max_position_embeddings": 4096}
    assert rope_softmax_scale(None) == 1.0 and rope_softmax_scale(y) == 1.0
    assert rope_softmax_scale({**y, "mscale": 1.0, "mscale_all_dim": 1.0}) == pytest.approx(
        (0.1 * math.log(40) + 1) ** 2, rel=1e-15)
    assert rope_softmax_scale({"rope_type": "linear", "factor": 2.0}) == 1.0


@given(half=st.integers(2, 64), factor=st.sampled_from([1.5, 2.0, 8.0]), M=st.sampled_from([256, 4096]),
       extra=st.integers(1, 100000))
def test_dynamic_base(half, factor, M, extra):
    """NTK-aware: theta' = theta (s L / M - (s - 1))^(R / (R - 2)), so pair 0 keeps frequency 1 and the last pair's
    frequency is divided by exactly k = s L / M - (s - 1); every frequency falls as L grows."""
    R = 2 * half
    L = M + extra
    base = rope_inv_freq(R, 10000.0)
    f, af = rope_frequencies(R, 10000.0, {"rope_type": "dynamic", "factor": factor}, L, max_position_embeddings=M)
    k = factor * L / M - (factor - 1)
    assert af == 1.0 and f[0] == 1.0
    assert f[-1] == pytest.approx(base[-1] / k, rel=1e-12)
    longer, _ = rope_frequencies(R, 10000.0, {"rope_type": "dynamic", "factor": factor}, L + 1000,
                                 max_position_embeddings=M)
    assert np.all(longer[1:] < f[1:]) and np.all(f[1:] < base[1:])


def test_longrope_selection_and_attention_factor():
    """seq_len <= L (or None): inv_freq / short_factor; seq_len > L: / long_factor; attention factor
    sqrt(1 + ln s / ln L) with s = max_position_embeddings / L when factor is absent, 1 when s <= 1."""
    short, long = [1.0, 1.5, 2.0, 3.0], [1.0, 4.0, 16.0, 64.0]
    lr = {"rope_type": "longrope", "short_factor": short, "long_factor": long, "original_max_position_embeddings": 100}
    base = rope_inv_freq(8, 10000.0)
    for seq_len, want in ((None, short), (0, short), (1, short), (100, short), (101, long), (10**6, long)):
        f, af = rope_frequencies(8, 10000.0, lr, seq_len, max_position_embeddings=400)
        np.testing.assert_allclose(f, base / np.array(want), rtol=1e-15)
        assert af == pytest.approx(math.sqrt(1 + math.log(4) / math.log(100)), rel=1e-15)
    assert rope_frequencies(8, 10000.0, lr, max_position_embeddings=100)[1] == 1.0
    assert rope_frequencies(8, 10000.0, {**lr, "factor": 9.0}, max_position_embeddings=400)[1] == pytest.approx(
        math.sqrt(1 + math.log(9) / math.log(100)))


@given(half=st.integers(1, 8), seed=seeds, af=st.sampled_from([1.0, 0.75, 1.3465735902799727]))
def test_tables_scale_the_rotation(half, seed, af):
    """rope_tables times attention_factor: cos^2 + sin^2 = af^2, so |rope(x)| = af |x| on the rotated channels;
    af = 1 is the plain tables bit for bit."""
    rng = np.random.default_rng(seed)
    inv_freq = rope_inv_freq(2 * half, 10000.0)
    pos = rng.integers(0, 10**5, size=(2, 5))
    cos, sin = rope_tables(pos, inv_freq, np.float64, af)
    np.testing.assert_allclose(cos ** 2 + sin ** 2, af ** 2, rtol=1e-14)
    c1, s1 = rope_tables(pos, inv_freq, np.float64)
    if af == 1.0:
        angle = pos[:, None, :, None] * inv_freq
        assert np.array_equal(c1, np.cos(angle)) and np.array_equal(s1, np.sin(angle))
    np.testing.assert_allclose(cos, af * c1, rtol=1e-15)


@given(B=batch_sizes, H=n_heads, T=seq_lens, half=st.integers(1, 3), extra=st.integers(0, 2), seed=seeds,
       interleaved=st.booleans(), kind=st.sampled_from(["yarn", "longrope", "dynamic"]))
def test_scaled_rope_forward_norm_and_gradcheck(B, H, T, half, extra, seed, interleaved, kind):
    """rope_forward with a scaling that has an attention factor: norms scale by it, pass-through channels are
    untouched, and the unchanged backward still matches finite differences."""
    rng = np.random.default_rng(seed)
    R = 2 * half
    x = rand(rng, B, H, T, R + extra)
    scaling = {
        "yarn": {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 16},
        "longrope": {"rope_type": "longrope", "short_factor": [1.5] * half, "long_factor": [3.0] * half,
                     "original_max_position_embeddings": 16, "factor": 4.0},
        "dynamic": {"rope_type": "dynamic", "factor": 2.0},
    }[kind]
    if kind == "dynamic" and R == 2:
        R, x = 4, rand(rng, B, H, T, 4 + extra)
    positions = rng.integers(0, 40, size=(B, T))
    kw = {"positions": positions, "rotary_dim": R, "interleaved": interleaved, "scaling": scaling,
          "max_position_embeddings": 16}
    out, _ = rope_forward(x, **kw)
    _, af = rope_frequencies(R, 10000.0, scaling, int(positions.max()) + 1, max_position_embeddings=16)
    np.testing.assert_allclose(np.linalg.norm(out[..., :R], axis=-1), af * np.linalg.norm(x[..., :R], axis=-1),
                               rtol=1e-13)
    assert np.array_equal(out[..., R:], x[..., R:])
    gradcheck("rope", rope_forward, rope_backward, [x], names=["x"], rng=rng, kwargs=kw)


# ---------------------------------------------------------------------------------------------- validation

_y = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}
_lr = {"rope_type": "longrope", "short_factor": [1.0] * 4, "long_factor": [2.0] * 4,
       "original_max_position_embeddings": 64}
_M = {"max_position_embeddings": 64}


@pytest.mark.parametrize("args, kwargs, match", [
    pytest.param((8, 1e4, {"rope_type": "ntk"}), {}, "^rope_scaling: rope_type 'ntk' is not supported", id="unknown"),
    pytest.param((8, 1e4, ["linear"]), {}, "^rope_scaling: expected a mapping", id="not-a-mapping"),
    pytest.param((8, 1e4, {"rope_type": "linear"}), {}, "^rope_scaling: rope_type 'linear' needs 'factor'",
                 id="linear-no-factor"),
    pytest.param((8, 1e4, {"rope_type": "linear", "factor": 2, "low_freq_factor": 1}), {},
                 "^rope_scaling: key 'low_freq_factor' is not a field of rope_type 'linear'", id="unknown-key"),
    pytest.param((8, 1e4, {"rope_type": "yarn", "type": "linear", "factor": 2}), {},
                 "^rope_scaling.type: 'linear' contradicts rope_type 'yarn'", id="type-contradiction"),
    pytest.param((8, 1e4, {"rope_type": "linear", "factor": 2, "rope_theta": 5e5}), {},
                 "^rope_scaling.rope_theta: 500000.0 contradicts theta=10000.0", id="theta-contradiction"),
    pytest.param((8, 1e4, {"rope_type": "linear", "factor": 0}), {}, "^rope_scaling.factor:", id="factor-zero"),
    pytest.param((8, 1e4, {"rope_type": "linear", "factor": "2"}), {}, "^rope_scaling.factor:", id="factor-str"),
    pytest.param((8, 1e4, {"rope_type": "dynamic", "factor": 2}), {},
                 "^max_position_embeddings: rope_type 'dynamic' needs it", id="dynamic-no-max"),
    pytest.param((2, 1e4, {"rope_type": "dynamic", "factor": 2}), {"max_position_embeddings": 8},
                 "^rotary_dim: rope_type 'dynamic' needs rotary_dim > 2", id="dynamic-R2"),
    pytest.param((8, 1e4, {"rope_type": "yarn", "factor": 4.0}), {},
                 "^rope_scaling: rope_type 'yarn' needs 'original_max_position_embeddings'", id="yarn-no-old"),
    pytest.param((8, 1e4, {**_y, "factor": None}), {}, "^rope_scaling.factor: rope_type 'yarn' with factor None",
                 id="yarn-factor-none"),
    pytest.param((8, 1e4, {**_y, "beta_fast": 1, "beta_slow": 4}), {}, "^rope_scaling.beta_fast: expected >= beta_slow",
                 id="yarn-betas"),
    pytest.param((8, 1e4, {**_y, "beta_fast": -3}), {}, "^rope_scaling.beta_fast:", id="yarn-beta-negative"),
    pytest.param((8, 1e4, {**_y, "truncate": "yes"}), {}, "^rope_scaling.truncate:", id="yarn-truncate"),
    pytest.param((8, 1e4, {**_y, "attention_factor": 0.0}), {}, "^rope_scaling.attention_factor:",
                 id="yarn-attention-zero"),
    pytest.param((8, 1e4, {**_y, "mscale": float("nan"), "mscale_all_dim": 1}), {}, "^rope_scaling.mscale:",
                 id="yarn-mscale-nan"),
    pytest.param((8, 1e4, {**_y, "original_max_position_embeddings": -1}), {},
                 "^rope_scaling.original_max_position_embeddings:", id="yarn-old-negative"),
    pytest.param((8, 1e4, {**_lr, "short_factor": [1.0] * 3}), _M,
                 r"^rope_scaling.short_factor: expected 4 numbers \(rotary_dim / 2\), got 3", id="longrope-length"),
    pytest.param((8, 1e4, {**_lr, "long_factor": 2.0}), _M, "^rope_scaling.long_factor: expected a list",
                 id="longrope-scalar"),
    pytest.param((8, 1e4, {**_lr, "long_factor": [2.0, 2.0, 0.0, 2.0]}), _M, "^rope_scaling.long_factor:",
                 id="longrope-zero"),
    pytest.param((8, 1e4, {k: v for k, v in _lr.items() if k != "long_factor"}), _M,
                 "^rope_scaling: rope_type 'longrope' needs 'long_factor'", id="longrope-missing"),
    pytest.param((8, 1e4, {"rope_type": "llama3", "factor": 8, "low_freq_factor": 4, "high_freq_factor": 1,
                           "original_max_position_embeddings": 64}), {}, "^rope_scaling.high_freq_factor:",
                 id="llama3-bands"),
    pytest.param((7, 1e4, None), {}, "^rotary_dim:", id="rotary-odd"),
    pytest.param((8, 1.0, None), {}, "^theta:", id="theta-one"),
    pytest.param((8, 1e4, None, -1), {}, "^seq_len:", id="seq-len-negative"),
    pytest.param((8, 1e4, None, 2.0), {}, "^seq_len:", id="seq-len-float"),
    pytest.param((8, 1e4, None), {"max_position_embeddings": 0}, "^max_position_embeddings:", id="max-pos-zero"),
])
def test_bad_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        rope_frequencies(*args, **kwargs)


@pytest.mark.parametrize("kind", ["dynamic", "yarn", "longrope"])
def test_rope_inv_freq_refuses_what_needs_more(kind):
    """rope_inv_freq (the old entry point: no seq_len, no attention factor) keeps refusing these types."""
    with pytest.raises(ValueError, match=f"^rope_scaling: rope_type '{kind}' is not supported here"):
        rope_inv_freq(8, 1e4, {"rope_type": kind, "factor": 2.0})


def test_missing_original_context_is_max_position_embeddings():
    """As HF's standardize_rope_params: yarn / longrope / llama3 without original_max_position_embeddings use
    max_position_embeddings."""
    for params in (_y, _lr, {"rope_type": "llama3", "factor": 8, "low_freq_factor": 1, "high_freq_factor": 4,
                             "original_max_position_embeddings": 64}):
        without = {k: v for k, v in params.items() if k != "original_max_position_embeddings"}
        a = rope_frequencies(8, 1e4, params, 100, max_position_embeddings=64)
        b = rope_frequencies(8, 1e4, without, 100, max_position_embeddings=64)
        assert np.array_equal(a[0], b[0]) and a[1] == b[1]


# ---------------------------------------------------------------------------------------------- families

def _family(name):
    """(transformers config, module name, rotary class, how npgpt reads the config: theta, R, scaling, layout)."""
    import transformers as tr
    short = [1.0 + 0.05 * i for i in range(6)]
    long = [1.0 + 1.5 * i for i in range(6)]
    return {
        # Phi-3-mini-128k: longrope, original_max_position_embeddings at the top of config.json, "su" = longrope
        "phi3": (tr.Phi3Config(hidden_size=48, num_attention_heads=4, max_position_embeddings=256,
                               original_max_position_embeddings=32,
                               rope_scaling={"type": "su", "short_factor": short, "long_factor": long}),
                 "phi3", "Phi3RotaryEmbedding",
                 (10000.0, 12, {"rope_type": "longrope", "short_factor": short, "long_factor": long,
                                "original_max_position_embeddings": 32}, False)),
        # GPT-NeoX: rotary_pct (default 0.25) and rotary_emb_base
        "gpt_neox": (tr.GPTNeoXConfig(hidden_size=64, num_attention_heads=2, rotary_pct=0.25, rotary_emb_base=500.0),
                     "gpt_neox", "GPTNeoXRotaryEmbedding", (500.0, 8, None, False)),
        # Phi-2: partial_rotary_factor (default 0.5) at the top of config.json
        "phi": (tr.PhiConfig(hidden_size=64, num_attention_heads=2, partial_rotary_factor=0.4),
                "phi", "PhiRotaryEmbedding", (10000.0, 12, None, False)),
        # gpt-oss: no rope_scaling in config.json means YaRN s = 32 (truncate false), theta 150000
        "gpt_oss": (tr.GptOssConfig(hidden_size=64, num_attention_heads=2, head_dim=32, max_position_embeddings=64),
                    "gpt_oss", "GptOssRotaryEmbedding",
                    (150000.0, 32, {"rope_type": "yarn", "factor": 32.0, "beta_fast": 32.0, "beta_slow": 1.0,
                                    "truncate": False, "original_max_position_embeddings": 4096}, False)),
        # Cohere: pairs (2i, 2i + 1), theta default 500000
        "cohere": (tr.CohereConfig(hidden_size=64, num_attention_heads=2), "cohere", "CohereRotaryEmbedding",
                   (500000.0, 32, None, True)),
        # Qwen2.5 with YaRN switched on by the user (rope_scaling of an older config.json)
        "qwen2": (tr.Qwen2Config(hidden_size=64, num_attention_heads=2, max_position_embeddings=128, rope_theta=1e6,
                                 rope_scaling={"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}),
                  "qwen2", "Qwen2RotaryEmbedding",
                  (1e6, 32, {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}, False)),
    }[name]


@pytest.mark.parametrize("name", ["phi3", "gpt_neox", "phi", "gpt_oss", "cohere", "qwen2"])
@pytest.mark.parametrize("top", [20, 40, 100])
def test_family_rotary_matches_transformers(name, top):
    """Live: a family's rotary module + apply_rotary_pos_emb (float32) equals rope_forward with the settings its
    config selects (theta, R = int(D * partial factor), scaling, layout); positions up to `top` cross Phi-3's
    L = 32 (short -> long factors)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    config, module, rotary, (theta, R, scaling, interleaved) = _family(name)
    modeling = importlib.import_module(f"transformers.models.{module}.modeling_{module}")
    emb = getattr(modeling, rotary)(config)
    D = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rng = np.random.default_rng(top)
    q = rand(rng, 2, 3, 5, D).astype(np.float32)
    pos = np.sort(rng.integers(0, top, size=(2, 5)), axis=1)
    cos, sin = emb(torch.zeros(1, dtype=torch.float32), torch.from_numpy(pos))
    qr = q[..., :R] if name == "phi" else q  # PhiAttention splits off the pass-through channels itself
    want, _ = modeling.apply_rotary_pos_emb(torch.from_numpy(qr), torch.from_numpy(qr), cos, sin)
    if name == "phi":
        want = torch.cat([want, torch.from_numpy(q[..., R:])], dim=-1)
    got, _ = rope_forward(q, positions=pos, theta=theta, rotary_dim=R, interleaved=interleaved, scaling=scaling,
                          max_position_embeddings=config.max_position_embeddings)
    np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=2e-6 + 1e-7 * top)  # HF: float32 angles


def test_gemma3_layer_types_select_their_rope():
    """Live: Gemma 3's full-attention layers use rope_theta (default 1e6) with rope_scaling; its sliding layers
    rope_local_base_freq (default 1e4) without scaling."""
    torch = pytest.importorskip("torch")
    tr = pytest.importorskip("transformers")
    from transformers.models.gemma3 import modeling_gemma3 as mg
    config = tr.Gemma3TextConfig(hidden_size=64, num_attention_heads=2, head_dim=32, num_hidden_layers=2,
                                 layer_types=["sliding_attention", "full_attention"],
                                 rope_scaling={"rope_type": "linear", "factor": 8.0})
    emb = mg.Gemma3RotaryEmbedding(config)
    q = rand(np.random.default_rng(0), 1, 2, 4, 32).astype(np.float32)
    pos = np.array([[0, 7, 20, 50]])
    for layer_type, theta, scaling in (("full_attention", 1e6, {"rope_type": "linear", "factor": 8.0}),
                                       ("sliding_attention", 1e4, None)):
        cos, sin = emb(torch.zeros(1), torch.from_numpy(pos), layer_type)
        want, _ = mg.apply_rotary_pos_emb(torch.from_numpy(q), torch.from_numpy(q), cos, sin)
        got, _ = rope_forward(q, positions=pos, theta=theta, scaling=scaling)
        np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=1e-4)


def test_longrope_through_the_decoder_matches_transformers_generate(tmp_path):
    """Live, end to end: a tiny float64 Llama with longrope (L = 16), greedy from a 10-token prompt past L.
    With a KV cache both transformers and npgpt keep the prompt's keys rotated with the short factors once the
    long ones take over; without one both re-rotate everything.  The two runs differ (this seed shows it), and
    each equals its transformers counterpart."""
    torch = pytest.importorskip("torch")
    tr = pytest.importorskip("transformers")
    from npgpt.llama.generate import generate
    from npgpt.llama.pretrained import from_pretrained
    torch.manual_seed(1)  # seeds 1-3 of 0-7 tell the cached run from the uncached one; all 8 agree with HF
    params = {"rope_type": "longrope", "short_factor": [1.0, 1.2, 1.5, 2.0], "long_factor": [1.0, 3.0, 6.0, 12.0],
              "original_max_position_embeddings": 16, "rope_theta": 10000.0}
    cfg = tr.LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         rope_parameters=params, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    hf = tr.LlamaForCausalLM(cfg).double().eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.3)
    hf.save_pretrained(tmp_path)
    hf.generation_config.eos_token_id = None  # run all 20 steps
    ours = from_pretrained(tmp_path, dtype=np.float64)
    prompt = np.random.default_rng(5).integers(3, 50, size=(1, 10))
    runs = {}
    for use_cache in (True, False):
        with torch.no_grad():
            want = hf.generate(torch.from_numpy(prompt), max_new_tokens=20, do_sample=False, use_cache=use_cache)
        got = generate(ours.params, ours.config, prompt, 20, temperature=0.0, use_cache=use_cache)
        assert got.tolist() == want.tolist(), f"use_cache={use_cache}"
        runs[use_cache] = got.tolist()
    assert runs[True] != runs[False]  # the cache's short-rotated keys matter here
