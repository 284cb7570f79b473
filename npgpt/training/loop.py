"""The training loop: a model on a text, with evaluation, checkpoints, resume, a loss plot and a sample at the end.

    from npgpt.training import TrainConfig, train
    result = train(None, TrainConfig())              # the bundled Tiny Shakespeare, the default recipe
    result = train("my.txt", TrainConfig(max_iters=500, out_dir="run1"))   # a path (str or PathLike)
    result = train(text="some text ...", cfg=cfg)    # the text itself: always by keyword

Each optimizer step averages the gradients of grad_accum micro-batches (mean-loss semantics: the same as one
batch of grad_accum * batch_size sequences), clips their global norm, sets the warmup + cosine learning rate
and takes an AdamW step.  Every eval_interval steps, and at the end, the mean loss over eval_iters batches of
each split is measured (dropout off) and out_dir/ckpt.npz (the latest state) is written, and out_dir/best.npz
when the validation loss is the lowest so far.  Ctrl-C or SIGTERM finishes the current step, saves and
returns; resume=True continues from out_dir/ckpt.npz and ends with exactly the parameters, optimizer state
and loss history of an uninterrupted run.  A run without resume refuses an out_dir that holds a trained run
(overwrite=True starts over, replacing its files at the first save); the out dir's lock and the signal
handlers last until the last write, and a run whose out dir was deleted or taken over stops at its next
save.  Fine-tuning is the same loop started from a Hugging Face directory (init_from).  A loss that is not
finite or above 2 ln(V) + 1 stops with TrainingDiverged before the bad update, saving nothing.

This file is the loop itself: train() runs setup.py's _setup, then per iteration _evaluate_and_save and _step,
then report.py's _write_last (under the lock and the signal handlers) and _report.  Guide: docs/training.md
"""

from __future__ import annotations

import math
import os
import signal
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from ..runtime.model import Model
from ..optim import clip_grad_norm, cosine_lr
from ..tokenizers.protocol import Tokenizer
from .config import TrainConfig
from .data import BatchSampler
from .outdir import describe_os_error
from .progress import StoppedAtOnce, _StopSignals, moe_text
from .report import _plot, _report, _write_last
from .resume import _save
from .setup import _setup
from .state import TrainingDiverged, TrainResult, _check_loss, _diverged, _kept, _Run


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
    short, not enough memory or disk, out dir locked, unwritable or holding a trained run without resume or
    overwrite, checkpoint unusable or from another config, a failing save, the out dir deleted or taken over
    during the run) raise a one-line ValueError; a diverging loss raises TrainingDiverged.
    """
    cfg = TrainConfig() if cfg is None else cfg
    if not isinstance(cfg, TrainConfig):
        raise ValueError(f"cfg: expected a TrainConfig, got {type(cfg).__name__}")
    run = _setup(path, text, cfg, log, live, tokenizer)
    try:
        # the signal handlers and the out dir's lock last until the last byte is written: a second signal
        # during the interruption save stops at once (its temporary file removed), and no second run takes the
        # directory while the checkpoint, the plot or out/hf are being written
        with _StopSignals() as stop:
            _loop(run, callback, stop)
            _write_last(run)
            if run.stop_signal is None and stop.signum is not None:  # a signal during the last writes
                run.stop_signal = stop.signum
    finally:
        run.out.close()
    return _report(run)


def _loop(run: _Run, callback: Callable[[int, float], Any] | None, stop: _StopSignals) -> None:
    """Evaluate when due, stop when done or asked to, else take a step; the plot is drawn on every way out."""
    cfg, st = run.cfg, run.st
    # overflow in a diverging run is caught by the loss checks, which name the step; the warnings filter also
    # covers worker threads (GPT(threads > 1)), which do not inherit this thread's np.errstate
    with run.prog, np.errstate(over="ignore", invalid="ignore", divide="ignore"), warnings.catch_warnings():
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
                    except StoppedAtOnce:
                        raise
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
    stats = run.model.last_stats  # a mixture of experts' load in the (last micro-batch's) forward, or None
    if stats is not None:
        st.expert_load.append([float(s) for s in stats["expert_share"]])
    dt = time.perf_counter() - t0
    run.step_time += dt
    run.steps_this_session += 1
    run.prog.step(st.it, loss, opt.lr, dt, st.elapsed_before + time.perf_counter() - run.t_session,
                  "" if stats is None else moe_text(stats["aux_loss"], stats["expert_share"]))
    return loss


def _evaluate_and_save(run: _Run) -> None:
    """Measure both splits; write ckpt.npz (and best.npz on a new lowest validation loss) after iteration 0."""
    st = run.st
    t0 = time.perf_counter()
    val_stats: list[dict[str, Any]] = []
    tr, va = evaluate(run.model, run.samplers["eval_train"], run.samplers["eval_val"], run.cfg.eval_iters,
                      val_stats)
    _check_loss(run, "the train loss (eval)", tr, st.it)
    _check_loss(run, "the val loss", va, st.it)
    best = st.best_val is None or va < st.best_val
    st.best_val = va if best else st.best_val
    st.evals.append((st.it, tr, va))
    st.last_eval = st.it
    saved = ""
    if st.it > 0:  # iteration 0 is the fresh initialisation: nothing worth keeping
        # best.npz first, and marked as saved only once it is: a failed save leaves st.best_saved and
        # st.saved_it naming what is really on disk, and ckpt.npz never names a best.npz that was not written
        if st.best_saved is None or va < st.best_saved[1]:
            previous, st.best_saved = st.best_saved, (st.it, va)  # best.npz's own metadata names itself
            try:
                _save(run, run.best_path)
            except BaseException:
                st.best_saved = previous
                raise
            saved = f" and {run.best_path}"
        _save(run, run.ckpt_path)
        saved = f" | saved {run.ckpt_path}{saved}"
    dt = time.perf_counter() - t0
    run.eval_time += dt
    run.prog.evaluated(dt)
    moe = ""
    if val_stats:  # a mixture of experts: its val batches' mean aux loss and expert shares
        auxes = [s["aux_loss"] for s in val_stats if s["aux_loss"] is not None]
        moe = moe_text(float(np.mean(auxes)) if auxes else None,
                       np.mean([s["expert_share"] for s in val_stats], axis=0))
    run.prog.message(f"eval at iter {st.it}: train loss {tr:.4f}, val loss {va:.4f}"
                     f"{' (best)' if best else ''}{moe} | {dt:.1f} s{saved}")


def evaluate(model: Model, train_sampler: BatchSampler, val_sampler: BatchSampler,
             eval_iters: int, val_stats: list[dict[str, Any]] | None = None) -> tuple[float, float]:
    """Mean loss over eval_iters batches from each sampler, with dropout off; the model is left in train
    mode.  Only these samplers' generators advance (not the training sampler's, not the model's).
    val_stats: receives model.last_stats of each val batch (a mixture of experts' load), when not None."""
    model.eval()
    try:
        out = []
        for sampler in (train_sampler, val_sampler):
            losses = []
            for _ in range(eval_iters):
                losses.append(float(model.forward(*sampler.next())[1]))
                if val_stats is not None and sampler is val_sampler and model.last_stats is not None:
                    val_stats.append(model.last_stats)
            out.append(float(np.mean(losses)))
    finally:
        model.train()
    return out[0], out[1]
