"""Shared, cached GPT-2 tokenizer fixtures for the tokenizer tests (loaded once per test session)."""

from __future__ import annotations

import atexit
import functools
import json
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
GPT2_DIR = os.path.join(HERE, "fixtures", "gpt2_tokenizer")
TIKTOKEN_FILE = os.path.join(GPT2_DIR, "gpt2.tiktoken")
GOLDEN_FILE = os.path.join(GPT2_DIR, "golden.json")
sys.path.insert(0, GPT2_DIR)

import make_golden  # noqa: E402  (the corpus and the big text, shared with the script that made golden.json)
import make_hf_files  # noqa: E402


@functools.cache
def gpt2_tok():
    from npgpt.tokenizers import load_tiktoken

    return load_tiktoken(TIKTOKEN_FILE)


@functools.cache
def hf_dir() -> str:
    """vocab.json + merges.txt derived from gpt2.tiktoken by the committed script, in a temporary directory."""
    d = tempfile.mkdtemp(prefix="npgpt_gpt2_tok_")
    atexit.register(shutil.rmtree, d, True)
    make_hf_files.make(d)
    return d


@functools.cache
def golden() -> dict:
    with open(GOLDEN_FILE, encoding="utf-8") as f:
        return json.load(f)


@functools.cache
def tiktoken_encoding():
    """tiktoken's Encoding built from the local file (no download); skips the test without tiktoken."""
    import pytest

    tiktoken = pytest.importorskip("tiktoken")
    from tiktoken.load import load_tiktoken_bpe

    return tiktoken.Encoding(name="gpt2_local", pat_str=make_golden.TIKTOKEN_PATTERN,
                             mergeable_ranks=load_tiktoken_bpe(TIKTOKEN_FILE),
                             special_tokens={"<|endoftext|>": 50256})


big_text = make_golden.big_text
ids_digest = make_golden.ids_digest
CORPUS = make_golden.CORPUS
