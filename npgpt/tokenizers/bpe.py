"""Byte-level BPE, exactly as GPT-2 encodes: pre-tokenize, map bytes to characters, merge pairs by rank.

    tok = BPETokenizer(vocab, merges, {"<|endoftext|>": 50256})   # or load_tokenizer(path), train_bpe(text, V)
    ids = tok.encode("Hello world")                                # array([15496, 995], dtype=uint16) for GPT-2
    tok.decode(ids)                                                # 'Hello world'

Each pre-token piece (GPT-2's pattern by default; any regex-dialect pattern, or a sequence applied in turn,
with pattern=) is UTF-8 encoded, spelled one printable character per byte (byte_unicode.py), and then the
adjacent pair with the lowest merge rank is merged, every occurrence left to right, until no pair has a rank:
Hugging Face's and openai/gpt-2's rule.  Pieces seen before come from a cache; the new pieces of a text merge
all together in NumPy rounds (_merge_batch), as does a very long piece (a megabyte of one letter).
tiktoken's Encoding methods are here too (encode_single_token, decode_with_offsets, encode_batch, ...).
Guide: docs/tokenizers.md
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from itertools import chain, count, repeat
from typing import Any, Literal

import numpy as np

from .byte_unicode import bytes_to_unicode, decode_bytes, encode_bytes
from .pattern import GPT2_PATTERN, WHITE_SPACE, _class_body, compile_pattern, split_gpt2
from .pretokenizers import split_with
from .protocol import TOKENIZER_LOADERS
from .._checks import is_py_int

EOT = "<|endoftext|>"
CACHE_LIMIT = 200_000  # pieces kept in the cache; it is emptied when it grows past this
LONG_PIECE = 64  # pieces with more bytes than this use the O(n log n) heap merge instead of rescanning
HUGE_PIECE = 4096  # pieces with more bytes than this merge in NumPy rounds of their own
ROUNDS_BEFORE_LINKED = 48  # ... and after this many rounds, on a linked list rank by rank
_NO_RANK = 1 << 62  # larger than any rank
CHUNK = 1 << 20  # characters encoded at a time by encode_ordinary
WS = _class_body(WHITE_SPACE)


class BPETokenizer:
    """A byte-level BPE tokenizer: vocab {byte-level token string: id}, merges [(left, right)] in rank order,
    special tokens {text: id}, pattern (GPT-2's by default; a regex-dialect string or a sequence of them, see
    pretokenizers.py).  Ids are unique; ids left unused (special tokens after a gap, as o200k's) are not
    tokens, and vocab_size is the largest id + 1; every one of the 256 bytes needs a token; both parts of a
    merge and their concatenation must be tokens.  Problems are one-line ValueErrors (`where` names the file
    they came from)."""

    def __init__(self, vocab: Mapping[str, int], merges: Sequence[tuple[str, str]],
                 special_tokens: Mapping[str, int] | None = None, *, where: str = "tokenizer",
                 pattern: str | Sequence[str] | None = None, ignore_merges: bool = False) -> None:
        specials = dict(special_tokens or {})
        self.where = where
        if pattern is None:
            pattern = (GPT2_PATTERN,)
        elif isinstance(pattern, str):
            pattern = (pattern,)
        if not pattern or not all(isinstance(p, str) for p in pattern):
            raise ValueError(f"{where}: pattern: expected a regex string or a non-empty sequence of them, got "
                             f"{pattern!r}")
        self.pattern: tuple[str, ...] = tuple(pattern)
        self.ignore_merges = bool(ignore_merges)  # a piece that is a whole token is that token (Llama 3)
        for p in self.pattern:
            try:
                compile_pattern(p).prepare_astral()
            except ValueError as e:
                raise ValueError(f"{where}: {e}") from None
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
        if not id_to_token:
            raise ValueError(f"{where}: the vocabulary is empty")
        n = max(id_to_token) + 1
        # id -> the bytes it decodes to (special tokens decode to their UTF-8 text); None: an unused id
        table: list[bytes | None] = [None] * n
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
        self._cache: dict[str, int] = {}  # piece -> its slot in self._store
        self._store = _IdStore()
        self._by_bytes: dict[bytes, int] | None = None  # ordinary token bytes -> id (built on first use)
        self._numpy_merges: tuple[_PairTable, np.ndarray, np.ndarray, np.ndarray] | None = None
        self._split = self._splitter()
        self._merge_tables()  # built now, with the vocabulary, not on the first encode

    def _splitter(self) -> Any:
        """text -> its pieces under self.pattern."""
        if self.pattern == (GPT2_PATTERN,):
            return split_gpt2
        if len(self.pattern) == 1:
            return compile_pattern(self.pattern[0]).findall
        pats = self.pattern
        return lambda text: split_with(pats, text)

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
        return self._table_bytes(self._check_ids([i])[0])

    def _table_bytes(self, i: int) -> bytes:
        b = self._bytes[i]
        assert b is not None  # _check_ids let only real tokens through
        return b

    # ---- tiktoken's names
    @property
    def n_vocab(self) -> int:
        """tiktoken's name for vocab_size (largest id + 1)."""
        return self.vocab_size

    @property
    def max_token_value(self) -> int:
        """The largest id."""
        return self.vocab_size - 1

    @property
    def special_tokens_set(self) -> set[str]:
        """The special tokens' texts."""
        return set(self.special_tokens)

    def is_special_token(self, token: int) -> bool:
        """Whether id `token` is a special token's."""
        return token in self._special_ids

    @property
    def _special_ids(self) -> frozenset[int]:
        return frozenset(self.special_tokens.values())

    def _bytes_to_id(self) -> dict[bytes, int]:
        if self._by_bytes is None:
            specials = self._special_ids
            self._by_bytes = {b: i for i, b in enumerate(self._bytes) if b is not None and i not in specials}
        return self._by_bytes

    def encode_single_token(self, text_or_bytes: str | bytes) -> int:
        """The id of exactly one token: an ordinary token given as its bytes (or text), or a special token's
        text; anything else is a KeyError, as tiktoken raises."""
        if isinstance(text_or_bytes, str):
            if text_or_bytes in self.special_tokens:
                return self.special_tokens[text_or_bytes]
            text_or_bytes = text_or_bytes.encode("utf-8")
        got = self._bytes_to_id().get(bytes(text_or_bytes))
        if got is None:  # a special token's text given as bytes is that token too
            got = self.special_tokens.get(bytes(text_or_bytes).decode("utf-8", errors="replace"))
        if got is None:
            raise KeyError(text_or_bytes)
        return got

    def decode_single_token_bytes(self, token: int) -> bytes:
        """The bytes of one id (KeyError for an id that is not a token, as tiktoken raises)."""
        b = self._bytes[token] if is_py_int(token) and 0 <= token < len(self._bytes) else None
        if b is None:
            raise KeyError(token)
        return b

    def decode_tokens_bytes(self, tokens: Iterable[int] | np.ndarray) -> list[bytes]:
        """The bytes of each id (KeyError for an id that is not a token, as tiktoken raises)."""
        return [self.decode_single_token_bytes(int(t)) for t in tokens]

    def token_byte_values(self) -> list[bytes]:
        """The bytes of every ordinary token, sorted (tiktoken's token_byte_values)."""
        return sorted(self._bytes_to_id())

    def decode_with_offsets(self, tokens: Iterable[int] | np.ndarray) -> tuple[str, list[int]]:
        """(text, offsets): offsets[k] is the index in text of the character token k starts, or of the
        character it continues when it starts inside one (tiktoken's rule); text must be valid UTF-8."""
        parts = self.decode_tokens_bytes(tokens)
        offsets, n = [], 0
        for b in parts:
            offsets.append(max(0, n - (1 if b and 0x80 <= b[0] < 0xC0 else 0)))
            n += sum(1 for c in b if not 0x80 <= c < 0xC0)
        return b"".join(parts).decode("utf-8", errors="strict"), offsets

    def encode_batch(self, text: Sequence[str], *, num_threads: int = 1,
                     allowed_special: Collection[str] | Literal["all"] = (),
                     disallowed_special: Collection[str] | Literal["all"] = "all") -> list[list[int]]:
        """[encode(t).tolist() for t in text] (num_threads is accepted for tiktoken's signature; one thread)."""
        return [self.encode(t, allowed_special=allowed_special, disallowed_special=disallowed_special).tolist()
                for t in text]

    def encode_ordinary_batch(self, text: Sequence[str], *, num_threads: int = 1) -> list[list[int]]:
        """[encode_ordinary(t).tolist() for t in text]."""
        return [self.encode_ordinary(t).tolist() for t in text]

    def decode_batch(self, batch: Sequence[Iterable[int] | np.ndarray], *, errors: str = "replace",
                     num_threads: int = 1) -> list[str]:
        """[decode(ids) for ids in batch]."""
        return [self.decode(ids, errors=errors) for ids in batch]

    def _encode_bytes(self, data: bytes) -> list[int]:
        """Ids of bytes that need not be valid UTF-8, as tiktoken's Encoding._encode_bytes: the valid prefix is
        encoded as text; the tokens of its last piece (and any all-space tokens before them) are taken back,
        and their bytes plus the invalid rest form one token if they are one, else are merged as one piece."""
        try:
            return self.encode_ordinary(data.decode("utf-8")).tolist()
        except UnicodeDecodeError as e:
            valid = e.start
        text = data[:valid].decode("utf-8")
        pieces = self._split(text) if text else []
        tokens = self._ordinary(text) if text else []
        last = len(self._encode_piece(pieces[-1])) if pieces else 0
        if last:  # tiktoken's _increase_last_piece_token_len: take back trailing all-space tokens too
            def all_space(i: int) -> bool:
                return all(c in b" \n\t" for c in self._table_bytes(i))
            if all_space(tokens[-last]):
                while last < len(tokens) and all_space(tokens[-last - 1]):
                    last += 1
        if tokens and last:
            rest = b"".join(self._table_bytes(i) for i in tokens[-last:]) + data[valid:]
            tokens = tokens[:-last]
        else:
            rest = data[valid:]
        whole = self._bytes_to_id().get(rest)
        return tokens + ([whole] if whole is not None else self._encode_word(encode_bytes(rest)))

    # ---- encoding
    def encode(self, text: str, allowed_special: Collection[str] | Literal["all"] = (),
               disallowed_special: Collection[str] | Literal["all"] = "all") -> np.ndarray:
        """Token ids (N,) of text, uint16 (uint32 for vocabularies past 65,536).  A special token's text is
        encoded as that special id only when it is in allowed_special (a set of them, or "all"); appearing
        while in disallowed_special ("all": every special token not allowed) it is a one-line ValueError, as
        tiktoken does; otherwise it is plain text.  encode_ordinary reads it as plain text."""
        if not isinstance(text, str):
            raise ValueError(f"text: expected a str, got {type(text).__name__}")
        allowed = self._special_set(allowed_special, "allowed_special")
        if disallowed_special == "all":
            disallowed = set(self.special_tokens) - allowed
        else:
            disallowed = self._special_set(disallowed_special, "disallowed_special")
        if disallowed:
            m = _alternation({t: 0 for t in disallowed}).search(text)  # type: ignore[union-attr]
            if m:
                raise ValueError(f"text: contains the special token {m.group()!r} at position {m.start()}; pass "
                                 f"allowed_special={{{m.group()!r}}} to encode it as that token, or use "
                                 f"encode_ordinary to encode it as text")
        pattern = _alternation({t: 0 for t in allowed})
        if pattern is None or not any(t in text for t in allowed):
            return self.encode_ordinary(text)
        parts: list[np.ndarray] = []
        start = 0
        for m in pattern.finditer(text):
            parts.append(self.encode_ordinary(text[start:m.start()]))
            parts.append(np.array([self.special_tokens[m.group()]], dtype=self.ids_dtype))
            start = m.end()
        parts.append(self.encode_ordinary(text[start:]))
        return np.concatenate(parts)

    def _special_set(self, given: Collection[str] | Literal["all"], name: str) -> set[str]:
        if given == "all":
            return set(self.special_tokens)
        out = {given} if isinstance(given, str) else set(given)  # one token given bare, not in a set
        unknown = out - set(self.special_tokens)
        if unknown:
            raise ValueError(f"{name}: {sorted(unknown)[0]!r} is not a special token of this tokenizer "
                             f"(it has {sorted(self.special_tokens) or 'none'})")
        return out

    @property
    def ids_dtype(self) -> np.dtype:
        """uint16 when every id fits, else uint32."""
        return np.dtype(np.uint16 if self.vocab_size <= 1 << 16 else np.uint32)

    def encode_ordinary(self, text: str) -> np.ndarray:
        """Token ids (N,) of text with no special-token handling (their text is just text).  With GPT-2's
        pattern, long texts are encoded CHUNK characters at a time, cut only where the pattern is sure to cut
        (after a newline between two non-space characters), so the ids are those of the whole text; other
        patterns encode the text whole."""
        if not isinstance(text, str):
            raise ValueError(f"text: expected a str, got {type(text).__name__}")
        chunks = _chunks(text, CHUNK) if self.pattern == (GPT2_PATTERN,) else [text]
        parts = [self._ordinary_array(piece).astype(self.ids_dtype) for piece in chunks]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _ordinary(self, text: str) -> list[int]:
        out: list[int] = self._ordinary_array(text).tolist()
        return out

    def _ordinary_array(self, text: str) -> np.ndarray:
        """Ids (N,) int64 of text without special tokens: split, encode the pieces not in the cache all at once,
        then gather every piece's ids from the cache with NumPy."""
        if not text.isascii():
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates: pair what pairs, the rest become U+FFFD (as tiktoken)
                text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        cache, store = self._cache, self._store
        if len(cache) > CACHE_LIMIT:
            cache.clear()
            store.clear()
        pieces = self._split(text)
        if not pieces:
            return np.zeros(0, dtype=np.int64)
        seen: dict[str, int] = {}
        # which[k]: the position of the first occurrence of pieces[k] (one hash lookup per piece, in C)
        which = np.fromiter(map(seen.setdefault, pieces, count()), dtype=np.int64, count=len(pieces))  # (P,)
        firsts = np.flatnonzero(which == np.arange(len(pieces)))  # (U,) the first occurrences
        distinct = [pieces[i] for i in firsts.tolist()]
        new = [p for p in distinct if p not in cache]
        if new:
            flat_new, len_new = self._encode_pieces(new)
            cache.update(zip(new, range(store.add(flat_new, len_new), store.n_slots)))
        slots = np.fromiter(map(cache.__getitem__, distinct), dtype=np.int64, count=len(distinct))  # (U,)
        n_of = store.lengths[slots]  # (U,) ids of each distinct piece
        if len(distinct) < len(pieces):
            compact = np.empty(len(pieces), dtype=np.int64)  # (P,)
            compact[firsts] = np.arange(len(firsts))
            slots, n_of = slots[compact[which]], n_of[compact[which]]  # (P,) per piece
        start = store.offsets[slots]  # (P,) where each piece's ids are in the store
        out_start = np.cumsum(n_of) - n_of  # (P,) where they go in the output
        pos = np.arange(int(n_of.sum()), dtype=np.int64) + np.repeat(start - out_start, n_of)  # (N,)
        return store.flat[pos].astype(np.int64)

    def _encode_pieces(self, pieces: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Ids of many pieces at once, as (all their ids (F,), how many each piece has (U,)): words up to
        LONG_PIECE bytes merge together in NumPy rounds, longer ones one by one."""
        raws = [p.encode("utf-8") for p in pieces]
        if not (self.ignore_merges or max(map(len, raws)) > LONG_PIECE):
            return self._merge_batch(raws)
        by_bytes = self._bytes_to_id() if self.ignore_merges else {}
        out: list[list[int] | None] = [None] * len(raws)
        batch: list[int] = []
        for k, b in enumerate(raws):
            if b in by_bytes:
                out[k] = [by_bytes[b]]
            elif len(b) > LONG_PIECE:
                out[k] = self._encode_word(encode_bytes(b))
            else:
                batch.append(k)
        flat, lengths = self._merge_batch([raws[k] for k in batch])
        ends = np.cumsum(lengths).tolist()
        for k, a, e in zip(batch, [0, *ends], ends):
            out[k] = flat[a:e].tolist()
        got: list[list[int]] = out  # type: ignore[assignment]
        return (np.fromiter(chain.from_iterable(got), dtype=np.int32),
                np.fromiter(map(len, got), dtype=np.int64, count=len(got)))

    def _encode_piece(self, piece: str) -> list[int]:
        return self._encode_word(encode_bytes(piece.encode("utf-8")))

    def _encode_word(self, word: str) -> list[int]:
        """Ids of one byte-level word (one character per byte)."""
        enc = self.encoder
        if len(word) == 1 or (self.ignore_merges and word in enc):
            return [enc[word]]
        if len(word) > HUGE_PIECE:
            return self._merge_numpy(word)
        parts = _merge_heap(word, self.ranks) if len(word) > LONG_PIECE else _merge_scan(word, self.ranks)
        return [enc[p] for p in parts]

    def _merge_tables(self) -> tuple[_PairTable, np.ndarray, np.ndarray, np.ndarray]:
        """(pair key left * V + right -> rank, merged id by rank, id of each byte, rank of each pair of bytes
        (65536,) with len(merges) for none), built once."""
        if self._numpy_merges is None:
            enc, V = self.encoder, self.vocab_size
            keys = np.array([enc[a] * V + enc[b] for a, b in self.merges], dtype=np.int64)  # (M,)
            new = np.array([enc[a + b] for a, b in self.merges], dtype=np.int64)  # (M,)
            byte_ids = np.array([enc[c] for c in bytes_to_unicode().values()], dtype=np.int64)  # (256,)
            table = _PairTable(keys)
            pairs = (byte_ids[:, None] * V + byte_ids[None, :]).ravel()  # (65536,)
            self._numpy_merges = (table, new.astype(np.int32), byte_ids, table.lookup(pairs).astype(np.int32))
        return self._numpy_merges

    def _merge_batch(self, words: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
        """BPE on many words (their UTF-8 bytes) at once, in NumPy rounds.  Words are independent, so each round
        applies, in every word at once, that word's own lowest-ranked pair, at every occurrence left to right
        (in a run of overlapping occurrences, "aaa", the 1st, 3rd, ...): per word exactly the rescanning merge.
        Only the pairs beside a merge are looked up again.  Returns (every word's ids, in order (F,) int32,
        how many ids each word has (W,))."""
        table, new, byte_ids, byte_pair_rank = self._merge_tables()
        V = self.vocab_size
        none = np.int32(table.size)
        lengths = np.fromiter(map(len, words), dtype=np.int64, count=len(words))  # (W,)
        raw = np.frombuffer(b"".join(words), dtype=np.uint8).astype(np.int32)  # (N,)
        ids = byte_ids[raw].astype(np.int32)  # (N,) int32 throughout: half the memory traffic
        word = np.repeat(np.arange(len(words), dtype=np.int32), lengths)  # (N,) which word each token is in

        def rank_of_pairs(at: np.ndarray) -> np.ndarray:
            """Rank of the pair starting at each position in `at` (none across words or past the end)."""
            ok = at + 1 < len(ids)  # (k,)
            nxt = np.where(ok, at + 1, at)  # (k,)
            ok &= word[at] == word[nxt]
            return np.where(ok, table.lookup(ids[at].astype(np.int64) * V + ids[nxt]), none)  # (k,)

        # (N,) rank of the pair (i, i + 1): at first every token is a byte, so a table lookup
        ranks = np.full(len(ids), none, dtype=np.int32)
        if len(ids) > 1:
            ranks[:-1] = np.where(word[:-1] == word[1:], byte_pair_rank[raw[:-1] * 256 + raw[1:]], none)
        done_words: list[np.ndarray] = []
        done_ids: list[np.ndarray] = []
        while len(ids):
            starts = np.flatnonzero(np.concatenate([[True], word[1:] != word[:-1]]))  # (W',) first token of each
            best = np.minimum.reduceat(ranks, starts)  # (W',) each word's lowest rank
            finished = best == none  # (W',)
            if finished.any():  # set aside the words with nothing left to merge
                tok_done = np.repeat(finished, np.diff(np.append(starts, len(ids))))  # (N,)
                done_words.append(word[tok_done])
                done_ids.append(ids[tok_done])
                keep = ~tok_done
                ids, word, ranks = ids[keep], word[keep], ranks[keep]
                if not len(ids):
                    break
                best = best[~finished]
                starts = np.flatnonzero(np.concatenate([[True], word[1:] != word[:-1]]))  # (W',)
            per_token_best = np.repeat(best, np.diff(np.append(starts, len(ids))))  # (N,)
            at = np.flatnonzero(ranks == per_token_best)  # (k,) left positions of the pairs merged this round
            if len(at) > 1:  # overlapping occurrences (a pair of one token twice): keep every other in a run
                run_start = np.concatenate([[True], np.diff(at) != 1])  # (k,)
                first = np.maximum.accumulate(np.where(run_start, np.arange(len(at)), 0))  # (k,)
                at = at[(np.arange(len(at)) - first) % 2 == 0]
            ids[at] = new[ranks[at]]
            keep = np.ones(len(ids), dtype=bool)  # (N,)
            keep[at + 1] = False
            ids, word, ranks = ids[keep], word[keep], ranks[keep]
            merged = at - np.arange(len(at))  # (k,) where the merged tokens are now
            ranks[merged] = rank_of_pairs(merged)
            left = merged[merged > 0] - 1  # (k',) the pairs that now end in a merged token
            ranks[left] = rank_of_pairs(left)
        all_words = np.concatenate(done_words) if done_words else np.zeros(0, dtype=np.int32)  # (T,)
        order = np.argsort(all_words, kind="stable")  # (T,) tokens of a word stay in order
        flat = np.concatenate(done_ids)[order] if done_ids else all_words  # (T,)
        return flat.astype(np.int32), np.bincount(all_words, minlength=len(words)).astype(np.int64)

    def _merge_numpy(self, word: str) -> list[int]:
        """BPE on one long byte-level word: NumPy rounds over the whole word (each the lowest pair, every
        occurrence) while they are few, then, for a word with many different merges (random letters), a
        linked list merged rank by rank (_merge_linked).  Both are exactly the rescanning merge."""
        table, new, byte_ids, byte_pair_rank = self._merge_tables()
        V, none = self.vocab_size, table.size
        raw = np.frombuffer(decode_bytes(word), dtype=np.uint8).astype(np.int64)  # (n,)
        ids = byte_ids[raw]  # (n,)
        ranks = np.append(byte_pair_rank[raw[:-1] * 256 + raw[1:]], none).astype(np.int64)  # (n,) pair (i, i+1)
        for _ in range(ROUNDS_BEFORE_LINKED):
            r = int(ranks.min())
            if r == none:
                out: list[int] = ids.tolist()
                return out
            at = np.flatnonzero(ranks == r)  # (k,) every occurrence
            if len(at) > 1:  # overlapping occurrences (a pair of one token twice): every other in a run
                run_start = np.concatenate([[True], np.diff(at) != 1])  # (k,)
                first = np.maximum.accumulate(np.where(run_start, np.arange(len(at)), 0))  # (k,)
                at = at[(np.arange(len(at)) - first) % 2 == 0]
            ids[at] = new[r]
            keep = np.ones(len(ids), dtype=bool)  # (n,)
            keep[at + 1] = False
            ids, ranks = ids[keep], ranks[keep]
            merged = at - np.arange(len(at))  # (k,) where the merged tokens are now
            for p in (merged, merged[merged > 0] - 1):  # the pairs that start or end at a merged token
                q = p[p + 1 < len(ids)]
                ranks[q] = table.lookup(ids[q] * V + ids[q + 1])
                ranks[p[p + 1 >= len(ids)]] = none
        return self._merge_linked(ids)

    def _merge_linked(self, ids: np.ndarray) -> list[int]:
        """BPE from the parts `ids` (n,): a linked list of parts in NumPy arrays and, per rank, the positions of
        its pairs; ranks are taken lowest first from a heap and all the occurrences of one rank merged at once,
        left to right (in a run of overlapping ones, the 1st, 3rd, ...).  A little Python per distinct rank."""
        table, new, _, _ = self._merge_tables()
        V, none = self.vocab_size, table.size
        ids = ids.astype(np.int64)  # (n,) the token of the part starting at each position, while alive
        n = len(ids)
        nxt = np.arange(1, n + 1, dtype=np.int64)  # (n,) next live part, -1 at the end
        nxt[-1] = -1
        prv = np.arange(-1, n - 1, dtype=np.int64)  # (n,) previous live part, -1 at the start
        dead = np.zeros(n, dtype=bool)  # (n,) parts merged into their left neighbour
        buckets: dict[int, list[np.ndarray]] = {}
        heap: list[int] = []

        def add(pos: np.ndarray, ranks: np.ndarray) -> None:
            """File the pairs starting at `pos` under their ranks (ranks == none are dropped)."""
            keep = ranks != none
            pos, ranks = pos[keep], ranks[keep]
            if not len(pos):
                return
            order = np.argsort(ranks, kind="stable")  # (k,)
            pos, ranks = pos[order], ranks[order]
            cut = np.flatnonzero(np.diff(ranks)) + 1  # (g - 1,) where a new rank starts
            for r, group in zip(ranks[np.concatenate([[0], cut])].tolist(), np.split(pos, cut)):
                if r not in buckets:
                    buckets[r] = []
                    heapq.heappush(heap, r)
                buckets[r].append(group)

        add(np.arange(n - 1, dtype=np.int64), table.lookup(ids[:-1] * V + ids[1:]))
        while heap:
            r = heapq.heappop(heap)
            pos = np.unique(np.concatenate(buckets.pop(r)))  # (k,) sorted: left to right
            pos = pos[~dead[pos]]
            right = nxt[pos]  # (k,)
            ok = right >= 0
            pos, right = pos[ok], right[ok]
            ok = table.lookup(ids[pos] * V + ids[right]) == r  # still that pair (entries may be stale)
            pos, right = pos[ok], right[ok]
            if not len(pos):
                continue
            if len(pos) > 1:  # overlapping occurrences (a pair of one token twice): every other in a run
                run_start = np.concatenate([[True], right[:-1] != pos[1:]])  # (k,)
                first = np.maximum.accumulate(np.where(run_start, np.arange(len(pos)), 0))  # (k,)
                keep = (np.arange(len(pos)) - first) % 2 == 0
                pos, right = pos[keep], right[keep]
            ids[pos] = new[r]
            dead[right] = True
            after = nxt[right]  # (k,)
            nxt[pos] = after
            prv[after[after >= 0]] = pos[after >= 0]
            left = prv[pos]  # (k,)
            has_left, has_right = left >= 0, after >= 0
            add(left[has_left], table.lookup(ids[left[has_left]] * V + ids[pos[has_left]]))
            add(pos[has_right], table.lookup(ids[pos[has_right]] * V + ids[after[has_right]]))
        out: list[int] = ids[~dead].tolist()  # the list keeps the parts in position order
        return out

    # ---- decoding
    def decode_bytes(self, ids: Iterable[int] | np.ndarray) -> bytes:
        """The bytes of a sequence of ids (ids out of range: a one-line ValueError)."""
        table = self._bytes
        return b"".join([table[i] for i in self._check_ids(ids)])  # type: ignore[misc]

    def decode(self, ids: Iterable[int] | np.ndarray, errors: str = "replace") -> str:
        """The text of any id sequence; bytes that are not valid UTF-8 (a cut multi-byte character) become
        U+FFFD (errors="replace", the default; "strict" raises, "ignore" drops them), so decoding never fails
        on valid ids."""
        return self.decode_bytes(ids).decode("utf-8", errors=errors)

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
        if self._holes:
            bad = next((i for i in out if self._bytes[i] is None), None)
            if bad is not None:
                raise ValueError(f"ids: {bad} is not a token of this tokenizer (an unused id)")
        return out

    @property
    def _holes(self) -> bool:
        return len(self.encoder) + len(self.special_tokens) < len(self._bytes)

    # ---- plain-data form (checkpoints store this as JSON, never pickle)
    def to_dict(self) -> dict[str, Any]:
        """{"type": "bpe", "vocab": {token: id}, "merges": ["left right", ...], "special_tokens": {text: id}},
        plus "pattern": [regex, ...] when it is not GPT-2's and "ignore_merges": true when set."""
        d: dict[str, Any] = {"type": "bpe", "vocab": dict(self.encoder), "merges": [f"{a} {b}" for a, b in self.merges],
             "special_tokens": dict(self.special_tokens)}
        if self.pattern != (GPT2_PATTERN,):
            d["pattern"] = list(self.pattern)
        if self.ignore_merges:
            d["ignore_merges"] = True
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "tokenizer") -> BPETokenizer:
        """Inverse of to_dict (every consistency check of the constructor applies)."""
        if not isinstance(d, dict) or d.get("type") != "bpe" or not isinstance(d.get("vocab"), dict) \
                or not isinstance(d.get("merges"), list) or not isinstance(d.get("special_tokens", {}), dict):
            raise ValueError(f"{where}: expected {{'type': 'bpe', 'vocab': dict, 'merges': list, "
                             f"'special_tokens': dict}}")
        pattern = d.get("pattern")
        if pattern is not None and not (isinstance(pattern, list) and pattern and all(isinstance(p, str)
                                                                                      for p in pattern)):
            raise ValueError(f"{where}: 'pattern' must be a non-empty list of regex strings")
        return cls(d["vocab"], parse_merges(d["merges"], where), d.get("special_tokens", {}), where=where,
                   pattern=pattern, ignore_merges=bool(d.get("ignore_merges", False)))

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, BPETokenizer) and self.encoder == other.encoder
                and self.merges == other.merges and self.special_tokens == other.special_tokens
                and self.pattern == other.pattern and self.ignore_merges == other.ignore_merges)

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


class _IdStore:
    """The ids of cached pieces, in NumPy arrays that grow by doubling: slot s holds flat[offsets[s]:
    offsets[s] + lengths[s]] (no Python list or int per piece)."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        self.flat = np.zeros(1024, dtype=np.int32)
        self.offsets = np.zeros(256, dtype=np.int64)
        self.lengths = np.zeros(256, dtype=np.int64)
        self.n_flat = self.n_slots = 0

    def add(self, flat: np.ndarray, lengths: np.ndarray) -> int:
        """Store the ids of len(lengths) more pieces; returns the first new slot."""
        first = self.n_slots
        need_flat, need_slots = self.n_flat + len(flat), self.n_slots + len(lengths)
        if need_flat > len(self.flat):
            self.flat = np.resize(self.flat, max(need_flat, 2 * len(self.flat)))
        if need_slots > len(self.offsets):
            size = max(need_slots, 2 * len(self.offsets))
            self.offsets, self.lengths = np.resize(self.offsets, size), np.resize(self.lengths, size)
        self.flat[self.n_flat:need_flat] = flat
        self.offsets[first:need_slots] = self.n_flat + np.cumsum(lengths) - lengths
        self.lengths[first:need_slots] = lengths
        self.n_flat, self.n_slots = need_flat, need_slots
        return first


class _PairTable:
    """A hash table in NumPy arrays (open addressing, linear probing, at most 1/4 full): the rank of each merge
    pair key, looked up for a whole array of keys at once; keys that are not merges give size (= M)."""

    def __init__(self, keys: np.ndarray) -> None:
        self.size = len(keys)
        bits = max(4, int(4 * max(self.size, 1) - 1).bit_length())
        self.shift, self.mask = np.uint64(64 - bits), np.int64((1 << bits) - 1)
        self.keys = np.full(1 << bits, -1, dtype=np.int64)  # (T,) -1: empty
        self.vals = np.full(1 << bits, self.size, dtype=np.int64)  # (T,)
        slot = self._hash(keys)  # (M,)
        pending = np.arange(self.size)  # (m,) merges not placed yet
        while len(pending):
            s = slot[pending]  # (m,)
            free = self.keys[s] == -1  # (m,)
            cand, cs = pending[free], s[free]
            won_slots, first = np.unique(cs, return_index=True)  # several claim one slot: the first wins
            winners = cand[first]
            self.keys[won_slots] = keys[winners]
            self.vals[won_slots] = winners
            placed = np.zeros(self.size, dtype=bool)  # (M,)
            placed[winners] = True
            pending = pending[~placed[pending]]
            slot[pending] = (slot[pending] + 1) & self.mask

    def _hash(self, keys: np.ndarray) -> np.ndarray:
        h = keys.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)  # (k,) wraps modulo 2**64
        return (h >> self.shift).astype(np.int64)

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """The rank of each key (size where it is not a merge)."""
        out = np.full(len(keys), self.size, dtype=np.int64)  # (k,)
        slot = self._hash(keys)  # (k,)
        todo = np.arange(len(keys))  # (t,) keys still probing
        while len(todo):
            s = slot[todo]  # (t,)
            found = self.keys[s]  # (t,)
            hit = found == keys[todo]
            out[todo[hit]] = self.vals[s[hit]]
            todo = todo[~hit & (found != -1)]
            slot[todo] = (slot[todo] + 1) & self.mask
        return out


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
