"""tiktoken's own test semantics (its tests/ at 0.14.0: encoding, special tokens, batches, bytes, offsets),
run against npgpt's BPETokenizer through a thin adapter and compared with tiktoken itself.

Only GPT-2's ranks are local (tests/fixtures/gpt2_tokenizer/gpt2.tiktoken), so the cl100k and o200k cases
run their *patterns* over GPT-2's ranks, with special tokens that leave a gap after the ordinary ids (as
cl100k's and o200k's do).  Each test states the property tiktoken's test checks; the code is our own.
Skips without tiktoken.
"""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given, settings
from tokenizer_fixtures import TIKTOKEN_FILE, gpt2_tok

from npgpt.tokenizers import GPT2_PATTERN, BPETokenizer
from npgpt.tokenizers.pretokenizers import HF_PATTERNS

tiktoken = pytest.importorskip("tiktoken")
from tiktoken.load import load_tiktoken_bpe  # noqa: E402

EOT = "<|endoftext|>"
GAP_SPECIALS = {EOT: 50256, "<|fim_prefix|>": 50300, "<|fim_middle|>": 50301, "<|fim_suffix|>": 50302}


class Adapter:
    """tiktoken.Encoding's call signatures over a BPETokenizer: lists in and out, nothing else changed."""

    def __init__(self, tok: BPETokenizer) -> None:
        self.tok = tok

    def encode(self, text, *, allowed_special=frozenset(), disallowed_special="all"):
        return self.tok.encode(text, allowed_special=allowed_special, disallowed_special=disallowed_special).tolist()

    def encode_ordinary(self, text):
        return self.tok.encode_ordinary(text).tolist()

    def decode(self, tokens, errors="replace"):
        return self.tok.decode(list(tokens), errors=errors)

    def decode_bytes(self, tokens):
        return self.tok.decode_bytes(list(tokens))

    def __getattr__(self, name):  # the methods that already have tiktoken's signature
        return getattr(self.tok, name)


def _ranks():
    if not hasattr(_ranks, "r"):
        _ranks.r = load_tiktoken_bpe(TIKTOKEN_FILE)
    return _ranks.r


def _pair(name: str):
    """(npgpt through the adapter, tiktoken) for one of the encodings below, built once."""
    if name not in _PAIRS:
        if name == "gpt2":
            mine, pat, specials = gpt2_tok(), GPT2_PATTERN, {EOT: 50256}
        else:
            pat = HF_PATTERNS[name]
            base = gpt2_tok()
            mine, specials = BPETokenizer(base.encoder, base.merges, GAP_SPECIALS, pattern=pat), GAP_SPECIALS
        ref = tiktoken.Encoding(name=f"{name}_on_gpt2_ranks", pat_str=pat, mergeable_ranks=_ranks(),
                                special_tokens=specials)
        _PAIRS[name] = (Adapter(mine), ref)
    return _PAIRS[name]


_PAIRS: dict = {}
NAMES = ["gpt2", "cl100k", "o200k"]


def test_simple():
    enc, ref = _pair("gpt2")
    assert enc.encode("hello world") == ref.encode("hello world") == [31373, 995]
    assert enc.decode([31373, 995]) == "hello world"
    assert enc.encode("hello <|endoftext|>", allowed_special="all") == [31373, 220, 50256]
    for name in NAMES:
        enc, ref = _pair(name)
        for token in range(10_000):
            assert enc.encode_single_token(enc.decode_single_token_bytes(token)) == token


def test_simple_repeated():
    enc, ref = _pair("gpt2")
    assert enc.encode("0") == [15] and enc.encode("00") == [405] and enc.encode("0" * 16) == [25645]
    for n in range(1, 40):
        assert enc.encode("0" * n) == ref.encode("0" * n), n


def test_large_repeated():
    enc, _ = _pair("o200k")
    tokens = enc.encode("x" * 1_000_000)  # large inputs are handled without raising
    assert tokens and enc.decode(tokens) == "x" * 1_000_000


@pytest.mark.parametrize("text", ["rer", "'rer", "today\n ", "today\n \n", "today\n  \n", " \x850", "hello world"])
@pytest.mark.parametrize("name", NAMES)
def test_simple_regex(name, text):
    enc, ref = _pair(name)
    assert enc.encode(text) == ref.encode(text)


def test_encode_empty():
    enc, _ = _pair("gpt2")
    assert enc.encode("") == []


def test_encode_bytes():
    for name in NAMES:
        enc, ref = _pair(name)
        assert enc._encode_bytes(b" \xec\x8b\xa4\xed") == ref._encode_bytes(b" \xec\x8b\xa4\xed")
        for i in range(10):
            assert enc.decode_bytes(enc._encode_bytes(b"\x80" * i)) == b"\x80" * i


@pytest.mark.parametrize("name", NAMES)
@given(data=st.binary(max_size=40))
@settings(deadline=None)
def test_hyp_encode_bytes(name, data):
    enc, ref = _pair(name)
    got = enc._encode_bytes(data)
    assert enc.decode_bytes(got) == data
    assert got == ref._encode_bytes(data)


def test_encode_surrogate_pairs():
    enc, ref = _pair("cl100k")
    assert enc.encode("👍") == ref.encode("👍")
    assert enc.encode("\ud83d\udc4d") == enc.encode("👍")  # a surrogate pair is its code point
    assert enc.encode("\ud83d") == enc.encode("\ufffd")  # a lone surrogate is replaced


@pytest.mark.parametrize("name", NAMES)
def test_catastrophically_repetitive(name):
    enc, ref = _pair(name)
    for c in ["^", "0", "a", "'s", " ", "\n"]:
        for text in (c * 10_000, " " + c * 10_000, " " + c * 10_000 + "\n"):
            got = enc.encode(text)
            assert enc.decode(got) == text
            assert got == ref.encode(text), (name, c)


@pytest.mark.parametrize("name", NAMES)
def test_basic_roundtrip(name):
    enc, _ = _pair(name)
    for value in ("hello", "hello ", "hello  ", " hello", " hello ", " hello  ", "hello world",
                  "请考试我的软件！12345"):
        assert enc.decode(enc.encode(value)) == value
        assert enc.decode(enc.encode_ordinary(value)) == value


@pytest.mark.parametrize("name", NAMES)
@given(text=st.text(max_size=60))
@settings(deadline=None)
def test_hyp_roundtrip(name, text):
    enc, ref = _pair(name)
    got = enc.encode(text, disallowed_special=())
    assert enc.decode(got) == text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    assert got == ref.encode(text, disallowed_special=())


@pytest.mark.parametrize("name", NAMES)
def test_single_token_roundtrip(name):
    enc, ref = _pair(name)
    assert enc.n_vocab == ref.n_vocab and enc.max_token_value == ref.max_token_value
    for token in range(enc.n_vocab):
        try:
            token_bytes = enc.decode_single_token_bytes(token)
        except KeyError:  # an unused id between the ordinary and the special tokens
            with pytest.raises(KeyError):
                ref.decode_single_token_bytes(token)
            continue
        assert enc.encode_single_token(token_bytes) == token


def test_token_byte_values_and_names():
    for name in NAMES:
        enc, ref = _pair(name)
        assert enc.token_byte_values() == ref.token_byte_values()
        assert enc.eot_token == ref.eot_token and enc.special_tokens_set == ref.special_tokens_set
        assert [enc.is_special_token(t) for t in (0, 50256, 50300)] == [ref.is_special_token(t)
                                                                          for t in (0, 50256, 50300)]


def test_special_token():
    enc, _ = _pair("cl100k")
    eot = enc.encode_single_token(EOT)
    assert eot == enc.eot_token
    fip = enc.encode_single_token("<|fim_prefix|>")
    fim = enc.encode_single_token("<|fim_middle|>")

    text = "<|endoftext|> hello <|fim_prefix|>"
    assert eot not in enc.encode(text, disallowed_special=())
    for disallowed in ("all", {EOT}, {"<|fim_prefix|>"}):
        with pytest.raises(ValueError):
            enc.encode(text, disallowed_special=disallowed)
    with pytest.raises(ValueError):
        enc.encode(text)

    text = "<|endoftext|> hello <|fim_prefix|> there <|fim_middle|>"
    cases = [({}, ()), ("all", ()), ("all", "all"), ({"<|fim_prefix|>"}, ()), ({EOT}, ()), ({"<|fim_middle|>"}, ())]
    for allowed, disallowed in cases:
        tokens = enc.encode(text, allowed_special=allowed, disallowed_special=disallowed)
        every = allowed == "all"
        assert (eot in tokens) == (every or EOT in allowed)
        assert (fip in tokens) == (every or "<|fim_prefix|>" in allowed)
        assert (fim in tokens) == (every or "<|fim_middle|>" in allowed)


@pytest.mark.parametrize("name", NAMES)
@given(text=st.text(max_size=40))
@settings(deadline=None)
def test_hyp_special_ordinary(name, text):
    enc, _ = _pair(name)
    assert enc.encode_ordinary(text) == enc.encode(text, disallowed_special=())


@pytest.mark.parametrize("name", NAMES)
def test_batch_encode(name):
    enc, ref = _pair(name)
    text1, text2 = "hello world", "goodbye world"
    assert enc.encode_batch([text1]) == [enc.encode(text1)]
    assert enc.encode_batch([text1, text2]) == [enc.encode(text1), enc.encode(text2)] == ref.encode_batch(
        [text1, text2])
    assert enc.encode_ordinary_batch([text1, text2]) == [enc.encode_ordinary(text1), enc.encode_ordinary(text2)]


@pytest.mark.parametrize("name", NAMES)
@given(batch=st.lists(st.text(max_size=20), max_size=5))
@settings(deadline=None)
def test_hyp_batch_roundtrip(name, batch):
    enc, _ = _pair(name)
    batch = [t.encode("utf-16", "surrogatepass").decode("utf-16", "replace") for t in batch]
    encoded = enc.encode_batch(batch, allowed_special="all")
    assert encoded == [enc.encode(t, allowed_special="all") for t in batch]
    assert enc.decode_batch(encoded) == batch


# ---- offsets (tiktoken's tests/test_offsets.py)
def _offsets_reference(enc, tokens):
    """For each token, how many characters of the text come before it: the common prefix of the whole text
    and the text of the tokens before it."""
    text = enc.decode(tokens, errors="strict")
    out = []
    for i in range(len(tokens)):
        prefix = enc.decode(tokens[:i], errors="ignore")
        n = 0
        while n < len(text) and n < len(prefix) and text[n] == prefix[n]:
            n += 1
        out.append(n)
    return out


@pytest.mark.parametrize("name", ["gpt2", "cl100k"])
@given(data=st.data())
@settings(deadline=None)
def test_hyp_offsets(name, data):
    enc, _ = _pair(name)
    real = st.integers(0, enc.n_vocab - 1).filter(lambda t: enc.tok._bytes[t] is not None)
    tokens = data.draw(st.lists(real, min_size=1, max_size=20))
    tokens = enc.encode(enc.decode(tokens, errors="ignore"), allowed_special="all")  # valid UTF-8 text
    assert enc.decode_with_offsets(tokens)[1] == _offsets_reference(enc, tokens)


def test_basic_offsets():
    enc, ref = _pair("cl100k")
    assert enc.decode_with_offsets([]) == ("", [])
    for prompt in ("hello world", "hello world<|endoftext|> green cow", "我非常渴望与人工智能一起工作",
                   "நடிகர் சூர்யா", " Ġ除"):
        tokens = enc.encode(prompt, allowed_special="all")
        text, offsets = enc.decode_with_offsets(tokens)
        assert text == prompt
        assert (text, offsets) == ref.decode_with_offsets(tokens)
        assert enc.decode_with_offsets(t for t in tokens) == (text, offsets)  # any iterable
    assert enc.decode_with_offsets(enc.encode("hello world"))[1] == [0, 5]


def test_offsets_errors():
    enc, _ = _pair("cl100k")
    with pytest.raises(KeyError):
        enc.decode_with_offsets([enc.max_token_value + 1])
    with pytest.raises(UnicodeDecodeError):
        enc.decode_with_offsets(enc._encode_bytes(b"\x80"))
