"""router_z_loss: ST-MoE's mean over rows of logsumexp(router logits)^2, with backward."""

import math

import numpy as np
import pytest
from helpers import assert_float32_throughout, forward_backward_pure, gradcheck, seeds
from hypothesis import given
from hypothesis import strategies as st

from npgpt.layers.router_z_loss import router_z_loss_backward, router_z_loss_forward

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)


def ref_z_loss(z):
    rows = z.reshape(-1, z.shape[-1])
    vals = []
    for row in rows:
        m = max(row)
        lse = m + math.log(math.fsum(math.exp(v - m) for v in row))
        vals.append(lse * lse)
    return math.fsum(vals) / len(vals)


@given(shape=shapes, seed=seeds)
def test_gradcheck(shape, seed):
    rng = np.random.default_rng(seed)
    gradcheck("router_z_loss", router_z_loss_forward, router_z_loss_backward, [rng.standard_normal(shape) * 2.0],
              names=["router_logits"], rng=rng)


@given(shape=shapes, seed=seeds)
def test_forward_matches_reference(shape, seed):
    z = np.random.default_rng(seed).standard_normal(shape) * 3.0
    loss, _ = router_z_loss_forward(z)
    assert loss.shape == ()
    np.testing.assert_allclose(loss, ref_z_loss(z), rtol=1e-13)


def test_properties():
    """E equal logits c: lse = c + log E; large logits are stable (no overflow); the gradient is 2 lse p / M."""
    E = 5
    np.testing.assert_allclose(router_z_loss_forward(np.full((3, E), 2.0))[0], (2.0 + math.log(E)) ** 2, rtol=1e-15)
    big, _ = router_z_loss_forward(np.array([[1000.0, 999.0]]))
    assert np.isfinite(big)
    z = np.random.default_rng(0).standard_normal((4, E))
    _, c = router_z_loss_forward(z)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    lse = np.log(np.exp(z).sum(-1, keepdims=True))
    np.testing.assert_allclose(router_z_loss_backward(0.5, c), 0.5 * 2 * lse * p / 4, rtol=1e-14)


@given(shape=shapes, seed=seeds)
def test_inputs_unmodified(shape, seed):
    rng = np.random.default_rng(seed)
    forward_backward_pure(router_z_loss_forward, lambda d, c: router_z_loss_backward(d[()], c),
                          [rng.standard_normal(shape)], rng)


def test_float32():
    rng = np.random.default_rng(1)
    assert_float32_throughout(router_z_loss_forward, lambda d, c: router_z_loss_backward(d[()], c),
                              [rng.standard_normal((3, 4))], rng, n_grads=1)


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: router_z_loss_forward(np.zeros((2, 0))), "^router_logits:", id="E=0"),
    pytest.param(lambda: router_z_loss_forward(np.array([[np.nan, 1.0]])), "^router_logits:", id="nan"),
    pytest.param(lambda: router_z_loss_forward(np.array(1.0)), "^router_logits:", id="0-d"),
    pytest.param(lambda: router_z_loss_backward(None, router_z_loss_forward(np.ones((2, 2)))[1]), "^dloss:",
                 id="dloss"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
