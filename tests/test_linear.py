"""linear_forward / linear_backward: out = x @ w + b in GPT-2's Conv1D layout (w is (C_in, C_out))."""

import numpy as np
import pytest
from helpers import (assert_float32_throughout, assert_matches_reference, forward_backward_pure, gradcheck,
                     lead_shapes, rand, ref_linear, seeds, widths)
from hypothesis import given

from npgpt.layers import linear_backward, linear_forward


def _inputs(rng, lead, C_in, C_out):
    return [rand(rng, *lead, C_in), rand(rng, C_in, C_out, scale=0.4), rand(rng, C_out, scale=0.5)]


@given(lead=lead_shapes, C_in=widths, C_out=widths, seed=seeds)
def test_gradcheck(lead, C_in, C_out, seed):
    """dx, dw, db match finite differences for x of any rank >= 1 (leading axes folded)."""
    rng = np.random.default_rng(seed)
    gradcheck("linear", linear_forward, linear_backward, _inputs(rng, lead, C_in, C_out), names=["x", "w", "b"],
              rng=rng)


@given(lead=lead_shapes, C_in=widths, C_out=widths, seed=seeds)
def test_forward_matches_reference(lead, C_in, C_out, seed):
    """x @ w + b equals an fsum loop over the input channels."""
    rng = np.random.default_rng(seed)
    x, w, b = _inputs(rng, lead, C_in, C_out)
    out, _ = linear_forward(x, w, b)
    assert out.shape == (*lead, C_out)
    assert_matches_reference(out, ref_linear(x, w, b))


@given(lead=lead_shapes, C_in=widths, C_out=widths, seed=seeds)
def test_backward_matches_formulas(lead, C_in, C_out, seed):
    """dx = dout w^T, dw = sum over positions of outer(x, dout), db = sum of dout, written with einsum."""
    rng = np.random.default_rng(seed)
    x, w, b = _inputs(rng, lead, C_in, C_out)
    _, cache = linear_forward(x, w, b)
    dout = rand(rng, *lead, C_out)
    dx, dw, db = linear_backward(dout, cache)
    np.testing.assert_allclose(dx, np.einsum("...o,io->...i", dout, w), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, np.einsum("ni,no->io", x.reshape(-1, C_in), dout.reshape(-1, C_out)),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(db, dout.reshape(-1, C_out).sum(axis=0), rtol=1e-12, atol=1e-12)


@given(lead=lead_shapes, C_in=widths, C_out=widths, seed=seeds)
def test_inputs_unmodified(lead, C_in, C_out, seed):
    """Neither forward nor backward writes into x, w, b or dout."""
    rng = np.random.default_rng(seed)
    forward_backward_pure(linear_forward, linear_backward, _inputs(rng, lead, C_in, C_out), rng)


@pytest.mark.parametrize("lead", [(), (2,), (2, 3)])
def test_float32(lead):
    """float32 in -> float32 out, dx, dw, db."""
    rng = np.random.default_rng(1)
    assert_float32_throughout(linear_forward, linear_backward, _inputs(rng, lead, 3, 2), rng, n_grads=3)


_rng = np.random.default_rng(2)
_x, _w, _b = _inputs(_rng, (2, 3), 4, 5)
_out, _cache = linear_forward(_x, _w, _b)


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: linear_forward(_x.tolist(), _w, _b), "^x:", id="x-list"),
    pytest.param(lambda: linear_forward(np.array(1.0), _w, _b), "^x:", id="x-0d"),
    pytest.param(lambda: linear_forward(_x.astype(np.int32), _w, _b), "^x:", id="x-int"),
    pytest.param(lambda: linear_forward(_x.astype(np.float16), _w, _b), "^x:", id="x-float16"),
    pytest.param(lambda: linear_forward(_x[..., :3], _w, _b), "^x:", id="x-last-dim-mismatch"),
    pytest.param(lambda: linear_forward(_x, _w[0], _b), "^w:", id="w-1d"),
    pytest.param(lambda: linear_forward(_x, _w[None], _b), "^w:", id="w-3d"),
    pytest.param(lambda: linear_forward(_x, _w.astype(np.int64), _b), "^w:", id="w-int"),
    pytest.param(lambda: linear_forward(_x, _w.astype(np.float32), _b), "^w:", id="w-float32-x-float64"),
    pytest.param(lambda: linear_forward(_x, _w, _b[:4]), "^b:", id="b-shape"),
    pytest.param(lambda: linear_forward(_x, _w, _b[None]), "^b:", id="b-2d"),
    pytest.param(lambda: linear_forward(_x, _w, _b.astype(np.float32)), "^b:", id="b-float32-x-float64"),
    pytest.param(lambda: linear_forward(_x.astype(np.float32), _w.astype(np.float32), _b), "^b:",
                 id="b-float64-x-float32"),
    pytest.param(lambda: linear_backward(_out[..., :4], _cache), "^dout:", id="dout-shape"),
    pytest.param(lambda: linear_backward(_out[0], _cache), "^dout:", id="dout-ndim"),
    pytest.param(lambda: linear_backward(_out.astype(np.float32), _cache), "^dout:", id="dout-float32"),
    pytest.param(lambda: linear_backward(_out.tolist(), _cache), "^dout:", id="dout-list"),
])
def test_bad_arguments(call, match):
    """Bad arguments raise a ValueError that starts with the argument's name."""
    with pytest.raises(ValueError, match=match):
        call()
