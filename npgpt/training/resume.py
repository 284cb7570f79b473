"""Checkpoints of a run, written and read side by side: the training metadata a save stores (_checkpoint_meta)
and what a resume reads back (_restore), the checks that a resume continues the same run, resume_config.

Guide: docs/training.md ("The checkpoint format", "Resuming")
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from .._version import __version__
from ..families import ARCHS, arch_config
from .checkpoint import Checkpoint, load_checkpoint, peek_metadata, save_checkpoint
from .config import RESUME_FREE_FIELDS, WIDTHS, TrainConfig
from .data import _jsonable
from .outdir import BEST_NAME, CHECKPOINT_NAME, OutDir
from .state import _Run


def _checkpoint_meta(run: _Run) -> dict[str, Any]:
    """The metadata npgpt.training.loop stores beside the arrays (docs/training.md, "The checkpoint format");
    _restore reads exactly these keys back."""
    st, opt = run.st, run.opt
    return {
        "npgpt_version": __version__, "train_config": run.cfg.to_dict(), "iteration": st.it,
        "optimizer": {"name": "AdamW", "lr": opt.lr, "betas": list(opt.betas), "eps": opt.eps,
                      "weight_decay": opt.weight_decay, "t": opt.t},
        "model_rng": _jsonable(run.model.rng.bit_generator.state),
        "samplers": {k: s.get_state() for k, s in run.samplers.items()},
        "tokenizer": run.tok.to_dict(), "data": run.data_info,
        "history": {"train_loss": st.step_losses, "evals": [list(r) for r in st.evals],
                    "expert_load": st.expert_load},
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
        st.expert_load = [[float(v) for v in row] for row in hist.get("expert_load", [])]  # MoE runs only
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


def _save(run: _Run, path: Path) -> None:
    """Write the run's state to path, if the run still holds its out dir (else a one-line ValueError)."""
    lost = run.out.lost(run.st.it)
    if lost is not None:
        raise ValueError(lost)
    save_checkpoint(path, run.model.params, run.opt.m, run.opt.v, run.model.config, _checkpoint_meta(run))
    if path == run.ckpt_path:
        run.st.saved_it = run.st.it


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
    if d.get("init_from") is None and d.get("arch") in ARCHS:  # widths left to the family's defaults: resolved
        try:
            model = arch_config(d["arch"], 1, {k: d.get(k) for k in WIDTHS})
        except (ValueError, TypeError):
            model = None
        for k in ("n_kv_head", "intermediate_size"):
            if out.get(k) is None and model is not None:
                out[k] = getattr(model, k, None)
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


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


def _load_for_resume(path: Path, cfg: TrainConfig, data_info: Mapping[str, Any]) -> Checkpoint:
    """The checkpoint to resume from, checked against this run's config and text."""
    busy = OutDir(path.parent).busy()
    if busy is not None:  # before "no checkpoint": a run that has not saved yet holds the directory
        raise ValueError(busy)
    if not path.exists():
        raise ValueError(_no_checkpoint(path))
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


def _no_checkpoint(path: Path) -> str:
    """The error for --resume where path (OUT/ckpt.npz) is missing: a best.npz beside it is offered."""
    best = path.parent / BEST_NAME
    if best.is_file():
        meta = peek_metadata(best)
        it = f" (iteration {meta['iteration']})" if meta is not None and "iteration" in meta else ""
        return f"{path}: no checkpoint to resume from, but {best} is there{it}: copy it to {path} to continue " \
               f"the run from it"
    return f"{path}: no checkpoint to resume from (train without resume first)"


def resume_config(overrides: Mapping[str, Any] | None = None) -> TrainConfig:
    """The configuration to resume the run in out_dir with: the checkpoint's own train config, with the
    `overrides` (field name -> value; "out_dir" picks the directory, default "out") put on top, and
    resume=True.  Extending a run (a larger max_iters) keeps its schedule: lr_decay_iters stays where the
    original run put it, so the added steps run at min_lr.  train() rejects overrides that would change the
    numbers of the steps already taken.  A missing or unreadable checkpoint is a ValueError."""
    overrides = dict(overrides or {})
    if overrides.get("overwrite"):  # before looking for the checkpoint: the two ask for opposite things
        raise ValueError("overwrite: cannot be combined with resume (--resume continues the run, --overwrite "
                         "replaces it)")
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
        raise ValueError(_no_checkpoint(path))
    stored = _stored_train_config(path, load_checkpoint(path).meta)
    base = {k: v for k, v in stored.items() if k in known and k not in RESUME_FREE_FIELDS - {"max_iters"}}
    if "max_iters" in overrides and "lr_decay_iters" not in overrides and stored.get("lr_decay_iters") is None:
        base["lr_decay_iters"] = stored.get("max_iters")  # the original schedule, not one over the new length
    try:
        return TrainConfig(**{**base, **overrides, "out_dir": str(out_dir), "resume": True})
    except TypeError as e:
        raise ValueError(f"{path}: invalid train_config in the checkpoint ({e})") from None
