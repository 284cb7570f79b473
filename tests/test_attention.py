"""attention_forward / attention_backward: causal scaled dot-product attention on (B, H, T, D), Tk >= Tq."""

import math

import numpy as np
import pytest
from helpers import (assert_float32_throughout, assert_matches_reference, batch_sizes, forward_backward_pure,
                     gradcheck, head_dims, n_heads, rand, ref_attention, seeds, seq_lens)
from hypothesis import given
from hypothesis import strategies as st

from npgpt.layers import attention_backward, attention_forward, causal_mask

shapes = st.tuples(batch_sizes, n_heads, seq_lens, head_dims)
extra_keys = st.integers(0, 4)  # Tk - Tq: 0 is the square case, > 0 a KV cache holding earlier positions


def _qkv(rng, shape):
    return [rand(rng, *shape), rand(rng, *shape), rand(rng, *shape)]


@given(shape=shapes, seed=seeds)
def test_gradcheck(shape, seed):
    """dq, dk, dv match finite differences (B=1, H=1, T=1, D=1 all reachable)."""
    rng = np.random.default_rng(seed)
    gradcheck("attention", attention_forward, attention_backward, _qkv(rng, shape), names=["q", "k", "v"], rng=rng)


@given(shape=shapes, seed=seeds)
def test_forward_matches_reference(shape, seed):
    """Equals a loop over queries t with a softmax over keys 0..t only."""
    rng = np.random.default_rng(seed)
    q, k, v = _qkv(rng, shape)
    out, _ = attention_forward(q, k, v)
    assert out.shape == shape
    assert_matches_reference(out, ref_attention(q, k, v))


@given(shape=shapes, seed=seeds)
def test_probabilities_exclude_the_future(shape, seed):
    """att = cache.softmax.out: exactly 0 above the diagonal, > 0 on and below it, rows sum to 1."""
    rng = np.random.default_rng(seed)
    _, cache = attention_forward(*_qkv(rng, shape))
    att = cache.softmax.out
    T = shape[2]
    assert att.shape == (*shape[:3], T)
    above = np.triu(np.ones((T, T), dtype=bool), k=1)
    assert np.all(att[..., above] == 0.0)
    assert np.all(att[..., ~above] > 0.0)
    np.testing.assert_allclose(att.sum(axis=-1), 1.0, atol=1e-12)


@given(shape=st.tuples(batch_sizes, n_heads, st.integers(2, 5), head_dims), seed=seeds, data=st.data())
def test_causal_forward(shape, seed, data):
    """Changing q, k, v at positions > t leaves out[..., :t+1, :] bit-for-bit unchanged."""
    rng = np.random.default_rng(seed)
    t = data.draw(st.integers(0, shape[2] - 2), label="t")
    q, k, v = _qkv(rng, shape)
    out, _ = attention_forward(q, k, v)
    q2, k2, v2 = (a.copy() for a in (q, k, v))
    for a in (q2, k2, v2):
        a[:, :, t + 1:] = rand(rng, *a[:, :, t + 1:].shape, scale=5.0)
    out2, _ = attention_forward(q2, k2, v2)
    assert np.array_equal(out2[:, :, :t + 1], out[:, :, :t + 1])
    assert not np.array_equal(out2[:, :, t + 1:], out[:, :, t + 1:])


@given(shape=st.tuples(batch_sizes, n_heads, st.integers(2, 5), head_dims), seed=seeds, data=st.data())
def test_causal_backward(shape, seed, data):
    """With dout nonzero only at positions <= t, dq, dk and dv are exactly 0 at positions > t."""
    rng = np.random.default_rng(seed)
    t = data.draw(st.integers(0, shape[2] - 2), label="t")
    _, cache = attention_forward(*_qkv(rng, shape))
    dout = rand(rng, *shape)
    dout[:, :, t + 1:] = 0.0
    for g in attention_backward(dout, cache):
        assert np.all(g[:, :, t + 1:] == 0.0)
        assert np.any(g[:, :, :t + 1] != 0.0) or t == 0


def test_first_position_copies_v():
    """Query 0 sees only key 0, so out[..., 0, :] is v[..., 0, :] whatever q and k are."""
    rng = np.random.default_rng(3)
    q, k, v = _qkv(rng, (2, 2, 4, 3))
    out, _ = attention_forward(q * 100.0, k, v)
    np.testing.assert_allclose(out[:, :, 0], v[:, :, 0], rtol=1e-15)


def test_causal_mask():
    """causal_mask(T) is 0 on and below the diagonal, -inf above it, and read-only."""
    m = causal_mask(4, np.dtype(np.float64))
    assert m.shape == (4, 4) and m.dtype == np.float64
    assert np.array_equal(np.isneginf(m), np.triu(np.ones((4, 4), dtype=bool), k=1))
    assert np.all(m[np.tril_indices(4)] == 0.0)
    assert not m.flags.writeable
    assert causal_mask(3, np.dtype(np.float32)).dtype == np.float32


@given(shape=shapes, seed=seeds)
def test_inputs_unmodified(shape, seed):
    """Neither forward nor backward writes into q, k, v or dout."""
    rng = np.random.default_rng(seed)
    forward_backward_pure(attention_forward, attention_backward, _qkv(rng, shape), rng)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 4, 2)])
def test_float32(shape):
    """float32 in -> float32 out, dq, dk, dv."""
    rng = np.random.default_rng(1)
    assert_float32_throughout(attention_forward, attention_backward, _qkv(rng, shape), rng, n_grads=3)


def _qkv_offset(rng, shape, extra):
    B, H, Tq, D = shape
    return [rand(rng, B, H, Tq, D), rand(rng, B, H, Tq + extra, D), rand(rng, B, H, Tq + extra, D)]


def _loop_attention_offset(q, k, v):
    """Query i (of Tq) sees keys 0..i + Tk - Tq: exact-sum scores, a softmax over the visible keys, then v."""
    B, H, Tq, D = q.shape
    Tk = k.shape[2]
    out = np.empty(q.shape)
    for b in range(B):
        for h in range(H):
            for i in range(Tq):
                last = i + Tk - Tq
                s = [math.fsum(q[b, h, i, d] * k[b, h, j, d] for d in range(D)) / math.sqrt(D) for j in range(last + 1)]
                m = max(s)
                e = [math.exp(x - m) for x in s]
                z = math.fsum(e)
                for d in range(D):
                    out[b, h, i, d] = math.fsum(e[j] / z * v[b, h, j, d] for j in range(last + 1))
    return out


@given(shape=shapes, extra=extra_keys, seed=seeds)
def test_gradcheck_tk_longer(shape, extra, seed):
    """Tk >= Tq: dq (B, H, Tq, D), dk and dv (B, H, Tk, D) match finite differences."""
    rng = np.random.default_rng(seed)
    gradcheck("attention", attention_forward, attention_backward, _qkv_offset(rng, shape, extra),
              names=["q", "k", "v"], rng=rng)


@given(shape=shapes, extra=extra_keys, seed=seeds)
def test_forward_tk_longer_matches_reference(shape, extra, seed):
    """Tk >= Tq equals a loop where query i sees keys 0..i + Tk - Tq (the causal mask aligned bottom-right)."""
    rng = np.random.default_rng(seed)
    q, k, v = _qkv_offset(rng, shape, extra)
    out, cache = attention_forward(q, k, v)
    assert out.shape == q.shape and cache.softmax.out.shape == (*shape[:3], shape[2] + extra)
    assert_matches_reference(out, _loop_attention_offset(q, k, v))


@given(shape=shapes, extra=extra_keys, seed=seeds)
def test_last_rows_of_the_square_case(shape, extra, seed):
    """Attention of the last Tq queries over all Tk keys equals the last Tq rows of the square Tk x Tk case
    (KV-cached decoding computes what the full forward computes), with the same dk and dv when dout is
    zero on the other rows."""
    rng = np.random.default_rng(seed)
    B, H, Tq, D = shape
    q_all, k, v = _qkv_offset(rng, (B, H, Tq + extra, D), 0)
    q = q_all[:, :, extra:]
    out, cache = attention_forward(q, k, v)
    out_all, cache_all = attention_forward(q_all, k, v)
    np.testing.assert_allclose(out, out_all[:, :, extra:], rtol=1e-12, atol=1e-13)
    dout = rand(rng, B, H, Tq, D)
    dout_all = np.zeros(q_all.shape)
    dout_all[:, :, extra:] = dout
    dq, dk, dv = attention_backward(dout, cache)
    dq_all, dk_all, dv_all = attention_backward(dout_all, cache_all)
    np.testing.assert_allclose(dq, dq_all[:, :, extra:], rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(dk, dk_all, rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(dv, dv_all, rtol=1e-11, atol=1e-13)


@given(shape=st.tuples(batch_sizes, n_heads, st.integers(1, 4), head_dims), extra=st.integers(1, 3), seed=seeds,
       data=st.data())
def test_unseen_keys_do_not_matter(shape, extra, seed, data):
    """Changing k, v at key positions > i + Tk - Tq leaves out[..., :i+1, :] bit-for-bit unchanged, and
    those keys get exactly zero gradient from rows <= i."""
    rng = np.random.default_rng(seed)
    Tq = shape[2]
    i = data.draw(st.integers(0, Tq - 1), label="i")
    q, k, v = _qkv_offset(rng, shape, extra)
    first_unseen = i + extra + 1
    out, cache = attention_forward(q, k, v)
    k2, v2 = k.copy(), v.copy()
    k2[:, :, first_unseen:] = 5.0
    v2[:, :, first_unseen:] = -5.0
    out2, _ = attention_forward(q, k2, v2)
    assert np.array_equal(out2[:, :, :i + 1], out[:, :, :i + 1])
    dout = rand(rng, *q.shape)
    dout[:, :, i + 1:] = 0.0
    _, dk, dv = attention_backward(dout, cache)
    assert np.all(dk[:, :, first_unseen:] == 0.0) and np.all(dv[:, :, first_unseen:] == 0.0)


def test_float32_tk_longer():
    """float32 in -> float32 out and grads when Tk > Tq."""
    rng = np.random.default_rng(4)
    assert_float32_throughout(attention_forward, attention_backward, _qkv_offset(rng, (2, 2, 2, 3), 3), rng,
                              n_grads=3)


_rng = np.random.default_rng(2)
_q, _k, _v = _qkv(_rng, (2, 2, 3, 4))
_out, _cache = attention_forward(_q, _k, _v)


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: attention_forward(_q.tolist(), _k, _v), "^q:", id="q-list"),
    pytest.param(lambda: attention_forward(_q[0], _k[0], _v[0]), "^q:", id="qkv-3d"),
    pytest.param(lambda: attention_forward(_q[None], _k, _v), "^q:", id="q-5d"),
    pytest.param(lambda: attention_forward(_q.astype(np.int64), _k, _v), "^q:", id="q-int"),
    pytest.param(lambda: attention_forward(_q.astype(np.float16), _k, _v), "^q:", id="q-float16"),
    pytest.param(lambda: attention_forward(_q, _k[0], _v), "^k:", id="k-3d"),
    pytest.param(lambda: attention_forward(_q, _k.astype(np.float32), _v), "^k:", id="k-float32-q-float64"),
    pytest.param(lambda: attention_forward(_q, _k, _v.astype(np.float32)), "^v:", id="v-float32-q-float64"),
    pytest.param(lambda: attention_forward(_q, _k[:, :, :2], _v), "^k:", id="k-fewer-keys-than-queries"),
    pytest.param(lambda: attention_forward(_q, _k[..., :2], _v), "^k:", id="k-head-dim"),
    pytest.param(lambda: attention_forward(_q, _k[:1], _v), "^k:", id="k-batch"),
    pytest.param(lambda: attention_forward(_q, _k[:, :1], _v), "^k:", id="k-heads"),
    pytest.param(lambda: attention_forward(_q[:, :, :2], _k, _v[:, :, :2]), "^v:", id="v-keys"),
    pytest.param(lambda: attention_forward(_q, _k, _v[..., :2]), "^v:", id="v-shape"),
    pytest.param(lambda: attention_forward(_q, _k, _v.tolist()), "^v:", id="v-list"),
    pytest.param(lambda: attention_backward(_out[..., :2], _cache), "^dout:", id="dout-shape"),
    pytest.param(lambda: attention_backward(_out[0], _cache), "^dout:", id="dout-ndim"),
    pytest.param(lambda: attention_backward(_out.astype(np.float32), _cache), "^dout:", id="dout-float32"),
    pytest.param(lambda: attention_backward(_out.tolist(), _cache), "^dout:", id="dout-list"),
])
def test_bad_arguments(call, match):
    """Bad arguments raise a ValueError that starts with the argument's name."""
    with pytest.raises(ValueError, match=match):
        call()
