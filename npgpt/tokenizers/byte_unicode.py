"""GPT-2's reversible map from the 256 byte values to 256 printable Unicode characters.

Bytes that are printable Latin-1 ('!'..'~', '¡'..'¬', '®'..'ÿ': 188 of them) map to themselves; the other 68
(controls, space, U+007F..U+00A0, the soft hyphen) map to U+0100, U+0101, ... in byte order, so a space is
'Ġ' (U+0120) and a newline 'Ċ' (U+010A).  Hugging Face's vocab.json and merges.txt spell tokens this way.
Guide: docs/tokenizers.md
"""

from __future__ import annotations

import functools


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """{byte value: its printable character}, 256 entries, a bijection."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in keep}
    n = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + n)  # the n-th byte that is not printable
            n += 1
    return dict(sorted(table.items()))


@functools.cache
def unicode_to_bytes() -> dict[str, int]:
    """The inverse of bytes_to_unicode: {printable character: byte value}."""
    return {c: b for b, c in bytes_to_unicode().items()}


@functools.cache
def _latin1_table() -> dict[int, str]:
    """For str.translate on bytes decoded as Latin-1: code point (= byte value) -> printable character."""
    return dict(bytes_to_unicode())


def encode_bytes(data: bytes) -> str:
    """Bytes -> their byte-level string (one printable character per byte)."""
    return data.decode("latin-1").translate(_latin1_table())


def decode_bytes(token: str) -> bytes:
    """A byte-level string -> its bytes; a character outside the map is a ValueError naming it."""
    inv = unicode_to_bytes()
    try:
        return bytes(inv[c] for c in token)
    except KeyError as e:
        raise ValueError(f"token {token!r}: character {e.args[0]!r} is not a byte-level character") from None
