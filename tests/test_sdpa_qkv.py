"""sdpa_qkv_forward / sdpa_qkv_backward: attention on llm.c's fused (B, T, 3C) qkv layout."""

import math

import numpy as np
import pytest
from helpers import gradcheck, rand
from hypothesis import given
from hypothesis import strategies as st

from npgpt.layers.sdpa import sdpa_forward
from npgpt.layers.sdpa_qkv import sdpa_qkv_backward, sdpa_qkv_forward

shapes = st.tuples(st.integers(1, 2), st.integers(1, 4), st.integers(1, 3), st.integers(1, 3))  # B, T, H, D


def _loop_llmc(qkv, H, causal):
    """llm.c's attention_forward written out: q at column h D + d, k at C + h D + d, v at 2C + h D + d."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    D = C // H
    out = np.zeros((B, T, C))
    for b in range(B):
        for t in range(T):
            for h in range(H):
                keys = range(t + 1) if causal else range(T)
                s = [math.fsum(qkv[b, t, h * D + d] * qkv[b, u, C + h * D + d] for d in range(D)) / math.sqrt(D)
                     for u in keys]
                m = max(s)
                e = [math.exp(x - m) for x in s]
                z = math.fsum(e)
                for d in range(D):
                    out[b, t, h * D + d] = math.fsum(w / z * qkv[b, u, 2 * C + h * D + d] for w, u in zip(e, keys))
    return out


@given(shape=shapes, causal=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_matches_llmc_loop(shape, causal, seed):
    """out (B, T, C) equals llm.c's per-(b, t, h) loop over the fused layout."""
    B, T, H, D = shape
    qkv = rand(np.random.default_rng(seed), B, T, 3 * H * D)
    out, lse, _ = sdpa_qkv_forward(qkv, H, causal=causal)
    assert out.shape == (B, T, H * D) and lse.shape == (B, H, T)
    np.testing.assert_allclose(out, _loop_llmc(qkv, H, causal), rtol=1e-12, atol=1e-12)


@given(shape=shapes, seed=st.integers(0, 2**32 - 1), sinks=st.booleans(), softcap=st.booleans())
def test_gradcheck(shape, seed, sinks, softcap):
    """dqkv (and dsinks) match finite differences of [out, lse], causal."""
    B, T, H, D = shape
    rng = np.random.default_rng(seed)
    qkv = rand(rng, B, T, 3 * H * D)
    s = rand(rng, H) if sinks else None
    cap = 1.5 if softcap else None

    def f(qkv, *rest):
        out, lse, cache = sdpa_qkv_forward(qkv, H, causal=True, softcap=cap, sinks=rest[0] if rest else None)
        return np.concatenate([out.ravel(), lse.ravel()]), (cache, out.shape, lse.shape)

    def g(d, packed):
        cache, o_shape, l_shape = packed
        n = int(np.prod(o_shape))
        gr = sdpa_qkv_backward(d[:n].reshape(o_shape), cache, d[n:].reshape(l_shape))
        return (gr.dqkv, gr.dsinks) if sinks else gr.dqkv

    args = [qkv, s] if sinks else [qkv]
    gradcheck("sdpa_qkv", f, g, args, names=["qkv", "sinks"][:len(args)], rng=rng)



@given(shape=shapes, seed=st.integers(0, 2**32 - 1), per_batch=st.booleans())
def test_gradcheck_with_bias(shape, seed, per_batch):
    """dqkv and dbias match finite differences of [out, lse] with an additive bias (B or 1, H, T, T)."""
    B, T, H, D = shape
    rng = np.random.default_rng(seed)
    qkv = rand(rng, B, T, 3 * H * D)
    bias = rand(rng, B if per_batch else 1, H, T, T)

    def f(qkv, bias):
        out, lse, cache = sdpa_qkv_forward(qkv, H, causal=True, bias=bias)
        return np.concatenate([out.ravel(), lse.ravel()]), (cache, out.shape, lse.shape)

    def g(d, packed):
        cache, o_shape, l_shape = packed
        n = int(np.prod(o_shape))
        gr = sdpa_qkv_backward(d[:n].reshape(o_shape), cache, d[n:].reshape(l_shape))
        return gr.dqkv, gr.dbias

    gradcheck("sdpa_qkv", f, g, [qkv, bias], names=["qkv", "bias"], rng=rng)

@given(shape=shapes, seed=st.integers(0, 2**32 - 1))
def test_equals_split_heads_then_sdpa(shape, seed):
    """The same result as splitting the heads by hand and calling sdpa_forward with window and padding."""
    B, T, H, D = shape
    rng = np.random.default_rng(seed)
    qkv = rand(rng, B, T, 3 * H * D)
    kp = rng.random((B, T)) < 0.8
    q, k, v = (qkv[..., i * H * D:(i + 1) * H * D].reshape(B, T, H, D).transpose(0, 2, 1, 3) for i in range(3))
    ref, ref_lse, _ = sdpa_forward(q, k, v, causal=True, window=(2, None), key_padding_mask=kp)
    out, lse, _ = sdpa_qkv_forward(qkv, H, causal=True, window=(2, None), key_padding_mask=kp)
    np.testing.assert_array_equal(out, ref.transpose(0, 2, 1, 3).reshape(B, T, H * D))
    np.testing.assert_array_equal(lse, ref_lse)


def test_float32_and_purity():
    rng = np.random.default_rng(0)
    qkv = rand(rng, 2, 3, 12).astype(np.float32)
    before = qkv.copy()
    out, lse, cache = sdpa_qkv_forward(qkv, 2, causal=True)
    dout = np.ones(out.shape, np.float32)
    g = sdpa_qkv_backward(dout, cache)
    assert out.dtype == lse.dtype == g.dqkv.dtype == np.float32 and g.dqkv.shape == qkv.shape
    np.testing.assert_array_equal(qkv, before)
    assert np.all(dout == 1.0)


_qkv = rand(np.random.default_rng(3), 2, 3, 12)


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: sdpa_qkv_forward(_qkv[0], 2), "^qkv:", id="qkv-2d"),
    pytest.param(lambda: sdpa_qkv_forward(_qkv[..., :10], 2), "^qkv:", id="qkv-not-3c"),
    pytest.param(lambda: sdpa_qkv_forward(_qkv, 3), "^qkv:", id="c-not-multiple-of-heads"),
    pytest.param(lambda: sdpa_qkv_forward(_qkv, 0), "^n_head:", id="n-head-zero"),
    pytest.param(lambda: sdpa_qkv_forward(_qkv, 2, softcap=-1.0), "^softcap:", id="softcap"),
    pytest.param(lambda: sdpa_qkv_backward(np.ones((2, 3, 3)), sdpa_qkv_forward(_qkv, 2)[2]), "^dout:",
                 id="dout-shape"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
