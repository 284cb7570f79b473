"""npgpt.training.loop: the loop runs, gradient accumulation equals one big batch, evaluation does not disturb
training, resume from any interruption is bit-identical, and a diverging loss stops without saving."""

import os
import signal
import sys

import numpy as np
import pytest

from npgpt.training.checkpoint import load_checkpoint
from npgpt.gpt2.config import GPTConfig
from npgpt.training.data import bundled_corpus_path, load_text
from npgpt.gpt2.model import GPT
from npgpt.training.plot import plot_losses
from npgpt.training import GradAccumulator, TrainConfig, TrainingDiverged, resume_config, train

TEXT = load_text(bundled_corpus_path())[:12_000]
TINY = dict(n_layer=1, n_head=2, n_embd=16, block_size=8, batch_size=4, max_iters=12, eval_interval=4,
            eval_iters=2, sample_len=0, warmup_iters=2)


def quiet(*a):
    pass


def run(tmp_path, name="out", log=quiet, callback=None, **kw):
    cfg = TrainConfig(**{**TINY, **kw, "out_dir": str(tmp_path / name)})
    return train(text=TEXT, cfg=cfg, log=log, callback=callback)


def stop_at(k):
    """A callback that acts like Ctrl-C right after step k."""
    def callback(it, loss):
        if it == k:
            raise KeyboardInterrupt
    return callback


def assert_same_state(a, b):
    assert a.iterations == b.iterations
    for k in a.model.params:
        assert np.array_equal(a.model.params[k], b.model.params[k]), k
        assert np.array_equal(a.optimizer.m[k], b.optimizer.m[k]), k
        assert np.array_equal(a.optimizer.v[k], b.optimizer.v[k]), k
    assert a.optimizer.t == b.optimizer.t
    assert a.step_losses == b.step_losses and a.evals == b.evals
    assert a.model.rng.bit_generator.state == b.model.rng.bit_generator.state


@pytest.mark.parametrize("field,value", [
    ("n_layer", 0), ("max_iters", -1), ("batch_size", 2.5), ("lr", 0.0), ("lr", float("nan")),
    ("min_lr", 1.0), ("beta2", 1.0), ("dropout", -0.1), ("grad_clip", -1.0), ("grad_accum", 0),
    ("eval_interval", 0), ("seed", -3), ("out_dir", ""), ("resume", "yes"), ("warmup_iters", True),
])
def test_config_validation_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field}: expected"):
        TrainConfig(**{field: value})
    with pytest.raises(ValueError, match="n_embd: expected a multiple of n_head=3"):
        TrainConfig(n_head=3, n_embd=16)


def test_defaults_are_the_documented_recipe():
    c = TrainConfig()
    assert (c.arch, c.n_layer, c.n_head, c.n_embd, c.block_size, c.batch_size) == ("gpt2", 2, 4, 128, 64, 12)
    assert (c.max_iters, c.lr, c.warmup_iters, c.decay_iters, c.beta1, c.beta2) == (3600, 6e-3, 100, 3600, 0.9, 0.99)
    assert c.final_lr == pytest.approx(6e-4, rel=1e-12)  # lr / 10
    assert (c.weight_decay, c.grad_clip, c.dropout, c.eval_interval, c.eval_iters) == (0.1, 1.0, 0.0, 500, 20)


def test_tiny_run(tmp_path):
    lines = []
    r = run(tmp_path, log=lines.append, sample_len=30)
    assert r.iterations == 12 and not r.interrupted and len(r.step_losses) == 12
    assert [e[0] for e in r.evals] == [0, 4, 8, 12]
    assert all(np.isfinite(v) for e in r.evals for v in e)
    assert r.final_val_loss == r.evals[-1][2] and r.best_val_loss == min(e[2] for e in r.evals)
    assert r.checkpoint_path.is_file() and r.plot_path.is_file() and r.plot_path.stem == "loss"
    assert isinstance(r.sample, str) and len(r.sample) == 30
    assert r.wall_time > 0 and r.step_ms > 0 and r.eval_time > 0
    text = "\n".join(lines)
    assert "eval at iter 12: train loss" in text and "val loss" in text and "tok/s" in text and "ETA" in text
    ck = load_checkpoint(r.checkpoint_path)
    assert ck.meta["iteration"] == 12 and ck.meta["history"]["train_loss"] == r.step_losses
    assert ck.meta["train_config"]["n_embd"] == 16 and ck.meta["tokenizer"]["type"] == "char"
    assert ck.meta["optimizer"]["t"] == 12 and ck.meta["best_val_loss"] == r.best_val_loss


def test_training_reduces_the_loss(tmp_path):
    r = train(text="abcdefgh" * 200, cfg=TrainConfig(**{**TINY, "max_iters": 60, "lr": 1e-2, "eval_interval": 60,
                                                 "out_dir": str(tmp_path / "o")}), log=quiet)
    assert r.evals[-1][2] < 0.5 * r.evals[0][2]


def test_grad_accumulation_equals_one_big_batch_float64():
    cfg = GPTConfig(vocab_size=13, block_size=6, n_layer=2, n_head=2, n_embd=8)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 13, (6, 6))
    y = rng.integers(0, 13, (6, 6))
    model = GPT(cfg, seed=1, dtype=np.float64)
    big_loss, big = GradAccumulator(model).run(model, [(x, y)])
    big = {k: g.copy() for k, g in big.items()}
    for parts in (2, 3):
        loss, acc = GradAccumulator(model).run(model, [(x[i::parts], y[i::parts]) for i in range(parts)])
        assert loss == pytest.approx(big_loss, rel=1e-13)
        for k in big:
            np.testing.assert_allclose(acc[k], big[k], rtol=1e-10, atol=1e-14, err_msg=k)


def test_grad_accum_run_matches_big_batch_run(tmp_path):
    # the sampler draws the same offsets whether it is asked for 2 x 4 rows or 1 x 8, so the two runs see the
    # same data; they differ only by float32 rounding in the gradient sums (measured: about 3e-7 in the weights,
    # which moved by up to about 4e-3 in these 5 steps)
    a = run(tmp_path, "a", grad_accum=2, batch_size=4, max_iters=5)
    b = run(tmp_path, "b", grad_accum=1, batch_size=8, max_iters=5)
    np.testing.assert_allclose(a.step_losses, b.step_losses, rtol=1e-5)
    for k in a.model.params:
        np.testing.assert_allclose(a.model.params[k], b.model.params[k], rtol=1e-4, atol=1e-5, err_msg=k)


def test_evaluation_does_not_disturb_training(tmp_path):
    a = run(tmp_path, "a", eval_interval=1, eval_iters=3, dropout=0.1)
    b = run(tmp_path, "b", eval_interval=100, eval_iters=1, dropout=0.1)
    assert a.step_losses == b.step_losses
    assert all(np.array_equal(a.model.params[k], b.model.params[k]) for k in a.model.params)


# resume: an interrupted run, resumed, must end bit-identical to an uninterrupted one
RESUME = dict(max_iters=13, eval_interval=4, dropout=0.1, grad_accum=2)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return run(tmp_path_factory.mktemp("full"), **RESUME)


@pytest.mark.parametrize("k", [1, 4, 6, 12])  # mid-interval, exactly at an eval (before it runs), the end
def test_resume_after_ctrl_c_is_bit_identical(tmp_path, uninterrupted, k):
    a = run(tmp_path, "o", callback=stop_at(k), **RESUME)
    assert a.interrupted and a.iterations == k and a.checkpoint_path is not None
    assert load_checkpoint(a.checkpoint_path).meta["iteration"] == k
    b = run(tmp_path, "o", resume=True, **RESUME)
    assert not b.interrupted
    assert_same_state(b, uninterrupted)


def test_resume_after_a_crash_from_the_last_eval_checkpoint(tmp_path, uninterrupted):
    def crash(it, loss):
        if it == 10:
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        run(tmp_path, "o", callback=crash, **RESUME)
    assert load_checkpoint(tmp_path / "o" / "ckpt.npz").meta["iteration"] == 8  # the eval before the crash
    b = run(tmp_path, "o", resume=True, **RESUME)
    assert_same_state(b, uninterrupted)


def test_resume_twice_and_resume_a_finished_run(tmp_path, uninterrupted):
    run(tmp_path, "o", callback=stop_at(3), **RESUME)
    run(tmp_path, "o", callback=stop_at(9), resume=True, **RESUME)
    b = run(tmp_path, "o", resume=True, **RESUME)
    assert_same_state(b, uninterrupted)
    c = run(tmp_path, "o", resume=True, **RESUME)  # nothing left to do: same state again
    assert_same_state(c, uninterrupted)


@pytest.fixture
def default_sigint():
    """Ctrl-C with its default handler, as in a terminal.  A test runner started in the background (`cmd &`,
    nohup) inherits SIGINT ignored, and the trainer rightly leaves an ignored signal alone."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
def test_real_sigint_stops_at_a_step_boundary_and_saves(tmp_path, uninterrupted, default_sigint):
    def ctrl_c(it, loss):
        if it == 6:
            os.kill(os.getpid(), signal.SIGINT)

    a = run(tmp_path, "o", callback=ctrl_c, **RESUME)
    assert a.interrupted and a.iterations == 6
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
    b = run(tmp_path, "o", resume=True, **RESUME)
    assert_same_state(b, uninterrupted)


def test_resume_errors(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint to resume from"):
        run(tmp_path, "none", resume=True)
    run(tmp_path, "o", max_iters=4)
    with pytest.raises(ValueError, match=r"different configuration: n_embd \(checkpoint 16, requested 32\)"):
        run(tmp_path, "o", resume=True, max_iters=4, n_embd=32)
    with pytest.raises(ValueError, match="trained on a different text"):
        train(text=TEXT[:-1], cfg=TrainConfig(**{**TINY, "max_iters": 4, "out_dir": str(tmp_path / "o"),
                                                 "resume": True}),
              log=quiet)
    run(tmp_path, "o", resume=True, max_iters=4, sample_len=5, log_interval=7)  # output-only fields may differ
    cfg = resume_config({"out_dir": str(tmp_path / "o"), "sample_len": 3})
    assert cfg.resume and cfg.n_embd == 16 and cfg.max_iters == 4 and cfg.sample_len == 3


def test_resume_accepts_flags_that_restate_the_defaults(tmp_path):
    """min_lr typed as 0.0006 restates lr / 10 (0.0006000000000000001), and a llama's explicit default widths
    restate None; a llama-only width on a gpt2 run is refused by name."""
    run(tmp_path, "g", max_iters=2, lr=6e-3, lr_decay_iters=4)
    run(tmp_path, "g", resume=True, max_iters=3, lr=6e-3, lr_decay_iters=4, min_lr=0.0006)
    run(tmp_path, "l", max_iters=2, lr_decay_iters=4, arch="llama")
    run(tmp_path, "l", resume=True, max_iters=3, lr_decay_iters=4, arch="llama", n_kv_head=TINY["n_head"],
        intermediate_size=8 * -(-TINY["n_embd"] // 3))
    with pytest.raises(ValueError, match=r"different configuration: intermediate_size \(checkpoint 48, requested 40\)"):
        run(tmp_path, "l", resume=True, max_iters=4, lr_decay_iters=4, arch="llama", intermediate_size=40)
    with pytest.raises(ValueError, match=r"^n_kv_head: only the llama arch has it \(--arch llama\); got 1 for arch "
                                         r"'gpt2'"):
        TrainConfig(**{**TINY, "n_kv_head": 1})


def test_text_shorter_than_a_block_in_either_split(tmp_path):
    with pytest.raises(ValueError, match="validation split .* has 5 tokens, but block_size=8 needs at least 9"):
        train(text="abcdefghij" * 5, cfg=TrainConfig(**{**TINY, "out_dir": str(tmp_path / "o")}), log=quiet)
    with pytest.raises(ValueError, match="training split"):
        train(text="abcdefghij" * 5, cfg=TrainConfig(**{**TINY, "block_size": 45, "out_dir": str(tmp_path / "o")}),
              log=quiet)
    assert not (tmp_path / "o").exists()


def test_divergence_stops_naming_the_step_and_keeps_the_good_checkpoint(tmp_path):
    good = run(tmp_path, "o", max_iters=4)
    path = good.checkpoint_path
    before = path.read_bytes()
    pattern = (r"(training loss|gradient norm) is \S+ at iteration \d+(, above 9\.\d\d .*diverged)?: "
               r"stopped without saving")
    with pytest.raises(TrainingDiverged, match=pattern):
        run(tmp_path, "o", lr=1e6, eval_interval=1000, overwrite=True)  # kept until the first save
    assert path.read_bytes() == before


def test_divergence_with_frequent_checkpoints_keeps_the_last_good_one(tmp_path, monkeypatch):
    from npgpt.optim import AdamW
    step = AdamW.step

    def blowing_up(self, grads):  # from step 6 on, every update also scales the weights up: a blow-up
        step(self, grads)
        if self.t >= 6:
            for p in self.params.values():
                p *= 3.0

    monkeypatch.setattr(AdamW, "step", blowing_up)
    saved = {}

    def log(line):  # remember the file's bytes after every save
        if "saved" in line:
            saved["it"] = int(line.split("eval at iter ")[1].split(":")[0])
            saved["bytes"] = (tmp_path / "o" / "ckpt.npz").read_bytes()

    with pytest.raises(TrainingDiverged) as e:
        run(tmp_path, "o", log=log, eval_interval=1, max_iters=50)
    assert f"the last good checkpoint ({tmp_path / 'o' / 'ckpt.npz'}, iteration {saved['it']})" in str(e.value)
    path = tmp_path / "o" / "ckpt.npz"
    assert path.read_bytes() == saved["bytes"]
    ck = load_checkpoint(path)
    assert all(np.isfinite(a).all() for a in ck.params.values())


def test_svg_plot_without_matplotlib(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)
    out = plot_losses(tmp_path / "loss", [4.0, 3.5, 3.0, 2.8], [(0, 4.1, 4.2), (4, 2.9, 3.1)])
    assert out.suffix == ".svg"
    svg = out.read_text()
    import xml.etree.ElementTree as ET
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    for needed in ("iteration", "loss", "train (eval)", "val (eval)", "train (per step)", "<polyline", "<circle"):
        assert needed in svg
    with pytest.raises(ValueError, match="needs matplotlib"):
        plot_losses(tmp_path / "x", [1.0], [], fmt="png")


def test_png_plot_when_matplotlib_is_available(tmp_path):
    pytest.importorskip("matplotlib")
    out = plot_losses(tmp_path / "loss", [4.0, 3.5], [(0, 4.1, 4.2), (2, 3.4, 3.6)])
    assert out.suffix == ".png" and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_every_field_has_help():
    from dataclasses import fields

    from npgpt.training import FIELD_HELP
    assert set(FIELD_HELP) == {f.name for f in fields(TrainConfig)}


def test_live_progress_redraws_one_line(tmp_path, capsys):
    lines = []
    train(text=TEXT, cfg=TrainConfig(**{**TINY, "out_dir": str(tmp_path / "o")}), log=lines.append, live=True)
    out = capsys.readouterr().out
    assert "\riter" in out and "tok/s" in out and "ETA" in out  # drawn on stdout with a carriage return
    assert not any(line.startswith("iter") for line in lines)  # not as separate log lines
    assert any(line.startswith("eval at iter 12") for line in lines)


# ------------------------------------------------------------------------------------------- issue 10

def test_a_str_argument_is_a_path_never_the_text(tmp_path):
    """train("small.txt", cfg) reads the file (it used to train on the 9 characters of the name); the text
    itself goes by keyword; a str that looks like text is refused naming text=."""
    (tmp_path / "small.txt").write_text(TEXT, encoding="utf-8")
    lines = []
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        r = train("small.txt", TrainConfig(**{**TINY, "max_iters": 2, "out_dir": "o"}), log=lines.append)
    finally:
        os.chdir(cwd)
    assert r.iterations == 2 and lines[0].startswith(f"data: small.txt: {len(TEXT):,} characters")
    with pytest.raises(ValueError, match=r"^path: got a str that looks like the training text itself"):
        train(TEXT, TrainConfig(**{**TINY, "out_dir": str(tmp_path / "p")}), log=quiet)
    with pytest.raises(ValueError, match="no such file"):
        train(str(tmp_path / "nope.txt"), TrainConfig(**{**TINY, "out_dir": str(tmp_path / "p")}), log=quiet)
    with pytest.raises(ValueError, match="^text: give a path or a text, not both"):
        train("small.txt", text=TEXT, cfg=TrainConfig(**TINY), log=quiet)


def test_min_lr_defaults_to_a_tenth_of_lr():
    assert TrainConfig(lr=1e-5).final_lr == pytest.approx(1e-6)
    assert TrainConfig(lr=1e-5, min_lr=0.0).final_lr == 0.0
    assert TrainConfig().final_lr == pytest.approx(6e-4, rel=1e-12)


def test_help_lives_in_the_field_metadata():
    """FIELD_HELP is derived from the fields (one source of truth), and every field has help."""
    from dataclasses import fields

    from npgpt.training import FIELD_HELP
    assert FIELD_HELP == {f.name: f.metadata["help"] for f in fields(TrainConfig)}
    assert all(FIELD_HELP.values())


def test_arch_is_checked_and_the_registry_builds_the_model():
    from npgpt.families import ARCHS, build_model
    with pytest.raises(ValueError, match=r"^arch: expected one of 'gpt2', 'llama'(, '[a-z0-9]+')*, got 'mamba'$"):
        TrainConfig(arch="mamba")
    assert list(ARCHS)[:2] == ["gpt2", "llama"]
    model = build_model(TrainConfig(**TINY).model_config(11))
    assert isinstance(model, GPT) and model.config.vocab_size == 11 and model.dtype == np.float32


def test_best_checkpoint_is_never_overwritten_by_a_worse_one(tmp_path, monkeypatch):
    """A run whose validation loss gets worse (but stays below the divergence limit) keeps ckpt.npz as the
    latest and best.npz at the lowest validation loss, untouched by the later, worse evaluations."""
    from npgpt.optim import AdamW
    step = AdamW.step

    def drifting(self, grads):  # after step 8 each update also inflates the weights: the loss climbs
        step(self, grads)
        if self.t > 8:
            for p in self.params.values():
                p *= 1.08

    monkeypatch.setattr(AdamW, "step", drifting)
    saved = {}

    def log(line):
        if "saved" in line and "best.npz" in line:
            saved["bytes"] = (tmp_path / "o" / "best.npz").read_bytes()

    r = run(tmp_path, "o", log=log, max_iters=16, eval_interval=2, lr=1e-2)
    best, latest = load_checkpoint(tmp_path / "o" / "best.npz"), load_checkpoint(tmp_path / "o" / "ckpt.npz")
    vals = {it: va for it, _, va in r.evals if it > 0}
    best_it = min(vals, key=vals.get)
    assert best.meta["iteration"] == best_it < latest.meta["iteration"] == 16
    assert vals[16] > vals[best_it]  # the latest is worse than the best
    assert (tmp_path / "o" / "best.npz").read_bytes() == saved["bytes"]
    assert r.best_path == tmp_path / "o" / "best.npz"


def test_divergence_limit_rule():
    from npgpt.training import divergence_limit
    assert divergence_limit(65) == pytest.approx(2 * np.log(65) + 1)


def test_a_given_tokenizer_is_used_and_stored(tmp_path):
    """train(..., tokenizer=tok): any Tokenizer; the checkpoint stores its to_dict() and resume reloads it."""
    from npgpt.tokenizers import CharTokenizer
    tok = CharTokenizer(TEXT + "~")  # one character more than the text has
    r = train(text=TEXT, cfg=TrainConfig(**{**TINY, "max_iters": 4, "out_dir": str(tmp_path / "o")}), log=quiet,
              tokenizer=tok)
    assert r.tokenizer is tok and r.model.config.vocab_size == tok.vocab_size
    assert load_checkpoint(r.checkpoint_path).meta["tokenizer"] == tok.to_dict()
    more = {"max_iters": 6, "lr_decay_iters": 4, "out_dir": str(tmp_path / "o"), "resume": True}
    r2 = train(text=TEXT, cfg=TrainConfig(**{**TINY, **more}), log=quiet)
    assert r2.tokenizer == tok
