"""layernorm_forward / layernorm_backward: normalise the last axis (biased variance, eps inside the sqrt)."""

import numpy as np
import pytest
from helpers import (assert_float32_throughout, assert_matches_reference, forward_backward_pure, gradcheck,
                     lead_shapes, ln_weight, rand, ref_layernorm, seeds, spread_rows, widths)
from hypothesis import given
from hypothesis import strategies as st

from npgpt.layers import layernorm_backward, layernorm_forward


def _inputs(rng, lead, C):
    return [spread_rows(rng, *lead, C), ln_weight(rng, C), rand(rng, C, scale=0.5)]


@given(lead=lead_shapes, C=widths, seed=seeds)
def test_gradcheck(lead, C, seed):
    """dx, dw, db match finite differences (C = 1 included: there dx is exactly 0).

    With C = 2 each row normalises to about (-1, 1) whatever x is: dx is only O(eps / var), too small for finite
    differences to resolve to 1e-6 when eps = 1e-5, so that case runs with eps = 0.1 (which it then tests)."""
    rng = np.random.default_rng(seed)
    gradcheck("layernorm", layernorm_forward, layernorm_backward, _inputs(rng, lead, C), names=["x", "w", "b"],
              rng=rng, kwargs={"eps": 0.1 if C == 2 else 1e-5})


@given(lead=lead_shapes, C=widths, seed=seeds, eps=st.sampled_from([1e-5, 1e-2, 1.0]))
def test_forward_matches_reference(lead, C, seed, eps):
    """Equals a per-row loop using statistics.fmean / pvariance, for several eps."""
    rng = np.random.default_rng(seed)
    x, w, b = _inputs(rng, lead, C)
    out, _ = layernorm_forward(x, w, b, eps=eps)
    assert out.shape == x.shape
    assert_matches_reference(out, ref_layernorm(x, w, b, eps=eps))


@given(lead=lead_shapes, C=st.integers(2, 6), seed=seeds)
def test_normalised_rows(lead, C, seed):
    """With w = 1 and b = 0 every row has mean 0 and variance var / (var + eps)."""
    rng = np.random.default_rng(seed)
    x = spread_rows(rng, *lead, C)
    out, _ = layernorm_forward(x, np.ones(C), np.zeros(C))
    var = np.var(x, axis=-1)
    np.testing.assert_allclose(out.mean(axis=-1), 0.0, atol=1e-14)
    np.testing.assert_allclose(np.var(out, axis=-1), var / (var + 1e-5), rtol=1e-12)


def test_constant_row():
    """A constant row (variance 0) normalises to 0, so the output is exactly b; eps alone sets the slope:
    dx = (dxhat - mean(dxhat)) / sqrt(eps) with dxhat = dout * w."""
    x = np.full((1, 4), 3.25)
    w = np.array([1.5, 0.5, 2.0, 1.0])
    b = np.array([0.1, -0.2, 0.3, 0.4])
    out, cache = layernorm_forward(x, w, b)
    assert np.array_equal(out, b[None])
    dout = np.array([[1.0, -2.0, 0.5, 3.0]])
    dx, dw, db = layernorm_backward(dout, cache)
    dxhat = dout * w
    np.testing.assert_allclose(dx, (dxhat - dxhat.mean()) / np.sqrt(1e-5), rtol=1e-12)
    assert np.array_equal(dw, np.zeros(4)) and np.array_equal(db, dout[0])


@given(lead=lead_shapes, C=widths, seed=seeds)
def test_inputs_unmodified(lead, C, seed):
    """Neither forward nor backward writes into x, w, b or dout."""
    rng = np.random.default_rng(seed)
    forward_backward_pure(layernorm_forward, layernorm_backward, _inputs(rng, lead, C), rng)


@pytest.mark.parametrize("lead", [(), (3,), (2, 3)])
def test_float32(lead):
    """float32 in -> float32 out, dx, dw, db."""
    rng = np.random.default_rng(1)
    assert_float32_throughout(layernorm_forward, layernorm_backward, _inputs(rng, lead, 4), rng, n_grads=3)


_rng = np.random.default_rng(2)
_x, _w, _b = _inputs(_rng, (2, 3), 4)
_out, _cache = layernorm_forward(_x, _w, _b)


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: layernorm_forward(_x.tolist(), _w, _b), "^x:", id="x-list"),
    pytest.param(lambda: layernorm_forward(np.array(1.0), _w[:1], _b[:1]), "^x:", id="x-0d"),
    pytest.param(lambda: layernorm_forward(_x.astype(np.int64), _w, _b), "^x:", id="x-int"),
    pytest.param(lambda: layernorm_forward(_x.astype(np.float16), _w, _b), "^x:", id="x-float16"),
    pytest.param(lambda: layernorm_forward(_x, _w[:3], _b), "^w:", id="w-shape"),
    pytest.param(lambda: layernorm_forward(_x, _w[None], _b), "^w:", id="w-2d"),
    pytest.param(lambda: layernorm_forward(_x, _w.astype(np.float32), _b), "^w:", id="w-float32-x-float64"),
    pytest.param(lambda: layernorm_forward(_x, _w, _b[:3]), "^b:", id="b-shape"),
    pytest.param(lambda: layernorm_forward(_x, _w, _b.astype(np.float32)), "^b:", id="b-float32-x-float64"),
    pytest.param(lambda: layernorm_forward(_x.astype(np.float32), _w, _b), "^w:", id="w-float64-x-float32"),
    pytest.param(lambda: layernorm_forward(_x, _w, _b, eps=0.0), "^eps:", id="eps-zero"),
    pytest.param(lambda: layernorm_forward(_x, _w, _b, eps=-1e-5), "^eps:", id="eps-negative"),
    pytest.param(lambda: layernorm_forward(_x, _w, _b, eps=float("nan")), "^eps:", id="eps-nan"),
    pytest.param(lambda: layernorm_forward(_x, _w, _b, eps=None), "^eps:", id="eps-none"),
    pytest.param(lambda: layernorm_backward(_out[..., :3], _cache), "^dout:", id="dout-shape"),
    pytest.param(lambda: layernorm_backward(_out.astype(np.float32), _cache), "^dout:", id="dout-float32"),
    pytest.param(lambda: layernorm_backward(_out.tolist(), _cache), "^dout:", id="dout-list"),
])
def test_bad_arguments(call, match):
    """Bad arguments raise a ValueError that starts with the argument's name."""
    with pytest.raises(ValueError, match=match):
        call()
