"""tokenizer.json: every component against Hugging Face `tokenizers` (committed ids of synthetic files, and live
hypothesis text where tokenizers is installed), Split's behaviors, added tokens, BOS/EOS, round trips, the
checkpoint form, and one-line refusals naming the component and the file."""

from __future__ import annotations

import functools
import json
import os
import unicodedata

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from npgpt.tokenizers import BPETokenizer, JsonTokenizer, load_tokenizer, tokenizer_from_dict
from npgpt.tokenizers.tokenizer_json import _split_one

HERE = os.path.dirname(os.path.abspath(__file__))
SYNTHETIC = os.path.join(HERE, "fixtures", "tokenizers", "synthetic.json")


@functools.cache
def synthetic() -> dict:
    with open(SYNTHETIC, encoding="utf-8") as f:
        return json.load(f)


NAMES = ["bytelevel_split", "spm_bytefallback", "metaspace_punct", "split_behaviors", "whitespace"]


@functools.cache
def tok(name: str) -> JsonTokenizer:
    return JsonTokenizer(json.loads(synthetic()["tokenizers"][name]["json"]), name)


@functools.cache
def hf(name: str):
    tokenizers = pytest.importorskip("tokenizers")
    return tokenizers.Tokenizer.from_str(synthetic()["tokenizers"][name]["json"])


@pytest.mark.parametrize("name", NAMES)
def test_committed_ids(name):
    ref = synthetic()["tokenizers"][name]
    t = tok(name)
    for i, text in enumerate(synthetic()["corpus"]):
        assert t.encode(text, add_special_tokens=True).tolist() == ref["ids"][i], (name, text)
        ids = t.encode(text)
        assert ids.tolist() == ref["ids_plain"][i], (name, text)
        assert t.decode(ids) == ref["decoded"][i], (name, text)


TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40) | st.sampled_from(
    ["I'M 'tis", "a,b;c--d|e", "  \t\n\n x", "<s>word [MASK] <pad>  z", "1234567", "e\u0301\u0308", "ﬁ ①"])


@pytest.mark.parametrize("name", NAMES)
@given(text=TEXT)
def test_live_against_tokenizers(name, text):
    h = hf(name)
    assert tok(name).encode(text, add_special_tokens=True).tolist() == h.encode(text).ids
    ids = h.encode(text, add_special_tokens=False).ids
    assert tok(name).decode(ids) == h.decode(ids, skip_special_tokens=False)


@given(text=st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=60))
def test_round_trips(text):
    """Lossless files give the text back: byte-level (for NFC text, its normalizer) and SentencePiece-style
    with byte fallback (without the added tokens' text)."""
    assume(not any(t in text for t in ("<", "[MASK]", "word")))
    nfc = unicodedata.normalize("NFC", text)
    assert tok("bytelevel_split").decode(tok("bytelevel_split").encode(nfc)) == nfc
    assert tok("spm_bytefallback").decode(tok("spm_bytefallback").encode(text)) == text


def test_bos_eos_and_skip_special():
    t = tok("spm_bytefallback")
    s_id, e_id = t.token_to_id("<s>"), t.token_to_id("</s>")
    ids = t.encode("hi", add_special_tokens=True).tolist()
    assert ids[0] == s_id and ids[-1] == e_id and ids[1:-1] == t.encode("hi").tolist()
    assert t.encode("", add_special_tokens=True).tolist() == [s_id, e_id]
    assert t.decode(ids, skip_special_tokens=True) == "hi"
    assert t.special_tokens == {"<unk>": 0, "<s>": s_id, "</s>": e_id}  # the trainer made <unk> special
    assert tok("metaspace_punct").encode("x", add_special_tokens=True).tolist()[-1] == \
        tok("metaspace_punct").token_to_id("<eos>")


def test_added_token_options():
    t = tok("bytelevel_split")
    pad, mask, word = t.token_to_id("<pad>"), t.token_to_id("[MASK]"), t.token_to_id("word")
    assert t.encode("<pad>   x").tolist()[:1] == [pad] and len(t.encode("<pad>   x")) == 2  # rstrip takes spaces
    assert t.encode("a   [MASK]").tolist()[-1] == mask and t.decode(t.encode("a   [MASK]")) == "a[MASK]"  # lstrip
    assert word in t.encode("a word b").tolist() and word not in t.encode("swordfish").tolist()  # single_word


def test_split_behaviors_as_documented():
    import re

    dash = re.compile("-")
    text = "the-final--countdown"
    assert _split_one(text, dash, "Removed", False) == ["the", "final", "countdown"]
    assert _split_one(text, dash, "Isolated", False) == ["the", "-", "final", "-", "-", "countdown"]
    assert _split_one(text, dash, "MergedWithPrevious", False) == ["the-", "final-", "-", "countdown"]
    assert _split_one(text, dash, "MergedWithNext", False) == ["the", "-final", "-", "-countdown"]
    assert _split_one(text, dash, "Contiguous", False) == ["the", "-", "final", "--", "countdown"]
    assert _split_one(text, dash, "Removed", True) == ["-", "-", "-"]


def test_both_merge_syntaxes_and_checkpoint_form():
    d = json.loads(synthetic()["tokenizers"]["bytelevel_split"]["json"])
    merges = d["model"]["merges"]
    as_pairs = [m.split(" ", 1) if isinstance(m, str) else m for m in merges]
    as_strings = [" ".join(m) for m in as_pairs]
    texts = synthetic()["corpus"]
    ref = [tok("bytelevel_split").encode(x).tolist() for x in texts]
    for form in (as_pairs, as_strings):
        t = JsonTokenizer({**d, "model": {**d["model"], "merges": form}}, "x")
        assert [t.encode(x).tolist() for x in texts] == ref
    t = tok("spm_bytefallback")
    back = tokenizer_from_dict(json.loads(json.dumps(t.to_dict())))
    assert back == t and back.encode("Hello  there").tolist() == t.encode("Hello  there").tolist()


def test_load_tokenizer_picks_the_engine(tmp_path):
    (tmp_path / "tokenizer.json").write_text(synthetic()["tokenizers"]["metaspace_punct"]["json"], encoding="utf-8")
    t = load_tokenizer(tmp_path)
    assert isinstance(t, JsonTokenizer) and t.encode("Hi!").tolist() == tok("metaspace_punct").encode("Hi!").tolist()
    assert t.encode("hi").dtype == np.uint16


def test_gpt2_form_stays_bpetokenizer(tmp_path):
    vocab = {c: i for i, c in enumerate(sorted(set(__import__("npgpt").tokenizers.byte_unicode.bytes_to_unicode()
                                                    .values())))}
    d = {"model": {"type": "BPE", "vocab": vocab, "merges": []}, "normalizer": None,
         "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
         "post_processor": {"type": "TemplateProcessing", "single": [{"Sequence": {"id": "A", "type_id": 0}}],
                            "special_tokens": {}}, "decoder": {"type": "ByteLevel"}, "added_tokens": []}
    (tmp_path / "tokenizer.json").write_text(json.dumps(d))
    assert isinstance(load_tokenizer(tmp_path), BPETokenizer)


def _base() -> dict:
    return json.loads(synthetic()["tokenizers"]["whitespace"]["json"])


REFUSED = [
    ("normalizer", {"type": "BertNormalizer"}, "normalizer 'BertNormalizer' is not supported"),
    ("normalizer", {"type": "Precompiled", "precompiled_charsmap": ""}, "normalizer 'Precompiled'"),
    ("pre_tokenizer", {"type": "BertPreTokenizer"}, "pre_tokenizer 'BertPreTokenizer' is not supported"),
    ("pre_tokenizer", {"type": "UnicodeScripts"}, "pre_tokenizer 'UnicodeScripts'"),
    ("pre_tokenizer", {"type": "Split", "pattern": {"String": "x"}, "behavior": "Odd"}, "behavior 'Odd'"),
    ("pre_tokenizer", {"type": "Metaspace", "prepend_scheme": "sometimes"}, "prepend_scheme 'sometimes'"),
    ("decoder", {"type": "WordPiece"}, "decoder 'WordPiece' is not supported"),
    ("decoder", {"type": "CTC"}, "decoder 'CTC'"),
    ("post_processor", {"type": "Foo"}, "post_processor 'Foo' is not supported"),
    ("post_processor", {"type": "TemplateProcessing", "single": [{"Sequence": {"id": "B", "type_id": 0}}]},
     "other than one \\$A"),
    ("model", {"type": "Unigram", "vocab": []}, "model 'Unigram' is not supported"),
    ("model", {"type": "WordPiece", "vocab": {}}, "model 'WordPiece'"),
    ("model", {"type": "BPE", "vocab": {"a": 0}, "merges": [], "dropout": 0.1}, "dropout 0.1"),
    ("model", {"type": "BPE", "vocab": {"a": 0}, "merges": [], "continuing_subword_prefix": "##"},
     "continuing_subword_prefix '##'"),
]


@pytest.mark.parametrize("key, value, match", REFUSED)
def test_refused_components_are_one_line(tmp_path, key, value, match):
    d = _base()
    d[key] = value
    f = tmp_path / "tokenizer.json"
    f.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=match) as e:
        load_tokenizer(f)
    assert "\n" not in str(e.value) and str(f) in str(e.value)


def test_bad_values_are_one_line(tmp_path):
    for d, match in [({"model": {"type": "BPE", "vocab": {"a": 0, "b": 0}, "merges": []}}, "id 0 is given to both"),
                     ({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [5]}}, "merge 0: expected"),
                     ({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [], "unk_token": "<u>"}},
                      "unk_token '<u>' is not in the vocabulary"),
                     ({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "added_tokens": [{"id": "x"}]},
                      "added_tokens: expected")]:
        f = tmp_path / "tokenizer.json"
        f.write_text(json.dumps(d))
        with pytest.raises(ValueError, match=match) as e:
            load_tokenizer(f)
        assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="out of range"):
        tok("whitespace").decode([10**6])


SPLIT_PATTERNS = [r"(?=(\d{3})+(?!\d))", r"-", r"[aeiou]+", r"\s*", r"\p{N}|\p{P}+"]
HF_BEHAVIORS = {"Isolated": "isolated", "Removed": "removed", "MergedWithPrevious": "merged_with_previous",
                "MergedWithNext": "merged_with_next", "Contiguous": "contiguous"}


@pytest.mark.parametrize("behavior", sorted(HF_BEHAVIORS))
@pytest.mark.parametrize("invert", [False, True])
@given(text=st.lists(st.sampled_from(list("ab-e io12 3.,\n") + ["456", "--", "é"]), max_size=12).map("".join))
def test_split_against_tokenizers(behavior, invert, text):
    tokenizers = pytest.importorskip("tokenizers")
    from npgpt.tokenizers.tokenizer_json import _compile

    for source in SPLIT_PATTERNS:
        hf = tokenizers.pre_tokenizers.Split(tokenizers.Regex(source), behavior=HF_BEHAVIORS[behavior], invert=invert)
        want = [t for t, _ in hf.pre_tokenize_str(text)]
        assert _split_one(text, _compile(source), behavior, invert) == want, (source, text)
