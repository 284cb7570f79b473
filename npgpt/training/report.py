"""The end of a run: save an interrupted one, draw the loss curve, write the Hugging Face directory (_write_last,
under the out dir's lock), then sample, print the summary and build the TrainResult (_report).  Guide: docs/training.md
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..runtime.model import Model
from ..families import save_dir
from ..tokenizers import BPETokenizer, TextStream, start_token
from ..tokenizers.protocol import Tokenizer
from .config import TrainConfig
from .outdir import EXPERT_PLOT_NAME, HF_DIR_NAME, PLOT_NAME, describe_os_error
from .progress import _clock
from .resume import _save
from .state import TrainResult, _kept, _Run


def _write_last(run: _Run) -> None:
    """The last writes of a run, while it still holds the out dir's lock and the signal handlers: the
    checkpoint of an interrupted run, the loss plot, and (a finished run with a byte-level BPE) out/hf."""
    cfg, st = run.cfg, run.st
    interrupted = run.stop_signal is not None
    if interrupted and st.it > 0 and st.saved_it != st.it:
        try:
            _save(run, run.ckpt_path)
        except OSError as e:
            run.plot_path = _plot(run)
            raise ValueError(f"{describe_os_error(e)}: the checkpoint was not written; {_kept(run)}") from None
    run.plot_path = _plot(run)
    if not interrupted and isinstance(run.tok, BPETokenizer) and run.tok.vocab_size <= run.model.config.vocab_size:
        lost = run.out.lost(st.it)
        if lost is not None:
            raise ValueError(lost)
        hf_dir = Path(cfg.out_dir) / HF_DIR_NAME  # the final parameters, as a Hugging Face directory
        save_dir(run.model, run.tok, hf_dir)
        run.hf_dir = hf_dir


def _report(run: _Run) -> TrainResult:
    """Generate the sample (streamed when log is print), print the summary, build the result."""
    cfg, st = run.cfg, run.st
    interrupted = run.stop_signal is not None
    prog, sample = run.prog, None
    if interrupted:
        where = (f"checkpoint saved to {run.ckpt_path}; continue with resume (--resume)"
                 if st.saved_it is not None else "nothing to save yet")
        what = "terminated (SIGTERM)" if run.stop_signal == signal.SIGTERM else "interrupted"
        prog.message(f"{what} at iteration {st.it}/{cfg.max_iters}: {where}")
    else:
        if run.hf_dir is not None:
            prog.message(f"transformers directory: {run.hf_dir} (AutoModelForCausalLM / AutoTokenizer.from_pretrained)")
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
        if cfg.sample_len > 0:
            rule = "-" * 72
            header = f"sample ({cfg.sample_len} tokens, temperature 1.0):\n{rule}"
            if prog.log is print:  # streamed: a long sample shows its first characters at once
                prog.message(header)
                stream = TextStream(run.tok)
                sample = _sample(run.model, run.tok, cfg, on_token=stream.write)
                stream.close()
                prog.message(rule)
            else:
                sample = _sample(run.model, run.tok, cfg)
                prog.message(f"{header}\n{sample}\n{rule}")
    final = st.evals[-1] if st.evals else None
    return TrainResult(
        iterations=st.it, final_train_loss=final[1] if final else None, final_val_loss=final[2] if final else None,
        best_val_loss=st.best_val, wall_time=time.perf_counter() - run.t_session,
        step_ms=1e3 * run.step_time / max(1, run.steps_this_session), eval_time=run.eval_time,
        checkpoint_path=run.ckpt_path if st.saved_it is not None else None, plot_path=run.plot_path,
        sample=sample, interrupted=interrupted, step_losses=list(st.step_losses), evals=list(st.evals),
        model=run.model, optimizer=run.opt, tokenizer=run.tok,
        best_path=run.best_path if st.best_saved is not None else None, stop_signal=run.stop_signal)


def _plot(run: _Run) -> Path | None:
    from .plot import plot_expert_load, plot_losses

    st = run.st
    if not st.step_losses and not st.evals:
        return None
    if run.out.lost(st.it) is not None:  # the directory was deleted or taken over: write nothing there
        return None
    try:
        path = plot_losses(Path(run.cfg.out_dir) / PLOT_NAME, st.step_losses, st.evals)
        if st.expert_load:  # a mixture of experts: its load beside the loss curve
            plot_expert_load(Path(run.cfg.out_dir) / EXPERT_PLOT_NAME, st.expert_load)
        return path
    except OSError as e:  # written atomically: a failed write (disk full) keeps the previous picture
        run.prog.message(f"warning: could not draw the loss curve: {describe_os_error(e)} (a previous picture is "
                         f"kept as it was)")
        return None
    except Exception as e:  # the picture is a convenience: never lose a finished run over it
        run.prog.message(f"warning: could not draw the loss curve ({type(e).__name__}: {e})")
        return None


def _sample(model: Model, tok: Tokenizer, cfg: TrainConfig,
            on_token: Callable[[npt.NDArray[np.int64]], object] | None = None) -> str:
    model.eval()
    try:
        out = model.generate(np.array([[start_token(tok)]], dtype=np.int64), cfg.sample_len, temperature=1.0,
                             rng=np.random.default_rng(cfg.seed), on_token=on_token,
                             vocab_limit=tok.vocab_size)  # (1, 1 + sample_len): only the tokenizer's ids
    finally:
        model.train()
    return tok.decode(out[0, 1:])
