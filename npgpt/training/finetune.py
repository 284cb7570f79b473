"""Fine-tuning a Hugging Face directory on your text: train() started from the directory's model and tokenizer.

    result = finetune("path/to/model", text, "out/ft", max_iters=200)   # any family npgpt.families reads
    result.out_dir                                                        # out/ft/hf: transformers loads it

The same loop as `npgpt train --init-from DIR` (loop.py), with a fine-tuning recipe: linear warmup then a
constant lr, AdamW betas (0.9, 0.95), no weight decay, one evaluation before and one after.  The text is
encoded with the directory's own tokenizer and split 90/10.  Guide: docs/tokenizers.md ("Fine-tuning")
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

from .._checks import is_py_int
from ..families import load_dir
from ..runtime.model import Model
from ..tokenizers import encode_text
from .config import TrainConfig
from .loop import train
from .outdir import HF_DIR_NAME


class FinetuneResult(NamedTuple):
    model: Model
    tokenizer: Any
    val_loss_before: float
    val_loss_after: float
    train_loss_first: float  # loss of the first step's batch
    train_loss_last: float  # loss of the last step's batch
    tokens: int  # tokens in the text
    seconds: float
    out_dir: str  # the Hugging Face directory written (out_dir/hf)


def finetune(init_dir: str | os.PathLike[str], text: str, out_dir: str | os.PathLike[str], *,
             max_iters: int = 100, lr: float = 1e-4, warmup_iters: int = 10, batch_size: int = 4,
             block_size: int | None = None, weight_decay: float = 0.0, grad_clip: float = 1.0,
             eval_iters: int = 10, seed: int = 1337, log: Callable[[str], Any] | None = print) -> FinetuneResult:
    """train() from init_dir on text with its own tokenizer; out_dir gets the run's checkpoints and out_dir/hf.

    block_size defaults to min(the model's context, 128).  The validation loss (eval_iters random windows of
    the last 10%) is measured before the first step and after the last.
    """
    if not isinstance(text, str) or not text:
        raise ValueError("text: expected a non-empty str")
    if block_size is None:
        model, _ = load_dir(init_dir)  # only for its context length; train() loads it again
        block_size = min(model.config.block_size, 128)
        del model
    if not is_py_int(block_size):
        raise ValueError(f"block_size: expected an integer, got {block_size!r}")
    cfg = TrainConfig(init_from=os.fspath(init_dir), out_dir=os.fspath(out_dir), max_iters=max_iters, lr=lr,
                      min_lr=lr, warmup_iters=warmup_iters, batch_size=batch_size, block_size=block_size,
                      weight_decay=weight_decay, grad_clip=grad_clip, beta2=0.95, eval_iters=eval_iters,
                      eval_interval=max_iters, seed=seed, sample_len=0)
    r = train(text=text, cfg=cfg, log=log if log is not None else (lambda line: None), live=False)
    assert r.model is not None and r.tokenizer is not None and len(r.evals) >= 2
    return FinetuneResult(r.model, r.tokenizer, r.evals[0][2], r.evals[-1][2], r.step_losses[0],
                          r.step_losses[-1], len(encode_text(r.tokenizer, text)), r.wall_time,
                          str(Path(out_dir) / HF_DIR_NAME))
