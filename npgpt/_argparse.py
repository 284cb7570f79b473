"""OneLineParser: argparse with one-line errors, the shape of every npgpt command's (the oracle's included)."""

from __future__ import annotations

import argparse
import typing


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, "error: ... (see PROG --help)", exit status 2 (every npgpt
    command's, the oracle's included), instead of argparse's usage block followed by the message."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")
