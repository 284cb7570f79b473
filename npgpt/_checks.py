"""Argument checks shared by every public function: one-line ValueErrors that name the argument."""

from __future__ import annotations

from typing import Any

import numpy as np

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def float_array(name: str, x: Any, ndim: int | None = None, min_ndim: int | None = None) -> np.ndarray:
    """Return x if it is a float32/float64 ndarray of the wanted rank, else raise a ValueError naming it."""
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name}: expected dtype float32 or float64, got {x.dtype}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions, got shape {x.shape}")
    if min_ndim is not None and x.ndim < min_ndim:
        raise ValueError(f"{name}: expected at least {min_ndim} dimension(s), got shape {x.shape}")
    return x


def same_dtype(ref_name: str, ref: np.ndarray, **others: np.ndarray) -> None:
    """Raise if any of `others` has a dtype different from `ref` (no silent promotion)."""
    for name, x in others.items():
        if x.dtype != ref.dtype:
            raise ValueError(f"{name}: expected dtype {ref.dtype} (same as {ref_name}), got {x.dtype}")


def shape_is(name: str, x: np.ndarray, shape: tuple[int, ...]) -> None:
    """Raise if x.shape != shape."""
    if tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)}, got {tuple(x.shape)}")


def token_ids(name: str, idx: Any, vocab_size: int, ndim: int | None = 2) -> np.ndarray:
    """Return idx if it is an integer array of ids in [0, vocab_size), else raise naming the problem."""
    if not isinstance(idx, np.ndarray):
        raise ValueError(f"{name}: expected a numpy integer array, got {type(idx).__name__}")
    if not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"{name}: expected an integer dtype, got {idx.dtype}")
    if ndim is not None and idx.ndim != ndim:
        raise ValueError(f"{name}: expected {ndim} dimensions (B, T), got shape {idx.shape}")
    if idx.size:
        lo, hi = int(idx.min()), int(idx.max())
        if lo < 0 or hi >= vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"{name}: token id {bad} is out of range [0, {vocab_size})")
    return idx


def positive_int(name: str, value: Any) -> int:
    """Return value as an int if it is a positive integer (not a bool), else raise naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def real_number(name: str, value: Any) -> float:
    """Return value as a Python float if it is a real number (not a bool or string), else raise naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    return float(value)


def param(name: str, x: Any, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Check a parameter array's dtype and exact shape, naming it in the error."""
    float_array(name, x)
    if x.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {dtype} (same as x), got {x.dtype}")
    shape_is(name, x, shape)
    return x


def upstream(name: str, dout: Any, out_shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Check an upstream gradient against the forward output's shape and dtype."""
    float_array(name, dout)
    shape_is(name, dout, out_shape)
    if dout.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {dtype} (the forward's dtype), got {dout.dtype}")
    return dout
