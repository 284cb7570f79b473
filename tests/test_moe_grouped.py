"""moe_grouped_forward / moe_grouped_backward: the grouped MoE layer, held equal to the clear one (moe.py)."""

import numpy as np
import pytest
from helpers import gradcheck, seeds
from hypothesis import given
from hypothesis import strategies as st
from moe_cases import CASES, case_inputs
from test_moe import BACKWARD, FIXTURES, _fixture_names, check_against, pack

from npgpt.layers.moe import moe_backward, moe_forward
from npgpt.layers.moe_grouped import moe_grouped_backward, moe_grouped_forward

BACKWARD[moe_grouped_forward] = moe_grouped_backward
names = st.sampled_from(sorted(CASES))


@given(name=names, lead=st.sampled_from([(1,), (4,), (2, 3)]), seed=seeds)
def test_gradcheck(name, lead, seed):
    rng = np.random.default_rng(seed)
    spec, x, p, _ = case_inputs(name, rng, lead)
    fwd, bwd, keys = pack(moe_grouped_forward, spec, p)
    gradcheck("moe_grouped", fwd, bwd, [x, *(p[k] for k in keys)], names=["x", *keys], rng=rng)


@given(name=names, n=st.integers(1, 40), seed=seeds, with_dz=st.booleans())
def test_equals_clear(name, n, seed, with_dz):
    """Same output, router logits, dx and every gradient as the clear loop: bitwise here (the same products on
    the same rows, each token's K terms added in the same expert order); asserted to 1e-15 relative."""
    rng = np.random.default_rng(seed)
    spec, x, p, _ = case_inputs(name, rng, (n,), C=5, F=4, margin=0.0)
    dout = rng.standard_normal(x.shape)
    dz = rng.standard_normal((n, spec.n_experts)) if with_dz else None
    o1, z1, c1 = moe_forward(x, p, spec)
    o2, z2, c2 = moe_grouped_forward(x, p, spec)
    np.testing.assert_array_equal(c2.indices, c1.indices)
    dx1, g1 = moe_backward(dout, c1, dz)
    dx2, g2 = moe_grouped_backward(dout, c2, dz)
    assert list(g1) == list(g2)
    for a, b in [(o1, o2), (z1, z2), (dx1, dx2), *((g1[k], g2[k]) for k in g1)]:
        np.testing.assert_allclose(b, a, rtol=1e-15, atol=1e-300)


def test_equals_clear_bitwise_large():
    """A bigger batch (every expert busy, some rows idle experts): bitwise equal."""
    rng = np.random.default_rng(4)
    for name in sorted(CASES):
        spec, x, p, _ = case_inputs(name, rng, (3, 50), C=8, F=6, margin=0.0)
        o1, _, c1 = moe_forward(x, p, spec)
        o2, _, c2 = moe_grouped_forward(x, p, spec)
        d = rng.standard_normal(x.shape)
        (dx1, g1), (dx2, g2) = moe_backward(d, c1), moe_grouped_backward(d, c2)
        assert np.array_equal(o1, o2) and np.array_equal(dx1, dx2), name
        assert all(np.array_equal(g1[k], g2[k]) for k in g1), name


@pytest.mark.parametrize("fixture", _fixture_names())
def test_matches_transformers_fixture(fixture):
    check_against(np.load(f"{FIXTURES}/{fixture}.npz"), moe_grouped_forward, moe_grouped_backward)


def test_float32():
    rng = np.random.default_rng(1)
    for name in sorted(CASES):
        spec, x, p, _ = case_inputs(name, rng)
        p32 = {k: v.astype(np.float32) for k, v in p.items()}
        out, z, c = moe_grouped_forward(x.astype(np.float32), p32, spec)
        dx, g = moe_grouped_backward(np.ones_like(out), c)
        assert out.dtype == z.dtype == dx.dtype == np.float32 and all(v.dtype == np.float32 for v in g.values())


def test_bad_arguments():
    spec, x, p, _ = case_inputs("mixtral", np.random.default_rng(2))
    with pytest.raises(ValueError, match="^top_k:"):
        moe_grouped_forward(x, p, spec._replace(top_k=9))
    with pytest.raises(ValueError, match=r"^block_sparse_moe\.experts\.1\.w3\.weight:"):
        moe_grouped_forward(x, {**p, "block_sparse_moe.experts.1.w3.weight": np.ones((5, 3))}, spec)
    with pytest.raises(ValueError, match="^dout:"):
        moe_grouped_backward(x[:1], moe_grouped_forward(x, p, spec)[2])
