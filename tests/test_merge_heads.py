"""merge_heads_forward / merge_heads_backward: (B, H, T, D) -> (B, T, C), channel c = h * D + d."""

import numpy as np
import pytest
from helpers import (assert_float32_throughout, assert_matches_reference, batch_sizes, forward_backward_pure,
                     gradcheck, head_dims, n_heads, rand, ref_merge_heads, ref_split_heads, seeds, seq_lens)
from hypothesis import given

from npgpt.layers import merge_heads_backward, merge_heads_forward, split_heads_forward


@given(B=batch_sizes, T=seq_lens, H=n_heads, D=head_dims, seed=seeds)
def test_gradcheck(B, T, H, D, seed):
    """dx matches finite differences."""
    rng = np.random.default_rng(seed)
    gradcheck("merge_heads", merge_heads_forward, merge_heads_backward, [rand(rng, B, H, T, D)], names=["x"],
              rng=rng)


@given(B=batch_sizes, T=seq_lens, H=n_heads, D=head_dims, seed=seeds)
def test_forward_matches_reference(B, T, H, D, seed):
    """out[b, t, h * D + d] = x[b, h, t, d], checked by an index loop."""
    rng = np.random.default_rng(seed)
    x = rand(rng, B, H, T, D)
    out, _ = merge_heads_forward(x)
    assert out.shape == (B, T, H * D)
    assert_matches_reference(out, ref_merge_heads(x))


@given(B=batch_sizes, T=seq_lens, H=n_heads, D=head_dims, seed=seeds)
def test_backward_is_the_inverse_rearrangement(B, T, H, D, seed):
    """dx[b, h, t, d] = dout[b, t, h * D + d] (split_heads written as a loop), exactly."""
    rng = np.random.default_rng(seed)
    _, cache = merge_heads_forward(rand(rng, B, H, T, D))
    dout = rand(rng, B, T, H * D)
    dx = merge_heads_backward(dout, cache)
    assert dx.shape == (B, H, T, D)
    assert np.array_equal(dx, ref_split_heads(dout, H))


@given(B=batch_sizes, T=seq_lens, H=n_heads, D=head_dims, seed=seeds)
def test_round_trip_with_split(B, T, H, D, seed):
    """split_heads(merge_heads(x)) == x exactly."""
    rng = np.random.default_rng(seed)
    x = rand(rng, B, H, T, D)
    out, _ = merge_heads_forward(x)
    assert np.array_equal(split_heads_forward(out, H)[0], x)


def test_output_does_not_alias_input():
    """The merged array is new memory: writing into it leaves x alone."""
    x = np.arange(24.0).reshape(1, 2, 3, 4)
    out, _ = merge_heads_forward(x)
    out[...] = 0.0
    assert np.array_equal(x, np.arange(24.0).reshape(1, 2, 3, 4))


@given(B=batch_sizes, T=seq_lens, H=n_heads, D=head_dims, seed=seeds)
def test_inputs_unmodified(B, T, H, D, seed):
    """Neither forward nor backward writes into x or dout."""
    rng = np.random.default_rng(seed)
    forward_backward_pure(merge_heads_forward, merge_heads_backward, [rand(rng, B, H, T, D)], rng)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 4, 2)])
def test_float32(shape):
    """float32 in -> float32 out and dx."""
    rng = np.random.default_rng(1)
    assert_float32_throughout(merge_heads_forward, merge_heads_backward, [rand(rng, *shape)], rng, n_grads=1)


_rng = np.random.default_rng(2)
_x = _rng.standard_normal((2, 2, 3, 4))
_out, _cache = merge_heads_forward(_x)


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: merge_heads_forward(_x.tolist()), "^x:", id="x-list"),
    pytest.param(lambda: merge_heads_forward(_x[0]), "^x:", id="x-3d"),
    pytest.param(lambda: merge_heads_forward(_x[None]), "^x:", id="x-5d"),
    pytest.param(lambda: merge_heads_forward(_x.astype(np.int64)), "^x:", id="x-int"),
    pytest.param(lambda: merge_heads_forward(_x.astype(np.float16)), "^x:", id="x-float16"),
    pytest.param(lambda: merge_heads_backward(_out[..., :6], _cache), "^dout:", id="dout-shape"),
    pytest.param(lambda: merge_heads_backward(_x, _cache), "^dout:", id="dout-input-shape"),
    pytest.param(lambda: merge_heads_backward(_out.astype(np.float32), _cache), "^dout:", id="dout-float32"),
    pytest.param(lambda: merge_heads_backward(_out.tolist(), _cache), "^dout:", id="dout-list"),
])
def test_bad_arguments(call, match):
    """Bad arguments raise a ValueError that starts with the argument's name."""
    with pytest.raises(ValueError, match=match):
        call()
