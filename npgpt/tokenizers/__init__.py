"""Tokenizers: the protocol, characters, GPT-2's byte-level BPE (standard library only), BPE training, files:
GGUF vocabularies, any tokenizer.json, SentencePiece-style BPE.

Guide: docs/tokenizers.md, docs/tokenizer_files.md
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
from .gguf import GGUFFile, gguf_tokenizer_spec, load_gguf_tokenizer, read_gguf
from .pattern import GPT2_PATTERN, pretokenize
from .protocol import TOKENIZER_LOADERS, Tokenizer, ids_dtype, tokenizer_from_dict
from .sentencepiece import load_sentencepiece
from .spec import SPEC_HELP, encode_text, start_token, tokenizer_from_spec
from .stream import TextStream
from .tokenizer_json import JsonTokenizer
from .train_bpe import train_bpe

__all__ = [
    "EOT", "BPETokenizer", "GPT2_PATTERN", "has_tokenizer_files", "load_hf", "load_tiktoken", "load_tokenizer",
    "load_tokenizer_json", "merges_from_ranks", "pretokenize", "read_tiktoken_ranks", "save_tokenizer", "train_bpe",
    "SPEC_HELP", "encode_text", "start_token", "tokenizer_from_spec", "CharTokenizer", "TOKENIZER_LOADERS", "Tokenizer",
    "ids_dtype", "tokenizer_from_dict", "GGUFFile", "gguf_tokenizer_spec", "load_gguf_tokenizer", "read_gguf",
    "load_sentencepiece", "JsonTokenizer", "TextStream",
]
