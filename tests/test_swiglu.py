"""swiglu_forward / swiglu_backward: act(gate) * up with silu (SwiGLU), gelu_tanh or gelu (GeGLU)."""

import math

import numpy as np
import pytest
from helpers import any_shapes, assert_float32_throughout, forward_backward_pure, gradcheck, rand, seeds
from hypothesis import given
from hypothesis import strategies as st

from npgpt.layers.swiglu import swiglu_backward, swiglu_forward

activations = st.sampled_from(["silu", "gelu_tanh", "gelu"])


def ref_act(v, activation):
    """The activation of one float, from math only."""
    if activation == "silu":
        return v / (1.0 + math.exp(-v))
    if activation == "gelu_tanh":
        return 0.5 * v * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v ** 3)))
    return 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0)))


def ref_glu(gate, up, activation):
    out = np.empty(gate.shape)
    for i, g in np.ndenumerate(gate):
        out[i] = ref_act(float(g), activation) * float(up[i])
    return out


@given(shape=any_shapes, seed=seeds, activation=activations)
def test_gradcheck(shape, seed, activation):
    rng = np.random.default_rng(seed)
    gradcheck("swiglu", swiglu_forward, swiglu_backward, [rand(rng, *shape, scale=2.0), rand(rng, *shape)],
              names=["gate", "up"], rng=rng, kwargs={"activation": activation})


@given(shape=any_shapes, seed=seeds, activation=activations)
def test_forward_matches_reference(shape, seed, activation):
    rng = np.random.default_rng(seed)
    gate, up = rand(rng, *shape, scale=3.0), rand(rng, *shape)
    out, _ = swiglu_forward(gate, up, activation)
    np.testing.assert_allclose(out, ref_glu(gate, up, activation), rtol=1e-12, atol=1e-14)


@given(shape=any_shapes, seed=seeds, activation=activations)
def test_zero_gate_is_zero(shape, seed, activation):
    """act(0) = 0 for all three, so a zero gate gives out 0 and dup 0; dgate = dout * up * act'(0) = dout * up / 2."""
    rng = np.random.default_rng(seed)
    up, dout = rand(rng, *shape), rand(rng, *shape)
    out, cache = swiglu_forward(np.zeros(shape), up, activation)
    assert np.array_equal(out, np.zeros(shape))
    dgate, dup = swiglu_backward(dout, cache)
    assert np.array_equal(dup, np.zeros(shape))
    np.testing.assert_allclose(dgate, 0.5 * dout * up, rtol=1e-15)


def test_silu_extremes_are_finite():
    """sigmoid via expit: no overflow at +-1000; silu(x) -> x and -> 0, silu' -> 1 and -> 0."""
    gate = np.array([-1000.0, -40.0, 40.0, 1000.0])
    out, cache = swiglu_forward(gate, np.ones(4))
    dgate, _ = swiglu_backward(np.ones(4), cache)
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(dgate))
    np.testing.assert_allclose(out, [0.0, -40 * math.exp(-40) / (1 + math.exp(-40)), 40.0, 1000.0], rtol=1e-12)
    np.testing.assert_allclose(dgate, [0.0, 0.0, 1.0, 1.0], atol=1e-15)


def test_matches_torch():
    """Live: torch's silu / gelu(tanh) / gelu products and autograd, float64."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    gate, up, dout = rand(rng, 3, 7, scale=3.0), rand(rng, 3, 7), rand(rng, 3, 7)
    fns = {"silu": torch.nn.functional.silu, "gelu": torch.nn.functional.gelu,
           "gelu_tanh": lambda t: torch.nn.functional.gelu(t, approximate="tanh")}
    for name, fn in fns.items():
        g, u = torch.from_numpy(gate).requires_grad_(True), torch.from_numpy(up).requires_grad_(True)
        y = fn(g) * u
        y.backward(torch.from_numpy(dout))
        out, cache = swiglu_forward(gate, up, name)
        dg, du = swiglu_backward(dout, cache)
        np.testing.assert_allclose(out, y.detach().numpy(), rtol=1e-14, atol=1e-15)
        np.testing.assert_allclose(dg, g.grad.numpy(), rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(du, u.grad.numpy(), rtol=1e-14, atol=1e-15)


@given(shape=any_shapes, seed=seeds, activation=activations)
def test_inputs_unmodified(shape, seed, activation):
    rng = np.random.default_rng(seed)
    forward_backward_pure(swiglu_forward, swiglu_backward, [rand(rng, *shape), rand(rng, *shape)], rng,
                          {"activation": activation})


@pytest.mark.parametrize("activation", ["silu", "gelu_tanh", "gelu"])
def test_float32(activation):
    rng = np.random.default_rng(1)
    assert_float32_throughout(swiglu_forward, swiglu_backward, [rand(rng, 2, 5), rand(rng, 2, 5)], rng,
                              {"activation": activation}, n_grads=2)


_g = np.ones((2, 3))


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: swiglu_forward(_g.tolist(), _g), "^gate:", id="gate-list"),
    pytest.param(lambda: swiglu_forward(_g, _g[:, :2]), "^up:", id="up-shape"),
    pytest.param(lambda: swiglu_forward(_g, _g.astype(np.float32)), "^up:", id="up-dtype"),
    pytest.param(lambda: swiglu_forward(_g, _g, "relu"), "^activation:", id="activation"),
    pytest.param(lambda: swiglu_backward(_g[:1], swiglu_forward(_g, _g)[1]), "^dout:", id="dout-shape"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
