"""Data parallelism (npgpt/parallel.py, GPT(threads=...), Llama(threads=...), AdamW(threads=...)): the same results
as one thread."""

import gc

import numpy as np
import pytest

from npgpt import GPT, AdamW, GPTConfig, gpt_backward, gpt_forward
from npgpt.runtime.data_parallel import slice_shares
from npgpt.llama import Llama, LlamaConfig, llama_backward, llama_forward
from npgpt.runtime.parallel import batch_slices, blas_kernel_note

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


def _step(model, idx, targets):
    logits, loss = model.forward(idx, targets)
    return logits.copy(), float(loss), model.backward().buffer.copy()


def test_slices_run_in_worker_processes_and_match_the_sum_of_slices():
    """Slice 1 runs in another process; the result is exactly slice 0's gradients plus slice 1's (that order)."""
    import npgpt.runtime.data_parallel as dp

    model = GPT(CFG, seed=1, dtype=np.float64, threads=2)
    idx, targets = _batch(5)
    logits, loss, flat = _step(model, idx, targets)
    assert model._group is not None and any(model._group.key in w.attached for w in dp._pool)
    parts = []
    for s, share in ((slice(0, 2), 2 / 5), (slice(2, 5), 3 / 5)):
        out, part_loss, cache = gpt_forward(model.params, CFG, idx[s], targets[s])
        parts.append((out, part_loss, gpt_backward(cache, share)))
    np.testing.assert_array_equal(logits, np.concatenate([p[0] for p in parts]))
    assert loss == 2 / 5 * float(parts[0][1]) + 3 / 5 * float(parts[1][1])
    for k in model.params:
        np.testing.assert_array_equal(model.grads[k], parts[0][2][k] + parts[1][2][k], err_msg=k)
    assert flat.shape == model.flat_grads.shape


def test_params_changed_in_place_reach_the_workers():
    """The workers read the model's own (shared) parameter buffer: an optimizer step is seen at once."""
    model = GPT(CFG, seed=1, dtype=np.float64, threads=2)
    idx, targets = _batch(4)
    _step(model, idx, targets)
    model.params["h.1.mlp.c_fc.weight"][...] += 0.5
    logits, loss, _ = _step(model, idx, targets)
    ref_logits, ref_loss, _ = gpt_forward(model.params, CFG, idx, targets)
    np.testing.assert_allclose(logits, ref_logits, rtol=0, atol=1e-13)


def test_a_dead_worker_is_replaced_and_dying_mid_step_is_one_clear_error():
    import npgpt.runtime.data_parallel as dp

    model = GPT(CFG, seed=1, dtype=np.float32, threads=2)
    idx, targets = _batch(4)
    want = _step(model, idx, targets)
    victim = next(w for w in dp._pool if model._group.key in w.attached)
    victim.proc.kill()
    victim.proc.wait()
    got = _step(model, idx, targets)  # found dead before the step: a fresh worker takes its place
    assert all(np.array_equal(a, b) for a, b in zip(want, got))
    w = next(w for w in dp._pool if model._group.key in w.attached)
    w.proc.kill()  # dies while the parent waits for its reply (mid-step)
    w.proc.wait()
    with pytest.raises(RuntimeError, match=r"^data-parallel worker \(PID \d+\) exited unexpectedly") as e:
        w.recv()
    assert "\n" not in str(e.value)
    with pytest.raises(RuntimeError, match=r"^data-parallel worker \(PID \d+\) exited unexpectedly"):
        w.send("forward", model._group.key, idx[2:], targets[2:], True, None, np.geterr())
    got = _step(model, idx, targets)
    assert all(np.array_equal(a, b) for a, b in zip(want, got))


def test_an_unread_reply_left_by_an_interrupt_is_skipped():
    """Ctrl-C can land between sending a command and reading its reply; the next call must not read it."""
    import npgpt.runtime.data_parallel as dp

    model = GPT(CFG, seed=1, dtype=np.float32, threads=2)
    idx, targets = _batch(4)
    want = _step(model, idx, targets)
    w = next(w for w in dp._pool if model._group.key in w.attached)
    w.send("forward", model._group.key, idx[2:], targets[2:], True, None, np.geterr())  # never read
    got = _step(model, idx, targets)
    assert all(np.array_equal(a, b) for a, b in zip(want, got))


def test_big_models_run_the_batch_whole_with_blas_threads(monkeypatch):
    import npgpt.runtime.model

    monkeypatch.setattr(npgpt.runtime.model, "SLICE_PARAMS", 10)
    model = GPT(CFG, seed=1, dtype=np.float64, threads=2)
    assert model._group is None
    idx, targets = _batch(4)
    logits, loss, _ = _step(model, idx, targets)
    ref_logits, ref_loss, cache = gpt_forward(model.params, CFG, idx, targets)
    np.testing.assert_allclose(logits, ref_logits, rtol=0, atol=1e-13)
    ref = gpt_backward(cache)
    for k in ref:
        np.testing.assert_allclose(model.grads[k], ref[k], rtol=1e-12, atol=1e-15, err_msg=k)


_SPIN_SCRIPT = """
import os, resource, sys, time
import numpy as np
from npgpt.runtime.parallel import _openblas, blas_threads, short_blas_spin, usable_cores
if _openblas() is None or usable_cores() < 2:
    print("skip"); sys.exit()
a = np.random.default_rng(0).standard_normal((512, 512))
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
burnt = []
with blas_threads(2):
    for _ in range(3):
        a @ a  # a threaded product; then nothing for 0.3 s
        c0 = cpu()
        time.sleep(0.3)
        burnt.append(cpu() - c0)
print(short_blas_spin(), os.environ.get("OPENBLAS_THREAD_TIMEOUT"), _openblas().openblas_thread_timeout(), min(burnt))
"""


def _spin_run(env_timeout):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_THREAD_TIMEOUT"}
    if env_timeout is not None:
        env["OPENBLAS_THREAD_TIMEOUT"] = env_timeout
    out = subprocess.run([sys.executable, "-c", _SPIN_SCRIPT], env=env, capture_output=True, text=True, check=True)
    if out.stdout.strip() == "skip":
        pytest.skip("needs NumPy's OpenBLAS and two cores")
    applied, value, timeout, burnt = out.stdout.split()
    return applied == "True", value, int(timeout), float(burnt)


def test_idle_blas_threads_sleep_soon_after_a_threaded_product():
    """OpenBLAS's helpers spin 2^28 cycles (about 0.1 s of a core) after each product by default; under
    blas_threads(n > 1) they sleep after 2^20, so a 0.3 s pause after a product burns a few ms of CPU at most."""
    applied, value, timeout, burnt = _spin_run(None)
    assert applied and value == "20" and timeout == 20
    assert burnt < 0.03, f"{burnt * 1e3:.1f} ms of CPU burnt while the process slept"


def test_a_users_own_blas_thread_timeout_is_kept():
    applied, value, timeout, burnt = _spin_run("27")
    assert not applied and value == "27" and timeout == 27


def test_no_shared_files_are_left_behind(tmp_path, monkeypatch):
    import npgpt.runtime.slice_worker as sw

    monkeypatch.setattr(sw, "_SHM_DIR", str(tmp_path))
    model = GPT(CFG, seed=1, dtype=np.float32, threads=2)
    idx, targets = _batch(6)
    for _ in range(2):
        _step(model, idx, targets)
    model.forward(*_batch(4))
    assert not list(tmp_path.iterdir())


def test_a_model_collected_during_another_models_step_does_not_take_its_reply(monkeypatch):
    """The GC can finalize a model (which detaches it from the workers) at any allocation, also between another
    model's send and recv to the same worker.  The detach must wait for the next exchange instead of reading
    that model's reply: it used to, and the other model then waited forever for a reply already taken."""
    import npgpt.runtime.data_parallel as dp

    old = GPT(CFG, seed=1, dtype=np.float32, threads=2)
    _step(old, *_batch(4))
    model = GPT(CFG, seed=2, dtype=np.float32, threads=2)
    want = _step(model, *_batch(4))
    w = next(w for w in dp._pool if model._group.key in w.attached)
    assert old._group.key in w.attached
    real = model._group.core.forward

    def collect_old_then_forward(*args, **kwargs):  # runs between the forward's send and its recv
        old._group.close()  # what weakref.finalize does if the GC collects `old` right here
        assert w.pending == 1, "the detach read the forward's reply"
        return real(*args, **kwargs)

    monkeypatch.setattr(model._group, "core", model._group.core._replace(forward=collect_old_then_forward))
    gc.collect()  # models left by earlier tests are finalized now, not inside the step below: the GC could defer
    gc.disable()  # their detaches into w.detach_later too (rightly), which is not what this test looks at
    try:
        got = _step(model, *_batch(4))
    finally:
        gc.enable()
    monkeypatch.undo()
    assert all(np.array_equal(a, b) for a, b in zip(want, got))
    assert not w.detach_later and w.pending == 0  # the deferred detach went out before the backward's send
    assert old._group.key not in w.attached


def test_blas_kernel_note_only_for_a_pin_below_the_cpu():
    """The training run's note about OPENBLAS_CORETYPE: only a pin to non-AVX-512 kernels on an AVX-512 CPU."""
    avx512, avx2 = {"AVX2": True, "AVX512F": True}, {"AVX2": True, "AVX512F": False}
    note = blas_kernel_note({"OPENBLAS_CORETYPE": "Haswell"}, avx512)
    assert note is not None and "OPENBLAS_CORETYPE=Haswell" in note and "\n" not in note
    assert blas_kernel_note({"OPENBLAS_CORETYPE": "Zen"}, avx512) is not None
    assert blas_kernel_note({"OPENBLAS_CORETYPE": "Haswell"}, avx2) is None  # the CPU has nothing better
    for core in ("SkylakeX", "cooperlake", "SAPPHIRERAPIDS"):  # a pin to AVX-512 kernels loses nothing
        assert blas_kernel_note({"OPENBLAS_CORETYPE": core}, avx512) is None
    assert blas_kernel_note({}, avx512) is None  # OpenBLAS picks for itself
    assert blas_kernel_note({"OPENBLAS_CORETYPE": ""}, avx512) is None
    from numpy._core._multiarray_umath import __cpu_features__ as detected  # what the default reads

    pin = {"OPENBLAS_CORETYPE": "Haswell"}
    assert blas_kernel_note(pin) == blas_kernel_note(pin, detected)


# ---------------------------------------------------------------- the Llama family through the same slices

LCFG = LlamaConfig(vocab_size=13, block_size=8, n_layer=2, n_head=4, n_kv_head=2, n_embd=16, intermediate_size=24)


def _llama(threads, dtype=np.float64, seed=1):
    model = Llama(LCFG, seed=seed, dtype=dtype, threads=threads)
    rng = np.random.default_rng(seed + 10)
    for p in model.params.values():  # away from the init (norms all 1), so every term of the backward counts
        p += 0.2 * rng.standard_normal(p.shape)
    return model


def _masked_batch(B, seed=0):
    """A batch whose ignored targets (-100) fall unevenly: row 0 all ignored, the others about a third."""
    idx, targets = _batch(B, seed)
    rng = np.random.default_rng(seed + 1)
    targets[rng.random(targets.shape) < 0.35] = -100
    targets[0] = -100
    return idx, targets


def test_slice_shares_count_the_targets_the_loss_counts():
    targets = np.array([[-100, -100], [1, -100], [2, 3]])
    slices = [slice(0, 2), slice(2, 3)]
    assert slice_shares(targets, slices, -100) == [1 / 3, 2 / 3]
    assert slice_shares(targets, slices, None) == [2 / 3, 1 / 3]  # every target counts: the rows' shares
    assert slice_shares(np.full((3, 2), -100), slices, -100) == [0.0, 0.0]  # nothing counted, nothing to share
    assert slice_shares(None, slices, -100) == [2 / 3, 1 / 3]


@pytest.mark.parametrize("threads", [2, 3])
@pytest.mark.parametrize("B", [2, 5, 7])
def test_threaded_llama_matches_its_functional_core(threads, B):
    """Logits, loss and every gradient equal llama_forward/llama_backward on the whole batch, with ignored targets
    spread unevenly over the slices (so the slices' rows are not their shares of the loss)."""
    model = _llama(threads)
    idx, targets = _masked_batch(B)
    logits, loss, cache = llama_forward(model.params, LCFG, idx, targets)
    ref = llama_backward(cache)
    got_logits, got_loss = model.forward(idx, targets)
    grads = model.backward()
    assert model._group is not None
    np.testing.assert_allclose(got_logits, logits, rtol=0, atol=1e-13)
    assert abs(float(got_loss) - float(loss)) < 1e-13
    for k in ref:
        np.testing.assert_allclose(grads[k], ref[k], rtol=1e-12, atol=1e-15, err_msg=k)


def test_threaded_llama_is_exactly_the_share_weighted_sum_of_its_slices():
    """Slice 1 runs in a worker: the gradients are exactly slice 0's (dloss = n_0 / n) plus slice 1's, the loss
    the same weighted sum, n_i the targets each slice counts."""
    model = _llama(2)
    idx, targets = _masked_batch(5)
    logits, loss, flat = _step(model, idx, targets)
    slices = batch_slices(5, 2)
    shares = slice_shares(targets, slices, -100)
    parts = []
    for s, share in zip(slices, shares):
        out, part_loss, cache = llama_forward(model.params, LCFG, idx[s], targets[s])
        parts.append((out, part_loss, llama_backward(cache, share)))
    np.testing.assert_array_equal(logits, np.concatenate([p[0] for p in parts]))
    assert loss == shares[0] * float(parts[0][1]) + shares[1] * float(parts[1][1])
    for k in model.params:
        np.testing.assert_array_equal(model.grads[k], parts[0][2][k] + parts[1][2][k], err_msg=k)
    assert flat.shape == model.flat_grads.shape


def test_threaded_llama_with_a_slice_of_ignored_targets_only():
    """A slice whose targets are all -100 adds nothing (its loss is 0, its share 0); all of them ignored: loss 0."""
    model = _llama(2)
    idx, targets = _masked_batch(4)
    targets[:2] = -100  # the whole of slice 0
    logits, loss, cache = llama_forward(model.params, LCFG, idx, targets)
    ref = llama_backward(cache)
    _, got_loss = model.forward(idx, targets)
    grads = model.backward()
    assert abs(float(got_loss) - float(loss)) < 1e-13
    for k in ref:
        np.testing.assert_allclose(grads[k], ref[k], rtol=1e-12, atol=1e-15, err_msg=k)
    targets[:] = -100
    _, got_loss = model.forward(idx, targets)
    assert float(got_loss) == 0.0 and not model.backward().buffer.any()


def test_threaded_llama_trains_in_step_with_one_thread():
    """float32, two AdamW steps: the sliced model follows the single-process one to float32 rounding, and params
    changed in place (the optimizer's update) reach the workers."""
    models = [_llama(t, dtype=np.float32) for t in (1, 2)]
    opts = [AdamW(m.params, lr=1e-2) for m in models]
    idx, targets = _masked_batch(6)
    for _ in range(3):
        for m, opt in zip(models, opts):
            m.forward(idx, targets)
            opt.step(m.backward())
    losses = [float(m.forward(idx, targets)[1]) for m in models]
    assert abs(losses[0] - losses[1]) < 1e-5
    np.testing.assert_allclose(models[1].flat_params, models[0].flat_params, rtol=0, atol=1e-5)


def test_llama_threads_default_and_bad_values():
    assert Llama(LCFG, dtype=np.float64).threads == 1
    assert Llama(LCFG, dtype=np.float64, threads=2)._group is not None
    with pytest.raises(ValueError, match="^threads:"):
        Llama(LCFG, threads=0)


def test_big_llamas_run_the_batch_whole_with_blas_threads(monkeypatch):
    import npgpt.runtime.model

    monkeypatch.setattr(npgpt.runtime.model, "SLICE_PARAMS", 10)
    model = _llama(2)
    assert model._group is None
    idx, targets = _masked_batch(4)
    logits, loss, _ = _step(model, idx, targets)
    ref_logits, ref_loss, cache = llama_forward(model.params, LCFG, idx, targets)
    np.testing.assert_allclose(logits, ref_logits, rtol=0, atol=1e-13)  # BLAS threads may split the products
    ref = llama_backward(cache)
    for k in ref:
        np.testing.assert_allclose(model.grads[k], ref[k], rtol=1e-12, atol=1e-15, err_msg=k)
