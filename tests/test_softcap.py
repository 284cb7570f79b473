"""softcap_forward / softcap_backward: c tanh(x / c), Gemma 2's final-logit cap."""

import math

import numpy as np
import pytest
from helpers import any_shapes, assert_float32_throughout, forward_backward_pure, gradcheck, rand, seeds
from hypothesis import given
from hypothesis import strategies as st

from npgpt.layers.softcap import softcap_backward, softcap_forward

caps = st.sampled_from([0.5, 2.0, 30.0])


def ref_softcap(x, cap):
    """c tanh(x / c) per element, from math only."""
    out = np.empty(x.shape)
    for i, v in np.ndenumerate(x):
        out[i] = cap * math.tanh(float(v) / cap)
    return out


@given(shape=any_shapes, seed=seeds, cap=caps)
def test_gradcheck(shape, seed, cap):
    rng = np.random.default_rng(seed)
    gradcheck("softcap", softcap_forward, softcap_backward, [rand(rng, *shape, scale=cap)], names=["x"], rng=rng,
              kwargs={"cap": cap})


@given(shape=any_shapes, seed=seeds, cap=caps)
def test_forward_matches_reference(shape, seed, cap):
    rng = np.random.default_rng(seed)
    x = rand(rng, *shape, scale=2.0 * cap)
    out, _ = softcap_forward(x, cap)
    np.testing.assert_allclose(out, ref_softcap(x, cap), rtol=1e-14, atol=1e-15)


@given(shape=any_shapes, seed=seeds, cap=caps)
def test_derivative_in_unit_interval(shape, seed, cap):
    """dx / dout = 1 - tanh^2 lies in (0, 1]: bounded output, never a flipped gradient; ~1 for |x| << c."""
    rng = np.random.default_rng(seed)
    x = rand(rng, *shape, scale=cap)
    out, cache = softcap_forward(x, cap)
    assert np.all(np.abs(out) < cap)
    ratio = softcap_backward(np.ones(shape), cache)
    assert np.all(ratio > 0.0) and np.all(ratio <= 1.0)
    _, small = softcap_forward(x * 1e-6, cap)
    np.testing.assert_allclose(softcap_backward(np.ones(shape), small), 1.0, rtol=1e-10)


@given(shape=any_shapes, seed=seeds)
def test_pure_and_float32(shape, seed):
    rng = np.random.default_rng(seed)
    forward_backward_pure(softcap_forward, softcap_backward, [rand(rng, *shape)], rng, {"cap": 2.0})
    assert_float32_throughout(softcap_forward, softcap_backward, [rand(rng, *shape)], rng, {"cap": 2.0}, n_grads=1)


def test_extremes_are_finite():
    out, cache = softcap_forward(np.array([-1e300, -5.0, 0.0, 5.0, 1e300]), 2.0)
    assert np.array_equal(out[[0, 2, 4]], [-2.0, 0.0, 2.0])
    dx = softcap_backward(np.ones(5), cache)
    assert np.all(np.isfinite(dx)) and dx[0] == 0.0 and dx[2] == 1.0


@pytest.mark.parametrize("cap, msg", [(0.0, "^cap: "), (-1.0, "^cap: "), (float("inf"), "^cap: "), ("2", "^cap")])
def test_bad_cap(cap, msg):
    with pytest.raises(ValueError, match=msg):
        softcap_forward(np.ones(3), cap)


def test_bad_inputs():
    with pytest.raises(ValueError, match="^x: "):
        softcap_forward([1.0, 2.0], 2.0)
    _, cache = softcap_forward(np.ones(3), 2.0)
    with pytest.raises(ValueError, match="^dout: "):
        softcap_backward(np.ones(4), cache)
