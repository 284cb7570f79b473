"""gelu_forward / gelu_backward: GPT-2's tanh approximation (default) and the exact erf form."""

import numpy as np
import pytest
from helpers import (any_shapes, assert_float32_throughout, assert_matches_reference, forward_backward_pure,
                     gelu_modes, gradcheck, rand, ref_gelu, seeds)
from hypothesis import given

from npgpt.layers import gelu_backward, gelu_forward


@given(shape=any_shapes, approximate=gelu_modes, seed=seeds)
def test_gradcheck(shape, approximate, seed):
    """dx matches finite differences for both forms, x ~ 2 N(0, 1) (both tails reached)."""
    rng = np.random.default_rng(seed)
    gradcheck(f"gelu[{approximate}]", gelu_forward, gelu_backward, [rand(rng, *shape, scale=2.0)], names=["x"],
              rng=rng, kwargs={"approximate": approximate})


@given(shape=any_shapes, approximate=gelu_modes, seed=seeds)
def test_forward_matches_reference(shape, approximate, seed):
    """Equals the formula evaluated per element with math.tanh / math.erf."""
    rng = np.random.default_rng(seed)
    x = rand(rng, *shape, scale=2.0)
    out, _ = gelu_forward(x, approximate)
    assert out.shape == x.shape
    assert_matches_reference(out, ref_gelu(x, approximate))


def test_default_is_tanh():
    """GPT-2 uses the tanh approximation, and it is the default."""
    x = np.linspace(-3.0, 3.0, 13)
    assert np.array_equal(gelu_forward(x)[0], gelu_forward(x, "tanh")[0])


@pytest.mark.parametrize("approximate", ["tanh", "erf"])
def test_reference_values_and_tails(approximate):
    """gelu(0) = 0, gelu(x) -> x for large x and -> 0 for very negative x (no overflow at +-1e4)."""
    x = np.array([0.0, 1.0, -1.0, 10.0, -10.0, 1e4, -1e4])
    out, cache = gelu_forward(x, approximate)
    assert out[0] == 0.0
    np.testing.assert_allclose(out[1:3], ref_gelu(x[1:3], approximate), rtol=1e-14)
    np.testing.assert_allclose(out[[3, 5]], x[[3, 5]], rtol=1e-15)
    assert abs(out[4]) < 1e-15 and out[6] == 0.0
    dx = gelu_backward(np.ones_like(x), cache)
    assert np.all(np.isfinite(dx))
    np.testing.assert_allclose(dx[[0, 3, 5, 6]], [0.5, 1.0, 1.0, 0.0], atol=1e-15)


def test_tanh_and_erf_are_close_but_different():
    """The tanh approximation is within 1e-3 of the exact GELU everywhere, but it is not the same function."""
    x = np.linspace(-8.0, 8.0, 3201)
    diff = np.abs(gelu_forward(x, "tanh")[0] - gelu_forward(x, "erf")[0])
    assert diff.max() < 1e-3
    assert diff.max() > 1e-5


@given(shape=any_shapes, approximate=gelu_modes, seed=seeds)
def test_inputs_unmodified(shape, approximate, seed):
    """Neither forward nor backward writes into x or dout."""
    rng = np.random.default_rng(seed)
    forward_backward_pure(gelu_forward, gelu_backward, [rand(rng, *shape)], rng, {"approximate": approximate})


@pytest.mark.parametrize("approximate", ["tanh", "erf"])
@pytest.mark.parametrize("shape", [(5,), (2, 3, 4)])
def test_float32(shape, approximate):
    """float32 in -> float32 out and dx, for both forms."""
    rng = np.random.default_rng(1)
    assert_float32_throughout(gelu_forward, gelu_backward, [rand(rng, *shape)], rng, {"approximate": approximate},
                              n_grads=1)


@pytest.mark.parametrize("approximate", ["tanh", "erf"])
def test_zero_dimensional_input_is_rejected(approximate):
    """x must have at least one axis, like every other elementwise layer's input."""
    with pytest.raises(ValueError, match="^x:"):
        gelu_forward(np.array(0.7), approximate)


_rng = np.random.default_rng(2)
_x = _rng.standard_normal((2, 3))
_out, _cache = gelu_forward(_x)
_out_erf, _cache_erf = gelu_forward(_x, "erf")


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: gelu_forward(_x.tolist()), "^x:", id="x-list"),
    pytest.param(lambda: gelu_forward(1.0), "^x:", id="x-python-float"),
    pytest.param(lambda: gelu_forward(_x.astype(np.int64)), "^x:", id="x-int"),
    pytest.param(lambda: gelu_forward(_x.astype(np.float16)), "^x:", id="x-float16"),
    pytest.param(lambda: gelu_forward(_x, "none"), "^approximate:", id="approximate-none"),
    pytest.param(lambda: gelu_forward(_x, None), "^approximate:", id="approximate-None"),
    pytest.param(lambda: gelu_backward(_out[:, :2], _cache), "^dout:", id="dout-shape"),
    pytest.param(lambda: gelu_backward(_out.astype(np.float32), _cache), "^dout:", id="dout-float32"),
    pytest.param(lambda: gelu_backward(_out_erf[None], _cache_erf), "^dout:", id="dout-ndim-erf"),
    pytest.param(lambda: gelu_backward(_out.tolist(), _cache), "^dout:", id="dout-list"),
])
def test_bad_arguments(call, match):
    """Bad arguments raise a ValueError that starts with the argument's name."""
    with pytest.raises(ValueError, match=match):
        call()
