"""Tokenizers: the protocol, characters, GPT-2's byte-level BPE (standard library only), BPE training, files.

Guide: docs/tokenizers.md
"""

from .bpe import EOT, BPETokenizer
from .char import CharTokenizer
from .files import (
    has_tokenizer_files,
    load_hf,
    load_tiktoken,
    load_tokenizer,
    load_tokenizer_json,
    merges_from_ranks,
    read_tiktoken_ranks,
    save_tokenizer,
)
from .pattern import GPT2_PATTERN, pretokenize
from .protocol import TOKENIZER_LOADERS, Tokenizer, ids_dtype, tokenizer_from_dict
from .spec import SPEC_HELP, encode_text, start_token, tokenizer_from_spec
from .stream import TextStream
from .train_bpe import train_bpe

__all__ = [
    "EOT", "BPETokenizer", "GPT2_PATTERN", "has_tokenizer_files", "load_hf", "load_tiktoken", "load_tokenizer",
    "load_tokenizer_json", "merges_from_ranks", "pretokenize", "read_tiktoken_ranks", "save_tokenizer", "train_bpe",
    "SPEC_HELP", "encode_text", "start_token", "tokenizer_from_spec", "CharTokenizer", "TOKENIZER_LOADERS", "Tokenizer",
    "ids_dtype", "tokenizer_from_dict", "TextStream",
]
