"""cross_entropy_forward / cross_entropy_backward: mean over positions of -log softmax(logits)[target]."""

import math

import numpy as np
import pytest
from helpers import (assert_float32_throughout, forward_backward_pure, gradcheck, lead_shapes, rand,
                     ref_cross_entropy, seeds, vocab_sizes)
from hypothesis import given
from hypothesis import strategies as st

from npgpt.layers import cross_entropy_backward, cross_entropy_forward


def _inputs(rng, lead, V, scale=2.0):
    return [rand(rng, *lead, V, scale=scale), rng.integers(0, V, size=lead)]


@given(lead=lead_shapes, V=vocab_sizes, seed=seeds)
def test_gradcheck(lead, V, seed):
    """dlogits matches finite differences for a random scalar dloss (logits (V,), (N, V), (B, T, V))."""
    rng = np.random.default_rng(seed)
    gradcheck("cross_entropy", cross_entropy_forward, cross_entropy_backward, _inputs(rng, lead, V),
              names=["logits", "targets"], rng=rng)


@given(lead=lead_shapes, V=vocab_sizes, seed=seeds)
def test_forward_matches_reference(lead, V, seed):
    """Equals the mean of -log(exp(l_t - m) / sum exp(l - m)) computed per position with math.exp/log."""
    rng = np.random.default_rng(seed)
    logits, targets = _inputs(rng, lead, V)
    loss, _ = cross_entropy_forward(logits, targets)
    assert isinstance(loss, np.ndarray) and loss.shape == () and loss.dtype == np.float64
    np.testing.assert_allclose(loss, ref_cross_entropy(logits, targets), rtol=1e-12, atol=1e-12)


@given(lead=lead_shapes, V=vocab_sizes, seed=seeds, dloss=st.sampled_from([1.0, -0.7, 2.5]))
def test_backward_is_softmax_minus_onehot(lead, V, seed, dloss):
    """dlogits = dloss * (softmax - onehot) / N, built position by position; each position sums to 0."""
    rng = np.random.default_rng(seed)
    logits, targets = _inputs(rng, lead, V)
    _, cache = cross_entropy_forward(logits, targets)
    g = cross_entropy_backward(np.array(dloss), cache)
    rows, tgt = logits.reshape(-1, V), targets.reshape(-1)
    N = len(tgt)
    expected = np.empty((N, V))
    for n in range(N):
        e = [math.exp(v - max(rows[n])) for v in rows[n]]
        expected[n] = [dloss * (ei / math.fsum(e) - (j == tgt[n])) / N for j, ei in enumerate(e)]
    np.testing.assert_allclose(g, expected.reshape(logits.shape), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(g.sum(axis=-1), 0.0, atol=1e-15)


@pytest.mark.parametrize("V", [2, 5, 50257])
@pytest.mark.parametrize("value", [0.0, 3.5, -1e4])
def test_uniform_logits_give_log_v(V, value):
    """All logits equal (zeros or any constant) -> loss = ln V whatever the targets."""
    logits = np.full((2, 3, V), value)
    loss, _ = cross_entropy_forward(logits, np.array([[0, V - 1, 1], [1, 0, V - 1]]))
    assert math.isclose(float(loss), math.log(V), rel_tol=1e-13)


def test_extreme_logits():
    """Logits of +-1e4: no nan/inf; a confident right answer costs 0, a confident wrong one costs 2e4."""
    logits = np.array([[1e4, -1e4, 0.0], [1e4, -1e4, -1e4]])
    targets = np.array([0, 1])
    loss, cache = cross_entropy_forward(logits, targets)
    assert float(loss) == 1e4  # (0 + 2e4) / 2
    g = cross_entropy_backward(1.0, cache)
    np.testing.assert_array_equal(g, [[0.0, 0.0, 0.0], [0.5, -0.5, 0.0]])


def test_confident_and_correct_is_near_zero_and_loss_positive():
    """Loss >= 0 always, and tends to 0 as the target's logit dominates."""
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((3, 4, 6))
    targets = rng.integers(0, 6, size=(3, 4))
    assert float(cross_entropy_forward(logits, targets)[0]) > 0.0
    onehot = np.eye(6)[targets] * 10.0
    np.testing.assert_allclose(cross_entropy_forward(onehot, targets)[0], math.log1p(5.0 * math.exp(-10.0)),
                               rtol=1e-9)


@given(lead=lead_shapes, V=vocab_sizes, seed=seeds)
def test_inputs_unmodified(lead, V, seed):
    """Neither forward nor backward writes into logits, targets or dloss."""
    rng = np.random.default_rng(seed)
    forward_backward_pure(cross_entropy_forward, cross_entropy_backward, _inputs(rng, lead, V), rng)


@pytest.mark.parametrize("lead", [(), (4,), (2, 3)])
def test_float32(lead):
    """float32 logits -> float32 0-d loss and float32 dlogits."""
    rng = np.random.default_rng(1)
    assert_float32_throughout(cross_entropy_forward, cross_entropy_backward, _inputs(rng, lead, 5), rng, n_grads=1)
    loss, _ = cross_entropy_forward(*_inputs(rng, lead, 5))
    assert loss.shape == ()


_rng = np.random.default_rng(2)
_logits, _targets = _inputs(_rng, (2, 3), 5)
_loss, _cache = cross_entropy_forward(_logits, _targets)


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: cross_entropy_forward(_logits.tolist(), _targets), "^logits:", id="logits-list"),
    pytest.param(lambda: cross_entropy_forward(np.array(1.0), np.array(0)), "^logits:", id="logits-0d"),
    pytest.param(lambda: cross_entropy_forward(_logits.astype(np.int64), _targets), "^logits:", id="logits-int"),
    pytest.param(lambda: cross_entropy_forward(_logits.astype(np.float16), _targets), "^logits:",
                 id="logits-float16"),
    pytest.param(lambda: cross_entropy_forward(_logits, _targets.tolist()), "^targets:", id="targets-list"),
    pytest.param(lambda: cross_entropy_forward(_logits, _targets.astype(np.float64)), "^targets:",
                 id="targets-float"),
    pytest.param(lambda: cross_entropy_forward(_logits, np.array([[0, 1, 2], [3, -1, 0]])),
                 "^targets: token id -1 ", id="targets-negative"),
    pytest.param(lambda: cross_entropy_forward(_logits, np.array([[0, 1, 2], [3, 5, 0]])),
                 "^targets: token id 5 ", id="targets-equal-V"),
    pytest.param(lambda: cross_entropy_forward(_logits, _targets[:, :2]), "^targets:", id="targets-shape"),
    pytest.param(lambda: cross_entropy_forward(_logits, _targets[0]), "^targets:", id="targets-ndim"),
    pytest.param(lambda: cross_entropy_forward(_logits, _targets[..., None]), "^targets:", id="targets-trailing-V"),
    pytest.param(lambda: cross_entropy_forward(np.zeros((0, 5)), np.zeros(0, dtype=np.int64)), "^targets:",
                 id="targets-empty"),
    pytest.param(lambda: cross_entropy_backward(np.ones(2), _cache), "^dloss:", id="dloss-vector"),
    pytest.param(lambda: cross_entropy_backward(np.ones((2, 3)), _cache), "^dloss:", id="dloss-like-targets"),
    pytest.param(lambda: cross_entropy_backward("1.0", _cache), "^dloss:", id="dloss-string"),
    pytest.param(lambda: cross_entropy_backward(None, _cache), "^dloss:", id="dloss-None"),
])
def test_bad_arguments(call, match):
    """Bad arguments raise a ValueError that starts with the argument's name."""
    with pytest.raises(ValueError, match=match):
        call()
