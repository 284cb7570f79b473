"""sdpa_forward / sdpa_backward: general attention (GQA, masks, window, sinks, softcap, bias, dropout) and LSE."""

import math

import numpy as np
import pytest
from attention_helpers import Problem, attention_problems, joint, loop_sdpa, visible_keys
from helpers import gradcheck, rand
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import logsumexp

from npgpt.layers.attention import attention_backward, attention_forward
from npgpt.layers.sdpa import dropout_keep, sdpa_backward, sdpa_forward
from npgpt.layers.softmax import softmax_backward
from npgpt.layers.softmax import SoftmaxCache


def _keep(prob):
    """The keep mask the layer uses (explicit, or regenerated from the seed), or None."""
    o = prob.opts
    if "dropout_mask" in o:
        return o["dropout_mask"]
    if "dropout_seed" in o:
        B, Hq, Tq, _ = prob.q.shape
        return dropout_keep(o["dropout_seed"], o["dropout_p"], B, Hq, Tq, prob.k.shape[2])
    return None


@given(prob=attention_problems())
def test_forward_matches_loop_reference(prob):
    """out and lse equal a per-(b, h, i) loop over the visible keys with exact sums, for every option mix."""
    out, lse, _ = sdpa_forward(prob.q, prob.k, prob.v, **prob.kwargs())
    ref_out, ref_lse = loop_sdpa(prob, _keep(prob))
    assert out.shape == (*prob.q.shape[:3], prob.v.shape[3]) and lse.shape == prob.q.shape[:3]
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-12)
    assert np.array_equal(np.isneginf(lse), np.isneginf(ref_lse))
    np.testing.assert_allclose(lse[np.isfinite(lse)], ref_lse[np.isfinite(ref_lse)], rtol=1e-12, atol=1e-12)


@given(prob=attention_problems())
def test_gradcheck(prob):
    """dq, dk, dv, dsinks, dbias match finite differences of [out, lse] with random upstream gradients for both."""
    arrays, names = prob.diff_inputs()
    kw = {key: val for key, val in prob.kwargs().items()}
    f, g = joint(sdpa_forward, sdpa_backward, kw, len(arrays))
    gradcheck("sdpa", f, g, arrays, names=names, rng=np.random.default_rng(0))


@given(prob=attention_problems(max_t=6, dropout=False, options=False), data=st.data())
def test_gpt2_attention_is_the_causal_special_case(prob, data):
    """attention_forward (GPT-2's fast path, Tk >= Tq) equals sdpa_forward(causal=True) with Hq == Hkv, D == Dv."""
    B, Hq, Tq, D = prob.q.shape
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    Tk = Tq + data.draw(st.integers(0, 3), label="extra")
    q, k, v = rand(rng, B, Hq, Tq, D), rand(rng, B, Hq, Tk, D), rand(rng, B, Hq, Tk, D)
    out, lse, cache = sdpa_forward(q, k, v, causal=True)
    ref, ref_cache = attention_forward(q, k, v)
    np.testing.assert_allclose(out, ref, rtol=1e-13, atol=1e-14)
    dout = rand(rng, *out.shape)
    for a, b in zip(sdpa_backward(dout, cache)[:3], attention_backward(dout, ref_cache)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


@given(prob=attention_problems(dropout=False), data=st.data())
def test_gqa_equals_mha_on_repeated_kv(prob, data):
    """Hkv < Hq equals Hq == Hkv with each kv head repeated G times; dk, dv are the repeated heads' sums."""
    Hq, Hkv = prob.q.shape[1], prob.k.shape[1]
    G = Hq // Hkv
    kw = prob.kwargs()
    out, lse, cache = sdpa_forward(prob.q, prob.k, prob.v, **kw)
    k_rep, v_rep = np.repeat(prob.k, G, axis=1), np.repeat(prob.v, G, axis=1)
    out2, lse2, cache2 = sdpa_forward(prob.q, k_rep, v_rep, **kw)
    np.testing.assert_allclose(out, out2, rtol=1e-12, atol=1e-13)
    np.testing.assert_array_equal(np.isneginf(lse), np.isneginf(lse2))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    dout = rand(rng, *out.shape)
    g, g2 = sdpa_backward(dout, cache), sdpa_backward(dout, cache2)
    np.testing.assert_allclose(g.dq, g2.dq, rtol=1e-11, atol=1e-12)
    B, _, Tk, D = prob.k.shape
    np.testing.assert_allclose(g.dk, g2.dk.reshape(B, Hkv, G, Tk, D).sum(axis=2), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(g.dv, g2.dv.reshape(B, Hkv, G, Tk, -1).sum(axis=2), rtol=1e-11, atol=1e-12)


@given(prob=attention_problems(dropout=False, options=False), data=st.data())
def test_infinite_window_equals_plain_causal(prob, data):
    """window=(None, None), or a window wider than Tk, with causal equals causal alone; (None, 0) alone too."""
    Tk = prob.k.shape[2]
    ref, ref_lse, _ = sdpa_forward(prob.q, prob.k, prob.v, causal=True)
    for kw in ({"causal": True, "window": (None, None)}, {"causal": True, "window": (Tk, Tk)},
               {"window": (None, 0)}, {"window": (Tk + data.draw(st.integers(0, 3)), 0)}):
        out, lse, _ = sdpa_forward(prob.q, prob.k, prob.v, **kw)
        np.testing.assert_array_equal(out, ref)
        np.testing.assert_array_equal(lse, ref_lse)


@given(prob=attention_problems(dropout=False))
def test_lse_is_logsumexp_of_masked_scores(prob):
    """lse = scipy's logsumexp of the scores with -inf where a key is not visible (and the sink appended)."""
    _, lse, cache = sdpa_forward(prob.q, prob.k, prob.v, **prob.kwargs())
    B, Hq, Tq, D = prob.q.shape
    Tk = prob.k.shape[2]
    o = prob.opts
    s = np.einsum("bhid,bhjd->bhij", prob.q, np.repeat(prob.k, Hq // prob.k.shape[1], axis=1))
    s = s * o.get("scale", 1.0 / math.sqrt(D))
    if "softcap" in o:
        s = o["softcap"] * np.tanh(s / o["softcap"])
    if prob.bias is not None:
        s = s + prob.bias
    vis = np.zeros((B, Hq, Tq, Tk), dtype=bool)
    for b in range(B):
        for i in range(Tq):
            vis[b, :, i, visible_keys(o, b, i, Tq, Tk)] = True
    s = np.where(vis, s, -np.inf)
    if prob.sinks is not None:
        s = np.concatenate([s, np.broadcast_to(prob.sinks[None, :, None, None], (B, Hq, Tq, 1))], axis=-1)
    with np.errstate(divide="ignore"):
        ref = logsumexp(s, axis=-1)
    assert np.array_equal(np.isneginf(lse), np.isneginf(ref))
    np.testing.assert_allclose(lse[np.isfinite(lse)], ref[np.isfinite(ref)], rtol=1e-13, atol=1e-13)
    assert np.all(cache.probs[~vis] == 0.0)


@given(prob=attention_problems(), data=st.data())
def test_row_ignores_keys_it_cannot_see(prob, data):
    """Changing k, v at the keys query (b, i) cannot see leaves out[b, :, i] bit-for-bit unchanged, and with
    dout, dlse nonzero on that row only, those keys get exactly zero dk and dv."""
    B, Hq, Tq, _ = prob.q.shape
    Tk = prob.k.shape[2]
    b = data.draw(st.integers(0, B - 1), label="b")
    i = data.draw(st.integers(0, Tq - 1), label="i")
    hidden = sorted(set(range(Tk)) - set(visible_keys(prob.opts, b, i, Tq, Tk)))
    kw = prob.kwargs()
    out, lse, cache = sdpa_forward(prob.q, prob.k, prob.v, **kw)
    k2, v2 = prob.k.copy(), prob.v.copy()
    k2[b, :, hidden] = 7.0
    v2[b, :, hidden] = -7.0
    out2, lse2, _ = sdpa_forward(prob.q, k2, v2, **kw)
    np.testing.assert_array_equal(out2[b, :, i], out[b, :, i])
    np.testing.assert_array_equal(lse2[b, :, i], lse[b, :, i])
    rng = np.random.default_rng(0)
    dout, dlse = np.zeros(out.shape), np.zeros(lse.shape)
    dout[b, :, i] = rand(rng, Hq, out.shape[-1])
    dlse[b, :, i] = rand(rng, Hq)
    g = sdpa_backward(dout, cache, dlse)
    assert np.all(g.dk[b, :, hidden] == 0.0) and np.all(g.dv[b, :, hidden] == 0.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_fully_masked_rows_give_zero_not_nan(dtype):
    """A row with every key padded, and rows before the first key (Tq > Tk, causal): out 0, lse -inf, zero
    gradients, no NaN anywhere; with sinks the lse is the sink's logit and out is still 0."""
    rng = np.random.default_rng(5)
    q, k, v = (rand(rng, 2, 2, 4, 3).astype(dtype), rand(rng, 2, 2, 3, 3).astype(dtype),
               rand(rng, 2, 2, 3, 2).astype(dtype))
    kp = np.ones((2, 3), dtype=bool)
    kp[1] = False
    out, lse, cache = sdpa_forward(q, k, v, causal=True, key_padding_mask=kp)
    assert np.all(out[1] == 0.0) and np.all(np.isneginf(lse[1]))
    assert np.all(out[0, :, 0] == 0.0) and np.all(np.isneginf(lse[0, :, 0]))  # query 0 sits before key 0
    assert np.all(np.isfinite(lse[0, :, 1:]))
    g = sdpa_backward(rand(rng, *out.shape).astype(dtype), cache, rand(rng, *lse.shape).astype(dtype))
    for x in g[:3]:
        assert x.dtype == dtype and not np.any(np.isnan(x))
    assert np.all(g.dk[1] == 0.0) and np.all(g.dv[1] == 0.0) and np.all(g.dq[1] == 0.0)
    assert np.all(g.dq[0, :, 0] == 0.0)
    sinks = rand(rng, 2).astype(dtype)
    out, lse, cache = sdpa_forward(q, k, v, causal=True, key_padding_mask=kp, sinks=sinks)
    assert np.all(out[1] == 0.0)
    np.testing.assert_array_equal(lse[1], np.broadcast_to(sinks[:, None], (2, 4)))
    dlse = rand(rng, *lse.shape).astype(dtype)
    g = sdpa_backward(rand(rng, *out.shape).astype(dtype), cache, dlse)
    assert not any(np.any(np.isnan(x)) for x in g if x is not None)
    assert np.all(g.dq[1] == 0.0) and np.all(g.dk[1] == 0.0)


@given(prob=attention_problems(dropout=False))
def test_flash_form_equals_softmax_jacobian_form(prob):
    """P * (dP - rowsum(dout * out)) equals softmax_backward(dP) = P * (dP - rowsum(P * dP)) (no dropout, sinks)."""
    out, _, cache = sdpa_forward(prob.q, prob.k, prob.v, **{k: v for k, v in prob.kwargs().items() if k != "sinks"})
    rng = np.random.default_rng(1)
    dout = rand(rng, *out.shape)
    B, Hq, Tq, Tk = cache.probs.shape
    v_rep = np.repeat(prob.v, Hq // prob.v.shape[1], axis=1)
    dp = dout @ v_rep.swapaxes(-1, -2)  # (B, Hq, Tq, Tk)
    flash = cache.probs * (dp - np.sum(dout * out, axis=-1, keepdims=True))
    jac = softmax_backward(dp, SoftmaxCache(cache.probs))
    np.testing.assert_allclose(flash, jac, rtol=1e-11, atol=1e-12)


def _splitmix64(x):
    m = (1 << 64) - 1
    x = (x + 0x9E3779B97F4A7C15) & m
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & m
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & m
    return x ^ (x >> 31)


def test_dropout_keep_matches_python_integers():
    """dropout_keep(seed, ...)[b, h, i, j] is (splitmix64(index ^ splitmix64(seed)) >> 11) / 2^53 >= p, in
    Python's exact integers; any block equals the same slice of the whole mask."""
    seed, p, B, H, Tq, Tk = 12345, 0.3, 2, 3, 8, 16
    keep = dropout_keep(seed, p, B, H, Tq, Tk)
    for (b, h, i, j), kept in np.ndenumerate(keep):
        idx = ((b * H + h) * Tq + i) * Tk + j
        u = (_splitmix64(idx ^ _splitmix64(seed)) >> 11) / 2.0 ** 53
        assert kept == (u >= p)
    np.testing.assert_array_equal(dropout_keep(seed, p, B, H, Tq, Tk, 1, 3, 2, 5), keep[:, :, 1:3, 2:5])
    big = dropout_keep(7, 0.25, 2, 4, 64, 64)
    assert abs(big.mean() - 0.75) < 0.01


@given(prob=attention_problems(dropout=False))
def test_dropout_seed_equals_its_explicit_mask(prob):
    """dropout_seed=s gives what dropout_mask=dropout_keep(s, ...) gives; the cache holds the scaled mask."""
    B, Hq, Tq, _ = prob.q.shape
    Tk = prob.k.shape[2]
    kw = prob.kwargs()
    out, lse, cache = sdpa_forward(prob.q, prob.k, prob.v, dropout_p=0.4, dropout_seed=3, **kw)
    mask = dropout_keep(3, 0.4, B, Hq, Tq, Tk)
    out2, lse2, _ = sdpa_forward(prob.q, prob.k, prob.v, dropout_p=0.4, dropout_mask=mask, **kw)
    np.testing.assert_array_equal(out, out2)
    np.testing.assert_array_equal(lse, lse2)
    np.testing.assert_array_equal(cache.keep, mask / 0.6)
    out0, lse0, _ = sdpa_forward(prob.q, prob.k, prob.v, **kw)
    np.testing.assert_array_equal(lse, lse0)  # dropout never touches the normaliser


@given(prob=attention_problems())
def test_inputs_unmodified(prob):
    """Neither forward nor backward writes into q, k, v, sinks, bias, masks, dout or dlse."""
    kw = prob.kwargs()
    before = [a.copy() for a in (prob.q, prob.k, prob.v)] + [val.copy() for val in kw.values()
                                                              if isinstance(val, np.ndarray)]
    out, lse, cache = sdpa_forward(prob.q, prob.k, prob.v, **kw)
    dout, dlse = np.ones(out.shape) * 0.3, np.ones(lse.shape) * 0.2
    sdpa_backward(dout, cache, dlse)
    after = [prob.q, prob.k, prob.v] + [val for val in kw.values() if isinstance(val, np.ndarray)]
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)
    assert np.all(dout == 0.3) and np.all(dlse == 0.2)


@given(prob=attention_problems())
def test_float32_throughout(prob):
    """float32 inputs give float32 out, lse and every gradient, close to the float64 result."""
    kw = prob.kwargs()
    kw32 = {key: (val.astype(np.float32) if isinstance(val, np.ndarray) and val.dtype == np.float64 else val)
            for key, val in kw.items()}
    q, k, v = (a.astype(np.float32) for a in (prob.q, prob.k, prob.v))
    out, lse, cache = sdpa_forward(q, k, v, **kw32)
    assert out.dtype == np.float32 and lse.dtype == np.float32
    ref, _, _ = sdpa_forward(prob.q, prob.k, prob.v, **kw)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    g = sdpa_backward(np.ones(out.shape, np.float32), cache, np.ones(lse.shape, np.float32))
    for x in g:
        assert x is None or (x.dtype == np.float32 and np.all(np.isfinite(x)))


_r = np.random.default_rng(2)
_q, _k, _v = rand(_r, 2, 4, 3, 5), rand(_r, 2, 2, 6, 5), rand(_r, 2, 2, 6, 7)
_out, _lse, _cache = sdpa_forward(_q, _k, _v, causal=True)


@pytest.mark.parametrize("kw, match", [
    pytest.param({"q": _q.tolist()}, "^q:", id="q-list"),
    pytest.param({"q": _q[0]}, "^q:", id="q-3d"),
    pytest.param({"q": _q.astype(np.int64)}, "^q:", id="q-int"),
    pytest.param({"k": _k.astype(np.float32)}, "^k:", id="k-dtype"),
    pytest.param({"k": rand(_r, 2, 3, 6, 5)}, "^k:", id="hq-not-multiple-of-hkv"),
    pytest.param({"k": rand(_r, 1, 2, 6, 5)}, "^k:", id="k-batch"),
    pytest.param({"k": rand(_r, 2, 2, 6, 4)}, "^k:", id="k-head-size"),
    pytest.param({"v": rand(_r, 2, 2, 5, 7)}, "^v:", id="v-tk"),
    pytest.param({"v": rand(_r, 1, 2, 6, 7)}, "^v:", id="v-batch"),
    pytest.param({"causal": 1}, "^causal:", id="causal-int"),
    pytest.param({"scale": "x"}, "^scale:", id="scale-str"),
    pytest.param({"scale": math.inf}, "^scale:", id="scale-inf"),
    pytest.param({"window": (-1, 2)}, "^window:", id="window-negative"),
    pytest.param({"window": (1, 2, 3)}, "^window:", id="window-triple"),
    pytest.param({"window": (1.5, 2)}, "^window:", id="window-float"),
    pytest.param({"key_padding_mask": np.ones((2, 5), dtype=bool)}, "^key_padding_mask:", id="kpm-shape"),
    pytest.param({"key_padding_mask": np.ones((2, 6))}, "^key_padding_mask:", id="kpm-dtype"),
    pytest.param({"q_segment_ids": np.zeros((2, 3), dtype=int)}, "^k_segment_ids:", id="only-q-segments"),
    pytest.param({"q_segment_ids": np.zeros((2, 3)), "k_segment_ids": np.zeros((2, 6), dtype=int)},
                 "^q_segment_ids:", id="segments-float"),
    pytest.param({"q_segment_ids": np.zeros((2, 4), dtype=int), "k_segment_ids": np.zeros((2, 6), dtype=int)},
                 "^q_segment_ids:", id="segments-shape"),
    pytest.param({"sinks": rand(_r, 2)}, "^sinks:", id="sinks-shape"),
    pytest.param({"sinks": rand(_r, 4).astype(np.float32)}, "^sinks:", id="sinks-dtype"),
    pytest.param({"sinks": np.array([0.0, np.inf, 0.0, 0.0])}, "^sinks: .*head 1", id="sinks-inf"),
    pytest.param({"sinks": np.array([0.0, 0.0, np.nan, 0.0])}, "^sinks: .*head 2", id="sinks-nan"),
    pytest.param({"softcap": 0.0}, "^softcap:", id="softcap-zero"),
    pytest.param({"softcap": -1.0}, "^softcap:", id="softcap-negative"),
    pytest.param({"bias": rand(_r, 2, 3, 3, 6)}, "^bias:", id="bias-heads"),
    pytest.param({"bias": rand(_r, 1, 1, 3, 5)}, "^bias:", id="bias-tk"),
    pytest.param({"bias": rand(_r, 3, 6)}, "^bias:", id="bias-2d"),
    pytest.param({"dropout_p": 1.0, "dropout_seed": 1}, "^dropout_p:", id="dropout-p-one"),
    pytest.param({"dropout_p": 0.1}, "^dropout_p:", id="dropout-without-source"),
    pytest.param({"dropout_p": 0.1, "dropout_seed": -1}, "^dropout_seed:", id="dropout-seed-negative"),
    pytest.param({"dropout_p": 0.1, "dropout_mask": np.ones((2, 4, 3, 6))}, "^dropout_mask:",
                 id="dropout-mask-dtype"),
    pytest.param({"dropout_p": 0.1, "dropout_mask": np.ones((2, 2, 3, 6), dtype=bool)}, "^dropout_mask:",
                 id="dropout-mask-shape"),
    pytest.param({"dropout_p": 0.1, "dropout_seed": 1, "dropout_mask": np.ones((2, 4, 3, 6), dtype=bool)},
                 "^dropout_mask:", id="dropout-both"),
])
def test_bad_arguments(kw, match):
    """Bad arguments raise a one-line ValueError that starts with the argument's name."""
    args = {"q": _q, "k": _k, "v": _v}
    for name in ("q", "k", "v"):
        if name in kw:
            args[name] = kw.pop(name)
    with pytest.raises(ValueError, match=match) as err:
        sdpa_forward(args["q"], args["k"], args["v"], **kw)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: sdpa_backward(_out[..., :2], _cache), "^dout:", id="dout-shape"),
    pytest.param(lambda: sdpa_backward(_out.astype(np.float32), _cache), "^dout:", id="dout-dtype"),
    pytest.param(lambda: sdpa_backward(_out, _cache, _lse[..., :1]), "^dlse:", id="dlse-shape"),
    pytest.param(lambda: sdpa_backward(_out, _cache, _lse.tolist()), "^dlse:", id="dlse-list"),
])
def test_bad_backward_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_problem_defaults_are_plain_attention():
    """A Problem with no options is non-causal softmax attention (the strategy's baseline is meaningful)."""
    rng = np.random.default_rng(0)
    prob = Problem(rand(rng, 1, 1, 2, 2), rand(rng, 1, 1, 3, 2), rand(rng, 1, 1, 3, 2))
    out, _, _ = sdpa_forward(prob.q, prob.k, prob.v)
    w = np.exp(prob.q[0, 0] @ prob.k[0, 0].T / math.sqrt(2))
    np.testing.assert_allclose(out[0, 0], (w / w.sum(1, keepdims=True)) @ prob.v[0, 0], rtol=1e-13)


def test_empty_windows():
    """Queries whose window lies entirely before key 0 (Tq > Tk, bottom-right aligned) see nothing: out 0, lse
    -inf, zero gradients; the others see exactly the keys of their window."""
    rng = np.random.default_rng(7)
    q, k, v = rand(rng, 1, 2, 5, 3), rand(rng, 1, 2, 2, 3), rand(rng, 1, 2, 2, 2)
    out, lse, cache = sdpa_forward(q, k, v, window=(0, 0))  # query i sits at key position i - 3
    assert np.all(np.isneginf(lse[..., :3])) and np.all(out[..., :3, :] == 0.0)
    np.testing.assert_allclose(out[..., 3, :], v[..., 0, :], rtol=1e-15)  # one key: weight exactly 1
    np.testing.assert_allclose(out[..., 4, :], v[..., 1, :], rtol=1e-15)
    g = sdpa_backward(rand(rng, *out.shape), cache, rand(rng, *lse.shape))
    assert np.all(g.dq[..., :3, :] == 0.0) and not np.any(np.isnan(g.dk))


def test_one_key():
    """Tk = 1: every query's output is v, its lse is its score, and dq, dk are exactly 0 (softmax of one
    entry is constant) unless dlse is given."""
    rng = np.random.default_rng(8)
    q, k, v = rand(rng, 2, 3, 4, 2), rand(rng, 2, 3, 1, 2), rand(rng, 2, 3, 1, 5)
    out, lse, cache = sdpa_forward(q, k, v, scale=0.7)
    np.testing.assert_allclose(out, np.broadcast_to(v, out.shape), rtol=1e-15)
    np.testing.assert_allclose(lse, 0.7 * (q @ k.swapaxes(-1, -2))[..., 0], rtol=1e-14)
    g = sdpa_backward(rand(rng, *out.shape), cache)
    np.testing.assert_allclose(g.dq, 0.0, atol=1e-15)
    dlse = rand(rng, *lse.shape)
    g = sdpa_backward(np.zeros(out.shape), cache, dlse)
    np.testing.assert_allclose(g.dq, 0.7 * dlse[..., None] * k, rtol=1e-13)


def test_causal_options_equal_the_checked_ones():
    """causal_options(D) is what check_options gives for causal=True (for kernel callers: GPT, Llama)."""
    from npgpt.layers.sdpa import causal_options, check_options
    q, k = np.zeros((1, 2, 3, 5)), np.zeros((1, 1, 4, 5))
    assert causal_options(5) == check_options(q, k, causal=True)
    assert causal_options(5, 0.5) == check_options(q, k, causal=True, scale=0.5)
