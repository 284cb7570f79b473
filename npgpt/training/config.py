"""TrainConfig: the hyperparameters of a training run, their checks and their one-line help.

`cfg = TrainConfig(max_iters=500)`; every field's help is its metadata["help"] (the CLI's --help and
docs/training.md).  The model a run builds comes from families.arch_config(cfg.arch, vocab, cfg.widths()).
Guide: docs/training.md
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

import numpy as np

from .._checks import is_int
from ..families import ARCHS, arch_config

T = TypeVar("T")

VAL_FRACTION = 0.1  # the last 10% of the text is the validation split
# the TrainConfig fields a model config is built from
WIDTHS = ("block_size", "n_layer", "n_head", "n_embd", "dropout", "n_kv_head", "intermediate_size")
MOE_FIELDS = ("n_experts", "top_k", "aux_loss_coef")  # the experts of --arch moe (refused by the other archs)


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
    arch: str = _f("gpt2", "model architecture (one of npgpt.families.ARCHS: gpt2, llama, ...)")
    n_layer: int = _f(2, "transformer blocks (2 taking more steps beat 4 in the same time)")
    n_head: int = _f(4, "attention heads per block (head size n_embd / n_head = 32)")
    n_embd: int = _f(128, "width of the residual stream; a multiple of n_head")
    n_kv_head: int | None = _f(None, "llama: key/value heads, dividing n_head (default: n_head)")
    intermediate_size: int | None = _f(None, "llama: gated MLP width (default: 8 n_embd / 3 up to a multiple of 8)")
    n_experts: int | None = _f(None, "moe: experts per layer, each a gated MLP of intermediate_size (default 8)")
    top_k: int | None = _f(None, "moe: experts each token is routed to, at most n_experts (default 2)")
    aux_loss_coef: float | None = _f(None, "moe: weight of the load-balancing loss added to the loss (default 0.01)")
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
    overwrite: bool = _f(False, "start over in an out_dir that holds a trained run: its ckpt.npz and best.npz are "
                                "replaced at this run's first save (kept until then), the loss plot and hf/ when "
                                "this run writes them (without this flag such a directory is refused)")
    sample_len: int = _f(500, "tokens generated at the end (0: none)")
    # tokenizer and fine-tuning (npgpt/tokenizers/; docs/tokenizers.md)
    tokenizer: str = _f("char", "char (the text's characters), bpe:VOCAB (a byte-level BPE trained on the training "
                                "split, e.g. bpe:512), or a path to tokenizer files (a directory, tokenizer.json, "
                                "vocab.json or .tiktoken)")
    init_from: str | None = _f(None, "fine-tune a Hugging Face directory of any supported family (config.json, "
                                     "model.safetensors, tokenizer files): its shapes and tokenizer replace "
                                     "n_layer/n_head/n_embd and --tokenizer; OUT_DIR/hf gets a directory "
                                     "transformers loads")

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch: expected one of {', '.join(map(repr, ARCHS))}, got {self.arch!r}")
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
        for name in ("n_kv_head", "intermediate_size", "n_experts", "top_k"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum=1)
        if self.aux_loss_coef is not None:
            _check_float("aux_loss_coef", self.aux_loss_coef, low=0.0)
        given = next((k for k in MOE_FIELDS if getattr(self, k) is not None), None)
        if given is not None and self.arch != "moe":
            raise ValueError(f"{given}: only --arch moe has experts (got --arch {self.arch})")
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
        if self.init_from is not None and self.arch != _field_default("arch"):
            raise ValueError(f"arch: --init-from takes the directory's own architecture; leave --arch out (got "
                             f"{self.arch!r})")
        if self.init_from is not None and self.tokenizer != "char":
            raise ValueError("tokenizer: --init-from uses the directory's own tokenizer; leave --tokenizer out")
        if not isinstance(self.resume, bool):
            raise ValueError(f"resume: expected True or False, got {self.resume!r}")
        if not isinstance(self.overwrite, bool):
            raise ValueError(f"overwrite: expected True or False, got {self.overwrite!r}")
        if self.overwrite and self.resume:
            raise ValueError("overwrite: cannot be combined with resume (--resume continues the run, --overwrite "
                             "replaces it)")
        if self.init_from is None:  # the family's own checks of the widths (vocab_size: any valid one)
            arch_config(self.arch, 1, self.widths())

    @property
    def decay_iters(self) -> int:
        """lr_decay_iters, with None resolved to max_iters."""
        return self.max_iters if self.lr_decay_iters is None else self.lr_decay_iters

    @property
    def final_lr(self) -> float:
        """min_lr, with None resolved to lr / 10."""
        return self.lr / 10.0 if self.min_lr is None else self.min_lr

    def widths(self) -> dict[str, Any]:
        """The fields a model config is built from (families.arch_config): sizes and dropout."""
        return {k: getattr(self, k) for k in WIDTHS + (MOE_FIELDS if self.arch == "moe" else ())}

    def model_config(self, vocab_size: int) -> Any:
        """The model config this run trains from scratch, for a vocabulary of vocab_size ids."""
        return arch_config(self.arch, vocab_size, self.widths())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# One line per TrainConfig field, read from the fields' metadata (kept for callers of the old dict).
FIELD_HELP: dict[str, str] = {f.name: f.metadata["help"] for f in fields(TrainConfig)}


# Fields that may differ between a checkpoint and the run resuming from it: they do not change the numbers
# of the steps already taken (max_iters extends or shortens what is left; see _numbers).
RESUME_FREE_FIELDS = frozenset({"out_dir", "resume", "overwrite", "sample_len", "log_interval", "max_iters"})


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
