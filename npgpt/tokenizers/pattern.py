"""GPT-2's pre-tokenizer: the regular expression that cuts text into the pieces BPE runs on, with `re` only.

    's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+

`re` has no \\p{..}, so the letter class (categories Lu Ll Lt Lm Lo) and the number class (Nd Nl No) are
character classes built from `unicodedata`, and \\s is Unicode's White_Space property (Python's own \\s is
str.isspace, which also matches U+001C..U+001F; tiktoken's and `regex`'s \\s do not).  Guide: docs/tokenizers.md
"""

from __future__ import annotations

import functools
import re
import sys
import unicodedata
from collections.abc import Sequence
from itertools import accumulate

import numpy as np

# the pattern as GPT-2, tiktoken's `gpt2` and Hugging Face's ByteLevel pre-tokenizer write it
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

# Unicode's White_Space property (PropList.txt; unchanged since Unicode 6.3): what \s means to tiktoken
WHITE_SPACE = ((0x09, 0x0D), (0x20, 0x20), (0x85, 0x85), (0xA0, 0xA0), (0x1680, 0x1680), (0x2000, 0x200A),
               (0x2028, 0x2029), (0x202F, 0x202F), (0x205F, 0x205F), (0x3000, 0x3000))
LETTER_CATEGORIES = frozenset({"Lu", "Ll", "Lt", "Lm", "Lo"})  # \p{L}
NUMBER_CATEGORIES = frozenset({"Nd", "Nl", "No"})  # \p{N}


def _all_code_points() -> str:
    """Every code point except the surrogates, in order, as one string (decoded in one call: fast)."""
    cps = np.arange(sys.maxunicode + 1, dtype=np.uint32)  # (0x110000,)
    cps = cps[(cps < 0xD800) | (cps > 0xDFFF)]  # (1112064,) surrogates are category Cs: never L or N
    return cps.astype("<u4").tobytes().decode("utf-32-le")


def _ranges(chars: str) -> list[tuple[int, int]]:
    """Maximal runs (first, last) of consecutive code points among `chars` (sorted, non-empty)."""
    c = np.frombuffer(chars.encode("utf-32-le"), dtype="<u4").astype(np.int64)  # (n,)
    breaks = np.flatnonzero(np.diff(c) != 1)  # (k,) last index of every run but the final one
    firsts = np.concatenate([c[:1], c[breaks + 1]])  # (k + 1,)
    lasts = np.concatenate([c[breaks], c[-1:]])  # (k + 1,)
    return list(zip(firsts.tolist(), lasts.tolist()))


@functools.cache
def category_ranges(categories: frozenset[str]) -> tuple[tuple[int, int], ...]:
    """Runs (first, last) of the code points whose unicodedata.category is in `categories` (L or N here).

    Letters are found with str.isalpha, which is defined as exactly the categories Lu Ll Lt Lm Lo (the
    same Unicode database as unicodedata); numbers are the str.isnumeric characters (a superset of N)
    whose category is Nd, Nl or No.  tests/test_pretokenize.py checks both against a full category scan.
    """
    every = _all_code_points()
    if categories == LETTER_CATEGORIES:
        chars = "".join(filter(str.isalpha, every))
    elif categories == NUMBER_CATEGORIES:
        chars = "".join(c for c in filter(str.isnumeric, every) if unicodedata.category(c) in categories)
    else:
        chars = "".join(c for c in every if unicodedata.category(c) in categories)
    return tuple(_ranges(chars))


def _class_body(ranges: Sequence[tuple[int, int]]) -> str:
    """The inside of a [...] class matching exactly these ranges (the characters themselves, re.escape'd:
    `re` parses that about 20 times faster than \\uXXXX escapes)."""
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
                   for a, b in ranges)


@functools.cache
def gpt2_regex(astral: bool = True) -> re.Pattern[str]:
    """GPT2_PATTERN compiled for `re` (each variant built once per process, about 0.3 s).

    astral=False leaves the code points above U+FFFF out of the classes: exact for any text without them
    and about five times faster, because `re` tests a class's BMP part with one table lookup but its
    astral ranges one by one.  split_gpt2 uses only this variant, on any text.
    """
    def body(categories: frozenset[str]) -> str:
        ranges = category_ranges(categories)
        return _class_body(ranges if astral else [(a, min(b, 0xFFFF)) for a, b in ranges if a <= 0xFFFF])

    L, N, S = body(LETTER_CATEGORIES), body(NUMBER_CATEGORIES), _class_body(WHITE_SPACE)
    pattern = (f"'s|'t|'re|'ve|'m|'ll|'d| ?[{L}]+| ?[{N}]+| ?[^{S}{L}{N}]+"
               f"|[{S}]+(?![^{S}])|[{S}]+")
    return re.compile(pattern)


_ASTRAL = re.compile("[\U00010000-\U0010ffff]")


def _stand_in(m: re.Match[str]) -> str:
    """A BMP character of the same class as this astral one: 'a' (a letter), '0' (a number), '#' (other;
    no astral code point is white space).  None of them is a quote, a space or a letter of 's 't 're ..."""
    cat = unicodedata.category(m.group())
    return "a" if cat in LETTER_CATEGORIES else "0" if cat in NUMBER_CATEGORIES else "#"


def split_gpt2(text: str) -> list[str]:
    """The pieces of text under GPT2_PATTERN, always with the fast BMP variant of the regex: astral
    characters (emoji, math letters, ...) are first replaced one for one by a BMP stand-in of the same
    class, the pieces' lengths are found on that copy, and the pieces are cut from the original text."""
    fast = gpt2_regex(astral=False)
    if text.isascii() or max(text) <= "\uffff":
        return fast.findall(text)
    lengths = map(len, fast.findall(_ASTRAL.sub(_stand_in, text)))
    bounds = list(accumulate(lengths, initial=0))
    return [text[a:b] for a, b in zip(bounds, bounds[1:])]


def pretokenize(text: str) -> list[str]:
    """The pieces of `text` under GPT-2's pattern, in order; they concatenate back to `text`."""
    if not isinstance(text, str):
        raise ValueError(f"text: expected a str, got {type(text).__name__}")
    return split_gpt2(text)
