"""GPT-2's byte <-> printable-character map."""

from __future__ import annotations

import hypothesis.strategies as st
import pytest
from hypothesis import given

from npgpt.tokenizers.byte_unicode import bytes_to_unicode, decode_bytes, encode_bytes, unicode_to_bytes


def test_bijection_with_gpt2s_known_values():
    table = bytes_to_unicode()
    assert sorted(table) == list(range(256)) and len(set(table.values())) == 256
    assert table[ord(" ")] == "Ġ" and table[ord("\n")] == "Ċ" and table[0] == "Ā" and table[ord("a")] == "a"
    assert table[0xAD] == "Ń" and table[0xFF] == "ÿ"
    assert all(c.isprintable() and not c.isspace() for c in table.values())
    assert unicode_to_bytes() == {c: b for b, c in table.items()}


@given(st.binary(max_size=100))
def test_round_trip(data):
    s = encode_bytes(data)
    assert len(s) == len(data) and decode_bytes(s) == data


def test_foreign_character_is_an_error():
    with pytest.raises(ValueError, match="character ' ' is not a byte-level character"):
        decode_bytes("a b")
