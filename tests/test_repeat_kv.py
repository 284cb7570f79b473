"""repeat_kv_forward / repeat_kv_backward: kv heads repeated for GQA, the backward sums each group."""

import numpy as np
import pytest
from helpers import batch_sizes, forward_backward_pure, gradcheck, head_dims, n_heads, rand, seeds, seq_lens
from hypothesis import given
from hypothesis import strategies as st

from npgpt.layers.repeat_kv import repeat_kv_backward, repeat_kv_forward

reps = st.integers(1, 3)


@given(B=batch_sizes, H=n_heads, T=seq_lens, D=head_dims, n_rep=reps, seed=seeds)
def test_gradcheck(B, H, T, D, n_rep, seed):
    rng = np.random.default_rng(seed)
    gradcheck("repeat_kv", repeat_kv_forward, repeat_kv_backward, [rand(rng, B, H, T, D)], names=["x"], rng=rng,
              kwargs={"n_rep": n_rep})


@given(B=batch_sizes, H=n_heads, T=seq_lens, D=head_dims, n_rep=reps, seed=seeds)
def test_matches_loops(B, H, T, D, n_rep, seed):
    """out[b, h] = x[b, h // n_rep]; dx[b, j] = sum of dout[b, h] over the h with h // n_rep == j."""
    rng = np.random.default_rng(seed)
    x, dout = rand(rng, B, H, T, D), rand(rng, B, H * n_rep, T, D)
    out, cache = repeat_kv_forward(x, n_rep)
    dx = repeat_kv_backward(dout, cache)
    ref_dx = np.zeros(x.shape)
    for b in range(B):
        for h in range(H * n_rep):
            assert np.array_equal(out[b, h], x[b, h // n_rep])
            ref_dx[b, h // n_rep] += dout[b, h]
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-15, atol=0)


def test_matches_hf_repeat_kv():
    torch = pytest.importorskip("torch")
    repeat_kv = pytest.importorskip("transformers.models.llama.modeling_llama").repeat_kv
    x = rand(np.random.default_rng(0), 2, 3, 4, 5)
    assert np.array_equal(repeat_kv_forward(x, 4)[0], repeat_kv(torch.from_numpy(x), 4).numpy())


def test_n_rep_one_is_a_copy():
    x = rand(np.random.default_rng(1), 1, 2, 3, 4)
    out, cache = repeat_kv_forward(x, 1)
    dx = repeat_kv_backward(out, cache)
    assert np.array_equal(out, x) and not np.shares_memory(out, x) and not np.shares_memory(dx, out)


@given(B=batch_sizes, H=n_heads, T=seq_lens, D=head_dims, n_rep=reps, seed=seeds)
def test_inputs_unmodified(B, H, T, D, n_rep, seed):
    rng = np.random.default_rng(seed)
    forward_backward_pure(repeat_kv_forward, repeat_kv_backward, [rand(rng, B, H, T, D)], rng, {"n_rep": n_rep})


def test_float32():
    x = rand(np.random.default_rng(1), 1, 2, 3, 4).astype(np.float32)
    out, cache = repeat_kv_forward(x, 2)
    assert out.dtype == np.float32 and repeat_kv_backward(out, cache).dtype == np.float32


_x = np.ones((1, 2, 3, 4))


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: repeat_kv_forward(_x[0], 2), "^x:", id="x-3d"),
    pytest.param(lambda: repeat_kv_forward(_x, 0), "^n_rep:", id="n_rep-zero"),
    pytest.param(lambda: repeat_kv_forward(_x, True), "^n_rep:", id="n_rep-bool"),
    pytest.param(lambda: repeat_kv_backward(_x, repeat_kv_forward(_x, 2)[1]), "^dout:", id="dout-shape"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
