"""Real vocabularies (../shared/vocab, llama.cpp's GGUF files): npgpt equals Hugging Face token for token.

References (tests/fixtures/tokenizers/vocab_parity.json, made by make_vocab_parity.py): `tokenizers` on the
tokenizer.json built from each GGUF file (every vocabulary, every text), the sentencepiece library on the
SentencePiece ones, and transformers' own GGUF reading where its conversion follows llama.cpp's pipeline.
Live: hypothesis text against `tokenizers` where it is installed.  Everything skips without ../shared.
"""

from __future__ import annotations

import functools
import json
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from vocab_parity import REFERENCE, VOCAB_DIR, VOCABS, hf_tokenizer_json, vocab_path

from npgpt.tokenizers import JsonTokenizer, gguf_tokenizer_spec, load_tokenizer, read_gguf, tokenizer_from_dict

pytestmark = pytest.mark.skipif(not os.path.isdir(VOCAB_DIR), reason="../shared/vocab is absent")

# transformers' GGUF conversion follows llama.cpp for these; the others it converts with another
# pre-tokenizer (deepseek-llm: Llama 3's; falcon, starcoder: GPT-2's plain ByteLevel), adds a token the
# vocabulary lacks (llama-bpe: <|endoftext|> as id 128256), or puts no "▁" before a leading space
# (llama-spm, which sentencepiece and llama.cpp do; the sentencepiece references check it).
TRANSFORMERS_AGREES = {"gpt-2": None, "qwen2": None, "phi-3": None, "llama-bpe": "<|endoftext|>"}
# vocabularies that cannot give every text back: falcon has no token for some control bytes
NOT_LOSSLESS = {"falcon"}


@functools.cache
def reference() -> dict:
    with open(REFERENCE, encoding="utf-8") as f:
        return json.load(f)


@functools.cache
def npgpt_tok(name: str):
    return load_tokenizer(vocab_path(name))


@functools.cache
def hf_tok(name: str):
    tokenizers = pytest.importorskip("tokenizers")
    return tokenizers.Tokenizer.from_str(hf_tokenizer_json(gguf_tokenizer_spec(read_gguf(vocab_path(name)))))


def _has_special(tok: JsonTokenizer, text: str) -> bool:
    return any(t in text for t in tok.special_tokens) or any(a.content in text for a in tok.added)


@pytest.mark.parametrize("name", VOCABS)
def test_equal_to_tokenizers(name):
    tok = npgpt_tok(name)
    ref = reference()["vocabs"][name]["tokenizers"]
    for text, ids in zip(reference()["corpus"], ref):
        assert tok.encode(text, add_special_tokens=True).tolist() == ids, (name, text)


@pytest.mark.parametrize("name", [n for n in VOCABS if "sentencepiece" in reference()["vocabs"][n]]
                         if os.path.exists(REFERENCE) else [])
def test_equal_to_sentencepiece(name):
    tok = npgpt_tok(name)
    for text, ids in zip(reference()["corpus"], reference()["vocabs"][name]["sentencepiece"]):
        if not _has_special(tok, text):  # sentencepiece reads control tokens' text as text
            assert tok.encode(text).tolist() == ids, (name, text)


@pytest.mark.parametrize("name", sorted(TRANSFORMERS_AGREES))
def test_equal_to_transformers(name):
    tok = npgpt_tok(name)
    skip = TRANSFORMERS_AGREES[name]
    for text, ids in zip(reference()["corpus"], reference()["vocabs"][name]["transformers"]):
        if skip is None or skip not in text:
            assert tok.encode(text).tolist() == ids, (name, text)


@pytest.mark.parametrize("name", VOCABS)
def test_round_trips(name):
    tok = npgpt_tok(name)
    if name in NOT_LOSSLESS:
        pytest.skip(f"{name} has no token for some bytes")
    for text in reference()["corpus"]:
        if not _has_special(tok, text):
            assert tok.decode(tok.encode(text)) == text, (name, text)
            assert tok.decode(tok.encode(text, add_special_tokens=True), skip_special_tokens=True) == text


@pytest.mark.parametrize("name", VOCABS)
def test_tokenizer_json_built_from_the_vocabulary(tmp_path, name):
    """load_tokenizer(directory with tokenizer.json) gives the GGUF file's ids (SentencePiece scores as merges)."""
    (tmp_path / "tokenizer.json").write_text(hf_tokenizer_json(gguf_tokenizer_spec(read_gguf(vocab_path(name)))),
                                             encoding="utf-8")
    tok = load_tokenizer(tmp_path)
    assert isinstance(tok, JsonTokenizer)
    for text, ids in zip(reference()["corpus"], reference()["vocabs"][name]["tokenizers"]):
        assert tok.encode(text, add_special_tokens=True).tolist() == ids, (name, text)


TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=48) | st.lists(
    st.sampled_from(["'s", "'LL", " ", "  ", "\n", "\t", "123", "4567", "é", "e\u0301", "Привет", "你好", "👍🏽",
                     "👨\u200d👩\u200d👧", "\x00", "<s>", "<|endoftext|>", "\n\n", "▁", "a", "Z"]),
    max_size=12).map("".join)


@pytest.mark.parametrize("name", VOCABS)
@settings(max_examples=25)
@given(text=TEXT)
def test_live_against_tokenizers(name, text):
    assert npgpt_tok(name).encode(text, add_special_tokens=True).tolist() == hf_tok(name).encode(text).ids


def test_checkpoint_form():
    tok = npgpt_tok("phi-3")
    back = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))
    assert back == tok and back.encode("Hello <|end|> world").tolist() == tok.encode("Hello <|end|> world").tolist()


def test_defaults_of_llama_cpp():
    """BOS as llama.cpp adds it: Llama 3 (llama-bpe group) and SentencePiece vocabularies yes, GPT-2 no;
    Gemma 4 always."""
    assert npgpt_tok("llama-bpe").encode("x", add_special_tokens=True).tolist()[0] == 128000
    assert npgpt_tok("llama-spm").encode("x", add_special_tokens=True).tolist()[0] == 1
    assert npgpt_tok("gemma-4").encode("x", add_special_tokens=True).tolist()[0] == 2
    assert npgpt_tok("gpt-2").encode("x", add_special_tokens=True).tolist() == [87]
    assert npgpt_tok("deepseek-llm").encode("x", add_special_tokens=True).tolist()[0] == 100000  # add_bos_token


@pytest.mark.parametrize("name", ["llama-spm", "gemma-4", "llama-bpe"])
def test_long_text_against_tokenizers(name):
    """A long text (cut into independent chunks at "▁" where no token crosses) gives tokenizers' ids."""
    text = " ".join(reference()["corpus"]) * 3
    assert npgpt_tok(name).encode(text, add_special_tokens=True).tolist() == hf_tok(name).encode(text).ids


@pytest.mark.parametrize("name", ["llama-spm", "phi-3"])
def test_tokenizer_json_written_by_transformers(tmp_path, name):
    """transformers converts the GGUF vocabulary and writes its own tokenizer.json (Llama 2's as Metaspace
    with prepend_scheme first, Phi-3's as Prepend/Replace normalizers): npgpt reads that file and encodes and
    decodes as transformers does.  (The other families pass too; their conversion takes 15-50 s each.)"""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    tt = transformers.AutoTokenizer.from_pretrained(VOCAB_DIR, gguf_file=os.path.basename(vocab_path(name)))
    tt.save_pretrained(str(tmp_path))
    tok = load_tokenizer(tmp_path / "tokenizer.json")
    for text in reference()["corpus"]:
        ids = tt.encode(text, add_special_tokens=True)
        assert tok.encode(text, add_special_tokens=True).tolist() == ids, (name, text)
        assert tok.decode(ids) == tt.decode(ids), (name, text)


def test_train_and_sample_with_a_gguf_tokenizer(tmp_path):
    """npgpt train --tokenizer x.gguf stores the pipeline in the checkpoint; npgpt sample rebuilds it."""
    import subprocess
    import sys

    from npgpt.training.checkpoint import load_checkpoint

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    text = tmp_path / "t.txt"
    text.write_text("To be, or not to be: that is the question. Привет 你好 👍\n" * 40, encoding="utf-8")

    def run(*args):
        p = subprocess.run([sys.executable, "-m", "npgpt", *map(str, args)], cwd=tmp_path, env=env,
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        return p.stdout

    run("train", text, "--tokenizer", vocab_path("phi-3"), "--max-iters", "2", "--eval-interval", "2",
        "--eval-iters", "1", "--n-layer", "1", "--n-head", "2", "--n-embd", "16", "--block-size", "16",
        "--batch-size", "2", "--sample-len", "5", "--out-dir", tmp_path / "out")
    ck = load_checkpoint(str(tmp_path / "out" / "ckpt.npz"))
    assert tokenizer_from_dict(ck.meta["tokenizer"]) == npgpt_tok("phi-3")
    out = run("sample", "--ckpt", tmp_path / "out" / "ckpt.npz", "--prompt", "To be <|end|>",
              "--max-new-tokens", "4", "--num-samples", "1")
    assert "To be <|end|>" in out
