"""router_deepseek: sigmoid scores, correction bias for the choice only, group-limited top-K, renormalisation,
routed_scaling_factor (DeepSeek-V3); and balance_bias_update, the loss-free balancing step."""

import numpy as np
import pytest
from helpers import assert_float32_throughout, forward_backward_pure, gradcheck, seeds
from hypothesis import given
from hypothesis import strategies as st
from moe_helpers import MARGIN, deepseek_gaps, draw, ref_deepseek

from npgpt.layers.router_deepseek import balance_bias_update, router_deepseek_backward, router_deepseek_forward


@st.composite
def configs(draw_):
    """(N, E, K, n_group, topk_group): E = n_group * G with G >= 2 when grouped, K <= topk_group * G."""
    n_group = draw_(st.integers(1, 3))
    G = draw_(st.integers(2, 3)) if n_group > 1 else draw_(st.integers(1, 6))
    topk_group = draw_(st.integers(1, n_group))
    K = draw_(st.integers(1, topk_group * G))
    return draw_(st.integers(1, 4)), n_group * G, K, n_group, topk_group


def _inputs(rng, N, E, n_group):
    """Logits and a correction bias whose decisions (corrected scores, group scores) have slack > MARGIN / 2
    (sigmoid' <= 1/4 shrinks the finite differences' steps by 4)."""
    return draw(rng, lambda r: (r.standard_normal((N, E)) * 2.0, r.standard_normal(E) * 0.3),
                lambda z, b: deepseek_gaps(z, b, n_group) > MARGIN / 2)


def _fwd(z, bias, **kw):
    w, _, cache = router_deepseek_forward(z, bias, **kw)
    return w, cache


def _kw(K, n_group, topk_group, norm, r):
    return {"top_k": K, "n_group": n_group, "topk_group": topk_group, "norm_topk_prob": norm,
            "routed_scaling_factor": r}


@given(cfg=configs(), seed=seeds, norm=st.booleans(), r=st.sampled_from([1.0, 2.5]))
def test_gradcheck(cfg, seed, norm, r):
    N, E, K, n_group, topk_group = cfg
    rng = np.random.default_rng(seed)
    z, b = _inputs(rng, N, E, n_group)
    gradcheck("router_deepseek", lambda zz, **kw: _fwd(zz, b, **kw), router_deepseek_backward, [z],
              names=["logits"], rng=rng, kwargs=_kw(K, n_group, topk_group, norm, r))


@given(cfg=configs(), seed=seeds, norm=st.booleans(), r=st.sampled_from([1.0, 2.5]))
def test_forward_matches_reference(cfg, seed, norm, r):
    N, E, K, n_group, topk_group = cfg
    rng = np.random.default_rng(seed)
    z, b = rng.standard_normal((N, E)) * 2.0, rng.standard_normal(E) * 0.3
    w, idx, _ = router_deepseek_forward(z, b, **_kw(K, n_group, topk_group, norm, r))
    rw, ridx = ref_deepseek(z, b, K, n_group, topk_group, norm, r)
    np.testing.assert_array_equal(idx, ridx)
    np.testing.assert_allclose(w, rw, rtol=1e-12, atol=1e-15)


@given(cfg=configs(), seed=seeds)
def test_properties(cfg, seed):
    """Distinct indices inside the kept groups; weights sum to r when renormalised; the bias moves the choice
    only (a constant bias changes nothing; the weights are the uncorrected scores); zero gradient off the choice."""
    N, E, K, n_group, topk_group = cfg
    rng = np.random.default_rng(seed)
    z, b = _inputs(rng, N, E, n_group)
    w, idx, cache = router_deepseek_forward(z, b, **_kw(K, n_group, topk_group, True, 2.5))
    assert ((0 <= idx) & (idx < E)).all() and all(len(set(r)) == K for r in idx.tolist())
    assert all(len({e // (E // n_group) for e in r}) <= topk_group for r in idx.tolist())
    np.testing.assert_allclose(w.sum(axis=1), 2.5, rtol=1e-14)
    w2, idx2, _ = router_deepseek_forward(z, b + 0.25, **_kw(K, n_group, topk_group, True, 2.5))
    np.testing.assert_array_equal(idx2, idx)
    np.testing.assert_allclose(w2, w, rtol=1e-15)
    w3, idx3, _ = router_deepseek_forward(z, b, **_kw(K, n_group, topk_group, False, 1.0))
    np.testing.assert_allclose(w3, np.take_along_axis(1.0 / (1.0 + np.exp(-z)), idx3, 1), rtol=1e-15)
    dz = router_deepseek_backward(rng.standard_normal((N, K)), cache)
    chosen = np.zeros(z.shape, bool)
    np.put_along_axis(chosen, idx, True, axis=1)
    assert (dz[~chosen] == 0).all()


def test_bias_steers_choice():
    """A large correction bias on expert 3 puts it in every row's choice, while its weight stays sigmoid(z)."""
    rng = np.random.default_rng(5)
    z = rng.standard_normal((6, 4))
    b = np.array([0.0, 0.0, 0.0, 5.0])
    w, idx, _ = router_deepseek_forward(z, b, 1, norm_topk_prob=False)
    assert (idx[:, 0] == 3).all()
    np.testing.assert_allclose(w[:, 0], 1.0 / (1.0 + np.exp(-z[:, 3])), rtol=1e-15)


@pytest.mark.parametrize("z, b, cfg, want", [
    # equal corrected scores: the lower expert index
    ([[0.0, 0.0, 0.0, 0.0]], [0.0] * 4, (2, 1, 1), [[0, 1]]),
    # groups {0,1} and {2,3} tie on their top-2 sums: the lower group wins, its experts come first
    ([[1.0, -1.0, -1.0, 1.0]], [0.0] * 4, (2, 2, 1), [[0, 1]]),
    # group score is the sum of the top 2 (1 + 1 beats 3 + (-3)) even though expert 2 is the largest
    ([[1.0, 1.0, 3.0, -3.0]], [0.0] * 4, (1, 2, 1), [[0]]),
    # a tie made by the bias: experts 1 and 2 have equal corrected scores, the lower index wins
    ([[0.0, 0.0, 0.0]], [0.0, 0.25, 0.25], (1, 1, 1), [[1]]),
])
def test_ties_golden(z, b, cfg, want):
    K, n_group, topk_group = cfg
    z, b = np.array(z), np.array(b)
    w, idx, _ = router_deepseek_forward(z, b, K, n_group=n_group, topk_group=topk_group)
    ridx = ref_deepseek(z, b, K, n_group, topk_group, True, 1.0)[1]
    np.testing.assert_array_equal(idx, ridx)
    if want is not None:
        np.testing.assert_array_equal(idx, want)


def test_balance_bias_update():
    """bias += rate * sign(mean load - load): overloaded experts go down, underloaded up, average ones stay."""
    b = np.array([0.1, 0.0, -0.2, 0.0])
    idx = np.array([[0, 1], [0, 2], [0, 1], [3, 1]])  # loads 3, 3, 1, 1; mean 2
    np.testing.assert_array_equal(balance_bias_update(b, idx, 0.01), b + 0.01 * np.array([-1, -1, 1, 1]))
    np.testing.assert_array_equal(balance_bias_update(b, np.array([[0, 1], [2, 3]]), 0.5), b)
    nb = balance_bias_update(b, idx, 0.01)
    assert nb is not b and b[0] == 0.1
    with pytest.raises(ValueError, match="^indices:"):
        balance_bias_update(b, np.array([[4]]), 0.1)
    with pytest.raises(ValueError, match="^rate:"):
        balance_bias_update(b, idx, "fast")


@given(cfg=configs(), seed=seeds)
def test_inputs_unmodified(cfg, seed):
    N, E, K, n_group, topk_group = cfg
    rng = np.random.default_rng(seed)
    z, b = _inputs(rng, N, E, n_group)
    forward_backward_pure(lambda zz, **kw: _fwd(zz, b, **kw), router_deepseek_backward, [z], rng,
                          kwargs=_kw(K, n_group, topk_group, True, 2.5))


def test_float32():
    rng = np.random.default_rng(1)
    z, b = _inputs(rng, 3, 8, 4)
    b32 = b.astype(np.float32)
    assert_float32_throughout(lambda zz, **kw: _fwd(zz, b32, **kw), router_deepseek_backward, [z], rng,
                              kwargs=_kw(2, 4, 2, True, 2.5), n_grads=1)


_z = np.random.default_rng(2).standard_normal((3, 8))
_b = np.zeros(8)


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: router_deepseek_forward(_z, _b, 9), "^top_k:", id="top_k>E"),
    pytest.param(lambda: router_deepseek_forward(np.zeros((3, 0)), np.zeros(0), 1), "^logits:", id="E=0"),
    pytest.param(lambda: router_deepseek_forward(_z, _b, 2, n_group=3), "^n_group:", id="n_group-not-divisor"),
    pytest.param(lambda: router_deepseek_forward(_z, _b, 2, n_group=8, topk_group=2), "^n_group:",
                 id="groups-of-one"),
    pytest.param(lambda: router_deepseek_forward(_z, _b, 2, n_group=2, topk_group=3), "^topk_group:",
                 id="topk_group>n_group"),
    pytest.param(lambda: router_deepseek_forward(_z, _b, 5, n_group=4, topk_group=2), "^top_k:",
                 id="top_k>kept-experts"),
    pytest.param(lambda: router_deepseek_forward(np.where(_z > 0, np.nan, _z), _b, 2), "^logits:", id="nan"),
    pytest.param(lambda: router_deepseek_forward(_z, _b[:7], 2), "^e_score_correction_bias:", id="bias-shape"),
    pytest.param(lambda: router_deepseek_forward(_z, _b + np.nan, 2), "^e_score_correction_bias:", id="bias-nan"),
    pytest.param(lambda: router_deepseek_forward(_z, _b, 2, routed_scaling_factor=np.inf),
                 "^routed_scaling_factor:", id="scale"),
    pytest.param(lambda: router_deepseek_backward(np.ones((3, 3)), router_deepseek_forward(_z, _b, 2)[2]),
                 "^dweights:", id="dweights"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
