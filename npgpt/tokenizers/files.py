"""Tokenizer files: read GGUF vocabularies, Hugging Face tokenizer.json and vocab.json + merges.txt, SentencePiece
tokenizer.model, tiktoken .tiktoken ranks; write the Hugging Face form (vocab.json, merges.txt and a
tokenizer_config.json transformers understands).

    tok = load_tokenizer("path/to/gpt2")           # a directory, .gguf, tokenizer.json, vocab.json, .model, .tiktoken
    save_tokenizer(tok, "out/dir")                 # transformers' GPT2Tokenizer(Fast).from_pretrained reads it

Every problem (missing, truncated, not JSON, a merge whose parts are not tokens, duplicate ranks or ids) is a
one-line ValueError naming the file.  Guide: docs/tokenizers.md, docs/tokenizer_files.md
"""

from __future__ import annotations

import base64
import binascii
import json
import operator
import os
from collections.abc import Mapping
from itertools import repeat
from pathlib import Path
from typing import Any, BinaryIO

from ..io.atomic import atomic_write
from ..io.textfile import read_user_bytes
from .bpe import EOT, BPETokenizer, parse_merges
from .byte_unicode import bytes_to_unicode, encode_bytes
from .gguf import load_gguf_tokenizer
from .sentencepiece import load_sentencepiece
from .tokenizer_json import JsonTokenizer, _post_processor

VOCAB_NAME, MERGES_NAME, TOKENIZER_JSON, SPM_NAME = "vocab.json", "merges.txt", "tokenizer.json", "tokenizer.model"
CONFIG_NAME = "tokenizer_config.json"
MERGES_HEADER = "#version: 0.2"


def _read(path: Path) -> bytes:
    data = read_user_bytes(path, what="a file")  # a device (/dev/zero) refused, a pipe read up to a cap
    if not data:
        raise ValueError(f"{path}: file is empty")
    return data


def _read_text(path: Path) -> str:
    data = _read(path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (invalid byte at offset {e.start})") from None


def _read_json(path: Path) -> Any:
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        cut = e.pos >= len(text.rstrip()) or e.msg.startswith("Unterminated string")  # ran out of text
        what = "truncated JSON" if cut else "not valid JSON"
        raise ValueError(f"{path}: {what} ({e.msg} at line {e.lineno} column {e.colno})") from None
    except RecursionError:
        raise ValueError(f"{path}: not valid JSON (nested too deeply)") from None


def _specials_from_vocab(vocab: Mapping[str, int]) -> dict[str, int]:
    """vocab.json carries <|endoftext|> as an ordinary entry; it is GPT-2's one special token."""
    return {EOT: vocab[EOT]} if EOT in vocab else {}


def load_hf(vocab_path: str | os.PathLike[str], merges_path: str | os.PathLike[str],
            special_tokens: Mapping[str, int] | None = None) -> BPETokenizer:
    """A tokenizer from Hugging Face's vocab.json ({token: id}) and merges.txt ("#version" line, then one
    "left right" merge per line in rank order).  special_tokens defaults to <|endoftext|> if the vocab has it."""
    vp, mp = Path(vocab_path), Path(merges_path)
    vocab = _read_json(vp)
    if not isinstance(vocab, dict):
        raise ValueError(f"{vp}: expected a JSON object {{token: id}}, got {type(vocab).__name__}")
    text = _read_text(mp)
    lines = text.split("\n")
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    if lines and lines[-1] == "":
        lines = lines[:-1]  # the final newline
    merges = []
    for n, line in enumerate(lines, start=2):
        parts = line.split(" ")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise ValueError(f"{mp}: line {n}: expected 'left right', got {line[:60]!r}")
        merges.append((parts[0], parts[1]))
    specials = _specials_from_vocab(vocab) if special_tokens is None else dict(special_tokens)
    return BPETokenizer(vocab, merges, specials, where=f"{vp} + {mp.name}")


def _plain_gpt2(d: Any) -> bool:
    """Whether a tokenizer.json is GPT-2's form exactly (byte-level BPE, GPT-2's split, nothing else), which
    BPETokenizer runs (and save_tokenizer writes back)."""
    model, pre = d.get("model"), d.get("pre_tokenizer")
    return (isinstance(model, dict) and model.get("type", "BPE") == "BPE" and isinstance(model.get("vocab"), dict)
            and isinstance(model.get("merges"), list) and not model.get("byte_fallback")
            and all(c in model["vocab"] for c in bytes_to_unicode().values())
            and not model.get("ignore_merges") and model.get("unk_token") is None
            and not model.get("continuing_subword_prefix") and not model.get("end_of_word_suffix")
            and model.get("dropout") in (None, 0, 0.0)
            and d.get("normalizer") is None
            and isinstance(pre, dict) and pre.get("type") == "ByteLevel" and pre.get("use_regex", True) is True
            and pre.get("add_prefix_space", False) is False
            and (d.get("decoder") is None or d["decoder"].get("type") == "ByteLevel")
            and _adds_nothing(d.get("post_processor"))
            and all(isinstance(a, dict) and a.get("special", True) and not a.get("lstrip") and not a.get("rstrip")
                    and not a.get("single_word") for a in d.get("added_tokens") or []))


def _adds_nothing(post: Any) -> bool:
    """Whether a post_processor adds no ids (None, ByteLevel, a template of $A alone)."""
    try:
        return _post_processor(post, "") == ([], [])
    except ValueError:
        return False


def load_tokenizer_json(path: str | os.PathLike[str]) -> BPETokenizer | JsonTokenizer:
    """A tokenizer from a Hugging Face tokenizer.json.  GPT-2's own form (byte-level BPE with GPT-2's split
    and nothing else; its added tokens are special tokens) is a BPETokenizer; every other file runs through
    JsonTokenizer (tokenizer_json.py), which refuses what it does not implement in one line."""
    p = Path(path)
    d = _read_json(p)
    if not isinstance(d, dict) or not isinstance(d.get("model"), dict):
        raise ValueError(f"{p}: expected a tokenizer.json (a JSON object with a 'model')")
    if not _plain_gpt2(d):
        return JsonTokenizer(d, str(p))
    model = d["model"]
    specials: dict[str, int] = {}
    for a in d.get("added_tokens") or []:
        if not isinstance(a.get("content"), str) or not isinstance(a.get("id"), int):
            raise ValueError(f"{p}: added_tokens: expected {{'id': int, 'content': str}}, got {a!r}"[:160])
        specials[a["content"]] = a["id"]
    merges = parse_merges(model["merges"], str(p))
    return BPETokenizer(model["vocab"], merges, specials, where=str(p))


def read_tiktoken_ranks(path: str | os.PathLike[str]) -> dict[bytes, int]:
    """{token bytes: rank} from a .tiktoken file (one "base64 rank" line per token); duplicate tokens or
    ranks, bad base64 and a cut-off last line are errors."""
    p = Path(path)
    data = _read(p)
    ranks: dict[bytes, int] = {}
    seen: dict[int, int] = {}  # rank -> line
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines = lines[:-1]
    cut = not data.endswith(b"\n")  # a last line without its newline may be cut anywhere, even mid-number

    def bad(n: int, msg: str, last_only: bool = False) -> ValueError:
        hint = n == len(lines) and (cut or last_only)
        return ValueError(f"{p}: line {n}: {msg}" + (" (truncated file?)" if hint else ""))

    for n, line in enumerate(lines, start=1):
        fields = line.split()
        if len(fields) != 2 or not fields[1].isdigit():
            raise bad(n, f"expected 'base64 rank', got {line[:60]!r}", last_only=True)
        try:
            token = base64.b64decode(fields[0], validate=True)
        except (binascii.Error, ValueError):
            raise bad(n, f"{fields[0][:40]!r} is not base64") from None
        rank = int(fields[1])
        if token in ranks:
            raise bad(n, f"token {token!r} already has rank {ranks[token]}")
        if rank in seen:
            raise bad(n, f"duplicate rank {rank} (also on line {seen[rank]})")
        ranks[token] = rank
        seen[rank] = n
    return ranks


def merges_from_ranks(ranks: Mapping[bytes, int], where: str = "ranks") -> list[tuple[bytes, bytes]]:
    """The merge that creates each multi-byte token, in rank order: the split tiktoken's own BPE reaches
    using only lower ranks (with one candidate split that is it; otherwise BPE on the token's bytes)."""
    merges: list[tuple[bytes, bytes]] = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        if len(token) < 2:
            continue
        splits = [(token[:i], token[i:]) for i in range(1, len(token))
                  if ranks.get(token[:i], rank) < rank and ranks.get(token[i:], rank) < rank]
        if len(splits) != 1:
            parts = _rank_bpe(token, ranks, rank)
            if len(parts) != 2:
                raise ValueError(f"{where}: token {token!r} (rank {rank}) cannot be made by merging two "
                                 f"lower-ranked tokens")
            splits = [(parts[0], parts[1])]
        merges.append(splits[0])
    return merges


def _rank_bpe(token: bytes, ranks: Mapping[bytes, int], below: int) -> list[bytes]:
    """tiktoken's BPE restricted to ranks < below: merge the adjacent pair whose concatenation ranks lowest
    (leftmost on a tie), repeat."""
    parts = [token[i:i + 1] for i in range(len(token))]
    get = ranks.get
    while len(parts) > 1:
        rs = list(map(get, map(operator.add, parts, parts[1:]), repeat(below)))  # rank of each pair's bytes
        r = min(rs)
        if r >= below:
            break
        i = rs.index(r)
        parts[i:i + 2] = [parts[i] + parts[i + 1]]
    return parts


def load_tiktoken(path: str | os.PathLike[str], special_tokens: Mapping[str, int] | None = None) -> BPETokenizer:
    """A tokenizer from a tiktoken ranks file.  The file holds no special tokens: special_tokens=None gives
    GPT-2's layout, <|endoftext|> with the id after the last rank (50256 for gpt2.tiktoken)."""
    p = Path(path)
    ranks = read_tiktoken_ranks(p)
    vocab = {encode_bytes(t): r for t, r in ranks.items()}
    merges = [(encode_bytes(a), encode_bytes(b)) for a, b in merges_from_ranks(ranks, str(p))]
    specials = {EOT: len(ranks)} if special_tokens is None else dict(special_tokens)
    return BPETokenizer(vocab, merges, specials, where=str(p))


def load_tokenizer(path: str | os.PathLike[str]) -> Any:
    """Whatever tokenizer file(s) `path` names: a .gguf file (its tokenizer.ggml.* vocabulary), a
    tokenizer.json, a vocab.json (merges.txt beside it), a SentencePiece tokenizer.model, a .tiktoken file, or
    a directory holding one of them (tried in that order: tokenizer.json, vocab.json + merges.txt,
    tokenizer.model, a single .gguf file).  The result is a BPETokenizer (GPT-2's forms, .tiktoken) or a
    JsonTokenizer (everything else)."""
    p = Path(path)
    if p.is_dir():
        if (p / TOKENIZER_JSON).is_file():
            return load_tokenizer_json(p / TOKENIZER_JSON)
        if (p / VOCAB_NAME).is_file() or (p / MERGES_NAME).is_file():
            return load_hf(p / VOCAB_NAME, p / MERGES_NAME)
        if (p / SPM_NAME).is_file():
            return load_sentencepiece(p / SPM_NAME)
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return load_gguf_tokenizer(ggufs[0])
        raise ValueError(f"{p}: no tokenizer files (expected {TOKENIZER_JSON}, {VOCAB_NAME} + {MERGES_NAME}, "
                         f"{SPM_NAME} or one .gguf file" + (f"; it has {len(ggufs)} .gguf files" if ggufs else "")
                         + ")")
    if not p.exists():
        raise ValueError(f"{p}: no such file or directory")
    if p.suffix == ".gguf":
        return load_gguf_tokenizer(p)
    if p.suffix == ".tiktoken":
        return load_tiktoken(p)
    if p.suffix == ".model":
        return load_sentencepiece(p)
    if p.name == VOCAB_NAME:
        return load_hf(p, p.with_name(MERGES_NAME))
    if p.suffix == ".json":
        return load_tokenizer_json(p)
    raise ValueError(f"{p}: unknown tokenizer file (expected a directory, a .gguf file, {TOKENIZER_JSON}, "
                     f"{VOCAB_NAME}, a SentencePiece .model or a .tiktoken file)")


def has_tokenizer_files(path: str | os.PathLike[str]) -> bool:
    """Whether directory `path` holds tokenizer.json, vocab.json + merges.txt or tokenizer.model."""
    p = Path(path)
    return (p / TOKENIZER_JSON).is_file() or ((p / VOCAB_NAME).is_file() and (p / MERGES_NAME).is_file()) \
        or (p / SPM_NAME).is_file()


def save_tokenizer(tok: BPETokenizer | JsonTokenizer, path: str | os.PathLike[str],
                   model_max_length: int | None = None) -> None:
    """Write the tokenizer's Hugging Face files into directory `path` (created if needed; each file atomically):
    a BPETokenizer as vocab.json, merges.txt and tokenizer_config.json (special tokens in vocab.json too, as
    GPT-2's); a JsonTokenizer (a family's own tokenizer.json) as that tokenizer.json and tokenizer_config.json."""
    if not isinstance(tok, (BPETokenizer, JsonTokenizer)):
        raise ValueError(f"tok: expected a BPETokenizer or a JsonTokenizer, got {type(tok).__name__}")
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    if isinstance(tok, JsonTokenizer):
        spec = {k: v for k, v in tok.spec.items() if k != "npgpt"}  # npgpt's own flags stay in checkpoints
        cfg: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast"}
        if model_max_length is not None:
            cfg["model_max_length"] = model_max_length
        _write_text(p / TOKENIZER_JSON, json.dumps(spec, ensure_ascii=False) + "\n")
        _write_text(p / CONFIG_NAME, json.dumps(cfg, indent=2) + "\n")
        return
    vocab = {**tok.encoder, **tok.special_tokens}
    vocab_text = json.dumps(dict(sorted(vocab.items(), key=lambda kv: kv[1])), ensure_ascii=False) + "\n"
    merges_text = MERGES_HEADER + "\n" + "".join(f"{a} {b}\n" for a, b in tok.merges)
    eot = EOT if EOT in tok.special_tokens else None
    config: dict[str, Any] = {
        "tokenizer_class": "GPT2Tokenizer",
        "add_prefix_space": False,
        "added_tokens_decoder": {str(i): {"content": t, "lstrip": False, "normalized": True, "rstrip": False,
                                          "single_word": False, "special": True}
                                 for t, i in sorted(tok.special_tokens.items(), key=lambda kv: kv[1])},
        "bos_token": eot, "eos_token": eot, "unk_token": eot,
    }
    if model_max_length is not None:  # transformers warns when an encoding is longer than this
        config["model_max_length"] = model_max_length
    config_text = json.dumps(config, indent=2, ensure_ascii=False) + "\n"
    for name, text in ((VOCAB_NAME, vocab_text), (MERGES_NAME, merges_text), (CONFIG_NAME, config_text)):
        _write_text(p / name, text)


def _write_text(path: Path, text: str) -> None:
    data = text.encode("utf-8")

    def write(fh: BinaryIO) -> None:
        fh.write(data)

    atomic_write(str(path), write)
