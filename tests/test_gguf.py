"""GGUF reader: every metadata value type, the tensor directory with offsets and alignment, damaged files as
one-line errors, and agreement with the `gguf` package on the real vocabularies in ../shared/vocab."""

from __future__ import annotations

import os
import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from vocab_parity import VOCAB_DIR, vocab_path

from npgpt.tokenizers.gguf import (
    ARRAY, BOOL, FLOAT32, FLOAT64, INT8, INT16, INT32, INT64, STRING, UINT8, UINT16, UINT32, UINT64, GGUFTensor,
    parse_gguf, read_gguf, write_gguf,
)

HAVE_SHARED = os.path.isdir(VOCAB_DIR)

METADATA = {
    "general.architecture": ("llama", STRING),
    "u8": (255, UINT8), "i8": (-128, INT8), "u16": (65535, UINT16), "i16": (-32768, INT16),
    "u32": (4_000_000_000, UINT32), "i32": (-2_000_000_000, INT32), "f32": (0.5, FLOAT32),
    "bool_t": (True, BOOL), "bool_f": (False, BOOL), "u64": (2**63 + 5, UINT64), "i64": (-(2**62), INT64),
    "f64": (1e-300, FLOAT64), "str": ("héllo ▁ 🎉", STRING), "empty": ("", STRING),
    "a_u8": ([1, 2, 255], (ARRAY, UINT8)), "a_i32": ([-1, 0, 7], (ARRAY, INT32)),
    "a_f32": ([0.25, -1.5], (ARRAY, FLOAT32)), "a_bool": ([True, False, True], (ARRAY, BOOL)),
    "a_i64": ([-(2**40), 3], (ARRAY, INT64)), "a_f64": ([3.5], (ARRAY, FLOAT64)), "a_u16": ([9], (ARRAY, UINT16)),
    "a_i8": ([-3], (ARRAY, INT8)), "a_i16": ([-300], (ARRAY, INT16)), "a_u32": ([70000], (ARRAY, UINT32)),
    "a_u64": ([2**60], (ARRAY, UINT64)), "a_empty": ([], (ARRAY, INT32)),
    "a_str": (["a", "", "▁b c", "\n"], (ARRAY, STRING)),
    "a_nested": ([[1, 2], [3]], (ARRAY, ARRAY, INT32)),
}


def _same(got, want):
    if isinstance(want, list):
        if len(want) and isinstance(want[0], list):
            return len(got) == len(want) and all(_same(g, w) for g, w in zip(got, want))
        return list(np.asarray(got).tolist()) == want
    return got == want


def test_every_value_type(tmp_path):
    f = tmp_path / "m.gguf"
    write_gguf(f, METADATA)
    g = read_gguf(f)
    assert g.version == 3 and g.tensors == [] and g.alignment == 32
    for key, (value, _) in METADATA.items():
        assert _same(g.metadata[key], value), key
    assert g.value_types["a_nested"] == "array" and g.value_types["bool_t"] == "bool"
    assert isinstance(g.metadata["bool_t"], bool) and g.metadata["a_bool"].dtype == bool
    assert g.metadata["a_f32"].dtype == np.float32 and g.metadata["a_u64"].dtype == np.uint64


@pytest.mark.parametrize("alignment", [32, 64, 8])
def test_tensor_directory(tmp_path, alignment):
    rng = np.random.default_rng(0)
    tensors = {"tok_embd.weight": rng.standard_normal((5, 3)).astype(np.float32),
               "blk.0.attn_q.weight": rng.standard_normal((2, 4, 6)).astype(np.float16),
               "scalar_like": np.array([1.5], dtype=np.float32)}
    f = tmp_path / "t.gguf"
    write_gguf(f, {"general.architecture": ("llama", STRING)}, tensors, alignment=alignment)
    g = read_gguf(f)
    data = f.read_bytes()
    assert g.alignment == alignment and g.data_offset % alignment == 0
    assert [t.name for t in g.tensors] == list(tensors)
    for t, arr in zip(g.tensors, tensors.values()):
        assert isinstance(t, GGUFTensor) and t.shape == arr.shape and t.nbytes == arr.nbytes
        assert (t.offset - g.data_offset) % alignment == 0
        assert t.type_name == {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16"}[arr.dtype]
        back = np.frombuffer(data[t.offset:t.offset + t.nbytes], dtype=arr.dtype).reshape(arr.shape)
        np.testing.assert_array_equal(back, arr)


def test_version_1_counts_are_32_bit():
    # a version-1 file: 32-bit counts and string lengths
    key = b"general.name"
    body = b"GGUF" + struct.pack("<III", 1, 0, 1) + struct.pack("<I", len(key)) + key + struct.pack("<I", STRING)
    body += struct.pack("<I", 3) + b"abc"
    g = parse_gguf(body, "v1.gguf")
    assert g.version == 1 and g.metadata == {"general.name": "abc"}


def test_big_endian_file():
    key = b"k"
    body = b"GGUF" + struct.pack(">IQQ", 3, 0, 2) + struct.pack(">Q", 1) + key + struct.pack(">I", UINT32)
    body += struct.pack(">I", 7) + struct.pack(">Q", 1) + b"a" + struct.pack(">IIQ", ARRAY, INT16, 2)
    body += struct.pack(">hh", -2, 300)
    g = parse_gguf(body, "be.gguf")
    assert g.metadata["k"] == 7 and g.metadata["a"].tolist() == [-2, 300]


def one_line(fn, *args, match):
    with pytest.raises(ValueError, match=match) as e:
        fn(*args)
    assert "\n" not in str(e.value)


def test_damaged_files(tmp_path):
    f = tmp_path / "m.gguf"
    write_gguf(f, METADATA, {"w": np.ones((4, 4), np.float32)})
    data = f.read_bytes()
    one_line(parse_gguf, b"GGML" + data[4:], "x.gguf", match="x.gguf: not a GGUF file")
    one_line(parse_gguf, data[:4] + struct.pack("<I", 9) + data[8:], "x.gguf", match="GGUF version 9")
    one_line(read_gguf, tmp_path / "missing.gguf", match="no such file")
    one_line(read_gguf, tmp_path, match="is a directory")
    one_line(parse_gguf, b"GGUF", "x.gguf", match="not a GGUF file")


@given(st.data())
def test_every_truncation_is_one_line(tmp_path_factory, data):
    f = tmp_path_factory.mktemp("g") / "m.gguf"
    write_gguf(f, METADATA, {"w": np.ones((4, 4), np.float32)})
    raw = f.read_bytes()
    cut = data.draw(st.integers(8, len(raw) - 1))
    with pytest.raises(ValueError) as e:
        parse_gguf(raw[:cut], "cut.gguf")
    assert "\n" not in str(e.value) and str(e.value).startswith("cut.gguf: ")


def test_gguf_package_reads_ours_and_we_read_its(tmp_path):
    gguf = pytest.importorskip("gguf")
    f = tmp_path / "ours.gguf"
    write_gguf(f, METADATA, {"w": np.arange(12, dtype=np.float32).reshape(3, 4)})
    r = gguf.GGUFReader(str(f))
    assert r.fields["str"].contents() == "héllo ▁ 🎉" and r.fields["a_str"].contents() == ["a", "", "▁b c", "\n"]
    assert r.tensors[0].name == "w" and list(r.tensors[0].data.ravel()) == list(range(12))
    g2 = tmp_path / "theirs.gguf"
    w = gguf.GGUFWriter(str(g2), "llama")
    w.add_uint32("n", 5)
    w.add_array("xs", ["p", "q"])
    w.add_float32("x", 2.5)
    w.add_tensor("t1", np.ones((2, 32), dtype=np.float32))
    w.add_tensor("t2", np.zeros((3, 32), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    g = read_gguf(g2)
    assert g.metadata["n"] == 5 and g.metadata["xs"] == ["p", "q"] and g.metadata["x"] == 2.5
    theirs = gguf.GGUFReader(str(g2))
    for mine, ref in zip(g.tensors, theirs.tensors):
        assert mine.name == ref.name and mine.offset == ref.data_offset and mine.nbytes == ref.n_bytes


@pytest.mark.skipif(not HAVE_SHARED, reason="../shared/vocab is absent")
@pytest.mark.parametrize("name", ["gpt-2", "llama-spm", "phi-3"])  # string, float and int arrays; the gguf
def test_real_vocabularies_match_the_gguf_package(name):  # package takes 10-50 s on the larger files
    gguf = pytest.importorskip("gguf")
    g = read_gguf(vocab_path(name))
    ref = gguf.GGUFReader(vocab_path(name))
    assert set(g.metadata) == {k for k in ref.fields if not k.startswith("GGUF.")}
    for key, field in ref.fields.items():
        if key.startswith("GGUF."):
            continue
        want = field.contents()
        got = g.metadata[key]
        if isinstance(got, np.ndarray):
            np.testing.assert_array_equal(got, np.asarray(want))
        else:
            assert got == want, key


# ---- the vocabulary a GGUF file describes, for every `pre` name llama.cpp knows

def _byte_level_vocab(tmp_path, pre, extra=None):
    from npgpt.tokenizers.byte_unicode import bytes_to_unicode

    tokens = [bytes_to_unicode()[b] for b in range(256)] + ["<|bos|>", "<|eos|>"]
    types = [1] * 256 + [3, 3]
    meta = {"tokenizer.ggml.model": ("gpt2", STRING), "tokenizer.ggml.tokens": (tokens, (ARRAY, STRING)),
            "tokenizer.ggml.token_type": (types, (ARRAY, INT32)), "tokenizer.ggml.merges": ([], (ARRAY, STRING)),
            "tokenizer.ggml.bos_token_id": (256, UINT32), "tokenizer.ggml.eos_token_id": (257, UINT32)}
    if pre is not None:
        meta["tokenizer.ggml.pre"] = (pre, STRING)
    meta.update(extra or {})
    f = tmp_path / f"v-{pre}.gguf"
    write_gguf(f, meta)
    return f


def _spm_style_vocab(tmp_path, pre):
    tokens = ["<pad>", "<bos>", "<eos>"] + [f"<0x{b:02X}>" for b in range(256)] + ["\u2581", "a", "\n\n"]
    types = [3, 3, 3] + [6] * 256 + [1, 1, 1]
    meta = {"tokenizer.ggml.model": ("gpt2", STRING), "tokenizer.ggml.pre": (pre, STRING),
            "tokenizer.ggml.tokens": (tokens, (ARRAY, STRING)), "tokenizer.ggml.token_type": (types, (ARRAY, INT32)),
            "tokenizer.ggml.merges": ([], (ARRAY, STRING)), "tokenizer.ggml.bos_token_id": (1, UINT32)}
    f = tmp_path / f"s-{pre}.gguf"
    write_gguf(f, meta)
    return f


PRE_TEXT = "I'M here,  DON'T 12345 3.14 héllo Привет 你好世界 \t\n\n x 👍🏽 <sentinel:7>"


def test_every_llama_cpp_pre_name(tmp_path):
    from npgpt.tokenizers import load_tokenizer
    from npgpt.tokenizers.byte_unicode import bytes_to_unicode
    from npgpt.tokenizers.gguf import _PRE_SPM_STYLE
    from npgpt.tokenizers.pretokenizers import LLAMA_CPP_PRE, split_with

    table = bytes_to_unicode()
    for name, patterns in LLAMA_CPP_PRE.items():
        if not name:
            continue
        if name in _PRE_SPM_STYLE:
            tok = load_tokenizer(_spm_style_vocab(tmp_path, name))
            text = PRE_TEXT.replace(" ", "\u2581")
            assert tok.pre_tokenizer([text], True) == split_with(patterns, text), name
            assert tok.decode(tok.encode(PRE_TEXT)) == PRE_TEXT, name
            continue
        tok = load_tokenizer(_byte_level_vocab(tmp_path, name))
        want = ["".join(table[b] for b in p.encode("utf-8")) for p in split_with(patterns, PRE_TEXT)]
        assert tok.pre_tokenizer([PRE_TEXT], True) == want, name
        assert tok.decode(tok.encode(PRE_TEXT)) == PRE_TEXT, name


def test_llama_cpp_defaults_and_overrides(tmp_path):
    from npgpt.tokenizers import load_tokenizer

    assert load_tokenizer(_byte_level_vocab(tmp_path, "llama-bpe")).encode("a", True).tolist() == [256, 97]
    assert load_tokenizer(_byte_level_vocab(tmp_path, "gpt-2")).encode("a", True).tolist() == [97]
    assert load_tokenizer(_byte_level_vocab(tmp_path, None)).encode("a", True).tolist() == [97]  # "default"
    f = _byte_level_vocab(tmp_path, "gpt-2", {"tokenizer.ggml.add_bos_token": (True, BOOL),
                                              "tokenizer.ggml.add_eos_token": (True, BOOL)})
    assert load_tokenizer(f).encode("a", True).tolist() == [256, 97, 257]
    f = _byte_level_vocab(tmp_path, "llama3", {"tokenizer.ggml.add_bos_token": (False, BOOL)})
    assert load_tokenizer(f).encode("a<|eos|>", True).tolist() == [97, 257]
    tok = load_tokenizer(_spm_style_vocab(tmp_path, "gemma4"))
    assert tok.encode("a  a\n\n", True).tolist() == [1, 260, 259, 259, 260, 261]  # BOS forced, ▁, "\n\n" whole


def test_refused_vocabularies(tmp_path):
    from npgpt.tokenizers import load_tokenizer

    f = _byte_level_vocab(tmp_path, "no-such-pre")
    one_line(load_tokenizer, f, match="tokenizer.ggml.pre 'no-such-pre' is not a pre-tokenizer llama.cpp knows")
    f = _byte_level_vocab(tmp_path, "gpt-2", {"tokenizer.ggml.model": ("bert", STRING)})
    one_line(load_tokenizer, f, match="tokenizer.ggml.model 'bert' is not supported")
    f = tmp_path / "w.gguf"
    write_gguf(f, {"general.architecture": ("llama", STRING)})
    one_line(load_tokenizer, f, match="no tokenizer.ggml.model entry")


def test_reads_only_the_head(tmp_path, monkeypatch):
    """read_gguf reads the header in growing chunks and never the tensor data (a model's weights)."""
    import npgpt.tokenizers.gguf as g

    f = tmp_path / "big.gguf"
    write_gguf(f, METADATA, {"w": np.ones((256, 1024), np.float32)})
    monkeypatch.setattr(g, "HEAD_READ", 64)  # (files past 4 x HEAD_READ are read in chunks)
    reads = []
    real_open = open

    class Counting:
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *a):
            self.fh.close()

        def fileno(self):
            return self.fh.fileno()

        def read(self, n=-1):
            reads.append(n)
            return self.fh.read(n)

    monkeypatch.setattr("builtins.open", lambda p, mode="r", *a, **k: Counting(real_open(p, mode, *a, **k)))
    got = g.read_gguf(f)
    monkeypatch.undo()
    want = parse_gguf(f.read_bytes(), str(f))
    assert got.metadata.keys() == want.metadata.keys() and got.tensors == want.tensors
    assert len(reads) > 1 and sum(reads) < os.path.getsize(f) // 4
