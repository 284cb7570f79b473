"""softmax_forward / softmax_backward over the last axis."""

import numpy as np
import pytest
from helpers import (assert_float32_throughout, assert_matches_reference, forward_backward_pure, gradcheck,
                     lead_shapes, rand, ref_softmax, seeds, widths)
from hypothesis import given
from hypothesis import strategies as st

from npgpt.layers import softmax_backward, softmax_forward


@given(lead=lead_shapes, N=widths, seed=seeds)
def test_gradcheck(lead, N, seed):
    """dx matches finite differences (N = 1 included: there dx is exactly 0)."""
    rng = np.random.default_rng(seed)
    gradcheck("softmax", softmax_forward, softmax_backward, [rand(rng, *lead, N, scale=2.0)], names=["x"], rng=rng)


@given(lead=lead_shapes, N=widths, seed=seeds)
def test_forward_matches_reference(lead, N, seed):
    """Equals exp(v - max) / fsum per row, in Python floats."""
    rng = np.random.default_rng(seed)
    x = rand(rng, *lead, N, scale=2.0)
    out, _ = softmax_forward(x)
    assert out.shape == x.shape
    assert_matches_reference(out, ref_softmax(x))


@given(lead=lead_shapes, N=widths, seed=seeds, shift=st.sampled_from([-50.0, 3.0, 700.0]))
def test_rows_sum_to_one_and_shift_invariant(lead, N, seed, shift):
    """Rows are probabilities summing to 1, and adding a constant to a row changes nothing."""
    rng = np.random.default_rng(seed)
    x = rand(rng, *lead, N, scale=3.0)
    out, _ = softmax_forward(x)
    assert np.all(out >= 0.0) and np.all(out <= 1.0)
    np.testing.assert_allclose(out.sum(axis=-1), 1.0, rtol=0, atol=1e-12)
    np.testing.assert_allclose(softmax_forward(x + shift)[0], out, rtol=1e-12, atol=1e-15)


def test_extreme_logits():
    """Logits of +-1e4 give no nan/inf: a one-hot row, a uniform row and a half/half row; dx finite."""
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4, -1e4]])
    out, cache = softmax_forward(x)
    np.testing.assert_array_equal(out, [[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0]])
    dx = softmax_backward(np.array([[1.0, -2.0, 3.0]] * 3), cache)
    assert np.all(np.isfinite(dx))
    np.testing.assert_allclose(dx[0], 0.0, atol=0)
    np.testing.assert_allclose(dx.sum(axis=-1), 0.0, atol=1e-15)


@given(lead=lead_shapes, N=widths, seed=seeds)
def test_gradient_rows_sum_to_zero(lead, N, seed):
    """The softmax Jacobian annihilates constant shifts, so every row of dx sums to 0."""
    rng = np.random.default_rng(seed)
    x = rand(rng, *lead, N)
    _, cache = softmax_forward(x)
    dx = softmax_backward(rand(rng, *lead, N), cache)
    np.testing.assert_allclose(dx.sum(axis=-1), 0.0, atol=1e-14)


@given(lead=lead_shapes, N=widths, seed=seeds)
def test_inputs_unmodified(lead, N, seed):
    """Neither forward nor backward writes into x or dout."""
    rng = np.random.default_rng(seed)
    forward_backward_pure(softmax_forward, softmax_backward, [rand(rng, *lead, N)], rng)


@pytest.mark.parametrize("shape", [(1,), (4,), (2, 3, 5)])
def test_float32(shape):
    """float32 in -> float32 out and dx."""
    rng = np.random.default_rng(1)
    assert_float32_throughout(softmax_forward, softmax_backward, [rand(rng, *shape)], rng, n_grads=1)


_rng = np.random.default_rng(2)
_x = _rng.standard_normal((2, 3))
_out, _cache = softmax_forward(_x)


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: softmax_forward(_x.tolist()), "^x:", id="x-list"),
    pytest.param(lambda: softmax_forward(np.array(1.0)), "^x:", id="x-0d"),
    pytest.param(lambda: softmax_forward(np.zeros((2, 0))), "^x:", id="x-empty-last-axis"),
    pytest.param(lambda: softmax_forward(_x.astype(np.int64)), "^x:", id="x-int"),
    pytest.param(lambda: softmax_forward(_x.astype(np.float16)), "^x:", id="x-float16"),
    pytest.param(lambda: softmax_backward(_out[:, :2], _cache), "^dout:", id="dout-shape"),
    pytest.param(lambda: softmax_backward(_out.astype(np.float32), _cache), "^dout:", id="dout-float32"),
    pytest.param(lambda: softmax_backward(_out.tolist(), _cache), "^dout:", id="dout-list"),
])
def test_bad_arguments(call, match):
    """Bad arguments raise a ValueError that starts with the argument's name."""
    with pytest.raises(ValueError, match=match):
        call()


@given(lead=lead_shapes, N=widths, seed=seeds)
def test_row_max_is_numpy_max(lead, N, seed):
    """reductions.row_max (the softmax's shift, read through argmax) equals x.max(axis=-1, keepdims=True) bit for
    bit, with rows holding NaN, -inf everywhere (a fully masked row) and +inf."""
    from npgpt.layers.reductions import row_max

    rng = np.random.default_rng(seed)
    x = rand(rng, *lead, N, scale=3.0)
    np.testing.assert_array_equal(row_max(x), x.max(axis=-1, keepdims=True))
    rows = x.reshape(-1, N)
    rows[0] = -np.inf
    rows[-1, rng.integers(N)] = np.nan
    if rows.shape[0] > 2:
        rows[1, rng.integers(N)] = np.inf
    np.testing.assert_array_equal(row_max(x), x.max(axis=-1, keepdims=True))  # NaN == NaN here
    assert row_max(x).dtype == x.dtype
