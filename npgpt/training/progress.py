"""What a run shows and how it stops: the progress line and the Ctrl-C / SIGTERM handling.

_Progress redraws one line on a terminal (or logs one every log_interval steps) and prints messages;
_StopSignals turns the first SIGINT or SIGTERM into "stop at the next step boundary".  Guide: docs/training.md
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from .config import TrainConfig


class StoppedAtOnce(KeyboardInterrupt):
    """A second SIGINT or SIGTERM: stop at once, saving nothing more.  `signum` is the signal (the command
    exits with 128 + signum)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _StopSignals:
    """While active in the main thread, the first SIGINT (Ctrl-C) or SIGTERM only records `signum` (the loop
    stops at the next step boundary, where the state is consistent and can be saved); a second one raises
    StoppedAtOnce (a KeyboardInterrupt) at once, and later ones are ignored while that unwinds, so the
    temporary file of a save it cuts short is always removed.  train() keeps it active until the last write
    (the interruption checkpoint, the plot, out/hf) is done.  Handlers are installed only where the signal has
    its default disposition, and restored on exit."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.stopping = False  # the second signal was raised
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            defaults = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}
            for sig, default in defaults.items():
                if signal.getsignal(sig) is default:
                    self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
        elif not self.stopping:
            self.stopping = True
            raise StoppedAtOnce(signum)

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

    def step(self, it: int, loss: float, lr: float, dt: float, elapsed: float, extra: str = "") -> None:
        """Show step `it`; extra: more of the line (an MoE's aux loss and expert shares, moe_text)."""
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
                f"lr {lr:.2e} | elapsed {_clock(elapsed)} | ETA {_clock(eta)}{extra}")
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


def moe_text(aux_loss: float | None, share: Sequence[float] | None) -> str:
    """' | aux 1.013 | experts 13 12 ... %': a mixture of experts' load-balancing loss and each expert's share of
    the routed tokens in percent (top_k and 100/E each when perfectly balanced); '' for a dense model."""
    if share is None:
        return ""
    aux = "" if aux_loss is None else f" | aux {aux_loss:.3f}"
    return f"{aux} | experts {' '.join(f'{100 * s:.0f}' for s in share)} %"


def _clock(seconds: float) -> str:
    s = int(round(seconds))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
