"""`npgpt eval CHECKPOINT_OR_DIR TEXT_FILE`: mean loss, perplexity and bits per byte (npgpt.training.evaluate).

Guide: docs/evaluate.md
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ..training.data import load_text
from ..training.evaluate import evaluate_text
from .load import load_model_and_tokenizer



def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    """`npgpt eval CHECKPOINT_OR_DIR TEXT_FILE [--stride N] [--batch-size B]`."""
    p.add_argument("model", metavar="CHECKPOINT_OR_DIR",
                   help="a training checkpoint (out/best.npz) or a Hugging Face GPT-2 directory")
    p.add_argument("text_file", metavar="TEXT_FILE", help="UTF-8 text to score")
    p.add_argument("--stride", type=int, default=None,
                   help="tokens each window moves and scores; each scored token has at least block_size - "
                        "stride + 1 tokens of context (default: block_size // 2)")
    p.add_argument("--batch-size", type=int, default=4, help="windows per forward pass (default: 4)")
    p.epilog = "Prints mean loss (nats/token), perplexity and bits per byte. Docs: docs/evaluate.md"


def run_eval(a: argparse.Namespace, out: Any = None, err: Any = None) -> int:
    """Run `npgpt eval` on parsed arguments; bad input raises a one-line ValueError (the CLI prints it)."""
    out = sys.stdout if out is None else out
    err = sys.stderr if err is None else err
    model, tok = load_model_and_tokenizer(a.model)
    text = load_text(a.text_file)
    T = model.config.block_size
    stride = max(T // 2, 1) if a.stride is None else a.stride
    if not 1 <= stride <= T:
        raise ValueError(f"--stride: expected an integer in [1, block_size={T}], got {stride}")
    if a.batch_size < 1:
        raise ValueError(f"--batch-size: expected a positive integer, got {a.batch_size}")
    live = hasattr(err, "isatty") and err.isatty()
    t0 = time.perf_counter()
    shown = [-1]

    def progress(done: int, total: int) -> None:
        pct = 100 * done // total
        if live:
            err.write(f"\reval: {done:,}/{total:,} tokens ({pct}%)")
            err.flush()
        elif pct // 10 > shown[0] or done == total:  # a line every 10% when not a terminal
            shown[0] = pct // 10
            err.write(f"eval: {done:,}/{total:,} tokens ({pct}%), {time.perf_counter() - t0:.1f} s\n")
            err.flush()

    bos = getattr(tok, "eot_token", None)
    try:
        r = evaluate_text(model, tok, text, stride, bos=bos, batch_size=a.batch_size, progress=progress)
    except ValueError as e:  # "text: ..." is about the file the user named
        if not str(e).startswith("text: "):
            raise
        raise ValueError(f"{a.text_file}: {str(e)[len('text: '):]}") from None
    if live:
        err.write("\n")
    out.write(f"{a.model} on {a.text_file}: {r.n_tokens:,} tokens scored ({r.n_bytes:,} bytes), block_size {T}, "
              f"stride {r.stride}, {r.n_windows:,} windows, {time.perf_counter() - t0:.1f} s\n")
    out.write(f"mean loss     {r.mean_loss:.4f} nats/token\n")
    out.write(f"perplexity    {r.perplexity:.4f}\n")
    out.write(f"bits per byte {r.bits_per_byte:.4f}\n")
    return 0
