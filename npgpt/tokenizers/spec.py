"""The training example's --tokenizer choice: "char", "bpe:VOCAB" (trained on the training split) or a path.

    tok = tokenizer_from_spec("bpe:512", train_text)     # or "char", or "path/to/tokenizer/files"
    ids = encode_text(tok, text)                          # what training, sampling and eval encode with

Guide: docs/tokenizers.md
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import numpy as np

from .bpe import BPETokenizer
from .char import CharTokenizer
from .files import load_tokenizer
from .protocol import Tokenizer
from .train_bpe import train_bpe

_BPE_SPEC = re.compile(r"bpe:(\d+)")
SPEC_HELP = ("char (the text's characters), bpe:VOCAB (a byte-level BPE of VOCAB ids trained on the training "
             "split, e.g. bpe:512), or a path to tokenizer files (a .gguf file, a tokenizer.json, a SentencePiece "
             ".model, a .tiktoken file, or a directory with tokenizer.json, vocab.json + merges.txt or "
             "tokenizer.model)")


def tokenizer_from_spec(spec: str, train_text: str, full_text: str | None = None,
                        note: Callable[[str], Any] | None = None) -> Any:
    """The tokenizer a --tokenizer value names.  "char" builds the character vocabulary of full_text (the
    whole file, so the validation split has no unknown characters; train_text when None); "bpe:VOCAB"
    trains on train_text only, and when its merges run out before VOCAB ids, note(a line) says where;
    anything else is a path for load_tokenizer."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"tokenizer: expected {SPEC_HELP}; got {spec!r}")
    if spec == "char":
        return CharTokenizer(full_text if full_text is not None else train_text)
    m = _BPE_SPEC.fullmatch(spec)
    if m:
        tok = train_bpe(train_text, int(m.group(1)))
        if note is not None and tok.vocab_size < int(m.group(1)):
            note(f"note: {spec}: the merges ran out at {tok.vocab_size} ids (no pair of tokens occurs twice more "
                 f"in the training split); the vocabulary is {tok.vocab_size}")
        return tok
    if spec.startswith("bpe"):
        raise ValueError(f"tokenizer: {spec!r}: expected bpe:VOCAB with VOCAB an integer >= 256, e.g. bpe:512")
    return load_tokenizer(spec)


def encode_text(tok: Any, text: str) -> np.ndarray:
    """Ids of a text the user gave (a training file, a prompt, an eval text): for a BPE tokenizer its special
    tokens' text ("<|endoftext|>", GPT-2's document separator) is encoded as those tokens."""
    if isinstance(tok, BPETokenizer):
        return tok.encode(text, allowed_special="all")
    return np.asarray(tok.encode(text))


def start_token(tok: Tokenizer) -> int:
    """The token an unprompted sample starts from: a newline when the vocabulary has one, else id 0."""
    try:
        nl = tok.encode("\n")
    except ValueError:  # a character vocabulary without "\n"
        return 0
    return int(nl[0]) if len(nl) == 1 else 0


def check_learnable(tok: Any, source: str) -> None:
    """A vocabulary of one token (a text of one distinct character, e.g. a file of NUL bytes) trains to loss 0
    at once and learns nothing: a one-line ValueError naming source, with a hint when it looks binary."""
    if tok.vocab_size >= 2:
        return
    chars = getattr(tok, "chars", None)  # a CharTokenizer's vocabulary
    if not chars:
        raise ValueError(f"{source}: the tokenizer has a single token: nothing can be learned from a vocabulary "
                         f"of one")
    c = chars[0]
    hint = ("the file is all NUL bytes: is it a binary file?" if c == "\0" else
            f"the file is all {c!r}: is it a binary file?" if not (c.isprintable() or c.isspace()) else
            "train on a text with more than one character")
    raise ValueError(f"{source}: the text has a single distinct character ({c!r}): nothing can be learned from a "
                     f"vocabulary of one; {hint}")
