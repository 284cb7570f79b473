"""Read and write safetensors files with NumPy and the standard library only.

File: an 8-byte little-endian u64 N, N bytes of UTF-8 JSON header, then the data section.  The header maps
each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the data section)
plus an optional "__metadata__" {str: str}.  Data is raw little-endian C-order bytes.
Every problem with a file is a one-line ValueError naming the file; the rules: docs/checkpoints.md
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator, Mapping
import io
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import numpy.typing as npt

from .atomic import atomic_write

MAX_HEADER_BYTES = 100_000_000  # the reference implementation refuses larger headers too

# safetensors dtype name -> how its bytes are stored (explicitly little-endian, so big-endian hosts read
# the right values).  BF16 is stored as raw uint16 bits and widened to float32 on load.
STORAGE_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
FLOAT_NAMES = ("F64", "F32", "F16", "BF16")
_ENTRY_FIELDS = ("dtype", "shape", "data_offsets")
# numpy (kind, itemsize) -> the safetensors name an array of that dtype is saved as
_NAME_OF = {(d.kind, d.itemsize): name for name, d in STORAGE_DTYPES.items() if name != "BF16"}


class TensorInfo(NamedTuple):
    """One header entry, checked: offsets are relative to the data section."""

    dtype: str  # safetensors name, e.g. "F32"
    shape: tuple[int, ...]
    begin: int
    end: int


# ----------------------------------------------------------------------------------------------- reading


class _DuplicateKey(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object hook: Python's json keeps the last of repeated keys silently; the format forbids them."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def parse_header(path: str, header: bytes, data_len: int) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Check a raw header against a data section of data_len bytes; return its entries and metadata.

    Raises a one-line ValueError naming `path` and the first problem found (see docs/checkpoints.md).
    """
    def bad(msg: str) -> ValueError:
        return ValueError(f"{path}: {msg}")

    try:
        text = header.decode("utf-8")
    except UnicodeDecodeError as e:
        raise bad(f"header is not valid UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as e:
        raise bad(f"header has the key {e.args[0]!r} twice") from None
    except (json.JSONDecodeError, RecursionError) as e:
        reason = e.msg if isinstance(e, json.JSONDecodeError) else "nested too deeply"
        raise bad(f"header is not valid JSON ({reason})") from None
    if not isinstance(obj, dict):
        raise bad(f"header is not a JSON object (got {type(obj).__name__})")

    metadata = obj.pop("__metadata__", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise bad("__metadata__ must be an object mapping strings to strings")

    entries: dict[str, TensorInfo] = {}
    for name, entry in obj.items():
        where = f"tensor {name!r}"
        if not isinstance(entry, dict):
            raise bad(f"{where}: expected an object with dtype, shape and data_offsets, got {type(entry).__name__}")
        for field in _ENTRY_FIELDS:
            if field not in entry:
                raise bad(f"{where}: missing {field!r}")
        extra = sorted(set(entry) - set(_ENTRY_FIELDS))
        if extra:
            raise bad(f"{where}: unexpected field {extra[0]!r}")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if not isinstance(dtype, str) or dtype not in STORAGE_DTYPES:
            raise bad(f"{where}: unknown dtype {dtype!r} (supported: {', '.join(STORAGE_DTYPES)})")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise bad(f"{where}: shape must be a list of non-negative integers, got {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) and o >= 0 for o in offsets)):
            raise bad(f"{where}: data_offsets must be two non-negative integers, got {offsets!r}")
        begin, end = offsets
        if end < begin:
            raise bad(f"{where}: data_offsets {offsets} end before they begin")
        if end > data_len:
            raise bad(f"{where}: data_offsets {offsets} run past the end of the {data_len}-byte data section "
                      "(file truncated?)")
        need = math.prod(shape) * STORAGE_DTYPES[dtype].itemsize
        if end - begin != need:
            raise bad(f"{where}: header lies about sizes: shape {shape} of {dtype} needs {need} bytes but "
                      f"data_offsets {offsets} span {end - begin}")
        entries[name] = TensorInfo(dtype, tuple(shape), begin, end)

    # the tensors must tile the data section exactly: no overlaps, no holes, no trailing bytes (as the spec
    # and the reference implementation require; it rules out files that hide other content in the gaps)
    pos, prev = 0, None
    for name, info in sorted(entries.items(), key=lambda kv: (kv[1].begin, kv[1].end)):
        if info.begin < pos:
            raise bad(f"tensors {prev!r} and {name!r} overlap in the data section")
        if info.begin > pos:
            raise bad(f"data section has a hole: bytes {pos}..{info.begin} belong to no tensor "
                      f"(before {name!r})")
        pos, prev = info.end, name
    if pos != data_len:
        raise bad(f"data section has {data_len - pos} trailing bytes after the last tensor")
    return entries, dict(metadata)


class SafetensorsFile:
    """An open safetensors file: the header is checked in full on opening, tensors are read on demand.

    `with SafetensorsFile(path) as f: f.keys(), f.info(name), f.metadata, f.get(name), f.read_into(name, out)`.
    Each read seeks to the tensor and reads exactly its bytes into a fresh array (no memory map), so
    loading a subset costs only that subset.  A missing file raises the usual FileNotFoundError.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._fh: io.BufferedReader = open(self.path, "rb")  # noqa: SIM115 -- closed by close()/__exit__
        try:
            self._open()
        except BaseException:
            self._fh.close()
            raise

    def _open(self) -> None:
        size = os.fstat(self._fh.fileno()).st_size
        if size < 8:
            raise ValueError(f"{self.path}: file is {size} bytes, shorter than the 8-byte header length")
        n = int.from_bytes(self._fh.read(8), "little")
        if n > MAX_HEADER_BYTES:
            raise ValueError(f"{self.path}: header length {n} is absurd (limit {MAX_HEADER_BYTES} bytes)")
        if n > size - 8:
            raise ValueError(f"{self.path}: header length {n} is larger than the rest of the file "
                             f"({size - 8} bytes; file truncated?)")
        header = self._fh.read(n)
        if len(header) != n:
            raise ValueError(f"{self.path}: file changed while reading the header")
        self._data_start = 8 + n
        self.entries, self.metadata = parse_header(self.path, header, size - 8 - n)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def keys(self) -> list[str]:
        """Tensor names in header order."""
        return list(self.entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.entries)

    def info(self, name: str) -> TensorInfo:
        if name not in self.entries:
            raise ValueError(f"{self.path}: no tensor named {name!r}")
        return self.entries[name]

    def _read_bytes_into(self, info: TensorInfo, dest: np.ndarray) -> None:
        """Read the tensor's bytes into dest (C-contiguous, exactly end - begin bytes)."""
        nbytes = info.end - info.begin
        if nbytes == 0:
            return
        self._fh.seek(self._data_start + info.begin)
        got = self._fh.readinto(dest.reshape(-1).view(np.uint8).data)
        if got != nbytes:
            raise ValueError(f"{self.path}: file changed while reading (short read)")

    def raw(self, name: str) -> np.ndarray:
        """The tensor as stored (explicit little-endian dtype; BF16 as uint16 bits): a fresh, writable array."""
        info = self.info(name)
        out = np.empty(info.shape, dtype=STORAGE_DTYPES[info.dtype])
        self._read_bytes_into(info, out)
        if info.dtype == "BOOL":
            out = out.view(np.uint8).astype(bool)  # any nonzero byte is True; never an invalid numpy bool
        return out

    def get(self, name: str) -> np.ndarray:
        """The tensor in the native byte order (BF16 widened to float32): a fresh array the caller owns."""
        info = self.info(name)
        out = self.raw(name)
        if info.dtype == "BF16":
            return bf16_to_float32(out)
        return out.astype(out.dtype.newbyteorder("="), copy=False)

    def read_into(self, name: str, out: np.ndarray) -> None:
        """Copy the tensor into `out` (same shape), converting the dtype; reads straight into out if it can."""
        info = self.info(name)
        if tuple(out.shape) != info.shape:
            raise ValueError(f"{self.path}: tensor {name!r} has shape {info.shape}, destination {out.shape}")
        if info.dtype != "BF16" and out.dtype == STORAGE_DTYPES[info.dtype] and out.flags.c_contiguous \
                and out.flags.writeable and info.dtype != "BOOL":
            self._read_bytes_into(info, out)
        else:
            out[...] = self.get(name)


def bf16_to_float32(bits: npt.NDArray[np.uint16]) -> npt.NDArray[np.float32]:
    """bfloat16 bit patterns -> float32: the 16 bits become the high half of a float32 (exact)."""
    wide = bits.astype(np.uint32)  # a fresh array, also for 0-d input (operators would give a scalar)
    wide <<= np.uint32(16)
    return wide.view(np.float32)


def float32_to_bf16(x: npt.NDArray[np.floating]) -> npt.NDArray[np.uint16]:
    """float32/float64 -> bfloat16 bit patterns, rounding to nearest even (NaN stays NaN).

    float64 is rounded to float32 first, so a float64 exactly halfway between two bfloat16 values after
    that first rounding can round differently from a direct float64 -> bfloat16 rounding."""
    x = np.asarray(x)
    u = x.astype(np.float32).reshape(-1).view(np.uint32)  # 1-D, so every operation below gives an array
    rounded = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    nan = np.isnan(u.view(np.float32))
    return np.where(nan, (u >> np.uint32(16)) | np.uint32(0x40), rounded).astype(np.uint16).reshape(x.shape)


def load_safetensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Every tensor of a safetensors file, in header order, as writable native-byte-order arrays the caller
    owns (BF16 comes back as float32).  A malformed file raises a one-line ValueError naming the problem."""
    with SafetensorsFile(path) as f:
        return {name: f.get(name) for name in f.keys()}


def load_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The file's __metadata__ ({} if it has none); the whole header is checked."""
    with SafetensorsFile(path) as f:
        return dict(f.metadata)


# ----------------------------------------------------------------------------------------------- writing


def _storage(path: str, name: str, x: Any, as_dtype: str | None) -> tuple[str, np.ndarray]:
    """The safetensors dtype name and the C-contiguous little-endian array to write for one tensor."""
    where = f"{path}: tensor {name!r}"
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{where}: expected a numpy array, got {type(x).__name__}")
    if as_dtype is None:
        st = _NAME_OF.get((x.dtype.kind, x.dtype.itemsize))
        if st is None or x.dtype.kind not in "fiub":
            raise ValueError(f"{where}: dtype {x.dtype} cannot be stored in safetensors "
                             f"(supported: float16/32/64, int8..64, uint8..64, bool)")
        return st, x.astype(STORAGE_DTYPES[st], order="C", copy=False)
    if as_dtype not in FLOAT_NAMES:
        raise ValueError(f"{where}: can only convert to {', '.join(FLOAT_NAMES)}, not {as_dtype!r}")
    if x.dtype.kind != "f":
        raise ValueError(f"{where}: only float arrays can be stored as {as_dtype}, got {x.dtype}")
    y: np.ndarray
    with np.errstate(over="ignore"):
        if as_dtype == "BF16":
            y = float32_to_bf16(x)
            back = bf16_to_float32(y)
        else:
            y = x.astype(STORAGE_DTYPES[as_dtype], order="C")
            back = y
    if np.any(np.isinf(back) & np.isfinite(x)):
        raise ValueError(f"{where}: values overflow {as_dtype}")
    return as_dtype, y.astype(STORAGE_DTYPES[as_dtype], copy=False)


def save_safetensors(path: str | os.PathLike[str], tensors: Mapping[str, np.ndarray],
                     metadata: Mapping[str, str] | None = None, *,
                     dtypes: Mapping[str, str] | None = None) -> None:
    """Write tensors (stored in their own dtype: float32 -> F32, float64 -> F64, ...) atomically.

    dtypes optionally converts named float tensors on the way out, e.g. {"wte.weight": "BF16"} (round to
    nearest even) or "F16"; overflow is an error.  Layout is deterministic: tensors sorted by element size
    (largest first, so every tensor is aligned) then name; header padded with spaces to a multiple of 8.
    """
    path = os.fspath(path)
    if not isinstance(tensors, Mapping):
        raise ValueError(f"{path}: tensors must be a mapping of names to arrays, got {type(tensors).__name__}")
    dtypes = dict(dtypes or {})
    for name in dtypes:
        if name not in tensors:
            raise ValueError(f"{path}: dtypes names {name!r}, which is not among the tensors")
    meta: dict[str, str] = {}
    if metadata is not None:
        if not isinstance(metadata, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError(f"{path}: metadata must map strings to strings")
        meta = dict(metadata)
    prepared: dict[str, tuple[str, np.ndarray]] = {}
    for name, x in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError(f"{path}: invalid tensor name {name!r}")
        prepared[name] = _storage(path, name, x, dtypes.get(name))

    order = sorted(prepared, key=lambda k: (-STORAGE_DTYPES[prepared[k][0]].itemsize, k))
    header: dict[str, Any] = {"__metadata__": meta} if meta else {}
    pos = 0
    for name in order:
        st, arr = prepared[name]
        header[name] = {"dtype": st, "shape": list(arr.shape), "data_offsets": [pos, pos + arr.nbytes]}
        pos += arr.nbytes
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)  # keeps the data section 8-byte aligned

    def write(f: BinaryIO) -> None:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for name in order:
            arr = prepared[name][1]
            if arr.size:
                f.write(arr.reshape(-1).view(np.uint8).data)

    atomic_write(path, write)
