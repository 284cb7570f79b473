"""`npgpt train [TEXT_FILE] [--flag ...]`: one flag per TrainConfig field, then npgpt.training.train.

Guide: docs/training.md
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing

from ..families import ARCHS
from ..training import TrainConfig, resume_config, train



def _add_train(p: argparse.ArgumentParser) -> None:
    """TEXT_FILE and one --flag per TrainConfig field, its type and help from the field itself.  Flags not
    given are absent from the namespace (default SUPPRESS), so resume can tell them from defaults."""

    p.add_argument("text_file", nargs="?", metavar="TEXT_FILE",
                   help="UTF-8 text to train on (default: the bundled Tiny Shakespeare)")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:  # X | None
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        help_text = f.metadata["help"] + ("" if f.default is None else f" (default: {f.default})")
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        elif f.name == "arch":
            p.add_argument(flag, choices=list(ARCHS), default=argparse.SUPPRESS, help=help_text)
        else:
            metavar = {"init_from": "DIR", "tokenizer": "SPEC"}.get(
                f.name, "PATH" if f.name.endswith("dir") else kind.__name__.upper())
            p.add_argument(flag, type=kind, default=argparse.SUPPRESS, metavar=metavar, help=help_text)
    p.epilog = ("With --resume, flags not given take their values from the checkpoint; flags given must agree "
                "with it (except --out-dir, --sample-len, --log-interval, and --max-iters, which extends a run). "
                "Writes OUT_DIR/ckpt.npz (latest), OUT_DIR/best.npz (lowest val loss) and the loss plot; an "
                "OUT_DIR that already holds them is refused without --resume or --overwrite. "
                "Docs: docs/training.md")


def _run_train(args: argparse.Namespace) -> int:
    opts = vars(args)
    text_file = opts.pop("text_file", None)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg_args = {k: v for k, v in opts.items() if k in names}  # flags that are not fields stay in opts
    cfg = resume_config(cfg_args) if cfg_args.get("resume") else TrainConfig(**cfg_args)
    result = train(text_file, cfg)
    return 128 + int(result.stop_signal) if result.stop_signal is not None else 0
