"""load_balancing_loss: transformers' load_balancing_loss_func (Switch Transformer's auxiliary loss), with backward."""

import math
import os

import numpy as np
import pytest
from helpers import forward_backward_pure, gradcheck, seeds
from hypothesis import given
from hypothesis import strategies as st
from moe_helpers import MARGIN, boundary_gap, draw, ranked

from npgpt.layers.load_balancing_loss import load_balancing_loss_backward, load_balancing_loss_forward

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "moe_aux", "load_balancing.npz")
cfgs = st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.integers(1, 5)).flatmap(
    lambda t: st.tuples(*map(st.just, t), st.integers(1, t[3])))  # (L, B, T, E, K)


def ref_loss(z, K, mask=None):
    """Loops: per layer and row a softmax (math.exp, fsum), its ranked top K counted (times the row's mask), the
    probabilities summed; f = counts / rows, P = sums / rows, E * sum f P."""
    L, N, E = z.shape
    m = [1.0] * N if mask is None else [float(v) for v in mask.reshape(-1)]
    counts, sums = [[] for _ in range(E)], [[] for _ in range(E)]
    for layer in z:
        for n, row in enumerate(layer):
            mx = max(row)
            e = [math.exp(v - mx) for v in row]
            s = math.fsum(e)
            p = [v / s for v in e]
            for i in ranked(p)[:K]:
                counts[i].append(m[n])
            for i in range(E):
                sums[i].append(p[i] * m[n])
    rows = L * math.fsum(m)
    return E * math.fsum(math.fsum(counts[i]) / rows * (math.fsum(sums[i]) / rows) for i in range(E))


def _logits(rng, L, N, E, K):
    return draw(rng, lambda r: (r.standard_normal((L, N, E)) * 1.5,),
                lambda z: boundary_gap(z.reshape(-1, E), K) > MARGIN)[0]


def _mask(rng, B, T, use):
    if not use:
        return None
    m = (rng.random((B, T)) > 0.4).astype(np.int64)
    m.reshape(-1)[0] = 1
    return m


@given(cfg=cfgs, seed=seeds, masked=st.booleans())
def test_gradcheck(cfg, seed, masked):
    L, B, T, E, K = cfg
    rng = np.random.default_rng(seed)
    gradcheck("load_balancing_loss", load_balancing_loss_forward, load_balancing_loss_backward,
              [_logits(rng, L, B * T, E, K)], names=["router_logits"], rng=rng,
              kwargs={"top_k": K, "attention_mask": _mask(rng, B, T, masked)})


@given(cfg=cfgs, seed=seeds, masked=st.booleans())
def test_forward_matches_reference(cfg, seed, masked):
    L, B, T, E, K = cfg
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((L, B * T, E)) * 1.5
    mask = _mask(rng, B, T, masked)
    loss, _ = load_balancing_loss_forward(z, K, mask)
    assert loss.shape == () and loss.dtype == np.float64
    np.testing.assert_allclose(loss, ref_loss(z, K, mask), rtol=1e-12)


def test_matches_transformers_fixture():
    """Golden values of transformers' load_balancing_loss_func, its float32 accumulators made float64; the stock
    float32 result differs by ~1e-7 (kept in the fixture to show the island)."""
    f = np.load(FIXTURE)
    K = int(f["K"])
    for tag, mask in (("nomask", None), ("mask", f["mask"])):
        loss, cache = load_balancing_loss_forward(f["logits"], K, mask)
        np.testing.assert_allclose(loss, f[f"loss_{tag}"], rtol=1e-14)
        np.testing.assert_allclose(load_balancing_loss_backward(1.0, cache), f[f"dlogits_{tag}"], rtol=1e-12,
                                   atol=1e-17)
        assert abs(float(loss) - float(f[f"loss_{tag}_stock"])) < 1e-5


def test_matches_transformers_live():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from moe_hf import hf_load_balancing_loss
    rng = np.random.default_rng(8)
    z = rng.standard_normal((2, 12, 5))
    mask = (rng.random((3, 4)) > 0.3).astype(np.int64)
    for m in (None, mask):
        loss, cache = load_balancing_loss_forward(z, 2, m)
        ref, dref = hf_load_balancing_loss(list(z), 5, 2, m)
        np.testing.assert_allclose(loss, ref, rtol=1e-14)
        np.testing.assert_allclose(load_balancing_loss_backward(0.01, cache), 0.01 * np.stack(dref), rtol=1e-12,
                                   atol=1e-18)


def test_properties():
    """Perfect balance gives K (f_e = K / E, P_e = 1 / E); sum_e f_e = K; a (N, E) input is one layer."""
    E, K = 4, 2
    z = np.zeros((1, 8, E))  # uniform probabilities; ties rotate nothing here, so make the choices balanced:
    z[0, np.arange(8), np.arange(8) % E] = 1e-9
    z[0, np.arange(8), (np.arange(8) + 1) % E] = 1e-9
    loss, cache = load_balancing_loss_forward(z, K)
    np.testing.assert_allclose(loss, K, rtol=1e-8)
    np.testing.assert_allclose(cache.f.sum(), K, rtol=1e-15)
    z2 = np.random.default_rng(0).standard_normal((6, E))
    assert load_balancing_loss_forward(z2, K)[0] == load_balancing_loss_forward(z2[None], K)[0]


@given(cfg=cfgs, seed=seeds)
def test_inputs_unmodified(cfg, seed):
    L, B, T, E, K = cfg
    rng = np.random.default_rng(seed)
    forward_backward_pure(load_balancing_loss_forward, lambda d, c: load_balancing_loss_backward(d[()], c),
                          [_logits(rng, L, B * T, E, K), K], rng)


_z = np.random.default_rng(2).standard_normal((2, 6, 4))


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: load_balancing_loss_forward(_z, 5), "^top_k:", id="top_k>E"),
    pytest.param(lambda: load_balancing_loss_forward(np.zeros((2, 6, 0)), 1), "^router_logits:", id="E=0"),
    pytest.param(lambda: load_balancing_loss_forward(_z + np.nan, 1), "^router_logits:", id="nan"),
    pytest.param(lambda: load_balancing_loss_forward(_z[None], 1), "^router_logits:", id="4-d"),
    pytest.param(lambda: load_balancing_loss_forward(_z, 1, np.ones((2, 2))), "^attention_mask:", id="mask-size"),
    pytest.param(lambda: load_balancing_loss_forward(_z, 1, np.zeros((2, 3))), "^attention_mask:", id="mask-zero"),
    pytest.param(lambda: load_balancing_loss_backward("x", load_balancing_loss_forward(_z, 1)[1]), "^dloss:",
                 id="dloss"),
])
def test_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
