#!/usr/bin/env python
"""Train a character-level GPT on a text file (default: the bundled Tiny Shakespeare).

    python examples/train_char_gpt.py                        # the default recipe, about 2000 steps
    python examples/train_char_gpt.py my.txt --max-iters 500 --out-dir run1
    python examples/train_char_gpt.py --resume               # continue out/ckpt.npz after Ctrl-C

One --flag per field of npgpt.train.TrainConfig, with its type and default.  With --resume, flags not given
take their values from the checkpoint; flags given must agree with it.  Bad input gives a one-line
"error: ..." on stderr and exit status 2; a diverging loss exit status 1; Ctrl-C saves and exits with 130.
Guide: docs/training.md
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import types
import typing
from pathlib import Path

try:
    import npgpt  # noqa: F401
except ImportError:  # running from a source checkout without installing: use the repository's package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from npgpt.train import FIELD_HELP, TrainConfig, TrainingDiverged, resume_config, train


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # one line, not usage + message
        self.exit(2, f"error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """A parser with TEXT_FILE and one --flag per TrainConfig field.  Flags not given are absent from the
    parsed namespace (default SUPPRESS), so the caller can tell them from defaults."""
    p = _Parser(description="Train a character-level GPT (pure NumPy) on a UTF-8 text file.",
                epilog="With --resume, flags not given take their values from the checkpoint; flags given must "
                       "agree with it (except --out-dir, --sample-len, --log-interval).  Docs: docs/training.md")
    p.add_argument("text_file", nargs="?", metavar="TEXT_FILE",
                   help="UTF-8 text to train on (default: the bundled Tiny Shakespeare)")
    hints = typing.get_type_hints(TrainConfig)
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        if isinstance(kind, types.UnionType) or typing.get_origin(kind) is typing.Union:  # X | None
            kind = next(a for a in typing.get_args(kind) if a is not type(None))
        help_text = FIELD_HELP[f.name] + ("" if f.default is None else f" (default: {f.default})")
        if kind is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=help_text)
        else:
            metavar = "PATH" if kind is str else kind.__name__.upper()
            p.add_argument(flag, type=kind, default=argparse.SUPPRESS, metavar=metavar, help=help_text)
    return p


def main(argv: list[str] | None = None) -> int:
    args = vars(build_parser().parse_args(argv))
    text_file = args.pop("text_file", None)
    try:
        cfg = resume_config(args) if args.get("resume") else TrainConfig(**args)
        result = train(Path(text_file) if text_file is not None else None, cfg)
    except TrainingDiverged as e:
        return _fail(e, 1)
    except (ValueError, OSError) as e:
        return _fail(e, 2)
    except KeyboardInterrupt:  # a second Ctrl-C during a step, or Ctrl-C outside the training loop
        print("error: interrupted: stopped at once; the last checkpoint written is kept", file=sys.stderr)
        return 130
    return 130 if result.interrupted else 0


def _fail(e: BaseException, code: int) -> int:
    print("error: " + " ".join(str(e).split()), file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
