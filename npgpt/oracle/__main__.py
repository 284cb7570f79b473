"""Command line of npgpt.oracle.

    python -m npgpt.oracle dump --out DIR [--dtype float64|float32] [--seed N] [--batch B --seq T --channels C
                                          --heads H --vocab V --layers L]
    python -m npgpt.oracle check FILE_OR_DIR [--against FILE_OR_DIR] [--rtol X] [--atol Y]

check exits 0 when every tensor is within tolerance, 1 when one is not, 2 when a file cannot be read.
See docs/oracle.md.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence

from .._argparse import OneLineParser  # argparse errors as one line, as every npgpt command's
from ..training.outdir import describe_os_error
from . import DEFAULT_SHAPES, check_path, dump_cases


def _parser(prog: str) -> argparse.ArgumentParser:
    parser = OneLineParser(prog=prog, description="Write npgpt golden files, or check files against npgpt.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    dump = sub.add_parser("dump", help="write one .npz per registered case (layers, gpt_train, llama_train)")
    dump.add_argument("--out", required=True, help="output directory (created if missing)")
    dump.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    dump.add_argument("--seed", type=int, default=0)
    for name, flag in (("batch", "B"), ("seq", "T"), ("channels", "C"), ("heads", "H"), ("vocab", "V"),
                       ("layers", "L")):
        dump.add_argument(f"--{name}", type=int, default=DEFAULT_SHAPES[name], metavar=flag,
                          help=f"default {DEFAULT_SHAPES[name]}")

    check = sub.add_parser("check", help="recompute stored cases with npgpt, or compare two dumps")
    check.add_argument("path", help="an .npz case file or a directory of them")
    check.add_argument("--against", help="compare with this file/directory (the reference) instead of recomputing")
    check.add_argument("--rtol", type=float, help="relative tolerance for every tensor (default: from the file)")
    check.add_argument("--atol", type=float,
                       help="absolute floor, in units of each tensor's largest |value| (default: from the file)")
    return parser


def main(argv: Sequence[str] | None = None, *, prog: str = "python -m npgpt.oracle") -> int:
    """Run `dump` or `check`; returns the exit status.  prog: the name shown in usage and error lines
    (`npgpt oracle` when run by the npgpt command).  Bad arguments exit 2 with one line (SystemExit)."""
    args = _parser(prog).parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:  # each file is written atomically (write_npz): none is left half-written
        print("error: interrupted: stopped at once", file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    if args.command == "dump":
        shapes = {k: getattr(args, k) for k in DEFAULT_SHAPES}
        try:
            paths = dump_cases(args.out, dtype=args.dtype, seed=args.seed, **shapes)
        except (ValueError, OSError) as e:
            return _error(_dump_error(e, args.out) if isinstance(e, OSError) else str(e))
        sizes = " ".join(f"{k}={v}" for k, v in shapes.items())
        print(f"wrote {len(paths)} files to {args.out} ({args.dtype}, seed {args.seed}, {sizes})")
        return 0
    try:
        report = check_path(args.path, against=args.against, rtol=args.rtol, atol=args.atol)
    except (ValueError, OSError) as e:
        return _error(describe_os_error(e, args.path) if isinstance(e, OSError) else str(e))
    print("\n".join(report.lines()))
    return report.exit_code


def _dump_error(e: OSError, out: str) -> str:
    """An OSError of `dump` in plain words; --out naming an existing file says so."""
    if e.errno == errno.EEXIST and not os.path.isdir(out):
        return f"{out}: exists and is not a directory; --out must be a directory, not a file"
    return describe_os_error(e, out)


def _error(text: str) -> int:
    print(f"error: {' '.join(text.split())}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
