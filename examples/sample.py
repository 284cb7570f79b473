#!/usr/bin/env python
"""Generate text from a checkpoint written by examples/train_char_gpt.py.

    python examples/sample.py                                   # 3 samples from out/ckpt.npz
    python examples/sample.py --ckpt run1/ckpt.npz --prompt "ROMEO:" --num-samples 2 --max-new-tokens 300 \\
        --temperature 0.8 --top-k 20 --seed 7

Loads the parameters, the model config and the tokenizer from the checkpoint, encodes the prompt, and
samples with the key/value cache.  Bad input gives a one-line "error: ..." on stderr and exit status 2.
Guide: docs/training.md
"""

from __future__ import annotations

import argparse
import math
import sys
import typing
from pathlib import Path

import numpy as np

try:
    import npgpt  # noqa: F401
except ImportError:  # running from a source checkout without installing: use the repository's package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from npgpt.checkpoint import load_checkpoint
from npgpt.data import CharTokenizer
from npgpt.generate import generate


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> typing.NoReturn:  # one line, not usage + message
        self.exit(2, f"error: {message} (see --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(description="Sample text from an npgpt training checkpoint.", epilog="Docs: docs/training.md")
    p.add_argument("--ckpt", default="out/ckpt.npz", help="checkpoint file (default: out/ckpt.npz)")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--num-samples", type=int, default=3, help="independent samples (default: 3)")
    p.add_argument("--max-new-tokens", type=int, default=500, help="characters to generate each (default: 500)")
    p.add_argument("--temperature", type=float, default=0.8,
                   help="divide the logits by this; 0 picks the most likely character (default: 0.8)")
    p.add_argument("--top-k", type=int, default=None, help="sample only among the k most likely characters")
    p.add_argument("--top-p", type=float, default=None, help="sample only from the smallest set with this mass")
    p.add_argument("--seed", type=int, default=1337, help="random seed (default: 1337)")
    return p


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    try:
        _check_args(a)
        ck = load_checkpoint(a.ckpt)
        if "tokenizer" not in ck.meta:
            raise ValueError(f"{a.ckpt}: the checkpoint has no tokenizer (not written by npgpt.train)")
        tok = CharTokenizer.from_dict(ck.meta["tokenizer"])
        bad = sorted({c for c in a.prompt if c not in tok.stoi})
        if bad:
            where = ", ".join(f"{c!r} (position {a.prompt.index(c)})" for c in bad)
            raise ValueError(f"prompt: characters not in the checkpoint's vocabulary: {where}")
        prompt = tok.encode(a.prompt)  # (T,)
        idx = np.tile(prompt, (a.num_samples, 1))  # (N, T): every sample starts from the prompt
        out = generate(ck.params, ck.config, idx, a.max_new_tokens, temperature=a.temperature, top_k=a.top_k,
                       top_p=a.top_p, rng=np.random.default_rng(a.seed))  # (N, T + max_new_tokens)
    except ValueError as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)
        return 2
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="replace")  # a terminal that cannot show a character gets '?'
    for i in range(a.num_samples):
        print(f"---------- sample {i + 1}/{a.num_samples} ----------")
        print(tok.decode(out[i]))
    print("-" * 36)
    return 0


def _check_args(a: argparse.Namespace) -> None:
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
    if not a.prompt:
        raise ValueError("--prompt: expected at least one character")
    if a.seed < 0:
        raise ValueError(f"--seed: expected an integer >= 0, got {a.seed}")


if __name__ == "__main__":
    sys.exit(main())
