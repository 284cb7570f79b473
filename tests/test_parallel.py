"""Data parallelism (npgpt/parallel.py, GPT(threads=...), AdamW(threads=...)): same results as one thread."""

import numpy as np
import pytest

from npgpt import GPT, AdamW, GPTConfig, gpt_backward, gpt_forward
from npgpt.parallel import batch_slices

CFG = GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=8)


def _batch(B, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, CFG.vocab_size, (B, 8)), rng.integers(0, CFG.vocab_size, (B, 8))


@pytest.mark.parametrize("B, n", [(1, 2), (2, 2), (5, 2), (7, 3), (3, 8)])
def test_batch_slices_cover_the_batch_in_order(B, n):
    slices = batch_slices(B, n)
    assert len(slices) == min(B, n)
    assert [i for s in slices for i in range(s.start, s.stop)] == list(range(B))
    sizes = [s.stop - s.start for s in slices]
    assert max(sizes) - min(sizes) <= 1


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("B", [2, 5, 7])
def test_threaded_model_matches_the_functional_core(threads, B):
    """Logits, loss and every gradient equal gpt_forward/gpt_backward on the whole batch, to float64 rounding."""
    model = GPT(CFG, seed=1, dtype=np.float64, threads=threads)
    rng = np.random.default_rng(2)
    for p in model.params.values():
        p += 0.2 * rng.standard_normal(p.shape)
    idx, targets = _batch(B)
    logits, loss, cache = gpt_forward(model.params, CFG, idx, targets)
    ref = gpt_backward(cache)
    got_logits, got_loss = model.forward(idx, targets)
    grads = model.backward()
    np.testing.assert_allclose(got_logits, logits, rtol=0, atol=1e-13)
    assert abs(float(got_loss) - float(loss)) < 1e-13
    for k in ref:
        np.testing.assert_allclose(grads[k], ref[k], rtol=1e-12, atol=1e-15, err_msg=k)


def test_threaded_backward_gives_the_same_bits_every_time():
    """Slices add into the gradient buffer in a fixed order, so repeated runs agree exactly."""
    model = GPT(CFG, seed=1, dtype=np.float32, threads=3)
    idx, targets = _batch(7)
    runs = []
    for _ in range(5):
        model.forward(idx, targets)
        model.backward()
        runs.append(model.flat_grads.copy())
    assert all(np.array_equal(runs[0], r) for r in runs[1:])


def test_float64_models_default_to_one_thread():
    assert GPT(CFG, dtype=np.float64).threads == 1


def test_bad_thread_count_is_rejected():
    with pytest.raises(ValueError, match="^threads:"):
        GPT(CFG, threads=0)
    with pytest.raises(ValueError, match="^threads:"):
        AdamW(GPT(CFG).params, threads=0)


def test_threaded_dropout_is_reproducible():
    cfg = GPTConfig(vocab_size=13, block_size=8, n_layer=1, n_head=2, n_embd=8, dropout=0.3)
    idx, targets = _batch(4)
    losses = []
    for _ in range(2):
        model = GPT(cfg, seed=5, dtype=np.float64, threads=2)
        losses.append([float(model.forward(idx, targets)[1]) for _ in range(3)])
    assert losses[0] == losses[1]
    assert len(set(losses[0])) == 3  # fresh masks each step


@pytest.mark.parametrize("threads", [2, 3, 5])
def test_threaded_adamw_is_bit_identical(threads):
    """The update is elementwise, so cutting the flat buffer into chunks changes no bit."""
    models = [GPT(CFG, seed=3, dtype=np.float32, threads=1) for _ in range(2)]
    opts = [AdamW(models[0].params, threads=1), AdamW(models[1].params, threads=threads)]
    rng = np.random.default_rng(4)
    for _ in range(4):
        g = rng.standard_normal(models[0].flat_grads.shape).astype(np.float32)
        for m, o in zip(models, opts):
            m.flat_grads[...] = g
            o.step(m.grads)
    assert np.array_equal(models[0].flat_params, models[1].flat_params)
    assert np.array_equal(opts[0].v.buffer, opts[1].v.buffer)
