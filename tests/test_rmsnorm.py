"""rmsnorm_forward / rmsnorm_backward: x / sqrt(mean(x^2) + eps) * w, Gemma's (1 + w), float64 statistics."""

import math

import numpy as np
import pytest
from helpers import (
    assert_float32_throughout,
    assert_matches_reference,
    forward_backward_pure,
    gradcheck,
    lead_shapes,
    ln_weight,
    seeds,
    spread_rows,
    widths,
)
from hypothesis import given
from hypothesis import strategies as st

from npgpt.layers.rmsnorm import rmsnorm_backward, rmsnorm_forward


def ref_rmsnorm(x, w, eps=1e-6, offset=0.0):
    """Per row: mean square with math.fsum, then v / sqrt(ms + eps) * (offset + w)."""
    C = x.shape[-1]
    rows = x.reshape(-1, C)
    out = np.empty(rows.shape)
    for n, row in enumerate(rows):
        ms = math.fsum(float(v) * float(v) for v in row) / C
        for c in range(C):
            out[n, c] = float(row[c]) / math.sqrt(ms + eps) * (offset + float(w[c]))
    return out.reshape(x.shape)


def _inputs(rng, lead, C):
    return [spread_rows(rng, *lead, C), ln_weight(rng, C)]


@given(lead=lead_shapes, C=widths, seed=seeds, offset=st.sampled_from([0.0, 1.0]))
def test_gradcheck(lead, C, seed, offset):
    """dx and dw match finite differences, for Llama's w and Gemma's 1 + w.

    With C = 1 a row normalises to about sign(x): dx is only O(eps / x^2), too small for finite differences
    to resolve when eps = 1e-6, so that case runs with eps = 0.1 (which it then tests)."""
    rng = np.random.default_rng(seed)
    gradcheck("rmsnorm", rmsnorm_forward, rmsnorm_backward, _inputs(rng, lead, C), names=["x", "w"], rng=rng,
              kwargs={"eps": 0.1 if C == 1 else 1e-6, "offset": offset})


@given(lead=lead_shapes, C=widths, seed=seeds, eps=st.sampled_from([1e-6, 1e-2, 1.0]),
       offset=st.sampled_from([0.0, 1.0]), stats=st.sampled_from(["input", "float64"]))
def test_forward_matches_reference(lead, C, seed, eps, offset, stats):
    """Equals a per-row loop with an exactly rounded mean square, for several eps and both variants."""
    rng = np.random.default_rng(seed)
    x, w = _inputs(rng, lead, C)
    out, _ = rmsnorm_forward(x, w, eps=eps, offset=offset, stats=stats)
    assert out.shape == x.shape
    assert_matches_reference(out, ref_rmsnorm(x, w, eps=eps, offset=offset))


@given(lead=lead_shapes, C=st.integers(1, 6), seed=seeds, a=st.sampled_from([1e-3, 0.5, 7.0, -3.0]))
def test_scale_invariant(lead, C, seed, a):
    """out(a x) = sign(a) out(x) up to the eps term (tiny eps here), so dx scales by 1/|a| and dw by sign(a)."""
    rng = np.random.default_rng(seed)
    x, w = _inputs(rng, lead, C)
    out, cache = rmsnorm_forward(x, w, eps=1e-30)
    out_a, cache_a = rmsnorm_forward(a * x, w, eps=1e-30)
    np.testing.assert_allclose(out_a, np.sign(a) * out, rtol=1e-13, atol=1e-14)
    dout = rng.standard_normal(x.shape)
    dx, dw = rmsnorm_backward(dout, cache)
    dx_a, dw_a = rmsnorm_backward(dout, cache_a)
    np.testing.assert_allclose(dx_a * abs(a), dx, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(dw_a, np.sign(a) * dw, rtol=1e-12, atol=1e-13)


@given(lead=lead_shapes, C=widths, seed=seeds)
def test_gemma_is_llama_with_w_plus_one(lead, C, seed):
    """offset=1 with weight w is bit for bit offset=0 with weight 1 + w; dw is the same in both."""
    rng = np.random.default_rng(seed)
    x, w = _inputs(rng, lead, C)
    out_g, cache_g = rmsnorm_forward(x, w, offset=1.0)
    out_l, cache_l = rmsnorm_forward(x, 1.0 + w)
    assert np.array_equal(out_g, out_l)
    dout = rng.standard_normal(x.shape)
    for a, b in zip(rmsnorm_backward(dout, cache_g), rmsnorm_backward(dout, cache_l)):
        assert np.array_equal(a, b)


@given(lead=lead_shapes, C=widths, seed=seeds)
def test_dx_orthogonal_to_x(lead, C, seed):
    """Scaling x changes nothing (but eps), so each row of dx is orthogonal to x: sum_j x_j dx_j = O(eps)."""
    rng = np.random.default_rng(seed)
    x, w = _inputs(rng, lead, C)
    _, cache = rmsnorm_forward(x, w, eps=1e-30)
    dx, _ = rmsnorm_backward(rng.standard_normal(x.shape), cache)
    np.testing.assert_allclose((x * dx).sum(axis=-1), 0.0, atol=1e-12)


def test_zero_row():
    """A zero row gives out 0 and dx = dout * w / sqrt(eps) (eps alone sets the slope)."""
    x = np.zeros((1, 3))
    w = np.array([1.5, 0.5, 2.0])
    out, cache = rmsnorm_forward(x, w, eps=1e-6)
    assert np.array_equal(out, x)
    dout = np.array([[1.0, -2.0, 0.5]])
    dx, dw = rmsnorm_backward(dout, cache)
    np.testing.assert_allclose(dx, dout * w / math.sqrt(1e-6), rtol=1e-12)
    assert np.array_equal(dw, np.zeros(3))


def test_float64_statistics_for_float32_input():
    """stats='float64' on a float32 input rounds once: within half a float32 ulp-ish of the float64 result,
    and never further from it than stats='input' (which is HF's LlamaRMSNorm for float32)."""
    rng = np.random.default_rng(3)
    x, w = _inputs(rng, (64,), 512)
    x32, w32 = x.astype(np.float32), w.astype(np.float32)
    exact, _ = rmsnorm_forward(x32.astype(np.float64), w32.astype(np.float64))
    err = {}
    for stats in ("input", "float64"):
        out, cache = rmsnorm_forward(x32, w32, stats=stats)
        assert out.dtype == np.float32
        dx, dw = rmsnorm_backward(np.ones_like(out), cache)
        assert dx.dtype == np.float32 and dw.dtype == np.float32
        err[stats] = float(np.max(np.abs(out - exact) / np.abs(exact).max()))
    assert err["float64"] <= err["input"] + 1e-9
    assert err["input"] < 1e-6


@given(lead=lead_shapes, C=widths, seed=seeds)
def test_inputs_unmodified(lead, C, seed):
    """Neither forward nor backward writes into x, w or dout."""
    rng = np.random.default_rng(seed)
    forward_backward_pure(rmsnorm_forward, rmsnorm_backward, _inputs(rng, lead, C), rng)


@pytest.mark.parametrize("stats", ["input", "float64"])
@pytest.mark.parametrize("lead", [(), (3,), (2, 3)])
def test_float32(lead, stats):
    """float32 in -> float32 out, dx, dw (either statistics dtype)."""
    rng = np.random.default_rng(1)
    assert_float32_throughout(rmsnorm_forward, rmsnorm_backward, _inputs(rng, lead, 4), rng, n_grads=2,
                              kwargs={"stats": stats})


def test_matches_torch_llama_rmsnorm():
    """Live: HF's LlamaRMSNorm casts its input to float32 for the statistics.  For a float32 input that is the
    input dtype, so ours matches it to float32 round-off; for a float64 input HF *lowers* the statistics to
    float32 (error ~1e-7), while ours stays float64 and equals the same formula in torch float64 to 1e-15."""
    torch = pytest.importorskip("torch")
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    rng = np.random.default_rng(5)
    x, w = _inputs(rng, (2, 3), 16)
    dout = rng.standard_normal(x.shape)
    for dtype, tol in ((np.float64, 1e-6), (np.float32, 1e-6)):
        norm = llama.LlamaRMSNorm(16, eps=1e-6).to(getattr(torch, np.dtype(dtype).name))
        with torch.no_grad():
            norm.weight.copy_(torch.from_numpy(w.astype(dtype)))
        xt = torch.from_numpy(x.astype(dtype)).requires_grad_(True)
        yt = norm(xt)
        yt.backward(torch.from_numpy(dout.astype(dtype)))
        out, cache = rmsnorm_forward(x.astype(dtype), w.astype(dtype), eps=1e-6)
        dx, dw = rmsnorm_backward(dout.astype(dtype), cache)
        for ours, theirs in ((out, yt), (dx, xt.grad), (dw, norm.weight.grad)):
            theirs = theirs.detach().numpy()
            assert ours.dtype == theirs.dtype == dtype
            assert np.max(np.abs(ours - theirs)) <= tol * np.abs(theirs).max()
    xt = torch.from_numpy(x).requires_grad_(True)
    yt = xt * torch.rsqrt(xt.pow(2).mean(-1, keepdim=True) + 1e-6) * torch.from_numpy(w)  # float64 throughout
    yt.backward(torch.from_numpy(dout))
    out, cache = rmsnorm_forward(x, w, eps=1e-6)
    dx, _ = rmsnorm_backward(dout, cache)
    np.testing.assert_allclose(out, yt.detach().numpy(), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-13, atol=1e-14)


_rng = np.random.default_rng(2)
_x, _w = _inputs(_rng, (2, 3), 4)
_out, _cache = rmsnorm_forward(_x, _w)


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: rmsnorm_forward(_x.tolist(), _w), "^x:", id="x-list"),
    pytest.param(lambda: rmsnorm_forward(np.array(1.0), _w[:1]), "^x:", id="x-0d"),
    pytest.param(lambda: rmsnorm_forward(_x.astype(np.float16), _w), "^x:", id="x-float16"),
    pytest.param(lambda: rmsnorm_forward(_x, _w[:3]), "^w:", id="w-shape"),
    pytest.param(lambda: rmsnorm_forward(_x, _w.astype(np.float32)), "^w:", id="w-dtype"),
    pytest.param(lambda: rmsnorm_forward(_x, _w, eps=0.0), "^eps:", id="eps-zero"),
    pytest.param(lambda: rmsnorm_forward(_x, _w, eps=None), "^eps:", id="eps-none"),
    pytest.param(lambda: rmsnorm_forward(_x, _w, offset="1"), "^offset:", id="offset-str"),
    pytest.param(lambda: rmsnorm_forward(_x, _w, stats="float32"), "^stats:", id="stats-unknown"),
    pytest.param(lambda: rmsnorm_backward(_out[..., :3], _cache), "^dout:", id="dout-shape"),
    pytest.param(lambda: rmsnorm_backward(_out.astype(np.float32), _cache), "^dout:", id="dout-float32"),
])
def test_bad_arguments(call, match):
    """Bad arguments raise a ValueError that starts with the argument's name."""
    with pytest.raises(ValueError, match=match):
        call()
