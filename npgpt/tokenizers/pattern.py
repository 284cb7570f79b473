"""Pre-tokenizer regular expressions (the `regex` package's dialect) run by the standard library's `re`.

    pat = compile_pattern(r"'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+")
    pat.findall("Hello world's")          # ['Hello', ' world', "'s"], as regex.findall gives

Every \\p{..}, \\s, \\d, \\w and [...] becomes an explicit `re` class built from unicode_table.py (generated
from `regex`'s tables, Unicode 17), never from the running Python's unicodedata.  (?i:...) becomes explicit
classes of case variants, possessive quantifiers and atomic groups are `re`'s own on Python >= 3.11 and a
lookahead-and-backreference emulation on 3.10.  For speed the classes are compiled twice: with their code
points above U+FFFF left out (`re` tests a BMP class with one table lookup, astral ranges one by one), and
whole; text with astral characters is matched with each of those replaced by a BMP character that every
set in the pattern treats alike.  Guide: docs/tokenizers.md
"""

from __future__ import annotations

import bisect
import functools
import re
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from .unicode_table import CASE_VARIANTS, PROPERTIES, UNICODE_VERSION

__all__ = ["GPT2_PATTERN", "UNICODE_VERSION", "CompiledPattern", "compile_pattern", "pretokenize", "split_gpt2",
           "property_ranges"]

# the pattern as GPT-2, tiktoken's `gpt2` and Hugging Face's ByteLevel pre-tokenizer write it
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

Ranges = tuple[tuple[int, int], ...]  # sorted, disjoint, non-adjacent (first, last) code point runs
MAX_CP = 0x10FFFF
NATIVE_POSSESSIVE = sys.version_info >= (3, 11)  # `re` has *+, ++, ?+, {m,n}+ and (?>...) from 3.11

_GROUPS = {"L": ("Lu", "Ll", "Lt", "Lm", "Lo"), "M": ("Mn", "Mc", "Me"), "N": ("Nd", "Nl", "No"),
           "P": ("Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po"), "S": ("Sm", "Sc", "Sk", "So"), "Z": ("Zs", "Zl", "Zp"),
           "LC": ("Lu", "Ll", "Lt"), "L&": ("Lu", "Ll", "Lt")}
_LONG = {"Letter": "L", "Mark": "M", "Number": "N", "Punctuation": "P", "Symbol": "S", "Separator": "Z",
         "Other": "C", "Uppercase_Letter": "Lu", "Lowercase_Letter": "Ll", "Titlecase_Letter": "Lt",
         "Modifier_Letter": "Lm", "Other_Letter": "Lo", "Nonspacing_Mark": "Mn", "Spacing_Mark": "Mc",
         "Enclosing_Mark": "Me", "Decimal_Number": "Nd", "Letter_Number": "Nl", "Other_Number": "No",
         "Space_Separator": "Zs", "Control": "Cc", "Format": "Cf", "Unassigned": "Cn", "Private_Use": "Co",
         "White_Space": "White_Space", "Whitespace": "White_Space"}


# ---- code point sets as Ranges
def _norm(pairs: Sequence[tuple[int, int]]) -> Ranges:
    """Sort and merge overlapping or adjacent runs."""
    out: list[tuple[int, int]] = []
    for a, b in sorted(pairs):
        if out and a <= out[-1][1] + 1:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return tuple(out)


def _complement(r: Ranges) -> Ranges:
    out, nxt = [], 0
    for a, b in r:
        if a > nxt:
            out.append((nxt, a - 1))
        nxt = b + 1
    if nxt <= MAX_CP:
        out.append((nxt, MAX_CP))
    return tuple(out)


def _parse_table(text: str) -> Ranges:
    out = []
    for item in text.split():
        a, _, b = item.partition("-")
        out.append((int(a, 16), int(b or a, 16)))
    return tuple(out)


@functools.cache
def property_ranges(name: str) -> Ranges:
    """The code points of a Unicode property as `regex` names it in \\p{name}: a general category (L, Lu, ...,
    Cn), White_Space, Word (\\w), Digit (\\d) or a script in the table (Han, Hiragana, ...); a one-line
    ValueError for any other name."""
    name = _LONG.get(name, name)
    for prefix in ("Script=", "sc=", "Is"):
        if name.startswith(prefix) and name[len(prefix):] in PROPERTIES:
            name = name[len(prefix):]
    if name in PROPERTIES:
        return _norm(_parse_table(PROPERTIES[name]))
    if name in _GROUPS:
        return _norm([p for g in _GROUPS[name] for p in property_ranges(g)])
    if name in ("C", "Cn"):
        assigned = _norm([p for g in PROPERTIES if len(g) == 2 for p in property_ranges(g)])
        cn = _complement(assigned)
        return cn if name == "Cn" else _norm([*cn, *(p for g in ("Cc", "Cf", "Co", "Cs")
                                                      for p in property_ranges(g))])
    raise ValueError(f"pattern: unknown Unicode property \\p{{{name}}}")


def _contains(r: Ranges, cp: int) -> bool:
    i = bisect.bisect_right(r, (cp, MAX_CP + 1)) - 1
    return i >= 0 and r[i][0] <= cp <= r[i][1]


def _class_body(ranges: Sequence[tuple[int, int]]) -> str:
    """The inside of a [...] class matching exactly these ranges (the characters themselves, re.escape'd:
    `re` parses that about 20 times faster than \\uXXXX escapes)."""
    return "".join(re.escape(chr(a)) if a == b else f"{re.escape(chr(a))}-{re.escape(chr(b))}"
                   for a, b in ranges)


def _render_class(r: Ranges, bmp: bool) -> str:
    if bmp:
        r = tuple((a, min(b, 0xFFFF)) for a, b in r if a <= 0xFFFF)
    if not r:
        return "(?!)"  # matches nothing
    if len(r) == 1 and r[0][0] == r[0][1]:
        return re.escape(chr(r[0][0]))
    return f"[{_class_body(r)}]"


WHITE_SPACE = property_ranges("White_Space")  # what \s means to tiktoken and `regex`


# ---- the translator: regex-dialect source -> a list of strings and class sets
class _Cls:
    """A character set in the translated pattern (rendered per variant: BMP-only or whole)."""
    __slots__ = ("ranges",)

    def __init__(self, ranges: Ranges) -> None:
        self.ranges = ranges


_SIMPLE_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "f": "\f", "v": "\v", "a": "\a", "e": "\x1b"}


class _Parser:
    def __init__(self, source: str, native: bool) -> None:
        self.s = source
        self.i = 0
        self.native = native
        self.groups = 0  # backreference groups made by the possessive emulation
        self.sets: set[Ranges] = set()  # every set a character is tested against

    def fail(self, what: str) -> ValueError:
        return ValueError(f"pattern: cannot translate {what} at position {self.i} of {self.s!r}")

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.s[j] if j < len(self.s) else ""

    def cls(self, r: Ranges) -> _Cls:
        r = _norm(r)
        self.sets.add(r)
        return _Cls(r)

    # alternation := sequence ('|' sequence)*
    def alternation(self, icase: bool) -> list[object]:
        out: list[object] = []
        while True:
            out += self.sequence(icase)
            if self.peek() == "|":
                self.i += 1
                out.append("|")
                continue
            return out

    def sequence(self, icase: bool) -> list[object]:
        out: list[object] = []
        while self.i < len(self.s) and self.peek() not in "|)":
            if self.s.startswith("(?i)", self.i):  # a flag for the rest of this group
                self.i += 4
                icase = True
                continue
            atom = self.atom(icase)
            out += self.quantified(atom)
        return out

    def quantified(self, atom: list[object]) -> list[object]:
        c = self.peek()
        if c in ("*", "+", "?"):
            q = c
            self.i += 1
        elif c == "{":
            m = re.compile(r"\{(\d*)(,?)(\d*)\}").match(self.s, self.i)
            if not m or (not m.group(1) and not m.group(3)):
                return atom  # a literal brace was already consumed by atom(); this one starts the next atom
            q = m.group()
            self.i = m.end()
        else:
            return atom
        mode = self.peek()
        if mode == "?":
            self.i += 1
            return [*atom, q + "?"]
        if mode == "+":
            self.i += 1
            return self.atomic([*atom, q])
        return [*atom, q]

    def atomic(self, body: list[object]) -> list[object]:
        if self.native:
            return ["(?>", *body, ")"]
        self.groups += 1
        name = f"_a{self.groups}"
        return [f"(?=(?P<{name}>", *body, f"))(?P={name})"]

    def atom(self, icase: bool) -> list[object]:
        c = self.peek()
        if c == "(":
            return self.group(icase)
        if c == "[":
            return [self.bracket(icase)]
        if c == "\\":
            return self.escape(icase)
        if c == ".":
            self.i += 1
            return [self.cls(_complement(((10, 10),)))]
        if c in "^$":
            self.i += 1
            self.sets.add(((10, 10),))
            return [c]
        if c in "*+?":
            raise self.fail(f"a quantifier {c!r} with nothing to repeat")
        if c == "{":
            m = re.compile(r"\{(\d*)(,?)(\d*)\}").match(self.s, self.i)
            if m and (m.group(1) or m.group(3)):
                raise self.fail("a quantifier with nothing to repeat")
        self.i += 1
        return [self.literal(c, icase)]

    def literal(self, c: str, icase: bool) -> object:
        if icase and c in CASE_VARIANTS:
            return self.cls(tuple((ord(v), ord(v)) for v in CASE_VARIANTS[c]))
        if icase and c.lower() != c.upper():
            raise self.fail(f"(?i) on the non-ASCII letter {c!r}")
        return self.cls(((ord(c), ord(c)),))

    def group(self, icase: bool) -> list[object]:
        s, i = self.s, self.i
        if s.startswith("(?#", i):
            end = s.find(")", i)
            if end < 0:
                raise self.fail("an unterminated comment")
            self.i = end + 1
            return []
        opener = None
        for prefix, out in (("(?:", "(?:"), ("(?=", "(?="), ("(?!", "(?!"), ("(?<=", "(?<="), ("(?<!", "(?<!"),
                            ("(?>", None), ("(?i:", "(?:")):
            if s.startswith(prefix, i):
                opener = prefix
                self.i += len(prefix)
                out_open = out
                break
        else:
            if s.startswith("(?P<", i) or s.startswith("(?<", i):
                end = s.find(">", i)
                self.i = end + 1
                opener, out_open = "(", "(?:"
            elif s.startswith("(?", i):
                raise self.fail(f"the group {s[i:i + 4]!r}...")
            else:
                opener, out_open = "(", "(?:"  # capturing groups become non-capturing: findall gives whole matches
                self.i += 1
        body = self.alternation(icase or opener == "(?i:")
        if self.peek() != ")":
            raise self.fail("an unterminated group")
        self.i += 1
        if out_open is None:
            return self.atomic(["(?:", *body, ")"])
        return [out_open, *body, ")"]

    def escape(self, icase: bool) -> list[object]:
        kind, got = self.read_escape(in_class=False)
        if kind == "assert":
            return list(got)
        if kind == "char":
            return [self.literal(chr(got), icase)]
        if icase and kind == "prop":
            raise self.fail("a \\p{..} class inside (?i)")
        return [self.cls(got)]

    def read_escape(self, in_class: bool) -> tuple[str, Any]:
        """The escape at self.i (a backslash): ("char", code point), ("set" or "prop", Ranges), or (outside
        classes) ("assert", parts in `re` syntax)."""
        s = self.s
        c = s[self.i + 1] if self.i + 1 < len(s) else ""
        self.i += 2
        if c in ("p", "P"):
            if self.peek() == "{":
                end = s.find("}", self.i)
                if end < 0:
                    raise self.fail("an unterminated \\p{")
                name = s[self.i + 1:end]
                self.i = end + 1
            else:
                name = self.peek()
                self.i += 1
            neg = c == "P"
            if name.startswith("^"):
                neg, name = not neg, name[1:]
            r = property_ranges(name)
            return "prop", (_complement(r) if neg else r)
        if c in "sSdDwW":
            r = property_ranges({"s": "White_Space", "d": "Digit", "w": "Word"}[c.lower()])
            return "set", (_complement(r) if c.isupper() else r)
        if c in _SIMPLE_ESCAPES:
            return "char", ord(_SIMPLE_ESCAPES[c])
        if c in ("x", "u", "U"):
            if c == "x" and self.peek() == "{":
                end = s.find("}", self.i)
                digits, self.i = s[self.i + 1:end], end + 1
            else:
                n = {"x": 2, "u": 4, "U": 8}[c]
                digits, self.i = s[self.i:self.i + n], self.i + n
            try:
                cp = int(digits, 16)
            except ValueError:
                raise self.fail(f"the escape \\{c}{digits}") from None
            if cp > MAX_CP:
                raise self.fail(f"the escape \\{c}{digits}")
            return "char", cp
        if not in_class and c in ("b", "B"):
            word = property_ranges("Word")
            self.sets.add(word)
            w = _Cls(word)
            if c == "b":
                return "assert", ["(?:(?<=", w, ")(?!", w, ")|(?<!", w, ")(?=", w, "))"]
            return "assert", ["(?:(?<=", w, ")(?=", w, ")|(?<!", w, ")(?!", w, "))"]
        if not in_class and c in ("A", "Z"):
            return "assert", ["\\" + c]
        if c == "" or c.isalnum():
            raise self.fail(f"the escape \\{c}")
        return "char", ord(c)

    def char_set(self, c: str, icase: bool) -> Ranges:
        if icase and c in CASE_VARIANTS:
            return _norm([(ord(v), ord(v)) for v in CASE_VARIANTS[c]])
        if icase and c.lower() != c.upper():
            raise self.fail(f"(?i) on the non-ASCII letter {c!r}")
        return ((ord(c), ord(c)),)

    def class_item(self) -> tuple[int | None, Ranges]:
        """One item inside [...]: (its code point, or None for a set such as \\p{L}; its set)."""
        if self.peek() == "\\":
            kind, got = self.read_escape(in_class=True)
            if kind == "char":
                return got, ((got, got),)
            return None, got
        c = self.peek()
        self.i += 1
        return ord(c), ((ord(c), ord(c)),)

    def bracket(self, icase: bool) -> _Cls:
        s = self.s
        start = self.i
        self.i += 1
        neg = self.peek() == "^"
        if neg:
            self.i += 1
        pairs: list[tuple[int, int]] = []
        first = True
        while True:
            c = self.peek()
            if c == "":
                self.i = start
                raise self.fail("an unterminated [")
            if c == "]" and not first:
                self.i += 1
                break
            first = False
            for op in ("&&", "||", "--", "~~"):
                if s.startswith(op, self.i):
                    raise self.fail(f"the set operation {op!r}")
            if c == "[" and self.peek(1) == ":":
                raise self.fail("a POSIX class [:...:]")
            if icase and c == "\\" and self.peek(1) in "pP":
                raise self.fail("a \\p{..} class inside (?i)")
            a, got = self.class_item()
            if a is not None and self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.i += 1
                b, _ = self.class_item()
                if b is None:
                    raise self.fail("a range ending in a class")
                if a > b:
                    raise self.fail(f"the reversed range {chr(a)!r}-{chr(b)!r}")
                pairs.append((a, b))
                if icase:  # only ASCII letters have case variants here
                    for cp in range(a, min(b, 127) + 1):
                        pairs += self.char_set(chr(cp), True)
                    if any(chr(cp).lower() != chr(cp).upper() for cp in range(max(a, 128), b + 1)):
                        raise self.fail("(?i) on a non-ASCII range")
                continue
            pairs += self.char_set(chr(a), icase) if a is not None else got
        r = _norm(pairs)
        return self.cls(_complement(r) if neg else r)


def _translate(source: str, native: bool) -> tuple[list[object], set[Ranges]]:
    p = _Parser(source, native)
    parts = p.alternation(False)
    if p.i != len(source):
        raise p.fail("an unbalanced ')'")
    return parts, p.sets


def _render(parts: list[object], bmp: bool) -> str:
    return "".join(_render_class(p.ranges, bmp) if isinstance(p, _Cls) else str(p) for p in parts)


class CompiledPattern:
    """A regex-dialect pattern compiled for `re`: findall(text) -> the whole matches, left to right (capturing
    groups do not change what it returns).  Built by compile_pattern."""

    def __init__(self, source: str, native: bool = NATIVE_POSSESSIVE) -> None:
        if not isinstance(source, str):
            raise ValueError(f"pattern: expected a str, got {type(source).__name__}")
        self.source = source
        parts, sets = _translate(source, native)
        self._parts = parts
        self._sets = sorted(sets)
        self._groups = not native and any(isinstance(p, str) and "(?P<" in p for p in parts)
        try:
            self._bmp = re.compile(_render(parts, bmp=True))
        except re.error as e:
            raise ValueError(f"pattern: cannot translate {source!r}: {e}") from None
        self._whole: re.Pattern[str] | None = None
        self._standins: dict[bytes, str] | None = None
        self._standin_cache: dict[int, int | None] = {}

    def __repr__(self) -> str:
        return f"compile_pattern({self.source!r})"

    @property
    def whole(self) -> re.Pattern[str]:
        """The pattern with its classes' astral ranges kept (compiled on first use)."""
        if self._whole is None:
            self._whole = re.compile(_render(self._parts, bmp=False))
        return self._whole

    def _signatures(self) -> dict[bytes, str]:
        """{membership signature over every set of the pattern: the first BMP character with it}."""
        if self._standins is None:
            member = np.zeros((len(self._sets), 0x10000), dtype=bool)  # (S, 65536)
            for k, r in enumerate(self._sets):
                for a, b in r:
                    if a <= 0xFFFF:
                        member[k, a:min(b, 0xFFFF) + 1] = True
            keys = np.ascontiguousarray(np.packbits(member, axis=0).T)  # (65536, ceil(S / 8))
            cps = np.concatenate([np.arange(0xD800), np.arange(0xE000, 0x10000)])  # never a surrogate
            rows = keys[cps].view(f"V{keys.shape[1]}").ravel()  # (63488,) one opaque value per signature
            _, first = np.unique(rows, return_index=True)  # (cells,)
            self._standins = {keys[cp].tobytes(): chr(cp) for cp in cps[first].tolist()}
        return self._standins

    def prepare_astral(self) -> None:
        """Build now (about 10-50 ms) what the first text with characters past U+FFFF would build, and run
        that path once (NumPy imports some of its parts on first use)."""
        self._signatures()
        self.findall("a \U0001f600 1")

    def _standin(self, cp: int) -> int | None:
        got = self._standin_cache.get(cp, -1)
        if got == -1:
            bits = np.array([_contains(r, cp) for r in self._sets], dtype=bool)  # (S,)
            c = self._signatures().get(np.packbits(bits).tobytes())
            got = self._standin_cache[cp] = None if c is None else ord(c)
        return got

    def _findall(self, pat: re.Pattern[str], text: str) -> list[str]:
        if self._groups:
            return [m.group() for m in pat.finditer(text)]
        return pat.findall(text)

    def _prepared(self, text: str) -> tuple[re.Pattern[str], str, np.ndarray | None]:
        """The compiled variant to run, the text to run it on (astral characters replaced by BMP stand-ins)
        and the positions of the replaced characters (None when nothing was replaced)."""
        if text.isascii() or max(text) <= "\uffff":
            return self._bmp, text, None
        codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)  # (n,)
        where = np.flatnonzero(codes > 0xFFFF)  # (k,)
        uniq, inverse = np.unique(codes[where], return_inverse=True)  # (u,), (k,)
        reps = [self._standin(cp) for cp in uniq.tolist()]
        if None in reps:  # a mix of memberships no BMP character has: match with the whole classes
            return self.whole, text, None
        stood = codes.copy()  # (n,)
        stood[where] = np.array(reps, dtype=np.uint32)[inverse]
        return self._bmp, stood.tobytes().decode("utf-32-le", "surrogatepass"), where

    def findall(self, text: str) -> list[str]:
        """The non-overlapping matches of the pattern in text, left to right (as regex.findall(source, text)
        for a pattern without capturing groups)."""
        pat, stood, where = self._prepared(text)
        pieces = self._findall(pat, stood)
        if where is None:
            return pieces
        lengths = np.fromiter(map(len, pieces), dtype=np.int64, count=len(pieces))  # (P,)
        ends = np.cumsum(lengths)  # (P,)
        if not len(pieces) or ends[-1] != len(text):  # the matches do not tile the text: cut by spans
            return [text[a:b] for a, b in self.spans(text)]
        # only the pieces holding a stand-in differ from the original text's: cut those again
        starts = ends - lengths  # (P,)
        for k in np.unique(np.searchsorted(ends, where, side="right")).tolist():
            pieces[k] = text[starts[k]:ends[k]]
        return pieces

    def spans(self, text: str) -> list[tuple[int, int]]:
        """(start, end) of every match, left to right (empty matches included, as re.finditer gives them)."""
        pat, stood, _ = self._prepared(text)
        return [m.span() for m in pat.finditer(stood)]




@functools.lru_cache(maxsize=64)
def compile_pattern(source: str) -> CompiledPattern:
    """A regex-dialect pattern (\\p{..}, (?i:...), possessive quantifiers, ...) compiled for `re`, cached per
    source; anything it cannot translate is a one-line ValueError naming the construct."""
    return CompiledPattern(source)


@functools.cache
def gpt2_regex(astral: bool = True) -> re.Pattern[str]:
    """GPT2_PATTERN compiled for `re`: astral=False is the fast variant whose classes stop at U+FFFF."""
    pat = compile_pattern(GPT2_PATTERN)
    return pat.whole if astral else pat._bmp


def split_gpt2(text: str) -> list[str]:
    """The pieces of text under GPT2_PATTERN."""
    return compile_pattern(GPT2_PATTERN).findall(text)


def pretokenize(text: str) -> list[str]:
    """The pieces of `text` under GPT-2's pattern, in order; they concatenate back to `text`."""
    if not isinstance(text, str):
        raise ValueError(f"text: expected a str, got {type(text).__name__}")
    return split_gpt2(text)
