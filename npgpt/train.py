"""The training loop: a GPT on a text, with evaluation, checkpoints, resume, a loss plot and a sample at the end.

    from npgpt.train import TrainConfig, train
    result = train(None, TrainConfig())              # the bundled Tiny Shakespeare, the default recipe
    result = train("my.txt", TrainConfig(max_iters=500, out_dir="run1"))   # a path (str or PathLike)
    result = train(text="some text ...", cfg=cfg)    # the text itself: always by keyword

Each optimizer step averages the gradients of grad_accum micro-batches (mean-loss semantics: the same as one
batch of grad_accum * batch_size sequences), clips their global norm, sets the warmup + cosine learning rate
and takes an AdamW step.  Every eval_interval steps, and at the end, the mean loss over eval_iters batches of
each split is measured (dropout off) and out_dir/ckpt.npz (the latest state) is written, and out_dir/best.npz
when the validation loss is the lowest so far.  Ctrl-C or SIGTERM finishes the current step, saves and
returns; resume=True continues from out_dir/ckpt.npz and ends with exactly the parameters, optimizer state
and loss history of an uninterrupted run (also when max_iters is raised to extend a finished run).  A loss
that is not finite or above 2 ln(V) + 1 stops with TrainingDiverged before the bad update, saving nothing.
Before the first allocation the memory need is estimated and the out dir locked, cleaned and checked.

The pieces, in the order train() runs them: _setup (text, tokenizer, checks, out dir, model, resume), then
per iteration _evaluate_and_save and _step, then _report.  The checkpoint's training metadata is written by
_checkpoint_meta and read back by _restore, side by side.  Guide: docs/training.md
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
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import numpy.typing as npt

from . import __version__
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .config import GPTConfig
from .data import (
    BatchSampler,
    Tokenizer,
    _jsonable,
    bundled_corpus_path,
    load_text,
    split,
    tokenizer_from_dict,
)
from .finetune import load_gpt2_dir, save_gpt2_dir
from .flat import pack
from .footprint import available_bytes, training_bytes
from .llama import Llama, LlamaConfig
from .memory import reuse_freed_memory
from .model import GPT, buffer_order, param_shapes
from .optim import AdamW, clip_grad_norm, cosine_lr
from .outdir import OutDir, describe_os_error, format_bytes
from .parallel import blas_kernel_note
from .tokenizers import BPETokenizer, encode_text, tokenizer_from_spec
from .tokenizers.spec import check_learnable
from ._checks import is_int

Array = npt.NDArray[np.floating]
T = TypeVar("T")

VAL_FRACTION = 0.1  # the last 10% of the text is the validation split
CHECKPOINT_NAME = "ckpt.npz"  # the latest state, what resume continues from
BEST_NAME = "best.npz"  # the state with the lowest validation loss; never overwritten by a worse one
PLOT_NAME = "loss"  # out_dir/loss.png, or loss.svg without matplotlib
HF_DIR_NAME = "hf"  # out_dir/hf: with a BPE tokenizer, the final model as a Hugging Face GPT-2 directory


def _f(default: T, help: str) -> T:
    """A TrainConfig field: its default and its one-line help (the CLI's --help and docs/training.md)."""
    return field(default=default, metadata={"help": help})


def _field_default(name: str) -> Any:
    """TrainConfig's default for one field."""
    return next(f.default for f in fields(TrainConfig) if f.name == name)


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of a training run.  The defaults are nanoGPT's CPU recipe for Tiny Shakespeare
    (config/train_shakespeare_char.py with its "on a MacBook" overrides) retuned by a sweep for the same wall
    time: 2 layers instead of 4, lr 6e-3 instead of 1e-3, 3600 steps instead of 2000, an evaluation every 500;
    a 0.41M-parameter GPT that reaches a validation loss of about 1.66 (the recipe's 1.88).  The sweep is in
    docs/performance.md ("The default recipe").  Each field's help is its metadata["help"]."""

    # model
    arch: str = _f("gpt2", "model family (one of MODEL_BUILDERS: gpt2, llama)")
    n_layer: int = _f(2, "transformer blocks (2 taking more steps beat 4 in the same time)")
    n_head: int = _f(4, "attention heads per block (head size n_embd / n_head = 32)")
    n_embd: int = _f(128, "width of the residual stream; a multiple of n_head")
    n_kv_head: int | None = _f(None, "llama: key/value heads, dividing n_head (default: n_head)")
    intermediate_size: int | None = _f(None, "llama: gated MLP width (default: 8 n_embd / 3 up to a multiple of 8)")
    block_size: int = _f(64, "context length in tokens, the T of every batch")
    dropout: float = _f(0.0, "dropout probability in training (0: a small model on a short run does not overfit)")
    # batches
    batch_size: int = _f(12, "sequences per micro-batch (12 x 64 = 768 tokens)")
    grad_accum: int = _f(1, "micro-batches whose gradients are averaged into one optimizer step")
    # optimizer and schedule
    max_iters: int = _f(3600, "optimizer steps; raise it with resume to extend a finished run")
    lr: float = _f(6e-3, "peak learning rate (a baby network takes a large one: 6e-3 beat 2e-3 to 1e-2)")
    min_lr: float | None = _f(None, "final learning rate of the cosine decay (default: lr / 10, as in Chinchilla)")
    warmup_iters: int = _f(100, "steps of linear warmup from lr / warmup_iters to lr")
    lr_decay_iters: int | None = _f(None, "step at which the cosine decay reaches min_lr (default: max_iters)")
    weight_decay: float = _f(0.1, "AdamW's decoupled weight decay, on the 2-D weight matrices only")
    beta1: float = _f(0.9, "AdamW's first-moment decay")
    beta2: float = _f(0.99, "AdamW's second-moment decay (above GPT-2's 0.95: each step sees few tokens)")
    grad_clip: float = _f(1.0, "clip the global gradient norm to this (0: no clipping)")
    # evaluation, logging, output
    eval_interval: int = _f(500, "steps between evaluations (each one also writes the checkpoints)")
    eval_iters: int = _f(20, "batches per split in each evaluation")
    log_interval: int = _f(50, "steps between progress lines when stdout is not a terminal")
    seed: int = _f(1337, "seeds the initialisation, dropout and the batch samplers")
    out_dir: str = _f("out", "directory for ckpt.npz, best.npz and the loss plot")
    resume: bool = _f(False, "continue from OUT_DIR/ckpt.npz")
    sample_len: int = _f(500, "tokens generated at the end (0: none)")
    # tokenizer and fine-tuning (npgpt/tokenizers/, npgpt/finetune.py; docs/tokenizers.md)
    tokenizer: str = _f("char", "char (the text's characters), bpe:VOCAB (a byte-level BPE trained on the training "
                                "split, e.g. bpe:512), or a path to tokenizer files (a directory, tokenizer.json, "
                                "vocab.json or .tiktoken)")
    init_from: str | None = _f(None, "fine-tune a Hugging Face GPT-2 directory (config.json, model.safetensors, "
                                     "tokenizer files): its shapes and tokenizer replace n_layer/n_head/n_embd and "
                                     "--tokenizer; OUT_DIR/hf gets a directory transformers loads")

    def __post_init__(self) -> None:
        if self.arch not in MODEL_BUILDERS:
            raise ValueError(f"arch: expected one of {', '.join(map(repr, MODEL_BUILDERS))}, got {self.arch!r}")
        positive = ("n_layer", "n_head", "n_embd", "block_size", "batch_size", "grad_accum", "max_iters",
                    "eval_interval", "eval_iters", "log_interval")
        for name in positive:
            _check_int(name, getattr(self, name), minimum=1)
        for name in ("warmup_iters", "seed", "sample_len"):
            _check_int(name, getattr(self, name), minimum=0)
        if self.lr_decay_iters is not None:
            _check_int("lr_decay_iters", self.lr_decay_iters, minimum=1)
            if self.lr_decay_iters < self.warmup_iters and not self.resume:  # resume keeps the run's schedule
                raise ValueError(f"lr_decay_iters: expected at least warmup_iters={self.warmup_iters}, got "
                                 f"{self.lr_decay_iters} (the decay would end before the warmup does)")
        for name in ("n_kv_head", "intermediate_size"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=1)
                if self.arch != "llama":
                    raise ValueError(f"{name}: only the llama arch has it (--arch llama); got {getattr(self, name)} "
                                     f"for arch {self.arch!r}")
        if self.n_kv_head is not None and self.n_head % self.n_kv_head:
            raise ValueError(f"n_head: expected a multiple of n_kv_head={self.n_kv_head}, got {self.n_head}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd: expected a multiple of n_head={self.n_head}, got {self.n_embd}")
        _check_float("lr", self.lr, low=0.0, low_open=True)
        if self.min_lr is not None:
            _check_float("min_lr", self.min_lr, low=0.0)
            if self.min_lr > self.lr:
                raise ValueError(f"min_lr: expected at most lr={self.lr}, got {self.min_lr}")
        _check_float("weight_decay", self.weight_decay, low=0.0)
        _check_float("grad_clip", self.grad_clip, low=0.0)
        for name in ("beta1", "beta2", "dropout"):
            _check_float(name, getattr(self, name), low=0.0, high=1.0)
        if not isinstance(self.out_dir, str) or not self.out_dir:
            raise ValueError(f"out_dir: expected a non-empty path, got {self.out_dir!r}")
        if not isinstance(self.tokenizer, str) or not self.tokenizer:
            raise ValueError(f"tokenizer: expected char, bpe:VOCAB or a path, got {self.tokenizer!r}")
        if self.init_from is not None and (not isinstance(self.init_from, str) or not self.init_from):
            raise ValueError(f"init_from: expected a directory path, got {self.init_from!r}")
        if self.init_from is not None and self.arch != "gpt2":
            raise ValueError(f"arch: --init-from loads a GPT-2 directory; expected arch 'gpt2', got {self.arch!r}")
        if self.init_from is not None and self.tokenizer != "char":
            raise ValueError("tokenizer: --init-from uses the directory's own tokenizer; leave --tokenizer out")
        if not isinstance(self.resume, bool):
            raise ValueError(f"resume: expected True or False, got {self.resume!r}")

    @property
    def decay_iters(self) -> int:
        """lr_decay_iters, with None resolved to max_iters."""
        return self.max_iters if self.lr_decay_iters is None else self.lr_decay_iters

    @property
    def final_lr(self) -> float:
        """min_lr, with None resolved to lr / 10."""
        return self.lr / 10.0 if self.min_lr is None else self.min_lr

    def model_config(self, vocab_size: int) -> GPTConfig:
        return GPTConfig(vocab_size=vocab_size, block_size=self.block_size, n_layer=self.n_layer,
                         n_head=self.n_head, n_embd=self.n_embd, dropout=self.dropout)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# One line per TrainConfig field, read from the fields' metadata (kept for callers of the old dict).
FIELD_HELP: dict[str, str] = {f.name: f.metadata["help"] for f in fields(TrainConfig)}

# Fields that may differ between a checkpoint and the run resuming from it: they do not change the numbers
# of the steps already taken (max_iters extends or shortens what is left; see _numbers).
RESUME_FREE_FIELDS = frozenset({"out_dir", "resume", "sample_len", "log_interval", "max_iters"})


def _build_gpt2(cfg: TrainConfig, vocab_size: int) -> GPT:
    return GPT(cfg.model_config(vocab_size), seed=cfg.seed, dtype=np.float32)


def _llama_widths(n_head: int, n_embd: int, n_kv_head: int | None,
                  intermediate_size: int | None) -> tuple[int, int]:
    """TrainConfig's llama widths with their defaults resolved: n_kv_head = n_head, 8 n_embd / 3 up to a
    multiple of 8."""
    return n_kv_head or n_head, intermediate_size or 8 * math.ceil(n_embd / 3)


def _build_llama(cfg: TrainConfig, vocab_size: int) -> GPT:
    if cfg.dropout:
        raise ValueError(f"dropout: the llama arch has no dropout; expected 0, got {cfg.dropout}")
    n_kv_head, intermediate_size = _llama_widths(cfg.n_head, cfg.n_embd, cfg.n_kv_head, cfg.intermediate_size)
    config = LlamaConfig(vocab_size=vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer, n_head=cfg.n_head,
                         n_kv_head=n_kv_head, n_embd=cfg.n_embd, intermediate_size=intermediate_size,
                         rms_norm_eps=1e-5, tie_word_embeddings=True)
    return cast(GPT, Llama(config, seed=cfg.seed, dtype=np.float32))  # Llama has GPT's training interface


# arch -> the function that builds that model for a vocabulary size.  A new family adds its entry here.
MODEL_BUILDERS: dict[str, Callable[[TrainConfig, int], GPT]] = {"gpt2": _build_gpt2, "llama": _build_llama}


def build_model(cfg: TrainConfig, vocab_size: int) -> GPT:
    """The model cfg.arch names, for a vocabulary of vocab_size tokens (float32, seeded with cfg.seed)."""
    if cfg.arch not in MODEL_BUILDERS:
        raise ValueError(f"arch: expected one of {', '.join(map(repr, MODEL_BUILDERS))}, got {cfg.arch!r}")
    return MODEL_BUILDERS[cfg.arch](cfg, vocab_size)


def divergence_limit(vocab_size: int) -> float:
    """The loss above which a run counts as diverged: 2 ln(V) + 1, twice the loss of predicting every token
    uniformly plus one nat.  A fresh model starts near ln(V); only a broken one gets far above it."""
    return 2.0 * math.log(vocab_size) + 1.0


class TrainingDiverged(RuntimeError):
    """The loss or the gradient norm became NaN, infinite, or (the loss) above divergence_limit; nothing was
    saved after the last good state."""


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
    checkpoint_path: Path | None  # out_dir/ckpt.npz; None when no checkpoint was written
    plot_path: Path | None
    sample: str | None  # the generated text (after the prompt), None when sample_len is 0 or interrupted
    interrupted: bool
    step_losses: list[float] = field(repr=False)  # training loss of every step since iteration 0
    evals: list[tuple[int, float, float]] = field(repr=False)  # (iteration, train loss, val loss)
    model: GPT | None = field(default=None, repr=False)
    optimizer: AdamW | None = field(default=None, repr=False)
    tokenizer: Tokenizer | None = field(default=None, repr=False)
    best_path: Path | None = None  # out_dir/best.npz; None when none was written
    stop_signal: int | None = None  # signal.SIGINT or signal.SIGTERM when one stopped the run


class GradAccumulator:
    """Averages the gradients of several micro-batches into one buffer laid out like the model's.

    model.backward() overwrites model.grads, so each micro-batch's gradient is added here; dividing by the
    count gives the gradient of the mean loss over all micro-batches (equal-sized, so it is the gradient of
    one big batch's mean loss).
    """

    def __init__(self, model: GPT) -> None:
        shapes = {k: p.shape for k, p in model.params.items()}  # any model family's parameters
        self.flat, self.grads = pack(shapes, model.dtype, buffer_order(shapes))  # same layout: AdamW fast path

    def run(self, model: GPT, batches: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[float, dict[str, Array]]:
        """Forward and backward every (x, y) batch; return the mean loss and the mean gradients."""
        if len(batches) == 1:
            _, loss = model.forward(*batches[0])
            assert loss is not None  # forward with targets returns the loss
            return float(loss), model.backward()
        self.flat[...] = 0.0
        total = 0.0
        for x, y in batches:
            _, loss = model.forward(x, y)
            assert loss is not None
            model.backward()
            self.flat += model.flat_grads
            total += float(loss)
        self.flat *= 1.0 / len(batches)
        return total / len(batches), self.grads


@dataclass
class _RunState:
    """Everything about the run's progress that a checkpoint restores (besides arrays and RNG states)."""

    it: int = 0  # optimizer steps completed
    step_losses: list[float] = field(default_factory=list)
    evals: list[tuple[int, float, float]] = field(default_factory=list)
    best_val: float | None = None  # lowest validation loss of any evaluation (iteration 0 included)
    best_saved: tuple[int, float] | None = None  # (iteration, val loss) of best.npz
    last_eval: int = -1  # iteration of the latest evaluation
    saved_it: int | None = None  # iteration of the checkpoint this run wrote or resumed from
    elapsed_before: float = 0.0  # seconds spent in earlier sessions of this run


@dataclass
class _Run:
    """One training session: what _setup builds and the loop pieces share."""

    cfg: TrainConfig
    tok: Tokenizer
    data_info: dict[str, Any]
    samplers: dict[str, BatchSampler]
    model: GPT
    opt: AdamW
    acc: GradAccumulator
    st: _RunState
    out: OutDir
    prog: _Progress
    t_session: float
    limit: float  # divergence_limit(vocab)
    ckpt_path: Path
    best_path: Path
    eval_time: float = 0.0
    step_time: float = 0.0
    steps_this_session: int = 0
    stop_signal: int | None = None
    plot_path: Path | None = None


def train(path: str | os.PathLike[str] | None = None, cfg: TrainConfig | None = None,
          log: Callable[[str], Any] = print, *, text: str | None = None, live: bool | None = None,
          callback: Callable[[int, float], Any] | None = None, tokenizer: Tokenizer | None = None) -> TrainResult:
    """Train a GPT; see the module docstring.

    path: a UTF-8 text file (str or os.PathLike); None with no text: the bundled Tiny Shakespeare.
    text: the training text itself, by keyword (never positional, so a file name is never taken for text).
    log receives every output line.  live: redraw one progress line with a carriage return (default: when log
    is print and stdout is a terminal); otherwise a line every log_interval steps.  callback(iteration, loss)
    runs after every step; raising KeyboardInterrupt from it acts like Ctrl-C.  tokenizer: any Tokenizer
    (default: a CharTokenizer of the text); on resume the checkpoint's own is used.  Input problems (file, text too
    short, not enough memory or disk, out dir locked or unwritable, checkpoint unusable or from another
    config, a failing save) raise a one-line ValueError; a diverging loss raises TrainingDiverged.
    """
    cfg = TrainConfig() if cfg is None else cfg
    if not isinstance(cfg, TrainConfig):
        raise ValueError(f"cfg: expected a TrainConfig, got {type(cfg).__name__}")
    run = _setup(path, text, cfg, log, live, tokenizer)
    try:
        _loop(run, callback)
    finally:
        run.out.close()
    return _report(run)


def _setup(path: str | os.PathLike[str] | None, text: str | None, cfg: TrainConfig, log: Callable[[str], Any],
           live: bool | None, tokenizer: Tokenizer | None = None) -> _Run:
    """Read the text, build or restore the tokenizer, check sizes and memory, take the out dir, build the
    model and optimizer, and restore a checkpoint when resuming.  Nothing large is allocated before the
    checks pass; nothing is written before the out dir is locked."""
    t_session = time.perf_counter()
    content, source = _read_source(path, text)
    out_dir = Path(cfg.out_dir)
    ckpt_path, best_path = out_dir / CHECKPOINT_NAME, out_dir / BEST_NAME
    data_info = {"source": source, "n_chars": len(content), "sha256": _sha256(content)}
    ck = _load_for_resume(ckpt_path, cfg, data_info) if cfg.resume else None
    init = load_gpt2_dir(cfg.init_from) if cfg.init_from is not None else None  # (model, tokenizer)
    if ck is not None:
        tok = tokenizer_from_dict(ck.meta["tokenizer"])
    elif tokenizer is not None:  # train(..., tokenizer=): the caller's own
        tok = tokenizer
    elif init is not None:
        tok = init[1]
    else:  # bpe:VOCAB learns from (about) the training split only: the first 90% of the characters
        tok = tokenizer_from_spec(cfg.tokenizer, content[:int(len(content) * (1.0 - VAL_FRACTION))], content, log)
    check_learnable(tok, source)  # a text of one character (all NUL bytes: a binary file?) teaches nothing
    ids = encode_text(tok, content)  # (N,) compact ids
    del content
    train_ids, val_ids = split(ids, VAL_FRACTION)
    for name, part in (("training split (the first 90%)", train_ids), ("validation split (the last 10%)", val_ids)):
        if len(part) < cfg.block_size + 1:
            raise ValueError(f"text too short: the {name} has {len(part)} tokens, but block_size="
                             f"{cfg.block_size} needs at least {cfg.block_size + 1}; use a longer text or a "
                             f"smaller block_size")
    if init is not None:  # the directory fixes the shapes; the run's block_size is what batches use
        icfg = init[0].config
        for name in ("n_layer", "n_head", "n_embd"):  # a shape set away from its default must match the directory
            given, default, theirs = getattr(cfg, name), _field_default(name), getattr(icfg, name)
            if given != default and given != theirs:
                raise ValueError(f"{name}: {cfg.init_from} has {name}={theirs}, and --init-from takes the "
                                 f"directory's shapes; leave --{name.replace('_', '-')} out (got {given})")
        if cfg.block_size > icfg.block_size:
            raise ValueError(f"block_size: {cfg.block_size} is larger than {cfg.init_from}'s n_positions="
                             f"{icfg.block_size}")
        gcfg = replace(icfg, dropout=cfg.dropout)
        mem_cfg = replace(cfg, n_layer=icfg.n_layer, n_head=icfg.n_head, n_embd=icfg.n_embd)
    else:
        gcfg, mem_cfg = cfg.model_config(tok.vocab_size), cfg
    n_params = _count_params(gcfg)
    _check_memory(mem_cfg, gcfg.vocab_size, n_params)
    out = OutDir(out_dir).open(min_free_bytes=2 * (12 * n_params + (1 << 20)))  # ckpt.npz and best.npz
    try:
        seeds = np.random.SeedSequence(cfg.seed).spawn(3)
        samplers = {
            "train": BatchSampler(train_ids, cfg.block_size, cfg.batch_size, seeds[0], "train"),
            "eval_train": BatchSampler(train_ids, cfg.block_size, cfg.batch_size, seeds[1], "eval_train"),
            "eval_val": BatchSampler(val_ids, cfg.block_size, cfg.batch_size, seeds[2], "eval_val"),
        }
        reuse_freed_memory()  # keep freed temporaries for reuse: ~12,000 fewer page faults per step (memory.py)
        if init is not None:
            model = init[0].train()
            model.config = gcfg  # the run's dropout
        else:
            model = build_model(cfg, tok.vocab_size)
        opt = AdamW(model.params, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
        st = _RunState()
        prog = _Progress(log, live, cfg, 0)
        run = _Run(cfg, tok, data_info, samplers, model, opt, GradAccumulator(model), st, out, prog, t_session,
                   divergence_limit(tok.vocab_size), ckpt_path, best_path)
        if ck is not None:
            if ck.config != model.config:
                raise ValueError(f"{ckpt_path}: the checkpoint's model config {ck.config} does not match this "
                                 f"run's {model.config}")
            _restore(run, ck)
            if st.it > cfg.max_iters:
                raise ValueError(f"max_iters: the checkpoint {ckpt_path} has already completed {st.it} steps; "
                                 f"give at least {st.it} (more to extend the run)")
            prog.it0 = st.it
    except BaseException:
        out.close()
        raise
    if out.took_over is not None:
        prog.message(f"note: took over the lock of a run that is no longer running (PID {out.took_over})")
    if out.removed:
        prog.message(f"note: removed {len(out.removed)} temporary file(s) left by an interrupted save in {out_dir}")
    prog.message(f"data: {source}: {data_info['n_chars']:,} characters, vocabulary {tok.vocab_size}; "
                 f"train {len(train_ids):,} / val {len(val_ids):,} tokens")
    mc = mem_cfg  # with --init-from, the directory's shapes
    prog.message(f"model: {cfg.arch} n_layer={mc.n_layer} n_head={mc.n_head} n_embd={mc.n_embd} "
                 f"block_size={cfg.block_size} ({model.num_params():,} parameters); {cfg.max_iters} steps of "
                 f"{cfg.grad_accum * cfg.batch_size * cfg.block_size:,} tokens")
    note = blas_kernel_note()
    if note is not None:
        prog.message(note)
    if ck is not None:
        prog.message(f"resuming from {ckpt_path} at iteration {st.it}")
    return run


def _loop(run: _Run, callback: Callable[[int, float], Any] | None) -> None:
    """Evaluate when due, stop when done or asked to, else take a step; the plot is drawn on every way out."""
    cfg, st = run.cfg, run.st
    # overflow in a diverging run is caught by the loss checks, which name the step; the warnings filter also
    # covers worker threads (GPT(threads > 1)), which do not inherit this thread's np.errstate
    with _StopSignals() as stop, run.prog, np.errstate(over="ignore", invalid="ignore", divide="ignore"), \
            warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"(overflow|invalid value|divide by zero) encountered", RuntimeWarning)
        try:
            while True:
                if (st.it % cfg.eval_interval == 0 or st.it == cfg.max_iters) and st.last_eval != st.it:
                    _evaluate_and_save(run)
                if st.it >= cfg.max_iters or stop.signum is not None:
                    break
                loss = _step(run)
                if callback is not None:
                    try:
                        callback(st.it, loss)
                    except KeyboardInterrupt:
                        stop.signum = signal.SIGINT
        except TrainingDiverged:
            run.plot_path = _plot(run)
            raise
        except OSError as e:  # a checkpoint that could not be written (disk full, directory removed, ...)
            run.plot_path = _plot(run)
            raise ValueError(f"{describe_os_error(e)}: the checkpoint was not written; {_kept(run)}") from None
        finally:
            run.stop_signal = stop.signum


def _step(run: _Run) -> float:
    """One optimizer step: learning rate, grad_accum forward/backward passes, checks, clipping, AdamW."""
    cfg, st, opt = run.cfg, run.st, run.opt
    t0 = time.perf_counter()
    opt.lr = cosine_lr(st.it, cfg.lr, cfg.final_lr, cfg.warmup_iters, cfg.decay_iters)
    batches = [run.samplers["train"].next() for _ in range(cfg.grad_accum)]
    loss, grads = run.acc.run(run.model, batches)
    _check_loss(run, "the training loss", loss, st.it + 1)
    norm = clip_grad_norm(grads, cfg.grad_clip if cfg.grad_clip > 0 else math.inf)  # inf: only measure it
    if not math.isfinite(norm):
        raise _diverged(run, f"the gradient norm is {norm} at iteration {st.it + 1}")
    opt.step(grads)
    st.it += 1
    st.step_losses.append(loss)
    dt = time.perf_counter() - t0
    run.step_time += dt
    run.steps_this_session += 1
    run.prog.step(st.it, loss, opt.lr, dt, st.elapsed_before + time.perf_counter() - run.t_session)
    return loss


def _evaluate_and_save(run: _Run) -> None:
    """Measure both splits; write ckpt.npz (and best.npz on a new lowest validation loss) after iteration 0."""
    st = run.st
    t0 = time.perf_counter()
    tr, va = evaluate(run.model, run.samplers["eval_train"], run.samplers["eval_val"], run.cfg.eval_iters)
    _check_loss(run, "the train loss (eval)", tr, st.it)
    _check_loss(run, "the val loss", va, st.it)
    best = st.best_val is None or va < st.best_val
    st.best_val = va if best else st.best_val
    st.evals.append((st.it, tr, va))
    st.last_eval = st.it
    saved = ""
    if st.it > 0:  # iteration 0 is the fresh initialisation: nothing worth keeping
        new_best = st.best_saved is None or va < st.best_saved[1]
        if new_best:
            st.best_saved = (st.it, va)
        _save(run, run.ckpt_path)
        saved = f" | saved {run.ckpt_path}"
        if new_best:
            _save(run, run.best_path)
            saved += f" and {run.best_path}"
    dt = time.perf_counter() - t0
    run.eval_time += dt
    run.prog.evaluated(dt)
    run.prog.message(f"eval at iter {st.it}: train loss {tr:.4f}, val loss {va:.4f}"
                     f"{' (best)' if best else ''} | {dt:.1f} s{saved}")


def _report(run: _Run) -> TrainResult:
    """Draw the plot, save an interrupted run, generate the sample, print the summary, build the result."""
    cfg, st = run.cfg, run.st
    interrupted = run.stop_signal is not None
    if interrupted and st.it > 0 and st.saved_it != st.it:
        try:
            _save(run, run.ckpt_path)
        except OSError as e:
            run.plot_path = _plot(run)
            raise ValueError(f"{describe_os_error(e)}: the checkpoint was not written; {_kept(run)}") from None
    run.plot_path = _plot(run)
    prog, sample = run.prog, None
    if interrupted:
        where = (f"checkpoint saved to {run.ckpt_path}; continue with resume (--resume)"
                 if st.saved_it is not None else "nothing to save yet")
        what = "terminated (SIGTERM)" if run.stop_signal == signal.SIGTERM else "interrupted"
        prog.message(f"{what} at iteration {st.it}/{cfg.max_iters}: {where}")
    else:
        if isinstance(run.tok, BPETokenizer) and type(run.model) is GPT \
                and run.tok.vocab_size <= run.model.config.vocab_size:
            hf_dir = Path(cfg.out_dir) / HF_DIR_NAME  # the final parameters, as a GPT-2 directory
            save_gpt2_dir(run.model, run.tok, hf_dir)
            prog.message(f"transformers directory: {hf_dir} (GPT2LMHeadModel / AutoTokenizer.from_pretrained)")
        if cfg.sample_len > 0:
            sample = _sample(run.model, run.tok, cfg)
        wall = time.perf_counter() - run.t_session
        ms = 1e3 * run.step_time / max(1, run.steps_this_session)
        prog.message(f"done: {st.it} steps; this session {_clock(wall)} ({ms:.1f} ms/step over "
                     f"{run.steps_this_session} steps, {run.eval_time:.1f} s in evaluations)")
        if st.evals:
            best = f"{st.best_val:.4f}" if st.best_val is not None else "-"
            prog.message(f"final: train loss {st.evals[-1][1]:.4f}, val loss {st.evals[-1][2]:.4f} (best {best})")
        if st.saved_it is not None:
            prog.message(f"checkpoint: {run.ckpt_path} (latest)")
        if st.best_saved is not None:
            prog.message(f"best: {run.best_path} (iteration {st.best_saved[0]}, val loss {st.best_saved[1]:.4f})")
        if run.plot_path is not None:
            prog.message(f"loss curve: {run.plot_path}")
        if sample is not None:
            rule = "-" * 72
            prog.message(f"sample ({cfg.sample_len} tokens, temperature 1.0):\n{rule}\n{sample}\n{rule}")
    final = st.evals[-1] if st.evals else None
    return TrainResult(
        iterations=st.it, final_train_loss=final[1] if final else None, final_val_loss=final[2] if final else None,
        best_val_loss=st.best_val, wall_time=time.perf_counter() - run.t_session,
        step_ms=1e3 * run.step_time / max(1, run.steps_this_session), eval_time=run.eval_time,
        checkpoint_path=run.ckpt_path if st.saved_it is not None else None, plot_path=run.plot_path,
        sample=sample, interrupted=interrupted, step_losses=list(st.step_losses), evals=list(st.evals),
        model=run.model, optimizer=run.opt, tokenizer=run.tok,
        best_path=run.best_path if st.best_saved is not None else None, stop_signal=run.stop_signal)


# ------------------------------------------------------------------ the checkpoint's training metadata

def _checkpoint_meta(run: _Run) -> dict[str, Any]:
    """The metadata npgpt.train stores beside the arrays (docs/training.md, "The checkpoint format");
    _restore reads exactly these keys back."""
    st, opt = run.st, run.opt
    return {
        "npgpt_version": __version__, "train_config": run.cfg.to_dict(), "iteration": st.it,
        "optimizer": {"name": "AdamW", "lr": opt.lr, "betas": list(opt.betas), "eps": opt.eps,
                      "weight_decay": opt.weight_decay, "t": opt.t},
        "model_rng": _jsonable(run.model.rng.bit_generator.state),
        "samplers": {k: s.get_state() for k, s in run.samplers.items()},
        "tokenizer": run.tok.to_dict(), "data": run.data_info,
        "history": {"train_loss": st.step_losses, "evals": [list(r) for r in st.evals]},
        "best_val_loss": st.best_val, "last_eval_iter": st.last_eval,
        "best_checkpoint": None if st.best_saved is None else list(st.best_saved),
        "elapsed_seconds": st.elapsed_before + (time.perf_counter() - run.t_session),
    }


def _restore(run: _Run, ck: Checkpoint) -> None:
    """Put a checkpoint's arrays, optimizer, RNG and sampler states and history into a fresh run."""
    meta, st, path = ck.meta, run.st, run.ckpt_path
    try:
        for k, a in ck.params.items():
            run.model.params[k][...] = a
        o = meta["optimizer"]
        run.opt.load_state_dict({"lr": o["lr"], "betas": o["betas"], "eps": o["eps"],
                                 "weight_decay": o["weight_decay"], "t": o["t"], "m": ck.adam_m, "v": ck.adam_v})
        run.model.rng.bit_generator.state = meta["model_rng"]
        for name, s in run.samplers.items():
            s.set_state(meta["samplers"][name])
        hist = meta["history"]
        st.it = int(meta["iteration"])
        st.step_losses = [float(v) for v in hist["train_loss"]]
        st.evals = [(int(r[0]), float(r[1]), float(r[2])) for r in hist["evals"]]
        st.best_val = None if meta["best_val_loss"] is None else float(meta["best_val_loss"])
        best = meta.get("best_checkpoint")  # absent in checkpoints written before best.npz existed
        st.best_saved = None if best is None else (int(best[0]), float(best[1]))
        st.last_eval = int(meta["last_eval_iter"])
        st.saved_it = st.it
        st.elapsed_before = float(meta.get("elapsed_seconds", 0.0))
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise ValueError(f"{path}: incomplete training state in the checkpoint ({type(e).__name__}: {e})") from None
    if len(st.step_losses) != st.it or run.opt.t != st.it:
        raise ValueError(f"{path}: inconsistent checkpoint (iteration {st.it}, {len(st.step_losses)} losses, "
                         f"optimizer step {run.opt.t})")


def _stored_train_config(path: Path, meta: Mapping[str, Any]) -> dict[str, Any]:
    """The train_config a checkpoint holds, with fields added since it was written at their old values."""
    stored = meta.get("train_config")
    if not isinstance(stored, dict) or not isinstance(meta.get("data"), dict) or "tokenizer" not in meta:
        raise ValueError(f"{path}: not a training checkpoint (no train config, data or tokenizer record); "
                         f"cannot resume from it")
    return {"arch": "gpt2", "n_kv_head": None, "intermediate_size": None, "tokenizer": "char", "init_from": None,
            **stored}


def _numbers(d: Mapping[str, Any]) -> dict[str, Any]:
    """A train_config as the already-taken steps see it: the resume-free fields dropped, the defaults
    resolved (lr_decay_iters None -> max_iters, min_lr None -> lr / 10, a llama's widths)."""
    out = {k: v for k, v in d.items() if k not in RESUME_FREE_FIELDS}
    if d.get("arch") == "llama":
        out["n_kv_head"], out["intermediate_size"] = _llama_widths(d["n_head"], d["n_embd"], d.get("n_kv_head"),
                                                                   d.get("intermediate_size"))
    if out.get("lr_decay_iters") is None:
        out["lr_decay_iters"] = d.get("max_iters")
    if out.get("min_lr") is None and isinstance(d.get("lr"), (int, float)):
        out["min_lr"] = d["lr"] / 10.0
    return out


def _same_setting(a: Any, b: Any) -> bool:
    """Equal, or two floats equal to 12 digits: min_lr given as 0.0006 restates the default lr / 10 =
    0.0006000000000000001."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12)
    return bool(a == b)


def _load_for_resume(path: Path, cfg: TrainConfig, data_info: Mapping[str, Any]) -> Checkpoint:
    """The checkpoint to resume from, checked against this run's config and text."""
    busy = OutDir(path.parent).busy()
    if busy is not None:  # before "no checkpoint": a run that has not saved yet holds the directory
        raise ValueError(busy)
    if not path.exists():
        raise ValueError(f"{path}: no checkpoint to resume from (train without resume first)")
    ck = load_checkpoint(path)
    have, want = _numbers(_stored_train_config(path, ck.meta)), _numbers(cfg.to_dict())
    diff = [k for k in want if not _same_setting(have.get(k, _MISSING), want[k])]
    if diff:
        parts = ", ".join(f"{k} (checkpoint {have.get(k, _MISSING)!r}, requested {want[k]!r})" for k in diff)
        raise ValueError(f"{path}: checkpoint was written with a different configuration: {parts}")
    stored = ck.meta["data"]
    if stored.get("sha256") != data_info["sha256"]:
        raise ValueError(f"{path}: checkpoint was trained on a different text ({stored.get('source')}, "
                         f"{stored.get('n_chars')} characters); resume with the same text as the original run")
    return ck


def resume_config(overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """The configuration to resume the run in out_dir with: the checkpoint's own train config, with the
    `overrides` (field name -> value; "out_dir" picks the directory, default "out") put on top, and
    resume=True.  Extending a run (a larger max_iters) keeps its schedule: lr_decay_iters stays where the
    original run put it, so the added steps run at min_lr.  train() rejects overrides that would change the
    numbers of the steps already taken.  A missing or unreadable checkpoint is a ValueError."""
    overrides = dict(overrides or {})
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"overrides: unknown TrainConfig fields {unknown}")
    out_dir = Path(overrides.get("out_dir", TrainConfig.out_dir))
    path = out_dir / CHECKPOINT_NAME
    busy = OutDir(path.parent).busy()
    if busy is not None:  # before "no checkpoint": a run that has not saved yet holds the directory
        raise ValueError(busy)
    if not path.exists():
        raise ValueError(f"{path}: no checkpoint to resume from (train without resume first)")
    stored = _stored_train_config(path, load_checkpoint(path).meta)
    base = {k: v for k, v in stored.items() if k in known and k not in RESUME_FREE_FIELDS - {"max_iters"}}
    if "max_iters" in overrides and "lr_decay_iters" not in overrides and stored.get("lr_decay_iters") is None:
        base["lr_decay_iters"] = stored.get("max_iters")  # the original schedule, not one over the new length
    try:
        return TrainConfig(**{**base, **overrides, "out_dir": str(out_dir), "resume": True})
    except TypeError as e:
        raise ValueError(f"{path}: invalid train_config in the checkpoint ({e})") from None


# ------------------------------------------------------------------------------------------- helpers

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


def _save(run: _Run, path: Path) -> None:
    save_checkpoint(path, run.model.params, run.opt.m, run.opt.v, run.model.config, _checkpoint_meta(run))
    if path == run.ckpt_path:
        run.st.saved_it = run.st.it


def _kept(run: _Run) -> str:
    """What a stop leaves on disk, for the error message."""
    st = run.st
    if st.saved_it is None:
        return f"this run saved nothing ({run.ckpt_path} is left as it was)"
    text = f"the last good checkpoint ({run.ckpt_path}, iteration {st.saved_it})"
    if st.best_saved is not None:
        text += f" and the best ({run.best_path}, iteration {st.best_saved[0]}, val loss {st.best_saved[1]:.4f})"
        return text + " are untouched"
    return text + " is untouched"


def _diverged(run: _Run, what: str) -> TrainingDiverged:
    return TrainingDiverged(f"{what}: stopped without saving; {_kept(run)}; try a lower lr")


def _check_loss(run: _Run, what: str, loss: float, it: int) -> None:
    if not math.isfinite(loss):
        raise _diverged(run, f"{what} is {loss} at iteration {it}")
    if loss > run.limit:
        raise _diverged(run, f"{what} is {loss:.4g} at iteration {it}, above {run.limit:.2f} (2 ln V + 1: twice "
                             f"the loss of uniform predictions over V={run.tok.vocab_size} tokens, plus 1); "
                             f"the run diverged")


def _check_memory(cfg: TrainConfig, vocab_size: int, n_params: int) -> None:
    need = training_bytes(n_params, cfg.n_layer, cfg.n_head, cfg.n_embd, cfg.block_size, vocab_size,
                          cfg.batch_size, cfg.grad_accum)
    have = available_bytes()
    if have is not None and need > have:
        raise ValueError(f"not enough memory: this configuration needs about {format_bytes(need)} (estimate for "
                         f"{n_params:,} parameters and batch_size={cfg.batch_size} x block_size={cfg.block_size}),"
                         f" but {format_bytes(have)} is available; use a smaller n_embd, n_layer, batch_size or "
                         f"block_size")


def _count_params(config: GPTConfig) -> int:
    return sum(math.prod(s) for s in param_shapes(config).values())


def _sha256(text: str) -> str:
    h = hashlib.sha256()
    for i in range(0, len(text), 1 << 20):  # in chunks: no whole-text bytes copy
        h.update(text[i:i + (1 << 20)].encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _read_source(path: str | os.PathLike[str] | None, text: str | None) -> tuple[str, str]:
    """(text, a short name for it)."""
    if text is not None:
        if path is not None:
            raise ValueError("text: give a path or a text, not both")
        if not isinstance(text, str) or not text:
            raise ValueError(f"text: expected a non-empty str, got {text!r:.40}")
        return text, "<text>"
    if path is None:
        p = bundled_corpus_path()
        return load_text(p), p.name
    if isinstance(path, str) and ("\n" in path or len(path) > 4096):
        raise ValueError("path: got a str that looks like the training text itself (it has a newline or is very "
                         "long); pass a text as train(text=...), a file as train(path)")
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path: expected a file path (str or os.PathLike) or None, got {type(path).__name__}")
    return load_text(path), str(path)


def _plot(run: _Run) -> Path | None:
    from .plot import plot_losses

    st = run.st
    if not st.step_losses and not st.evals:
        return None
    try:
        return plot_losses(Path(run.cfg.out_dir) / PLOT_NAME, st.step_losses, st.evals)
    except Exception as e:  # the picture is a convenience: never lose a finished run over it
        run.prog.message(f"warning: could not draw the loss curve ({type(e).__name__}: {e})")
        return None


def start_token(tok: Tokenizer) -> int:
    """The token an unprompted sample starts from: a newline when the vocabulary has one, else id 0."""
    try:
        nl = tok.encode("\n")
    except ValueError:  # a character vocabulary without "\n"
        return 0
    return int(nl[0]) if len(nl) == 1 else 0


def _sample(model: GPT, tok: Tokenizer, cfg: TrainConfig) -> str:
    model.eval()
    out = model.generate(np.array([[start_token(tok)]], dtype=np.int64), cfg.sample_len, temperature=1.0,
                         rng=np.random.default_rng(cfg.seed))
    model.train()
    return tok.decode(out[0, 1:])


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


class _StopSignals:
    """While active in the main thread, the first SIGINT (Ctrl-C) or SIGTERM only records `signum` (the loop
    stops at the next step boundary, where the state is consistent and can be saved); a second one raises
    KeyboardInterrupt at once.  Handlers are installed only where the signal has its default disposition,
    and restored on exit."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
            for sig, default in defaults.items():
                if signal.getsignal(sig) is default:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: Any) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


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


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


def _check_int(name: str, value: Any, minimum: int) -> None:
    if not is_int(value) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name}: expected {kind}, got {value!r}")


def _check_float(name: str, value: Any, low: float, high: float | None = None, low_open: bool = False) -> None:
    ok = not isinstance(value, bool) and isinstance(value, (int, float, np.floating, np.integer)) \
        and math.isfinite(value) and (value > low if low_open else value >= low) and (high is None or value < high)
    if not ok:
        rng = f"in [{low:g}, {high:g})" if high is not None else (f"> {low:g}" if low_open else f">= {low:g}")
        raise ValueError(f"{name}: expected a finite number {rng}, got {value!r}")


__all__ = ["TrainConfig", "TrainResult", "TrainingDiverged", "GradAccumulator", "FIELD_HELP", "MODEL_BUILDERS",
           "RESUME_FREE_FIELDS", "build_model", "divergence_limit", "train", "evaluate", "resume_config"]


if __name__ == "__main__":  # python -m npgpt.train ...: the same as npgpt train ...
    from npgpt.cli import main

    sys.exit(main(["train", *sys.argv[1:]]))
