"""The `npgpt` command (also `python -m npgpt`): train, sample, eval, oracle, one module per command.

train.py, sample.py, eval.py (with load.py: a checkpoint or a Hugging Face directory) < main.py (the parser,
the command table, one-line errors).  Nothing in npgpt imports this package.  Guide: docs/training.md
"""

from .main import COMMANDS, build_parser, main

__all__ = ["COMMANDS", "build_parser", "main"]
