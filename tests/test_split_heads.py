"""split_heads_forward / split_heads_backward: (B, T, C) -> (B, H, T, D), channel c = h * D + d."""

import numpy as np
import pytest
from helpers import (assert_float32_throughout, assert_matches_reference, batch_sizes, forward_backward_pure,
                     gradcheck, head_dims, n_heads, rand, ref_merge_heads, ref_split_heads, seeds, seq_lens)
from hypothesis import given

from npgpt.layers import merge_heads_forward, split_heads_backward, split_heads_forward


@given(B=batch_sizes, T=seq_lens, H=n_heads, D=head_dims, seed=seeds)
def test_gradcheck(B, T, H, D, seed):
    """dx matches finite differences."""
    rng = np.random.default_rng(seed)
    gradcheck("split_heads", split_heads_forward, split_heads_backward, [rand(rng, B, T, H * D)], names=["x"],
              rng=rng, kwargs={"n_head": H})


@given(B=batch_sizes, T=seq_lens, H=n_heads, D=head_dims, seed=seeds)
def test_forward_matches_reference(B, T, H, D, seed):
    """out[b, h, t, d] = x[b, t, h * D + d], checked by an index loop."""
    rng = np.random.default_rng(seed)
    x = rand(rng, B, T, H * D)
    out, _ = split_heads_forward(x, H)
    assert out.shape == (B, H, T, D)
    assert_matches_reference(out, ref_split_heads(x, H))


@given(B=batch_sizes, T=seq_lens, H=n_heads, D=head_dims, seed=seeds)
def test_backward_is_the_inverse_rearrangement(B, T, H, D, seed):
    """dx[b, t, h * D + d] = dout[b, h, t, d] (merge_heads written as a loop), exactly."""
    rng = np.random.default_rng(seed)
    _, cache = split_heads_forward(rand(rng, B, T, H * D), H)
    dout = rand(rng, B, H, T, D)
    dx = split_heads_backward(dout, cache)
    assert dx.shape == (B, T, H * D)
    assert np.array_equal(dx, ref_merge_heads(dout))


@given(B=batch_sizes, T=seq_lens, H=n_heads, D=head_dims, seed=seeds)
def test_round_trip_with_merge(B, T, H, D, seed):
    """merge_heads(split_heads(x)) == x exactly."""
    rng = np.random.default_rng(seed)
    x = rand(rng, B, T, H * D)
    out, _ = split_heads_forward(x, H)
    assert np.array_equal(merge_heads_forward(out)[0], x)


@given(B=batch_sizes, T=seq_lens, H=n_heads, D=head_dims, seed=seeds)
def test_inputs_unmodified(B, T, H, D, seed):
    """Neither forward nor backward writes into x or dout."""
    rng = np.random.default_rng(seed)
    forward_backward_pure(split_heads_forward, split_heads_backward, [rand(rng, B, T, H * D)], rng, {"n_head": H})


def test_numpy_integer_n_head():
    """n_head may be a numpy integer."""
    x = np.arange(12.0).reshape(1, 2, 6)
    assert np.array_equal(split_heads_forward(x, np.int64(3))[0], split_heads_forward(x, 3)[0])


@pytest.mark.parametrize("H", [1, 2, 4])
def test_float32(H):
    """float32 in -> float32 out and dx."""
    rng = np.random.default_rng(1)
    assert_float32_throughout(split_heads_forward, split_heads_backward, [rand(rng, 2, 3, 4)], rng, {"n_head": H},
                              n_grads=1)


_rng = np.random.default_rng(2)
_x = _rng.standard_normal((2, 3, 6))
_out, _cache = split_heads_forward(_x, 2)


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: split_heads_forward(_x.tolist(), 2), "^x:", id="x-list"),
    pytest.param(lambda: split_heads_forward(_x[0], 2), "^x:", id="x-2d"),
    pytest.param(lambda: split_heads_forward(_x[None], 2), "^x:", id="x-4d"),
    pytest.param(lambda: split_heads_forward(_x.astype(np.int64), 2), "^x:", id="x-int"),
    pytest.param(lambda: split_heads_forward(_x.astype(np.float16), 2), "^x:", id="x-float16"),
    pytest.param(lambda: split_heads_forward(_x, 4), "^n_head:", id="n_head-not-dividing"),
    pytest.param(lambda: split_heads_forward(_x, 12), "^n_head:", id="n_head-above-C"),
    pytest.param(lambda: split_heads_forward(_x, 0), "^n_head:", id="n_head-zero"),
    pytest.param(lambda: split_heads_forward(_x, -2), "^n_head:", id="n_head-negative"),
    pytest.param(lambda: split_heads_forward(_x, 2.0), "^n_head:", id="n_head-float"),
    pytest.param(lambda: split_heads_forward(_x, None), "^n_head:", id="n_head-None"),
    pytest.param(lambda: split_heads_backward(_out[..., :2], _cache), "^dout:", id="dout-shape"),
    pytest.param(lambda: split_heads_backward(_x, _cache), "^dout:", id="dout-input-shape"),
    pytest.param(lambda: split_heads_backward(_out.astype(np.float32), _cache), "^dout:", id="dout-float32"),
    pytest.param(lambda: split_heads_backward(_out.tolist(), _cache), "^dout:", id="dout-list"),
])
def test_bad_arguments(call, match):
    """Bad arguments raise a ValueError that starts with the argument's name."""
    with pytest.raises(ValueError, match=match):
        call()
