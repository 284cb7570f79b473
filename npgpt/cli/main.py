"""The `npgpt` command (also `python -m npgpt`): train, sample, eval, oracle.

    npgpt train [TEXT_FILE] [--n-layer 4 ... one flag per TrainConfig field]   # see npgpt train --help
    npgpt sample [--ckpt out/ckpt.npz] [--prompt "ROMEO:"] [--num-samples 3] ...
    npgpt eval CHECKPOINT_OR_DIR TEXT_FILE [--stride N]                          # perplexity, bits per byte
    npgpt oracle dump|check ...                                                  # npgpt.oracle's own CLI

Every bad input ends in one line "error: ..." on stderr and exit status 2 (1 only for a diverged run),
never a traceback; an interrupted run exits with 128 + the signal (130 for Ctrl-C, 143 for SIGTERM).

Adding a subcommand: a module cli/NAME.py with `_add_NAME(parser)` (its arguments) and `_run_NAME(args) -> exit
status`, and one line in COMMANDS.  Guide: docs/training.md
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import sys
import typing
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from .._argparse import OneLineParser
from ..training import TrainingDiverged
from ..training.outdir import describe_os_error
from .eval import add_eval_arguments, run_eval
from .sample import _add_sample, _run_sample
from .train import _add_train, _run_train



class Command(NamedTuple):
    help: str
    add: Callable[[argparse.ArgumentParser], None] | None  # adds the arguments; None: passes argv through
    run: Callable[[Any], int]  # parsed namespace (or the raw argv list for a pass-through) -> exit status


# ----------------------------------------------------------------------------------------------- oracle

def _run_oracle(argv: list[str]) -> int:
    """npgpt.oracle's own command line (its loader refuses training checkpoints given to `check`)."""
    from ..oracle.__main__ import main as oracle_main

    return int(oracle_main(argv, prog="npgpt oracle") or 0)


# ---------------------------------------------------------------------------------------------- the table

COMMANDS: dict[str, Command] = {
    "train": Command("train a model on a text file (default: the bundled Tiny Shakespeare)", _add_train,
                     _run_train),
    "sample": Command("generate text from a training checkpoint or a Hugging Face directory", _add_sample,
                      _run_sample),
    "eval": Command("mean loss, perplexity and bits per byte of a text, by strided sliding windows",
                    add_eval_arguments, run_eval),
    "oracle": Command("write golden files of every layer, or check files against npgpt (see npgpt oracle "
                      "--help)", None, _run_oracle),
}


def build_parser(prog: str = "npgpt") -> argparse.ArgumentParser:
    """The top-level parser with one subparser per COMMANDS entry (pass-through commands get a stub)."""
    p = OneLineParser(prog=prog, description="npgpt: a pure-NumPy GPT with hand-written, checked backward passes.")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True, parser_class=OneLineParser)
    for name, cmd in COMMANDS.items():
        sp = sub.add_parser(name, help=cmd.help, description=cmd.help)
        if cmd.add is not None:
            cmd.add(sp)
    return p


def _subparser(p: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    action = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return typing.cast(argparse.ArgumentParser, action.choices[name])


def main(argv: Sequence[str] | None = None, prog: str = "npgpt") -> int:
    """Run one command; returns the exit status (see the module docstring)."""
    _replace_unencodable_output()
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] in COMMANDS and COMMANDS[args[0]].add is None:
            return COMMANDS[args[0]].run(args[1:])
        parser = build_parser(prog)
        ns, unknown = parser.parse_known_args(args)
        command = ns.__dict__.pop("command")
        if unknown:  # reported by the subcommand, so the hint points at its --help
            _subparser(parser, command).error(f"unrecognized arguments: {' '.join(unknown)}")
        return COMMANDS[command].run(ns)
    except BrokenPipeError:  # `npgpt sample | head`: the reader left; stop quietly, as a shell tool does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not raise again
        return 141
    except KeyboardInterrupt as e:  # a second Ctrl-C or SIGTERM during a step or a save, or Ctrl-C outside it
        training = bool(args) and args[0] == "train"
        print("error: interrupted: stopped at once" + ("; the last checkpoint written is kept" if training else ""),
              file=sys.stderr)
        return 128 + int(getattr(e, "signum", signal.SIGINT))  # a second SIGTERM: 143
    except Exception as e:
        return _fail(e)


def _fail(e: BaseException) -> int:
    """One line on stderr for every error a user can cause; the exit status."""
    if isinstance(e, TrainingDiverged):
        text, code = str(e), 1
    elif isinstance(e, MemoryError):
        text, code = ("out of memory: the configuration does not fit in this machine's memory; use a smaller "
                      "n_embd, n_layer, batch_size or block_size"), 2
    elif isinstance(e, OSError):
        text, code = describe_os_error(e), 2
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            text += "; free some space and try again"
    elif isinstance(e, ValueError):
        text, code = str(e), 2
    else:
        raise e
    print("error: " + " ".join(text.split()), file=sys.stderr)
    return code


def _replace_unencodable_output() -> None:
    """A terminal (or PYTHONIOENCODING) that cannot show a character gets '?' instead of an exception."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="replace")
            except (ValueError, OSError):
                pass


if __name__ == "__main__":
    sys.exit(main(prog=os.path.basename(sys.argv[0])))
