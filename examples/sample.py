#!/usr/bin/env python
"""Generate text from a checkpoint written by examples/train_char_gpt.py.

    python examples/sample.py                                   # 3 samples from out/ckpt.npz
    python examples/sample.py --ckpt run1/best.npz --prompt "ROMEO:" --num-samples 2 --max-new-tokens 300 \\
        --temperature 0.8 --top-k 20 --seed 7

The same as `npgpt sample ...` (npgpt/cli/), for a source checkout.  Bad input gives a one-line
"error: ..." on stderr and exit status 2.  Guide: docs/training.md
"""

import sys
from pathlib import Path

try:
    import npgpt  # noqa: F401
except ImportError:  # running from a source checkout without installing: use the repository's package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from npgpt.cli import main

if __name__ == "__main__":
    sys.exit(main(["sample", *sys.argv[1:]], prog="sample.py"))
