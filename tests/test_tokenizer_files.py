"""Tokenizer files: the fixture's checksum, the three loaders agree, the writer's files load back (in npgpt,
`tokenizers` and transformers), and every bad file is a one-line ValueError naming it."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil

import pytest
from tokenizer_fixtures import CORPUS, TIKTOKEN_FILE, gpt2_tok, hf_dir

from npgpt.tokenizers import (
    load_hf,
    load_tiktoken,
    load_tokenizer,
    load_tokenizer_json,
    read_tiktoken_ranks,
    save_tokenizer,
    train_bpe,
)

GPT2_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"


def one_line_error(fn, *args, match: str):
    with pytest.raises(ValueError, match=match) as e:
        fn(*args)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_fixture_checksum():
    with open(TIKTOKEN_FILE, "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == GPT2_SHA256


def test_ranks_file():
    ranks = read_tiktoken_ranks(TIKTOKEN_FILE)
    assert len(ranks) == 50256 and sorted(ranks.values()) == list(range(50256))
    assert ranks[b"!"] == 0 and ranks[b" the"] == 262


def test_derived_hf_files_match_gpt2s_published_form():
    d = hf_dir()
    with open(f"{d}/merges.txt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    assert lines[0] == "#version: 0.2" and lines[1:4] == ["Ġ t", "Ġ a", "h e"]  # GPT-2's first merges
    assert len(lines) == 1 + 50000 + 1  # header, 50,000 merges, the final newline
    with open(f"{d}/vocab.json", encoding="utf-8") as f:
        vocab = json.load(f)
    assert len(vocab) == 50257 and vocab["<|endoftext|>"] == 50256 and vocab["Ġthe"] == 262


def test_every_loader_gives_the_same_tokenizer(tmp_path):
    tok = gpt2_tok()
    d = hf_dir()
    assert load_hf(f"{d}/vocab.json", f"{d}/merges.txt") == tok
    assert load_tokenizer(d) == tok
    assert load_tokenizer(f"{d}/vocab.json") == tok
    assert load_tokenizer(TIKTOKEN_FILE) == tok


def test_tokenizer_json_from_hf_tokenizers(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers.models import BPE

    d = hf_dir()
    t = tokenizers.Tokenizer(BPE.from_file(f"{d}/vocab.json", f"{d}/merges.txt"))
    t.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = tokenizers.decoders.ByteLevel()
    t.add_special_tokens(["<|endoftext|>"])
    t.save(str(tmp_path / "tokenizer.json"))
    tok = load_tokenizer_json(tmp_path / "tokenizer.json")
    assert tok == gpt2_tok()
    assert load_tokenizer(tmp_path) == tok  # a directory with tokenizer.json


def test_tokenizer_json_written_by_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    fast = transformers.GPT2TokenizerFast.from_pretrained(hf_dir())
    fast.save_pretrained(str(tmp_path))
    tok = load_tokenizer_json(tmp_path / "tokenizer.json")
    assert tok.encode("Hello world <|endoftext|>", allowed_special="all").tolist() == [15496, 995, 220, 50256]


def test_trained_tokenizer_saved_files_load_everywhere(tmp_path):
    text = " ".join(CORPUS) * 3
    tok = train_bpe(text, 300, ["<|endoftext|>"])
    save_tokenizer(tok, tmp_path)
    assert load_tokenizer(tmp_path) == tok
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers.models import BPE

    t = tokenizers.Tokenizer(BPE.from_file(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt")))
    t.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    for s in CORPUS:
        assert t.encode(s).ids == tok.encode_ordinary(s).tolist(), s
    transformers = pytest.importorskip("transformers")
    auto = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    text = "Hello<|endoftext|>wörld"
    assert auto.encode(text) == tok.encode(text, allowed_special="all").tolist()
    assert auto.decode(tok.encode("naïve 🎉").tolist()) == "naïve 🎉"


def test_missing_empty_and_unknown_files(tmp_path):
    one_line_error(load_tokenizer, tmp_path / "nope", match="no such file or directory")
    one_line_error(load_tokenizer, tmp_path, match="no tokenizer files")
    (tmp_path / "x.txt").write_text("hi")
    one_line_error(load_tokenizer, tmp_path / "x.txt", match="unknown tokenizer file")
    (tmp_path / "empty.tiktoken").write_bytes(b"")
    one_line_error(load_tokenizer, tmp_path / "empty.tiktoken", match="file is empty")
    (tmp_path / "vocab.json").write_text("{}")
    one_line_error(load_tokenizer, tmp_path, match="merges.txt: no such file")


def test_truncated_and_non_json_files(tmp_path):
    d = hf_dir()
    data = open(f"{d}/vocab.json", "rb").read()
    (tmp_path / "vocab.json").write_bytes(data[: len(data) // 2])
    shutil.copy(f"{d}/merges.txt", tmp_path / "merges.txt")
    one_line_error(load_tokenizer, tmp_path, match=r"vocab.json: truncated JSON")
    (tmp_path / "vocab.json").write_text("not json at all")
    one_line_error(load_tokenizer, tmp_path, match=r"vocab.json: not valid JSON")
    (tmp_path / "vocab.json").write_text("[1, 2]")
    one_line_error(load_tokenizer, tmp_path, match=r"expected a JSON object \{token: id\}, got list")
    (tmp_path / "vocab.json").write_bytes(b"\xff\xfe{}")
    one_line_error(load_tokenizer, tmp_path, match="not UTF-8 text")
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "Unigram"}}')
    one_line_error(load_tokenizer, tmp_path, match="tokenizer.json: model 'Unigram' is not supported")


def test_inconsistent_merges(tmp_path):
    d = hf_dir()
    shutil.copy(f"{d}/vocab.json", tmp_path / "vocab.json")
    merges = open(f"{d}/merges.txt", encoding="utf-8").read().split("\n")
    merges[5] = "Ġt qxqxqxq"
    (tmp_path / "merges.txt").write_text("\n".join(merges), encoding="utf-8")
    one_line_error(load_tokenizer, tmp_path, match=r"merge 4 \(Ġt qxqxqxq\): 'qxqxqxq' is not in the vocabulary")
    merges[5] = "three parts here"
    (tmp_path / "merges.txt").write_text("\n".join(merges), encoding="utf-8")
    one_line_error(load_tokenizer, tmp_path, match=r"merges.txt: line 6: expected 'left right'")


def test_duplicate_ids_in_vocab_json(tmp_path):
    d = hf_dir()
    vocab = json.load(open(f"{d}/vocab.json", encoding="utf-8"))
    vocab["Ġthe"] = 263
    (tmp_path / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    shutil.copy(f"{d}/merges.txt", tmp_path / "merges.txt")
    one_line_error(load_tokenizer, tmp_path, match="id 263 is given to both")


def test_bad_tiktoken_files(tmp_path):
    lines = open(TIKTOKEN_FILE, "rb").read().split(b"\n")
    bad = tmp_path / "bad.tiktoken"
    bad.write_bytes(b"\n".join(lines[:100] + [lines[100].split()[0]]))  # cut in the middle of a line
    one_line_error(load_tiktoken, bad, match=r"line 101: expected 'base64 rank'.*truncated file")
    bad.write_bytes(b"\n".join(lines[:100] + [base64.b64encode(b"zzz") + b" 5"]))
    one_line_error(load_tiktoken, bad, match="line 101: duplicate rank 5 .also on line 6.")
    bad.write_bytes(b"\n".join(lines[:100] + [lines[3].split()[0] + b" 100"]))
    one_line_error(load_tiktoken, bad, match="line 101: token b'\\$' already has rank 3")
    bad.write_bytes(b"\n".join(lines[:100] + [b"@@@@ 100"]))
    one_line_error(load_tiktoken, bad, match="is not base64")
    bad.write_bytes(b"\n".join(lines[:10]))  # only 10 byte tokens: the vocabulary cannot spell every byte
    one_line_error(load_tiktoken, bad, match="byte 0x.. has no single-byte token")


def test_a_tiktoken_file_cut_in_the_middle_of_a_rank(tmp_path):
    """Issue 42, item 10: a file cut in the middle of line 1750's number ("... 1749" -> "... 174") was
    reported as a duplicate rank only; the last line of a file without its final newline says it may be cut."""
    lines = open(TIKTOKEN_FILE, "rb").read().split(b"\n")
    assert lines[1749].endswith(b" 1749")
    bad = tmp_path / "cut.tiktoken"
    bad.write_bytes(b"\n".join(lines[:1749] + [lines[1749][:-1]]))
    one_line_error(load_tiktoken, bad, match=r"cut.tiktoken: line 1750: duplicate rank 174 \(also on line 175\) "
                                              r"\(truncated file\?\)$")
    bad.write_bytes(b"\n".join(lines[:1749] + [lines[1749][:-1]]) + b"\n")  # ends with a newline: not cut
    one_line_error(load_tiktoken, bad, match=r"line 1750: duplicate rank 174 \(also on line 175\)$")


def test_save_rejects_non_bpe(tmp_path):
    with pytest.raises(ValueError, match="tok: expected a BPETokenizer"):
        save_tokenizer("gpt2", tmp_path)  # type: ignore[arg-type]
