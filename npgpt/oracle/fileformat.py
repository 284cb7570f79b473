"""The oracle's file format: one uncompressed .npz per case, little-endian C-order .npy members, a `meta`
JSON string, and the tolerances a file states.  Readable by any .npy reader; layout: docs/oracle.md.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from ..io.atomic import atomic_write
from ..training.checkpoint import is_training_checkpoint
from .case import Arrays, OracleError

__all__ = ["FORMAT", "FORMAT_VERSION", "TOLERANCES", "FINAL_TOLERANCES", "default_tolerance", "tolerance_meta",
           "write_npz", "meta_array", "load_case", "is_golden_file"]

FORMAT = "npgpt-oracle"
FORMAT_VERSION = 1

# (rtol, atol) per dtype.  An element passes when |a - b| <= rtol * |b| + atol * M, M = max |b| over the tensor.
TOLERANCES: dict[str, tuple[float, float]] = {"float64": (1e-10, 1e-12), "float32": (1e-4, 1e-5)}
# the parameters after ten AdamW steps: m / sqrt(v) turns a tiny gradient's rounding into a visible step
FINAL_TOLERANCES: dict[str, tuple[float, float]] = {"float64": (1e-8, 1e-10), "float32": (1e-3, 5e-3)}


def default_tolerance(dtype: str, key: str = "") -> tuple[float, float]:
    """(rtol, atol) for a tensor of a dump in `dtype`; keys starting with `final.` get the looser pair."""
    if dtype not in TOLERANCES:
        raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
    return (FINAL_TOLERANCES if key.startswith("final.") else TOLERANCES)[dtype]


def tolerance_meta(dtype: str, keys: Iterable[str]) -> dict[str, Any]:
    """meta.tolerance for a file in dtype holding `keys`: the dtype's pair, and the looser one for `final.`."""
    rtol, atol = TOLERANCES[dtype]
    tol: dict[str, Any] = {"rtol": rtol, "atol": atol}
    if any(k.startswith("final.") for k in keys):
        frtol, fatol = FINAL_TOLERANCES[dtype]
        tol["by_prefix"] = {"final.": {"rtol": frtol, "atol": fatol}}
    return tol


def _le_contiguous(a: np.ndarray) -> np.ndarray:
    """C order, little-endian: the only layout a dump contains."""
    a = np.asarray(a)
    dtype = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
    return np.array(a, dtype=dtype, order="C")  # not ascontiguousarray: that turns a 0-d array into 1-d


def write_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """An uncompressed zip of .npy (format 1.0) members, in the given key order, with fixed timestamps so
    the same seed gives byte-identical files.  Written atomically (npgpt/atomic.py): an interrupted or failed
    dump leaves whole files only, and its errors name `path`, not a temporary file."""

    def write(f: BinaryIO) -> None:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
            for key, arr in arrays.items():
                buf = io.BytesIO()
                np.lib.format.write_array(buf, _le_contiguous(arr), version=(1, 0), allow_pickle=False)
                info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_STORED
                info.external_attr = 0o644 << 16
                zf.writestr(info, buf.getvalue())

    atomic_write(path, write)


def meta_array(meta: Mapping[str, Any]) -> np.ndarray:
    return np.array(json.dumps(meta, separators=(", ", ": ")), dtype="<U")  # 0-d, UTF-32LE in the .npy


def is_golden_file(path: str | Path) -> bool:
    """True when path is a zip whose `meta` entry says format npgpt-oracle (only that entry is read; False
    for anything else, unreadable or not a file): what `dump` may replace."""
    try:
        with zipfile.ZipFile(path) as zf, zf.open("meta.npy") as member:
            m = np.lib.format.read_array(member, allow_pickle=False)
        meta = json.loads(str(m[()])) if m.dtype.kind == "U" and m.ndim == 0 else None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return False
    return isinstance(meta, dict) and meta.get("format") == FORMAT


def load_case(path: str | Path) -> tuple[Arrays, dict[str, Any] | None]:
    """Read every array of an .npz (no pickles) and parse its `meta` JSON (None when absent).

    Raises OracleError with a one-line message when the file cannot be read, or is a training checkpoint
    (an .npz too, whose string `metadata` entry would otherwise be reported as a non-numeric key).
    """
    path = Path(path)
    if not path.is_file():
        raise OracleError(f"{path}: no such file")
    if is_training_checkpoint(path):
        raise OracleError(f"{path}: this is a training checkpoint (written by npgpt train), not a golden case; "
                          f"check the files written by `npgpt oracle dump`")
    try:
        with open(path, "rb") as fh:
            magic = fh.read(6)
    except OSError as e:
        raise OracleError(f"{path}: cannot open ({e.strerror})") from None
    if magic == b"\x93NUMPY":
        raise OracleError(f"{path}: a single .npy array, not an .npz archive of a case")
    if not zipfile.is_zipfile(path):
        raise OracleError(f"{path}: not an .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except Exception as e:  # zip, .npy header and pickle errors all mean the same thing here
        if isinstance(e, (KeyboardInterrupt, MemoryError)):
            raise
        reason = " ".join(str(e).split()) or type(e).__name__
        raise OracleError(f"{path}: cannot read as .npz ({reason})") from None
    for k, a in arrays.items():
        if a.dtype.kind not in "fiub" and k != "meta":
            raise OracleError(f"{path}: key {k!r} has non-numeric dtype {a.dtype}")
    meta = None
    if "meta" in arrays:
        m = arrays.pop("meta")
        try:
            if m.dtype.kind != "U" or m.ndim != 0:
                raise ValueError(f"expected a 0-d unicode array, got {m.dtype} {m.shape}")
            meta = json.loads(str(m[()]))
            if not isinstance(meta, dict):
                raise ValueError("expected a JSON object")
        except ValueError as e:
            raise OracleError(f"{path}: unreadable meta ({' '.join(str(e).split())})") from None
    return arrays, meta
