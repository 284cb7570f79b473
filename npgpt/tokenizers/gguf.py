"""GGUF files (llama.cpp's format) with the standard library and NumPy: header, metadata, tensor directory.

    g = read_gguf("ggml-vocab-llama-bpe.gguf")     # GGUFFile: version, metadata {key: value}, tensors
    g.metadata["tokenizer.ggml.model"]              # 'gpt2'
    g.tensors[0].name, g.tensors[0].shape, g.tensors[0].offset   # the directory; weights are not read

Layout (little-endian; version 1 used 32-bit counts, 2 and 3 use 64-bit): "GGUF", version u32, tensor count,
metadata count, then `count` (key string, type u32, value) entries, then `count` tensor infos (name, n_dims
u32, dims u64 each, ggml type u32, offset u64), then padding to `general.alignment` (32 when absent) and the
tensor data, each tensor at data_start + offset.  Scalars come back as Python int/float/bool/str, numeric
arrays as NumPy arrays, string and nested arrays as lists.  A damaged file is a one-line ValueError naming it.
Guide: docs/tokenizer_files.md
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

MAGIC = b"GGUF"
HEAD_READ = 1 << 24  # read_gguf reads this much first (a model's weights are never read)
DEFAULT_ALIGNMENT = 32

# metadata value types: id -> (name, numpy dtype or None for string/array)
UINT8, INT8, UINT16, INT16, UINT32, INT32, FLOAT32, BOOL, STRING, ARRAY, UINT64, INT64, FLOAT64 = range(13)
_SCALAR = {UINT8: "u1", INT8: "i1", UINT16: "u2", INT16: "i2", UINT32: "u4", INT32: "i4", FLOAT32: "f4",
           BOOL: "u1", UINT64: "u8", INT64: "i8", FLOAT64: "f8"}
_STRUCT = {UINT8: "B", INT8: "b", UINT16: "H", INT16: "h", UINT32: "I", INT32: "i", FLOAT32: "f", BOOL: "B",
           UINT64: "Q", INT64: "q", FLOAT64: "d"}
TYPE_NAMES = {UINT8: "uint8", INT8: "int8", UINT16: "uint16", INT16: "int16", UINT32: "uint32", INT32: "int32",
              FLOAT32: "float32", BOOL: "bool", STRING: "string", ARRAY: "array", UINT64: "uint64",
              INT64: "int64", FLOAT64: "float64"}

# ggml tensor types: id -> (name, elements per block, bytes per block)
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20), 6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 9: ("Q8_1", 32, 40), 10: ("Q2_K", 256, 84), 11: ("Q3_K", 256, 110),
    12: ("Q4_K", 256, 144), 13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 15: ("Q8_K", 256, 292),
    16: ("IQ2_XXS", 256, 66), 17: ("IQ2_XS", 256, 74), 18: ("IQ3_XXS", 256, 98), 19: ("IQ1_S", 256, 50),
    20: ("IQ4_NL", 32, 18), 21: ("IQ3_S", 256, 110), 22: ("IQ2_S", 256, 82), 23: ("IQ4_XS", 256, 136),
    24: ("I8", 1, 1), 25: ("I16", 1, 2), 26: ("I32", 1, 4), 27: ("I64", 1, 8), 28: ("F64", 1, 8),
    29: ("IQ1_M", 256, 56), 30: ("BF16", 1, 2), 34: ("TQ1_0", 256, 54), 35: ("TQ2_0", 256, 66),
    39: ("MXFP4", 32, 17), 40: ("NVFP4", 64, 36), 41: ("Q1_0", 128, 18),
}


class GGUFTensor(NamedTuple):
    """One entry of the tensor directory.  shape is in PyTorch order (GGUF stores the fastest dimension
    first; this is that list reversed); offset is absolute in the file; nbytes from the ggml type."""

    name: str
    shape: tuple[int, ...]
    ggml_type: int
    type_name: str
    offset: int
    nbytes: int


class GGUFFile(NamedTuple):
    """A parsed GGUF file: version, metadata {key: value}, value_types {key: type name}, tensors (the
    directory, in file order), alignment and data_offset (where the tensor data starts)."""

    path: str
    version: int
    metadata: dict[str, Any]
    value_types: dict[str, str]
    tensors: list[GGUFTensor]
    alignment: int
    data_offset: int


class _NeedMore(Exception):
    """The bytes given end before the header does, and the file is longer: read more."""


class _Reader:
    """A cursor over the file's bytes; every short read names the file and what was being read."""

    def __init__(self, data: bytes | memoryview, where: str, order: str, file_size: int) -> None:
        self.buf = memoryview(data)
        self.file_size = file_size
        self.pos = 0
        self.where = where
        self.order: Any = order  # "<" or ">"
        self.count_fmt = order + "Q"

    def take(self, n: int, what: str) -> memoryview:
        end = self.pos + n
        if n < 0 or end > len(self.buf):
            if 0 <= n and end <= self.file_size:
                raise _NeedMore()
            raise ValueError(f"{self.where}: truncated file: {what} needs {n} bytes at offset {self.pos}, "
                             f"the file has {self.file_size}")
        out = self.buf[self.pos:end]
        self.pos = end
        return out

    def unpack(self, fmt: str, what: str) -> Any:
        size = struct.calcsize(fmt)
        return struct.unpack(self.order + fmt, self.take(size, what))[0]

    def count(self, what: str) -> int:
        n: int = struct.unpack(self.count_fmt, self.take(struct.calcsize(self.count_fmt), what))[0]
        return n

    def string(self, what: str) -> str:
        n = self.count(what)
        raw = self.take(n, what)
        try:
            return bytes(raw).decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(f"{self.where}: {what} at offset {self.pos - n} is not UTF-8 "
                             f"(invalid byte at {e.start})") from None

    def value(self, vtype: int, what: str) -> Any:
        if vtype in _SCALAR:
            x = self.unpack(_STRUCT[vtype], what)
            return bool(x) if vtype == BOOL else x
        if vtype == STRING:
            return self.string(what)
        if vtype == ARRAY:
            etype = self.unpack("I", what + " (array type)")
            n = self.count(what + " (array length)")
            if etype in _SCALAR:
                dt = np.dtype(_SCALAR[etype]).newbyteorder(self.order)
                raw = self.take(n * dt.itemsize, f"{what} ({n} x {TYPE_NAMES[etype]})")
                arr = np.frombuffer(raw, dtype=dt).astype(dt.newbyteorder("="))  # (n,) a native copy
                return arr.astype(bool) if etype == BOOL else arr
            if etype == STRING:
                return [self.string(f"{what}[{i}]") for i in range(n)]
            if etype == ARRAY:
                return [self.value(ARRAY, f"{what}[{i}]") for i in range(n)]
            raise ValueError(f"{self.where}: {what}: unknown array element type {etype} at offset {self.pos}")
        raise ValueError(f"{self.where}: {what}: unknown value type {vtype} at offset {self.pos}")


def parse_gguf(data: bytes | memoryview, where: str = "gguf", file_size: int | None = None) -> GGUFFile:
    """A GGUFFile from the file's bytes (see read_gguf); data may be only the file's first bytes when
    file_size says how long the whole file is."""
    file_size = len(data) if file_size is None else file_size
    if len(data) < 8:
        raise ValueError(f"{where}: not a GGUF file (only {len(data)} bytes)")
    if bytes(data[:4]) != MAGIC:
        raise ValueError(f"{where}: not a GGUF file (starts with {bytes(data[:4])!r}, expected {MAGIC!r})")
    version_le = struct.unpack("<I", data[4:8])[0]
    order = "<" if version_le & 0xFFFF else ">"  # a big-endian file's version reads as (v << 24) here
    r = _Reader(data, where, order, file_size)
    r.pos = 4
    version = r.unpack("I", "version")
    if version not in (1, 2, 3):
        raise ValueError(f"{where}: GGUF version {version} is not supported (expected 1, 2 or 3)")
    if version == 1:
        r.count_fmt = order + "I"
    n_tensors = r.count("tensor count")
    n_kv = r.count("metadata count")
    if n_kv > file_size or n_tensors > file_size:
        raise ValueError(f"{where}: damaged header ({n_kv} metadata entries, {n_tensors} tensors in "
                         f"{file_size} bytes)")
    metadata: dict[str, Any] = {}
    types: dict[str, str] = {}
    for k in range(n_kv):
        key = r.string(f"metadata key {k}")
        vtype = r.unpack("I", f"type of {key}")
        if key in metadata:
            raise ValueError(f"{where}: metadata key {key!r} appears twice")
        metadata[key] = r.value(vtype, key)
        types[key] = TYPE_NAMES.get(vtype, str(vtype))
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0 \
            or alignment & (alignment - 1):
        raise ValueError(f"{where}: general.alignment {alignment!r} is not a positive power of two")
    infos = []
    for t in range(n_tensors):
        name = r.string(f"tensor {t} name")
        n_dims = r.unpack("I", f"tensor {name} rank")
        if n_dims > 8:
            raise ValueError(f"{where}: tensor {name}: {n_dims} dimensions (at most 8)")
        dims = [r.count(f"tensor {name} dimensions") for _ in range(n_dims)]
        gtype = r.unpack("I", f"tensor {name} type")
        offset = r.unpack("Q", f"tensor {name} offset")
        infos.append((name, dims, gtype, offset))
    data_offset = -(-r.pos // alignment) * alignment
    tensors = []
    for name, dims, gtype, offset in infos:
        if gtype not in GGML_TYPES:
            raise ValueError(f"{where}: tensor {name}: unknown ggml type {gtype}")
        tname, block, size = GGML_TYPES[gtype]
        n = int(np.prod(dims, dtype=np.int64)) if dims else 1
        if dims and dims[0] % block:
            raise ValueError(f"{where}: tensor {name}: first dimension {dims[0]} is not a multiple of {tname}'s "
                             f"block of {block}")
        if offset % alignment:
            raise ValueError(f"{where}: tensor {name}: offset {offset} is not a multiple of the alignment "
                             f"{alignment}")
        nbytes = n // block * size
        start = data_offset + offset
        if start + nbytes > file_size:
            raise ValueError(f"{where}: truncated file: tensor {name} needs bytes {start}..{start + nbytes}, "
                             f"the file has {file_size}")
        tensors.append(GGUFTensor(name, tuple(reversed(dims)), gtype, tname, start, nbytes))
    return GGUFFile(where, version, metadata, types, tensors, alignment, data_offset)


def read_gguf(path: str | os.PathLike[str]) -> GGUFFile:
    """The header, metadata and tensor directory of a GGUF file (the weights are left on disk; a tensor's
    bytes are file[t.offset : t.offset + t.nbytes])."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            want = size if size <= 4 * HEAD_READ else HEAD_READ  # a vocabulary file: all of it at once
            data = f.read(want)
            while True:  # the header, metadata and directory come first: read more only if they run past
                try:
                    return parse_gguf(data, str(p), file_size=size)
                except _NeedMore:
                    want = min(size, 4 * len(data))
                    data += f.read(want - len(data))
    except FileNotFoundError:
        raise ValueError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise ValueError(f"{p}: is a directory, expected a .gguf file") from None
    except OSError as e:
        raise ValueError(f"{p}: cannot read ({e.strerror or e})") from None


# ---- writing (tests and fixtures build small files with it)

def _pack_value(value: Any, vtype: int) -> bytes:
    if vtype == STRING:
        raw = value.encode("utf-8")
        return struct.pack("<Q", len(raw)) + raw
    if vtype in _STRUCT:
        return struct.pack("<" + _STRUCT[vtype], value)
    raise ValueError(f"value type {vtype}: use an array type tuple for arrays")


def pack_metadata_value(value: Any, vtype: int | tuple[int, ...]) -> bytes:
    """The bytes of one metadata value (type id, then the value): vtype is a scalar type id, or
    (ARRAY, element type[, inner element type ...]) for arrays."""
    if isinstance(vtype, tuple):
        head, *rest = vtype
        if head != ARRAY or not rest:
            raise ValueError(f"vtype: expected (ARRAY, element type, ...), got {vtype!r}")
        inner: int | tuple[int, ...] = rest[0] if len(rest) == 1 else tuple(rest)
        etype = inner if isinstance(inner, int) else inner[0]
        body = struct.pack("<IQ", etype, len(value))
        if isinstance(inner, int) and inner in _SCALAR:
            body += np.asarray(value, dtype=_SCALAR[inner]).astype("<" + _SCALAR[inner]).tobytes()
        else:
            body += b"".join(pack_metadata_value(v, inner)[4:] for v in value)
        return struct.pack("<I", ARRAY) + body
    return struct.pack("<I", vtype) + _pack_value(value, vtype)


def write_gguf(path: str | os.PathLike[str], metadata: dict[str, tuple[Any, int | tuple[int, ...]]],
               tensors: dict[str, np.ndarray] | None = None, alignment: int = DEFAULT_ALIGNMENT) -> None:
    """A version-3 GGUF file: metadata {key: (value, type)} (types as in pack_metadata_value) and float32 /
    float16 tensors (written F32 / F16, dimensions reversed as GGUF wants)."""
    tensors = tensors or {}
    if alignment != DEFAULT_ALIGNMENT:
        metadata = {**metadata, "general.alignment": (alignment, UINT32)}
    out = bytearray(MAGIC + struct.pack("<IQQ", 3, len(tensors), len(metadata)))
    for key, (value, vtype) in metadata.items():
        k = key.encode("utf-8")
        out += struct.pack("<Q", len(k)) + k + pack_metadata_value(value, vtype)
    blobs = []
    offset = 0
    for name, arr in tensors.items():
        gtype = {np.dtype(np.float32): 0, np.dtype(np.float16): 1}.get(arr.dtype)
        if gtype is None:
            raise ValueError(f"tensors[{name!r}]: expected float32 or float16, got {arr.dtype}")
        n = name.encode("utf-8")
        out += struct.pack("<Q", len(n)) + n + struct.pack("<I", arr.ndim)
        out += b"".join(struct.pack("<Q", d) for d in reversed(arr.shape))
        out += struct.pack("<IQ", gtype, offset)
        raw = np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()
        blobs.append(raw + b"\0" * (-len(raw) % alignment))
        offset += len(blobs[-1])
    out += b"\0" * (-len(out) % alignment)
    for b in blobs:
        out += b
    Path(path).write_bytes(bytes(out))


# ---- the tokenizer a GGUF file describes (tokenizer.ggml.*), as llama.cpp's llama-vocab.cpp reads it

# llama.cpp's per-`pre` flags besides the regexes (pretokenizers.LLAMA_CPP_PRE has those): which names add
# BOS by default, ignore merges for pieces that are tokens, add a SEP token, keep BOS unset, or spell spaces
# as "▁" on raw UTF-8 instead of GPT-2's byte characters.
_PRE_ADD_BOS = frozenset({"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2",
                          "jina-v5-nano", "tekken", "chameleon"})
_PRE_IGNORE_MERGES = _PRE_ADD_BOS - {"chameleon"} | {"minicpm5", "youtu", "granite-embed-multi-97m"}
_PRE_ADD_SEP = frozenset({"jina-v1-en", "jina-v2-code", "roberta-bpe"})
_PRE_NO_BOS = frozenset({"glm4", "chatglm-bpe"})
_PRE_SPM_STYLE = frozenset({"gemma4", "granite-embed-multi-311m", "sarvam-moe"})  # "▁" spaces, <0xNN> bytes
TOKEN_CONTROL, TOKEN_USER_DEFINED = 3, 4


def _id(meta: dict[str, Any], key: str, default: int | None, n: int) -> int | None:
    v = meta.get(key)
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v < n:
        return v
    return default if default is not None and 0 <= default < n else None


def _flag(meta: dict[str, Any], key: str, default: bool) -> bool:
    v = meta.get(key)
    return bool(v) if isinstance(v, (bool, int)) else default


def gguf_tokenizer_spec(g: GGUFFile) -> dict[str, Any]:
    """The tokenizer.json-like description (tokenizer_json.JsonTokenizer reads it) of a GGUF file's
    tokenizer.ggml.* entries: model gpt2 (byte-level BPE with merges; `pre` names the regexes), llama
    (SentencePiece BPE with scores) or gemma4 (BPE with merges on "▁"-spaced raw UTF-8), with llama.cpp's
    defaults for absent keys (add_bos_token, add_eos_token, add_space_prefix, the special ids)."""
    from .sentencepiece import BYTE, SPACE, spm_spec, template

    meta, where = g.metadata, g.path
    model = meta.get("tokenizer.ggml.model")
    if not isinstance(model, str):
        raise ValueError(f"{where}: no tokenizer.ggml.model entry (not a GGUF file with a vocabulary)")
    tokens = meta.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) for t in tokens):
        raise ValueError(f"{where}: tokenizer.ggml.tokens: expected a non-empty array of strings")
    n = len(tokens)
    types_arr = meta.get("tokenizer.ggml.token_type")
    types = [1] * n if types_arr is None else [int(t) for t in np.asarray(types_arr).tolist()]
    if len(types) < n:
        raise ValueError(f"{where}: tokenizer.ggml.token_type has {len(types)} entries for {n} tokens")
    pre = meta.get("tokenizer.ggml.pre") or "default"
    if model == "llama":
        scores = meta.get("tokenizer.ggml.scores")
        if scores is None:
            scores = np.zeros(n, dtype=np.float32)  # (n,)
        if len(scores) < n:
            raise ValueError(f"{where}: tokenizer.ggml.scores has {len(scores)} entries for {n} tokens")
        return spm_spec(tokens, np.asarray(scores, dtype=np.float64).tolist()[:n], types[:n],
                        bos_id=_id(meta, "tokenizer.ggml.bos_token_id", 1, n),
                        eos_id=_id(meta, "tokenizer.ggml.eos_token_id", 2, n),
                        unk_id=_id(meta, "tokenizer.ggml.unknown_token_id", 0, n),
                        add_bos=_flag(meta, "tokenizer.ggml.add_bos_token", True),
                        add_eos=_flag(meta, "tokenizer.ggml.add_eos_token", False),
                        add_space_prefix=_flag(meta, "tokenizer.ggml.add_space_prefix", True))
    if model not in ("gpt2", "gemma4"):
        raise ValueError(f"{where}: tokenizer.ggml.model {model!r} is not supported (npgpt reads gpt2, llama and "
                         f"gemma4)")
    if model == "gemma4":
        pre = "gemma4"  # llama.cpp sets it whatever the file says
    merges = meta.get("tokenizer.ggml.merges")
    if not isinstance(merges, list) or not all(isinstance(m, str) for m in merges):
        raise ValueError(f"{where}: tokenizer.ggml.merges: expected an array of strings (model {model})")
    from .pretokenizers import LLAMA_CPP_PRE

    if pre not in LLAMA_CPP_PRE:
        raise ValueError(f"{where}: tokenizer.ggml.pre {pre!r} is not a pre-tokenizer llama.cpp knows")
    spm_style = pre in _PRE_SPM_STYLE
    splits = [{"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": False}
              for r in LLAMA_CPP_PRE[pre]]
    default_bos = None if (model == "gemma4" or pre in _PRE_NO_BOS) else 11
    bos = _id(meta, "tokenizer.ggml.bos_token_id", default_bos, n)
    eos = _id(meta, "tokenizer.ggml.eos_token_id", None if model == "gemma4" else 11, n)
    unk = _id(meta, "tokenizer.ggml.unknown_token_id", None, n)
    sep = _id(meta, "tokenizer.ggml.seperator_token_id", None, n)
    add_bos = _flag(meta, "tokenizer.ggml.add_bos_token", pre in _PRE_ADD_BOS) or pre == "gemma4"
    add_eos = _flag(meta, "tokenizer.ggml.add_eos_token", False)
    add_sep = _flag(meta, "tokenizer.ggml.add_sep_token", pre in _PRE_ADD_SEP)
    if add_bos and bos is None:
        raise ValueError(f"{where}: add_bos_token is true but there is no BOS id")
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": types[i] == TOKEN_CONTROL}
             for i, t in enumerate(tokens) if types[i] in (TOKEN_CONTROL, TOKEN_USER_DEFINED)]
    post = template(tokens, bos if add_bos else None, eos if add_eos else (sep if add_sep else None))
    spec: dict[str, Any] = {
        "version": "1.0",
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": splits},
        "post_processor": post,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": tokens[unk] if unk is not None else None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None, "fuse_unk": False,
                  "byte_fallback": False, "ignore_merges": pre in _PRE_IGNORE_MERGES,
                  "vocab": {t: i for i, t in enumerate(tokens)}, "merges": merges},
    }
    if spm_style:
        spec["normalizer"] = {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}
        spec["model"]["byte_fallback"] = True
        spec["decoder"] = {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPACE}, "content": " "}, {"type": "ByteFallback"},
            {"type": "Fuse"}]}
        if pre == "gemma4":
            spec["npgpt"] = {"newline_tokens": True}
        if not any(types[i] == BYTE for i in range(n)):
            raise ValueError(f"{where}: a {pre} vocabulary needs <0xNN> byte tokens, and this one has none")
    else:
        spec["pre_tokenizer"]["pretokenizers"].append(
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False})
    return spec


def load_gguf_tokenizer(path: str | os.PathLike[str]) -> Any:
    """The tokenizer of a .gguf file (a JsonTokenizer; see gguf_tokenizer_spec)."""
    from .tokenizer_json import JsonTokenizer

    g = read_gguf(path)
    return JsonTokenizer(gguf_tokenizer_spec(g), str(path))
