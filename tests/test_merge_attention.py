"""merge_attention_forward / merge_attention_backward: combining (out, lse) of disjoint key sets (split-KV)."""

import math

import numpy as np
import pytest
from attention_helpers import attention_problems
from helpers import gradcheck, rand
from hypothesis import given
from hypothesis import strategies as st

from npgpt.layers.merge_attention import merge_attention, merge_attention_backward, merge_attention_forward
from npgpt.layers.sdpa import sdpa_backward, sdpa_forward


def _merge_joint(out1, lse1, out2, lse2):
    out, lse, cache = merge_attention_forward(out1, lse1, out2, lse2)
    return np.concatenate([out.ravel(), lse.ravel()]), (cache, out.shape)


def _merge_joint_backward(d, packed):
    cache, shape = packed
    n = int(np.prod(shape))
    return merge_attention_backward(d[:n].reshape(shape), cache, d[n:].reshape(shape[:-1]))


@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 4), st.integers(1, 3)),
       seed=st.integers(0, 2**32 - 1))
def test_gradcheck(shape, seed):
    """dout1, dlse1, dout2, dlse2 match finite differences of [out, lse]."""
    rng = np.random.default_rng(seed)
    args = [rand(rng, *shape), rand(rng, *shape[:-1]), rand(rng, *shape), rand(rng, *shape[:-1])]
    gradcheck("merge_attention", _merge_joint, _merge_joint_backward, args, names=["out1", "lse1", "out2", "lse2"],
              rng=rng)


@given(shape=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 4), st.integers(1, 3)),
       seed=st.integers(0, 2**32 - 1))
def test_matches_loop(shape, seed):
    """Per row: lse = log(e^a + e^b) with math, out = (e^a out1 + e^b out2) / (e^a + e^b)."""
    rng = np.random.default_rng(seed)
    o1, l1, o2, l2 = rand(rng, *shape), rand(rng, *shape[:-1]), rand(rng, *shape), rand(rng, *shape[:-1])
    out, lse = merge_attention(o1, l1, o2, l2)
    for idx in np.ndindex(*shape[:-1]):
        a, b = float(l1[idx]), float(l2[idx])
        z = math.exp(a) + math.exp(b)
        assert math.isclose(lse[idx], math.log(z), rel_tol=1e-13, abs_tol=1e-13)
        for d in range(shape[-1]):
            ref = (math.exp(a) * o1[idx + (d,)] + math.exp(b) * o2[idx + (d,)]) / z
            assert math.isclose(out[idx + (d,)], ref, rel_tol=1e-12, abs_tol=1e-13)


def _split_options(prob, s):
    """The options of prob for keys [0, s) and [s, Tk): key padding, segments and bias split by columns;
    sinks go to the first split only (a sink is one key with value 0: it must be counted once)."""
    o = prob.opts
    a, b = {}, {}
    for name in ("scale", "softcap"):
        if name in o:
            a[name] = b[name] = o[name]
    if "key_padding_mask" in o:
        a["key_padding_mask"], b["key_padding_mask"] = o["key_padding_mask"][:, :s], o["key_padding_mask"][:, s:]
    if "q_segment_ids" in o:
        a["q_segment_ids"] = b["q_segment_ids"] = o["q_segment_ids"]
        a["k_segment_ids"], b["k_segment_ids"] = o["k_segment_ids"][:, :s], o["k_segment_ids"][:, s:]
    if prob.bias is not None:
        a["bias"], b["bias"] = prob.bias[..., :s], prob.bias[..., s:]
    if prob.sinks is not None:
        a["sinks"] = prob.sinks
    return a, b


@given(prob=attention_problems(dropout=False), data=st.data())
def test_merging_split_kv_equals_attention_over_all_keys(prob, data):
    """merge(sdpa(keys[:s]), sdpa(keys[s:])) equals sdpa(all keys), non-causal, with padding, segments, bias,
    softcap, scale and sinks; and the backward through merge (dlse into both sdpa backwards) equals the full
    backward."""
    Tk = prob.k.shape[2]
    if Tk < 2:
        return
    s = data.draw(st.integers(1, Tk - 1), label="split")
    for name in ("causal", "window"):
        prob.opts.pop(name, None)
    full = dict(prob.opts)
    if prob.sinks is not None:
        full["sinks"] = prob.sinks
    if prob.bias is not None:
        full["bias"] = prob.bias
    out, lse, cache = sdpa_forward(prob.q, prob.k, prob.v, **full)
    oa, la, ca = sdpa_forward(prob.q, prob.k[:, :, :s], prob.v[:, :, :s], **_split_options(prob, s)[0])
    ob, lb, cb = sdpa_forward(prob.q, prob.k[:, :, s:], prob.v[:, :, s:], **_split_options(prob, s)[1])
    out_m, lse_m, cm = merge_attention_forward(oa, la, ob, lb)
    np.testing.assert_allclose(out_m, out, rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(np.isneginf(lse_m), np.isneginf(lse))
    np.testing.assert_allclose(lse_m[np.isfinite(lse)], lse[np.isfinite(lse)], rtol=1e-13, atol=1e-13)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    dout, dlse = rand(rng, *out.shape), rand(rng, *lse.shape)
    g = sdpa_backward(dout, cache, dlse)
    d_oa, d_la, d_ob, d_lb = merge_attention_backward(dout, cm, dlse)
    ga, gb = sdpa_backward(d_oa, ca, d_la), sdpa_backward(d_ob, cb, d_lb)
    np.testing.assert_allclose(ga.dq + gb.dq, g.dq, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.concatenate([ga.dk, gb.dk], axis=2), g.dk, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.concatenate([ga.dv, gb.dv], axis=2), g.dv, rtol=1e-10, atol=1e-12)
    if prob.sinks is not None:
        np.testing.assert_allclose(ga.dsinks, g.dsinks, rtol=1e-10, atol=1e-12)
    if prob.bias is not None:
        np.testing.assert_allclose(np.concatenate([ga.dbias, gb.dbias], axis=-1), g.dbias, rtol=1e-10, atol=1e-12)


def test_empty_halves():
    """A side with lse -inf (it saw no key) contributes nothing; both empty gives out 0, lse -inf, zero grads."""
    rng = np.random.default_rng(0)
    o1, o2 = rand(rng, 3, 2), rand(rng, 3, 2)
    l1 = np.array([-np.inf, 0.3, -np.inf])
    l2 = np.array([0.5, -np.inf, -np.inf])
    out, lse, cache = merge_attention_forward(o1, l1, o2, l2)
    np.testing.assert_array_equal(out[0], o2[0])
    np.testing.assert_array_equal(out[1], o1[1])
    assert np.all(out[2] == 0.0) and lse[2] == -np.inf and lse[0] == 0.5 and lse[1] == 0.3
    d1, dl1, d2, dl2 = merge_attention_backward(rand(rng, 3, 2), cache, rand(rng, 3))
    assert not any(np.any(np.isnan(x)) for x in (d1, dl1, d2, dl2))
    assert np.all(d1[[0, 2]] == 0.0) and np.all(d2[[1, 2]] == 0.0) and dl1[2] == 0.0 and dl2[2] == 0.0


def test_float32():
    rng = np.random.default_rng(1)
    args = [rand(rng, 2, 3, 4).astype(np.float32), rand(rng, 2, 3).astype(np.float32),
            rand(rng, 2, 3, 4).astype(np.float32), rand(rng, 2, 3).astype(np.float32)]
    out, lse, cache = merge_attention_forward(*args)
    assert out.dtype == lse.dtype == np.float32
    assert all(g.dtype == np.float32 for g in merge_attention_backward(np.ones((2, 3, 4), np.float32), cache))


_r = np.random.default_rng(2)
_o, _l = rand(_r, 2, 3), rand(_r, 2)


@pytest.mark.parametrize("args, match", [
    pytest.param((_o.tolist(), _l, _o, _l), "^out1:", id="out1-list"),
    pytest.param((_o, _l[:1], _o, _l), "^lse1:", id="lse1-shape"),
    pytest.param((_o, _l, _o[:, :2], _l), "^out2:", id="out2-shape"),
    pytest.param((_o, _l, _o, _l.astype(np.float32)), "^lse2:", id="lse2-dtype"),
    pytest.param((_o, np.array([np.inf, 0.0]), _o, _l), "^lse1:", id="lse1-plus-inf"),
    pytest.param((_o, _l, _o, np.array([np.nan, 0.0])), "^lse2:", id="lse2-nan"),
])
def test_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        merge_attention_forward(*args)
