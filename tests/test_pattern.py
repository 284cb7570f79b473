"""Pre-tokenizer patterns in `re`: every pattern in use splits like the `regex` package running the original
(native and emulated possessive quantifiers), the committed Unicode table is regex's, the pieces rebuild the
text, llama.cpp's multi-pattern pre-tokenizers split as documented, and what cannot be translated is refused
in one line."""

from __future__ import annotations

import random

import hypothesis.strategies as st
import pytest
from hypothesis import given
from tokenizer_fixtures import CORPUS

from npgpt.tokenizers import GPT2_PATTERN, pretokenize
from npgpt.tokenizers.pattern import UNICODE_VERSION, CompiledPattern, compile_pattern, property_ranges, split_gpt2
from npgpt.tokenizers.pretokenizers import HF_PATTERNS, LLAMA_CPP_PRE, split_with

ALL_PATTERNS = sorted(set(HF_PATTERNS.values()) | {p for ps in LLAMA_CPP_PRE.values() for p in ps})
# characters that exercise the classes: contractions in both cases, (?i)'s extra matches (U+017F, U+212A),
# white space of every kind (U+001C is not \s to regex), digits of other scripts, marks, CJK, Hangul, kana,
# letters newer than Python 3.11's Unicode 14 (U+1C8A), emoji and ZWJ, astral letters and digits
SPICE = ("abcXYZ 's'S'T'LL'Ve'rE'M'd\n\r\t\x0b\x0c\x1c\x85\xa0\u2028\u3000  0123456789.,!?/-_$+<=>^`|~"
         "\u017f\u212a\u0130\u0131\u00e9\u0301\u0660\u0966\u00b2\u2167\u4e00\u9fa5\u3042\u30a2\uac00\u1100"
         "\u0e01\u1c8a\u1c89\U0001f600\U0001f44d\u200d\ufe0f\U0001d400\U0001d7d8\U00020000\U0002ebf0\u00ad"
         "\u0410\u044f\u03a9\u1f7d\uff21\uff41\u2126\u00b5IMGIMGABZ<sentinel:12>")


def _random_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        chars = []
        for _ in range(rng.randint(0, 40)):
            r = rng.random()
            if r < 0.6:
                chars.append(rng.choice(SPICE))
            elif r < 0.8:
                chars.append(chr(rng.randint(0x80, 0x3100)))
            else:
                cp = rng.randint(0, 0x10FFFF)
                chars.append(chr(cp) if not 0xD800 <= cp < 0xE000 else "x")
        out.append("".join(chars))
    return out


def _regex_findall(regex, source: str, text: str) -> list[str]:
    return [m.group() for m in regex.finditer(source, text)]


@pytest.mark.parametrize("native", [True, False], ids=["native", "emulated"])
@pytest.mark.parametrize("source", ALL_PATTERNS, ids=lambda s: s[:30])
def test_every_pattern_in_use_equals_regex(source, native):
    regex = pytest.importorskip("regex")
    if native and not pytest.importorskip("sys").version_info >= (3, 11):
        pytest.skip("possessive quantifiers need Python 3.11's re")
    mine = CompiledPattern(source, native=native)
    ref = regex.compile(source)
    for text in CORPUS + _random_texts(150):
        assert mine.findall(text) == [m.group() for m in ref.finditer(text)], text
        assert mine.spans(text) == [m.span() for m in ref.finditer(text)], text


@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_gpt2_and_o200k_equal_regex_on_any_text(text):
    regex = pytest.importorskip("regex")
    for source in (GPT2_PATTERN, HF_PATTERNS["o200k"], HF_PATTERNS["cl100k"]):
        assert compile_pattern(source).findall(text) == _regex_findall(regex, source, text)


@pytest.mark.parametrize("name", ["L", "Lu", "Ll", "Lt", "Lm", "Lo", "M", "N", "Nd", "P", "S", "Z", "Cn", "Han"])
def test_table_is_regex_own(name):
    regex = pytest.importorskip("regex")
    probe = "".join(chr(c) for c in range(0, 0x110000, 7) if not 0xD800 <= c < 0xE000)
    got = {c for c in probe if any(a <= ord(c) <= b for a, b in property_ranges(name))}
    assert got == set(regex.findall(rf"\p{{{name}}}", probe))


def test_unicode_is_the_table_not_pythons():
    assert UNICODE_VERSION >= "16.0.0"
    # U+1C8A (Unicode 16) is a letter to tiktoken; Python 3.11's unicodedata does not know it
    assert pretokenize("\u1c8a's") == ["\u1c8a", "'s"]
    assert compile_pattern(r"\s+").findall("a\x1c\x85b") == ["\x85"]  # U+001C is not white space to regex


def test_examples():
    assert pretokenize("Hello world") == ["Hello", " world"]
    assert pretokenize("I'm here") == ["I", "'m", " here"]
    assert pretokenize("a   b") == ["a", "  ", " b"]  # the last space goes with the word (\s+(?!\S))
    assert pretokenize("x\n\n") == ["x", "\n\n"]
    assert pretokenize("abc123!!  ") == ["abc", "123", "!!", "  "]
    assert pretokenize("I'M") == ["I", "'", "M"]  # GPT-2's contractions are lower case only
    assert pretokenize("\x1c\x1d") == ["\x1c\x1d"]
    assert pretokenize("") == []
    llama3 = compile_pattern(HF_PATTERNS["llama3"])
    assert llama3.findall("I'M 12345 ſ'S") == ["I", "'M", " ", "123", "45", " ſ", "'S"]


def test_split_with_applies_patterns_in_turn():
    assert split_with(LLAMA_CPP_PRE["deepseek-v3"], "Hello 12345 世界") == ["Hello", " ", "123", "45", " ", "世界"]
    # afmoe's digits: groups of three from the right
    assert split_with(LLAMA_CPP_PRE["afmoe"][:1], "x1234567y") == ["x", "1", "234", "567", "y"]
    # superbpe: a zero-width pattern only cuts
    assert split_with(LLAMA_CPP_PRE["superbpe"], "a1234567") == ["a", "1", "234", "567"]
    assert split_with((), "abc") == ["abc"] and split_with(GPT2_PATTERN, "") == []


@given(st.text(max_size=60))
def test_split_with_keeps_every_character(text):
    for name in ("deepseek-llm", "chameleon", "falcon", "default", "viking", "whitespace"):
        assert "".join(split_with(LLAMA_CPP_PRE[name], text)) == text


@given(st.text(max_size=80))
def test_pieces_rebuild_the_text(text):
    assert "".join(pretokenize(text)) == text


def test_astral_text_uses_bmp_stand_ins():
    text = "𝐀𝐁 𝟘𝟙 🎉🎉 a𝐀1𝟘!🎉 𠀀𠀁"
    pat = compile_pattern(GPT2_PATTERN)
    assert pat.findall(text) == pat.whole.findall(text) == split_gpt2(text)
    assert pat.findall(text) == ["𝐀𝐁", " 𝟘𝟙", " 🎉🎉", " a𝐀", "1𝟘", "!🎉", " 𠀀𠀁"]


def test_every_llama_cpp_name_is_there():
    for name in ("gpt-2", "llama-bpe", "qwen2", "deepseek-llm", "deepseek-coder", "deepseek-v3", "falcon",
                 "starcoder", "refact", "command-r", "tekken", "gpt-4o", "kimi-k2", "default", "chatglm-bpe",
                 "viking", "jais", "smollm", "bloom", "poro-chat", "exaone", "minerva-7b", "olmo", "dbrx"):
        assert name in LLAMA_CPP_PRE
    assert len(LLAMA_CPP_PRE) == 91  # llama-vocab.cpp (2026) names 90, plus "" (no pre: its default)


@pytest.mark.parametrize("source, what", [
    (r"[\p{L}&&[^\p{Han}]]", "set operation '&&'"),
    (r"(a)\1", r"escape \\1"),
    (r"\p{Bogus}", r"unknown Unicode property \\p\{Bogus\}"),
    (r"(?i:é)", "non-ASCII letter"),
    (r"(?x)a", "the group"),
    (r"[a", "unterminated"),
    (r"a)", "unbalanced"),
    (r"[z-a]", "reversed range"),
    (r"*a", "nothing to repeat"),
    (r"(?i:\p{L})", "inside"),
])
def test_untranslatable_constructs_are_named(source, what):
    with pytest.raises(ValueError, match=what) as e:
        CompiledPattern(source)
    assert "\n" not in str(e.value)


def test_rejects_non_strings():
    with pytest.raises(ValueError, match="text: expected a str, got int"):
        pretokenize(3)  # type: ignore[arg-type]
