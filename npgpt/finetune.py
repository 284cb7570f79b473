"""Fine-tuning a Hugging Face GPT-2 directory on your text, and writing one transformers loads back.

    model, tok = load_gpt2_dir("path/to/gpt2")          # config.json + model.safetensors + tokenizer files
    result = finetune("path/to/gpt2", text, "out/ft", max_iters=200)
    save_gpt2_dir(model, tok, "out/dir")                 # GPT2LMHeadModel / AutoTokenizer.from_pretrained read it

The text is encoded with the directory's own tokenizer (vocab.json + merges.txt or tokenizer.json), split
90/10, and trained with AdamW (linear warmup, then constant lr, gradient clipping) on random windows of
block_size tokens.  Guide: docs/tokenizers.md (section "Fine-tuning GPT-2")
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .data import BatchSampler, split
from .model import GPT
from .optim import AdamW, clip_grad_norm
from .pretrained import from_pretrained, save_pretrained
from .tokenizers import BPETokenizer, encode_text, has_tokenizer_files, load_tokenizer, save_tokenizer
from .tokenizers.files import MERGES_NAME, TOKENIZER_JSON, VOCAB_NAME
from ._checks import is_py_int


def load_gpt2_dir(path: str | os.PathLike[str], dtype: npt.DTypeLike = np.float32) -> tuple[GPT, BPETokenizer]:
    """The model (npgpt.pretrained.from_pretrained) and the tokenizer of a Hugging Face GPT-2 directory.

    A directory without tokenizer files, a config that is not GPT-2's architecture, or a tokenizer with more
    ids than the model's vocabulary: a one-line ValueError.
    """
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{p}: no such file or directory (expected a Hugging Face GPT-2 directory)")
    if not p.is_dir():
        raise ValueError(f"{p}: not a directory (expected a Hugging Face GPT-2 directory)")
    if not has_tokenizer_files(p):
        raise ValueError(f"{p}: no tokenizer files (expected {TOKENIZER_JSON}, or {VOCAB_NAME} + {MERGES_NAME}, "
                         f"beside config.json)")
    model = from_pretrained(p, dtype=dtype)
    tok = load_tokenizer(p)
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f"{p}: the tokenizer has {tok.vocab_size} ids but the model's vocabulary is "
                         f"{model.config.vocab_size}")
    return model, tok


def save_gpt2_dir(model: GPT, tok: BPETokenizer, path: str | os.PathLike[str]) -> None:
    """config.json + model.safetensors (save_pretrained) and vocab.json + merges.txt + tokenizer_config.json."""
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f"tok: {tok.vocab_size} ids do not fit the model's vocabulary of {model.config.vocab_size}")
    save_pretrained(model, path)
    save_tokenizer(tok, path, model_max_length=model.config.block_size)


class FinetuneResult(NamedTuple):
    model: GPT
    tokenizer: BPETokenizer
    val_loss_before: float
    val_loss_after: float
    train_loss_first: float  # loss of the first step's batch
    train_loss_last: float  # loss of the last step's batch
    tokens: int  # tokens in the text
    seconds: float
    out_dir: str


def finetune(init_dir: str | os.PathLike[str], text: str, out_dir: str | os.PathLike[str], *,
             max_iters: int = 100, lr: float = 1e-4, warmup_iters: int = 10, batch_size: int = 4,
             block_size: int | None = None, weight_decay: float = 0.0, grad_clip: float = 1.0,
             eval_iters: int = 10, seed: int = 1337, log: Callable[[str], Any] | None = print) -> FinetuneResult:
    """Train the GPT-2 in init_dir on text with its own tokenizer and write the result to out_dir.

    block_size defaults to min(n_positions, 128).  The validation loss (mean over eval_iters random windows of
    the last 10%, the same windows before and after) is reported before and after.  Nothing is written to
    out_dir until training has finished.
    """
    model, tok = load_gpt2_dir(init_dir)
    if not isinstance(text, str) or not text:
        raise ValueError("text: expected a non-empty str")
    T = min(model.config.block_size, 128) if block_size is None else block_size
    if not is_py_int(T) or not 1 <= T <= model.config.block_size:
        raise ValueError(f"block_size: expected an integer in [1, n_positions={model.config.block_size}], got {T!r}")
    for name, v in (("max_iters", max_iters), ("batch_size", batch_size), ("eval_iters", eval_iters)):
        if not is_py_int(v) or v < 1:
            raise ValueError(f"{name}: expected a positive integer, got {v!r}")
    t0 = time.perf_counter()
    ids = encode_text(tok, text)  # (N,) "<|endoftext|>" in the text is GPT-2's document separator
    train_ids, val_ids = split(ids, 0.1)
    for name, part in (("training split (the first 90%)", train_ids), ("validation split (the last 10%)", val_ids)):
        if len(part) < T + 1:
            raise ValueError(f"text too short: the {name} has {len(part)} tokens, but block_size={T} needs at "
                             f"least {T + 1}")
    seeds = np.random.SeedSequence(seed).spawn(2)
    sampler = BatchSampler(train_ids, T, batch_size, seeds[0], "train")
    val_batches = [BatchSampler(val_ids, T, batch_size, seeds[1], "val").next() for _ in range(eval_iters)]

    def val_loss() -> float:
        model.eval()
        losses = [float(model.forward(x, y)[1]) for x, y in val_batches]
        return sum(losses) / len(losses)

    before = val_loss()
    if log:
        log(f"fine-tuning {init_dir}: {model.num_params():,} parameters, {len(ids):,} tokens "
            f"(train {len(train_ids):,} / val {len(val_ids):,}), {max_iters} steps of {batch_size}x{T}; "
            f"val loss before {before:.4f}")
    opt = AdamW(model.params, lr=lr, betas=(0.9, 0.95), weight_decay=weight_decay)
    first = last = math.nan
    for it in range(max_iters):
        model.train()
        opt.lr = lr * min(1.0, (it + 1) / max(warmup_iters, 1))
        x, y = sampler.next()
        _, loss = model.forward(x, y)
        loss_f = float(loss)
        if not math.isfinite(loss_f):
            raise ValueError(f"training diverged at step {it}: loss {loss_f}; try a smaller lr (now {lr})")
        first = loss_f if it == 0 else first
        last = loss_f
        grads = model.backward()
        if grad_clip > 0:
            clip_grad_norm(grads, grad_clip)
        opt.step(grads)
        if log and (it % max(1, max_iters // 10) == 0 or it == max_iters - 1):
            log(f"step {it + 1}/{max_iters}: loss {loss_f:.4f}")
    after = val_loss()
    save_gpt2_dir(model, tok, out_dir)
    seconds = time.perf_counter() - t0
    if log:
        log(f"val loss {before:.4f} -> {after:.4f} in {seconds:.1f} s; wrote {out_dir}")
    return FinetuneResult(model, tok, before, after, first, last, len(ids), seconds, os.fspath(out_dir))
