"""dropout_forward / dropout_backward: inverted dropout, identity when train=False or p=0."""

import math

import numpy as np
import pytest
from helpers import any_shapes, assert_float32_throughout, forward_backward_pure, gradcheck, rand, seeds
from hypothesis import given
from hypothesis import strategies as st

from npgpt.layers import dropout_backward, dropout_forward

drop_probs = st.sampled_from([0.0, 0.1, 0.5, 0.8])


def _seeded_forward(mask_seed):
    """dropout in training mode with a fresh Generator per call, so every call draws the same mask."""
    def forward(x, p):
        return dropout_forward(x, p, np.random.default_rng(mask_seed), train=True)
    return forward


@given(shape=any_shapes, p=drop_probs, seed=seeds)
def test_gradcheck(shape, p, seed):
    """dx matches finite differences of the forward with the same mask."""
    rng = np.random.default_rng(seed)
    gradcheck("dropout", _seeded_forward(seed), dropout_backward, [rand(rng, *shape), p], names=["x", "p"], rng=rng,
              wrt=[0])


@given(shape=any_shapes, p=drop_probs, seed=seeds)
def test_kept_values_scaled_dropped_values_zero(shape, p, seed):
    """Every output is either 0 or x / (1 - p) (to the last bit or so), and backward applies the same mask
    and scale to dout."""
    rng = np.random.default_rng(seed)
    x = rand(rng, *shape) + 0.5 * np.sign(rand(rng, *shape))  # |x| is never tiny, so out == 0 means dropped
    out, cache = dropout_forward(x, p, np.random.default_rng(seed))
    kept = out != 0.0
    np.testing.assert_allclose(out[kept], x[kept] / (1.0 - p), rtol=1e-15, atol=0)
    dout = rand(rng, *shape)
    dx = dropout_backward(dout, cache)
    np.testing.assert_allclose(dx[kept], dout[kept] / (1.0 - p), rtol=1e-15, atol=0)
    assert np.all(dx[~kept] == 0.0)
    if p == 0.0:
        assert np.all(kept)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_keep_rate(p, dtype):
    """Over 10^6 elements the kept fraction is 1 - p within 6 standard deviations, and E[out] = x."""
    n = 1_000_000
    out, _ = dropout_forward(np.ones(n, dtype=dtype), p, np.random.default_rng(123))
    sigma = math.sqrt(p * (1.0 - p) / n)
    assert abs(np.count_nonzero(out) / n - (1.0 - p)) < 6.0 * sigma
    assert abs(out.mean(dtype=np.float64) - 1.0) < 6.0 * sigma / (1.0 - p)


def test_same_seed_same_mask_different_seed_different_mask():
    """The mask comes from rng alone: same seed -> same output, another seed -> another mask."""
    x = np.arange(1.0, 1001.0)
    a, _ = dropout_forward(x, 0.5, np.random.default_rng(7))
    b, _ = dropout_forward(x, 0.5, np.random.default_rng(7))
    c, _ = dropout_forward(x, 0.5, np.random.default_rng(8))
    assert np.array_equal(a, b)
    assert not np.array_equal(a != 0, c != 0)


def test_successive_calls_draw_new_masks():
    """Two calls with the same Generator use different masks (the generator advances)."""
    rng = np.random.default_rng(0)
    x = np.ones(1000)
    assert not np.array_equal(dropout_forward(x, 0.5, rng)[0], dropout_forward(x, 0.5, rng)[0])


@pytest.mark.parametrize("p, train, rng", [(0.5, False, np.random.default_rng(0)), (0.5, False, None),
                                           (0.0, True, None), (0.0, True, np.random.default_rng(0))])
def test_identity_when_not_training_or_p_zero(p, train, rng):
    """train=False or p=0: out == x and dx == dout exactly, as new arrays; the generator is not used."""
    data = np.random.default_rng(1)
    x = data.standard_normal((3, 4))
    state = None if rng is None else rng.bit_generator.state
    out, cache = dropout_forward(x, p, rng, train=train)
    assert np.array_equal(out, x) and out is not x and not np.shares_memory(out, x)
    dout = data.standard_normal((3, 4))
    dx = dropout_backward(dout, cache)
    assert np.array_equal(dx, dout) and not np.shares_memory(dx, dout)
    if rng is not None:
        assert rng.bit_generator.state == state


@given(shape=any_shapes, p=drop_probs, seed=seeds, train=st.booleans())
def test_inputs_unmodified(shape, p, seed, train):
    """Neither forward nor backward writes into x or dout."""
    rng = np.random.default_rng(seed)
    forward_backward_pure(dropout_forward, dropout_backward, [rand(rng, *shape), p, np.random.default_rng(seed)],
                          rng, {"train": train})


@pytest.mark.parametrize("p, train", [(0.3, True), (0.3, False), (0.0, True)])
def test_float32(p, train):
    """float32 in -> float32 out and dx (mask drawn in float32 too)."""
    rng = np.random.default_rng(1)
    assert_float32_throughout(dropout_forward, dropout_backward, [rand(rng, 4, 5), p, np.random.default_rng(2)],
                              rng, {"train": train}, n_grads=1)


def test_zero_dimensional_input_is_rejected():
    """x must have at least one axis (a scalar has no elements to drop independently)."""
    with pytest.raises(ValueError, match="^x:"):
        dropout_forward(np.array(2.0), 0.5, np.random.default_rng(0))


_rng = np.random.default_rng(2)
_x = _rng.standard_normal((2, 3))
_out, _cache = dropout_forward(_x, 0.5, _rng)
_out_eval, _cache_eval = dropout_forward(_x, 0.5, None, train=False)


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: dropout_forward(_x.tolist(), 0.5, _rng), "^x:", id="x-list"),
    pytest.param(lambda: dropout_forward(_x.astype(np.int64), 0.5, _rng), "^x:", id="x-int"),
    pytest.param(lambda: dropout_forward(_x.astype(np.float16), 0.5, _rng), "^x:", id="x-float16"),
    pytest.param(lambda: dropout_forward(_x.astype(np.float16), 0.5, _rng, train=False), "^x:",
                 id="x-float16-eval"),
    pytest.param(lambda: dropout_forward(_x, -0.1, _rng), "^p:", id="p-negative"),
    pytest.param(lambda: dropout_forward(_x, 1.0, _rng), "^p:", id="p-one"),
    pytest.param(lambda: dropout_forward(_x, 1.5, _rng), "^p:", id="p-above-one"),
    pytest.param(lambda: dropout_forward(_x, float("nan"), _rng), "^p:", id="p-nan"),
    pytest.param(lambda: dropout_forward(_x, 1.0, _rng, train=False), "^p:", id="p-one-eval"),
    pytest.param(lambda: dropout_forward(_x, None, _rng), "^p:", id="p-None"),
    pytest.param(lambda: dropout_forward(_x, 0.5, None), "^rng:", id="rng-None-training"),
    pytest.param(lambda: dropout_forward(_x, 0.5, np.random.RandomState(0)), "^rng:", id="rng-RandomState"),
    pytest.param(lambda: dropout_backward(_out[:, :2], _cache), "^dout:", id="dout-shape"),
    pytest.param(lambda: dropout_backward(_out.astype(np.float32), _cache), "^dout:", id="dout-float32"),
    pytest.param(lambda: dropout_backward(_out_eval[None], _cache_eval), "^dout:", id="dout-ndim-eval"),
    pytest.param(lambda: dropout_backward(_out_eval.astype(np.float32), _cache_eval), "^dout:",
                 id="dout-float32-eval"),
    pytest.param(lambda: dropout_backward(_out.tolist(), _cache), "^dout:", id="dout-list"),
])
def test_bad_arguments(call, match):
    """Bad arguments raise a ValueError that starts with the argument's name."""
    with pytest.raises(ValueError, match=match):
        call()
