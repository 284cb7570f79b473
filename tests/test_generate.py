"""Generation: the KV cache against the full forward, cached vs uncached sampling, the sliding window,
the top-k / top-p filters (ties included), the sampler's statistics and the argument checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.stats import chi2

from npgpt import (GPT, GPTConfig, KVCache, forward_cached, generate, gpt_forward, sample_next, top_k_filter,
                   top_p_filter)

CONFIG = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=8)


def noisy_params(config: GPTConfig = CONFIG, seed: int = 0, dtype=np.float64):
    """Params pushed away from the init so logits are spread out and near-ties are unlikely."""
    model = GPT(config, seed=seed, dtype=dtype)
    rng = np.random.default_rng(500 + seed)
    for p in model.params.values():
        p += (0.3 * rng.standard_normal(p.shape)).astype(dtype)
    return model.params


PARAMS = noisy_params()


def softmax(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# ------------------------------------------------------------------------------------------ KV cache

@given(B=st.integers(1, 3), prefill=st.integers(1, 8), chunk=st.integers(1, 3), seed=st.integers(0, 100))
def test_kv_cache_logits_equal_full_forward_at_every_step(B, prefill, chunk, seed):
    rng = np.random.default_rng(seed)
    seq = rng.integers(0, CONFIG.vocab_size, size=(B, CONFIG.block_size))
    kv = KVCache(CONFIG, B, np.float64)
    pos, sizes = 0, [prefill]
    while sum(sizes) < CONFIG.block_size:  # a prefill, then chunks of `chunk` tokens (often one)
        sizes.append(min(chunk, CONFIG.block_size - sum(sizes)))
    for n in sizes:
        cached = forward_cached(PARAMS, CONFIG, seq[:, pos:pos + n], kv)
        full, _, _ = gpt_forward(PARAMS, CONFIG, seq[:, :pos + n])
        assert cached.shape == (B, n, CONFIG.vocab_size)
        np.testing.assert_allclose(cached, full[:, pos:pos + n], rtol=1e-12, atol=1e-12,
                                   err_msg=f"positions {pos}..{pos + n - 1}")
        pos += n
        assert kv.length == pos
    with pytest.raises(ValueError, match=r"^idx\b"):
        forward_cached(PARAMS, CONFIG, seq[:, :1], kv)  # the cache is full


def test_kv_cache_shapes():
    kv = KVCache(CONFIG, 3, np.float32)
    assert kv.length == 0
    assert len(kv.k) == len(kv.v) == CONFIG.n_layer
    for a in kv.k + kv.v:
        assert a.shape == (3, CONFIG.n_head, CONFIG.block_size, CONFIG.head_size)
        assert a.dtype == np.float32


def test_kv_cache_stores_keys_and_values_of_each_position():
    # after a prefill, single-token steps only append: the earlier entries are left exactly as they were
    rng = np.random.default_rng(0)
    seq = rng.integers(0, CONFIG.vocab_size, size=(2, 6))
    kv = KVCache(CONFIG, 2, np.float64)
    forward_cached(PARAMS, CONFIG, seq[:, :4], kv)
    k0 = [k[:, :, :4].copy() for k in kv.k]
    forward_cached(PARAMS, CONFIG, seq[:, 4:5], kv)
    forward_cached(PARAMS, CONFIG, seq[:, 5:6], kv)
    for i in range(CONFIG.n_layer):
        np.testing.assert_array_equal(kv.k[i][:, :, :4], k0[i])
        assert kv.k[i][:, :, 5].any() and not kv.k[i][:, :, 6:].any()


# ----------------------------------------------------------------------------- cached vs uncached

SAMPLING = {
    "greedy": dict(temperature=0.0),
    "sample": dict(temperature=1.0),
    "hot-top-k": dict(temperature=1.5, top_k=4),
    "cool-top-p": dict(temperature=0.7, top_p=0.8),
    "top-k-and-top-p": dict(temperature=1.0, top_k=6, top_p=0.9),
}


@pytest.mark.parametrize("mode", list(SAMPLING))
@pytest.mark.parametrize("T, new", [(1, 4), (3, 12), (8, 5), (11, 6)],
                         ids=["short", "past-block", "full-prompt", "prompt-over-block"])
def test_cache_does_not_change_the_tokens(mode, T, new):
    prompt = np.random.default_rng(T).integers(0, CONFIG.vocab_size, size=(2, T))
    a = generate(PARAMS, CONFIG, prompt, new, rng=np.random.default_rng(9), use_cache=True, **SAMPLING[mode])
    b = generate(PARAMS, CONFIG, prompt, new, rng=np.random.default_rng(9), use_cache=False, **SAMPLING[mode])
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2, T + new)


def test_greedy_is_argmax_of_the_last_block_size_tokens():
    prompt = np.random.default_rng(1).integers(0, CONFIG.vocab_size, size=(3, 5))
    out = generate(PARAMS, CONFIG, prompt, 10, temperature=0.0)  # runs 7 tokens past block_size
    seq = prompt.copy()
    for _ in range(10):
        window = seq[:, -CONFIG.block_size:]  # the sliding window: learned positions restart at 0
        logits, _, _ = gpt_forward(PARAMS, CONFIG, window)
        seq = np.concatenate([seq, logits[:, -1].argmax(axis=-1)[:, None]], axis=1)
    np.testing.assert_array_equal(out, seq)


def test_generate_output_dtype_and_prompt():
    model = GPT(CONFIG, seed=0, dtype=np.float32)
    prompt = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int32)
    keep = prompt.copy()
    out = model.generate(prompt, 12, temperature=0.9, top_k=5, rng=np.random.default_rng(0))
    assert out.dtype == np.int64 and out.shape == (2, 15)
    np.testing.assert_array_equal(out[:, :3], keep)
    np.testing.assert_array_equal(prompt, keep)  # the caller's prompt is untouched
    assert out.min() >= 0 and out.max() < CONFIG.vocab_size
    greedy = model.generate(prompt, 12, temperature=0.0)
    np.testing.assert_array_equal(greedy, model.generate(prompt, 12, temperature=0.0, use_cache=False))
    none = model.generate(prompt, 0)
    assert none.dtype == np.int64
    np.testing.assert_array_equal(none, keep)


def test_sampling_repeats_with_the_seed():
    prompt = np.zeros((2, 1), dtype=np.int64)
    a = generate(PARAMS, CONFIG, prompt, 10, rng=np.random.default_rng(3))
    b = generate(PARAMS, CONFIG, prompt, 10, rng=np.random.default_rng(3))
    c = generate(PARAMS, CONFIG, prompt, 10, rng=np.random.default_rng(4))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_on_token_sees_each_steps_new_tokens_as_drawn(family):
    """on_token gets every step's (B,) new ids, in order, past the block_size window too; the returned
    sequences are the same bits as without it."""
    from npgpt.llama import Llama, LlamaConfig
    from npgpt.llama import generate as llama_generate
    if family == "gpt2":
        run, params, config = generate, PARAMS, CONFIG
    else:
        run, config = llama_generate, LlamaConfig(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_kv_head=1,
                                                   n_embd=8, intermediate_size=16)
        params = Llama(config, seed=0, dtype=np.float64).params
    prompt = np.array([[1, 2], [3, 4]])
    seen: list[np.ndarray] = []
    out = run(params, config, prompt, 11, rng=np.random.default_rng(5), on_token=lambda ids: seen.append(ids.copy()))
    assert len(seen) == 11 and all(ids.shape == (2,) for ids in seen)
    np.testing.assert_array_equal(np.stack(seen, axis=1), out[:, 2:])
    np.testing.assert_array_equal(out, run(params, config, prompt, 11, rng=np.random.default_rng(5)))


@pytest.mark.parametrize("kwargs, name", [
    (dict(idx=np.zeros((1, 0), dtype=np.int64)), "idx"),
    (dict(idx=np.array([[0, 13]])), "idx"),
    (dict(idx=np.array([[0, -1]])), "idx"),
    (dict(idx=np.array([[0.0, 1.0]])), "idx"),
    (dict(max_new_tokens=-1), "max_new_tokens"),
    (dict(max_new_tokens=2.0), "max_new_tokens"),
    (dict(temperature=-0.5), "temperature"),
    (dict(top_k=0), "top_k"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
])
def test_generate_rejects_bad_arguments(kwargs, name):
    args = dict(idx=np.zeros((1, 2), dtype=np.int64), max_new_tokens=3, temperature=1.0,
                rng=np.random.default_rng(0))
    args.update(kwargs)
    with pytest.raises(ValueError, match=rf"^{name}\b"):
        generate(PARAMS, CONFIG, **args)


# --------------------------------------------------------------------------------------------- top-k

@given(
    rows=st.lists(st.lists(st.integers(-3, 3), min_size=6, max_size=6), min_size=1, max_size=3),
    k=st.integers(1, 8),
)
def test_top_k_keeps_everything_at_least_the_kth_largest(rows, k):
    logits = np.array(rows, dtype=np.float64)  # small integers: plenty of ties
    out = top_k_filter(logits, k)
    assert out.shape == logits.shape and out is not logits
    for row, filtered in zip(logits, out):
        kth = np.sort(row)[::-1][min(k, row.size) - 1]
        keep = row >= kth
        np.testing.assert_array_equal(filtered[keep], row[keep])
        assert np.all(filtered[~keep] == -np.inf)
        assert keep.sum() >= min(k, row.size)


def test_top_k_examples():
    x = np.array([[1.0, 3.0, 3.0, 2.0, 0.0]])
    inf = -np.inf
    np.testing.assert_array_equal(top_k_filter(x, 1), [[inf, 3.0, 3.0, inf, inf]])  # tied maxima both kept
    np.testing.assert_array_equal(top_k_filter(x, 2), [[inf, 3.0, 3.0, inf, inf]])
    np.testing.assert_array_equal(top_k_filter(x, 3), [[inf, 3.0, 3.0, 2.0, inf]])
    for k in (5, 6, 100):  # k >= V keeps all
        np.testing.assert_array_equal(top_k_filter(x, k), x)
    assert not np.shares_memory(top_k_filter(x, 5), x)


@pytest.mark.parametrize("k", [0, -1])
def test_top_k_rejects_k_below_one(k):
    with pytest.raises(ValueError, match="top_k"):
        top_k_filter(np.zeros((1, 4)), k)


# --------------------------------------------------------------------------------------------- top-p

def kept(logits, p):
    return np.isfinite(top_p_filter(np.log(np.array(logits, dtype=np.float64)), p)).tolist()


@pytest.mark.parametrize("p, expected", [
    (0.01, [True, False, False, False]),
    (0.4, [True, False, False, False]),  # 0.4 alone reaches 0.4
    (0.41, [True, True, False, False]),
    (0.5, [True, True, False, False]),
    (0.7, [True, True, False, False]),  # 0.4 + 0.3 reaches 0.7: the mass above the third is not < 0.7
    (0.71, [True, True, True, False]),
    (0.95, [True, True, True, True]),
    (1.0, [True, True, True, True]),
])
def test_top_p_smallest_prefix_reaching_p(p, expected):
    assert kept([0.4, 0.3, 0.2, 0.1], p) == expected
    # the order of the vocabulary does not matter
    perm = [2, 0, 3, 1]
    assert kept(np.array([0.4, 0.3, 0.2, 0.1])[perm], p) == [expected[i] for i in perm]


@pytest.mark.parametrize("p, expected", [
    (0.5, [True, False, False, False]),
    (0.6, [True, True, False, False]),
    (0.75, [True, True, False, False]),  # exact in binary: {0.5, 0.25} reaches 0.75
    (0.76, [True, True, True, True]),  # the boundary token is tied with the last: both kept
    (1.0, [True, True, True, True]),
])
def test_top_p_ties_at_the_boundary_are_kept(p, expected):
    assert kept([0.5, 0.25, 0.125, 0.125], p) == expected


def test_top_p_ties_at_the_top_are_all_kept():
    assert kept([0.3, 0.1, 0.3, 0.3], 0.2) == [True, False, True, True]
    assert kept([0.25, 0.25, 0.25, 0.25], 0.01) == [True] * 4


def test_top_p_rows_are_independent_and_values_kept():
    logits = np.log(np.array([[0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]])) + 5.0  # a shift changes nothing
    out = top_p_filter(logits, 0.6)
    np.testing.assert_array_equal(np.isfinite(out), [[True, True, False, False], [False, False, True, True]])
    np.testing.assert_array_equal(out[np.isfinite(out)], logits[np.isfinite(out)])


def reference_top_p(logits, p):
    probs = softmax(logits)
    keep = np.zeros(probs.shape, dtype=bool)
    margin = np.inf
    for r, row in enumerate(probs):
        for i, q in enumerate(row):
            above = row[row > q].sum()  # mass of the strictly more likely tokens
            keep[r, i] = above < p
            margin = min(margin, abs(above - p))
    return keep, margin


@given(
    rows=st.lists(st.lists(st.integers(-4, 4), min_size=5, max_size=5), min_size=1, max_size=3),
    scale=st.sampled_from([0.5, 1.0, 1.7]),
    p=st.floats(0.01, 1.0),
)
def test_top_p_against_reference(rows, scale, p):
    logits = scale * np.array(rows, dtype=np.float64)
    keep, margin = reference_top_p(logits, p)
    if margin < 1e-9:  # p within rounding of a boundary: either answer is defensible
        return
    np.testing.assert_array_equal(np.isfinite(top_p_filter(logits, p)), keep)
    assert np.isfinite(top_p_filter(logits, p)).any(axis=-1).all()  # the most likely token always survives


@pytest.mark.parametrize("p", [0.0, -0.1, 1.0001, 2.0, float("nan")])
def test_top_p_rejects_p_outside_unit_interval(p):
    with pytest.raises(ValueError, match="top_p"):
        top_p_filter(np.zeros((1, 4)), p)


# ------------------------------------------------------------------------------------------ sampling

def chi_square(counts, probs):
    n = counts.sum()
    support = probs > 0
    assert counts[~support].sum() == 0, "a zero-probability token was drawn"
    expected = n * probs[support]
    stat = float(((counts[support] - expected) ** 2 / expected).sum())
    return stat, int(support.sum()) - 1


@pytest.mark.parametrize("kwargs", [
    dict(temperature=1.0), dict(temperature=0.5), dict(temperature=2.0),
    dict(temperature=1.0, top_k=3), dict(temperature=0.8, top_p=0.7), dict(temperature=1.3, top_k=4, top_p=0.9),
], ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_sample_frequencies_match_probabilities(kwargs):
    logits = np.array([1.0, 2.5, -0.5, 0.3, 2.0, 0.9])
    z = logits / kwargs["temperature"]
    if "top_k" in kwargs:
        z = np.where(z >= np.sort(z)[::-1][kwargs["top_k"] - 1], z, -np.inf)
    if "top_p" in kwargs:
        keep, _ = reference_top_p(z[None], kwargs["top_p"])
        z = np.where(keep[0], z, -np.inf)
    probs = softmax(z)
    n = 40_000
    draws = sample_next(np.tile(logits, (n, 1)), rng=np.random.default_rng(0), **kwargs)
    assert draws.dtype == np.int64 and draws.shape == (n,)
    counts = np.bincount(draws, minlength=logits.size)
    stat, dof = chi_square(counts, probs)
    assert stat < chi2.ppf(0.9999, dof), (counts, n * probs)


def test_temperature_divides_the_logits():
    logits = np.random.default_rng(0).standard_normal((500, 7))
    for t in (0.3, 1.0, 2.5):
        a = sample_next(logits, temperature=t, rng=np.random.default_rng(1))
        b = sample_next(logits / t, temperature=1.0, rng=np.random.default_rng(1))
        np.testing.assert_array_equal(a, b)


def test_temperature_zero_is_argmax():
    logits = np.random.default_rng(0).standard_normal((50, 9))
    out = sample_next(logits, temperature=0.0)
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, logits.argmax(axis=-1))


def test_float32_logits_are_accepted():
    logits = np.random.default_rng(0).standard_normal((4, 9)).astype(np.float32)
    out = sample_next(logits, temperature=0.8, top_k=3, top_p=0.9, rng=np.random.default_rng(0))
    assert out.dtype == np.int64 and out.shape == (4,)
    top3 = np.argsort(-logits, axis=-1)[:, :3]
    assert all(o in row for o, row in zip(out, top3))


@pytest.mark.parametrize("kwargs, name", [
    (dict(temperature=-1.0), "temperature"), (dict(temperature=-1e-9), "temperature"),
    (dict(temperature=float("nan")), "temperature"), (dict(temperature=float("inf")), "temperature"),
    (dict(top_k=0), "top_k"), (dict(top_k=-2), "top_k"),
    (dict(top_p=0.0), "top_p"), (dict(top_p=-0.5), "top_p"), (dict(top_p=1.2), "top_p"),
])
def test_sample_next_rejects_bad_arguments(kwargs, name):
    args = dict(temperature=1.0, rng=np.random.default_rng(0))
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        sample_next(np.zeros((2, 5)), **args)


@pytest.mark.parametrize("kwargs, name", [(dict(top_k=0), "top_k"), (dict(top_p=1.5), "top_p")])
def test_sampling_arguments_are_checked_even_when_greedy(kwargs, name):
    # An invalid top_k / top_p is a caller's mistake whatever the temperature; at temperature 0 the filters
    # are never applied, but the argument should still be rejected rather than silently ignored.
    with pytest.raises(ValueError, match=name):
        sample_next(np.zeros((2, 5)), temperature=0.0, **kwargs)


class _ZeroUniforms:
    """Stands in for a Generator whose next uniforms are exactly 0.0 (Generator.random's range is [0, 1))."""

    def random(self, size):
        return np.zeros(size)


def test_a_uniform_of_exactly_zero_never_picks_a_filtered_token():
    # token 0 is removed by top-k, so its probability is exactly 0 and it must never be drawn
    logits = np.array([[0.0, 5.0, 4.0, 3.0]])
    out = sample_next(logits, temperature=1.0, top_k=2, rng=_ZeroUniforms())  # type: ignore[arg-type]
    assert out[0] in (1, 2)
