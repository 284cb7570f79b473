"""router_softmax_topk: softmax over E experts, top-K, optional renormalisation (Mixtral, Qwen2/Qwen3-MoE)."""

import numpy as np
import pytest
from helpers import assert_float32_throughout, forward_backward_pure, gradcheck, seeds
from hypothesis import given
from hypothesis import strategies as st
from moe_helpers import MARGIN, draw, min_gap, ref_softmax_topk, ref_topk_softmax

from npgpt.layers.router_softmax_topk import router_softmax_topk_backward, router_softmax_topk_forward

sizes = st.tuples(st.integers(1, 4), st.integers(1, 6)).flatmap(
    lambda ne: st.tuples(st.just(ne[0]), st.just(ne[1]), st.integers(1, ne[1])))  # (N, E, K)


def _logits(rng, N, E, scale=1.5):
    """Logits whose entries differ by at least MARGIN in every row: the choice is stable under the FD steps."""
    return draw(rng, lambda r: (r.standard_normal((N, E)) * scale,), lambda z: min_gap(z) > MARGIN)[0]


def _fwd(z, top_k, norm_topk_prob):
    w, _, cache = router_softmax_topk_forward(z, top_k, norm_topk_prob)
    return w, cache


@given(size=sizes, seed=seeds, norm=st.booleans())
def test_gradcheck(size, seed, norm):
    N, E, K = size
    rng = np.random.default_rng(seed)
    gradcheck("router_softmax_topk", _fwd, router_softmax_topk_backward, [_logits(rng, N, E)], names=["logits"],
              rng=rng, kwargs={"top_k": K, "norm_topk_prob": norm})


@given(size=sizes, seed=seeds, norm=st.booleans())
def test_forward_matches_reference(size, seed, norm):
    N, E, K = size
    z = np.random.default_rng(seed).standard_normal((N, E)) * 2.0  # ties allowed: the reference has the rule
    w, idx, _ = router_softmax_topk_forward(z, K, norm)
    rw, ridx = ref_softmax_topk(z, K, norm)
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_allclose(w, rw, rtol=1e-12, atol=1e-15)


@given(size=sizes, seed=seeds, norm=st.booleans())
def test_properties(size, seed, norm):
    """Indices distinct and in range; weights positive, descending, summing to 1 when renormalised; the same
    result for logits shifted by a constant per row and for permuted experts (away from ties)."""
    N, E, K = size
    rng = np.random.default_rng(seed)
    z = _logits(rng, N, E)
    w, idx, _ = router_softmax_topk_forward(z, K, norm)
    assert idx.dtype == np.intp and ((0 <= idx) & (idx < E)).all()
    assert all(len(set(r)) == K for r in idx.tolist())
    assert (w > 0).all() and (np.diff(w, axis=1) <= 0).all()
    if norm:
        np.testing.assert_allclose(w.sum(axis=1), 1.0, rtol=1e-14)
    else:
        assert (w.sum(axis=1) <= 1.0 + 1e-15).all()
    w2, idx2, _ = router_softmax_topk_forward(z + rng.standard_normal((N, 1)) * 3.0, K, norm)
    np.testing.assert_array_equal(idx2, idx)
    np.testing.assert_allclose(w2, w, rtol=1e-13)
    perm = rng.permutation(E)
    w3, idx3, _ = router_softmax_topk_forward(z[:, perm], K, norm)
    np.testing.assert_array_equal(perm[idx3], idx)
    np.testing.assert_allclose(w3, w, rtol=1e-14)


@given(size=sizes, seed=seeds)
def test_renormalised_is_topk_softmax(size, seed):
    """With norm_topk_prob, p[chosen] / sum = softmax(logits[chosen]): gpt-oss's router, the same numbers."""
    N, E, K = size
    z = _logits(np.random.default_rng(seed), N, E)
    w, idx, _ = router_softmax_topk_forward(z, K, True)
    rw, ridx = ref_topk_softmax(z, K)
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_allclose(w, rw, rtol=1e-13)


def test_gradient_support():
    """Renormalised: the unchosen logits get exactly 0.  Not renormalised: every logit gets a gradient, through the
    softmax's denominator."""
    rng = np.random.default_rng(3)
    z = _logits(rng, 4, 6)
    dw = rng.standard_normal((4, 2))
    for norm in (True, False):
        _, idx, cache = router_softmax_topk_forward(z, 2, norm)
        dz = router_softmax_topk_backward(dw, cache)
        chosen = np.zeros(z.shape, bool)
        np.put_along_axis(chosen, idx, True, axis=1)
        assert (dz[~chosen] == 0).all() if norm else (dz[~chosen] != 0).all()
        np.testing.assert_allclose(dz.sum(axis=1), 0.0, atol=1e-15)  # shift invariance: rows sum to 0


@pytest.mark.parametrize("z, K, want", [
    ([[1.0, 2.0, 2.0, 2.0, 0.0]], 2, [[1, 2]]),  # torch.topk on CPU gives [1, 3] here
    ([[1.0, 2.0, 2.0, 2.0, 0.0]], 3, [[1, 2, 3]]),
    ([[0.0, 0.0, 0.0, 0.0]], 3, [[0, 1, 2]]),  # torch.topk on CPU gives [2, 3, 0]
    ([[3.0, 1.0, 3.0, 1.0, 3.0, 1.0, 3.0]], 3, [[0, 2, 4]]),  # torch: [2, 4, 0]
    ([[-0.0, 0.0, -1.0]], 1, [[0]]),  # -0.0 and 0.0 are equal scores
])
def test_ties_golden(z, K, want):
    """The tie rule: among equal probabilities the lower expert index is chosen, and comes first."""
    z = np.array(z)
    for norm in (True, False):
        w, idx, _ = router_softmax_topk_forward(z, K, norm)
        np.testing.assert_array_equal(idx, want)
        rw, _ = ref_softmax_topk(z, K, norm)
        np.testing.assert_allclose(w, rw, rtol=1e-15)


@given(size=sizes, seed=seeds)
def test_inputs_unmodified(size, seed):
    N, E, K = size
    rng = np.random.default_rng(seed)
    forward_backward_pure(_fwd, router_softmax_topk_backward, [_logits(rng, N, E)], rng,
                          kwargs={"top_k": K, "norm_topk_prob": False})


def test_float32():
    rng = np.random.default_rng(1)
    assert_float32_throughout(_fwd, router_softmax_topk_backward, [_logits(rng, 3, 5)], rng,
                              kwargs={"top_k": 2, "norm_topk_prob": True}, n_grads=1)


_z = np.random.default_rng(2).standard_normal((3, 4))


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: router_softmax_topk_forward(_z, 5), "^top_k:", id="top_k>E"),
    pytest.param(lambda: router_softmax_topk_forward(_z, 0), "^top_k:", id="top_k=0"),
    pytest.param(lambda: router_softmax_topk_forward(_z, True), "^top_k:", id="top_k-bool"),
    pytest.param(lambda: router_softmax_topk_forward(np.zeros((3, 0)), 1), "^logits:", id="E=0"),
    pytest.param(lambda: router_softmax_topk_forward(np.where(_z > 0, np.nan, _z), 1), "^logits:", id="nan"),
    pytest.param(lambda: router_softmax_topk_forward(_z[0], 1), "^logits:", id="1-d"),
    pytest.param(lambda: router_softmax_topk_forward(_z, 2, norm_topk_prob=1), "^norm_topk_prob:", id="norm"),
    pytest.param(lambda: router_softmax_topk_backward(np.ones((3, 3)), router_softmax_topk_forward(_z, 2)[2]),
                 "^dweights:", id="dweights"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_error_is_one_line():
    with pytest.raises(ValueError) as info:
        router_softmax_topk_forward(np.full((2, 3), np.nan), 1)
    assert "\n" not in str(info.value)
