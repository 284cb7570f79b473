"""The training loop: a character-level GPT on a text, with evaluation, checkpoints, resume, a loss plot and a
sample at the end.

    from npgpt.train import TrainConfig, train
    result = train(None, TrainConfig())          # the bundled Tiny Shakespeare, the default recipe
    result = train(Path("my.txt"), TrainConfig(max_iters=500, out_dir="run1"))
    result = train("some text ...", cfg)         # a str is the text itself; a Path is a file to read

Each optimizer step averages the gradients of grad_accum micro-batches (mean-loss semantics: the same as one
batch of grad_accum * batch_size sequences), clips their global norm, sets the warmup + cosine learning rate
and takes an AdamW step.  Every eval_interval steps, and at the end, the mean loss over eval_iters batches of
each split is measured (dropout off) and a checkpoint is written to out_dir/ckpt.npz.  Ctrl-C finishes the
current step, writes a checkpoint and returns; resume=True continues from out_dir/ckpt.npz and ends with
exactly the parameters, optimizer state and loss history of an uninterrupted run.  A non-finite loss or
gradient stops with TrainingDiverged before the bad update, and the last checkpoint stays untouched.
Guide: docs/training.md
"""

from __future__ import annotations

import hashlib
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from . import __version__
from .checkpoint import load_checkpoint, save_checkpoint
from .config import GPTConfig
from .data import BatchSampler, CharTokenizer, _jsonable, bundled_corpus_path, load_text, split
from .flat import pack
from .memory import reuse_freed_memory
from .model import GPT, buffer_order, param_shapes
from .optim import AdamW, clip_grad_norm, cosine_lr

Array = npt.NDArray[np.floating]

VAL_FRACTION = 0.1  # the last 10% of the text is the validation split
CHECKPOINT_NAME = "ckpt.npz"
PLOT_NAME = "loss"  # out_dir/loss.png, or loss.svg without matplotlib


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of a training run.  The defaults are nanoGPT's CPU recipe for Tiny Shakespeare
    (config/train_shakespeare_char.py with its "on a MacBook" overrides): a 0.8M-parameter GPT that reaches
    a validation loss of about 1.88 in 2000 steps."""

    # model
    n_layer: int = 4  # transformer blocks
    n_head: int = 4  # attention heads per block (head size n_embd / n_head = 32)
    n_embd: int = 128  # width of the residual stream; a multiple of n_head
    block_size: int = 64  # context length in characters, the T of every batch
    dropout: float = 0.0  # no dropout: a small model on a short run does not overfit
    # batches
    batch_size: int = 12  # sequences per micro-batch: 12 * 64 = 768 tokens
    grad_accum: int = 1  # micro-batches whose gradients are averaged into one optimizer step
    # optimizer and schedule
    max_iters: int = 2000  # optimizer steps
    lr: float = 1e-3  # peak learning rate (a baby network can take a large one)
    min_lr: float = 1e-4  # final learning rate, lr / 10 as in Chinchilla
    warmup_iters: int = 100  # linear warmup from lr / warmup_iters to lr
    lr_decay_iters: int | None = None  # cosine decay from lr to min_lr over this many steps; None: max_iters
    weight_decay: float = 0.1  # AdamW's decoupled decay, on the 2-D weight matrices only
    beta1: float = 0.9  # AdamW's first-moment decay
    beta2: float = 0.99  # second-moment decay; a bit above GPT-2's 0.95 because each step sees few tokens
    grad_clip: float = 1.0  # clip the global gradient norm to this; 0 disables clipping
    # evaluation, logging, output
    eval_interval: int = 250  # steps between evaluations (each one also writes the checkpoint)
    eval_iters: int = 20  # batches per split in each evaluation
    log_interval: int = 50  # steps between progress lines when stdout is not a terminal
    seed: int = 1337  # seeds the initialisation, dropout and the batch samplers
    out_dir: str = "out"  # where ckpt.npz and the loss plot are written
    resume: bool = False  # continue from out_dir/ckpt.npz
    sample_len: int = 500  # characters generated at the end (0: none)

    def __post_init__(self) -> None:
        positive = ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "grad_accum", "max_iters",
                    "eval_interval", "eval_iters", "log_interval")
        for name in positive:
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("warmup_iters", "seed", "sample_len"):
            _check_int(name, getattr(self, name), minimum=0)
        if self.lr_decay_iters is not None:
            _check_int("lr_decay_iters", self.lr_decay_iters, minimum=1)
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd: expected a multiple of n_head={self.n_head}, got {self.n_embd}")
        _check_float("lr", self.lr, low=0.0, low_open=True)
        _check_float("min_lr", self.min_lr, low=0.0)
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr: expected at most lr={self.lr}, got {self.min_lr}")
        _check_float("weight_decay", self.weight_decay, low=0.0)
        _check_float("grad_clip", self.grad_clip, low=0.0)
        for name in ("beta1", "beta2", "dropout"):
            _check_float(name, getattr(self, name), low=0.0, high=1.0)
        if not isinstance(self.out_dir, str) or not self.out_dir:
            raise ValueError(f"out_dir: expected a non-empty path, got {self.out_dir!r}")
        if not isinstance(self.resume, bool):
            raise ValueError(f"resume: expected True or False, got {self.resume!r}")

    @property
    def decay_iters(self) -> int:
        """lr_decay_iters, with None resolved to max_iters."""
        return self.max_iters if self.lr_decay_iters is None else self.lr_decay_iters

    def model_config(self, vocab_size: int) -> GPTConfig:
        return GPTConfig(vocab_size=vocab_size, block_size=self.block_size, n_layer=self.n_layer,
                         n_head=self.n_head, n_embd=self.n_embd, dropout=self.dropout)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# One line per TrainConfig field: the --help of examples/train_char_gpt.py and the table in docs/training.md.
FIELD_HELP: dict[str, str] = {
    "n_layer": "transformer blocks",
    "n_head": "attention heads per block",
    "n_embd": "width of the residual stream (a multiple of n_head)",
    "block_size": "context length in characters",
    "dropout": "dropout probability during training",
    "batch_size": "sequences per micro-batch",
    "grad_accum": "micro-batches averaged into each optimizer step",
    "max_iters": "optimizer steps",
    "lr": "peak learning rate",
    "min_lr": "learning rate at the end of the cosine decay",
    "warmup_iters": "steps of linear learning-rate warmup",
    "lr_decay_iters": "steps of cosine decay (default: max_iters)",
    "weight_decay": "AdamW weight decay on the 2-D weight matrices",
    "beta1": "AdamW first-moment decay",
    "beta2": "AdamW second-moment decay",
    "grad_clip": "clip the global gradient norm to this (0: no clipping)",
    "eval_interval": "steps between evaluations and checkpoints",
    "eval_iters": "batches per split in each evaluation",
    "log_interval": "steps between progress lines when output is not a terminal",
    "seed": "random seed (initialisation, dropout, batches)",
    "out_dir": "directory for ckpt.npz and the loss plot",
    "resume": "continue from OUT_DIR/ckpt.npz",
    "sample_len": "characters to generate at the end (0: none)",
}

# Fields that may differ between a checkpoint and the run resuming from it: they do not change the numbers.
RESUME_FREE_FIELDS = frozenset({"out_dir", "resume", "sample_len", "log_interval"})


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN or infinite; nothing was saved after the last good state."""


@dataclass
class TrainResult:
    """What train() returns."""

    iterations: int  # optimizer steps completed (max_iters unless interrupted)
    final_train_loss: float | None  # of the last evaluation
    final_val_loss: float | None
    best_val_loss: float | None
    wall_time: float  # seconds spent in train() this session
    step_ms: float  # mean milliseconds per optimizer step this session (evaluations excluded)
    eval_time: float  # seconds spent in evaluations this session
    checkpoint_path: Path | None  # None when no checkpoint was written
    plot_path: Path | None
    sample: str | None  # the generated text (after the prompt), None when sample_len is 0 or interrupted
    interrupted: bool
    step_losses: list[float] = field(repr=False)  # training loss of every step since iteration 0
    evals: list[tuple[int, float, float]] = field(repr=False)  # (iteration, train loss, val loss)
    model: GPT | None = field(default=None, repr=False)
    optimizer: AdamW | None = field(default=None, repr=False)
    tokenizer: CharTokenizer | None = field(default=None, repr=False)


class GradAccumulator:
    """Averages the gradients of several micro-batches into one buffer laid out like the model's.

    model.backward() overwrites model.grads, so each micro-batch's gradient is added here; dividing by the
    count gives the gradient of the mean loss over all micro-batches (equal-sized, so it is the gradient of
    one big batch's mean loss).
    """

    def __init__(self, model: GPT) -> None:
        shapes = param_shapes(model.config)
        self.flat, self.grads = pack(shapes, model.dtype, buffer_order(shapes))  # same layout: AdamW fast path

    def run(self, model: GPT, batches: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[float, dict[str, Array]]:
        """Forward and backward every (x, y) batch; return the mean loss and the mean gradients."""
        if len(batches) == 1:
            _, loss = model.forward(*batches[0])
            return float(loss), model.backward()
        self.flat[...] = 0.0
        total = 0.0
        for x, y in batches:
            _, loss = model.forward(x, y)
            model.backward()
            self.flat += model.flat_grads
            total += float(loss)
        self.flat *= 1.0 / len(batches)
        return total / len(batches), self.grads


def train(text_or_path: str | os.PathLike[str] | None = None, cfg: TrainConfig | None = None,
          log: Callable[[str], Any] = print, *, live: bool | None = None,
          callback: Callable[[int, float], Any] | None = None) -> TrainResult:
    """Train a character-level GPT; see the module docstring.

    text_or_path: a str is the training text itself, a path (os.PathLike) a UTF-8 file to read, None the
    bundled Tiny Shakespeare.  log receives every output line.  live: redraw one progress line with a carriage
    return (default: when log is print and stdout is a terminal); otherwise a line every log_interval steps.
    callback(iteration, loss) runs after every step; raising KeyboardInterrupt from it acts like Ctrl-C.
    Input problems (file, text too short, checkpoint unusable or from another config) raise ValueError;
    a NaN/inf loss raises TrainingDiverged.
    """
    t_session = time.perf_counter()
    cfg = TrainConfig() if cfg is None else cfg
    if not isinstance(cfg, TrainConfig):
        raise ValueError(f"cfg: expected a TrainConfig, got {type(cfg).__name__}")
    text, source = _read_source(text_or_path)
    out_dir = Path(cfg.out_dir)
    ckpt_path = out_dir / CHECKPOINT_NAME
    data_info = {"source": source, "n_chars": len(text), "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}

    ck = None
    if cfg.resume:
        if not ckpt_path.exists():
            raise ValueError(f"{ckpt_path}: no checkpoint to resume from (train without resume first)")
        want = {k: v for k, v in cfg.to_dict().items() if k not in RESUME_FREE_FIELDS}
        ck = load_checkpoint(ckpt_path, expect=want)
        _check_resume_meta(ckpt_path, ck.meta, data_info)
        tok = CharTokenizer.from_dict(ck.meta["tokenizer"])
    else:
        tok = CharTokenizer(text)
    ids = tok.encode(text)
    train_ids, val_ids = split(ids, VAL_FRACTION)
    for name, part in (("training split (the first 90%)", train_ids), ("validation split (the last 10%)", val_ids)):
        if len(part) < cfg.block_size + 1:
            raise ValueError(f"text too short: the {name} has {len(part)} characters, but block_size="
                             f"{cfg.block_size} needs at least {cfg.block_size + 1}; use a longer text or a "
                             f"smaller block_size")
    seeds = np.random.SeedSequence(cfg.seed).spawn(3)
    samplers = {
        "train": BatchSampler(train_ids, cfg.block_size, cfg.batch_size, seeds[0], "train"),
        "eval_train": BatchSampler(train_ids, cfg.block_size, cfg.batch_size, seeds[1], "eval_train"),
        "eval_val": BatchSampler(val_ids, cfg.block_size, cfg.batch_size, seeds[2], "eval_val"),
    }
    gcfg = cfg.model_config(tok.vocab_size)
    reuse_freed_memory()  # keep freed temporaries for reuse: ~12,000 fewer page faults per step (memory.py)
    model = GPT(gcfg, seed=cfg.seed, dtype=np.float32)
    opt = AdamW(model.params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
    acc = GradAccumulator(model)
    st = _RunState()
    if ck is not None:
        if ck.config != gcfg:
            raise ValueError(f"{ckpt_path}: the checkpoint's model config {ck.config} does not match this run's "
                             f"{gcfg}")
        _restore(ckpt_path, ck, model, opt, samplers, st)

    out_dir.mkdir(parents=True, exist_ok=True)
    prog = _Progress(log, live, cfg, st.it)
    prog.message(f"data: {source}: {len(text):,} characters, vocabulary {tok.vocab_size}; "
                 f"train {len(train_ids):,} / val {len(val_ids):,}")
    prog.message(f"model: n_layer={cfg.n_layer} n_head={cfg.n_head} n_embd={cfg.n_embd} block_size={cfg.block_size}"
                 f" ({model.num_params():,} parameters); {cfg.max_iters} steps of "
                 f"{cfg.grad_accum * cfg.batch_size * cfg.block_size:,} tokens")
    if ck is not None:
        prog.message(f"resuming from {ckpt_path} at iteration {st.it}")

    def save() -> None:
        meta = {
            "npgpt_version": __version__, "train_config": cfg.to_dict(), "iteration": st.it,
            "optimizer": {"name": "AdamW", "lr": opt.lr, "betas": list(opt.betas), "eps": opt.eps,
                          "weight_decay": opt.weight_decay, "t": opt.t},
            "model_rng": _jsonable(model.rng.bit_generator.state),
            "samplers": {k: s.get_state() for k, s in samplers.items()},
            "tokenizer": tok.to_dict(), "data": data_info,
            "history": {"train_loss": st.step_losses, "evals": [list(r) for r in st.evals]},
            "best_val_loss": st.best_val, "last_eval_iter": st.last_eval,
            "elapsed_seconds": st.elapsed_before + (time.perf_counter() - t_session),
        }
        save_checkpoint(ckpt_path, model.params, opt.m, opt.v, gcfg, meta)
        st.saved_it = st.it

    def diverged(what: str, value: float, it: int) -> TrainingDiverged:
        kept = (f"the last good checkpoint ({ckpt_path}, iteration {st.saved_it}) is untouched"
                if st.saved_it is not None else f"this run saved nothing ({ckpt_path} is left as it was)")
        return TrainingDiverged(f"{what} is {value} at iteration {it}: stopped without saving; {kept}; "
                                f"try a lower lr")

    eval_time = step_time = 0.0
    steps_this_session = 0
    interrupted = False
    # overflow in a diverging run is caught by the finiteness checks below, which name the step; the warnings
    # filter also covers worker threads (GPT(threads > 1)), which do not inherit this thread's np.errstate
    with _DeferSigint() as sigint, prog, np.errstate(over="ignore", invalid="ignore", divide="ignore"), \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"(overflow|invalid value|divide by zero) encountered", RuntimeWarning)
        while True:
            if (st.it % cfg.eval_interval == 0 or st.it == cfg.max_iters) and st.last_eval != st.it:
                t0 = time.perf_counter()
                tr, va = evaluate(model, samplers["eval_train"], samplers["eval_val"], cfg.eval_iters)
                for name, value in (("train loss (eval)", tr), ("val loss", va)):
                    if not math.isfinite(value):
                        raise diverged(name, value, st.it)
                best = st.best_val is None or va < st.best_val
                st.best_val = va if best else st.best_val
                st.evals.append((st.it, tr, va))
                st.last_eval = st.it
                saved = ""
                if st.it > 0:  # iteration 0 is the fresh initialisation: nothing worth keeping
                    save()
                    saved = f" | saved {ckpt_path}"
                dt = time.perf_counter() - t0
                eval_time += dt
                prog.evaluated(dt)
                prog.message(f"eval at iter {st.it}: train loss {tr:.4f}, val loss {va:.4f}"
                             f"{' (best)' if best else ''} | {dt:.1f} s{saved}")
            if st.it >= cfg.max_iters:
                break
            if sigint.requested:
                interrupted = True
                break
            t0 = time.perf_counter()
            opt.lr = cosine_lr(st.it, cfg.lr, cfg.min_lr, cfg.warmup_iters, cfg.decay_iters)
            batches = [samplers["train"].next() for _ in range(cfg.grad_accum)]
            loss, grads = acc.run(model, batches)
            if not math.isfinite(loss):
                raise diverged("the training loss", loss, st.it + 1)
            norm = clip_grad_norm(grads, cfg.grad_clip) if cfg.grad_clip > 0 else _global_norm(grads)
            if not math.isfinite(norm):
                raise diverged("the gradient norm", norm, st.it + 1)
            opt.step(grads)
            st.it += 1
            st.step_losses.append(loss)
            dt = time.perf_counter() - t0
            step_time += dt
            steps_this_session += 1
            prog.step(st.it, loss, opt.lr, dt, st.elapsed_before + time.perf_counter() - t_session)
            if callback is not None:
                try:
                    callback(st.it, loss)
                except KeyboardInterrupt:
                    sigint.requested = True

    interrupted = interrupted or sigint.requested  # Ctrl-C during the final evaluation: skip the sample
    plot_path = _plot(out_dir, st, prog)
    sample = None
    if interrupted:
        if st.it > 0 and st.saved_it != st.it:
            save()
        where = (f"checkpoint saved to {ckpt_path}; continue with resume (--resume)" if st.saved_it is not None
                 else "nothing to save yet")
        prog.message(f"interrupted at iteration {st.it}/{cfg.max_iters}: {where}")
    else:
        if cfg.sample_len > 0:
            sample = _sample(model, tok, cfg)
        wall = time.perf_counter() - t_session
        ms = 1e3 * step_time / max(1, steps_this_session)
        final = st.evals[-1] if st.evals else None
        prog.message(f"done: {st.it} steps; this session {_clock(wall)} ({ms:.1f} ms/step over "
                     f"{steps_this_session} steps, {eval_time:.1f} s in evaluations)")
        if final is not None:
            best_val = f"{st.best_val:.4f}" if st.best_val is not None else "-"
            prog.message(f"final: train loss {final[1]:.4f}, val loss {final[2]:.4f} (best {best_val})")
        if st.saved_it is not None:
            prog.message(f"checkpoint: {ckpt_path}")
        if plot_path is not None:
            prog.message(f"loss curve: {plot_path}")
        if sample is not None:
            rule = "-" * 72
            prog.message(f"sample ({cfg.sample_len} characters, temperature 1.0):\n{rule}\n{sample}\n{rule}")
    final = st.evals[-1] if st.evals else None
    return TrainResult(
        iterations=st.it, final_train_loss=final[1] if final else None, final_val_loss=final[2] if final else None,
        best_val_loss=st.best_val, wall_time=time.perf_counter() - t_session,
        step_ms=1e3 * step_time / max(1, steps_this_session), eval_time=eval_time,
        checkpoint_path=ckpt_path if st.saved_it is not None else None, plot_path=plot_path, sample=sample,
        interrupted=interrupted, step_losses=list(st.step_losses), evals=list(st.evals),
        model=model, optimizer=opt, tokenizer=tok)


def resume_config(overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """The configuration to resume the run in out_dir with: the checkpoint's own train config, with the
    `overrides` (field name -> value; "out_dir" picks the directory, default "out") put on top, and
    resume=True.  train() then rejects overrides that would change the run's numbers.  A missing or
    unreadable checkpoint is a ValueError."""
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - {f.name for f in fields(TrainConfig)})
    if unknown:
        raise ValueError(f"overrides: unknown TrainConfig fields {unknown}")
    out_dir = Path(overrides.get("out_dir", TrainConfig.out_dir))
    path = out_dir / CHECKPOINT_NAME
    if not path.exists():
        raise ValueError(f"{path}: no checkpoint to resume from (train without resume first)")
    stored = load_checkpoint(path).meta.get("train_config")
    if not isinstance(stored, dict):
        raise ValueError(f"{path}: not a training checkpoint (no train_config); cannot resume from it")
    known = {f.name for f in fields(TrainConfig)}
    base = {k: v for k, v in stored.items() if k in known and k not in RESUME_FREE_FIELDS}
    try:
        return TrainConfig(**{**base, **overrides, "out_dir": str(out_dir), "resume": True})
    except TypeError as e:
        raise ValueError(f"{path}: invalid train_config in the checkpoint ({e})") from None


def evaluate(model: GPT, train_sampler: BatchSampler, val_sampler: BatchSampler,
             eval_iters: int) -> tuple[float, float]:
    """Mean loss over eval_iters batches from each sampler, with dropout off; the model is left in train
    mode.  Only these samplers' generators advance (not the training sampler's, not the model's)."""
    model.eval()
    try:
        out = []
        for sampler in (train_sampler, val_sampler):
            losses = [float(model.forward(*sampler.next())[1]) for _ in range(eval_iters)]
            out.append(float(np.mean(losses)))
    finally:
        model.train()
    return out[0], out[1]


@dataclass
class _RunState:
    """Everything about the run's progress that a checkpoint restores (besides arrays and RNG states)."""

    it: int = 0  # optimizer steps completed
    step_losses: list[float] = field(default_factory=list)
    evals: list[tuple[int, float, float]] = field(default_factory=list)
    best_val: float | None = None
    last_eval: int = -1  # iteration of the latest evaluation
    saved_it: int | None = None  # iteration of the checkpoint this run wrote or resumed from
    elapsed_before: float = 0.0  # seconds spent in earlier sessions of this run


def _restore(path: Path, ck: Any, model: GPT, opt: AdamW, samplers: dict[str, BatchSampler],
             st: _RunState) -> None:
    meta = ck.meta
    try:
        for k, a in ck.params.items():
            model.params[k][...] = a
        o = meta["optimizer"]
        opt.load_state_dict({"lr": o["lr"], "betas": o["betas"], "eps": o["eps"], "weight_decay": o["weight_decay"],
                             "t": o["t"], "m": ck.adam_m, "v": ck.adam_v})
        model.rng.bit_generator.state = meta["model_rng"]
        for name, s in samplers.items():
            s.set_state(meta["samplers"][name])
        hist = meta["history"]
        st.it = int(meta["iteration"])
        st.step_losses = [float(v) for v in hist["train_loss"]]
        st.evals = [(int(r[0]), float(r[1]), float(r[2])) for r in hist["evals"]]
        st.best_val = None if meta["best_val_loss"] is None else float(meta["best_val_loss"])
        st.last_eval = int(meta["last_eval_iter"])
        st.saved_it = st.it
        st.elapsed_before = float(meta.get("elapsed_seconds", 0.0))
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ValueError(f"{path}: incomplete training state in the checkpoint ({type(e).__name__}: {e})") from None
    if len(st.step_losses) != st.it or opt.t != st.it:
        raise ValueError(f"{path}: inconsistent checkpoint (iteration {st.it}, {len(st.step_losses)} losses, "
                         f"optimizer step {opt.t})")


def _check_resume_meta(path: Path, meta: dict[str, Any], data_info: dict[str, Any]) -> None:
    stored = meta.get("data")
    if not isinstance(stored, dict) or "sha256" not in stored or "tokenizer" not in meta:
        raise ValueError(f"{path}: not a training checkpoint (no data or tokenizer record); cannot resume from it")
    if stored["sha256"] != data_info["sha256"]:
        raise ValueError(f"{path}: checkpoint was trained on a different text ({stored.get('source')}, "
                         f"{stored.get('n_chars')} characters); resume with the same text as the original run")


def _read_source(text_or_path: str | os.PathLike[str] | None) -> tuple[str, str]:
    """(text, a short name for it)."""
    if text_or_path is None:
        p = bundled_corpus_path()
        return load_text(p), p.name
    if isinstance(text_or_path, os.PathLike):
        return load_text(text_or_path), str(text_or_path)
    if isinstance(text_or_path, str):
        if not text_or_path:
            raise ValueError("text: expected a non-empty text")
        return text_or_path, "<text>"
    raise ValueError(f"text_or_path: expected a str (the text), a path or None, got {type(text_or_path).__name__}")


def _global_norm(grads: dict[str, Array]) -> float:
    return math.sqrt(sum(float(np.dot(g.reshape(-1), g.reshape(-1))) for g in grads.values()))


def _plot(out_dir: Path, st: _RunState, prog: _Progress) -> Path | None:
    from .plot import plot_losses

    if not st.step_losses and not st.evals:
        return None
    try:
        return plot_losses(out_dir / PLOT_NAME, st.step_losses, st.evals)
    except Exception as e:  # the picture is a convenience: never lose a finished run over it
        prog.message(f"warning: could not draw the loss curve ({type(e).__name__}: {e})")
        return None


def _sample(model: GPT, tok: CharTokenizer, cfg: TrainConfig) -> str:
    model.eval()
    start = tok.stoi.get("\n", 0)  # start from a newline when the text has one
    out = model.generate(np.array([[start]], dtype=np.int64), cfg.sample_len, temperature=1.0,
                         rng=np.random.default_rng(cfg.seed))
    model.train()
    return tok.decode(out[0, 1:])


class _Progress:
    """The progress display: a line redrawn in place on a terminal, or a plain line every log_interval steps."""

    def __init__(self, log: Callable[[str], Any], live: bool | None, cfg: TrainConfig, it0: int) -> None:
        if live is None:
            live = log is print and sys.stdout.isatty()
        self.log, self.live, self.cfg = log, live, cfg
        self.it0 = it0
        self.tokens_per_step = cfg.batch_size * cfg.block_size * cfg.grad_accum
        self.step_ema: float | None = None  # smoothed seconds per step
        self.evals, self.eval_seconds = 0, 0.0  # for the ETA
        self.open = False  # a live line is on screen without its newline
        self.last_draw = 0.0

    def step(self, it: int, loss: float, lr: float, dt: float, elapsed: float) -> None:
        self.step_ema = dt if self.step_ema is None else 0.9 * self.step_ema + 0.1 * dt
        now = time.perf_counter()
        last = it == self.cfg.max_iters
        if self.live:
            if not (last or now - self.last_draw >= 0.1):
                return
        elif not (it % self.cfg.log_interval == 0 or it == self.it0 + 1 or last):
            return
        self.last_draw = now
        c = self.cfg
        evals_left = c.max_iters // c.eval_interval - it // c.eval_interval + (c.max_iters % c.eval_interval > 0)
        eval_s = self.eval_seconds / self.evals if self.evals else 0.0
        eta = (c.max_iters - it) * self.step_ema + evals_left * eval_s
        line = (f"iter {it:>{len(str(self.cfg.max_iters))}}/{self.cfg.max_iters} | loss {loss:.4f} | "
                f"{self.tokens_per_step / self.step_ema:,.0f} tok/s | {1e3 * self.step_ema:.0f} ms/step | "
                f"lr {lr:.2e} | elapsed {_clock(elapsed)} | ETA {_clock(eta)}")
        if self.live:
            sys.stdout.write("\r" + line + "\x1b[K")  # \x1b[K clears what a longer previous line left
            sys.stdout.flush()
            self.open = True
        else:
            self.log(line)

    def evaluated(self, seconds: float) -> None:
        self.evals += 1
        self.eval_seconds += seconds

    def end_line(self) -> None:
        if self.open:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self.open = False

    def message(self, text: str) -> None:
        self.end_line()
        self.log(text)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.end_line()  # also on an exception: leave the terminal at the start of a line


class _DeferSigint:
    """While active in the main thread, the first Ctrl-C only sets `requested` (the loop stops at the next
    step boundary, where the state is consistent and can be saved); a second Ctrl-C raises KeyboardInterrupt
    at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> _DeferSigint:
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            self._previous = signal.signal(signal.SIGINT, self._handle)
            self._installed = True
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name}: expected {kind}, got {value!r}")


def _check_float(name: str, value: Any, low: float, high: float | None = None, low_open: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.floating, np.integer)) \
        and math.isfinite(value) and (value > low if low_open else value >= low) and (high is None or value < high)
    if not ok:
        rng = f"in [{low:g}, {high:g})" if high is not None else (f"> {low:g}" if low_open else f">= {low:g}")
        raise ValueError(f"{name}: expected a finite number {rng}, got {value!r}")


__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "GradAccumulator", "FIELD_HELP",
           "RESUME_FREE_FIELDS", "train", "evaluate", "resume_config"]
