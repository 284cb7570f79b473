"""Byte-level BPE, exactly as GPT-2 encodes: pre-tokenize, map bytes to characters, merge pairs by rank.

    tok = BPETokenizer(vocab, merges, {"<|endoftext|>": 50256})   # or load_tokenizer(path), train_bpe(text, V)
    ids = tok.encode("Hello world")                                # array([15496, 995], dtype=uint16) for GPT-2
    tok.decode(ids)                                                # 'Hello world'

Each pre-token piece is UTF-8 encoded, spelled one printable character per byte (byte_unicode.py), and then
the adjacent pair with the lowest merge rank is merged, every occurrence left to right, until no pair has a
rank: Hugging Face's and openai/gpt-2's rule.  Pieces seen before come from a cache.  Guide: docs/tokenizers.md
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from itertools import repeat
from typing import Any, Literal

import numpy as np

from .byte_unicode import bytes_to_unicode, decode_bytes, encode_bytes
from .pattern import WHITE_SPACE, _class_body, split_gpt2
from .protocol import TOKENIZER_LOADERS
from .._checks import is_py_int

EOT = "<|endoftext|>"
CACHE_LIMIT = 200_000  # pieces kept in the cache; it is emptied when it grows past this
LONG_PIECE = 64  # pieces with more bytes than this use the O(n log n) heap merge instead of rescanning
_NO_RANK = 1 << 62  # larger than any rank
CHUNK = 1 << 20  # characters encoded at a time by encode_ordinary
WS = _class_body(WHITE_SPACE)


class BPETokenizer:
    """A byte-level BPE tokenizer: vocab {byte-level token string: id}, merges [(left, right)] in rank order,
    special tokens {text: id}.  Ids must be exactly 0..n-1; every one of the 256 bytes needs a token; both
    parts of a merge and their concatenation must be tokens.  Problems are one-line ValueErrors (`where`
    names the file they came from)."""

    def __init__(self, vocab: Mapping[str, int], merges: Sequence[tuple[str, str]],
                 special_tokens: Mapping[str, int] | None = None, *, where: str = "tokenizer") -> None:
        specials = dict(special_tokens or {})
        self.where = where
        id_to_token: dict[int, str] = {}
        for token, i in vocab.items():
            if not isinstance(token, str) or not is_py_int(i) or i < 0:
                raise ValueError(f"{where}: vocabulary entry {token!r}: {i!r} is not a string and a "
                                 f"non-negative integer id")
            if i in id_to_token:
                raise ValueError(f"{where}: id {i} is given to both {id_to_token[i]!r} and {token!r}")
            id_to_token[i] = token
        for token, i in specials.items():
            if not isinstance(token, str) or not token or not is_py_int(i) or i < 0:
                raise ValueError(f"{where}: special token {token!r}: {i!r} is not a non-empty string and a "
                                 f"non-negative integer id")
            if i in id_to_token and id_to_token[i] != token:
                raise ValueError(f"{where}: special token {token!r} has id {i}, which is already "
                                 f"{id_to_token[i]!r}")
            id_to_token[i] = token
        n = len(id_to_token)
        if n == 0 or min(id_to_token) != 0 or max(id_to_token) != n - 1:
            missing = next((i for i in range(n) if i not in id_to_token), n)
            raise ValueError(f"{where}: ids must be exactly 0..{n - 1} with no gaps (id {missing} is missing)")
        # id -> the bytes it decodes to (special tokens decode to their UTF-8 text)
        table: list[bytes] = [b""] * n
        for i, token in id_to_token.items():
            table[i] = token.encode("utf-8") if token in specials else decode_bytes_named(token, where)
        self._bytes = table
        self.encoder = {t: i for t, i in vocab.items() if t not in specials}  # byte-level string -> id
        for byte, char in bytes_to_unicode().items():
            if char not in self.encoder:
                raise ValueError(f"{where}: byte 0x{byte:02x} has no single-byte token {char!r} in the vocabulary")
        ranks: dict[tuple[str, str], int] = {}
        for r, pair in enumerate(merges):
            if not (isinstance(pair, tuple) and len(pair) == 2 and all(isinstance(p, str) for p in pair)):
                raise ValueError(f"{where}: merge {r}: expected two token strings, got {pair!r}")
            a, b = pair
            for part in (a, b):
                if part not in self.encoder:
                    raise ValueError(f"{where}: merge {r} ({a} {b}): {part!r} is not in the vocabulary")
            if a + b not in self.encoder:
                raise ValueError(f"{where}: merge {r} ({a} {b}): the merged token {a + b!r} is not in the "
                                 f"vocabulary")
            if pair in ranks:
                raise ValueError(f"{where}: merge {r} ({a} {b}) repeats merge {ranks[pair]}")
            ranks[pair] = r
        self.merges = [tuple(m) for m in merges]
        self.ranks = ranks
        self.special_tokens = specials
        self._special_re = _alternation(specials)
        self._cache: dict[str, list[int]] = {}

    # ---- sizes and names
    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return len(self._bytes)

    @property
    def eot_token(self) -> int | None:
        """The id of <|endoftext|>, or None when it is not a special token here."""
        return self.special_tokens.get(EOT)

    def token_bytes(self, i: int) -> bytes:
        """The bytes of token id i."""
        return self._bytes[self._check_ids([i])[0]]

    # ---- encoding
    def encode(self, text: str, allowed_special: Collection[str] | Literal["all"] = ()) -> np.ndarray:
        """Token ids (N,) of text, uint16 (uint32 for vocabularies past 65,536).  A special token's text is
        encoded as that special id only when it is in allowed_special (a set of them, or "all"); appearing
        otherwise it is a one-line ValueError (as tiktoken does).  encode_ordinary reads it as plain text."""
        if not isinstance(text, str):
            raise ValueError(f"text: expected a str, got {type(text).__name__}")
        if allowed_special == "all":
            allowed = set(self.special_tokens)
        elif isinstance(allowed_special, str):  # one token given bare, not in a set
            allowed = {allowed_special}
        else:
            allowed = set(allowed_special)
        unknown = allowed - set(self.special_tokens)
        if unknown:
            raise ValueError(f"allowed_special: {sorted(unknown)[0]!r} is not a special token of this tokenizer "
                             f"(it has {sorted(self.special_tokens) or 'none'})")
        disallowed = set(self.special_tokens) - allowed
        if disallowed:
            m = _alternation({t: 0 for t in disallowed}).search(text)  # type: ignore[union-attr]
            if m:
                raise ValueError(f"text: contains the special token {m.group()!r} at position {m.start()}; pass "
                                 f"allowed_special={{{m.group()!r}}} to encode it as that token, or use "
                                 f"encode_ordinary to encode it as text")
        pattern = _alternation({t: 0 for t in allowed})
        if pattern is None:
            return self.encode_ordinary(text)
        parts: list[np.ndarray] = []
        start = 0
        for m in pattern.finditer(text):
            parts.append(self.encode_ordinary(text[start:m.start()]))
            parts.append(np.array([self.special_tokens[m.group()]], dtype=self.ids_dtype))
            start = m.end()
        parts.append(self.encode_ordinary(text[start:]))
        return np.concatenate(parts)

    @property
    def ids_dtype(self) -> np.dtype:
        """uint16 when every id fits, else uint32."""
        return np.dtype(np.uint16 if self.vocab_size <= 1 << 16 else np.uint32)

    def encode_ordinary(self, text: str) -> np.ndarray:
        """Token ids (N,) of text with no special-token handling (their text is just text).  Long texts are
        encoded CHUNK characters at a time, cut only where GPT-2's pattern is sure to cut (after a newline
        between two non-space characters), so the ids are those of the whole text at a fraction of the
        memory of one Python list."""
        if not isinstance(text, str):
            raise ValueError(f"text: expected a str, got {type(text).__name__}")
        parts = [np.array(self._ordinary(piece), dtype=self.ids_dtype) for piece in _chunks(text, CHUNK)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _ordinary(self, text: str) -> list[int]:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: pair what pairs, the rest become U+FFFD (as tiktoken)
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        cache = self._cache
        if len(cache) > CACHE_LIMIT:
            cache.clear()
        ids: list[int] = []
        for piece in split_gpt2(text):
            got = cache.get(piece)
            if got is None:
                got = self._encode_piece(piece)
                cache[piece] = got
            ids += got
        return ids

    def _encode_piece(self, piece: str) -> list[int]:
        word = encode_bytes(piece.encode("utf-8"))
        enc = self.encoder
        if len(word) == 1:
            return [enc[word]]
        parts = _merge_heap(word, self.ranks) if len(word) > LONG_PIECE else _merge_scan(word, self.ranks)
        return [enc[p] for p in parts]

    # ---- decoding
    def decode_bytes(self, ids: Iterable[int] | np.ndarray) -> bytes:
        """The bytes of a sequence of ids (ids out of range: a one-line ValueError)."""
        table = self._bytes
        return b"".join([table[i] for i in self._check_ids(ids)])

    def decode(self, ids: Iterable[int] | np.ndarray) -> str:
        """The text of any id sequence; bytes that are not valid UTF-8 (a cut multi-byte character) become
        U+FFFD, so decoding never fails on valid ids."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def _check_ids(self, ids: Iterable[int] | np.ndarray) -> list[int]:
        arr = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids))
        if arr.size == 0:
            return []
        if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"ids: expected a 1-D sequence of integers, got shape {arr.shape} dtype {arr.dtype}")
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= len(self._bytes):
            raise ValueError(f"ids: token id {lo if lo < 0 else hi} is out of range [0, {len(self._bytes)})")
        out: list[int] = arr.tolist()
        return out

    # ---- plain-data form (checkpoints store this as JSON, never pickle)
    def to_dict(self) -> dict[str, Any]:
        """{"type": "bpe", "vocab": {token: id}, "merges": ["left right", ...], "special_tokens": {text: id}}."""
        return {"type": "bpe", "vocab": dict(self.encoder), "merges": [f"{a} {b}" for a, b in self.merges],
                "special_tokens": dict(self.special_tokens)}

    @classmethod
    def from_dict(cls, d: Any, where: str = "tokenizer") -> BPETokenizer:
        """Inverse of to_dict (every consistency check of the constructor applies)."""
        if not isinstance(d, dict) or d.get("type") != "bpe" or not isinstance(d.get("vocab"), dict) \
                or not isinstance(d.get("merges"), list) or not isinstance(d.get("special_tokens", {}), dict):
            raise ValueError(f"{where}: expected {{'type': 'bpe', 'vocab': dict, 'merges': list, "
                             f"'special_tokens': dict}}")
        return cls(d["vocab"], parse_merges(d["merges"], where), d.get("special_tokens", {}), where=where)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, BPETokenizer) and self.encoder == other.encoder
                and self.merges == other.merges and self.special_tokens == other.special_tokens)

    def __repr__(self) -> str:
        return (f"BPETokenizer(vocab_size={self.vocab_size}, merges={len(self.merges)}, "
                f"special_tokens={sorted(self.special_tokens)})")


_SAFE_CUT = re.compile(f"(?<=[^{WS}])\n(?=[^{WS}])")  # a newline alone between two non-space characters


def _chunks(text: str, size: int) -> list[str]:
    """text cut into pieces of about `size` characters, each cut just after a lone newline (see _SAFE_CUT:
    the pattern always ends a piece there, whatever follows); one piece if there is no such newline."""
    out = []
    start = 0
    while len(text) - start > size:
        m = _SAFE_CUT.search(text, start + size)
        if m is None:
            break
        out.append(text[start:m.end()])
        start = m.end()
    out.append(text[start:])
    return out


TOKENIZER_LOADERS["bpe"] = BPETokenizer.from_dict  # checkpoints' {"type": "bpe", ...} records


def parse_merges(lines: Iterable[Any], where: str) -> list[tuple[str, str]]:
    """Merges given as "left right" strings or [left, right] pairs -> [(left, right)]."""
    out: list[tuple[str, str]] = []
    for r, m in enumerate(lines):
        if isinstance(m, str):
            parts = m.split(" ")
        elif isinstance(m, (list, tuple)):
            parts = list(m)
        else:
            parts = []
        if len(parts) != 2 or not all(isinstance(p, str) and p for p in parts):
            raise ValueError(f"{where}: merge {r}: expected 'left right', got {m!r}")
        out.append((parts[0], parts[1]))
    return out


def decode_bytes_named(token: str, where: str) -> bytes:
    """decode_bytes with the file named in the error."""
    try:
        return decode_bytes(token)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None


def _alternation(tokens: Mapping[str, int]) -> re.Pattern[str] | None:
    """A regex matching any of the tokens, longest first (so a token that extends another wins)."""
    if not tokens:
        return None
    return re.compile("|".join(re.escape(t) for t in sorted(tokens, key=lambda t: (-len(t), t))))


def _merge_scan(word: str, ranks: Mapping[tuple[str, str], int]) -> list[str]:
    """BPE on one word by rescanning: find the lowest-ranked adjacent pair, merge all its occurrences left
    to right, repeat.  O(n * merges applied); for short words (nearly all of them) the fastest."""
    parts = list(word)
    get = ranks.get
    while len(parts) > 1:
        rs = list(map(get, zip(parts, parts[1:]), repeat(_NO_RANK)))  # rank of each adjacent pair
        r = min(rs)
        if r == _NO_RANK:
            break
        i = rs.index(r)
        if rs.count(r) == 1:  # the usual case: one occurrence
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
            continue
        merged: list[str] = parts[:i]
        n = len(parts)
        while i < n:  # ranks are unique per pair, so rs[i] == r means this is the pair (left to right)
            if i < n - 1 and rs[i] == r:
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return parts


def _merge_heap(word: str, ranks: Mapping[tuple[str, str], int]) -> list[str]:
    """The same result as _merge_scan in O(n log n), for long pieces: a linked list of parts and a heap of
    (rank, position) pairs.  All heap entries of the lowest rank are merged as one round, left to right,
    and only then are the new neighbouring pairs pushed, which is exactly "merge every occurrence"."""
    n = len(word)
    tok = list(word)  # tok[i]: the part starting at character i (valid while alive[i])
    nxt = list(range(1, n)) + [-1]
    prv = list(range(-1, n - 1))
    alive = [True] * n
    heap = [(r, i) for i in range(n - 1) if (r := ranks.get((tok[i], tok[i + 1]))) is not None]
    heapq.heapify(heap)
    while heap:
        rank = heap[0][0]
        touched: list[int] = []
        while heap and heap[0][0] == rank:
            _, i = heapq.heappop(heap)
            j = nxt[i] if alive[i] else -1
            if j < 0 or ranks.get((tok[i], tok[j])) != rank:
                continue  # stale: one side was merged away or changed since this entry was pushed
            tok[i] += tok[j]
            alive[j] = False
            nxt[i] = nxt[j]
            if nxt[j] >= 0:
                prv[nxt[j]] = i
            touched.append(i)
        for i in touched:
            if not alive[i]:
                continue
            for left in (prv[i], i):
                right = nxt[left] if left >= 0 else -1
                if left >= 0 and right >= 0:
                    r = ranks.get((tok[left], tok[right]))
                    if r is not None:
                        heapq.heappush(heap, (r, left))
    return [tok[i] for i in range(n) if alive[i]]
