"""The parity corpus and the tokenizer.json that Hugging Face `tokenizers` loads for each ../shared/vocab file.

Shared by tests/fixtures/tokenizers/make_vocab_parity.py (which wrote vocab_parity.json, the reference ids)
and tests/test_vocab_parity.py.  The tokenizer.json is npgpt's own description of the GGUF vocabulary
(gguf_tokenizer_spec) in the form `tokenizers` reads: SentencePiece scores become merges (each token made
from two tokens, the higher-scored result first), npgpt-only flags are dropped.
"""

from __future__ import annotations

import copy
import json
import os
import random
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
VOCAB_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "vocab"))
REFERENCE = os.path.join(HERE, "fixtures", "tokenizers", "vocab_parity.json")
VOCABS = ["gpt-2", "llama-bpe", "llama-spm", "qwen2", "phi-3", "deepseek-llm", "falcon", "gpt-neox", "starcoder",
          "gemma-4"]


def vocab_path(name: str) -> str:
    return os.path.join(VOCAB_DIR, f"ggml-vocab-{name}.gguf")


def _random_unicode(rng: random.Random, n: int) -> str:
    """n code points drawn from every plane's assigned-looking blocks, with spaces and newlines mixed in."""
    blocks = [(0x20, 0x7E), (0xA0, 0x24F), (0x300, 0x36F), (0x370, 0x3FF), (0x400, 0x4FF), (0x590, 0x6FF),
              (0x900, 0x97F), (0xE00, 0xE7F), (0x1100, 0x11FF), (0x1C80, 0x1CBF), (0x2000, 0x206F), (0x3040, 0x30FF),
              (0x4E00, 0x9FFF), (0xAC00, 0xD7A3), (0xFF00, 0xFFEF), (0x1F300, 0x1FAFF), (0x10000, 0x1007F),
              (0x20000, 0x2A6DF), (0x0, 0x1F)]
    out = []
    for _ in range(n):
        r = rng.random()
        if r < 0.12:
            out.append(rng.choice(" \n\t  "))
        else:
            a, b = rng.choice(blocks)
            out.append(chr(rng.randint(a, b)))
    return "".join(out)


def corpus() -> list[str]:
    """The varied corpus of the issue: contractions in both cases, runs of spaces/tabs/newlines, numbers of
    every length, accented Latin, Cyrillic, CJK, emoji and ZWJ sequences, combining marks, control
    characters, special-token text, the empty string, and seeded random Unicode."""
    texts = [
        "",
        " ",
        "Hello world",
        "hello world",
        " Hello world",
        "I'm sure you've seen it; they'll say we'd rather not. It's Bob's.",
        "I'M SURE YOU'VE SEEN IT; THEY'LL SAY WE'D RATHER NOT. IT'S BOB'S.",
        "DON'T don't Don'T 'tis 's 'S",
        "a  b   c    d\t\te\t \tf",
        "line one\nline two\n\nline four\n\n\n\nend\r\nwindows\r\n",
        "   leading spaces and trailing   ",
        "\n\n\n",
        "\t",
        " \n \n ",
        "1 12 123 1234 12345 123456 1234567 12345678 123456789 1234567890 12345678901234567890",
        "3.14159 -42 +7 1e10 0x1F 1,000,000 2024-01-01 12:30",
        "٣٤٥ ५६७ 四五六 Ⅻ ½ ²³",
        "Crème brûlée, naïve façade, Ångström, señor, Zoë, Œuvre, straße",
        "Привет, мир! Съешь же ещё этих мягких французских булок.",
        "你好，世界！这是一个测试。日本語のテキスト、カタカナ。한국어 문장입니다.",
        "emoji: 👋 🎉🎉 👍🏽 🇺🇸 🏳️‍🌈 👨‍👩‍👧‍👦 ❤️",
        "combining: e\u0301 a\u0308 o\u0302\u0323 \u0915\u094d\u0937 Z\u0351\u0352\u0353",
        "control: \x00 \x01 \x07 \x1b[31m \x7f \u200b \u200d \ufeff",
        "<|endoftext|> <s> </s> <|begin_of_text|> <|im_start|>user<|im_end|> <bos><eos> [INST]",
        "def f(x):\n    return x**2  # square\n\nprint(f(3))\n",
        "{\"key\": [1, 2, 3], 'a': None}",
        "https://example.com/path?q=1&r=two#frag user@example.org",
        "     ",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        "ﬁ ﬂ ＡＢＣ ｱｲｳ ℌ ㎏ ①",
        "\u1c8a's",
        "Tab\tsep\tvalues\nand \u00a0nbsp\u2003em-space\u3000ideographic",
        "mixed 中文 and English, 数字123和emoji😀.",
        "Ελληνικά κείμενα και עִבְרִית וְעַרְבִית عربي",
        "ภาษาไทย ไม่มีช่องว่าง ລາວ",
        "!!!???...,,,;;;:::---___===+++***&&&%%%$$$###@@@",
    ]
    rng = random.Random(41)
    texts += [_random_unicode(rng, rng.randint(1, 60)) for _ in range(30)]
    return texts


def _merges_from_scores(model: dict[str, Any]) -> list[list[str]]:
    """BPE merges equivalent to scores: each token that two tokens make, the higher-scored result first."""
    pieces = model["vocab"]
    ids = {}
    for i, (p, _) in enumerate(pieces):
        ids.setdefault(p, i)
    found = []
    for i, (t, score) in enumerate(pieces):
        if len(t) < 2 or ids[t] != i:
            continue
        for k in range(1, len(t)):
            a, b = t[:k], t[k:]
            if a in ids and b in ids:
                found.append((-score, ids[t], ids[a], ids[b], a, b))
    found.sort()
    return [[a, b] for *_, a, b in found]


def hf_tokenizer_json(spec: dict[str, Any]) -> str:
    """npgpt's description of a vocabulary, as a tokenizer.json that Hugging Face `tokenizers` loads."""
    d = copy.deepcopy(spec)
    d.pop("npgpt", None)
    model = d["model"]
    if model.get("type") == "SentencePieceBPE":
        pieces = model["vocab"]
        unk = model.get("unk_id")
        d["model"] = {"type": "BPE", "dropout": None, "unk_token": pieces[unk][0] if unk is not None else None,
                      "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": True,
                      "byte_fallback": True, "ignore_merges": False,
                      "vocab": {p: i for i, (p, _) in reversed(list(enumerate(pieces)))},
                      "merges": _merges_from_scores(model)}
    d.setdefault("truncation", None)
    d.setdefault("padding", None)
    return json.dumps(d, ensure_ascii=False)


def _key(field: int, wire: int) -> bytes:
    return _varint((field << 3) | wire)


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _bytes_field(field: int, data: bytes) -> bytes:
    return _key(field, 2) + _varint(len(data)) + data


def spm_model_bytes(tokens: list[str], scores: list[float], types: list[int], *, unk_id: int, bos_id: int,
                    eos_id: int, add_dummy_prefix: bool = True) -> bytes:
    """A SentencePiece BPE ModelProto (tokenizer.model) holding a vocabulary: pieces (1: piece, 2: score,
    3: type), trainer_spec (3: model_type = 2 BPE, 35: byte_fallback, 40/41/42: unk/bos/eos ids) and
    normalizer_spec (1: name "identity", 3: add_dummy_prefix, 4: remove_extra_whitespaces = false)."""
    import struct

    # SentencePiece wants exactly one UNKNOWN piece (the unk id): others typed so become UNUSED
    types = [2 if i == unk_id else (5 if k == 2 else k) for i, k in enumerate(types)]
    out = bytearray()
    for t, s, k in zip(tokens, scores, types):
        body = _bytes_field(1, t.encode("utf-8")) + _key(2, 5) + struct.pack("<f", s) + _key(3, 0) + _varint(k)
        out += _bytes_field(1, body)
    trainer = (_key(3, 0) + _varint(2) + _key(35, 0) + _varint(1) + _key(40, 0) + _varint(unk_id)
               + _key(41, 0) + _varint(bos_id) + _key(42, 0) + _varint(eos_id) + _key(43, 0) + _varint(-1))
    out += _bytes_field(2, trainer)
    norm = (_bytes_field(1, b"identity") + _key(3, 0) + _varint(int(add_dummy_prefix)) + _key(4, 0) + _varint(0)
            + _key(5, 0) + _varint(1))
    out += _bytes_field(3, norm)
    return bytes(out)
