"""Hugging Face tokenizer.json, as today's model families write it, with the standard library.

    tok = load_tokenizer_json("llama3/tokenizer.json")   # a JsonTokenizer (BPETokenizer for plain GPT-2 files)
    ids = tok.encode("Hello world", add_special_tokens=True)   # BOS/EOS as the post-processor says
    tok.decode(ids, skip_special_tokens=True)                  # 'Hello world'

The file's pipeline runs as Hugging Face `tokenizers` runs it: added tokens are cut out of the raw text
(those with normalized=false), each remaining part is normalized and cut again at the normalized added
tokens, pre-tokenized into pieces, and every piece goes through the model (BPE with merges, or
SentencePiece-style BPE with scores, sentencepiece.py); decoding runs the decoder chain over the token
strings.  A component npgpt does not implement is a one-line ValueError naming it and the file; the full list
of supported and refused components is in docs/tokenizer_files.md.
"""

from __future__ import annotations

import heapq
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import repeat
from typing import Any

import numpy as np

from .byte_unicode import bytes_to_unicode
from .protocol import TOKENIZER_LOADERS, ids_dtype

Pieces = list[str]
_NO_RANK = 1 << 62
LONG_PIECE = 64  # pieces with more symbols than this merge with a heap (O(n log n)), not by rescanning
CACHE_LIMIT = 100_000
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")
GPT2_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


class Refused(ValueError):
    """A component of the file that npgpt does not implement (one line: the component and the file)."""


def _compile(source: str) -> Any:
    """A compiled pattern with the `regex` module's meaning of source (\\p{L}, \\p{N}, ... from the
    committed Unicode table; pattern.py)."""
    from . import pattern

    return pattern.compile_pattern(source)


def _pattern(spec: Any, where: str, what: str) -> Any:
    """A Split/Replace "pattern": {"String": s} (literal) or {"Regex": r}."""
    if isinstance(spec, dict) and isinstance(spec.get("String"), str):
        return re.compile(re.escape(spec["String"]))
    if isinstance(spec, dict) and isinstance(spec.get("Regex"), str):
        try:
            return _compile(spec["Regex"])
        except (ValueError, re.error) as e:
            raise Refused(f"{where}: {what}: regex {spec['Regex']!r} is not supported ({e})") from None
    if isinstance(spec, str):
        return re.compile(re.escape(spec))
    raise ValueError(f"{where}: {what}: pattern {json.dumps(spec)[:60]} is neither {{'String': ...}} nor "
                     f"{{'Regex': ...}}")


def _spans(pat: Any, s: str) -> list[tuple[int, int]]:
    """(start, end) of every match of a compiled pattern (pattern.py's or `re`'s) in s."""
    if hasattr(pat, "spans"):
        spans: list[tuple[int, int]] = pat.spans(s)
        return spans
    return [m.span() for m in pat.finditer(s)]


def _sub(pat: Any, content: str, s: str) -> str:
    """s with every non-empty match of pat replaced by content."""
    out = []
    pos = 0
    for a, b in _spans(pat, s):
        if a == b:
            continue
        out += [s[pos:a], content]
        pos = b
    return "".join(out) + s[pos:] if out else s


def _get(d: Mapping[str, Any], key: str, kind: type | tuple[type, ...], default: Any, where: str, what: str) -> Any:
    v = d.get(key, default)
    if v is None and default is None:
        return None
    if not isinstance(v, kind):
        raise ValueError(f"{where}: {what}.{key}: expected {getattr(kind, '__name__', kind)}, got {v!r}"[:200])
    return v


# ---------------------------------------------------------------- normalizers: str -> str

def _normalizer(d: Any, where: str) -> Callable[[str], str] | None:
    if d is None:
        return None
    if not isinstance(d, dict):
        raise ValueError(f"{where}: normalizer: expected an object, got {d!r}"[:200])
    kind = d.get("type")
    what = f"normalizer {kind}"
    if kind == "Sequence":
        parts = [f for f in (_normalizer(x, where) for x in _get(d, "normalizers", list, [], where, what)) if f]

        def seq(s: str) -> str:
            for f in parts:
                s = f(s)
            return s
        return seq
    if kind in ("NFC", "NFD", "NFKC", "NFKD"):
        form = kind
        return lambda s: unicodedata.normalize(form, s)
    if kind == "Lowercase":
        return str.lower
    if kind == "Replace":
        pat = _pattern(d.get("pattern"), where, what)
        content = _get(d, "content", str, "", where, what)
        return lambda s: _sub(pat, content, s)
    if kind == "Prepend":
        pre = _get(d, "prepend", str, "", where, what)
        return lambda s: pre + s if s else s
    if kind == "Strip":
        left, right = _get(d, "strip_left", bool, True, where, what), _get(d, "strip_right", bool, True, where, what)

        def strip(s: str) -> str:
            if left:
                s = s.lstrip()
            if right:
                s = s.rstrip()
            return s
        return strip
    raise Refused(f"{where}: normalizer {kind!r} is not supported (npgpt reads Sequence, Replace, Prepend, NFC, "
                  f"NFD, NFKC, NFKD, Strip, Lowercase)")


# ---------------------------------------------------------------- pre-tokenizers: pieces -> pieces

def _split_one(s: str, pat: Any, behavior: str, invert: bool) -> Pieces:
    """Hugging Face's Split on one piece: the text cut into matches and the gaps between them, then joined
    or dropped as `behavior` says (empty pieces are dropped)."""
    segs: list[tuple[str, bool]] = []  # (text, is the delimiter)
    pos = 0
    after = -1  # end of the last non-empty match: an empty match there is skipped (as Oniguruma iterates)
    for a, b in _spans(pat, s):  # an empty match cuts too, as tokenizers' find_matches does
        if a == b == after:
            continue
        if b > a:
            after = b
        if a > pos:
            segs.append((s[pos:a], invert))
        segs.append((s[a:b], not invert))
        pos = b
    if pos < len(s):
        segs.append((s[pos:], invert))
    return [t for t in _join(segs, behavior) if t]


def _join(segs: list[tuple[str, bool]], behavior: str) -> list[str]:
    if behavior == "Isolated":
        return [t for t, _ in segs]
    if behavior == "Removed":
        return [t for t, delim in segs if not delim]
    out: list[str] = []
    prev = False
    if behavior == "MergedWithPrevious":
        for t, delim in segs:
            if delim and not prev and out:
                out[-1] += t
            else:
                out.append(t)
            prev = delim
        return out
    if behavior == "MergedWithNext":
        for t, delim in reversed(segs):
            if delim and not prev and out:
                out[-1] = t + out[-1]
            else:
                out.append(t)
            prev = delim
        return out[::-1]
    if behavior == "Contiguous":
        for i, (t, delim) in enumerate(segs):
            if i and delim == prev:
                out[-1] += t
            else:
                out.append(t)
            prev = delim
        return out
    raise AssertionError(behavior)


BEHAVIORS = ("Removed", "Isolated", "MergedWithPrevious", "MergedWithNext", "Contiguous")
PUNCTUATION = r"[\p{P}!-/:-@\[-`{-~]"  # tokenizers' is_punctuation: Unicode P* and ASCII punctuation


class _Pre:
    """A pre-tokenizer: __call__(pieces, first) -> pieces; byte_level says whether it spells bytes."""

    def __init__(self, fn: Callable[[Pieces, bool], Pieces], byte_level: bool = False) -> None:
        self.fn = fn
        self.byte_level = byte_level

    def __call__(self, pieces: Pieces, first: bool) -> Pieces:
        return self.fn(pieces, first)


def _splitter(pat: Any, behavior: str, invert: bool = False) -> Callable[[Pieces, bool], Pieces]:
    def run(pieces: Pieces, first: bool) -> Pieces:
        out: Pieces = []
        for p in pieces:
            out += _split_one(p, pat, behavior, invert)
        return out
    return run


def _pre_tokenizer(d: Any, where: str) -> _Pre | None:
    if d is None:
        return None
    if not isinstance(d, dict):
        raise ValueError(f"{where}: pre_tokenizer: expected an object, got {d!r}"[:200])
    kind = d.get("type")
    what = f"pre_tokenizer {kind}"
    if kind == "Sequence":
        parts = [p for p in (_pre_tokenizer(x, where) for x in _get(d, "pretokenizers", list, [], where, what)) if p]

        def seq(pieces: Pieces, first: bool) -> Pieces:
            for p in parts:
                pieces = p(pieces, first)
            return pieces
        return _Pre(seq, any(p.byte_level for p in parts))
    if kind == "Split":
        behavior = _get(d, "behavior", str, "Isolated", where, what)
        if behavior not in BEHAVIORS:
            raise Refused(f"{where}: {what}: behavior {behavior!r} is not one of {', '.join(BEHAVIORS)}")
        return _Pre(_splitter(_pattern(d.get("pattern"), where, what), behavior,
                              _get(d, "invert", bool, False, where, what)))
    if kind == "ByteLevel":
        prefix = _get(d, "add_prefix_space", bool, True, where, what)
        use_regex = _get(d, "use_regex", bool, True, where, what)
        split = _splitter(_compile(GPT2_SPLIT), "Isolated") if use_regex else None
        table = bytes_to_unicode()
        trans = {b: table[b] for b in range(256)}

        def byte_level(pieces: Pieces, first: bool) -> Pieces:
            if prefix:
                pieces = [p if p.startswith(" ") else " " + p for p in pieces]
            if split is not None:
                pieces = split(pieces, first)
            return ["".join(map(trans.__getitem__, p.encode("utf-8"))) for p in pieces]
        return _Pre(byte_level, True)
    if kind == "Metaspace":
        rep = _get(d, "replacement", str, "\u2581", where, what)
        scheme = d.get("prepend_scheme")
        if scheme is None:  # files before tokenizers 0.14 say add_prefix_space instead
            scheme = "always" if d.get("add_prefix_space", True) else "never"
        if scheme not in ("always", "first", "never"):
            raise Refused(f"{where}: {what}: prepend_scheme {scheme!r} is not always, first or never")
        do_split = _get(d, "split", bool, True, where, what)
        rep_pat = re.compile(re.escape(rep))

        def metaspace(pieces: Pieces, first: bool) -> Pieces:
            out: Pieces = []
            for i, p in enumerate(pieces):
                p = p.replace(" ", rep)
                if (scheme == "always" or (scheme == "first" and first and i == 0)) and not p.startswith(rep):
                    p = rep + p
                out += _split_one(p, rep_pat, "MergedWithNext", False) if do_split else [p]
            return out
        return _Pre(metaspace)
    if kind == "Digits":
        individual = _get(d, "individual_digits", bool, False, where, what)
        return _Pre(_splitter(_compile(r"\p{N}"), "Isolated" if individual else "Contiguous"))
    if kind == "Punctuation":
        behavior = _get(d, "behavior", str, "Isolated", where, what)
        if behavior not in BEHAVIORS:
            raise Refused(f"{where}: {what}: behavior {behavior!r} is not one of {', '.join(BEHAVIORS)}")
        return _Pre(_splitter(_compile(PUNCTUATION), behavior))
    if kind == "Whitespace":
        return _Pre(_splitter(_compile(r"\w+|[^\w\s]+"), "Removed", True))
    if kind == "WhitespaceSplit":
        return _Pre(_splitter(_compile(r"\s+"), "Removed"))
    raise Refused(f"{where}: pre_tokenizer {kind!r} is not supported (npgpt reads Sequence, Split, ByteLevel, "
                  f"Metaspace, Digits, Punctuation, Whitespace, WhitespaceSplit)")


# ---------------------------------------------------------------- decoders: token strings -> token strings

def _decoder(d: Any, where: str) -> Callable[[list[str]], list[str]] | None:
    if d is None:
        return None
    if not isinstance(d, dict):
        raise ValueError(f"{where}: decoder: expected an object, got {d!r}"[:200])
    kind = d.get("type")
    what = f"decoder {kind}"
    if kind == "Sequence":
        parts = [f for f in (_decoder(x, where) for x in _get(d, "decoders", list, [], where, what)) if f]

        def seq(toks: list[str]) -> list[str]:
            for f in parts:
                toks = f(toks)
            return toks
        return seq
    if kind == "ByteLevel":
        back = {c: b for b, c in bytes_to_unicode().items()}

        def byte_level(toks: list[str]) -> list[str]:
            raw = bytearray()
            for t in toks:
                for c in t:
                    b = back.get(c)
                    if b is None:
                        raw += c.encode("utf-8")
                    else:
                        raw.append(b)
            return [raw.decode("utf-8", errors="replace")]
        return byte_level
    if kind == "Metaspace":
        rep = _get(d, "replacement", str, "\u2581", where, what)
        scheme = d.get("prepend_scheme")
        if scheme is None:
            scheme = "always" if d.get("add_prefix_space", True) else "never"

        def metaspace(toks: list[str]) -> list[str]:
            out = [t.replace(rep, " ") for t in toks]
            if out and scheme != "never" and out[0].startswith(" "):
                out[0] = out[0][1:]
            return out
        return metaspace
    if kind == "Replace":
        pat = _pattern(d.get("pattern"), where, what)
        content = _get(d, "content", str, "", where, what)
        return lambda toks: [_sub(pat, content, t) for t in toks]
    if kind == "ByteFallback":
        def byte_fallback(toks: list[str]) -> list[str]:
            out: list[str] = []
            pending = bytearray()
            n_pending = 0
            for t in toks + [""]:
                m = _BYTE_TOKEN.fullmatch(t) if len(t) == 6 else None
                if m:
                    pending.append(int(m.group(1), 16))
                    n_pending += 1
                    continue
                if pending:
                    try:
                        out.append(pending.decode("utf-8"))
                    except UnicodeDecodeError:
                        out += ["\ufffd"] * n_pending
                    pending = bytearray()
                    n_pending = 0
                if t:
                    out.append(t)
            return out
        return byte_fallback
    if kind == "Fuse":
        return lambda toks: ["".join(toks)]
    if kind == "Strip":
        content = _get(d, "content", str, " ", where, what)
        start, stop = _get(d, "start", int, 0, where, what), _get(d, "stop", int, 0, where, what)

        def strip(toks: list[str]) -> list[str]:
            out = []
            for t in toks:
                a, b = 0, len(t)
                while a < min(start, len(t)) and t[a] == content:
                    a += 1
                n = 0
                while n < stop and b > a and t[b - 1] == content:
                    b -= 1
                    n += 1
                out.append(t[a:b])
            return out
        return strip
    raise Refused(f"{where}: decoder {kind!r} is not supported (npgpt reads ByteLevel, Metaspace, Replace, "
                  f"ByteFallback, Fuse, Strip, Sequence)")


# ---------------------------------------------------------------- post-processors: which ids wrap a text

def _post_processor(d: Any, where: str) -> tuple[list[int], list[int]]:
    """(ids before, ids after) the text's ids when add_special_tokens=True."""
    if d is None:
        return [], []
    if not isinstance(d, dict):
        raise ValueError(f"{where}: post_processor: expected an object, got {d!r}"[:200])
    kind = d.get("type")
    what = f"post_processor {kind}"
    if kind == "ByteLevel":
        return [], []  # it moves offsets only
    if kind == "Sequence":
        before: list[int] = []
        after: list[int] = []
        for x in _get(d, "processors", list, [], where, what):
            b, a = _post_processor(x, where)
            before, after = b + before, after + a
        return before, after
    if kind in ("RobertaProcessing", "BertProcessing"):
        cls, sep = d.get("cls"), d.get("sep")
        if not (isinstance(cls, list) and isinstance(sep, list) and len(cls) == 2 and len(sep) == 2):
            raise ValueError(f"{where}: {what}: expected cls and sep as [token, id]")
        return [int(cls[1])], [int(sep[1])]
    if kind == "TemplateProcessing":
        single = _get(d, "single", list, [], where, what)
        specials = _get(d, "special_tokens", dict, {}, where, what)
        before, after = [], []
        seen_a = False
        for item in single:
            if isinstance(item, dict) and "Sequence" in item:
                if item["Sequence"].get("id", "A") != "A" or seen_a:
                    raise Refused(f"{where}: {what}: a single template with other than one $A is not supported")
                seen_a = True
            elif isinstance(item, dict) and "SpecialToken" in item:
                name = item["SpecialToken"].get("id")
                entry = specials.get(name)
                ids = entry.get("ids") if isinstance(entry, dict) else None
                if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
                    raise ValueError(f"{where}: {what}: special token {name!r} has no ids in special_tokens")
                (after if seen_a else before).extend(ids)
            else:
                raise ValueError(f"{where}: {what}: template item {item!r} is neither Sequence nor SpecialToken"[:200])
        return before, after
    raise Refused(f"{where}: post_processor {kind!r} is not supported (npgpt reads TemplateProcessing, ByteLevel, "
                  f"RobertaProcessing, BertProcessing, Sequence)")


# ---------------------------------------------------------------- the BPE model

def merge_scan(parts: list[str], ranks: Mapping[tuple[str, str], int]) -> list[str]:
    """BPE on one word: repeatedly merge the lowest-ranked adjacent pair, every occurrence left to right."""
    get = ranks.get
    while len(parts) > 1:
        rs = list(map(get, zip(parts, parts[1:]), repeat(_NO_RANK)))  # rank of each adjacent pair
        r = min(rs)
        if r == _NO_RANK:
            break
        i = rs.index(r)
        merged = parts[:i]
        n = len(parts)
        while i < n:
            if i < n - 1 and rs[i] == r:  # ranks are unique per pair: this is the pair, left to right
                merged.append(parts[i] + parts[i + 1])
                i += 2
            else:
                merged.append(parts[i])
                i += 1
        parts = merged
    return parts


def merge_heap(parts: list[str], priority: Callable[[str, str], Any]) -> list[str]:
    """The same merges for long words in O(n log n): a linked list of parts and a heap of (priority,
    position); priority(a, b) is the pair's rank (lower first) or None.  Ties go to the leftmost pair."""
    n = len(parts)
    tok = list(parts)
    nxt = list(range(1, n)) + [-1]
    prv = list(range(-1, n - 1))
    alive = [True] * n
    heap = [(r, i, tok[i], tok[i + 1]) for i in range(n - 1) if (r := priority(tok[i], tok[i + 1])) is not None]
    heapq.heapify(heap)
    while heap:
        _, i, a, b = heapq.heappop(heap)
        j = nxt[i] if alive[i] else -1
        if j < 0 or tok[i] != a or tok[j] != b:
            continue  # stale
        tok[i] = a + b
        alive[j] = False
        nxt[i] = nxt[j]
        if nxt[j] >= 0:
            prv[nxt[j]] = i
        for left in (prv[i], i):
            right = nxt[left] if left >= 0 else -1
            if left >= 0 and right >= 0:
                r = priority(tok[left], tok[right])
                if r is not None:
                    heapq.heappush(heap, (r, left, tok[left], tok[right]))
    return [tok[i] for i in range(n) if alive[i]]


def space_cuts(tokens: Iterable[str], space: str = "\u2581") -> re.Pattern[str] | None:
    """Where a long "▁"-spaced piece can be cut with no change to its merges: before a "▁" whose previous
    character c is not "▁" and no token contains c + "▁" (a merge across the cut would make such a token).
    None when the vocabulary has no "▁"."""
    before: set[str] = set()
    seen = False
    for t in tokens:
        k = t.find(space)
        while k >= 0:
            seen = True
            if k > 0 and t[k - 1] != space:
                before.add(t[k - 1])
            k = t.find(space, k + 1)
    if not seen:
        return None
    excluded = re.escape(space) + "".join(re.escape(c) for c in sorted(before))
    return re.compile(f"(?<=[^{excluded}])(?={re.escape(space)})")


def cut_at(piece: str, cuts: re.Pattern[str]) -> list[str]:
    """piece cut at every match of cuts (zero-width)."""
    out = []
    pos = 0
    for m in cuts.finditer(piece):
        if m.start() > pos:
            out.append(piece[pos:m.start()])
            pos = m.start()
    out.append(piece[pos:])
    return out


def split_merge(m: Any, r: int, where: str) -> tuple[str, str]:
    """A merge given as "left right" (the cut is the first space after the first character, as llama.cpp
    cuts) or [left, right]."""
    if isinstance(m, str):
        k = m.find(" ", 1)
        if k > 0:
            return m[:k], m[k + 1:]
    elif isinstance(m, (list, tuple)) and len(m) == 2 and all(isinstance(p, str) for p in m):
        return m[0], m[1]
    raise ValueError(f"{where}: merge {r}: expected 'left right' or [left, right], got {m!r}"[:200])


class BPEModel:
    """Hugging Face's BPE model: vocab {token: id}, merges in rank order, byte_fallback (<0xNN> tokens for
    characters not in the vocabulary), unk_token / fuse_unk, ignore_merges (a piece that is a token is
    that token)."""

    def __init__(self, d: Mapping[str, Any], where: str) -> None:
        what = "model BPE"
        vocab = d.get("vocab")
        if not isinstance(vocab, dict):
            raise ValueError(f"{where}: {what}: expected model.vocab as {{token: id}}")
        for key in ("continuing_subword_prefix", "end_of_word_suffix"):
            if d.get(key):
                raise Refused(f"{where}: {what}: {key} {d[key]!r} is not supported")
        if d.get("dropout") not in (None, 0, 0.0):
            raise Refused(f"{where}: {what}: dropout {d['dropout']!r} is not supported (encoding is deterministic)")
        self.vocab: dict[str, int] = vocab
        merges = _get(d, "merges", list, [], where, what)
        ranks: dict[tuple[str, str], int] = {}
        for r, m in enumerate(merges):
            pair = split_merge(m, r, where)
            ranks.setdefault(pair, r)
        self.ranks = ranks
        self.byte_fallback = _get(d, "byte_fallback", bool, False, where, what)
        self.fuse_unk = _get(d, "fuse_unk", bool, False, where, what)
        self.ignore_merges = _get(d, "ignore_merges", bool, False, where, what)
        unk = d.get("unk_token")
        if unk is not None and unk not in vocab:
            raise ValueError(f"{where}: {what}: unk_token {unk!r} is not in the vocabulary")
        self.unk_id: int | None = vocab[unk] if unk is not None else None
        self.byte_ids = [vocab.get(f"<0x{b:02X}>") for b in range(256)]
        self.newline_tokens = False  # llama.cpp's Gemma 4 rule: a piece of newlines that is a token is it
        self._cuts = space_cuts(vocab) if not self.ignore_merges else None
        self._cache: dict[str, list[int]] = {}

    def _priority(self, a: str, b: str) -> int | None:
        return self.ranks.get((a, b))

    def __call__(self, piece: str) -> list[int]:
        if len(piece) > 12 and self._cuts is not None and not (self.newline_tokens and "\n" in piece):
            out: list[int] = []
            cache = self._cache
            if len(cache) > CACHE_LIMIT:
                cache.clear()
            for chunk in cut_at(piece, self._cuts):
                got = cache.get(chunk)
                if got is None:
                    got = self._encode(chunk)
                    cache[chunk] = got
                out += got
            return out
        return self._encode(piece)

    def _encode(self, piece: str) -> list[int]:
        vocab = self.vocab
        if (self.ignore_merges or (self.newline_tokens and not piece.strip("\n"))) and piece in vocab:
            return [vocab[piece]]
        out: list[int] = []
        run: list[str] = []  # in-vocabulary characters since the last one that is not
        prev_unk = False
        for c in piece:
            if c in vocab:
                run.append(c)
                prev_unk = False
                continue
            fixed: list[int] | None = None
            if self.byte_fallback:
                bs = [self.byte_ids[b] for b in c.encode("utf-8")]
                if None not in bs:
                    fixed = bs  # type: ignore[assignment]
            if fixed is None:
                if self.unk_id is None:
                    continue  # no unk token: the character is dropped, as tokenizers does
                if self.fuse_unk and prev_unk and not run:
                    continue
                fixed = [self.unk_id]
                prev_unk = True
            else:
                prev_unk = False
            out += [vocab[p] for p in self._merge(run)]
            run = []
            out += fixed
        out += [vocab[p] for p in self._merge(run)]
        return out

    def _merge(self, parts: list[str]) -> list[str]:
        if len(parts) < 2:
            return parts
        if len(parts) > LONG_PIECE:
            return merge_heap(parts, self._priority)
        return merge_scan(parts, self.ranks)


# model "type" -> its class (sentencepiece.py adds "SentencePieceBPE"; the package imports both modules)
MODELS: dict[str, Callable[[Mapping[str, Any], str], Any]] = {"BPE": BPEModel}


# ---------------------------------------------------------------- added tokens

class AddedToken:
    def __init__(self, d: Any, where: str) -> None:
        if not isinstance(d, dict) or not isinstance(d.get("content"), str) or not d["content"] \
                or not isinstance(d.get("id"), int):
            raise ValueError(f"{where}: added_tokens: expected {{'id': int, 'content': str, ...}}, got {d!r}"[:200])
        self.id: int = d["id"]
        self.content: str = d["content"]
        self.special = bool(d.get("special", False))
        self.normalized = bool(d.get("normalized", not self.special))
        self.lstrip = bool(d.get("lstrip", False))
        self.rstrip = bool(d.get("rstrip", False))
        self.single_word = bool(d.get("single_word", False))

    def regex(self) -> str:
        body = re.escape(self.content)
        if self.single_word:
            body = r"(?<!\w)" + body + r"(?!\w)"
        return (r"\s*" if self.lstrip else "") + body + (r"\s*" if self.rstrip else "")


def _added_matcher(tokens: Sequence[AddedToken]) -> tuple[re.Pattern[str] | None, dict[str, AddedToken]]:
    """A regex finding the tokens leftmost, the longest at a position, and {content: token}."""
    if not tokens:
        return None, {}
    ordered = sorted(tokens, key=lambda t: (-len(t.content), t.content))
    return re.compile("|".join(t.regex() for t in ordered)), {t.content: t for t in tokens}


def _which(m: re.Match[str], by_content: Mapping[str, AddedToken]) -> AddedToken:
    s = m.group()
    t = by_content.get(s)
    if t is not None:
        return t
    for cand in (s.strip(), s.lstrip(), s.rstrip()):
        t = by_content.get(cand)
        if t is not None:
            return t
    for content, t in by_content.items():  # content with its own edge whitespace
        if content in s:
            return t
    raise AssertionError(s)


# ---------------------------------------------------------------- the tokenizer

class JsonTokenizer:
    """A tokenizer.json's pipeline: normalizer, pre_tokenizer, model, decoder, added tokens and the
    post-processor's BOS/EOS.  encode(text) -> (N,) unsigned ids; decode(ids) -> text; to_dict() stores the
    file's own JSON (plus npgpt's flags), so a checkpoint rebuilds the same tokenizer."""

    def __init__(self, spec: Mapping[str, Any], where: str = "tokenizer.json") -> None:
        if not isinstance(spec, Mapping):
            raise ValueError(f"{where}: expected a JSON object, got {type(spec).__name__}")
        self.spec = dict(spec)
        self.where = where
        model = spec.get("model")
        if not isinstance(model, dict):
            raise ValueError(f"{where}: expected a 'model' object")
        mtype = model.get("type", "BPE" if "merges" in model else None)
        self.model: Any
        if mtype in MODELS:
            self.model = MODELS[mtype](model, where)
            vocab: dict[str, int] = self.model.vocab
        else:
            raise Refused(f"{where}: model {mtype!r} is not supported (npgpt reads BPE; SentencePiece-style BPE "
                          f"with scores comes from .gguf and tokenizer.model files)")
        flags = spec.get("npgpt") or {}
        if flags.get("newline_tokens"):
            self.model.newline_tokens = True
        self.normalizer = _normalizer(spec.get("normalizer"), where)
        self.pre_tokenizer = _pre_tokenizer(spec.get("pre_tokenizer"), where)
        self.decoder = _decoder(spec.get("decoder"), where)
        added = [AddedToken(a, where) for a in (spec.get("added_tokens") or [])]
        self.added = added
        id_to_token: dict[int, str] = {}
        for t, i in vocab.items():
            if not isinstance(i, int) or isinstance(i, bool) or i < 0:
                raise ValueError(f"{where}: vocabulary entry {t!r}: {i!r} is not a non-negative integer id"[:200])
            if i in id_to_token:
                raise ValueError(f"{where}: id {i} is given to both {id_to_token[i]!r} and {t!r}"[:200])
            id_to_token[i] = t
        for a in added:
            id_to_token[a.id] = a.content
        n = max(id_to_token) + 1 if id_to_token else 0
        if n == 0:
            raise ValueError(f"{where}: the vocabulary is empty")
        self._id_to_token = [id_to_token.get(i, "") for i in range(n)]
        self._token_to_id = {t: i for i, t in id_to_token.items()}
        self.special_ids = frozenset(a.id for a in added if a.special)
        self._raw_re, self._raw_by = _added_matcher([a for a in added if not a.normalized])
        self._norm_re, self._norm_by = _added_matcher([a for a in added if a.normalized])
        self.bos_eos = _post_processor(spec.get("post_processor"), where)
        for i in self.bos_eos[0] + self.bos_eos[1]:
            if not 0 <= i < n:
                raise ValueError(f"{where}: post_processor: id {i} is out of range [0, {n})")
        self._cache: dict[str, list[int]] = {}

    # ---- sizes and names
    @property
    def vocab_size(self) -> int:
        """Number of ids (the largest id + 1)."""
        return len(self._id_to_token)

    @property
    def ids_dtype(self) -> np.dtype[Any]:
        return ids_dtype(self.vocab_size)

    def id_to_token(self, i: int) -> str:
        return self._id_to_token[i]

    def token_to_id(self, token: str) -> int | None:
        return self._token_to_id.get(token)

    @property
    def special_tokens(self) -> dict[str, int]:
        """{text: id} of the added tokens marked special."""
        return {a.content: a.id for a in self.added if a.special}

    # ---- encoding
    def encode(self, text: str, add_special_tokens: bool = False) -> np.ndarray:
        """Token ids (N,) of text: added tokens' text is those tokens (as `tokenizers` does); with
        add_special_tokens the post-processor's BOS/EOS are added."""
        if not isinstance(text, str):
            raise ValueError(f"text: expected a str, got {type(text).__name__}")
        ids: list[int] = []
        if add_special_tokens:
            ids += self.bos_eos[0]
        for part, token in self._split_added(text, self._raw_re, self._raw_by, 0):
            if token is not None:
                ids.append(token)
                continue
            norm = self.normalizer(part[0]) if self.normalizer else part[0]
            for sub, tok2 in self._split_added(norm, self._norm_re, self._norm_by, part[1]):
                if tok2 is not None:
                    ids.append(tok2)
                else:
                    ids += self._encode_normalized(sub[0], sub[1] == 0)
        if add_special_tokens:
            ids += self.bos_eos[1]
        return np.array(ids, dtype=self.ids_dtype)

    @staticmethod
    def _split_added(text: str, pat: re.Pattern[str] | None, by: Mapping[str, AddedToken], start: int) \
            -> Iterable[tuple[tuple[str, int], int | None]]:
        """((part, its start), None) for plain text and ((match, start), id) for added tokens."""
        if pat is None:
            if text:
                yield (text, start), None
            return
        pos = 0
        for m in pat.finditer(text):
            if m.start() > pos:
                yield (text[pos:m.start()], start + pos), None
            yield (m.group(), start + m.start()), _which(m, by).id
            pos = m.end()
        if pos < len(text):
            yield (text[pos:], start + pos), None

    def _encode_normalized(self, text: str, first: bool) -> list[int]:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone surrogates: pair what pairs, the rest become U+FFFD
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        pieces = self.pre_tokenizer([text], first) if self.pre_tokenizer else [text]
        cache = self._cache
        if len(cache) > CACHE_LIMIT:
            cache.clear()
        ids: list[int] = []
        for p in pieces:
            if not p:
                continue
            got = cache.get(p)
            if got is None:
                got = self.model(p)
                if len(p) < 256:
                    cache[p] = got
            ids += got
        return ids

    # ---- decoding
    def decode(self, ids: Iterable[int] | np.ndarray, skip_special_tokens: bool = False) -> str:
        """The text of an id sequence (through the file's decoder; tokens joined by spaces when it has none,
        as `tokenizers` does)."""
        arr = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids))
        if arr.size and (arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer)):
            raise ValueError(f"ids: expected a 1-D sequence of integers, got shape {arr.shape} dtype {arr.dtype}")
        n = len(self._id_to_token)
        if arr.size and (int(arr.min()) < 0 or int(arr.max()) >= n):
            bad = int(arr.min()) if int(arr.min()) < 0 else int(arr.max())
            raise ValueError(f"ids: token id {bad} is out of range [0, {n})")
        toks = [self._id_to_token[i] for i in arr.tolist()
                if not (skip_special_tokens and i in self.special_ids)]
        if self.decoder is None:
            return " ".join(toks)
        return "".join(self.decoder(toks))

    # ---- plain-data form
    def to_dict(self) -> dict[str, Any]:
        """{"type": "tokenizer_json", "tokenizer": the file's JSON}: what a checkpoint stores."""
        return {"type": "tokenizer_json", "tokenizer": self.spec}

    @classmethod
    def from_dict(cls, d: Any, where: str = "tokenizer") -> JsonTokenizer:
        if not isinstance(d, dict) or d.get("type") != "tokenizer_json" or not isinstance(d.get("tokenizer"), dict):
            raise ValueError(f"{where}: expected {{'type': 'tokenizer_json', 'tokenizer': {{...}}}}")
        return cls(d["tokenizer"], where)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JsonTokenizer) and self.spec == other.spec

    def __repr__(self) -> str:
        return f"JsonTokenizer({self.where!r}, vocab_size={self.vocab_size})"


TOKENIZER_LOADERS["tokenizer_json"] = JsonTokenizer.from_dict
