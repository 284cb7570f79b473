"""Text printed token by token as a sample is drawn: the same text as one tok.decode of all the ids.

    stream = TextStream(tok)
    model.generate(idx, n, on_token=stream.write)   # each step's new id, printed at once
    stream.close()                                  # the rest of a cut character, and a newline

Used by `npgpt sample` (one sample) and the closing sample of `npgpt train`.  Guide: docs/tokenizers.md
"""

from __future__ import annotations

import codecs
import sys
from typing import Any

import numpy as np
import numpy.typing as npt


class TextStream:
    """Prints a sample's text token by token on stdout.  A byte-level BPE's tokens (a tokenizer with
    decode_bytes) go through an incremental UTF-8 decoder, so a character cut between two tokens waits for
    the rest of its bytes."""

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
        """Flush what the decoder holds and end the line."""
        sys.stdout.write(("" if self.utf8 is None else self.utf8.decode(b"", final=True)) + "\n")
        sys.stdout.flush()
