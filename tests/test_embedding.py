"""embedding_forward / embedding_backward: out[b, t] = w[idx[b, t]], dw is a scatter-add."""

import numpy as np
import pytest
from helpers import (assert_float32_throughout, assert_matches_reference, batch_sizes, forward_backward_pure,
                     gradcheck, rand, ref_embedding, seeds, seq_lens, vocab_sizes, widths)
from hypothesis import given

from npgpt.layers import embedding_backward, embedding_forward


@given(B=batch_sizes, T=seq_lens, V=vocab_sizes, C=widths, seed=seeds)
def test_gradcheck(B, T, V, C, seed):
    """dw matches finite differences (ids drawn with repeats, so rows accumulate)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, V, size=(B, T))
    w = rand(rng, V, C, scale=0.5)
    gradcheck("embedding", embedding_forward, embedding_backward, [idx, w], names=["idx", "w"], rng=rng)


@given(B=batch_sizes, T=seq_lens, V=vocab_sizes, C=widths, seed=seeds)
def test_forward_matches_reference(B, T, V, C, seed):
    """Row lookup equals an element-by-element loop, ids 0 and V-1 included."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, V, size=(B, T))
    idx.flat[0] = V - 1
    idx.flat[-1] = 0
    w = rand(rng, V, C)
    out, _ = embedding_forward(idx, w)
    assert out.shape == (B, T, C)
    assert_matches_reference(out, ref_embedding(idx, w))


@given(B=batch_sizes, T=seq_lens, V=vocab_sizes, C=widths, seed=seeds)
def test_backward_matches_loop_accumulation(B, T, V, C, seed):
    """dw[v] is the sum of dout over every position that read row v; unread rows are exactly 0."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, V, size=(B, T))
    w = rand(rng, V, C)
    _, cache = embedding_forward(idx, w)
    dout = rand(rng, B, T, C)
    dw = embedding_backward(dout, cache)
    expected = np.zeros((V, C))
    for b in range(B):
        for t in range(T):
            expected[idx[b, t]] += dout[b, t]
    np.testing.assert_allclose(dw, expected, rtol=1e-12, atol=1e-12)
    unread = np.setdiff1d(np.arange(V), idx)
    assert np.all(dw[unread] == 0.0)


def test_backward_accumulates_repeated_ids():
    """Every position reads row 2: dw[2] is the sum of all dout rows, not just the last one."""
    rng = np.random.default_rng(0)
    idx = np.full((2, 3), 2)
    w = rand(rng, 4, 3)
    _, cache = embedding_forward(idx, w)
    dout = rand(rng, 2, 3, 3)
    dw = embedding_backward(dout, cache)
    np.testing.assert_allclose(dw[2], dout.sum(axis=(0, 1)), rtol=1e-14)
    assert np.all(dw[[0, 1, 3]] == 0.0)


def test_output_does_not_alias_w():
    """Writing into the output leaves the table alone."""
    w = np.arange(6.0).reshape(3, 2)
    out, _ = embedding_forward(np.array([[1, 1]]), w)
    out[...] = -1.0
    assert np.array_equal(w, np.arange(6.0).reshape(3, 2))


@given(B=batch_sizes, T=seq_lens, V=vocab_sizes, C=widths, seed=seeds)
def test_inputs_unmodified(B, T, V, C, seed):
    """Neither forward nor backward writes into idx, w or dout."""
    rng = np.random.default_rng(seed)
    forward_backward_pure(embedding_forward, embedding_backward, [rng.integers(0, V, size=(B, T)), rand(rng, V, C)],
                          rng)


def test_float32():
    """float32 table -> float32 output and float32 dw."""
    rng = np.random.default_rng(1)
    assert_float32_throughout(embedding_forward, embedding_backward, [np.array([[0, 2, 2]]), rand(rng, 3, 4)], rng,
                              n_grads=1)


_rng = np.random.default_rng(2)
_idx = np.array([[0, 1, 2], [2, 1, 0]])
_w = _rng.standard_normal((3, 4))
_out, _cache = embedding_forward(_idx, _w)


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: embedding_forward([[0, 1]], _w), "^idx:", id="idx-list"),
    pytest.param(lambda: embedding_forward(_idx.astype(np.float64), _w), "^idx:", id="idx-float"),
    pytest.param(lambda: embedding_forward(_idx > 0, _w), "^idx:", id="idx-bool"),
    pytest.param(lambda: embedding_forward(_idx[0], _w), "^idx:", id="idx-1d"),
    pytest.param(lambda: embedding_forward(_idx[None], _w), "^idx:", id="idx-3d"),
    pytest.param(lambda: embedding_forward(np.array([[0, -1]]), _w), "^idx: token id -1 ", id="idx-negative"),
    pytest.param(lambda: embedding_forward(np.array([[0, 3]]), _w), "^idx: token id 3 ", id="idx-equals-V"),
    pytest.param(lambda: embedding_forward(np.array([[0, 99]]), _w), "^idx: token id 99 ", id="idx-above-V"),
    pytest.param(lambda: embedding_forward(_idx, _w.tolist()), "^w:", id="w-list"),
    pytest.param(lambda: embedding_forward(_idx, _w[0]), "^w:", id="w-1d"),
    pytest.param(lambda: embedding_forward(_idx, _w[None]), "^w:", id="w-3d"),
    pytest.param(lambda: embedding_forward(_idx, _w.astype(np.int64)), "^w:", id="w-int"),
    pytest.param(lambda: embedding_forward(_idx, _w.astype(np.float16)), "^w:", id="w-float16"),
    pytest.param(lambda: embedding_backward(_out[:, :2], _cache), "^dout:", id="dout-shape"),
    pytest.param(lambda: embedding_backward(_out[0], _cache), "^dout:", id="dout-ndim"),
    pytest.param(lambda: embedding_backward(_out.astype(np.float32), _cache), "^dout:", id="dout-float32"),
    pytest.param(lambda: embedding_backward(_out.tolist(), _cache), "^dout:", id="dout-list"),
])
def test_bad_arguments(call, match):
    """Bad arguments raise a ValueError that starts with the argument's name."""
    with pytest.raises(ValueError, match=match):
        call()
