"""SentencePiece-style BPE (Llama 2, Mistral, Phi-3, ...): scores instead of merges, byte fallback, "▁" spaces.

    tok = load_sentencepiece("llama2/tokenizer.model")   # or load_tokenizer("x.gguf") for model "llama"
    tok.encode("Hello world", add_special_tokens=True)     # [1, 15043, 3186] for Llama 2

The model (ScoreBPEModel, the tokenizer.json-like model type "SentencePieceBPE") runs llama.cpp's `llama`
tokenizer: the text's characters are symbols; the adjacent pair whose concatenation is a token with the
highest score is merged (the leftmost on a tie) until no pair is a token; a symbol left that is not a token
becomes its UTF-8 bytes as <0xNN> tokens (the unknown token when those are missing).  Around it,
spm_spec builds the rest as a tokenizer.json pipeline: a "▁" prefix (add_space_prefix), spaces as "▁",
control and user-defined tokens as added tokens, BOS/EOS, and the decoder back.  tokenizer.model files are
read with a minimal protobuf reader (BPE models only; Unigram ones are refused).  Guide: docs/tokenizer_files.md
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .tokenizer_json import CACHE_LIMIT, MODELS, JsonTokenizer, Refused, cut_at, merge_heap, space_cuts

SPACE = "\u2581"  # ▁, SentencePiece's visible space
# token types (GGUF's tokenizer.ggml.token_type and SentencePiece's ModelProto use the same numbers)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6


class ScoreBPEModel:
    """SentencePiece BPE with scores: {"type": "SentencePieceBPE", "vocab": [[piece, score], ...] (id = index),
    "unk_id": int | None, "byte_fallback": bool}."""

    def __init__(self, d: Mapping[str, Any], where: str) -> None:
        pieces = d.get("vocab")
        if not isinstance(pieces, list) or not all(isinstance(p, (list, tuple)) and len(p) == 2
                                                   and isinstance(p[0], str) for p in pieces):
            raise ValueError(f"{where}: model SentencePieceBPE: expected vocab as [[piece, score], ...]")
        self.vocab: dict[str, int] = {}
        self.scores: dict[str, float] = {}
        for i, (piece, score) in enumerate(pieces):
            if piece not in self.vocab:
                self.vocab[piece] = i
                self.scores[piece] = float(score)
        unk = d.get("unk_id")
        if unk is not None and not (isinstance(unk, int) and 0 <= unk < len(pieces)):
            raise ValueError(f"{where}: model SentencePieceBPE: unk_id {unk!r} is out of range")
        self.unk_id: int | None = unk
        self.byte_fallback = bool(d.get("byte_fallback", True))
        self.byte_ids = [self.vocab.get(f"<0x{b:02X}>") for b in range(256)]
        self.newline_tokens = False
        self._cache: dict[str, list[int]] = {}
        self._cuts = space_cuts(self.vocab)

    def _priority(self, a: str, b: str) -> float | None:
        s = self.scores.get(a + b)
        return None if s is None else -s

    def __call__(self, piece: str) -> list[int]:
        if len(piece) > 12 and self._cuts is not None:  # a longer text: encode its independent chunks
            out: list[int] = []
            for chunk in cut_at(piece, self._cuts):
                out += self._encode(chunk)
            return out
        return self._encode(piece)

    def _encode(self, piece: str) -> list[int]:
        got = self._cache.get(piece)
        if got is not None:
            return got
        vocab = self.vocab
        parts = merge_heap(list(piece), self._priority) if len(piece) > 1 else [piece]
        out: list[int] = []
        for p in parts:
            i = vocab.get(p)
            if i is not None:
                out.append(i)
                continue
            bs = [self.byte_ids[b] for b in p.encode("utf-8")] if self.byte_fallback else [None]
            if None in bs:
                if self.unk_id is not None:
                    out.append(self.unk_id)
            else:
                out += bs  # type: ignore[arg-type]
        if len(piece) < 256:
            if len(self._cache) > CACHE_LIMIT:
                self._cache.clear()
            self._cache[piece] = out
        return out


MODELS["SentencePieceBPE"] = ScoreBPEModel


def spm_spec(tokens: Sequence[str], scores: Sequence[float], types: Sequence[int] | None, *,
             bos_id: int | None, eos_id: int | None, unk_id: int | None, add_bos: bool, add_eos: bool,
             add_space_prefix: bool) -> dict[str, Any]:
    """A tokenizer.json-like description of a SentencePiece BPE vocabulary (llama.cpp's `llama` type)."""
    types = list(types) if types is not None else [NORMAL] * len(tokens)
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": types[i] == CONTROL}
             for i, t in enumerate(tokens) if types[i] in (CONTROL, USER_DEFINED)]
    if unk_id is not None and types[unk_id] != CONTROL:
        added.append({"id": unk_id, "content": tokens[unk_id], "single_word": False, "lstrip": False,
                      "rstrip": False, "normalized": False, "special": True})
    norm: list[dict[str, Any]] = []
    if add_space_prefix:
        norm.append({"type": "Prepend", "prepend": SPACE})
    norm.append({"type": "Replace", "pattern": {"String": " "}, "content": SPACE})
    decoders: list[dict[str, Any]] = [{"type": "Replace", "pattern": {"String": SPACE}, "content": " "},
                                      {"type": "ByteFallback"}, {"type": "Fuse"}]
    if add_space_prefix:
        decoders.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    return {
        "version": "1.0",
        "added_tokens": added,
        "normalizer": {"type": "Sequence", "normalizers": norm},
        "pre_tokenizer": None,
        "post_processor": template(tokens, bos_id if add_bos else None, eos_id if add_eos else None),
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {"type": "SentencePieceBPE", "vocab": [[t, float(s)] for t, s in zip(tokens, scores)],
                  "unk_id": unk_id, "byte_fallback": True},
    }


def template(tokens: Sequence[str], bos: int | None, eos: int | None) -> dict[str, Any] | None:
    """A TemplateProcessing post-processor adding BOS before and EOS after the text (None when neither)."""
    if bos is None and eos is None:
        return None
    single: list[dict[str, Any]] = []
    specials: dict[str, Any] = {}
    if bos is not None:
        single.append({"SpecialToken": {"id": tokens[bos], "type_id": 0}})
        specials[tokens[bos]] = {"id": tokens[bos], "ids": [bos], "tokens": [tokens[bos]]}
    single.append({"Sequence": {"id": "A", "type_id": 0}})
    if eos is not None:
        single.append({"SpecialToken": {"id": tokens[eos], "type_id": 0}})
        specials[tokens[eos]] = {"id": tokens[eos], "ids": [eos], "tokens": [tokens[eos]]}
    pair = single + [{"Sequence": {"id": "B", "type_id": 1}}]
    return {"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials}


# ---- tokenizer.model (SentencePiece's ModelProto, protobuf)

def _varint(buf: bytes, pos: int, where: str) -> tuple[int, int]:
    out = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError(f"{where}: truncated protobuf (a varint runs past the end)")
        b = buf[pos]
        pos += 1
        out |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return out, pos
        if shift > 70:
            raise ValueError(f"{where}: damaged protobuf (a varint longer than 10 bytes)")


def _fields(buf: bytes, where: str) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) of one protobuf message: ints for varints and fixed widths,
    bytes for length-delimited fields."""
    out = []
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos, where)
        field, wire = key >> 3, key & 7
        val: Any
        if wire == 0:
            val, pos = _varint(buf, pos, where)
        elif wire == 1:
            val, pos = buf[pos:pos + 8], pos + 8
        elif wire == 2:
            n, pos = _varint(buf, pos, where)
            val, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            val, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"{where}: damaged protobuf (wire type {wire} at byte {pos})")
        if pos > len(buf):
            raise ValueError(f"{where}: truncated protobuf")
        out.append((field, wire, val))
    return out


def read_sentencepiece_model(path: str | os.PathLike[str]) -> dict[str, Any]:
    """{"pieces": [(piece, score, type)], "model_type": int, "add_dummy_prefix": bool,
    "remove_extra_whitespaces": bool, "byte_fallback": bool, "unk_id", "bos_id", "eos_id"} of a
    SentencePiece .model file."""
    p = Path(path)
    try:
        buf = p.read_bytes()
    except OSError as e:
        raise ValueError(f"{p}: cannot read ({e.strerror or e})") from None
    where = str(p)
    pieces: list[tuple[str, float, int]] = []
    info: dict[str, Any] = {"model_type": 1, "add_dummy_prefix": True, "remove_extra_whitespaces": True,
                            "byte_fallback": False, "unk_id": 0, "bos_id": 1, "eos_id": 2}
    for field, wire, val in _fields(buf, where):
        if field == 1 and wire == 2:
            piece, score, kind = "", 0.0, NORMAL
            for f2, w2, v2 in _fields(val, where):
                if f2 == 1 and w2 == 2:
                    piece = v2.decode("utf-8")
                elif f2 == 2 and w2 == 5:
                    score = struct.unpack("<f", v2)[0]
                elif f2 == 3 and w2 == 0:
                    kind = v2
            pieces.append((piece, score, kind))
        elif field == 2 and wire == 2:  # TrainerSpec
            for f2, w2, v2 in _fields(val, where):
                if w2 == 0:
                    key = {3: "model_type", 35: "byte_fallback", 40: "unk_id", 41: "bos_id", 42: "eos_id"}.get(f2)
                    if key:
                        info[key] = bool(v2) if key == "byte_fallback" else v2 - (1 << 64) * (v2 >> 63)
        elif field == 3 and wire == 2:  # NormalizerSpec
            for f2, w2, v2 in _fields(val, where):
                if f2 == 1 and w2 == 2 and v2 not in (b"identity", b""):
                    info["normalizer"] = v2.decode("utf-8", "replace")
                elif f2 == 3 and w2 == 0:
                    info["add_dummy_prefix"] = bool(v2)
                elif f2 == 4 and w2 == 0:
                    info["remove_extra_whitespaces"] = bool(v2)
    if not pieces:
        raise ValueError(f"{where}: not a SentencePiece model (no pieces)")
    info["pieces"] = pieces
    return info


def load_sentencepiece(path: str | os.PathLike[str], add_bos: bool = True, add_eos: bool = False) -> JsonTokenizer:
    """A tokenizer from a SentencePiece BPE tokenizer.model (Llama 2, Mistral v0.1, ...).  Unigram models,
    models that remove extra whitespace and models with a normalization rule other than identity are
    refused (one line)."""
    where = str(path)
    info = read_sentencepiece_model(path)
    if info["model_type"] != 2:
        kind = {1: "Unigram", 3: "Word", 4: "Char"}.get(info["model_type"], str(info["model_type"]))
        raise Refused(f"{where}: SentencePiece model type {kind} is not supported (npgpt reads BPE models)")
    if info.get("normalizer"):
        raise Refused(f"{where}: SentencePiece normalization rule {info['normalizer']!r} is not supported "
                      f"(only identity)")
    if info["remove_extra_whitespaces"]:
        raise Refused(f"{where}: SentencePiece remove_extra_whitespaces is not supported")
    toks = [p[0] for p in info["pieces"]]
    n = len(toks)

    def opt(i: int) -> int | None:
        return i if 0 <= i < n else None
    spec = spm_spec(toks, [p[1] for p in info["pieces"]], [p[2] for p in info["pieces"]],
                    bos_id=opt(info["bos_id"]), eos_id=opt(info["eos_id"]), unk_id=opt(info["unk_id"]),
                    add_bos=add_bos and opt(info["bos_id"]) is not None,
                    add_eos=add_eos and opt(info["eos_id"]) is not None,
                    add_space_prefix=info["add_dummy_prefix"])
    return JsonTokenizer(spec, where)
