"""The whole GPT: finite-difference check of every parameter's gradient, shapes and dtypes, GPT-2 naming and
initialisation, the flat buffers, dropout, the tied embedding, causality and a small overfitting run."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npgpt import GPT, AdamW, GPTConfig, gpt_backward, gpt_forward, gpt_grads, param_shapes
from npgpt.gradcheck import numerical_gradient, relative_error
from npgpt.gpt2.block import BLOCK_PARAM_NAMES, block_forward
from npgpt.layers import cross_entropy_forward, layernorm_forward
from npgpt.gpt2.block import BLOCK_WEIGHT_NAMES

TOL = 1e-6


# ----------------------------------------------------------------------------------------------- helpers

def noisy_model(config: GPTConfig, seed: int = 0) -> GPT:
    """A float64 GPT whose every tensor (LayerNorm included) is pushed well away from the GPT-2 init, so no
    gradient is degenerate (LN weight exactly 1, biases exactly 0, tiny weights)."""
    model = GPT(config, seed=seed, dtype=np.float64)
    rng = np.random.default_rng(1000 + seed)
    for p in model.params.values():
        p += rng.uniform(0.1, 0.3) * rng.standard_normal(p.shape)
    return model


def batch(config: GPTConfig, B: int, T: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, config.vocab_size, size=(B, T))
    targets = rng.integers(0, config.vocab_size, size=(B, T))
    return idx, targets


def check_every_tensor(params, config, idx, targets, grads, forward_kwargs=lambda: {}):
    """Numerical gradient of the loss for every element of every tensor; returns {name: relative error}
    and fails naming every tensor above TOL."""
    errors = {}
    for name in param_shapes(config):
        def loss_of(p, name=name):
            return gpt_forward({**params, name: p}, config, idx, targets, **forward_kwargs())[1]

        numeric = numerical_gradient(loss_of, [params[name]], 0, 1.0)
        assert grads[name].shape == numeric.shape, name
        errors[name] = relative_error(grads[name], numeric)
    bad = {k: f"{e:.3g}" for k, e in errors.items() if not e <= TOL}
    assert not bad, f"gradient check failed for {bad}"
    return errors


@pytest.fixture(scope="module")
def worst_error():
    """Collects every whole-model relative error; prints the worst one when the module is done (-s)."""
    seen: dict[str, float] = {}
    yield seen
    if seen:
        where = max(seen, key=seen.__getitem__)
        print(f"\n[test_model] worst whole-model relative error over {len(seen)} tensors: "
              f"{seen[where]:.3e} ({where})")


# ------------------------------------------------------------------------ whole-model finite differences

GRADCHECK_CONFIGS = {
    # name: (config, B, T)
    "one-layer-one-head-T1": (GPTConfig(vocab_size=7, block_size=3, n_layer=1, n_head=1, n_embd=4), 2, 1),
    "one-layer-two-heads": (GPTConfig(vocab_size=9, block_size=4, n_layer=1, n_head=2, n_embd=4), 1, 3),
    "one-head-two-layers": (GPTConfig(vocab_size=8, block_size=4, n_layer=2, n_head=1, n_embd=6), 2, 4),
    # block_size > T, so the unused rows of wpe must get exactly zero gradient
    "three-layers-three-heads": (GPTConfig(vocab_size=11, block_size=6, n_layer=3, n_head=3, n_embd=6), 2, 4),
}


@pytest.mark.parametrize("name", list(GRADCHECK_CONFIGS))
def test_whole_model_gradient_matches_finite_differences(name, worst_error):
    config, B, T = GRADCHECK_CONFIGS[name]
    model = noisy_model(config, seed=len(name))
    idx, targets = batch(config, B, T, seed=len(name))
    _, loss = model.forward(idx, targets)
    grads = {k: g.copy() for k, g in model.backward().items()}
    # the functional core and the class agree exactly
    _, loss2, cache = gpt_forward(model.params, config, idx, targets)
    assert float(loss2) == float(loss)
    functional = gpt_backward(cache)
    for k in grads:
        np.testing.assert_array_equal(functional[k], grads[k], err_msg=k)
    errors = check_every_tensor(model.params, config, idx, targets, grads)
    worst_error.update({f"{name}:{k}": e for k, e in errors.items()})
    where = max(errors, key=errors.__getitem__)
    print(f"\n[{name}] worst relative error {errors[where]:.3e} in {where}")
    if T < config.block_size:
        assert not grads["wpe.weight"][T:].any()


def test_dropout_gradient_matches_finite_differences(worst_error):
    config = GPTConfig(vocab_size=7, block_size=4, n_layer=1, n_head=2, n_embd=8, dropout=0.3)
    model = noisy_model(config, seed=5)
    idx, targets = batch(config, 2, 3, seed=5)
    seed = 1234

    def kwargs():  # a fresh Generator per call: every forward draws the same masks
        return dict(train=True, rng=np.random.default_rng(seed))

    _, loss, cache = gpt_forward(model.params, config, idx, targets, **kwargs())
    _, loss_eval, _ = gpt_forward(model.params, config, idx, targets)
    assert float(loss) != float(loss_eval), "dropout did not drop anything"
    assert cache.drop.scaled_mask is not None and (cache.drop.scaled_mask == 0).any()
    grads = gpt_backward(cache)
    errors = check_every_tensor(model.params, config, idx, targets, grads, kwargs)
    worst_error.update({f"dropout:{k}": e for k, e in errors.items()})
    where = max(errors, key=errors.__getitem__)
    print(f"\n[dropout] worst relative error {errors[where]:.3e} in {where}")


# ------------------------------------------------------------------------------------- tied embedding

def untied_loss(params, config, idx, targets, w_lookup, w_head):
    """The model written out with the token lookup and the LM head reading two different matrices."""
    T = idx.shape[1]
    x = w_lookup[idx] + params["wpe.weight"][:T]
    for i in range(config.n_layer):
        x, _ = block_forward(x, {n: params[f"h.{i}.{n}"] for n in BLOCK_PARAM_NAMES}, config.n_head)
    xf, _ = layernorm_forward(x, params["ln_f.weight"], params["ln_f.bias"])
    loss, _ = cross_entropy_forward(xf @ w_head.T, targets)
    return loss


def test_tied_embedding_gradient_is_the_sum_of_lookup_and_head():
    config = GPTConfig(vocab_size=9, block_size=4, n_layer=2, n_head=2, n_embd=4)
    model = noisy_model(config, seed=3)
    # only some token ids occur, so some rows of wte are reached by the head alone
    rng = np.random.default_rng(3)
    idx = rng.integers(0, 5, size=(2, 4))
    targets = rng.integers(0, config.vocab_size, size=(2, 4))
    wte = model.params["wte.weight"]
    _, loss, cache = gpt_forward(model.params, config, idx, targets)
    assert abs(float(untied_loss(model.params, config, idx, targets, wte, wte)) - float(loss)) < 1e-13
    dwte = gpt_backward(cache)["wte.weight"]

    lookup = numerical_gradient(lambda w: untied_loss(model.params, config, idx, targets, w, wte), [wte], 0, 1.0)
    head = numerical_gradient(lambda w: untied_loss(model.params, config, idx, targets, wte, w), [wte], 0, 1.0)
    assert relative_error(dwte, lookup + head) <= TOL
    # each source alone is not enough: dropping either one changes the gradient materially
    assert relative_error(dwte, head) > 1e-2
    assert relative_error(dwte, lookup) > 1e-2
    # the head's part is dlogits^T xf, written out from the cache
    dlogits = cache.ce.probs.copy()
    dlogits[np.arange(dlogits.shape[0]), cache.ce.targets] -= 1.0
    dlogits /= dlogits.shape[0]
    head_analytic = dlogits.T @ cache.xf.reshape(-1, config.n_embd)
    assert relative_error(head_analytic, head) <= TOL
    # rows never looked up get their gradient from the head only
    unused = np.setdiff1d(np.arange(config.vocab_size), idx)
    assert unused.size and not lookup[unused].any()
    np.testing.assert_allclose(dwte[unused], head_analytic[unused], rtol=1e-12, atol=1e-15)


def test_wpe_gradient_sums_over_the_batch():
    config = GPTConfig(vocab_size=7, block_size=5, n_layer=1, n_head=2, n_embd=4)
    model = noisy_model(config, seed=8)
    idx, targets = batch(config, 3, 4, seed=8)
    _, _, cache = gpt_forward(model.params, config, idx, targets)
    dwpe = gpt_backward(cache)["wpe.weight"]
    # per-sequence contributions: each sequence alone, with the mean's 1/N rescaled to the full batch's
    parts = []
    for b in range(3):
        _, _, c = gpt_forward(model.params, config, idx[b:b + 1], targets[b:b + 1])
        parts.append(gpt_backward(c)["wpe.weight"] / 3.0)
    np.testing.assert_allclose(dwpe, sum(parts), rtol=1e-10, atol=1e-14)


# ------------------------------------------------------------------------------------- loss at init

def test_loss_at_init_is_log_vocab_size():
    config = GPTConfig(vocab_size=65, block_size=32, n_layer=2, n_head=4, n_embd=32)
    model = GPT(config, seed=0, dtype=np.float64)
    idx, targets = batch(config, 8, 32, seed=0)
    _, loss = model.forward(idx, targets)
    assert abs(float(loss) - math.log(65)) < 0.1


# ------------------------------------------------------------------------------ shapes and validation

SHAPE_CONFIG = GPTConfig(vocab_size=13, block_size=6, n_layer=2, n_head=2, n_embd=8)


@given(B=st.integers(1, 3), T=st.integers(1, 6), seed=st.integers(0, 10))
def test_logits_and_loss_shapes(B, T, seed):
    model = GPT(SHAPE_CONFIG, seed=seed, dtype=np.float64)
    idx, targets = batch(SHAPE_CONFIG, B, T, seed)
    logits, loss = model.forward(idx, targets)
    assert logits.shape == (B, T, 13)
    assert loss.shape == () and np.isfinite(loss)
    logits_only, none = model.forward(idx)
    assert none is None
    np.testing.assert_array_equal(logits_only, logits)


def test_backward_without_targets_or_forward():
    model = GPT(SHAPE_CONFIG, dtype=np.float64)
    idx, targets = batch(SHAPE_CONFIG, 2, 3)
    with pytest.raises(ValueError, match="forward"):
        model.backward()
    model.forward(idx)
    with pytest.raises(ValueError):
        model.backward()
    _, _, cache = gpt_forward(model.params, SHAPE_CONFIG, idx)
    with pytest.raises(ValueError):
        gpt_backward(cache)
    model.forward(idx, targets)
    model.backward()
    with pytest.raises(ValueError, match="forward"):  # the cache is released after one backward
        model.backward()


@pytest.mark.parametrize("make_idx", [
    lambda: np.zeros((2, 7), dtype=np.int64),  # longer than block_size=6
    lambda: np.zeros((2, 0), dtype=np.int64),  # empty
    lambda: np.array([[0, -1, 2]]),  # negative id
    lambda: np.array([[0, 13, 2]]),  # id == V
    lambda: np.array([[0.0, 1.0, 2.0]]),  # float ids
    lambda: np.array([0, 1, 2]),  # 1-D
    lambda: [[0, 1, 2]],  # not an array
], ids=["too-long", "empty", "negative", "id-eq-V", "float", "1d", "list"])
def test_bad_idx_rejected(make_idx):
    model = GPT(SHAPE_CONFIG, dtype=np.float64)
    with pytest.raises(ValueError, match=r"^idx\b"):
        model.forward(make_idx())


@pytest.mark.parametrize("make_targets", [
    lambda: np.zeros((2, 4), dtype=np.int64),  # wrong shape
    lambda: np.zeros((3,), dtype=np.int64),  # wrong rank
    lambda: np.full((2, 3), 13),  # id == V
    lambda: np.full((2, 3), -1),  # negative
    lambda: np.zeros((2, 3)),  # float
], ids=["shape", "rank", "id-eq-V", "negative", "float"])
def test_bad_targets_rejected(make_targets):
    model = GPT(SHAPE_CONFIG, dtype=np.float64)
    with pytest.raises(ValueError, match=r"^targets\b"):
        model.forward(np.zeros((2, 3), dtype=np.int64), make_targets())


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match=r"^config\b"):
        GPT(SHAPE_CONFIG.to_dict())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^dtype\b"):
        GPT(SHAPE_CONFIG, dtype=np.float16)


def test_narrow_integer_ids_accepted():
    model = GPT(SHAPE_CONFIG, dtype=np.float64)
    idx, targets = batch(SHAPE_CONFIG, 2, 3)
    a = model.forward(idx.astype(np.uint8), targets.astype(np.int16))
    b = model.forward(idx, targets)
    np.testing.assert_array_equal(a[0], b[0])
    assert float(a[1]) == float(b[1])


# ----------------------------------------------------------------------- parameters, names and buffers

def test_parameter_names_and_shapes_match_gpt2():
    config = GPTConfig(vocab_size=10, block_size=5, n_layer=2, n_head=2, n_embd=4)
    C = 4
    block = [
        ("ln_1.weight", (C,)), ("ln_1.bias", (C,)),
        ("attn.c_attn.weight", (C, 3 * C)), ("attn.c_attn.bias", (3 * C,)),
        ("attn.c_proj.weight", (C, C)), ("attn.c_proj.bias", (C,)),
        ("ln_2.weight", (C,)), ("ln_2.bias", (C,)),
        ("mlp.c_fc.weight", (C, 4 * C)), ("mlp.c_fc.bias", (4 * C,)),
        ("mlp.c_proj.weight", (4 * C, C)), ("mlp.c_proj.bias", (C,)),
    ]
    expected = {"wte.weight": (10, C), "wpe.weight": (5, C)}
    for i in range(2):
        expected.update({f"h.{i}.{n}": s for n, s in block})
    expected.update({"ln_f.weight": (C,), "ln_f.bias": (C,)})
    assert param_shapes(config) == expected
    model = GPT(config)
    assert list(model.params) == list(expected)
    assert {k: p.shape for k, p in model.params.items()} == expected
    assert not any("lm_head" in k for k in model.params)
    assert model.num_params() == sum(math.prod(s) for s in expected.values())


def test_gpt2_small_parameter_count():
    # the published 124M figure counts the tied lm_head once
    assert sum(math.prod(s) for s in param_shapes(GPTConfig()).values()) == 124_439_808


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_params_and_grads_are_views_of_flat_buffers(dtype):
    model = GPT(SHAPE_CONFIG, dtype=dtype)
    P = model.num_params()
    assert model.flat_params.shape == (P,) and model.flat_grads.shape == (P,)
    assert model.flat_params.dtype == dtype and model.flat_grads.dtype == dtype
    assert not np.shares_memory(model.flat_params, model.flat_grads)
    for k in model.params:
        assert np.shares_memory(model.params[k], model.flat_params), k
        assert np.shares_memory(model.grads[k], model.flat_grads), k
    # writing the buffer is writing the params
    model.flat_params[:] = 0.5
    assert all((p == 0.5).all() for p in model.params.values())
    # backward fills the grads in place and returns those very views
    idx, targets = batch(SHAPE_CONFIG, 2, 4)
    model.forward(idx, targets)
    grads = model.backward()
    assert set(grads) == set(model.params)
    for k, g in grads.items():
        assert g is model.grads[k]
        assert g.shape == model.params[k].shape and g.dtype == dtype, k
    assert np.abs(model.flat_grads).sum() > 0


def test_two_dimensional_matrices_come_first_in_the_buffer():
    model = GPT(SHAPE_CONFIG)
    base = model.flat_params.__array_interface__["data"][0]
    item = model.flat_params.itemsize
    start = {k: (p.__array_interface__["data"][0] - base) // item for k, p in model.params.items()}
    matrices = [k for k, p in model.params.items() if p.ndim == 2]
    vectors = [k for k, p in model.params.items() if p.ndim != 2]
    end_of_matrices = sum(model.params[k].size for k in matrices)
    assert max(start[k] + model.params[k].size for k in matrices) == end_of_matrices
    assert min(start[k] for k in vectors) == end_of_matrices


def test_gpt_grads_hands_over_each_gradient_once_as_the_backward_reaches_it():
    """gpt_grads, the fast path's one hook: every parameter exactly once, from the top of the network down
    (ln_f first, the tied wte last, after both of its uses), equal to gpt_backward's dict; dloss scales it."""
    config = SHAPE_CONFIG
    model = noisy_model(config)
    idx, targets = batch(config, 2, 4)
    _, _, cache = gpt_forward(model.params, config, idx, targets)
    fresh = gpt_backward(cache)
    assert list(fresh) == list(param_shapes(config))
    streamed = list(gpt_grads(cache))
    names = [name for name, _ in streamed]
    assert sorted(names) == sorted(fresh) and len(names) == len(set(names))
    assert names[:2] == ["ln_f.weight", "ln_f.bias"] and names[-2:] == ["wpe.weight", "wte.weight"]
    last_layer = config.n_layer - 1
    assert names.index(f"h.{last_layer}.ln_1.weight") < names.index("h.0.mlp.c_proj.weight")
    for name, grad in streamed:
        np.testing.assert_array_equal(grad, fresh[name], err_msg=name)
    half = gpt_backward(cache, dloss=0.5)  # a power of two: the scaled gradients are exact
    for k in fresh:
        np.testing.assert_array_equal(half[k], 0.5 * fresh[k], err_msg=k)


def test_float32_stays_float32():
    model = GPT(SHAPE_CONFIG, dtype=np.float32)
    assert all(p.dtype == np.float32 for p in model.params.values())
    idx, targets = batch(SHAPE_CONFIG, 2, 5)
    logits, loss = model.forward(idx, targets)
    assert logits.dtype == np.float32 and loss.dtype == np.float32
    grads = model.backward()
    assert all(g.dtype == np.float32 for g in grads.values())
    # and it agrees with the same model in float64 to float32 accuracy
    model64 = GPT(SHAPE_CONFIG, dtype=np.float64)
    model64.flat_params[:] = model.flat_params
    logits64, loss64 = model64.forward(idx, targets)
    assert logits64.dtype == np.float64 and loss64.dtype == np.float64
    np.testing.assert_allclose(logits, logits64, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model64.backward()["wte.weight"], grads["wte.weight"], rtol=1e-3, atol=1e-5)


def test_same_seed_same_params_different_seed_different():
    a, b, c = GPT(SHAPE_CONFIG, seed=7), GPT(SHAPE_CONFIG, seed=7), GPT(SHAPE_CONFIG, seed=8)
    np.testing.assert_array_equal(a.flat_params, b.flat_params)
    assert not np.array_equal(a.flat_params, c.flat_params)


# ----------------------------------------------------------------------------------------------- init

def test_gpt2_initialisation_statistics():
    config = GPTConfig(vocab_size=1024, block_size=256, n_layer=3, n_head=4, n_embd=128)
    model = GPT(config, seed=0, dtype=np.float64)
    proj_std = 0.02 / math.sqrt(2 * config.n_layer)
    for k, p in model.params.items():
        if k.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
            assert (p == 1.0).all(), k
        elif k.endswith(".bias"):
            assert (p == 0.0).all(), k
        else:
            std = proj_std if k.endswith("c_proj.weight") else 0.02
            n = p.size
            # standard errors of the sample mean and of the sample std of n normal draws
            assert abs(p.mean()) < 5 * std / math.sqrt(n), k
            assert abs(p.std() / std - 1.0) < 5 / math.sqrt(2 * n), (k, p.std(), std)


# -------------------------------------------------------------------------------------------- dropout

DROP_CONFIG = GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, dropout=0.4)


def test_dropout_changes_training_outputs_and_repeats_with_the_seed():
    idx, targets = batch(DROP_CONFIG, 2, 6)
    a, b = GPT(DROP_CONFIG, seed=3, dtype=np.float64), GPT(DROP_CONFIG, seed=3, dtype=np.float64)
    assert a.training
    la1, _ = a.forward(idx, targets)
    lb1, _ = b.forward(idx, targets)
    np.testing.assert_array_equal(la1, lb1)  # same seed: same masks
    la2, _ = a.forward(idx, targets)
    assert not np.allclose(la1, la2)  # the Generator moved on: new masks
    eval_logits, _ = a.eval().forward(idx, targets)
    assert not np.allclose(la1, eval_logits)


def test_eval_mode_is_deterministic_and_equals_no_dropout():
    idx, targets = batch(DROP_CONFIG, 2, 6)
    model = GPT(DROP_CONFIG, seed=3, dtype=np.float64).eval()
    plain = GPT(GPTConfig(**{**DROP_CONFIG.to_dict(), "dropout": 0.0}), seed=3, dtype=np.float64)
    np.testing.assert_array_equal(model.flat_params, plain.flat_params)
    l1, loss1 = model.forward(idx, targets)
    l2, loss2 = model.forward(idx, targets)
    l3, loss3 = plain.forward(idx, targets)  # plain is in training mode, but p = 0
    np.testing.assert_array_equal(l1, l2)
    np.testing.assert_array_equal(l1, l3)
    assert float(loss1) == float(loss2) == float(loss3)
    assert model.train().training and not model.eval().training


# ------------------------------------------------------------------------------------------- causality

@given(T=st.integers(2, 6), t=st.integers(0, 4), seed=st.integers(0, 50))
def test_logits_do_not_depend_on_later_tokens(T, t, seed):
    t = t % (T - 1)  # a position with at least one later token
    config = SHAPE_CONFIG
    model = noisy_model(config, seed=seed % 3)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, config.vocab_size, size=(2, T))
    changed = idx.copy()
    changed[:, t + 1:] = (idx[:, t + 1:] + rng.integers(1, config.vocab_size, size=(2, T - t - 1))) \
        % config.vocab_size
    a, _ = model.forward(idx)
    b, _ = model.forward(changed)
    np.testing.assert_allclose(a[:, :t + 1], b[:, :t + 1], rtol=0, atol=1e-12)
    assert not np.allclose(a[:, t + 1:], b[:, t + 1:])


# -------------------------------------------------------------------------------------------- overfit

def test_overfits_one_batch():
    config = GPTConfig(vocab_size=16, block_size=8, n_layer=2, n_head=2, n_embd=32)
    model = GPT(config, seed=0, dtype=np.float32)
    idx, targets = batch(config, 8, 8, seed=1)  # 64 random next-token pairs to memorise
    opt = AdamW(model.params, lr=1e-2, weight_decay=0.0)
    first = None
    for step in range(400):  # noqa: B007  (reported after the loop)
        _, loss = model.forward(idx, targets)
        first = float(loss) if first is None else first
        if float(loss) < 0.05:
            break
        opt.step(model.backward())
    assert first > 2.0  # near ln(16) at the start
    assert float(loss) < 0.05, f"loss {float(loss):.4f} after {step} steps"


def test_gpt_grads_builds_the_weight_matrices_in_the_given_buffer():
    """out=: wte's and every block weight matrix's gradient is computed straight into out's array (the very
    array is yielded, holding the same bits as without out); the other gradients are unchanged; a wrong buffer
    is refused in one line naming the entry."""
    config = SHAPE_CONFIG
    model = noisy_model(config)
    idx, targets = batch(config, 2, 4)
    _, _, cache = gpt_forward(model.params, config, idx, targets)
    fresh = gpt_backward(cache)
    in_place = ["wte.weight"] + [f"h.{i}.{n}" for i in range(config.n_layer) for n in BLOCK_WEIGHT_NAMES]
    buf = {k: np.full(fresh[k].shape, np.nan) for k in in_place}  # garbage: must be overwritten
    streamed = dict(gpt_grads(cache, out=buf))
    for k in in_place:
        assert streamed[k] is buf[k], k
    for k in fresh:
        np.testing.assert_array_equal(streamed[k], fresh[k], err_msg=k)
    last = in_place[-1]
    for bad, name in (({}, "wte.weight"), ({**buf, "wte.weight": np.zeros((3, 3))}, "wte.weight"),
                      ({**buf, last: buf[last].astype(np.float32)}, last),
                      ({k: v for k, v in buf.items() if k != last}, last)):
        with pytest.raises(ValueError, match=f"out: expected a mapping whose '{name}'"):
            list(gpt_grads(cache, out=bad))
