"""router_topk_softmax: top-K of the logits, then a softmax over the chosen (gpt-oss)."""

import numpy as np
import pytest
from helpers import assert_float32_throughout, forward_backward_pure, gradcheck, seeds
from hypothesis import given
from hypothesis import strategies as st
from moe_helpers import MARGIN, draw, min_gap, ref_topk_softmax

from npgpt.layers.router_topk_softmax import router_topk_softmax_backward, router_topk_softmax_forward

sizes = st.tuples(st.integers(1, 4), st.integers(1, 6)).flatmap(
    lambda ne: st.tuples(st.just(ne[0]), st.just(ne[1]), st.integers(1, ne[1])))  # (N, E, K)


def _logits(rng, N, E):
    return draw(rng, lambda r: (r.standard_normal((N, E)) * 1.5,), lambda z: min_gap(z) > MARGIN)[0]


def _fwd(z, top_k):
    w, _, cache = router_topk_softmax_forward(z, top_k)
    return w, cache


@given(size=sizes, seed=seeds)
def test_gradcheck(size, seed):
    N, E, K = size
    rng = np.random.default_rng(seed)
    gradcheck("router_topk_softmax", _fwd, router_topk_softmax_backward, [_logits(rng, N, E)], names=["logits"],
              rng=rng, kwargs={"top_k": K})


@given(size=sizes, seed=seeds)
def test_forward_matches_reference(size, seed):
    N, E, K = size
    z = np.random.default_rng(seed).standard_normal((N, E)) * 2.0
    w, idx, _ = router_topk_softmax_forward(z, K)
    rw, ridx = ref_topk_softmax(z, K)
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_allclose(w, rw, rtol=1e-12, atol=1e-15)


@given(size=sizes, seed=seeds)
def test_properties(size, seed):
    """Indices distinct, in range, by descending logit; weights sum to 1; shift and permutation invariance; the
    unchosen logits get exactly zero gradient and each row's gradient sums to 0."""
    N, E, K = size
    rng = np.random.default_rng(seed)
    z = _logits(rng, N, E)
    w, idx, cache = router_topk_softmax_forward(z, K)
    assert ((0 <= idx) & (idx < E)).all() and all(len(set(r)) == K for r in idx.tolist())
    assert (np.diff(np.take_along_axis(z, idx, 1), axis=1) < 0).all()
    np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-14)
    w2, idx2, _ = router_topk_softmax_forward(z - 4.0 + rng.standard_normal((N, 1)), K)
    np.testing.assert_array_equal(idx2, idx)
    np.testing.assert_allclose(w2, w, rtol=1e-13)
    perm = rng.permutation(E)
    w3, idx3, _ = router_topk_softmax_forward(z[:, perm], K)
    np.testing.assert_array_equal(perm[idx3], idx)
    np.testing.assert_allclose(w3, w, rtol=1e-14)
    dz = router_topk_softmax_backward(rng.standard_normal((N, K)), cache)
    chosen = np.zeros(z.shape, bool)
    np.put_along_axis(chosen, idx, True, axis=1)
    assert (dz[~chosen] == 0).all()
    np.testing.assert_allclose(dz.sum(axis=1), 0.0, atol=1e-14)


@pytest.mark.parametrize("z, K, want", [
    ([[1.0, 2.0, 2.0, 2.0, 0.0]], 2, [[1, 2]]),  # torch.topk on CPU gives [1, 3]
    ([[0.0, 0.0, 0.0, 0.0]], 3, [[0, 1, 2]]),  # torch: [2, 3, 0]
    ([[5.0, -1.0, 5.0, 5.0]], 2, [[0, 2]]),
])
def test_ties_golden(z, K, want):
    """Equal logits: the lower expert index is chosen, and comes first; equal logits get equal weights."""
    w, idx, _ = router_topk_softmax_forward(np.array(z), K)
    np.testing.assert_array_equal(idx, want)
    np.testing.assert_allclose(w, ref_topk_softmax(np.array(z), K)[0], rtol=1e-15)


@given(size=sizes, seed=seeds)
def test_inputs_unmodified(size, seed):
    N, E, K = size
    rng = np.random.default_rng(seed)
    forward_backward_pure(_fwd, router_topk_softmax_backward, [_logits(rng, N, E)], rng, kwargs={"top_k": K})


def test_float32():
    rng = np.random.default_rng(1)
    assert_float32_throughout(_fwd, router_topk_softmax_backward, [_logits(rng, 3, 5)], rng, kwargs={"top_k": 2},
                              n_grads=1)


_z = np.random.default_rng(2).standard_normal((3, 4))


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: router_topk_softmax_forward(_z, 5), "^top_k:", id="top_k>E"),
    pytest.param(lambda: router_topk_softmax_forward(np.zeros((2, 0)), 1), "^logits:", id="E=0"),
    pytest.param(lambda: router_topk_softmax_forward(np.where(_z > 0, np.nan, _z), 1), "^logits:", id="nan"),
    pytest.param(lambda: router_topk_softmax_forward(np.where(_z > 0, np.inf, _z), 1), "^logits:", id="inf"),
    pytest.param(lambda: router_topk_softmax_forward(_z.astype(np.int64), 1), "^logits:", id="int"),
    pytest.param(lambda: router_topk_softmax_backward(np.ones((3, 3)), router_topk_softmax_forward(_z, 2)[2]),
                 "^dweights:", id="dweights"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
