#!/usr/bin/env python
"""Train a character-level GPT on a text file (default: the bundled Tiny Shakespeare).

    python examples/train_char_gpt.py                        # the default recipe, 3600 steps
    python examples/train_char_gpt.py my.txt --max-iters 500 --out-dir run1
    python examples/train_char_gpt.py --resume               # continue out/ckpt.npz after Ctrl-C
    python examples/train_char_gpt.py --resume --max-iters 5000   # extend a finished run

The same as `npgpt train ...` (npgpt/cli/), for a source checkout: one --flag per field of
npgpt.training.TrainConfig.  Bad input gives a one-line "error: ..." on stderr and exit status 2; a diverging
loss exit status 1; Ctrl-C or SIGTERM saves and exits with 130 / 143.  Guide: docs/training.md
"""

import sys
from pathlib import Path

try:
    import npgpt  # noqa: F401
except ImportError:  # running from a source checkout without installing: use the repository's package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from npgpt.cli import main

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]], prog="train_char_gpt.py"))
