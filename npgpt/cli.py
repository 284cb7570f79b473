"""The `npgpt` command (also `python -m npgpt`): train, sample, eval, oracle.

    npgpt train [TEXT_FILE] [--n-layer 4 ... one flag per TrainConfig field]   # see npgpt train --help
    npgpt sample [--ckpt out/ckpt.npz] [--prompt "ROMEO:"] [--num-samples 3] ...
    npgpt eval CHECKPOINT_OR_DIR TEXT_FILE [--stride N]                          # perplexity, bits per byte
    npgpt oracle dump|check ...                                                  # npgpt.oracle's own CLI

Every bad input ends in one line "error: ..." on stderr and exit status 2 (1 only for a diverged run),
never a traceback; an interrupted run exits with 128 + the signal (130 for Ctrl-C, 143 for SIGTERM).

Adding a subcommand: write `_add_NAME(parser)` (its arguments) and `_run_NAME(args) -> exit status`, and add
one line to COMMANDS.  Guide: docs/training.md
"""

from __future__ import annotations

import argparse
import codecs
import dataclasses
import errno
import math
import os
import sys
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, "error: ... (see PROG --help)", exit status 2 (every npgpt
    command's, the oracle's included), instead of argparse's usage block followed by the message."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


class Command(NamedTuple):
    help: str
    add: Callable[[argparse.ArgumentParser], None] | None  # adds the arguments; None: passes argv through
    run: Callable[[Any], int]  # parsed namespace (or the raw argv list for a pass-through) -> exit status


# ------------------------------------------------------------------------------------------------ train

def _add_train(p: argparse.ArgumentParser) -> None:
    """TEXT_FILE and one --flag per TrainConfig field, its type and help from the field itself.  Flags not
    given are absent from the namespace (default SUPPRESS), so resume can tell them from defaults."""
    from .train import MODEL_BUILDERS, TrainConfig

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
            p.add_argument(flag, choices=list(MODEL_BUILDERS), default=argparse.SUPPRESS, help=help_text)
        else:
            metavar = {"init_from": "DIR", "tokenizer": "SPEC"}.get(
                f.name, "PATH" if f.name.endswith("dir") else kind.__name__.upper())
            p.add_argument(flag, type=kind, default=argparse.SUPPRESS, metavar=metavar, help=help_text)
    p.epilog = ("With --resume, flags not given take their values from the checkpoint; flags given must agree "
                "with it (except --out-dir, --sample-len, --log-interval, and --max-iters, which extends a run). "
                "Writes OUT_DIR/ckpt.npz (latest), OUT_DIR/best.npz (lowest val loss) and the loss plot. "
                "Docs: docs/training.md")


def _run_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, resume_config, train

    opts = vars(args)
    text_file = opts.pop("text_file", None)
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg_args = {k: v for k, v in opts.items() if k in names}  # flags that are not fields stay in opts
    cfg = resume_config(cfg_args) if cfg_args.get("resume") else TrainConfig(**cfg_args)
    result = train(text_file, cfg)
    return 128 + int(result.stop_signal) if result.stop_signal is not None else 0


# ----------------------------------------------------------------------------------------------- sample

def _add_sample(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", default="out/ckpt.npz",
                   help="checkpoint file (default: out/ckpt.npz, the latest; out/best.npz is the best)")
    p.add_argument("--prompt", default=None,
                   help="text to continue (default: a newline, or the first token when the vocabulary has none)")
    p.add_argument("--num-samples", type=int, default=3, help="independent samples (default: 3)")
    p.add_argument("--max-new-tokens", type=int, default=500, help="tokens to generate each (default: 500)")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="divide the logits by this; 0 picks the most likely token (default: 0.8)")
    p.add_argument("--top-k", type=int, default=None, help="sample only among the k most likely tokens")
    p.add_argument("--top-p", type=float, default=None, help="sample only from the smallest set with this mass")
    p.add_argument("--seed", type=int, default=1337, help="random seed (default: 1337)")
    p.epilog = "Docs: docs/training.md"


def _run_sample(a: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint, stored_tokenizer
    from .data import CharTokenizer
    from .tokenizers import encode_text
    from .train import start_token
    from .generate import generate
    from .llama import LlamaConfig
    from .llama import generate as llama_generate

    _check_sample_args(a)
    ck = load_checkpoint(a.ckpt)
    tok = stored_tokenizer(a.ckpt, ck, sampling=True)  # every id the model can draw must decode
    if a.prompt is None:  # no --prompt: one start token, not printed (as train's closing sample)
        prompt, skip = np.array([start_token(tok)], dtype=np.int64), 1  # (1,)
    else:
        where = tok.unknown(a.prompt) if isinstance(tok, CharTokenizer) else None
        if where:  # a character vocabulary: every unknown character at once
            raise ValueError(f"prompt: characters not in the checkpoint's vocabulary: {where}")
        prompt, skip = np.asarray(encode_text(tok, a.prompt), dtype=np.int64), 0  # (T,) special tokens' text too
    idx = np.tile(prompt, (a.num_samples, 1))  # (N, T): every sample starts from the prompt
    stream = _TextStream(tok) if a.num_samples == 1 else None  # one sample: each token printed as it is drawn
    if stream is not None:
        print("---------- sample 1/1 ----------")
        stream.write(prompt[skip:])
    options = dict(temperature=a.temperature, top_k=a.top_k, top_p=a.top_p, rng=np.random.default_rng(a.seed),
                   on_token=None if stream is None else stream.write)
    if isinstance(ck.config, LlamaConfig):  # a checkpoint of `train --arch llama`
        out = llama_generate(ck.params, ck.config, idx, a.max_new_tokens, **options)  # (N, T + max_new_tokens)
    else:
        out = generate(ck.params, ck.config, idx, a.max_new_tokens, **options)  # (N, T + max_new_tokens)
    if stream is not None:
        stream.close()
    else:
        for i in range(a.num_samples):
            print(f"---------- sample {i + 1}/{a.num_samples} ----------")
            print(tok.decode(out[i, skip:]))
    print("-" * 36)
    return 0


class _TextStream:
    """Prints a sample's text token by token, the same text as tok.decode of all its ids: a byte-level BPE's
    tokens go through an incremental UTF-8 decoder, so a character cut between two tokens waits for the rest."""

    def __init__(self, tok: Any) -> None:
        self.tok = tok
        self.utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace") if hasattr(tok, "decode_bytes") \
            else None

    def write(self, ids: npt.NDArray[np.integer]) -> None:
        """ids (k,): the next tokens of the one sample (a step's (1,) new ids, or the prompt)."""
        text = self.tok.decode(ids) if self.utf8 is None else self.utf8.decode(self.tok.decode_bytes(ids))
        sys.stdout.write(text)
        sys.stdout.flush()

    def close(self) -> None:
        sys.stdout.write(("" if self.utf8 is None else self.utf8.decode(b"", final=True)) + "\n")


def _check_sample_args(a: argparse.Namespace) -> None:
    if a.num_samples < 1:
        raise ValueError(f"--num-samples: expected a positive integer, got {a.num_samples}")
    if a.max_new_tokens < 0:
        raise ValueError(f"--max-new-tokens: expected an integer >= 0, got {a.max_new_tokens}")
    if not (math.isfinite(a.temperature) and a.temperature >= 0):
        raise ValueError(f"--temperature: expected a finite number >= 0, got {a.temperature}")
    if a.top_k is not None and a.top_k < 1:
        raise ValueError(f"--top-k: expected a positive integer, got {a.top_k}")
    if a.top_p is not None and not 0.0 < a.top_p <= 1.0:
        raise ValueError(f"--top-p: expected a number in (0, 1], got {a.top_p}")
    if a.prompt is not None and not a.prompt:
        raise ValueError("--prompt: expected at least one character")
    if a.seed < 0:
        raise ValueError(f"--seed: expected an integer >= 0, got {a.seed}")


# ------------------------------------------------------------------------------------------------- eval

def _add_eval(p: argparse.ArgumentParser) -> None:
    from .evaluate import add_eval_arguments

    add_eval_arguments(p)


def _run_eval(a: argparse.Namespace) -> int:
    from .evaluate import run_eval

    return run_eval(a)


# ----------------------------------------------------------------------------------------------- oracle

def _run_oracle(argv: list[str]) -> int:
    """npgpt.oracle's own command line (its loader refuses training checkpoints given to `check`)."""
    from .oracle.__main__ import main as oracle_main

    return int(oracle_main(argv, prog="npgpt oracle") or 0)


# ---------------------------------------------------------------------------------------------- the table

COMMANDS: dict[str, Command] = {
    "train": Command("train a GPT on a text file (default: the bundled Tiny Shakespeare)", _add_train, _run_train),
    "sample": Command("generate text from a training checkpoint", _add_sample, _run_sample),
    "eval": Command("mean loss, perplexity and bits per byte of a text, by strided sliding windows",
                    _add_eval, _run_eval),
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
    except KeyboardInterrupt:  # a second Ctrl-C during a step, or Ctrl-C outside the training loop
        training = bool(args) and args[0] == "train"
        print("error: interrupted: stopped at once" + ("; the last checkpoint written is kept" if training else ""),
              file=sys.stderr)
        return 130
    except Exception as e:
        return _fail(e)


def _fail(e: BaseException) -> int:
    """One line on stderr for every error a user can cause; the exit status."""
    from .outdir import describe_os_error
    from .train import TrainingDiverged

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
