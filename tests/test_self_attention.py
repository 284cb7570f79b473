"""self_attention_forward / self_attention_backward: c_attn -> heads -> causal attention -> merge -> c_proj."""

import numpy as np
import pytest
from helpers import (assert_float32_throughout, assert_matches_reference, forward_backward_pure, gradcheck, rand,
                     ref_self_attention, seeds)
from hypothesis import given
from hypothesis import strategies as st

import npgpt.layers.self_attention as self_attention_module
from npgpt.layers import KVSlot, self_attention_backward, self_attention_forward
from npgpt.layers.attention_chunks import AttentionChunksCache

batch_sizes = st.integers(1, 2)
seq_lens = st.integers(1, 4)
n_heads = st.integers(1, 3)
head_dims = st.integers(1, 3)
NAMES = ["x", "w_attn", "b_attn", "w_proj", "b_proj"]


def _inputs(rng, B, T, C):
    return [rand(rng, B, T, C), rand(rng, C, 3 * C, scale=0.5), rand(rng, 3 * C, scale=0.3),
            rand(rng, C, C, scale=0.5), rand(rng, C, scale=0.3)]


@given(B=batch_sizes, T=seq_lens, H=n_heads, D=head_dims, seed=seeds)
def test_gradcheck(B, T, H, D, seed):
    """dx, dw_attn, db_attn, dw_proj, db_proj match finite differences."""
    rng = np.random.default_rng(seed)
    gradcheck("self_attention", self_attention_forward, self_attention_backward, _inputs(rng, B, T, H * D),
              names=NAMES, rng=rng, kwargs={"n_head": H})


@given(B=batch_sizes, T=st.integers(1, 5), H=n_heads, D=st.integers(1, 4), seed=seeds)
def test_forward_matches_reference(B, T, H, D, seed):
    """Equals the composition of the loop references (q | k | v column blocks, channel c = h * D + d)."""
    rng = np.random.default_rng(seed)
    args = _inputs(rng, B, T, H * D)
    out, _ = self_attention_forward(*args, n_head=H)
    assert out.shape == (B, T, H * D)
    assert_matches_reference(out, ref_self_attention(*args, n_head=H))


@given(B=batch_sizes, T=st.integers(2, 5), H=n_heads, D=head_dims, seed=seeds, data=st.data())
def test_causal_forward(B, T, H, D, seed, data):
    """Changing x at positions > t leaves out[:, :t+1] bit-for-bit unchanged."""
    rng = np.random.default_rng(seed)
    t = data.draw(st.integers(0, T - 2), label="t")
    x, *params = _inputs(rng, B, T, H * D)
    out, _ = self_attention_forward(x, *params, n_head=H)
    x2 = x.copy()
    x2[:, t + 1:] = rand(rng, B, T - t - 1, H * D, scale=5.0)
    out2, _ = self_attention_forward(x2, *params, n_head=H)
    assert np.array_equal(out2[:, :t + 1], out[:, :t + 1])
    assert not np.array_equal(out2[:, t + 1:], out[:, t + 1:])


@given(B=batch_sizes, T=st.integers(2, 5), H=n_heads, D=head_dims, seed=seeds, data=st.data())
def test_causal_backward(B, T, H, D, seed, data):
    """With dout nonzero only at positions <= t, dx is exactly 0 at positions > t."""
    rng = np.random.default_rng(seed)
    t = data.draw(st.integers(0, T - 2), label="t")
    _, cache = self_attention_forward(*_inputs(rng, B, T, H * D), n_head=H)
    dout = rand(rng, B, T, H * D)
    dout[:, t + 1:] = 0.0
    dx = self_attention_backward(dout, cache)[0]
    assert np.all(dx[:, t + 1:] == 0.0)
    assert np.any(dx[:, :t + 1] != 0.0)


@given(B=batch_sizes, T=seq_lens, H=n_heads, D=head_dims, seed=seeds)
def test_key_bias_gradient_is_zero(B, T, H, D, seed):
    """The key bias adds q . b_k to every score in a row, which softmax ignores: its gradient (the middle third
    of db_attn) is 0 up to rounding, while the query and value thirds are not (for T >= 2)."""
    rng = np.random.default_rng(seed)
    C = H * D
    _, cache = self_attention_forward(*_inputs(rng, B, T, C), n_head=H)
    db_attn = self_attention_backward(rand(rng, B, T, C), cache)[2]
    scale = np.abs(db_attn).max()
    assert np.all(np.abs(db_attn[C:2 * C]) <= 1e-13 * scale)
    assert np.any(db_attn[2 * C:] != 0.0)
    if T >= 2:
        assert np.any(np.abs(db_attn[:C]) > 1e-6 * scale)


@given(B=batch_sizes, T=seq_lens, H=n_heads, D=head_dims, seed=seeds)
def test_inputs_unmodified(B, T, H, D, seed):
    """Neither forward nor backward writes into x, the weights or dout."""
    rng = np.random.default_rng(seed)
    forward_backward_pure(self_attention_forward, self_attention_backward, _inputs(rng, B, T, H * D), rng,
                          {"n_head": H})


@given(B=batch_sizes, T=st.integers(3, 6), H=n_heads, D=head_dims, chunk=st.integers(1, 2), seed=seeds)
def test_longer_sequences_run_by_query_chunks(B, T, H, D, chunk, seed):
    """Past QUERY_CHUNK positions the dense pair runs by query chunks (attention_chunks.py): the cache says so,
    the output still equals the loop reference and the gradients still match finite differences."""
    rng = np.random.default_rng(seed)
    args = _inputs(rng, B, T, H * D)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(self_attention_module, "QUERY_CHUNK", chunk)  # 64 in the model: shorter T for the loops
        out, cache = self_attention_forward(*args, n_head=H)
        assert isinstance(cache.attention, AttentionChunksCache)
        assert_matches_reference(out, ref_self_attention(*args, n_head=H))
        gradcheck("self_attention", self_attention_forward, self_attention_backward, args, names=NAMES, rng=rng,
                  kwargs={"n_head": H})


@pytest.mark.parametrize("H", [1, 2])
def test_float32(H):
    """float32 in -> float32 out and all five gradients."""
    rng = np.random.default_rng(1)
    assert_float32_throughout(self_attention_forward, self_attention_backward, _inputs(rng, 2, 3, 4), rng,
                              {"n_head": H}, n_grads=5)


_rng = np.random.default_rng(2)
_x, _w_attn, _b_attn, _w_proj, _b_proj = _inputs(_rng, 2, 3, 4)
_out, _cache = self_attention_forward(_x, _w_attn, _b_attn, _w_proj, _b_proj, 2)


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: self_attention_forward(_x.tolist(), _w_attn, _b_attn, _w_proj, _b_proj, 2), "^x:",
                 id="x-list"),
    pytest.param(lambda: self_attention_forward(_x[0], _w_attn, _b_attn, _w_proj, _b_proj, 2), "^x:", id="x-2d"),
    pytest.param(lambda: self_attention_forward(_x[None], _w_attn, _b_attn, _w_proj, _b_proj, 2), "^x:",
                 id="x-4d"),
    pytest.param(lambda: self_attention_forward(_x.astype(np.int64), _w_attn, _b_attn, _w_proj, _b_proj, 2), "^x:",
                 id="x-int"),
    pytest.param(lambda: self_attention_forward(_x.astype(np.float16), _w_attn, _b_attn, _w_proj, _b_proj, 2),
                 "^x:", id="x-float16"),
    pytest.param(lambda: self_attention_forward(_x, _w_attn, _b_attn, _w_proj, _b_proj, 3), "^n_head:",
                 id="n_head-not-dividing"),
    pytest.param(lambda: self_attention_forward(_x, _w_attn, _b_attn, _w_proj, _b_proj, 0), "^n_head:",
                 id="n_head-zero"),
    pytest.param(lambda: self_attention_forward(_x, _w_attn[:, :8], _b_attn[:8], _w_proj, _b_proj, 2), "^w_attn:",
                 id="w_attn-columns"),
    pytest.param(lambda: self_attention_forward(_x, _w_attn[:3], _b_attn, _w_proj, _b_proj, 2), "^w_attn:",
                 id="w_attn-rows"),
    pytest.param(lambda: self_attention_forward(_x, _w_attn.astype(np.float32), _b_attn, _w_proj, _b_proj, 2),
                 "^w_attn:", id="w_attn-float32"),
    pytest.param(lambda: self_attention_forward(_x, _w_attn, _b_attn[:6], _w_proj, _b_proj, 2), "^b_attn:",
                 id="b_attn-shape"),
    pytest.param(lambda: self_attention_forward(_x, _w_attn, _b_attn, _w_proj[:3], _b_proj, 2), "^w_proj:",
                 id="w_proj-rows"),
    pytest.param(lambda: self_attention_forward(_x, _w_attn, _b_attn, _w_proj, _b_proj[:3], 2), "^b_proj:",
                 id="b_proj-shape"),
    pytest.param(lambda: self_attention_backward(_out[..., :3], _cache), "^dout:", id="dout-shape"),
    pytest.param(lambda: self_attention_backward(_out.astype(np.float32), _cache), "^dout:", id="dout-float32"),
    pytest.param(lambda: self_attention_backward(_out.tolist(), _cache), "^dout:", id="dout-list"),
])
def test_bad_arguments(call, match):
    """Bad arguments raise a ValueError that starts with the argument's name."""
    with pytest.raises(ValueError, match=match):
        call()


@given(B=batch_sizes, T=st.integers(2, 6), H=n_heads, D=head_dims, seed=seeds, data=st.data())
def test_kv_cache_continues_the_full_forward(B, T, H, D, seed, data):
    """A forward of positions t0.. with the keys and values of 0..t0-1 in a KVSlot gives the full forward's
    rows t0.., and leaves every position's keys and values in the slot (decoding = the same layer)."""
    rng = np.random.default_rng(seed)
    C = H * D
    x, w_attn, b_attn, w_proj, b_proj = _inputs(rng, B, T, C)
    full, _ = self_attention_forward(x, w_attn, b_attn, w_proj, b_proj, H)
    capacity = T + data.draw(st.integers(0, 2), label="spare")
    k_buf, v_buf = np.zeros((B, H, capacity, D)), np.zeros((B, H, capacity, D))
    t0 = 0
    for t1 in sorted(set(data.draw(st.lists(st.integers(1, T - 1), max_size=3), label="cuts")) | {T}):
        part, _ = self_attention_forward(x[:, t0:t1], w_attn, b_attn, w_proj, b_proj, H, kv=KVSlot(k_buf, v_buf, t0))
        np.testing.assert_allclose(part, full[:, t0:t1], rtol=1e-12, atol=1e-13)
        t0 = t1
    k_ref = (x @ w_attn + b_attn)[..., C:2 * C].reshape(B, T, H, D).transpose(0, 2, 1, 3)  # (B, H, T, D)
    np.testing.assert_allclose(k_buf[:, :, :T], k_ref, rtol=1e-12, atol=1e-13)
    assert not k_buf[:, :, T:].any()


def test_kv_cache_bad_arguments():
    rng = np.random.default_rng(0)
    x, w_attn, b_attn, w_proj, b_proj = _inputs(rng, 2, 3, 4)
    buf = np.zeros((2, 2, 5, 2))
    call = lambda kv: self_attention_forward(x, w_attn, b_attn, w_proj, b_proj, 2, kv=kv)  # noqa: E731
    with pytest.raises(ValueError, match="^kv: expected a KVSlot"):
        call((buf, buf, 0))
    with pytest.raises(ValueError, match=r"^kv\.start: 3 cached \+ 3 new positions exceed the capacity 5"):
        call(KVSlot(buf, buf, 3))
    with pytest.raises(ValueError, match=r"^kv\.k:"):
        call(KVSlot(np.zeros((2, 1, 5, 4)), buf, 0))  # heads and head size of another split
    with pytest.raises(ValueError, match=r"^kv\.v:"):
        call(KVSlot(buf, buf.astype(np.float32), 0))
    out, cache = call(KVSlot(buf, buf.copy(), 1))
    with pytest.raises(ValueError, match="^cache: the forward attended over a KV cache"):
        self_attention_backward(out, cache)
