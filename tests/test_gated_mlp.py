"""gated_mlp_forward / gated_mlp_backward: down(act(x gate^T) * (x up^T)), HF nn.Linear layout, no biases."""

import math

import numpy as np
import pytest
from helpers import assert_float32_throughout, forward_backward_pure, gradcheck, lead_shapes, rand, seeds, widths
from hypothesis import given
from hypothesis import strategies as st

from npgpt.layers.gated_mlp import gated_mlp_backward, gated_mlp_forward

activations = st.sampled_from(["silu", "gelu_tanh", "gelu"])


def ref_gated_mlp(x, wg, wu, wd, activation):
    """Row by row with math.fsum dot products and math-only activations."""
    def act(v):
        if activation == "silu":
            return v / (1.0 + math.exp(-v))
        if activation == "gelu_tanh":
            return 0.5 * v * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v ** 3)))
        return 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0)))
    C, F = x.shape[-1], wg.shape[0]
    rows = x.reshape(-1, C)
    out = np.empty(rows.shape)
    for n, row in enumerate(rows):
        h = [act(math.fsum(row[c] * wg[f, c] for c in range(C))) * math.fsum(row[c] * wu[f, c] for c in range(C))
             for f in range(F)]
        for c in range(C):
            out[n, c] = math.fsum(h[f] * wd[c, f] for f in range(F))
    return out.reshape(x.shape)


def _inputs(rng, lead, C, F):
    return [rand(rng, *lead, C), rand(rng, F, C, scale=0.7), rand(rng, F, C, scale=0.7), rand(rng, C, F, scale=0.5)]


@given(lead=lead_shapes, C=widths, F=widths, seed=seeds, activation=activations)
def test_gradcheck(lead, C, F, seed, activation):
    rng = np.random.default_rng(seed)
    gradcheck("gated_mlp", gated_mlp_forward, gated_mlp_backward, _inputs(rng, lead, C, F),
              names=["x", "w_gate", "w_up", "w_down"], rng=rng, kwargs={"activation": activation})


@given(lead=lead_shapes, C=widths, F=widths, seed=seeds, activation=activations)
def test_forward_matches_reference(lead, C, F, seed, activation):
    rng = np.random.default_rng(seed)
    args = _inputs(rng, lead, C, F)
    out, _ = gated_mlp_forward(*args, activation=activation)
    np.testing.assert_allclose(out, ref_gated_mlp(*args, activation), rtol=1e-12, atol=1e-13)


def test_matches_hf_llama_mlp():
    """Live: HF's LlamaMLP in float64, forward and every gradient."""
    torch = pytest.importorskip("torch")
    tr = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaMLP
    rng = np.random.default_rng(4)
    x, wg, wu, wd = _inputs(rng, (2, 3), 6, 10)
    cfg = tr.LlamaConfig(hidden_size=6, intermediate_size=10, num_attention_heads=2, num_key_value_heads=2)
    mlp = LlamaMLP(cfg).double()
    with torch.no_grad():
        for lin, w in ((mlp.gate_proj, wg), (mlp.up_proj, wu), (mlp.down_proj, wd)):
            lin.weight.copy_(torch.from_numpy(w))
    xt = torch.from_numpy(x).requires_grad_(True)
    dout = rand(rng, 2, 3, 6)
    y = mlp(xt)
    y.backward(torch.from_numpy(dout))
    out, cache = gated_mlp_forward(x, wg, wu, wd)
    grads = gated_mlp_backward(dout, cache)
    np.testing.assert_allclose(out, y.detach().numpy(), rtol=1e-13, atol=1e-14)
    for g, t in zip(grads, (xt, mlp.gate_proj.weight, mlp.up_proj.weight, mlp.down_proj.weight)):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=1e-12, atol=1e-13)


@given(lead=lead_shapes, C=widths, F=widths, seed=seeds)
def test_inputs_unmodified(lead, C, F, seed):
    rng = np.random.default_rng(seed)
    forward_backward_pure(gated_mlp_forward, gated_mlp_backward, _inputs(rng, lead, C, F), rng)


def test_float32():
    rng = np.random.default_rng(1)
    assert_float32_throughout(gated_mlp_forward, gated_mlp_backward, _inputs(rng, (2, 3), 4, 6), rng, n_grads=4)


_x, _wg, _wu, _wd = _inputs(np.random.default_rng(2), (2,), 4, 6)


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: gated_mlp_forward(_x[:, :3], _wg, _wu, _wd), "^w_gate:", id="x-width"),
    pytest.param(lambda: gated_mlp_forward(_x, _wg, _wu[:5], _wd), "^w_up:", id="w_up-shape"),
    pytest.param(lambda: gated_mlp_forward(_x, _wg, _wu, _wd.T), "^w_down:", id="w_down-transposed"),
    pytest.param(lambda: gated_mlp_forward(_x, _wg, _wu, _wd.astype(np.float32)), "^w_down:", id="w_down-dtype"),
    pytest.param(lambda: gated_mlp_forward(_x, _wg, _wu, _wd, "tanh"), "^activation:", id="activation"),
    pytest.param(lambda: gated_mlp_backward(_x[:1], gated_mlp_forward(_x, _wg, _wu, _wd)[1]), "^dout:", id="dout"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
