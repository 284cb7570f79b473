"""BPE training: a worked example by hand, the requested size, determinism, encoding the training text
with the learned merges reproduces training's own segmentation, bad arguments."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given

from npgpt.tokenizers import pretokenize, train_bpe


def test_worked_example_by_hand():
    # pieces: "aaab" x1, " aaab" x1, " ab" x1 (the pattern keeps the space with the word)
    # pair counts over bytes: (a,a)=4, (a,b)=3, (' ',a)=2
    #   merge 0: (a, a) -> 256 "aa";  pieces: [aa a b], [' ' aa a b], [' ' a b]
    #   counts: (aa,a)=2, (a,b)=3, (' ',aa)=1, (' ',a)=1  -> merge 1: (a, b) -> 257 "ab"
    #   pieces: [aa ab], [' ' aa ab], [' ' ab]; counts: (aa,ab)=2, (' ',aa)=1, (' ',ab)=1
    #   merge 2: (aa, ab) -> 258 "aaab"; then only count-1 pairs remain: training stops early.
    tok = train_bpe("aaab aaab ab", 300)
    assert tok.merges == [("a", "a"), ("a", "b"), ("aa", "ab")]
    assert tok.vocab_size == 259
    assert tok.encoder["aaab"] == 258 and tok.encoder["a"] == ord("a")
    assert tok.encode("aaab").tolist() == [258] and tok.encode(" ab").tolist() == [32, 257]


def test_tie_break_is_the_smaller_pair():
    # every pair occurs twice: (a,b) < (b,c) < (c,d) by id, so (a,b) is merged first
    tok = train_bpe("abcd abcd", 257)
    assert tok.merges == [("a", "b")]


def test_requested_size_with_special_tokens():
    text = open_corpus()
    tok = train_bpe(text, 400, ["<|endoftext|>"])
    assert tok.vocab_size == 400 and len(tok.merges) == 143 and tok.eot_token == 399
    assert train_bpe(text, 400, ["<|endoftext|>"]) == tok  # deterministic
    assert tok.decode(tok.encode(text).tolist()) == text


def open_corpus() -> str:
    from npgpt.training.data import bundled_corpus_path

    return bundled_corpus_path().read_text(encoding="utf-8")[:60_000]


@given(st.text(st.sampled_from("ab c\néü🎉"), max_size=200))
def test_encoding_reproduces_training_segmentation(text):
    # training's final segmentation of each piece is the learned merges applied in order: encode must agree
    tok = train_bpe(text, 300)
    total = sum(len(tok.encode(p).tolist()) for p in pretokenize(text))
    assert len(tok.encode(text).tolist()) == total
    assert tok.decode(tok.encode(text).tolist()) == text


def test_progress_callback():
    calls = []
    train_bpe(open_corpus(), 256 + 130, progress=lambda done, want: calls.append((done, want)))
    assert calls == [(64, 130), (128, 130)]


@pytest.mark.parametrize("vocab_size, msg", [(255, "expected an integer >= 256"), (256.0, "expected an integer"),
                                             (True, "expected an integer")])
def test_bad_vocab_size(vocab_size, msg):
    with pytest.raises(ValueError, match=msg):
        train_bpe("abc", vocab_size)


def test_specials_count_toward_the_size():
    with pytest.raises(ValueError, match=r">= 257 \(256 bytes \+ the special tokens\)"):
        train_bpe("abc", 256, ["<|endoftext|>"])
