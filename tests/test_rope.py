"""rope_forward / rope_backward: rotary position embedding, half-split and interleaved, partial, scaled."""

import math

import numpy as np
import pytest
from helpers import batch_sizes, forward_backward_pure, gradcheck, n_heads, rand, seeds, seq_lens
from hypothesis import given
from hypothesis import strategies as st

from npgpt.layers.rope import rope_backward, rope_forward, rope_inv_freq

half_dims = st.integers(1, 3)  # D = 2 * half (+ pass-through channels in some tests)
layouts = st.booleans()


def ref_rope(x, positions, theta=10000.0, rotary_dim=None, interleaved=False, factor=1.0):
    """One pair at a time: angle = (pos / factor) * theta^(-2i/R) with math.pow, then math.cos/sin."""
    B, H, T, D = x.shape
    R = D if rotary_dim is None else rotary_dim
    pos = np.broadcast_to(positions, (B, T))
    out = x.astype(np.float64).copy()
    for b in range(B):
        for t in range(T):
            for i in range(R // 2):
                ang = float(pos[b, t]) / factor * math.pow(theta, -2.0 * i / R)
                c, s = math.cos(ang), math.sin(ang)
                ia, ib = (2 * i, 2 * i + 1) if interleaved else (i, i + R // 2)
                for h in range(H):
                    xa, xb = float(x[b, h, t, ia]), float(x[b, h, t, ib])
                    out[b, h, t, ia] = xa * c - xb * s
                    out[b, h, t, ib] = xb * c + xa * s
    return out


@given(B=batch_sizes, H=n_heads, T=seq_lens, half=half_dims, extra=st.integers(0, 2), seed=seeds,
       interleaved=layouts, offset=st.integers(0, 40))
def test_gradcheck(B, H, T, half, extra, seed, interleaved, offset):
    """dx matches finite differences (partial rotary when extra > 0), both layouts, any offset."""
    rng = np.random.default_rng(seed)
    x = rand(rng, B, H, T, 2 * half + extra)
    gradcheck("rope", rope_forward, rope_backward, [x], names=["x"], rng=rng,
              kwargs={"offset": offset, "rotary_dim": 2 * half, "interleaved": interleaved})


@given(B=batch_sizes, H=n_heads, T=seq_lens, half=half_dims, extra=st.integers(0, 2), seed=seeds,
       interleaved=layouts, theta=st.sampled_from([10000.0, 500000.0, 7.5]), factor=st.sampled_from([1.0, 4.0]),
       per_row=st.booleans())
def test_forward_matches_reference(B, H, T, half, extra, seed, interleaved, theta, factor, per_row):
    """Equals the per-pair loop, with explicit (T,) or per-row (B, T) positions and linear scaling."""
    rng = np.random.default_rng(seed)
    x = rand(rng, B, H, T, 2 * half + extra)
    positions = rng.integers(0, 3000, size=(B, T) if per_row else (T,))
    scaling = None if factor == 1.0 else {"rope_type": "linear", "factor": factor}
    out, _ = rope_forward(x, positions=positions, theta=theta, rotary_dim=2 * half, interleaved=interleaved,
                          scaling=scaling)
    np.testing.assert_allclose(out, ref_rope(x, positions, theta, 2 * half, interleaved, factor),
                               rtol=1e-12, atol=1e-12)


@given(B=batch_sizes, H=n_heads, T=seq_lens, half=half_dims, seed=seeds, interleaved=layouts)
def test_backward_inverts_forward(B, H, T, half, seed, interleaved):
    """The rotation is orthogonal: backward of the forward's output gives x back, and norms are kept."""
    rng = np.random.default_rng(seed)
    x = rand(rng, B, H, T, 2 * half)
    out, cache = rope_forward(x, offset=7, interleaved=interleaved)
    np.testing.assert_allclose(np.linalg.norm(out, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-13)
    np.testing.assert_allclose(rope_backward(out, cache), x, rtol=1e-12, atol=1e-13)


@given(half=half_dims, seed=seeds, interleaved=layouts, m=st.integers(0, 500), n=st.integers(0, 500),
       shift=st.integers(0, 1000))
def test_dot_product_depends_on_position_difference(half, seed, interleaved, m, n, shift):
    """rope(q, m) . rope(k, n) = rope(q, m + s) . rope(k, n + s): relative positions only."""
    rng = np.random.default_rng(seed)
    q, k = rand(rng, 1, 1, 1, 2 * half), rand(rng, 1, 1, 1, 2 * half)

    def dot(pq, pk):
        rq, _ = rope_forward(q, positions=np.array([pq]), interleaved=interleaved)
        rk, _ = rope_forward(k, positions=np.array([pk]), interleaved=interleaved)
        return float(np.sum(rq * rk))
    assert math.isclose(dot(m, n), dot(m + shift, n + shift), rel_tol=1e-9, abs_tol=1e-10)


@given(B=batch_sizes, H=n_heads, T=seq_lens, half=half_dims, seed=seeds)
def test_layouts_are_a_channel_permutation(B, H, T, half, seed):
    """Interleaved RoPE is half-split RoPE on channels reordered (0, 2, 4, ..., 1, 3, 5, ...)."""
    rng = np.random.default_rng(seed)
    x = rand(rng, B, H, T, 2 * half)
    perm = np.r_[0:2 * half:2, 1:2 * half:2]
    inter, _ = rope_forward(x, offset=3, interleaved=True)
    split, _ = rope_forward(x[..., perm], offset=3)
    assert np.array_equal(inter[..., perm], split)


def test_partial_rotary_passes_the_rest_through_and_offset_equals_positions():
    rng = np.random.default_rng(0)
    x = rand(rng, 2, 2, 4, 6)
    out, cache = rope_forward(x, offset=5, rotary_dim=4)
    assert np.array_equal(out[..., 4:], x[..., 4:])
    out2, _ = rope_forward(x, positions=np.arange(5, 9), rotary_dim=4)
    assert np.array_equal(out, out2)
    dout = rand(rng, *x.shape)
    assert np.array_equal(rope_backward(dout, cache)[..., 4:], dout[..., 4:])
    first, _ = rope_forward(x, offset=0)
    assert np.array_equal(first[:, :, 0], x[:, :, 0])  # position 0: angle 0, the identity


def ref_llama3_inv_freq(R, theta, factor, low, high, old):
    """Meta's apply_scaling for Llama 3.1, one frequency at a time."""
    out = []
    for i in range(R // 2):
        f = theta ** (-2.0 * i / R)
        wavelen = 2 * math.pi / f
        if wavelen < old / high:
            out.append(f)
        elif wavelen > old / low:
            out.append(f / factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append((1 - smooth) * f / factor + smooth * f)
    return np.array(out)


def test_llama3_scaling_matches_reference():
    s = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
         "original_max_position_embeddings": 8192}
    got = rope_inv_freq(128, 500000.0, s)
    np.testing.assert_allclose(got, ref_llama3_inv_freq(128, 500000.0, 8.0, 1.0, 4.0, 8192), rtol=1e-14)
    assert got[0] == 1.0 and math.isclose(got[-1], 500000.0 ** (-126 / 128) / 8.0, rel_tol=1e-14)


@given(B=batch_sizes, H=n_heads, T=seq_lens, half=half_dims, seed=seeds)
def test_inputs_unmodified(B, H, T, half, seed):
    rng = np.random.default_rng(seed)
    forward_backward_pure(rope_forward, rope_backward, [rand(rng, B, H, T, 2 * half)], rng, {"offset": 2})


def test_float32():
    """float32 in -> float32 out and dx; tables rounded once from float64 angles."""
    rng = np.random.default_rng(1)
    x = rand(rng, 2, 2, 3, 4)
    out, cache = rope_forward(x.astype(np.float32), offset=1000)
    assert out.dtype == np.float32 and cache.cos.dtype == np.float32
    assert rope_backward(out, cache).dtype == np.float32
    ref, _ = rope_forward(x, offset=1000)
    np.testing.assert_allclose(out, ref, rtol=0, atol=3e-7 * np.abs(ref).max())


def test_matches_hf_apply_rotary_pos_emb():
    """Live: HF's LlamaRotaryEmbedding + apply_rotary_pos_emb (half-split) in float32, default and llama3."""
    torch = pytest.importorskip("torch")
    tr = pytest.importorskip("transformers")
    from transformers.models.llama import modeling_llama as ml
    rng = np.random.default_rng(2)
    q = rand(rng, 2, 3, 5, 8).astype(np.float32)
    pos = rng.integers(0, 9000, size=(2, 5))
    for scaling in (None, {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                           "original_max_position_embeddings": 64}, {"rope_type": "linear", "factor": 2.0}):
        params = {"rope_type": "default", "rope_theta": 10000.0} if scaling is None else \
            {**scaling, "rope_theta": 10000.0}
        cfg = tr.LlamaConfig(hidden_size=24, num_attention_heads=3, head_dim=8, rope_parameters=params)
        emb = ml.LlamaRotaryEmbedding(cfg)
        # HF forms the angle pos * inv_freq in float32: its error grows like pos * 2^-24, ours stays round-off
        for p, atol in ((pos, 1e-3), (pos % 16, 2e-6)):
            cos, sin = emb(torch.zeros(1, dtype=torch.float32), torch.from_numpy(p))
            qt, _ = ml.apply_rotary_pos_emb(torch.from_numpy(q), torch.from_numpy(q), cos, sin)
            ours, _ = rope_forward(q, positions=p, scaling=scaling)
            np.testing.assert_allclose(ours, qt.numpy(), rtol=0, atol=atol)
            ours64, _ = rope_forward(q.astype(np.float64), positions=p, scaling=scaling)
            assert np.max(np.abs(ours - ours64)) < 2e-6


_x = np.random.default_rng(3).standard_normal((1, 2, 3, 4))
_out, _cache = rope_forward(_x)


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: rope_forward(_x[0]), "^x:", id="x-3d"),
    pytest.param(lambda: rope_forward(np.zeros((1, 1, 2, 3))), "^x: head dim D=3 is odd", id="x-odd-D"),
    pytest.param(lambda: rope_forward(_x, rotary_dim=6), "^rotary_dim:", id="rotary-gt-D"),
    pytest.param(lambda: rope_forward(_x, rotary_dim=3), "^rotary_dim:", id="rotary-odd"),
    pytest.param(lambda: rope_forward(_x, rotary_dim=True), "^rotary_dim:", id="rotary-bool"),
    pytest.param(lambda: rope_forward(_x, offset=-1), "^offset:", id="offset-negative"),
    pytest.param(lambda: rope_forward(_x, positions=np.arange(3), offset=1), "^offset:", id="offset-and-pos"),
    pytest.param(lambda: rope_forward(_x, positions=np.arange(4)), "^positions:", id="positions-shape"),
    pytest.param(lambda: rope_forward(_x, positions=np.arange(3.0)), "^positions:", id="positions-float"),
    pytest.param(lambda: rope_forward(_x, positions=-np.arange(3)), "^positions:", id="positions-negative"),
    pytest.param(lambda: rope_forward(_x, theta=1.0), "^theta:", id="theta-one"),
    pytest.param(lambda: rope_forward(_x, interleaved=1), "^interleaved:", id="interleaved-int"),
    pytest.param(lambda: rope_forward(_x, scaling={"rope_type": "ntk", "factor": 2.0}),
                 "^rope_scaling: rope_type 'ntk' is not supported", id="scaling-unknown"),
    pytest.param(lambda: rope_forward(_x, scaling={"rope_type": "dynamic", "factor": 2.0}),
                 "^max_position_embeddings: rope_type 'dynamic' needs it", id="scaling-dynamic-no-max"),
    pytest.param(lambda: rope_forward(_x, scaling={"rope_type": "linear"}), "^rope_scaling:", id="scaling-no-factor"),
    pytest.param(lambda: rope_forward(_x, scaling={"type": "linear", "factor": 0.0}), "^rope_scaling.factor:",
                 id="scaling-zero-factor"),
    pytest.param(lambda: rope_backward(_out[..., :2], _cache), "^dout:", id="dout-shape"),
    pytest.param(lambda: rope_backward(_out.astype(np.float32), _cache), "^dout:", id="dout-dtype"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
