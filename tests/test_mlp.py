"""mlp_forward / mlp_backward: c_proj(gelu(c_fc(x))), hidden width 4C."""

import numpy as np
import pytest
from helpers import (assert_float32_throughout, assert_matches_reference, forward_backward_pure, gelu_modes,
                     gradcheck, lead_shapes, rand, ref_mlp, seeds)
from hypothesis import given
from hypothesis import strategies as st

from npgpt.layers import mlp_backward, mlp_forward

channels = st.integers(1, 4)


def _inputs(rng, lead, C):
    return [rand(rng, *lead, C), rand(rng, C, 4 * C, scale=0.5), rand(rng, 4 * C, scale=0.3),
            rand(rng, 4 * C, C, scale=0.3), rand(rng, C, scale=0.3)]


NAMES = ["x", "w_fc", "b_fc", "w_proj", "b_proj"]


@given(lead=lead_shapes, C=channels, approximate=gelu_modes, seed=seeds)
def test_gradcheck(lead, C, approximate, seed):
    """dx, dw_fc, db_fc, dw_proj, db_proj match finite differences, for both GELU forms."""
    rng = np.random.default_rng(seed)
    gradcheck("mlp", mlp_forward, mlp_backward, _inputs(rng, lead, C), names=NAMES, rng=rng,
              kwargs={"approximate": approximate})


@given(lead=lead_shapes, C=channels, approximate=gelu_modes, seed=seeds)
def test_forward_matches_reference(lead, C, approximate, seed):
    """Equals the reference linear -> gelu -> linear built from loops."""
    rng = np.random.default_rng(seed)
    args = _inputs(rng, lead, C)
    out, _ = mlp_forward(*args, approximate=approximate)
    assert out.shape == (*lead, C)
    assert_matches_reference(out, ref_mlp(*args, approximate=approximate))


def test_default_gelu_is_tanh():
    """The default activation is GPT-2's tanh GELU, not the erf one."""
    rng = np.random.default_rng(3)
    args = _inputs(rng, (2, 3), 4)
    out, _ = mlp_forward(*args)
    np.testing.assert_allclose(out, ref_mlp(*args, approximate="tanh"), rtol=1e-12, atol=1e-12)
    assert not np.allclose(out, ref_mlp(*args, approximate="erf"), rtol=1e-12, atol=1e-12)


@given(C=channels, seed=seeds)
def test_positions_are_independent(C, seed):
    """The MLP acts on each position alone: changing one row of x changes only that row of out."""
    rng = np.random.default_rng(seed)
    x, *params = _inputs(rng, (4,), C)
    out, _ = mlp_forward(x, *params)
    x2 = x.copy()
    x2[2] += 1.0
    out2, _ = mlp_forward(x2, *params)
    assert np.array_equal(out2[[0, 1, 3]], out[[0, 1, 3]])


@given(lead=lead_shapes, C=channels, approximate=gelu_modes, seed=seeds)
def test_inputs_unmodified(lead, C, approximate, seed):
    """Neither forward nor backward writes into x, the weights or dout."""
    rng = np.random.default_rng(seed)
    forward_backward_pure(mlp_forward, mlp_backward, _inputs(rng, lead, C), rng, {"approximate": approximate})


@pytest.mark.parametrize("approximate", ["tanh", "erf"])
def test_float32(approximate):
    """float32 in -> float32 out and all five gradients."""
    rng = np.random.default_rng(1)
    assert_float32_throughout(mlp_forward, mlp_backward, _inputs(rng, (2, 3), 4), rng, {"approximate": approximate},
                              n_grads=5)


_rng = np.random.default_rng(2)
_x, _w_fc, _b_fc, _w_proj, _b_proj = _inputs(_rng, (2, 3), 4)
_out, _cache = mlp_forward(_x, _w_fc, _b_fc, _w_proj, _b_proj)


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: mlp_forward(_x.tolist(), _w_fc, _b_fc, _w_proj, _b_proj), "^x:", id="x-list"),
    pytest.param(lambda: mlp_forward(_x.astype(np.int64), _w_fc, _b_fc, _w_proj, _b_proj), "^x:", id="x-int"),
    pytest.param(lambda: mlp_forward(_x.astype(np.float16), _w_fc, _b_fc, _w_proj, _b_proj), "^x:",
                 id="x-float16"),
    pytest.param(lambda: mlp_forward(_x, _w_fc, _b_fc, _w_proj, _b_proj, approximate="exact"), "^approximate:",
                 id="approximate-unknown"),
    pytest.param(lambda: mlp_forward(_x, _w_fc[:3], _b_fc, _w_proj, _b_proj), "^w_fc:", id="w_fc-rows"),
    pytest.param(lambda: mlp_forward(_x, _w_fc.astype(np.float32), _b_fc, _w_proj, _b_proj), "^w_fc:",
                 id="w_fc-float32"),
    pytest.param(lambda: mlp_forward(_x, _w_fc, _b_fc[:3], _w_proj, _b_proj), "^b_fc:", id="b_fc-shape"),
    pytest.param(lambda: mlp_forward(_x, _w_fc, _b_fc, _w_proj[:3], _b_proj), "^w_proj:", id="w_proj-rows"),
    pytest.param(lambda: mlp_forward(_x, _w_fc, _b_fc, _w_proj, _b_proj[:3]), "^b_proj:", id="b_proj-shape"),
    pytest.param(lambda: mlp_forward(_x, _w_fc, _b_fc, _w_proj, _b_proj.astype(np.float32)), "^b_proj:",
                 id="b_proj-float32"),
    pytest.param(lambda: mlp_backward(_out[..., :3], _cache), "^dout:", id="dout-shape"),
    pytest.param(lambda: mlp_backward(_out.astype(np.float32), _cache), "^dout:", id="dout-float32"),
    pytest.param(lambda: mlp_backward(_out.tolist(), _cache), "^dout:", id="dout-list"),
])
def test_bad_arguments(call, match):
    """Bad arguments raise a ValueError that starts with the argument's name."""
    with pytest.raises(ValueError, match=match):
        call()
