"""GPT-2's pre-tokenizer pattern in `re`: its classes equal unicodedata's categories, it splits like the
`regex` package running the original pattern, and its pieces always rebuild the text."""

from __future__ import annotations

import sys
import unicodedata

import hypothesis.strategies as st
import pytest
from hypothesis import given
from tokenizer_fixtures import CORPUS

from npgpt.tokenizers import GPT2_PATTERN, pretokenize
from npgpt.tokenizers.pattern import LETTER_CATEGORIES, NUMBER_CATEGORIES, category_ranges, gpt2_regex, split_gpt2


def _scan(categories):
    """Independent reference: every code point's category, one by one."""
    out, start = [], None
    for cp in range(sys.maxunicode + 2):
        inside = cp <= sys.maxunicode and unicodedata.category(chr(cp)) in categories
        if inside and start is None:
            start = cp
        elif not inside and start is not None:
            out.append((start, cp - 1))
            start = None
    return tuple(out)


@pytest.mark.parametrize("cats", [LETTER_CATEGORIES, NUMBER_CATEGORIES], ids=["L", "N"])
def test_classes_are_exactly_the_unicode_categories(cats):
    assert category_ranges(cats) == _scan(cats)


def test_examples():
    assert pretokenize("Hello world") == ["Hello", " world"]
    assert pretokenize("I'm here") == ["I", "'m", " here"]
    assert pretokenize("a   b") == ["a", "  ", " b"]  # the last space goes with the word (\s+(?!\S))
    assert pretokenize("x\n\n") == ["x", "\n\n"]
    assert pretokenize("abc123!!  ") == ["abc", "123", "!!", "  "]
    assert pretokenize("I'M") == ["I", "'", "M"]  # contractions are lower case only
    assert pretokenize("\x1c\x1d") == ["\x1c\x1d"]  # not white space to tiktoken, though str.isspace says so
    assert pretokenize("") == []


@given(st.text(max_size=80))
def test_pieces_rebuild_the_text(text):
    assert "".join(pretokenize(text)) == text


def test_fast_split_equals_the_full_pattern():
    text = "".join(CORPUS)
    bmp = "".join(c for c in text if ord(c) <= 0xFFFF)
    assert gpt2_regex(astral=False).findall(bmp) == gpt2_regex(astral=True).findall(bmp)
    assert split_gpt2(text) == gpt2_regex(astral=True).findall(text)
    assert split_gpt2("𝐀𝐁 𝟘𝟙 🎉🎉 a𝐀1𝟘!🎉") == gpt2_regex(astral=True).findall("𝐀𝐁 𝟘𝟙 🎉🎉 a𝐀1𝟘!🎉")


@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=80))
def test_fast_split_equals_the_full_pattern_on_any_text(text):
    assert split_gpt2(text) == gpt2_regex(astral=True).findall(text)


def test_rejects_non_strings():
    with pytest.raises(ValueError, match="text: expected a str, got int"):
        pretokenize(3)  # type: ignore[arg-type]


@given(st.text(st.characters(blacklist_categories=("Cn", "Cs")), max_size=80))
def test_same_pieces_as_the_regex_package(text):
    regex = pytest.importorskip("regex")
    assert pretokenize(text) == regex.findall(GPT2_PATTERN, text)


def test_same_pieces_as_the_regex_package_on_the_corpus():
    regex = pytest.importorskip("regex")
    for text in CORPUS:
        assert pretokenize(text) == regex.findall(GPT2_PATTERN, text), text
