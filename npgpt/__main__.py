"""python -m npgpt: the npgpt command (npgpt/cli/)."""

import sys

from .cli import main

sys.exit(main(prog="python -m npgpt"))
