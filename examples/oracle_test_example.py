"""What another project's test file looks like when it uses npgpt as its reference.

Imagine a project that ships its own "fused" LayerNorm, its own causal attention, and two layers npgpt does
not have (SiLU and RMSNorm).  Its code lives in the first half of this file; in a real project it would be
imported from that project's package.  The tests in the second half check it three ways:

1. against npgpt's forward/backward pairs, on random float64 inputs;
2. with npgpt.gradcheck.check_layer, for the layers npgpt does not have;
3. against a golden file written by npgpt.oracle.dump_cases, read with nothing but numpy and json, the way
   a C or Rust project would read it.

Run: python -m pytest examples/oracle_test_example.py
Conventions (weight layout, GELU form, LayerNorm eps, causal mask, tolerances): docs/oracle.md
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from npgpt.gradcheck import check_layer, relative_error
from npgpt.layers import attention_backward, attention_forward, layernorm_backward, layernorm_forward
from npgpt.oracle import check_path, dump_cases

# ============================================================================ the project's own code


def fused_layernorm_forward(x, gamma, beta, eps=1e-5):
    """LayerNorm with Welford's one-pass mean and variance, updated one channel at a time (the way a kernel
    streaming over C would).  Biased variance, eps inside the square root: npgpt's conventions."""
    mean = np.zeros(x.shape[:-1], dtype=x.dtype)
    m2 = np.zeros(x.shape[:-1], dtype=x.dtype)
    C = x.shape[-1]
    for c in range(C):
        xc = x[..., c]
        delta = xc - mean
        mean += delta / (c + 1)
        m2 += delta * (xc - mean)
    inv_std = 1.0 / np.sqrt(m2 / C + eps)
    xn = (x - mean[..., None]) * inv_std[..., None]
    return xn * gamma + beta, (xn, inv_std, gamma)


def fused_layernorm_backward(dy, cache):
    """Everything over one common denominator C, so one fused pass computes dx."""
    xn, inv_std, gamma = cache
    C = xn.shape[-1]
    g = dy * gamma
    rows = dy.reshape(-1, C)
    dgamma = np.einsum("nc,nc->c", rows, xn.reshape(-1, C))
    dbeta = rows.sum(axis=0)
    dx = (inv_std[..., None] / C) * (C * g - g.sum(-1, keepdims=True) - xn * (g * xn).sum(-1, keepdims=True))
    return dx, dgamma, dbeta


def looped_causal_attention_forward(q, k, v):
    """Causal attention one query position at a time: query t only ever looks at keys 0..t, so no mask."""
    B, H, T, D = q.shape
    scale = 1.0 / np.sqrt(D)
    out = np.empty_like(q)
    probs = []
    for t in range(T):
        s = np.einsum("bhd,bhjd->bhj", q[:, :, t], k[:, :, : t + 1]) * scale  # (B, H, t+1)
        s -= s.max(axis=-1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(axis=-1, keepdims=True)
        out[:, :, t] = np.einsum("bhj,bhjd->bhd", p, v[:, :, : t + 1])
        probs.append(p)
    return out, (q, k, v, probs, scale)


def looped_causal_attention_backward(dout, cache):
    q, k, v, probs, scale = cache
    dq, dk, dv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    for t, p in enumerate(probs):
        dv[:, :, : t + 1] += p[..., None] * dout[:, :, t, None, :]
        dp = np.einsum("bhd,bhjd->bhj", dout[:, :, t], v[:, :, : t + 1])
        ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True)) * scale
        dq[:, :, t] = np.einsum("bhj,bhjd->bhd", ds, k[:, :, : t + 1])
        dk[:, :, : t + 1] += ds[..., None] * q[:, :, t, None, :]
    return dq, dk, dv


def masked_fill_attention_forward(q, k, v, fill=-1e9):
    """The common alternative: full scores, future positions overwritten with a large finite negative."""
    T, D = q.shape[-2], q.shape[-1]
    s = q @ k.swapaxes(-1, -2) / np.sqrt(D)
    s = np.where(np.tril(np.ones((T, T), dtype=bool)), s, fill)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return (p / p.sum(axis=-1, keepdims=True)) @ v


def silu_forward(x):
    """SiLU / swish: x * sigmoid(x).  npgpt has no such layer."""
    s = 1.0 / (1.0 + np.exp(-x))
    return x * s, (x, s)


def silu_backward(dout, cache):
    x, s = cache
    return dout * s * (1.0 + x * (1.0 - s))


def rmsnorm_forward(x, g, eps=1e-6):
    """RMSNorm (as in LLaMA): x / sqrt(mean(x^2) + eps) * g, no centring and no bias."""
    inv_rms = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)
    xn = x * inv_rms
    return xn * g, (xn, inv_rms, g)


def rmsnorm_backward(dout, cache):
    xn, inv_rms, g = cache
    dxn = dout * g
    dg = np.sum(dout * xn, axis=tuple(range(dout.ndim - 1)))
    dx = inv_rms * (dxn - xn * np.mean(dxn * xn, axis=-1, keepdims=True))
    return dx, dg


# ============================================================================ the project's tests

RTOL = 1e-10  # float64 against float64: only the order of summation differs


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.mark.parametrize("shape", [(2, 5, 8), (3, 16), (1, 1, 7)])
def test_fused_layernorm_matches_npgpt(rng, shape):
    C = shape[-1]
    x = rng.standard_normal(shape) * 3.0 + rng.standard_normal(shape[:-1] + (1,))  # rows with their own mean
    w, b = 1.0 + 0.1 * rng.standard_normal(C), 0.1 * rng.standard_normal(C)
    dout = rng.standard_normal(shape)

    mine, my_cache = fused_layernorm_forward(x, w, b)
    ref, ref_cache = layernorm_forward(x, w, b)
    assert relative_error(mine, ref) < RTOL
    for name, g_mine, g_ref in zip(("dx", "dw", "db"), fused_layernorm_backward(dout, my_cache),
                                   layernorm_backward(dout, ref_cache)):
        assert relative_error(g_mine, g_ref) < RTOL, name


@pytest.mark.parametrize("B,H,T,D", [(2, 2, 5, 4), (1, 3, 9, 8)])
def test_looped_attention_matches_npgpt(rng, B, H, T, D):
    q, k, v, dout = (rng.standard_normal((B, H, T, D)) for _ in range(4))
    mine, my_cache = looped_causal_attention_forward(q, k, v)
    ref, ref_cache = attention_forward(q, k, v)
    assert relative_error(mine, ref) < RTOL
    for name, g_mine, g_ref in zip(("dq", "dk", "dv"), looped_causal_attention_backward(dout, my_cache),
                                   attention_backward(dout, ref_cache)):
        assert relative_error(g_mine, g_ref) < RTOL, name


def test_masked_fill_attention_matches_within_tolerance(rng):
    # npgpt masks with exactly -inf; a finite fill agrees only because exp underflows to 0, so compare with
    # a tolerance, never with ==
    q, k, v = (rng.standard_normal((2, 2, 6, 4)) for _ in range(3))
    ref, _ = attention_forward(q, k, v)
    np.testing.assert_allclose(masked_fill_attention_forward(q, k, v), ref, rtol=1e-12, atol=1e-14)


def test_gradcheck_silu(rng):
    x = rng.standard_normal((3, 7)) * 3.0
    results = check_layer(silu_forward, silu_backward, [x], names=["x"], rng=rng)
    assert results[0].error < 1e-7


def test_gradcheck_rmsnorm(rng):
    x, g = rng.standard_normal((2, 3, 6)), 1.0 + 0.1 * rng.standard_normal(6)
    results = check_layer(rmsnorm_forward, rmsnorm_backward, [x, g], names=["x", "g"], kwargs={"eps": 1e-6},
                          rng=rng)
    assert [r.name for r in results] == ["x", "g"]


def test_gradcheck_catches_a_wrong_backward(rng):
    def bad_silu_backward(dout, cache):
        x, s = cache
        return dout * s  # forgot the x * s * (1 - s) term

    with pytest.raises(AssertionError, match="x"):
        check_layer(silu_forward, bad_silu_backward, [rng.standard_normal(5)], names=["x"], rng=rng)


def _read_npz(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Read a golden file the way a non-npgpt project would: numpy's .npz reader and json, nothing else."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads(str(arrays.pop("meta")[()]))


def _within(a: np.ndarray, b: np.ndarray, rtol: float, atol: float) -> bool:
    """The documented criterion: |a - b| <= rtol |b| + atol * max|b|, per element."""
    scale = float(np.max(np.abs(b))) or 1.0
    return bool(np.all(np.abs(a - b) <= rtol * np.abs(b) + atol * scale))


def test_fused_layernorm_against_golden_file(tmp_path):
    golden = tmp_path / "golden"
    dump_cases(golden, dtype="float64", seed=7)
    a, meta = _read_npz(golden / "layernorm.npz")
    assert meta["case"] == "layernorm" and meta["inputs"] == ["x", "w", "b"]
    rtol, atol = meta["tolerance"]["rtol"], meta["tolerance"]["atol"]

    out, cache = fused_layernorm_forward(a["in.x"], a["in.w"], a["in.b"], eps=meta["args"]["eps"])
    dx, dw, db = fused_layernorm_backward(a["dout"], cache)
    mine = {"out": out, "grad.x": dx, "grad.w": dw, "grad.b": db}
    for key, value in mine.items():
        assert value.shape == a[key].shape and value.dtype == a[key].dtype, key
        assert _within(value, a[key], rtol, atol), key

    # the same check through the oracle's own tool: write our results in the golden layout and compare
    # (what `python -m npgpt.oracle check mine/layernorm.npz --against golden/layernorm.npz` does)
    (tmp_path / "mine").mkdir()
    np.savez(tmp_path / "mine" / "layernorm.npz", meta=np.array(json.dumps(meta)),
             **{k: a[k] for k in ("in.x", "in.w", "in.b", "dout")}, **mine)
    report = check_path(tmp_path / "mine" / "layernorm.npz", against=golden / "layernorm.npz")
    assert report.ok, "\n".join(report.lines())
