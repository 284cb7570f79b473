"""Everything before the first step: read the text, build or restore the tokenizer, check sizes, memory and
disk, take the out dir, build the model and optimizer, restore a checkpoint when resuming.

Nothing large is allocated before the checks pass; nothing is written before the out dir is locked.
Guide: docs/training.md
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..families import build_model, family_of, load_dir, param_count
from ..optim import AdamW
from ..runtime.parallel import blas_kernel_note
from ..tokenizers import encode_text, tokenizer_from_spec
from ..tokenizers.spec import check_learnable
from ..tokenizers.protocol import Tokenizer, tokenizer_from_dict
from .config import VAL_FRACTION, TrainConfig, _field_default
from .data import BatchSampler, bundled_corpus_path, load_text, split
from .footprint import available_bytes, training_bytes
from .checkpoint import peek_metadata
from .outdir import BEST_NAME, CHECKPOINT_NAME, OutDir, format_bytes
from .progress import _Progress
from .resume import _load_for_resume, _restore
from .state import GradAccumulator, _Run, _RunState, divergence_limit


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
    if not cfg.resume:
        _check_fresh(out_dir, cfg, busy=True)  # early, before a tokenizer is trained; again under the lock
    ck = _load_for_resume(ckpt_path, cfg, data_info) if cfg.resume else None
    init = load_dir(cfg.init_from) if cfg.init_from is not None else None  # (model, tokenizer), any family
    if init is not None:
        _check_init(cfg, init[0].config)
    if ck is not None:
        tok = tokenizer_from_dict(ck.meta["tokenizer"])
    elif tokenizer is not None:  # train(..., tokenizer=): the caller's own
        tok = tokenizer
    elif init is not None:
        tok = init[1]
    else:  # bpe:VOCAB learns from (about) the training split only: the first 90% of the characters
        tok = tokenizer_from_spec(cfg.tokenizer, content[:int(len(content) * (1.0 - VAL_FRACTION))], content, log)
    check_learnable(tok, source)  # a text of one character (all NUL bytes: a binary file?) teaches nothing
    train_ids, val_ids = _split_ids(cfg, encode_text(tok, content))
    del content
    if init is not None:
        icfg = init[0].config
        mcfg = replace(icfg, dropout=cfg.dropout) if hasattr(icfg, "dropout") else icfg  # type: ignore[type-var]
    else:
        mcfg = cfg.model_config(tok.vocab_size)
    n_params = param_count(mcfg)
    _check_memory(cfg, mcfg, n_params)
    out = OutDir(out_dir).open(min_free_bytes=2 * (12 * n_params + (1 << 20)))  # ckpt.npz and best.npz
    try:
        replaced = [] if cfg.resume else _check_fresh(out_dir, cfg)
        seeds = np.random.SeedSequence(cfg.seed).spawn(3)
        samplers = {
            "train": BatchSampler(train_ids, cfg.block_size, cfg.batch_size, seeds[0], "train"),
            "eval_train": BatchSampler(train_ids, cfg.block_size, cfg.batch_size, seeds[1], "eval_train"),
            "eval_val": BatchSampler(val_ids, cfg.block_size, cfg.batch_size, seeds[2], "eval_val"),
        }
        if init is not None:
            model = init[0].train()
            model.config = mcfg
        else:
            model = build_model(mcfg, seed=cfg.seed, dtype=np.float32)
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
    _announce(run, init is not None, source, len(train_ids), len(val_ids), ck is not None, replaced)
    return run


def _check_fresh(out_dir: Path, cfg: TrainConfig, busy: bool = False) -> list[Path]:
    """A run without resume never replaces a trained run's files unasked: a directory holding ckpt.npz or
    best.npz is refused (one line naming them, offering resume, another out dir or overwrite); with overwrite
    they are returned, and left in place until this run's first save replaces them (a run that fails before
    it leaves them as they were).  busy: first refuse a directory another run holds."""
    if busy:
        held = OutDir(out_dir).busy()
        if held is not None:
            raise ValueError(held)
    found = [out_dir / name for name in (CHECKPOINT_NAME, BEST_NAME) if (out_dir / name).is_file()]
    if not found or cfg.overwrite:
        return found
    parts = []
    for p in found:
        meta = peek_metadata(p)
        parts.append(f"{p.name} at iteration {meta['iteration']}" if meta is not None and "iteration" in meta
                     else f"an unreadable {p.name}")
    them = "them" if len(found) > 1 else "it"
    if found[0].name == BEST_NAME:  # best.npz alone: resume needs it as ckpt.npz
        raise ValueError(f"{out_dir}: holds a trained run ({parts[0]}, no {CHECKPOINT_NAME}); to continue it from "
                         f"{BEST_NAME}, copy it to {out_dir / CHECKPOINT_NAME} and use --resume; or train into a "
                         f"new --out-dir, or start over with --overwrite (which replaces {them})")
    raise ValueError(f"{out_dir}: holds a trained run ({', '.join(parts)}); continue it with --resume, train into "
                     f"a new --out-dir, or start over with --overwrite (which replaces {them})")


def _check_init(cfg: TrainConfig, icfg: Any) -> None:
    """--init-from: the directory fixes the shapes (a shape flag set away from its default must match it), and
    the run's block_size (what batches use) must fit its context."""
    for name in ("n_layer", "n_head", "n_embd"):
        given, default, theirs = getattr(cfg, name), _field_default(name), getattr(icfg, name)
        if given != default and given != theirs:
            raise ValueError(f"{name}: {cfg.init_from} has {name}={theirs}, and --init-from takes the "
                             f"directory's shapes; leave --{name.replace('_', '-')} out (got {given})")
    if cfg.block_size > icfg.block_size:
        raise ValueError(f"block_size: {cfg.block_size} is larger than {cfg.init_from}'s context length "
                         f"{icfg.block_size}")


def _split_ids(cfg: TrainConfig, ids: Any) -> tuple[Any, Any]:
    """The training and validation ids (first 90% / last 10%), each long enough for one block_size window."""
    train_ids, val_ids = split(ids, VAL_FRACTION)
    for name, part in (("training split (the first 90%)", train_ids), ("validation split (the last 10%)", val_ids)):
        if len(part) < cfg.block_size + 1:
            raise ValueError(f"text too short: the {name} has {len(part)} tokens, but block_size="
                             f"{cfg.block_size} needs at least {cfg.block_size + 1}; use a longer text or a "
                             f"smaller block_size")
    return train_ids, val_ids


def _announce(run: _Run, from_dir: bool, source: str, n_train: int, n_val: int, resumed: bool,
              replaced: list[Path]) -> None:
    """The lines a run starts with: notes on the out dir, the data, the model, the BLAS kernels, resume."""
    cfg, out, prog, tok, mc = run.cfg, run.out, run.prog, run.tok, run.model.config
    if replaced:
        prog.message(f"note: --overwrite: this run replaces {' and '.join(map(str, replaced))} of the run that was "
                     f"there at its first save")
    if out.took_over is not None:
        prog.message(f"note: took over the lock of a run that is no longer running (PID {out.took_over})")
    if out.removed:
        prog.message(f"note: removed {len(out.removed)} temporary file(s) left by an interrupted save in {cfg.out_dir}")
    prog.message(f"data: {source}: {run.data_info['n_chars']:,} characters, vocabulary {tok.vocab_size}; "
                 f"train {n_train:,} / val {n_val:,} tokens")
    arch = f"{family_of(mc).name} from {cfg.init_from}" if from_dir else cfg.arch
    prog.message(f"model: {arch} n_layer={mc.n_layer} n_head={mc.n_head} n_embd={mc.n_embd} "
                 f"block_size={cfg.block_size} ({run.model.num_params():,} parameters); {cfg.max_iters} steps of "
                 f"{cfg.grad_accum * cfg.batch_size * cfg.block_size:,} tokens")
    note = blas_kernel_note()
    if note is not None:
        prog.message(note)
    if resumed:
        prog.message(f"resuming from {run.ckpt_path} at iteration {run.st.it}")


def _check_memory(cfg: TrainConfig, mcfg: Any, n_params: int) -> None:
    """Refuse a run whose estimated peak (footprint.py, from the model config's own widths) exceeds what is free."""
    need = training_bytes(n_params, mcfg.n_layer, mcfg.n_head, mcfg.n_embd, cfg.block_size, mcfg.vocab_size,
                          cfg.batch_size, cfg.grad_accum)
    have = available_bytes()
    if have is not None and need > have:
        raise ValueError(f"not enough memory: this configuration needs about {format_bytes(need)} (estimate for "
                         f"{n_params:,} parameters and batch_size={cfg.batch_size} x block_size={cfg.block_size}),"
                         f" but {format_bytes(have)} is available; use a smaller n_embd, n_layer, batch_size or "
                         f"block_size")


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
