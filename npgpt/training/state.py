"""A training session's state: what _setup builds and the loop, the saves and the report share.

_RunState is what a checkpoint restores; _Run is one session (config, data, model, optimizer, out dir,
progress); TrainResult is what train() returns.  Plus the divergence checks every part runs.
Guide: docs/training.md
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ..runtime.model import Model
from ..optim import AdamW
from ..tokenizers.protocol import Tokenizer
from .config import TrainConfig
from .data import BatchSampler
from .outdir import OutDir
from .progress import _Progress

Array = npt.NDArray[np.floating]


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
    model: Model | None = field(default=None, repr=False)
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

    def __init__(self, model: Model) -> None:
        self.grads = model.layout.zeros(model.dtype)  # the model's own layout: AdamW's fast path takes it
        self.flat = self.grads.buffer  # (P,)

    def run(self, model: Model, batches: Sequence[tuple[np.ndarray, np.ndarray]]) -> tuple[float, dict[str, Array]]:
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
    expert_load: list[list[float]] = field(default_factory=list)  # --arch moe: per step, each expert's share


@dataclass
class _Run:
    """One training session: what _setup builds and the loop pieces share."""

    cfg: TrainConfig
    tok: Tokenizer
    data_info: dict[str, Any]
    samplers: dict[str, BatchSampler]
    model: Model
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
    hf_dir: Path | None = None  # out_dir/hf, once written


def _kept(run: _Run) -> str:
    """What a stop leaves on disk, for the error message."""
    st = run.st
    if st.saved_it is None and st.best_saved is not None:  # best.npz written, then the first ckpt.npz failed
        return (f"the best ({run.best_path}, iteration {st.best_saved[0]}, val loss {st.best_saved[1]:.4f}) is "
                f"untouched; {run.ckpt_path} is left as it was")
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
