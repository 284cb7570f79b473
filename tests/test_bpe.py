"""GPT-2 byte-level BPE: golden ids from tiktoken, live parity with tiktoken and Hugging Face, round trips,
special tokens, decode's totality and its errors, the long-piece merge against the rescanning one."""

from __future__ import annotations

import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import given
from tokenizer_fixtures import CORPUS, big_text, golden, gpt2_tok, hf_dir, ids_digest, tiktoken_encoding

from npgpt.tokenizers import EOT, GPT2_PATTERN, BPETokenizer, load_hf, train_bpe
from npgpt.tokenizers.bpe import _merge_heap, _merge_scan
from npgpt.tokenizers.pretokenizers import HF_PATTERNS

# text in Unicode's assigned code points (unassigned ones may be letters in a newer Unicode than Python's)
assigned_text = st.text(st.characters(blacklist_categories=("Cn", "Cs")), max_size=60)


def test_golden_corpus_matches_tiktoken_ids():
    tok = gpt2_tok()
    cases = golden()["cases"]
    assert [c["text"] for c in cases] == CORPUS  # the committed ids are for this very corpus
    for case in cases:
        assert tok.encode_ordinary(case["text"]).tolist() == case["ids"], case["text"]
        assert tok.decode(case["ids"]) == case["text"]


def test_golden_big_text_digest():
    tok = gpt2_tok()
    text = big_text()
    g = golden()["big"]
    assert (len(text), len(text.encode("utf-8"))) == (g["chars"], g["bytes"])
    ids = tok.encode_ordinary(text).tolist()
    assert len(ids) == g["n_ids"]
    assert ids_digest(ids) == g["sha256_ids_u32le"]
    assert tok.decode(ids) == text


def test_known_ids():
    tok = gpt2_tok()  # values anyone can check against GPT-2's encoder.json
    assert tok.encode("Hello world").tolist() == [15496, 995]
    assert tok.encode(" the").tolist() == [262]
    assert tok.vocab_size == 50257 and tok.eot_token == 50256
    assert tok.decode([50256]) == EOT


def test_special_tokens_need_to_be_allowed():
    tok = gpt2_tok()
    g = golden()["special"]
    assert tok.encode(g["text"], allowed_special={EOT}).tolist() == g["ids"]
    assert tok.encode(g["text"], allowed_special="all").tolist() == g["ids"]
    assert tok.encode(g["text"], allowed_special=EOT).tolist() == g["ids"]  # a bare string is that one token
    with pytest.raises(ValueError, match=r"special token '<\|endoftext\|>' at position 1") as e:
        tok.encode(g["text"]).tolist()
    assert "\n" not in str(e.value)
    # encode_ordinary reads it as text: the same ids as the corpus case
    assert tok.encode_ordinary("<|endoftext|> as plain text").tolist() == golden()["cases"][CORPUS.index(
        "<|endoftext|> as plain text")]["ids"]
    with pytest.raises(ValueError, match="allowed_special: '<|x|>' is not a special token"):
        tok.encode("a", allowed_special={"<|x|>"}).tolist()


def test_decode_is_total_and_replaces_cut_characters():
    tok = gpt2_tok()
    ids = tok.encode("🎉").tolist()  # one emoji is several byte tokens
    assert len(ids) > 1
    assert tok.decode(ids[:1]) == "\ufffd"
    assert tok.decode_bytes(ids) == "🎉".encode()
    assert tok.decode([]) == "" and tok.decode(np.array([], dtype=np.int64)) == ""
    assert tok.decode(np.array(ids, dtype=np.int32)) == "🎉"


@pytest.mark.parametrize("ids, msg", [([0, 50257], r"token id 50257 is out of range \[0, 50257\)"),
                                      ([-1], "token id -1 is out of range"),
                                      ([[1, 2]], "1-D sequence of integers"),
                                      ([1.5], "1-D sequence of integers")])
def test_decode_rejects_bad_ids_in_one_line(ids, msg):
    with pytest.raises(ValueError, match=msg) as e:
        gpt2_tok().decode(ids)
    assert "\n" not in str(e.value)


def test_encode_rejects_non_strings():
    with pytest.raises(ValueError, match="text: expected a str, got bytes"):
        gpt2_tok().encode(b"abc")  # type: ignore[arg-type]


def test_lone_surrogates_become_replacement_like_tiktoken():
    tok = gpt2_tok()
    assert tok.encode("a\ud800b").tolist() == tok.encode("a\ufffdb").tolist()
    # a surrogate pair is the character it spells
    assert tok.encode("\ud83c\udf89").tolist() == tok.encode("🎉").tolist()


@given(st.text(max_size=80))
def test_round_trip_any_text(text):
    tok = gpt2_tok()
    ids = tok.encode_ordinary(text).tolist()
    assert tok.decode(ids) == text
    assert all(0 <= i < 50256 for i in ids)


@given(assigned_text)
def test_parity_with_tiktoken(text):
    enc = tiktoken_encoding()
    assert gpt2_tok().encode_ordinary(text).tolist() == enc.encode_ordinary(text)


def test_parity_with_tiktoken_on_tiny_shakespeare():
    enc = tiktoken_encoding()
    from npgpt.training.data import bundled_corpus_path

    text = bundled_corpus_path().read_text(encoding="utf-8")
    assert gpt2_tok().encode_ordinary(text).tolist() == enc.encode_ordinary(text)


def _hf_tokenizers():
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers.models import BPE

    d = hf_dir()
    t = tokenizers.Tokenizer(BPE.from_file(f"{d}/vocab.json", f"{d}/merges.txt"))
    t.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = tokenizers.decoders.ByteLevel()
    return t


def test_parity_with_hf_tokenizers_on_the_corpus():
    t = _hf_tokenizers()
    tok = gpt2_tok()
    for text in CORPUS:
        assert t.encode(text).ids == tok.encode_ordinary(text).tolist(), text


@given(assigned_text)
def test_parity_with_hf_tokenizers(text):
    assert _hf_tokenizers().encode(text).ids == gpt2_tok().encode_ordinary(text).tolist()


def test_parity_with_transformers_gpt2_tokenizer():
    transformers = pytest.importorskip("transformers")
    d = hf_dir()
    slow = transformers.GPT2Tokenizer.from_pretrained(d)
    tok = gpt2_tok()
    for text in CORPUS[:40] + ["a<|endoftext|>b"]:
        assert slow.encode(text) == tok.encode(text, allowed_special="all").tolist(), text


def test_derived_files_load_to_the_same_tokenizer():
    d = hf_dir()
    assert load_hf(f"{d}/vocab.json", f"{d}/merges.txt") == gpt2_tok()


def test_cache_gives_the_same_ids_and_is_bounded(monkeypatch):
    import npgpt.tokenizers.bpe as bpe

    tok = load_hf(f"{hf_dir()}/vocab.json", f"{hf_dir()}/merges.txt")
    first = tok.encode("the cat and the hat and the cat").tolist()
    assert tok._cache and tok.encode("the cat and the hat and the cat").tolist() == first
    monkeypatch.setattr(bpe, "CACHE_LIMIT", 2)
    words = "one two three four five six"
    assert tok.encode(words).tolist() == gpt2_tok().encode(words).tolist()
    assert len(tok._cache) <= 2 + 6


@given(st.text(alphabet="ab", min_size=1, max_size=300))
def test_heap_merge_equals_rescanning_merge(word):
    # a small trained BPE over a two-letter alphabet has many overlapping pairs ("aaa"), the hard case
    tok = _ab_tok()
    assert _merge_heap(word, tok.ranks) == _merge_scan(word, tok.ranks)


def test_heap_merge_equals_rescanning_merge_on_gpt2_long_pieces():
    tok = gpt2_tok()
    for word in ["a" * 500, "ab" * 300, "1234567890" * 40, "Ġthe" * 100, "!?" * 200]:
        assert _merge_heap(word, tok.ranks) == _merge_scan(word, tok.ranks)
    assert tok.decode(tok.encode("x" * 5000).tolist()) == "x" * 5000


def _ab_tok() -> BPETokenizer:
    if not hasattr(_ab_tok, "tok"):
        _ab_tok.tok = train_bpe("aaab abba baaa ababab aaaa bbbb aabb " * 5 + "a" * 40 + "b" * 33, 280)
    return _ab_tok.tok


@pytest.mark.parametrize("vocab, merges, specials, msg", [
    ({"a": 0}, [], {}, "byte 0x00 has no single-byte token"),
    ({"a": 0, "b": 0}, [], {}, "id 0 is given to both 'a' and 'b'"),
    ({}, [], {}, "the vocabulary is empty"),
])
def test_constructor_rejects_inconsistent_vocabularies(vocab, merges, specials, msg):
    with pytest.raises(ValueError, match=msg):
        BPETokenizer(vocab, merges, specials)


def test_constructor_rejects_bad_merges_and_specials():
    base = dict(gpt2_tok().encoder)
    with pytest.raises(ValueError, match=r"merge 0 \(a qxqxqxq\): 'qxqxqxq' is not in the vocabulary"):
        BPETokenizer(base, [("a", "qxqxqxq")])
    small = {k: v for k, v in base.items() if v < 256}
    with pytest.raises(ValueError, match="the merged token 'ab' is not in the vocabulary"):
        BPETokenizer(small, [("a", "b")])
    with pytest.raises(ValueError, match="merge 1 .* repeats merge 0"):
        BPETokenizer({**small, "ab": 256}, [("a", "b"), ("a", "b")])
    with pytest.raises(ValueError, match="special token '<s>' has id 3, which is already"):
        BPETokenizer(small, [], {"<s>": 3})


def test_dict_round_trip():
    tok = _ab_tok()
    again = BPETokenizer.from_dict(tok.to_dict())
    assert again == tok and again.encode("abba aab").tolist() == tok.encode("abba aab").tolist()
    with pytest.raises(ValueError, match="expected {'type': 'bpe'"):
        BPETokenizer.from_dict({"type": "char"})


def test_chunked_encoding_gives_the_ids_of_the_whole_text(monkeypatch):
    import npgpt.tokenizers.bpe as bpe

    tok = gpt2_tok()
    text = big_text()[:200_000] + " \n \n\nword\n\n  x\ny " * 50
    whole = tok.encode_ordinary(text)
    monkeypatch.setattr(bpe, "CHUNK", 997)
    assert len(bpe._chunks(text, 997)) > 100
    assert "".join(bpe._chunks(text, 997)) == text
    chunked = tok.encode_ordinary(text)
    assert chunked.dtype == np.uint16 and whole.dtype == np.uint16
    assert np.array_equal(chunked, whole)


def _gpt2_with(**kw) -> BPETokenizer:
    base = gpt2_tok()
    specials = kw.pop("special_tokens", base.special_tokens)
    return BPETokenizer(base.encoder, base.merges, specials, **kw)


def test_special_ids_may_leave_a_gap():
    tok = _gpt2_with(special_tokens={EOT: 50256, "<|fim_prefix|>": 50300, "<|fim_middle|>": 50301})
    assert tok.vocab_size == tok.n_vocab == 50302 and tok.max_token_value == 50301
    ids = tok.encode("a<|fim_middle|>b<|endoftext|>", allowed_special="all").tolist()
    assert ids == [64, 50301, 65, 50256]
    assert tok.decode(ids) == "a<|fim_middle|>b<|endoftext|>"
    with pytest.raises(ValueError, match="50280 is not a token of this tokenizer"):
        tok.decode([50280])
    with pytest.raises(KeyError):
        tok.decode_single_token_bytes(50280)
    # GPT-2's own results do not change
    assert tok.encode_ordinary(big_text()[:20000]).tolist() == gpt2_tok().encode_ordinary(big_text()[:20000]).tolist()
    again = BPETokenizer.from_dict(tok.to_dict())
    assert again == tok


def test_other_pre_tokenizers():
    llama3 = _gpt2_with(pattern=HF_PATTERNS["llama3"])
    assert llama3.pattern == (HF_PATTERNS["llama3"],)
    text = "I'M here 12345\n\n  x"
    pieces = ["I", "'M", " here", " ", "123", "45", "\n\n", " ", " x"]
    assert llama3.encode(text).tolist() == [i for p in pieces for i in gpt2_tok().encode_ordinary(p).tolist()]
    seq = _gpt2_with(pattern=[r"\p{N}", GPT2_PATTERN])
    assert seq.encode("ab 123").tolist() == [397, 220, 16, 17, 18]
    assert BPETokenizer.from_dict(seq.to_dict()) == seq and seq != gpt2_tok()
    assert "pattern" not in gpt2_tok().to_dict()
    with pytest.raises(ValueError, match="cannot translate the set operation"):
        _gpt2_with(pattern=r"[a&&b]")


def test_ignore_merges_takes_whole_tokens():
    tok = _gpt2_with(ignore_merges=True)
    assert tok.encode(" the").tolist() == [262] and tok.to_dict()["ignore_merges"] is True


@pytest.mark.parametrize("text", ["a" * 20000, " " * 9000, "0" * 9001, "\U0001f600" * 3000, "ab" * 5000,
                                  "x" + "\u00e9" * 5000])
def test_numpy_merge_equals_the_heap_merge(text):
    tok = BPETokenizer.from_dict(gpt2_tok().to_dict())
    word = bpe_word(text)
    assert tok._merge_numpy(word) == [tok.encoder[p] for p in _merge_heap(word, tok.ranks)]


def bpe_word(text: str) -> str:
    from npgpt.tokenizers.byte_unicode import encode_bytes

    return encode_bytes(text.encode("utf-8"))


def test_unicode_is_newer_than_pythons_and_agrees_with_tiktoken():
    import random
    import unicodedata

    from npgpt.tokenizers.pattern import property_ranges

    tok = gpt2_tok()
    assert tok.encode("\u1c8a's").tolist() == [157, 110, 232, 338]  # tiktoken's ids (the example)
    letters = [cp for name in ("L", "N") for a, b in property_ranges(name) for cp in range(a, b + 1)]
    newer = [cp for cp in letters if unicodedata.category(chr(cp))[0] not in "LN"]  # Python's Unicode is older
    enc = tiktoken_encoding()
    for cp in random.Random(0).sample(newer, min(200, len(newer))):
        text = f" {chr(cp)}a {chr(cp)}1"
        assert tok.encode_ordinary(text).tolist() == enc.encode_ordinary(text), hex(cp)


@given(st.lists(st.text(alphabet="ab ", min_size=1, max_size=40), min_size=1, max_size=30))
def test_batch_merge_equals_rescanning_merge_word_by_word(words):
    # many words at once, each applying its own lowest pair per round, on a vocabulary full of overlaps
    tok = _ab_tok()
    raws = [w.encode() for w in words]
    flat, lengths = tok._merge_batch(raws)
    assert lengths.tolist() == [len(_merge_scan(bpe_word(w), tok.ranks)) for w in words]
    want = [tok.encoder[p] for w in words for p in _merge_scan(bpe_word(w), tok.ranks)]
    assert flat.tolist() == want


@given(st.text(max_size=200))
def test_encode_equals_piece_by_piece_rescanning(text):
    from npgpt.tokenizers.pattern import split_gpt2

    tok = gpt2_tok()
    tok._cache.clear()  # an empty cache: every piece goes through the batch merge
    tok._store.clear()

    want = [tok.encoder[p] for piece in split_gpt2(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))
            for p in _merge_scan(bpe_word(piece), tok.ranks)]
    assert tok.encode_ordinary(text).tolist() == want


@given(st.text(alphabet="ab", min_size=1, max_size=300))
def test_long_piece_merges_equal_rescanning_merge(word):
    tok = _ab_tok()  # the long-piece merges, run here on words of any length
    want = [tok.encoder[p] for p in _merge_scan(word, tok.ranks)]
    assert tok._merge_numpy(word) == want
    assert tok._merge_linked(np.array([tok.encoder[c] for c in word])) == want
