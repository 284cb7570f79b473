"""cross_entropy_forward / cross_entropy_backward: mean over positions of -log softmax(logits)[target]."""

import math

import numpy as np
import pytest
from helpers import (
    assert_float32_throughout,
    forward_backward_pure,
    gradcheck,
    lead_shapes,
    rand,
    ref_cross_entropy,
    seeds,
    vocab_sizes,
)
from hypothesis import given
from hypothesis import strategies as st

from npgpt.layers import cross_entropy_backward, cross_entropy_forward


def _inputs(rng, lead, V, scale=2.0):
    return [rand(rng, *lead, V, scale=scale), rng.integers(0, V, size=lead)]


@given(lead=lead_shapes, V=vocab_sizes, seed=seeds)
def test_gradcheck(lead, V, seed):
    """dlogits matches finite differences for a random scalar dloss (logits (V,), (N, V), (B, T, V))."""
    rng = np.random.default_rng(seed)
    gradcheck("cross_entropy", cross_entropy_forward, cross_entropy_backward, _inputs(rng, lead, V),
              names=["logits", "targets"], rng=rng)


@given(lead=lead_shapes, V=vocab_sizes, seed=seeds)
def test_forward_matches_reference(lead, V, seed):
    """Equals the mean of -log(exp(l_t - m) / sum exp(l - m)) computed per position with math.exp/log."""
    rng = np.random.default_rng(seed)
    logits, targets = _inputs(rng, lead, V)
    loss, _ = cross_entropy_forward(logits, targets)
    assert isinstance(loss, np.ndarray) and loss.shape == () and loss.dtype == np.float64
    np.testing.assert_allclose(loss, ref_cross_entropy(logits, targets), rtol=1e-12, atol=1e-12)


@given(lead=lead_shapes, V=vocab_sizes, seed=seeds, dloss=st.sampled_from([1.0, -0.7, 2.5]))
def test_backward_is_softmax_minus_onehot(lead, V, seed, dloss):
    """dlogits = dloss * (softmax - onehot) / N, built position by position; each position sums to 0."""
    rng = np.random.default_rng(seed)
    logits, targets = _inputs(rng, lead, V)
    _, cache = cross_entropy_forward(logits, targets)
    g = cross_entropy_backward(np.array(dloss), cache)
    rows, tgt = logits.reshape(-1, V), targets.reshape(-1)
    N = len(tgt)
    expected = np.empty((N, V))
    for n in range(N):
        e = [math.exp(v - max(rows[n])) for v in rows[n]]
        expected[n] = [dloss * (ei / math.fsum(e) - (j == tgt[n])) / N for j, ei in enumerate(e)]
    np.testing.assert_allclose(g, expected.reshape(logits.shape), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(g.sum(axis=-1), 0.0, atol=1e-15)


@pytest.mark.parametrize("V", [2, 5, 50257])
@pytest.mark.parametrize("value", [0.0, 3.5, -1e4])
def test_uniform_logits_give_log_v(V, value):
    """All logits equal (zeros or any constant) -> loss = ln V whatever the targets."""
    logits = np.full((2, 3, V), value)
    loss, _ = cross_entropy_forward(logits, np.array([[0, V - 1, 1], [1, 0, V - 1]]))
    assert math.isclose(float(loss), math.log(V), rel_tol=1e-13)


def test_extreme_logits():
    """Logits of +-1e4: no nan/inf; a confident right answer costs 0, a confident wrong one costs 2e4."""
    logits = np.array([[1e4, -1e4, 0.0], [1e4, -1e4, -1e4]])
    targets = np.array([0, 1])
    loss, cache = cross_entropy_forward(logits, targets)
    assert float(loss) == 1e4  # (0 + 2e4) / 2
    g = cross_entropy_backward(1.0, cache)
    np.testing.assert_array_equal(g, [[0.0, 0.0, 0.0], [0.5, -0.5, 0.0]])


def test_confident_and_correct_is_near_zero_and_loss_positive():
    """Loss >= 0 always, and tends to 0 as the target's logit dominates."""
    rng = np.random.default_rng(4)
    logits = rng.standard_normal((3, 4, 6))
    targets = rng.integers(0, 6, size=(3, 4))
    assert float(cross_entropy_forward(logits, targets)[0]) > 0.0
    onehot = np.eye(6)[targets] * 10.0
    np.testing.assert_allclose(cross_entropy_forward(onehot, targets)[0], math.log1p(5.0 * math.exp(-10.0)),
                               rtol=1e-9)


@given(lead=lead_shapes, V=vocab_sizes, seed=seeds)
def test_inputs_unmodified(lead, V, seed):
    """Neither forward nor backward writes into logits, targets or dloss."""
    rng = np.random.default_rng(seed)
    forward_backward_pure(cross_entropy_forward, cross_entropy_backward, _inputs(rng, lead, V), rng)


@pytest.mark.parametrize("lead", [(), (4,), (2, 3)])
def test_float32(lead):
    """float32 logits -> float32 0-d loss and float32 dlogits."""
    rng = np.random.default_rng(1)
    assert_float32_throughout(cross_entropy_forward, cross_entropy_backward, _inputs(rng, lead, 5), rng, n_grads=1)
    loss, _ = cross_entropy_forward(*_inputs(rng, lead, 5))
    assert loss.shape == ()


# ---------------------------------------------------------------------------------------------- the variants


def ref_cross_entropy_variants(logits, targets, ignore_index=None, reduction="mean", s=0.0, c=0.0, cap=None):
    """Per position with math only: z = cap tanh(l / cap); (1-s)(lse - z_t) + s(lse - mean z) + c lse^2."""
    V = logits.shape[-1]
    rows, tgt = logits.reshape(-1, V), targets.reshape(-1)
    per, kept = [], 0
    for row, t in zip(rows, tgt):
        z = [float(v) if cap is None else cap * math.tanh(float(v) / cap) for v in row]
        if ignore_index is not None and int(t) == ignore_index:
            per.append(0.0)
            continue
        kept += 1
        m = max(z)
        lse = m + math.log(math.fsum(math.exp(v - m) for v in z))
        per.append((1 - s) * (lse - z[int(t)]) + s * (lse - math.fsum(z) / V) + c * lse * lse)
    if reduction == "none":
        return np.array(per).reshape(targets.shape)
    total = math.fsum(per)
    return total if reduction == "sum" else (total / kept if kept else 0.0)


variant_options = st.fixed_dictionaries({
    "ignore": st.sampled_from([None, -100, 0]),
    "reduction": st.sampled_from(["mean", "sum", "none"]),
    "label_smoothing": st.sampled_from([0.0, 0.1, 1.0]),
    "z_loss": st.sampled_from([0.0, 1e-4, 0.3]),
    "softcap": st.sampled_from([None, 30.0, 1.5]),
})


def _variant_inputs(rng, lead, V, ignore):
    logits, targets = _inputs(rng, lead, V)
    if ignore is not None:
        targets = np.where(rng.random(targets.shape) < 0.4, ignore, targets)  # about 40% ignored
    return logits, targets


def _kwargs(o):
    return {"ignore_index": o["ignore"], "reduction": o["reduction"], "label_smoothing": o["label_smoothing"],
            "z_loss": o["z_loss"], "softcap": o["softcap"]}


@given(lead=lead_shapes, V=vocab_sizes, seed=seeds, o=variant_options)
def test_variants_gradcheck(lead, V, seed, o):
    """dlogits matches finite differences for every combination (reduction none: a random per-position dloss)."""
    rng = np.random.default_rng(seed)
    logits, targets = _variant_inputs(rng, lead, V, o["ignore"])
    gradcheck("cross_entropy_variants", cross_entropy_forward, cross_entropy_backward, [logits, targets],
              names=["logits", "targets"], rng=rng, kwargs=_kwargs(o))


@given(lead=lead_shapes, V=vocab_sizes, seed=seeds, o=variant_options)
def test_variants_match_reference(lead, V, seed, o):
    rng = np.random.default_rng(seed)
    logits, targets = _variant_inputs(rng, lead, V, o["ignore"])
    loss, _ = cross_entropy_forward(logits, targets, **_kwargs(o))
    ref = ref_cross_entropy_variants(logits, targets, o["ignore"], o["reduction"], o["label_smoothing"],
                                     o["z_loss"], o["softcap"])
    assert loss.dtype == np.float64 and loss.shape == np.shape(ref)
    np.testing.assert_allclose(loss, ref, rtol=1e-12, atol=1e-12)


@given(lead=lead_shapes, V=vocab_sizes, seed=seeds, o=variant_options)
def test_backward_matches_loop(lead, V, seed, o):
    """dlogits_n = w_n (p - (1-s) onehot - s/V + 2 c lse p) (1 - tanh^2), built one position at a time."""
    rng = np.random.default_rng(seed)
    logits, targets = _variant_inputs(rng, lead, V, o["ignore"])
    loss, cache = cross_entropy_forward(logits, targets, **_kwargs(o))
    dloss = rand(rng, *loss.shape) if o["reduction"] == "none" else np.asarray(1.7)
    g = cross_entropy_backward(dloss, cache)
    rows, tgt = logits.reshape(-1, V), targets.reshape(-1)
    kept = [o["ignore"] is None or int(t) != o["ignore"] for t in tgt]
    s, c, cap = o["label_smoothing"], o["z_loss"], o["softcap"]
    expected = np.zeros(rows.shape)
    for n, (row, t) in enumerate(zip(rows, tgt)):
        if not kept[n]:
            continue
        w = float(dloss.reshape(-1)[n]) if o["reduction"] == "none" else float(dloss)
        if o["reduction"] == "mean":
            w /= sum(kept)
        z = [float(v) if cap is None else cap * math.tanh(float(v) / cap) for v in row]
        m = max(z)
        e = [math.exp(v - m) for v in z]
        lse = m + math.log(math.fsum(e))
        for j in range(V):
            p = e[j] / math.fsum(e)
            dz = p - (1 - s) * (j == int(t)) - s / V + 2 * c * lse * p
            expected[n, j] = w * dz * (1.0 if cap is None else 1.0 - math.tanh(float(row[j]) / cap) ** 2)
    np.testing.assert_allclose(g, expected.reshape(logits.shape), rtol=1e-11, atol=1e-15)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("ignore", [-100, 3])
def test_all_ignored_is_zero_not_nan(reduction, ignore):
    """Every target ignored: loss 0 and dlogits exactly 0 (not 0/0), whatever the options."""
    logits = np.random.default_rng(0).standard_normal((2, 3, 5))
    targets = np.full((2, 3), ignore)
    loss, cache = cross_entropy_forward(logits, targets, ignore_index=ignore, reduction=reduction,
                                        label_smoothing=0.1, z_loss=1e-3, softcap=5.0)
    assert np.array_equal(loss, np.zeros(loss.shape))
    dloss = np.ones(loss.shape) if reduction == "none" else 1.0
    g = cross_entropy_backward(dloss, cache)
    assert np.array_equal(g, np.zeros(logits.shape))


@given(lead=lead_shapes, V=vocab_sizes, seed=seeds)
def test_zero_options_equal_plain(lead, V, seed):
    """label smoothing 0, z-loss 0, an ignore_index nobody uses: the plain loss; sum = N * mean; the default
    path and the general path give the same numbers."""
    rng = np.random.default_rng(seed)
    logits, targets = _inputs(rng, lead, V)
    plain, pc = cross_entropy_forward(logits, targets)
    assert pc.default
    for kw in ({"label_smoothing": 0.0}, {"z_loss": 0.0}, {"ignore_index": -100}):
        loss, cache = cross_entropy_forward(logits, targets, **kw)
        np.testing.assert_allclose(loss, plain, rtol=1e-14)
        np.testing.assert_allclose(cross_entropy_backward(1.0, cache), cross_entropy_backward(1.0, pc), rtol=1e-14,
                                   atol=1e-17)
    total, _ = cross_entropy_forward(logits, targets, reduction="sum")
    np.testing.assert_allclose(total, plain * targets.size, rtol=1e-13)
    per, nc = cross_entropy_forward(logits, targets, reduction="none")
    np.testing.assert_allclose(per.mean(), plain, rtol=1e-13)
    np.testing.assert_allclose(cross_entropy_backward(np.full(per.shape, 1.0 / per.size), nc),
                               cross_entropy_backward(1.0, pc), rtol=1e-13, atol=1e-17)


def test_default_path_is_the_old_computation():
    """The default (GPT-2 training) path is bit for bit the original fused softmax-minus-onehot code."""
    rng = np.random.default_rng(8)
    logits, targets = _inputs(rng, (4, 6), 11)
    loss, cache = cross_entropy_forward(logits, targets)
    l2, t = logits.reshape(-1, 11), targets.reshape(-1)
    shifted = l2 - l2.max(axis=-1, keepdims=True)
    probs = np.exp(shifted)
    sumexp = probs.sum(axis=-1)
    assert loss == (np.log(sumexp) - shifted[np.arange(24), t]).mean(dtype=np.float64)
    probs /= sumexp[:, None]
    probs[np.arange(24), t] -= 1.0
    probs *= 0.5 / 24
    assert np.array_equal(cross_entropy_backward(0.5, cache), probs.reshape(logits.shape))


def test_softcap_bounds_logits():
    """With a cap, huge logits behave like logits of +-cap: a loss of about log(1 + e^-2cap) for a right answer."""
    logits = np.array([[1e6, -1e6]])
    loss, cache = cross_entropy_forward(logits, np.array([0]), softcap=2.0)
    np.testing.assert_allclose(loss, math.log1p(math.exp(-4.0)), rtol=1e-12)
    assert np.array_equal(cross_entropy_backward(1.0, cache), np.zeros((1, 2)))  # tanh saturated: 1 - tanh^2 = 0


def test_matches_torch():
    """Live: torch.nn.functional.cross_entropy with ignore_index, label_smoothing and every reduction."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    logits, targets = _variant_inputs(rng, (3, 4), 7, -100)
    for reduction in ("mean", "sum", "none"):
        for s in (0.0, 0.2):
            lt = torch.from_numpy(logits).requires_grad_(True)
            ref = torch.nn.functional.cross_entropy(lt.reshape(-1, 7), torch.from_numpy(targets).reshape(-1),
                                                    ignore_index=-100, reduction=reduction, label_smoothing=s)
            up = rand(rng, *ref.shape)
            ref.backward(torch.from_numpy(up))
            loss, cache = cross_entropy_forward(logits, targets, ignore_index=-100, reduction=reduction,
                                                label_smoothing=s)
            g = cross_entropy_backward(up.reshape(loss.shape) if reduction == "none" else float(up), cache)
            np.testing.assert_allclose(loss.reshape(-1), ref.detach().numpy().reshape(-1), rtol=1e-13, atol=1e-15)
            np.testing.assert_allclose(g, lt.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("o", [{"ignore": -100, "reduction": "none", "label_smoothing": 0.1, "z_loss": 1e-4,
                                "softcap": 30.0}, {"ignore": None, "reduction": "sum", "label_smoothing": 0.0,
                                                   "z_loss": 0.0, "softcap": None}])
def test_variants_float32(o):
    rng = np.random.default_rng(1)
    logits, targets = _variant_inputs(rng, (2, 3), 5, o["ignore"])
    loss, cache = cross_entropy_forward(logits.astype(np.float32), targets, **_kwargs(o))
    assert loss.dtype == np.float32
    dloss = np.ones(loss.shape, np.float32) if o["reduction"] == "none" else 1.0
    assert cross_entropy_backward(dloss, cache).dtype == np.float32


_rng = np.random.default_rng(2)
_logits, _targets = _inputs(_rng, (2, 3), 5)
_loss, _cache = cross_entropy_forward(_logits, _targets)


@pytest.mark.parametrize("call, match", [
    pytest.param(lambda: cross_entropy_forward(_logits.tolist(), _targets), "^logits:", id="logits-list"),
    pytest.param(lambda: cross_entropy_forward(np.array(1.0), np.array(0)), "^logits:", id="logits-0d"),
    pytest.param(lambda: cross_entropy_forward(_logits.astype(np.int64), _targets), "^logits:", id="logits-int"),
    pytest.param(lambda: cross_entropy_forward(_logits.astype(np.float16), _targets), "^logits:",
                 id="logits-float16"),
    pytest.param(lambda: cross_entropy_forward(_logits, _targets.tolist()), "^targets:", id="targets-list"),
    pytest.param(lambda: cross_entropy_forward(_logits, _targets.astype(np.float64)), "^targets:",
                 id="targets-float"),
    pytest.param(lambda: cross_entropy_forward(_logits, np.array([[0, 1, 2], [3, -1, 0]])),
                 "^targets: token id -1 ", id="targets-negative"),
    pytest.param(lambda: cross_entropy_forward(_logits, np.array([[0, 1, 2], [3, 5, 0]])),
                 "^targets: token id 5 ", id="targets-equal-V"),
    pytest.param(lambda: cross_entropy_forward(_logits, _targets[:, :2]), "^targets:", id="targets-shape"),
    pytest.param(lambda: cross_entropy_forward(_logits, _targets[0]), "^targets:", id="targets-ndim"),
    pytest.param(lambda: cross_entropy_forward(_logits, _targets[..., None]), "^targets:", id="targets-trailing-V"),
    pytest.param(lambda: cross_entropy_forward(np.zeros((0, 5)), np.zeros(0, dtype=np.int64)), "^targets:",
                 id="targets-empty"),
    pytest.param(lambda: cross_entropy_backward(np.ones(2), _cache), "^dloss:", id="dloss-vector"),
    pytest.param(lambda: cross_entropy_backward(np.ones((2, 3)), _cache), "^dloss:", id="dloss-like-targets"),
    pytest.param(lambda: cross_entropy_backward("1.0", _cache), "^dloss:", id="dloss-string"),
    pytest.param(lambda: cross_entropy_backward(np.float32(1.0), _cache), "^dloss: .*float32",
                 id="dloss-float32-scalar-for-float64"),
    pytest.param(lambda: cross_entropy_backward(None, _cache), "^dloss:", id="dloss-None"),
    pytest.param(lambda: cross_entropy_forward(_logits, _targets, ignore_index=1.5), "^ignore_index:",
                 id="ignore-float"),
    pytest.param(lambda: cross_entropy_forward(_logits, np.full((2, 3), -7), ignore_index=-100),
                 "^targets: token id -7 ", id="targets-neither-valid-nor-ignored"),
    pytest.param(lambda: cross_entropy_forward(_logits, _targets, reduction="avg"), "^reduction:", id="reduction"),
    pytest.param(lambda: cross_entropy_forward(_logits, _targets, label_smoothing=1.5), "^label_smoothing:",
                 id="smoothing-gt-1"),
    pytest.param(lambda: cross_entropy_forward(_logits, _targets, z_loss=-1.0), "^z_loss:", id="zloss-negative"),
    pytest.param(lambda: cross_entropy_forward(_logits, _targets, softcap=0.0), "^softcap:", id="softcap-zero"),
    pytest.param(lambda: cross_entropy_backward(1.0, cross_entropy_forward(_logits, _targets, reduction="none")[1]),
                 "^dloss:", id="dloss-scalar-for-none"),
])
def test_bad_arguments(call, match):
    """Bad arguments raise a ValueError that starts with the argument's name."""
    with pytest.raises(ValueError, match=match):
        call()


# ------------------------------------------------------------------------------------ row blocks, bit for bit

@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_default_path_in_row_blocks_is_the_whole_array_computation(dtype, monkeypatch):
    """Blocks of 3 rows (a ragged last one) give the bits of the whole-array passes, forward and backward."""
    import npgpt.layers.cross_entropy as ce
    monkeypatch.setattr(ce, "ROW_BLOCK", 3 * 37)
    rng = np.random.default_rng(9)
    logits, targets = (rand(rng, 4, 5, 37, scale=4.0).astype(dtype), rng.integers(0, 37, size=(4, 5)))
    loss, cache = cross_entropy_forward(logits, targets)
    l2, t, rows = logits.reshape(-1, 37), targets.reshape(-1), np.arange(20)
    shifted = l2 - l2.max(axis=-1, keepdims=True)
    probs = np.exp(shifted)
    sumexp = probs.sum(axis=-1)
    assert loss.tobytes() == (np.log(sumexp) - shifted[rows, t]).mean(dtype=dtype).tobytes()
    probs /= sumexp[:, None]
    assert cache.probs.tobytes() == probs.tobytes()
    probs[rows, t] -= 1.0
    probs *= 0.7 / 20
    assert cross_entropy_backward(0.7, cache).tobytes() == probs.tobytes()


@given(lead=lead_shapes, V=vocab_sizes, seed=seeds, o=variant_options, rows=st.integers(1, 4),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_variants_in_row_blocks_match_one_block(lead, V, seed, o, rows, dtype):
    """Every option gives the same bits with the softmax taken `rows` rows at a time as in one block."""
    import npgpt.layers.cross_entropy as ce
    rng = np.random.default_rng(seed)
    logits, targets = _variant_inputs(rng, lead, V, o["ignore"])
    logits = logits.astype(dtype)
    dloss = rand(rng, *targets.shape).astype(dtype) if o["reduction"] == "none" else 0.7
    out = []
    for block in (rows * V, 1 << 40):
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(ce, "ROW_BLOCK", block)
            loss, cache = cross_entropy_forward(logits, targets, **_kwargs(o))
            out.append((loss.tobytes(), cache.probs.tobytes(), cross_entropy_backward(dloss, cache).tobytes()))
    assert out[0] == out[1]


@pytest.mark.parametrize("o", [{}, {"ignore_index": 0, "reduction": "none", "label_smoothing": 0.1, "z_loss": 1e-2,
                                    "softcap": 2.0}])
def test_reuse_probs_writes_the_same_gradient_into_the_cache(o):
    from npgpt.layers.cross_entropy import _cross_entropy_backward
    rng = np.random.default_rng(10)
    logits, targets = _inputs(rng, (3, 4), 9)
    loss, cache = cross_entropy_forward(logits, targets, **o)
    dloss = rand(rng, 3, 4) if o else 0.7
    fresh = cross_entropy_backward(dloss, cache)
    assert not np.shares_memory(fresh, cache.probs)
    spent = _cross_entropy_backward(dloss, cache, reuse_probs=True)
    assert np.shares_memory(spent, cache.probs) and spent.tobytes() == fresh.tobytes()
