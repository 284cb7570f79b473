"""sdpa_tiled_forward / sdpa_tiled_backward: the online-softmax pair equals the dense pair for every option."""

import tracemalloc

import numpy as np
import pytest
from attention_helpers import attention_problems, joint, loop_sdpa
from helpers import gradcheck, rand
from hypothesis import given
from hypothesis import strategies as st

from npgpt.layers.sdpa import dropout_keep, sdpa_backward, sdpa_forward
from npgpt.layers.sdpa_tiled import SdpaTiledCache, sdpa_tiled_backward, sdpa_tiled_forward

block_sizes = st.integers(1, 4)


@given(prob=attention_problems(max_t=7), bq=block_sizes, bk=block_sizes, data=st.data())
def test_tiled_equals_dense(prob, bq, bk, data):
    """out, lse and every gradient equal the dense pair's to float64 round-off, for any option mix and blocks
    (blocks that do not divide T, blocks of one, blocks larger than T)."""
    kw = prob.kwargs()
    out, lse, cache = sdpa_forward(prob.q, prob.k, prob.v, **kw)
    out_t, lse_t, cache_t = sdpa_tiled_forward(prob.q, prob.k, prob.v, block_q=bq, block_k=bk, **kw)
    np.testing.assert_allclose(out_t, out, rtol=1e-13, atol=1e-14)
    np.testing.assert_array_equal(np.isneginf(lse_t), np.isneginf(lse))
    np.testing.assert_allclose(lse_t[np.isfinite(lse)], lse[np.isfinite(lse)], rtol=1e-13, atol=1e-14)
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    dout, dlse = rand(rng, *out.shape), rand(rng, *lse.shape)
    for name, a, b in zip(("dq", "dk", "dv", "dsinks", "dbias"), sdpa_tiled_backward(dout, cache_t, dlse),
                          sdpa_backward(dout, cache, dlse)):
        assert (a is None) == (b is None), name
        if a is not None:
            assert a.shape == b.shape, name
            np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13, err_msg=name)


@given(prob=attention_problems(max_t=4), bq=block_sizes, bk=block_sizes)
def test_gradcheck(prob, bq, bk):
    """The tiled backward (P recomputed from lse) matches finite differences of [out, lse]."""
    arrays, names = prob.diff_inputs()
    kw = dict(prob.kwargs(), block_q=bq, block_k=bk)
    f, g = joint(sdpa_tiled_forward, sdpa_tiled_backward, kw, len(arrays))
    gradcheck("sdpa_tiled", f, g, arrays, names=names, rng=np.random.default_rng(1))


@given(prob=attention_problems(max_t=6), bq=block_sizes, bk=block_sizes)
def test_matches_loop_reference(prob, bq, bk):
    """The tiled out and lse equal the independent loop reference too."""
    o = prob.opts
    keep = o.get("dropout_mask")
    if "dropout_seed" in o:
        B, Hq, Tq, _ = prob.q.shape
        keep = dropout_keep(o["dropout_seed"], o["dropout_p"], B, Hq, Tq, prob.k.shape[2])
    out, lse, _ = sdpa_tiled_forward(prob.q, prob.k, prob.v, block_q=bq, block_k=bk, **prob.kwargs())
    ref_out, ref_lse = loop_sdpa(prob, keep)
    np.testing.assert_allclose(out, ref_out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.where(np.isneginf(lse), 0.0, lse), np.where(np.isneginf(ref_lse), 0.0, ref_lse),
                               rtol=1e-12, atol=1e-12)


def test_fully_masked_rows():
    """All keys padded for a batch row: out 0, lse -inf, zero gradients, no NaN, in float32 as well."""
    rng = np.random.default_rng(3)
    for dtype in (np.float64, np.float32):
        q, k, v = (rand(rng, 2, 2, 5, 3).astype(dtype) for _ in range(3))
        kp = np.ones((2, 5), dtype=bool)
        kp[0] = False
        out, lse, cache = sdpa_tiled_forward(q, k, v, block_q=2, block_k=2, causal=True, key_padding_mask=kp)
        assert out.dtype == dtype and lse.dtype == dtype
        assert np.all(out[0] == 0.0) and np.all(np.isneginf(lse[0])) and np.all(np.isfinite(lse[1]))
        g = sdpa_tiled_backward(rand(rng, *out.shape).astype(dtype), cache, rand(rng, *lse.shape).astype(dtype))
        assert all(x.dtype == dtype and not np.any(np.isnan(x)) for x in g[:3])
        assert np.all(g.dq[0] == 0.0) and np.all(g.dk[0] == 0.0) and np.all(g.dv[0] == 0.0)


@pytest.mark.parametrize("block", [1, 2, 3, 8])
def test_minus_inf_sink_is_no_sink(block):
    """A -inf sink takes no probability: that head equals the same attention without sinks, dense and tiled, at
    any block size, with lse -inf on the rows that see no key (Tq > Tk, causal), dsinks 0 and no NaN."""
    rng = np.random.default_rng(11)
    q, k, v = rand(rng, 1, 2, 6, 4), rand(rng, 1, 1, 3, 4), rand(rng, 1, 1, 3, 4)
    dout, dlse = rand(rng, 1, 2, 6, 4), rand(rng, 1, 2, 6)
    sinks = np.array([-np.inf, 0.5])
    out, lse, cache = sdpa_forward(q, k, v, causal=True, sinks=sinks)
    g = sdpa_backward(dout, cache, dlse)
    out0, lse0, cache0 = sdpa_forward(q[:, :1], k, v, causal=True)  # head 0 alone, no sink
    g0 = sdpa_backward(dout[:, :1], cache0, dlse[:, :1])
    np.testing.assert_array_equal(out[:, :1], out0)
    np.testing.assert_array_equal(lse[:, :1], lse0)
    assert np.all(np.isneginf(lse[0, 0, :3])) and g.dsinks[0] == 0.0
    np.testing.assert_allclose(g.dq[:, :1], g0.dq, rtol=1e-14, atol=1e-15)
    out_t, lse_t, cache_t = sdpa_tiled_forward(q, k, v, block_q=block, block_k=block, causal=True, sinks=sinks)
    g_t = sdpa_tiled_backward(dout, cache_t, dlse)
    np.testing.assert_array_equal(np.isneginf(lse_t), np.isneginf(lse))
    np.testing.assert_allclose(lse_t, lse, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(out_t, out, rtol=1e-14, atol=1e-15)
    for a, b in zip(g_t[:4], g[:4]):  # dq, dk, dv, dsinks (no bias)
        assert not np.any(np.isnan(a))
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)


def _peak_bytes(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_never_builds_a_tq_by_tk_array():
    """At T = 512, one (B, H, T, T) float64 array is 2 MiB per head; the tiled forward + backward peak stays
    below a quarter of one (T, T) array per head while the dense pair's exceeds two of them."""
    rng = np.random.default_rng(0)
    B, H, T, D = 1, 2, 512, 8
    q, k, v = (rand(rng, B, H, T, D) for _ in range(3))
    dout = rand(rng, B, H, T, D)
    tt = B * H * T * T * 8  # bytes of one (B, H, T, T) float64 array

    def tiled():
        out, lse, cache = sdpa_tiled_forward(q, k, v, block_q=64, block_k=64, causal=True)
        sdpa_tiled_backward(dout, cache)

    def dense():
        out, lse, cache = sdpa_forward(q, k, v, causal=True)
        sdpa_backward(dout, cache)

    assert _peak_bytes(tiled) < tt / 4
    assert _peak_bytes(dense) > 2 * tt


_r = np.random.default_rng(2)
_q, _k, _v = rand(_r, 1, 2, 3, 4), rand(_r, 1, 1, 5, 4), rand(_r, 1, 1, 5, 2)


@pytest.mark.parametrize("kw, match", [
    pytest.param({"block_q": 0}, "^block_q:", id="block-q-zero"),
    pytest.param({"block_k": 0}, "^block_k:", id="block-k-zero"),
    pytest.param({"block_q": 2.0}, "^block_q:", id="block-q-float"),
    pytest.param({"block_k": True}, "^block_k:", id="block-k-bool"),
    pytest.param({"window": (2, -1)}, "^window:", id="window-negative"),
    pytest.param({"softcap": 0.0}, "^softcap:", id="softcap-zero"),
    pytest.param({"key_padding_mask": np.ones((1, 4), dtype=bool)}, "^key_padding_mask:", id="kpm-shape"),
])
def test_bad_arguments(kw, match):
    """Bad block sizes and options: one-line ValueError naming the argument."""
    with pytest.raises(ValueError, match=match):
        sdpa_tiled_forward(_q, _k, _v, **kw)


def test_bad_k():
    with pytest.raises(ValueError, match="^k:"):
        sdpa_tiled_forward(_q, rand(_r, 1, 3, 5, 4), rand(_r, 1, 3, 5, 2))
    _, _, cache = sdpa_tiled_forward(_q, _k, _v)
    with pytest.raises(ValueError, match="^dlse:"):
        sdpa_tiled_backward(rand(_r, 1, 2, 3, 2), cache, rand(_r, 1, 2, 2))


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("Tq, Tk", [(4, 4), (3, 6), (6, 3)])
def test_every_small_window_and_block(causal, Tq, Tk):
    """Exhaustively, windows (left, right) in {None, 0, 1, 2}^2 and blocks 1..3 x 1..3: tiled == dense, so no
    block is wrongly skipped or wrongly taken as fully visible."""
    rng = np.random.default_rng(11)
    q, k, v = rand(rng, 1, 1, Tq, 2), rand(rng, 1, 1, Tk, 2), rand(rng, 1, 1, Tk, 2)
    sides = [None, 0, 1, 2]
    for window in [(a, b) for a in sides for b in sides]:
        out, lse, _ = sdpa_forward(q, k, v, causal=causal, window=window)
        for bq in (1, 2, 3):
            for bk in (1, 2, 3):
                out_t, lse_t, _ = sdpa_tiled_forward(q, k, v, causal=causal, window=window, block_q=bq, block_k=bk)
                np.testing.assert_allclose(out_t, out, rtol=1e-13, atol=1e-14, err_msg=f"{window} {bq} {bk}")
                np.testing.assert_array_equal(np.isneginf(lse_t), np.isneginf(lse))


# ------------------------------------------------------------------------------------- used by the model

def _tiny(block):
    from npgpt.gpt2.config import GPTConfig
    return GPTConfig(vocab_size=11, block_size=9, n_layer=2, n_head=2, n_embd=8, attention_block=block)


@pytest.mark.parametrize("block", [1, 2, 4, 16])
def test_gpt_with_tiled_attention_equals_dense(block):
    """GPTConfig(attention_block=b) trains through sdpa_tiled: logits, loss and every gradient of the
    functional core equal the dense GPT's to float64 round-off, and the threaded GPT class agrees too."""
    from npgpt.gpt2.core import gpt_backward, gpt_forward, init_params, param_shapes
    from npgpt.gpt2.model import GPT
    dense, tiled = _tiny(None), _tiny(block)
    rng = np.random.default_rng(0)
    params = {k: np.zeros(s) for k, s in param_shapes(dense).items()}
    init_params(dense, rng, params)
    for p in params.values():
        p += 0.05 * rng.standard_normal(p.shape)  # non-degenerate biases and LayerNorm weights
    idx, targets = rng.integers(0, 11, (3, 9)), rng.integers(0, 11, (3, 9))
    logits, loss, cache = gpt_forward(params, dense, idx, targets)
    logits_t, loss_t, cache_t = gpt_forward(params, tiled, idx, targets)
    assert all(isinstance(c.attn.attention, SdpaTiledCache) for c in cache_t.blocks)
    np.testing.assert_allclose(logits_t, logits, rtol=1e-12, atol=1e-13)
    assert abs(float(loss_t) - float(loss)) < 1e-13
    g, g_t = gpt_backward(cache), gpt_backward(cache_t)
    for name in g:
        np.testing.assert_allclose(g_t[name], g[name], rtol=1e-10, atol=1e-13, err_msg=name)
    model = GPT(tiled, dtype=np.float64, threads=2)
    for name in params:
        model.params[name][...] = params[name]
    _, loss_m = model.forward(idx, targets)
    grads_m = model.backward()
    assert abs(float(loss_m) - float(loss)) < 1e-12
    for name in g:
        np.testing.assert_allclose(grads_m[name], g[name], rtol=1e-10, atol=1e-13, err_msg=name)


def test_generation_with_tiled_attention():
    """KV-cached decoding with attention_block set runs the tiled pair over the cache (Tq < Tk) and gives the
    dense model's tokens and logits."""
    from npgpt.gpt2.generate import KVCache, forward_cached, generate
    from npgpt.gpt2.core import init_params, param_shapes
    dense, tiled = _tiny(None), _tiny(2)
    rng = np.random.default_rng(1)
    params = {k: np.zeros(s) for k, s in param_shapes(dense).items()}
    init_params(dense, rng, params)
    prompt = rng.integers(0, 11, (2, 3))
    kv_d, kv_t = KVCache(dense, 2, np.dtype(np.float64)), KVCache(tiled, 2, np.dtype(np.float64))
    for chunk in (prompt, prompt[:, :1], prompt[:, 1:3]):
        logits_t, logits_d = forward_cached(params, tiled, chunk, kv_t), forward_cached(params, dense, chunk, kv_d)
        np.testing.assert_allclose(logits_t, logits_d, rtol=1e-12, atol=1e-13)
    out_d = generate(params, dense, prompt, 8, temperature=0.0)
    out_t = generate(params, tiled, prompt, 8, temperature=0.0)
    np.testing.assert_array_equal(out_t, out_d)


def test_attention_block_argument_checks():
    """attention_block must be None or a positive int: GPTConfig, self_attention_forward and block_forward
    say so in one line naming it; an old config dict without the key still loads."""
    from npgpt.gpt2.config import GPTConfig
    from npgpt.gpt2.block import block_forward
    from npgpt.layers import self_attention_forward
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="^attention_block:"):
            _tiny(bad)
    d = _tiny(None).to_dict()
    assert "attention_block" not in d and GPTConfig.from_dict(d) == _tiny(None)  # the dense config's old form
    assert GPTConfig.from_dict(_tiny(4).to_dict()) == _tiny(4)
    rng = np.random.default_rng(0)
    x = rand(rng, 1, 3, 4)
    with pytest.raises(ValueError, match="^attention_block:"):
        self_attention_forward(x, rand(rng, 4, 12), rand(rng, 12), rand(rng, 4, 4), rand(rng, 4), 2,
                               attention_block=0)
    from helpers import block_params
    with pytest.raises(ValueError, match="^attention_block:"):
        block_forward(x, block_params(rng, 4), 2, attention_block=1.5)
