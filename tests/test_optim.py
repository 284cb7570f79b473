"""AdamW against an element-by-element reference, on both of its code paths (one flat buffer, separate arrays);
state_dict round trips; clip_grad_norm; cosine_lr."""

from __future__ import annotations

import copy
import math
from unittest import mock

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npgpt import GPT, AdamW, GPTConfig, clip_grad_norm, cosine_lr, optim
from npgpt.runtime.layout import FlatTensors, ParamLayout

# a mix of decayed (2-D) and undecayed (1-D) tensors, like a model's
SHAPES = {"w1": (3, 4), "b1": (4,), "ln": (5,), "w2": (4, 2), "b2": (2,)}


# ---------------------------------------------------------------------------------------------- reference

class ReferenceAdamW:
    """AdamW written one scalar at a time with Python floats, straight from the textbook equations."""

    def __init__(self, params, lr, betas, eps, weight_decay):
        self.p = {k: [float(x) for x in a.reshape(-1)] for k, a in params.items()}
        self.ndim = {k: a.ndim for k, a in params.items()}
        self.shape = {k: a.shape for k, a in params.items()}
        self.m = {k: [0.0] * len(v) for k, v in self.p.items()}
        self.v = {k: [0.0] * len(v) for k, v in self.p.items()}
        self.lr, self.betas, self.eps, self.wd = lr, betas, eps, weight_decay
        self.t = 0

    def step(self, grads):
        self.t += 1
        b1, b2 = self.betas
        for k in self.p:
            g_flat = [float(x) for x in np.asarray(grads[k]).reshape(-1)]
            for j, g in enumerate(g_flat):
                m = b1 * self.m[k][j] + (1.0 - b1) * g
                v = b2 * self.v[k][j] + (1.0 - b2) * g * g
                self.m[k][j], self.v[k][j] = m, v
                m_hat = m / (1.0 - b1 ** self.t)
                v_hat = v / (1.0 - b2 ** self.t)
                p = self.p[k][j]
                if self.ndim[k] == 2:
                    p = p - self.lr * self.wd * p
                p = p - self.lr * m_hat / (math.sqrt(v_hat) + self.eps)
                self.p[k][j] = p

    def params(self):
        return {k: np.array(v).reshape(self.shape[k]) for k, v in self.p.items()}


def flat_dict(values, order=None):
    """Copies of `values` as views tiling one buffer (the AdamW fast path)."""
    shapes = {k: a.shape for k, a in values.items()}
    layout = ParamLayout(shapes, tuple(shapes if order is None else order),
                         frozenset(k for k in shapes if len(shapes[k]) == 2))
    views = layout.zeros(next(iter(values.values())).dtype)
    for k in views:
        views[k][...] = values[k]
    return views


def separate_dict(values):
    """Copies of `values` as independent arrays (the AdamW general path)."""
    return {k: np.array(a, copy=True) for k, a in values.items()}


def random_tensors(rng, shapes=SHAPES, scale=1.0):
    return {k: scale * rng.standard_normal(s) for k, s in shapes.items()}


def assert_dicts_close(actual, expected, rtol=1e-12, atol=0.0):
    assert set(actual) == set(expected)
    for k in expected:
        np.testing.assert_allclose(actual[k], expected[k], rtol=rtol, atol=atol, err_msg=k)


# --------------------------------------------------------------------------------------- AdamW vs reference

@pytest.mark.parametrize("layout", ["flat", "separate"])
def test_adamw_matches_reference(layout):
    rng = np.random.default_rng(0)
    init = random_tensors(rng)
    grad_seq = [random_tensors(rng) for _ in range(5)]
    lrs = [1e-2, 1e-2, 3e-3, 5e-2, 0.0]  # lr changed between steps, including a zero-lr step
    kw = dict(betas=(0.8, 0.99), eps=1e-6, weight_decay=0.3)
    params = separate_dict(init) if layout == "separate" else flat_dict(init)
    opt = AdamW(params, lr=lrs[0], **kw)
    ref = ReferenceAdamW(init, lrs[0], kw["betas"], kw["eps"], kw["weight_decay"])
    assert (opt.layout is None) == (layout == "separate")
    assert isinstance(opt.m, FlatTensors) == (layout == "flat")
    for lr, g in zip(lrs, grad_seq):
        g = flat_dict(g) if layout == "flat" else separate_dict(g)
        opt.lr = ref.lr = lr
        opt.step(g)
        ref.step(g)
        assert_dicts_close(params, ref.params())
    assert opt.t == 5


@pytest.mark.parametrize("grads", ["separate", "other-order", "other-dtype", "other-decay"])
def test_flat_adamw_rejects_grads_in_another_layout(grads):
    """The vectorised path is declared by the params' layout: grads laid out any other way raise, rather
    than silently taking a slower path."""
    rng = np.random.default_rng(0)
    params = flat_dict(random_tensors(rng))
    opt = AdamW(params, lr=1e-2)
    g = random_tensors(rng)
    if grads == "separate":
        g = separate_dict(g)
    elif grads == "other-order":
        g = flat_dict(g, order=list(reversed(SHAPES)))
    elif grads == "other-dtype":
        g = flat_dict({k: a.astype(np.float32) for k, a in g.items()})
    else:
        layout = ParamLayout(SHAPES, tuple(SHAPES), frozenset(SHAPES))  # every tensor decayed
        g = layout.zeros(np.float64)
    before = {k: a.copy() for k, a in params.items()}
    with pytest.raises(ValueError, match="^grads: expected a FlatTensors in the params' layout"):
        opt.step(g)
    assert opt.t == 0 and all(np.array_equal(params[k], before[k]) for k in params)


def test_layout_offsets_and_decay_runs():
    layout = ParamLayout(SHAPES, ("w1", "w2", "b1", "ln", "b2"), frozenset({"w1", "w2"}))
    assert layout.size == 12 + 8 + 4 + 5 + 2
    assert dict(layout.offsets) == {"w1": 0, "w2": 12, "b1": 20, "ln": 24, "b2": 29}
    assert layout.names == tuple(SHAPES)  # public order: the shapes' own
    assert layout.decay_runs() == [slice(0, 20)]  # two adjacent matrices merge into one run
    views = layout.zeros(np.float32)
    assert list(views) == list(SHAPES) and views.buffer.shape == (31,)
    views["w2"][...] = 1.0
    assert views.buffer[12:20].sum() == 8.0 and views.buffer.sum() == 8.0
    with pytest.raises(TypeError):
        views["w2"] = np.zeros((4, 2), dtype=np.float32)  # re-pointing would cut w2 off the buffer
    views["w2"] += 1.0  # `d[k] += x` stores the same view back: allowed
    assert views.buffer.sum() == 16.0
    copied = copy.deepcopy(views)  # a copy is a plain dict of independent arrays
    assert type(copied) is dict and not np.shares_memory(copied["w2"], views.buffer)
    with pytest.raises(ValueError, match="^order:"):
        ParamLayout(SHAPES, ("w1", "w2"), frozenset())
    with pytest.raises(ValueError, match="^decayed:"):
        ParamLayout(SHAPES, tuple(SHAPES), frozenset({"nope"}))


@given(
    lr=st.floats(1e-4, 1e-1), b1=st.floats(0.0, 0.99), b2=st.floats(0.0, 0.999),
    eps=st.sampled_from([1e-8, 1e-3, 1.0, 1e3]), wd=st.floats(0.0, 1.0), steps=st.integers(1, 4),
    seed=st.integers(0, 1000),
)
def test_adamw_hyperparameters_against_reference(lr, b1, b2, eps, wd, steps, seed):
    rng = np.random.default_rng(seed)
    init = random_tensors(rng)
    fast_params, slow_params = flat_dict(init), separate_dict(init)
    fast = AdamW(fast_params, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    slow = AdamW(slow_params, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    ref = ReferenceAdamW(init, lr, (b1, b2), eps, wd)
    for _ in range(steps):
        g = random_tensors(rng, scale=rng.uniform(0.01, 10.0))
        fast.step(flat_dict(g))
        slow.step(g)
        ref.step(g)
    expected = ref.params()
    assert_dicts_close(fast_params, expected, atol=1e-15)
    assert_dicts_close(slow_params, expected, atol=1e-15)
    assert_dicts_close(fast_params, slow_params, atol=1e-15)
    assert_dicts_close(fast.m, slow.m)
    assert_dicts_close(fast.v, slow.v)


@pytest.mark.parametrize("flat", [True, False])
def test_bias_correction_makes_constant_gradient_steps_equal(flat):
    # with a constant gradient, m_hat = g and v_hat = g^2 at every t (that is what bias correction is for),
    # so each of the first steps moves every element by exactly lr * g / (|g| + eps)
    rng = np.random.default_rng(1)
    init = random_tensors(rng)
    g = random_tensors(rng)
    params = flat_dict(init) if flat else separate_dict(init)
    lr, eps = 1e-2, 1e-3
    opt = AdamW(params, lr=lr, betas=(0.9, 0.95), eps=eps, weight_decay=0.0)
    grads = flat_dict(g) if flat else g
    for t in (1, 2, 3):
        opt.step(grads)
        for k in init:
            expected = init[k] - t * lr * g[k] / (np.abs(g[k]) + eps)
            np.testing.assert_allclose(params[k], expected, rtol=1e-12, atol=1e-15, err_msg=f"{k} at t={t}")
        # the raw moments are the biased averages: m_t = (1 - b1^t) g
        for k in init:
            np.testing.assert_allclose(opt.m[k], (1 - 0.9 ** t) * g[k], rtol=1e-13)
            np.testing.assert_allclose(opt.v[k], (1 - 0.95 ** t) * g[k] ** 2, rtol=1e-13)


@pytest.mark.parametrize("flat", [True, False])
def test_weight_decay_only_touches_matrices(flat):
    rng = np.random.default_rng(2)
    init = random_tensors(rng)
    params = flat_dict(init) if flat else separate_dict(init)
    lr, wd = 0.05, 0.4
    opt = AdamW(params, lr=lr, weight_decay=wd)
    zero = {k: np.zeros(s) for k, s in SHAPES.items()}
    for t in (1, 2, 3):
        opt.step(flat_dict(zero) if flat else zero)  # zero gradient: only decay can move anything
        for k in init:
            if init[k].ndim == 2:
                np.testing.assert_allclose(params[k], init[k] * (1 - lr * wd) ** t, rtol=1e-14, err_msg=k)
            else:
                np.testing.assert_array_equal(params[k], init[k], err_msg=k)


def test_decay_is_decoupled_from_the_adaptive_step():
    # the decay term is lr * wd * p, not folded into the gradient: doubling wd doubles the shrink exactly
    init = {"w": np.array([[2.0, -4.0]])}
    g = {"w": np.array([[1.0, 1.0]])}
    moves = []
    for wd in (0.0, 0.1, 0.2):
        params = separate_dict(init)
        AdamW(params, lr=0.01, eps=1e-12, weight_decay=wd).step(g)
        moves.append(params["w"] - init["w"])
    np.testing.assert_allclose(moves[0], [[-0.01, -0.01]], rtol=1e-10)
    np.testing.assert_allclose(moves[1] - moves[0], -0.01 * 0.1 * init["w"], rtol=1e-10)
    np.testing.assert_allclose(moves[2] - moves[0], -0.01 * 0.2 * init["w"], rtol=1e-10)


def test_gpt_params_use_the_flat_path_and_agree_with_separate_arrays():
    config = GPTConfig(vocab_size=11, block_size=6, n_layer=2, n_head=2, n_embd=8)
    model = GPT(config, seed=0, dtype=np.float64)
    copy = separate_dict(model.params)
    fast = AdamW(model.params, lr=3e-3, weight_decay=0.1)
    slow = AdamW(copy, lr=3e-3, weight_decay=0.1)
    assert fast.layout == model.layout and slow.layout is None
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 11, size=(2, 6))
    for _ in range(4):
        model.forward(idx, idx)
        grads = model.backward()
        separate = separate_dict(grads)
        fast.step(grads)
        slow.step(separate)
    assert_dicts_close(model.params, copy)
    assert_dicts_close(fast.m, slow.m)
    assert_dicts_close(fast.v, slow.v)


# ---------------------------------------------------------------------------- the blocked flat path, bit for bit

def whole_buffer_adamw(p, g, m, v, decayed, t, lr, betas, eps, wd):
    """The flat path's arithmetic before it was blocked: each NumPy operation over the whole buffer at once,
    in the same order and with the same coefficients.  decayed: a boolean mask over the buffer."""
    b1, b2 = betas
    s = np.empty_like(p)
    m *= b1
    np.multiply(g, 1.0 - b1, out=s)
    m += s
    v *= b2
    np.multiply(g, g, out=s)
    s *= 1.0 - b2
    v += s
    np.sqrt(v, out=s)
    s *= 1.0 / math.sqrt(1.0 - b2 ** t)
    s += eps
    np.divide(m, s, out=s)
    p[decayed] *= 1.0 - lr * wd
    s *= lr / (1.0 - b1 ** t)
    p -= s


@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=8), data=st.data(),
       dtype=st.sampled_from([np.float32, np.float64]), block=st.integers(1, 64), threads=st.integers(1, 3),
       seed=st.integers(0, 1000))
def test_blocked_flat_path_is_bit_identical_to_whole_buffer_passes(sizes, data, dtype, block, threads, seed):
    """Decay runs that start and stop anywhere: inside a sub-block, inside a thread's chunk, across both."""
    names = [f"t{i}" for i in range(len(sizes))]
    decayed = frozenset(data.draw(st.sets(st.sampled_from(names))))
    layout = ParamLayout({k: (n,) for k, n in zip(names, sizes)}, tuple(names), decayed)
    mask = np.concatenate([np.full(n, k in decayed) for k, n in zip(names, sizes)])  # (P,)
    rng = np.random.default_rng(seed)
    params, grads = layout.zeros(dtype), layout.zeros(dtype)
    params.buffer[...] = rng.standard_normal(layout.size)
    p, m, v = params.buffer.copy(), np.zeros(layout.size, dtype), np.zeros(layout.size, dtype)
    opt = AdamW(params, lr=3e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.3, threads=threads)
    with mock.patch.object(optim, "BLOCK", block), mock.patch.object(optim, "WHOLE", 0):
        for t, lr in enumerate([3e-2, 1e-1, 0.0], start=1):
            grads.buffer[...] = rng.standard_normal(layout.size) * rng.uniform(1e-3, 10.0)
            opt.lr = lr
            opt.step(grads)
            whole_buffer_adamw(p, grads.buffer, m, v, mask, t, lr, (0.8, 0.99), 1e-6, 0.3)
            for name, ours, expected in (("p", params.buffer, p), ("m", opt.m.buffer, m), ("v", opt.v.buffer, v)):
                assert ours.dtype == dtype and ours.tobytes() == expected.tobytes(), f"{name} at t={t}"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocked_flat_path_at_its_real_block_size(dtype):
    """Several real sub-blocks per thread, a ragged last one, and a decay run ending inside a sub-block."""
    P = 3 * optim.BLOCK + 1234
    layout = ParamLayout({"w": (optim.BLOCK + 77, 2), "b": (P - 2 * (optim.BLOCK + 77),)}, ("w", "b"),
                         frozenset({"w"}))
    rng = np.random.default_rng(7)
    params, grads = layout.zeros(dtype), layout.zeros(dtype)
    params.buffer[...] = rng.standard_normal(P)
    p, m, v = params.buffer.copy(), np.zeros(P, dtype), np.zeros(P, dtype)
    mask = np.arange(P) < 2 * (optim.BLOCK + 77)
    opt = AdamW(params, lr=1e-2, threads=2)
    for t in (1, 2):
        grads.buffer[...] = rng.standard_normal(P)
        with mock.patch.object(optim, "WHOLE", 0):  # sub-blocks even for chunks this small
            opt.step(grads)
        whole_buffer_adamw(p, grads.buffer, m, v, mask, t, 1e-2, opt.betas, opt.eps, opt.weight_decay)
    assert params.buffer.tobytes() == p.tobytes() and opt.m.buffer.tobytes() == m.tobytes() \
        and opt.v.buffer.tobytes() == v.tobytes()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_separate_arrays_round_like_the_flat_path(dtype):
    rng = np.random.default_rng(4)
    init = {k: a.astype(dtype) for k, a in random_tensors(rng).items()}
    flat, separate = flat_dict(init), separate_dict(init)
    fast, slow = AdamW(flat, lr=1e-2, threads=2), AdamW(separate, lr=1e-2)
    with mock.patch.object(optim, "BLOCK", 5), mock.patch.object(optim, "WHOLE", 0):
        for _ in range(3):
            g = {k: a.astype(dtype) for k, a in random_tensors(rng).items()}
            fast.step(flat_dict(g))
            slow.step(g)
    for k in init:
        assert flat[k].tobytes() == separate[k].tobytes() and fast.v[k].tobytes() == slow.v[k].tobytes(), k


def test_float32_params_stay_float32():
    rng = np.random.default_rng(3)
    init = {k: a.astype(np.float32) for k, a in random_tensors(rng).items()}
    for params in (flat_dict(init), separate_dict(init)):
        opt = AdamW(params, lr=1e-2)
        g = {k: a.astype(np.float32) for k, a in random_tensors(rng).items()}
        opt.step(flat_dict(g) if isinstance(params, FlatTensors) else g)
        assert all(p.dtype == np.float32 for p in params.values())
        assert all(m.dtype == np.float32 for m in opt.m.values())


# ------------------------------------------------------------------------------------------ state_dict

@pytest.mark.parametrize("flat", [True, False])
def test_state_dict_round_trip_continues_bit_identically(flat):
    rng = np.random.default_rng(4)
    init = random_tensors(rng)
    make = flat_dict if flat else separate_dict
    grads = [random_tensors(rng) for _ in range(6)]
    a_params = make(init)
    a = AdamW(a_params, lr=1e-2, betas=(0.85, 0.97), eps=1e-7, weight_decay=0.2)
    for g in grads[:3]:
        a.step(make(g))
    state = a.state_dict()
    b_params = make(a_params)  # a snapshot of the params at the same moment
    b = AdamW(b_params)  # default hyperparameters: all must come from the state
    b.load_state_dict(state)
    assert (b.lr, b.betas, b.eps, b.weight_decay, b.t) == (1e-2, (0.85, 0.97), 1e-7, 0.2, 3)
    for g in grads[3:]:
        a.step(make(g))
        b.step(make(g))
    for k in init:
        assert np.array_equal(a_params[k], b_params[k]), k
        assert np.array_equal(a.m[k], b.m[k]) and np.array_equal(a.v[k], b.v[k]), k


def test_state_dict_is_a_copy():
    rng = np.random.default_rng(5)
    params = flat_dict(random_tensors(rng))
    opt = AdamW(params)
    opt.step(flat_dict(random_tensors(rng)))
    state = opt.state_dict()
    before = {k: a.copy() for k, a in opt.m.items()}
    for a in state["m"].values():
        a[...] = 123.0
    assert_dicts_close(opt.m, before, rtol=0)
    opt.step(flat_dict(random_tensors(rng)))
    assert state["t"] == 1


def _broken_states(state):
    wrong_key = {**state, "m": {**{k: v for k, v in state["m"].items() if k != "w1"}, "zz": state["m"]["w1"]}}
    missing_key = {**state, "v": {k: v for k, v in state["v"].items() if k != "b1"}}
    extra_key = {**state, "m": {**state["m"], "extra": np.zeros(3)}}
    wrong_shape = {**state, "v": {**state["v"], "w2": np.zeros((2, 4))}}
    return {"wrong_key": wrong_key, "missing_key": missing_key, "extra_key": extra_key,
            "wrong_shape": wrong_shape}


@pytest.mark.parametrize("case", ["wrong_key", "missing_key", "extra_key", "wrong_shape"])
def test_load_state_dict_rejects_mismatched_moments(case):
    rng = np.random.default_rng(6)
    source = AdamW(separate_dict(random_tensors(rng)))
    source.step(random_tensors(rng))
    target = AdamW(flat_dict(random_tensors(rng)), lr=0.5)
    bad = _broken_states(source.state_dict())[case]
    with pytest.raises(ValueError, match=r"^state\['(m|v)'\]"):
        target.load_state_dict(bad)
    # nothing was loaded
    assert target.t == 0 and target.lr == 0.5
    assert not any(a.any() for a in target.m.values()) and not any(a.any() for a in target.v.values())


@pytest.mark.parametrize("missing", ["t", "lr", "betas"])
def test_load_state_dict_missing_entry_is_a_value_error_and_changes_nothing(missing):
    # A state without one of its top-level entries is as malformed as one with the wrong moment keys, so it
    # should get the same treatment: a ValueError, and the optimizer left as it was.
    rng = np.random.default_rng(7)
    source = AdamW(separate_dict(random_tensors(rng)))
    source.step(random_tensors(rng))
    state = {k: v for k, v in source.state_dict().items() if k != missing}
    target = AdamW(separate_dict(random_tensors(rng)), lr=0.5)
    with pytest.raises(ValueError, match=missing):
        target.load_state_dict(state)
    assert target.t == 0 and target.lr == 0.5
    assert not any(a.any() for a in target.m.values())


# ------------------------------------------------------------------------------------- argument checks

@pytest.mark.parametrize("kwargs", [
    dict(lr=-1e-3), dict(lr=float("nan")), dict(eps=0.0), dict(eps=-1e-8), dict(eps=float("nan")),
    dict(weight_decay=-0.1), dict(weight_decay=float("nan")),
    dict(betas=(1.0, 0.9)), dict(betas=(0.9, 1.0)), dict(betas=(-0.1, 0.9)), dict(betas=(0.9, float("nan"))),
], ids=lambda kw: f"{list(kw)[0]}={list(kw.values())[0]}")
def test_bad_hyperparameters(kwargs):
    name = list(kwargs)[0]
    with pytest.raises(ValueError, match=name):
        AdamW({"w": np.zeros((2, 2))}, **kwargs)


@pytest.mark.parametrize("params", [{}, {"w": np.zeros((2, 2), dtype=np.int64)}, {"w": [[0.0]]},
                                    {"w": np.zeros(2, dtype=np.float16)}], ids=["empty", "int", "list", "f16"])
def test_bad_params(params):
    with pytest.raises(ValueError, match="params"):
        AdamW(params)


def test_step_rejects_mismatched_grads():
    params = separate_dict(random_tensors(np.random.default_rng(8)))
    before = separate_dict(params)
    opt = AdamW(params)
    g = {k: np.ones(s) for k, s in SHAPES.items()}
    with pytest.raises(ValueError, match="grads"):
        opt.step({k: v for k, v in g.items() if k != "b2"})
    with pytest.raises(ValueError, match="grads"):
        opt.step({**g, "extra": np.ones(1)})
    with pytest.raises(ValueError, match=r"grads\['w1'\]"):
        opt.step({**g, "w1": np.ones((4, 3))})
    assert opt.t == 0
    assert_dicts_close(params, before, rtol=0)


# ------------------------------------------------------------------------------------------ clipping

def global_norm(d):
    return math.sqrt(sum(float((a.astype(np.float64) ** 2).sum()) for a in d.values()))


@pytest.mark.parametrize("flat", [True, False])
@given(scale=st.floats(1e-3, 1e3), max_norm=st.floats(1e-2, 1e2), seed=st.integers(0, 100))
def test_clip_grad_norm(flat, scale, max_norm, seed):
    g = random_tensors(np.random.default_rng(seed), scale=scale)
    grads = flat_dict(g) if flat else separate_dict(g)
    norm = clip_grad_norm(grads, max_norm)
    assert norm == pytest.approx(global_norm(g), rel=1e-12)
    if norm > max_norm:
        # lands on max_norm, up to the small absolute guard the scale divides by (max_norm / (norm + 1e-6))
        after = global_norm(grads)
        assert max_norm * (1.0 - 2e-6 / norm) <= after <= max_norm
        # one common factor: the direction is unchanged
        factor = grads["w1"].reshape(-1)[0] / g["w1"].reshape(-1)[0]
        assert_dicts_close(grads, {k: factor * a for k, a in g.items()})
    else:
        assert_dicts_close(grads, g, rtol=0)


@pytest.mark.parametrize("flat", [True, False])
def test_clip_at_exactly_max_norm_is_untouched(flat):
    g = {"w": np.array([[3.0, 0.0]]), "b": np.array([4.0])}  # global norm exactly 5
    grads = flat_dict(g) if flat else separate_dict(g)
    assert clip_grad_norm(grads, 5.0) == 5.0
    assert_dicts_close(grads, g, rtol=0)
    assert clip_grad_norm(grads, 1.0) == 5.0
    np.testing.assert_allclose(grads["w"], [[0.6, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(grads["b"], [0.8], rtol=1e-6)


def test_clip_grad_norm_on_a_model():
    config = GPTConfig(vocab_size=11, block_size=6, n_layer=1, n_head=2, n_embd=8)
    model = GPT(config, dtype=np.float64)
    idx = np.random.default_rng(0).integers(0, 11, size=(2, 6))
    model.forward(idx, idx)
    grads = model.backward()
    expected = float(np.linalg.norm(model.flat_grads))
    assert clip_grad_norm(grads, expected / 10) == pytest.approx(expected, rel=1e-12)
    assert float(np.linalg.norm(model.flat_grads)) == pytest.approx(expected / 10, rel=1e-6)


def test_clip_grad_norm_of_a_large_float32_buffer_stays_accurate():
    """Eight million float32 gradients: the norm stays within about 1e-6 of the exact one, where a single
    float32 dot product over the whole buffer drifts to about 3e-5 here (2e-3 at 124M)."""
    n = 1 << 23
    layout = ParamLayout({"w": (n // 4, 4)}, ("w",), frozenset({"w"}))
    grads = layout.zeros(np.float32)
    grads.buffer[...] = np.random.default_rng(5).standard_normal(n)
    exact = math.sqrt(float(np.sum(grads.buffer.astype(np.float64) ** 2)))
    assert clip_grad_norm(grads, 1e9) == pytest.approx(exact, rel=5e-6)
    assert clip_grad_norm(dict(grads), 1e9) == pytest.approx(exact, rel=5e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_grad_norm_adds_pieces_exactly(dtype):
    """The norm is sqrt(fsum of each piece's dot product), the pieces cut at multiples of PIECE."""
    layout = ParamLayout({"w": (53, 3), "b": (8,)}, ("w", "b"), frozenset({"w"}))
    grads = layout.zeros(dtype)
    g = np.random.default_rng(6).standard_normal(layout.size).astype(dtype)
    grads.buffer[...] = g
    with mock.patch.object(optim, "PIECE", 7):
        norm = clip_grad_norm(grads, 0.5)
    assert norm == math.sqrt(math.fsum(float(np.dot(g[i:i + 7], g[i:i + 7])) for i in range(0, g.size, 7)))
    assert grads.buffer.tobytes() == (g * (0.5 / (norm + 1e-6))).tobytes()


@pytest.mark.parametrize("max_norm", [0.0, -1.0, float("nan")])
def test_clip_rejects_non_positive_max_norm(max_norm):
    with pytest.raises(ValueError, match="max_norm"):
        clip_grad_norm({"w": np.ones((2, 2))}, max_norm)


# ------------------------------------------------------------------------------------------ schedule

MAX_LR, MIN_LR, WARMUP, DECAY = 6e-4, 6e-5, 10, 110


def test_cosine_lr_key_points():
    lr = lambda it: cosine_lr(it, MAX_LR, MIN_LR, WARMUP, DECAY)  # noqa: E731
    assert lr(0) == pytest.approx(MAX_LR / WARMUP, rel=1e-15)
    assert lr(4) == pytest.approx(MAX_LR * 5 / WARMUP, rel=1e-15)
    assert lr(WARMUP - 1) == pytest.approx(MAX_LR, rel=1e-15)
    assert lr(WARMUP) == pytest.approx(MAX_LR, rel=1e-15)
    assert lr((WARMUP + DECAY) // 2) == pytest.approx((MAX_LR + MIN_LR) / 2, rel=1e-12)
    assert lr(DECAY) == MIN_LR
    assert lr(DECAY + 1) == MIN_LR
    assert lr(10 * DECAY) == MIN_LR


def test_cosine_lr_shape():
    lrs = [cosine_lr(it, MAX_LR, MIN_LR, WARMUP, DECAY) for it in range(DECAY + 20)]
    warm, rest = lrs[:WARMUP], lrs[WARMUP - 1:]
    assert all(a < b for a, b in zip(warm, warm[1:]))  # strictly rising during warmup
    assert all(a >= b for a, b in zip(rest, rest[1:]))  # never rising afterwards
    assert all(MIN_LR <= x <= MAX_LR for x in rest)
    assert all(0 < x for x in lrs)


@given(warmup=st.integers(0, 20), length=st.integers(1, 100), it=st.integers(0, 200))
def test_cosine_lr_stays_between_bounds(warmup, length, it):
    lr = cosine_lr(it, 1.0, 0.1, warmup, warmup + length)
    assert 0.0 < lr <= 1.0 + 1e-15
    if it >= warmup:
        assert 0.1 - 1e-15 <= lr


def test_cosine_lr_without_warmup():
    assert cosine_lr(0, MAX_LR, MIN_LR, 0, 100) == MAX_LR  # starts at the peak, no division by zero
    assert cosine_lr(50, MAX_LR, MIN_LR, 0, 100) == pytest.approx((MAX_LR + MIN_LR) / 2, rel=1e-12)
    assert cosine_lr(100, MAX_LR, MIN_LR, 0, 100) == MIN_LR
    assert cosine_lr(0, MAX_LR, MIN_LR, 0, 0) == MIN_LR  # no warmup and no decay: the floor throughout
