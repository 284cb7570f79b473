"""SentencePiece-style BPE: merges by score (leftmost on a tie), byte fallback, the "▁" prefix, round trips,
and tokenizer.model files read with npgpt's protobuf reader against the sentencepiece library."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from vocab_parity import spm_model_bytes

from npgpt.tokenizers import JsonTokenizer, load_sentencepiece, load_tokenizer, tokenizer_from_dict
from npgpt.tokenizers.sentencepiece import BYTE, CONTROL, NORMAL, UNKNOWN, USER_DEFINED, spm_spec

SP = "\u2581"
# a tiny vocabulary: control tokens, bytes, characters, and merged pieces with scores
PIECES = ([("<unk>", 0.0, UNKNOWN), ("<s>", 0.0, CONTROL), ("</s>", 0.0, CONTROL)]
          + [(f"<0x{b:02X}>", 0.0, BYTE) for b in range(256)]
          + [(c, -10.0 - i * 0.01, NORMAL) for i, c in enumerate(SP + "abcdehlorwxyz,.!'")]
          + [("ab", -1.0, NORMAL), ("bc", -1.0, NORMAL), ("abc", -0.5, NORMAL), (SP + "a", -2.0, NORMAL),
             ("he", -3.0, NORMAL), ("ll", -3.5, NORMAL), ("hell", -2.5, NORMAL), ("hello", -1.5, NORMAL),
             (SP + "hello", -1.2, NORMAL), ("wor", -4.0, NORMAL), ("or", -3.8, NORMAL), ("ld", -3.9, NORMAL),
             ("world", -2.2, NORMAL), (SP + "world", -2.1, NORMAL), ("xx", -5.0, NORMAL), ("<mask>", 0.0, USER_DEFINED),
             (SP + SP, -6.0, NORMAL)])


def tiny(add_space_prefix: bool = True) -> JsonTokenizer:
    return JsonTokenizer(spm_spec([p[0] for p in PIECES], [p[1] for p in PIECES], [p[2] for p in PIECES],
                                  bos_id=1, eos_id=2, unk_id=0, add_bos=True, add_eos=False,
                                  add_space_prefix=add_space_prefix), "tiny")


def ids(*pieces: str) -> list[int]:
    index = {p[0]: i for i, p in enumerate(PIECES)}
    return [index[p] for p in pieces]


def test_merges_follow_scores():
    t = tiny()
    assert t.encode("hello world").tolist() == ids(SP + "hello", SP + "world")
    # "abc": ab and bc tie at -1.0, the leftmost (ab) merges first, then ab+c = abc
    assert tiny(False).encode("abc").tolist() == ids("abc")
    assert tiny(False).encode("xxx").tolist() == ids("xx", "x")  # leftmost pair of equal score first


def test_byte_fallback_unk_prefix_and_bos():
    t = tiny()
    assert t.encode("é").tolist() == ids(SP, "<0xC3>", "<0xA9>")
    assert t.encode("hi", add_special_tokens=True).tolist() == ids("<s>", SP, "h", "<0x69>")
    assert tiny(False).encode("  ").tolist() == ids(SP + SP)
    assert t.encode("").tolist() == [] and t.encode("", add_special_tokens=True).tolist() == [1]
    assert t.encode("a<mask>b").tolist() == ids(SP + "a", "<mask>", SP, "b")  # "▁" again after an added token


@given(st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40))
def test_round_trip(text):
    for t in (tiny(), tiny(False)):
        if "<" not in text:
            assert t.decode(t.encode(text)) == text
    t = tiny()
    back = tokenizer_from_dict(t.to_dict())
    assert back.encode(text).tolist() == t.encode(text).tolist()


@pytest.fixture
def model_file(tmp_path):
    f = tmp_path / "tokenizer.model"
    f.write_bytes(spm_model_bytes([p[0] for p in PIECES], [p[1] for p in PIECES], [p[2] for p in PIECES],
                                  unk_id=0, bos_id=1, eos_id=2))
    return f


def test_model_file_equals_the_spec(model_file):
    t = load_sentencepiece(model_file)
    for text in ["hello world", "abc xxx", "é ü 👍", "  lead", ""]:
        assert t.encode(text, add_special_tokens=True).tolist() == tiny().encode(text, True).tolist()
    assert load_tokenizer(model_file.parent).encode("hello").tolist() == tiny().encode("hello").tolist()


@given(st.lists(st.sampled_from(list("abcdehlorwxyz ,.!'é\n") + ["hello", "world", "  "]), max_size=15).map("".join))
def test_model_file_against_sentencepiece(tmp_path_factory, text):
    spm = pytest.importorskip("sentencepiece")
    data = spm_model_bytes([p[0] for p in PIECES], [p[1] for p in PIECES], [p[2] for p in PIECES],
                           unk_id=0, bos_id=1, eos_id=2)
    sp = spm.SentencePieceProcessor(model_proto=data)
    f = tmp_path_factory.mktemp("spm") / "t.model"
    f.write_bytes(data)
    assert load_sentencepiece(f).encode(text).tolist() == sp.encode(text)


def test_refused_models(tmp_path):
    from vocab_parity import _bytes_field, _key, _varint

    base = spm_model_bytes(["<unk>", "a"], [0.0, -1.0], [UNKNOWN, NORMAL], unk_id=0, bos_id=-1, eos_id=-1)
    f = tmp_path / "u.model"
    f.write_bytes(base + _bytes_field(2, _key(3, 0) + _varint(1)))  # trainer_spec.model_type = UNIGRAM
    with pytest.raises(ValueError, match="model type Unigram is not supported") as e:
        load_sentencepiece(f)
    assert "\n" not in str(e.value) and str(f) in str(e.value)
    f.write_bytes(base + _bytes_field(3, _bytes_field(1, b"nmt_nfkc")))
    with pytest.raises(ValueError, match="normalization rule 'nmt_nfkc'"):
        load_sentencepiece(f)
    f.write_bytes(base + _bytes_field(3, _key(4, 0) + _varint(1)))
    with pytest.raises(ValueError, match="remove_extra_whitespaces"):
        load_sentencepiece(f)
    f.write_bytes(b"\x0a\xff")
    with pytest.raises(ValueError, match="truncated protobuf"):
        load_sentencepiece(f)
