"""Checking golden files: recompute each stored case with npgpt (or compare two dumps) and report the worst
error of every tensor against the file's tolerance.  Rules: docs/oracle.md ("Checking and tolerances").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from .case import Arrays, OracleError
from .fileformat import FORMAT, TOLERANCES, default_tolerance, load_case
from .registry import CASES

__all__ = ["check_path", "compare_arrays", "Report", "TensorResult", "is_input_key"]

UPSTREAM_KEYS = ("dout", "dlse", "drouter_logits", "idx", "targets")  # stored inputs that are not in.* or param.*


def is_input_key(key: str) -> bool:
    """Whether a file's key holds an input of the case (in.*, param.*, upstream gradients, token ids)."""
    return key.startswith(("in.", "param.")) or key in UPSTREAM_KEYS


@dataclass(frozen=True)
class TensorResult:
    """The comparison of one tensor: worst absolute and relative error and whether it is within tolerance."""

    file: str
    key: str
    shape: tuple[int, ...]
    dtype: str
    max_abs: float
    max_rel: float
    rtol: float
    atol: float
    ok: bool
    note: str = ""  # why it failed when it is not an error size (missing key, shape mismatch, ...)

    def line(self, widths: tuple[int, int, int] = (0, 0, 0)) -> str:
        status = "ok" if self.ok else "FAIL"
        shape = "(" + ", ".join(map(str, self.shape)) + ("," if len(self.shape) == 1 else "") + ")"
        head = f"{self.file:<{widths[0]}}  {self.key:<{widths[1]}}  {shape:<{widths[2]}}  {self.dtype:<7}"
        if self.note:
            return f"{head}  {status}: {self.note}"
        exact = self.dtype.startswith(("int", "uint", "bool"))
        tol = "exact" if exact else f"rtol {self.rtol:.0e}, atol {self.atol:.0e}"
        return f"{head}  abs {self.max_abs:9.3e}  rel {self.max_rel:9.3e}  ({tol})  {status}"


@dataclass
class Report:
    """Result of check_path: one TensorResult per compared tensor.  `ok` and `exit_code` sum it up."""

    mode: str  # "recompute" or "against"
    reference: str = ""  # what the files were compared with, for the summary line
    files: list[str] = field(default_factory=list)
    results: list[TensorResult] = field(default_factory=list)

    @property
    def failures(self) -> list[TensorResult]:
        return [r for r in self.results if not r.ok]

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def result(self, file: str, key: str) -> TensorResult:
        for r in self.results:
            if r.file == file and r.key == key:
                return r
        raise KeyError(f"{file}:{key}")

    def lines(self) -> list[str]:
        widths = (max((len(r.file) for r in self.results), default=0),
                  max((len(r.key) for r in self.results), default=0),
                  max((len(str(r.shape)) for r in self.results), default=0))
        out = [r.line(widths) for r in self.results]
        n, nf = len(self.results), len(self.files)
        counted = f"{n} tensor{'s' * (n != 1)} in {nf} file{'s' * (nf != 1)}"
        ref = f" ({self.reference})" if self.reference else ""
        if self.ok:
            out.append(f"OK: {counted} within tolerance{ref}")
        else:
            names = ", ".join(f"{r.file}:{r.key}" for r in self.failures[:5])
            more = f" and {len(self.failures) - 5} more" if len(self.failures) > 5 else ""
            out.append(f"FAILED: {len(self.failures)} of {counted} above tolerance{ref}: {names}{more}")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def compare_arrays(a: npt.ArrayLike, b: npt.ArrayLike, rtol: float, atol: float) -> tuple[float, float, bool]:
    """(max_abs, max_rel, ok) for `a` against the reference `b` (same shape).

    Element i passes when |a_i - b_i| <= rtol * |b_i| + atol * M, with M = max |b| (1 if b is all zero), so
    atol is in units of the tensor's own scale.  max_rel = max |a_i - b_i| / (|b_i| + (atol / rtol) M): it is
    <= rtol exactly when every element passes.  Integer arrays must be equal.  NaN equals only NaN.
    """
    a64, b64 = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a64.shape != b64.shape:
        raise ValueError(f"a: expected shape {b64.shape}, got {a64.shape}")
    same = (a64 == b64) | (np.isnan(a64) & np.isnan(b64))
    with np.errstate(invalid="ignore"):
        diff = np.where(same, 0.0, np.abs(a64 - b64))
    diff = np.where(np.isnan(diff), np.inf, diff)
    max_abs = float(diff.max(initial=0.0))
    exact = np.asarray(a).dtype.kind in "iub" and np.asarray(b).dtype.kind in "iub"
    finite_b = np.abs(b64[np.isfinite(b64)])
    M = float(finite_b.max(initial=0.0)) or 1.0
    if exact:
        return max_abs, (0.0 if max_abs == 0 else math.inf), max_abs == 0
    absb = np.where(np.isfinite(b64), np.abs(b64), 0.0)
    ok = bool(np.all(diff <= rtol * absb + atol * M))
    denom = absb + (atol / rtol) * M if rtol > 0 else absb
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(diff == 0, 0.0, diff / denom)
    return max_abs, float(rel.max(initial=0.0)), ok


def _tol_from_meta(meta: dict[str, Any] | None, dtype: str, key: str) -> tuple[float, float]:
    tol = (meta or {}).get("tolerance")
    if isinstance(tol, dict) and "rtol" in tol and "atol" in tol:
        for prefix, t in (tol.get("by_prefix") or {}).items():
            if key.startswith(prefix):
                return float(t["rtol"]), float(t["atol"])
        return float(tol["rtol"]), float(tol["atol"])
    return default_tolerance(dtype if dtype in TOLERANCES else "float32", key)


def _float_dtype(arrays: Arrays, meta: dict[str, Any] | None) -> str:
    if meta and meta.get("dtype") in TOLERANCES:
        return str(meta["dtype"])
    kinds = {str(a.dtype) for a in arrays.values() if a.dtype.kind == "f"}
    return "float32" if "float32" in kinds or not kinds else "float64"


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(path.glob("*.npz"))
        if not files:
            raise OracleError(f"{path}: no .npz files in this directory")
        return files
    if not path.exists():
        raise OracleError(f"{path}: no such file or directory")
    return [path]


def _recompute(path: Path, arrays: Arrays, meta: dict[str, Any] | None) -> tuple[Arrays, dict[str, Any]]:
    """npgpt's outputs for the stored inputs of one case file."""
    if meta is None:
        raise OracleError(f"{path}: no 'meta' key (not an npgpt oracle file)")
    name = meta.get("case")
    if meta.get("format") != FORMAT or name not in CASES:
        raise OracleError(f"{path}: meta does not describe an npgpt oracle case (case={name!r})")
    dtype = meta.get("dtype")
    if dtype not in TOLERANCES:
        raise OracleError(f"{path}: meta.dtype must be 'float32' or 'float64', got {dtype!r}")
    for k, a in arrays.items():
        if a.dtype.kind == "f" and str(a.dtype) != dtype:
            raise OracleError(f"{path}: key {k!r} is {a.dtype}, but meta.dtype is {dtype}")
    case = CASES[name]
    stored = {k: a for k, a in arrays.items() if is_input_key(k)}
    if not case.inputs:  # a whole model: token ids and its parameters
        needed = ["idx", "targets"] + [f"param.{n}" for n in meta.get("args", {}).get("param_names", [])]
    else:
        needed = [f"in.{n}" for n in case.inputs] + (["dout"] if case.backward else [])  # "": forward only
    missing = [k for k in needed if k not in stored]
    if missing:
        raise OracleError(f"{path}: missing input key(s) {missing}")
    try:
        return case.run(stored, meta.get("args", {})), meta
    except OracleError as e:
        raise OracleError(f"{path}: {e}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise OracleError(f"{path}: npgpt rejected the stored inputs: {' '.join(str(e).split())}") from None


def check_path(path: str | Path, against: str | Path | None = None, rtol: float | None = None,
               atol: float | None = None) -> Report:
    """Check a case file, or every .npz in a directory.

    Without `against`: recompute each case from its stored inputs with npgpt and compare every output and
    gradient with the stored one.  With `against` (a file, or a directory holding files of the same names):
    compare the two dumps key by key, `against` being the reference.  rtol/atol override the tolerance of
    every tensor; by default each file's meta.tolerance (or the dtype's default) applies.
    Raises OracleError (one line) for a file that cannot be read or used.
    """
    for name, value in (("rtol", rtol), ("atol", atol)):
        if value is not None and not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
            raise ValueError(f"{name}: expected a non-negative number, got {value!r}")
    path = Path(path)
    files = _files(path)
    pairs: list[tuple[Path, Path | None]] = []
    if against is None:
        pairs = [(f, None) for f in files]
    else:
        against_path = Path(against)
        if against_path.is_dir():
            pairs = [(f, against_path / f.name) for f in files]
        elif path.is_dir():
            raise OracleError(f"{against_path}: expected a directory to compare with the directory {path}")
        else:
            pairs = [(files[0], against_path)]
        for _, ref_path in pairs:
            if ref_path is not None and not ref_path.exists():
                raise OracleError(f"{ref_path}: no such file (needed to compare with {path})")
    loaded = [(f, load_case(f), o, load_case(o) if o is not None else None) for f, o in pairs]

    from .._version import __version__

    report = Report("recompute", f"recomputed with npgpt {__version__}") if against is None else \
        Report("against", f"compared with {against}")
    for f, (arrays, meta), o, other in loaded:
        report.files.append(f.name)
        if other is None:
            expected, meta = _recompute(f, arrays, meta)
            dtype = str(meta["dtype"])
            for k, want in expected.items():
                r, a = _tol(rtol, atol, meta, dtype, k)
                if k not in arrays:
                    report.results.append(TensorResult(f.name, k, np.shape(want), dtype, math.inf, math.inf,
                                                       r, a, False, "missing from the file"))
                    continue
                report.results.append(_result(f.name, k, arrays[k], np.asarray(want), r, a))
            known = set(expected) | {k for k in arrays if is_input_key(k)}
            for k in arrays:
                if k not in known:
                    report.results.append(TensorResult(f.name, k, arrays[k].shape, str(arrays[k].dtype), math.inf,
                                                       math.inf, 0.0, 0.0, False, "key not in npgpt's layout"))
        else:
            o_arrays, o_meta = other
            assert o is not None  # `other` was loaded from it
            dt_f, dt_o = _float_dtype(arrays, meta), _float_dtype(o_arrays, o_meta)
            dtype = "float32" if "float32" in (dt_f, dt_o) else "float64"
            ref_meta = o_meta if dt_o == dtype else meta
            if meta and o_meta and meta.get("case") != o_meta.get("case"):
                report.results.append(TensorResult(f.name, "meta.case", (), "str", math.inf, math.inf, 0.0, 0.0,
                                                   False, f"{meta.get('case')!r} vs {o_meta.get('case')!r}"))
            for k in list(o_arrays) + [k for k in arrays if k not in o_arrays]:
                r, a = _tol(rtol, atol, ref_meta, dtype, k)
                if k not in arrays or k not in o_arrays:
                    where = o.name if k not in o_arrays else f.name
                    shape = (o_arrays[k] if k in o_arrays else arrays[k]).shape
                    report.results.append(TensorResult(f.name, k, shape, dtype, math.inf, math.inf, r, a, False,
                                                       f"missing from {where}"))
                    continue
                report.results.append(_result(f.name, k, arrays[k], o_arrays[k], r, a))
    return report


def _tol(rtol: float | None, atol: float | None, meta: dict[str, Any] | None, dtype: str,
         key: str) -> tuple[float, float]:
    r, a = _tol_from_meta(meta, dtype, key)
    return (r if rtol is None else float(rtol)), (a if atol is None else float(atol))


def _result(file: str, key: str, got: np.ndarray, ref: np.ndarray, rtol: float, atol: float) -> TensorResult:
    dtype = str(got.dtype) if got.dtype == ref.dtype else f"{got.dtype}/{ref.dtype}"
    if got.shape != ref.shape:
        return TensorResult(file, key, ref.shape, dtype, math.inf, math.inf, rtol, atol, False,
                            f"shape {got.shape} vs {ref.shape}")
    max_abs, max_rel, ok = compare_arrays(got, ref, rtol, atol)
    return TensorResult(file, key, ref.shape, dtype, max_abs, max_rel, rtol, atol, ok)
