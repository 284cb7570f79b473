"""attention_chunks_forward / attention_chunks_backward: causal attention computed by chunks of queries."""

import numpy as np
import pytest
from helpers import (assert_float32_throughout, assert_matches_reference, batch_sizes, forward_backward_pure,
                     gradcheck, head_dims, n_heads, rand, ref_attention, seeds)
from hypothesis import given
from hypothesis import strategies as st

from npgpt.layers import attention_backward, attention_forward
from npgpt.layers import attention_chunks_backward, attention_chunks_forward
from npgpt.layers import sdpa_backward, sdpa_forward
from npgpt.layers.attention_chunks import AttentionChunksCache, _attention_chunks_backward, _attention_chunks_forward
from npgpt.layers.sdpa import SdpaCache, causal_options

shapes = st.tuples(batch_sizes, n_heads, st.integers(1, 7), head_dims)  # (B, H, Tq, D)
extra_keys = st.integers(0, 3)  # Tk - Tq: 0 is training's square case, > 0 a KV cache's earlier positions
chunks = st.integers(1, 8)  # 1 (a chunk per query) up to more than Tq (one chunk: the plain pair)


def _qkv(rng, shape, extra=0):
    B, H, Tq, D = shape
    return [rand(rng, B, H, Tq, D), rand(rng, B, H, Tq + extra, D), rand(rng, B, H, Tq + extra, D)]


@given(shape=shapes, extra=extra_keys, chunk=chunks, seed=seeds)
def test_gradcheck(shape, extra, chunk, seed):
    """dq (B, H, Tq, D), dk and dv (B, H, Tk, D) match finite differences, whatever the chunking."""
    rng = np.random.default_rng(seed)
    gradcheck("attention_chunks", attention_chunks_forward, attention_chunks_backward, _qkv(rng, shape, extra),
              names=["q", "k", "v"], rng=rng, kwargs={"chunk": chunk})


@given(shape=shapes, chunk=chunks, seed=seeds)
def test_forward_matches_reference(shape, chunk, seed):
    """Equals the loop over queries t with a softmax over keys 0..t only."""
    rng = np.random.default_rng(seed)
    q, k, v = _qkv(rng, shape)
    out, _ = attention_chunks_forward(q, k, v, chunk)
    assert out.shape == shape
    assert_matches_reference(out, ref_attention(q, k, v))


@given(shape=shapes, extra=extra_keys, chunk=chunks, seed=seeds)
def test_equals_the_dense_pair(shape, extra, chunk, seed):
    """out, dq, dk and dv equal attention_forward / attention_backward's to rounding (the sums only run over
    fewer exact zeros), for square and KV-cache-shaped inputs alike."""
    rng = np.random.default_rng(seed)
    args = _qkv(rng, shape, extra)
    dout = rand(rng, *shape)
    out, cache = attention_chunks_forward(*args, chunk)
    ref, ref_cache = attention_forward(*args)
    assert_matches_reference(out, ref)
    for g, g_ref in zip(attention_chunks_backward(dout, cache), attention_backward(dout, ref_cache)):
        assert g.shape == g_ref.shape
        assert_matches_reference(g, g_ref)


@given(shape=shapes, extra=extra_keys, seed=seeds, data=st.data())
def test_one_chunk_is_the_plain_pair(shape, extra, seed, data):
    """chunk >= Tq: a single call of the dense pair on every key, so the very same bits."""
    rng = np.random.default_rng(seed)
    args = _qkv(rng, shape, extra)
    dout = rand(rng, *shape)
    chunk = data.draw(st.integers(shape[2], shape[2] + 3), label="chunk")
    out, cache = attention_chunks_forward(*args, chunk)
    ref, ref_cache = attention_forward(*args)
    assert len(cache.chunks) == 1
    assert np.array_equal(out, ref)
    for g, g_ref in zip(attention_chunks_backward(dout, cache), attention_backward(dout, ref_cache)):
        assert np.array_equal(g, g_ref)


@given(shape=shapes, extra=extra_keys, chunk=chunks, seed=seeds)
def test_each_chunk_sees_exactly_its_keys(shape, extra, chunk, seed):
    """Chunk [a, b) keeps keys 0..b-1+Tk-Tq and no more; every probability row sums to 1, and the last key
    of each chunk's last row is seen (it is that query's own position)."""
    rng = np.random.default_rng(seed)
    _, cache = attention_chunks_forward(*_qkv(rng, shape, extra), chunk)
    Tq = shape[2]
    bounds = [min(a + chunk, Tq) for a in range(0, Tq, chunk)]
    assert [c.k.shape[2] for c in cache.chunks] == [b + extra for b in bounds]
    for c in cache.chunks:
        att = c.softmax.out
        np.testing.assert_allclose(att.sum(axis=-1), 1.0, atol=1e-12)
        assert np.all(att[..., -1, -1] > 0.0)


@given(shape=st.tuples(batch_sizes, n_heads, st.integers(2, 7), head_dims), chunk=chunks, seed=seeds,
       data=st.data())
def test_causal(shape, chunk, seed, data):
    """Changing q, k, v at positions > t leaves out[..., :t+1, :] bit-for-bit unchanged, and with dout
    nonzero only at positions <= t, dq, dk and dv are exactly 0 after t."""
    rng = np.random.default_rng(seed)
    t = data.draw(st.integers(0, shape[2] - 2), label="t")
    q, k, v = _qkv(rng, shape)
    out, cache = attention_chunks_forward(q, k, v, chunk)
    q2, k2, v2 = (a.copy() for a in (q, k, v))
    for a in (q2, k2, v2):
        a[:, :, t + 1:] = rand(rng, *a[:, :, t + 1:].shape, scale=5.0)
    out2, _ = attention_chunks_forward(q2, k2, v2, chunk)
    assert np.array_equal(out2[:, :, :t + 1], out[:, :, :t + 1])
    dout = rand(rng, *shape)
    dout[:, :, t + 1:] = 0.0
    for g in attention_chunks_backward(dout, cache):
        assert np.all(g[:, :, t + 1:] == 0.0)


@given(shape=shapes, extra=extra_keys, chunk=chunks, seed=seeds)
def test_inputs_unmodified(shape, extra, chunk, seed):
    """Neither forward nor backward writes into q, k, v or dout (the sums build in the backward's own arrays)."""
    rng = np.random.default_rng(seed)
    forward_backward_pure(attention_chunks_forward, attention_chunks_backward, _qkv(rng, shape, extra), rng,
                          {"chunk": chunk})


@pytest.mark.parametrize("shape, chunk", [((1, 1, 1, 1), 1), ((2, 3, 5, 2), 2)])
def test_float32(shape, chunk):
    """float32 in -> float32 out, dq, dk, dv."""
    rng = np.random.default_rng(1)
    assert_float32_throughout(attention_chunks_forward, attention_chunks_backward, _qkv(rng, shape), rng,
                              {"chunk": chunk}, n_grads=3)


_rng = np.random.default_rng(2)
_q, _k, _v = _qkv(_rng, (2, 2, 4, 3))
_out, _cache = attention_chunks_forward(_q, _k, _v, 2)


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: attention_chunks_forward(_q, _k, _v, 0), "^chunk:", id="chunk-zero"),
    pytest.param(lambda: attention_chunks_forward(_q, _k, _v, 2.0), "^chunk:", id="chunk-float"),
    pytest.param(lambda: attention_chunks_forward(_q, _k, _v, True), "^chunk:", id="chunk-bool"),
    pytest.param(lambda: attention_chunks_forward(_q[0], _k, _v, 2), "^q:", id="q-3d"),
    pytest.param(lambda: attention_chunks_forward(_q, _k[:, :, :3], _v, 2), "^k:", id="k-shorter-than-q"),
    pytest.param(lambda: attention_chunks_forward(_q, _k, _v[..., :2], 2), "^v:", id="v-shape"),
    pytest.param(lambda: attention_chunks_forward(_q, _k.astype(np.float32), _v, 2), "^k:", id="k-float32"),
    pytest.param(lambda: attention_chunks_backward(_out[:, :, :3], _cache), "^dout:", id="dout-shape"),
    pytest.param(lambda: attention_chunks_backward(_out.astype(np.float32), _cache), "^dout:", id="dout-float32"),
])
def test_bad_arguments(call, match):
    """Bad arguments raise a ValueError that starts with the argument's name."""
    with pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------------------------------ sdpa.py's pair by chunks (the Llama layer)

gqa_heads = st.sampled_from([(1, 1), (2, 1), (4, 2), (3, 3), (6, 2)])  # (Hq, Hkv): MHA, MQA and GQA
gqa_shapes = st.tuples(batch_sizes, gqa_heads, st.integers(1, 7), head_dims)  # (B, (Hq, Hkv), Tq, D)


def _gqa(rng, shape, extra=0):
    B, (Hq, Hkv), Tq, D = shape
    return [rand(rng, B, Hq, Tq, D), rand(rng, B, Hkv, Tq + extra, D), rand(rng, B, Hkv, Tq + extra, D)]


def _gqa_chunks_forward(q, k, v, chunk):
    return _attention_chunks_forward(q, k, v, chunk, causal_options(q.shape[-1]))


@given(shape=gqa_shapes, extra=extra_keys, chunk=chunks, seed=seeds)
def test_grouped_query_chunks_gradcheck(shape, extra, chunk, seed):
    """With sdpa.py's kernel: dq (B, Hq, Tq, D), dk and dv (B, Hkv, Tk, D) match finite differences."""
    rng = np.random.default_rng(seed)
    gradcheck("attention_chunks[sdpa]", _gqa_chunks_forward, _attention_chunks_backward, _gqa(rng, shape, extra),
              names=["q", "k", "v"], rng=rng, kwargs={"chunk": chunk})


@given(shape=gqa_shapes, extra=extra_keys, chunk=chunks, seed=seeds)
def test_grouped_query_chunks_equal_the_sdpa_pair(shape, extra, chunk, seed):
    """out, dq, dk and dv equal one causal sdpa_forward / sdpa_backward to rounding; each chunk's cache is an
    SdpaCache holding exactly the keys its queries can see."""
    rng = np.random.default_rng(seed)
    q, k, v = _gqa(rng, shape, extra)
    dout = rand(rng, *q.shape)
    out, cache = _gqa_chunks_forward(q, k, v, chunk)
    ref, _, ref_cache = sdpa_forward(q, k, v, causal=True)
    assert isinstance(cache, AttentionChunksCache)
    Tq, shift = q.shape[2], extra
    for i, c in enumerate(cache.chunks):
        assert isinstance(c, SdpaCache)
        assert c.k.shape[2] == min((i + 1) * chunk, Tq) + shift
    assert_matches_reference(out, ref)
    ref_grads = sdpa_backward(dout, ref_cache)
    for g, g_ref in zip(_attention_chunks_backward(dout, cache), (ref_grads.dq, ref_grads.dk, ref_grads.dv)):
        assert g.shape == g_ref.shape
        assert_matches_reference(g, g_ref)
