"""Argument checks shared by every public function: one-line ValueErrors that name the argument."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeGuard

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


def float_dtype(name: str, dtype: Any) -> np.dtype:
    """Return np.dtype(dtype) if it is float32 or float64, else raise naming the argument."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise ValueError(f"{name}: expected float32 or float64, got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise ValueError(f"{name}: expected float32 or float64, got {dt}")
    return dt


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


def token_batch(idx: Any, targets: Any, vocab_size: int, block_size: int, ignore_index: int | None = None) -> None:
    """A model forward's inputs: idx (B, T) ids in [0, vocab_size) with 1 <= T <= block_size; targets None, or
    ids of idx's shape (ignore_index, when given, too).  Each error names its argument."""
    idx = token_ids("idx", idx, vocab_size)
    B, T = idx.shape
    if not 1 <= T <= block_size:
        raise ValueError(f"idx: sequence length {T} must be between 1 and block_size={block_size}")
    if targets is None:
        return
    if isinstance(targets, np.ndarray) and ignore_index is not None:
        targets = np.where(targets == ignore_index, 0, targets)  # an ignored target is any id
    targets = token_ids("targets", targets, vocab_size, ndim=None)
    if targets.shape != idx.shape:
        raise ValueError(f"targets: expected shape {idx.shape} (same as idx), got {targets.shape}")


def is_int(value: Any) -> bool:
    """True for a Python or NumPy integer, False for anything else, bools included (True is not a size)."""
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def is_py_int(value: Any) -> TypeGuard[int]:
    """True for a Python int (not a bool, not a NumPy integer): sizes that must stay JSON-able as they are."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_real(value: Any) -> bool:
    """True for a Python or NumPy real number (int or float), False for bools, strings and the rest."""
    return not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))


def integer(name: str, value: Any, minimum: int | None = None) -> int:
    """Return value as an int if it is an integer (not a bool) >= minimum, else raise naming it."""
    if not is_int(value) or (minimum is not None and value < minimum):
        wanted = {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(
            minimum, f"an integer >= {minimum}")
        raise ValueError(f"{name}: expected {wanted}, got {value!r}")
    return int(value)


def positive_int(name: str, value: Any) -> int:
    """Return value as an int if it is a positive integer (not a bool), else raise naming it."""
    return integer(name, value, minimum=1)


def real_number(name: str, value: Any) -> float:
    """Return value as a Python float if it is a real number (not a bool or string), else raise naming it."""
    if not is_real(value):
        raise ValueError(f"{name}: expected a number, got {value!r}")
    return float(value)


def probability(name: str, value: Any) -> float:
    """Return value as a Python float if it is a drop probability in [0, 1), else raise naming it."""
    if not is_real(value) or not 0.0 <= value < 1.0:
        raise ValueError(f"{name}: expected a drop probability in [0, 1), got {value!r}")
    return float(value)


def head_count(name: str, value: Any, C: int) -> int:
    """Return value as an int if it is a positive divisor of the width C, else raise naming it."""
    if not is_int(value) or value < 1 or C % value:
        raise ValueError(f"{name}: expected a positive divisor of C={C}, got {value!r}")
    return int(value)


def generator(name: str, rng: Any) -> np.random.Generator:
    """Return rng if it is a numpy Generator, else raise naming it."""
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"{name}: expected a numpy.random.Generator, got {type(rng).__name__}")
    return rng


def param(name: str, x: Any, shape: tuple[int, ...], dtype: np.dtype, ref: str = "x") -> np.ndarray:
    """Check a parameter array's dtype (that of the array named ref) and exact shape, naming it in the error."""
    float_array(name, x)
    if x.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {dtype} (same as {ref}), got {x.dtype}")
    shape_is(name, x, shape)
    return x


def upstream(name: str, dout: Any, out_shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Check an upstream gradient against the forward output's shape and dtype."""
    float_array(name, dout)
    shape_is(name, dout, out_shape)
    if dout.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {dtype} (the forward's dtype), got {dout.dtype}")
    return dout


def param_dict(name: str, params: Any, shapes: Mapping[str, tuple[int, ...]], dtype: np.dtype,
               ref: str = "x") -> None:
    """Check that params has every key of shapes, each a `dtype` array of exactly that shape.

    Errors name the missing keys, or the parameter itself (e.g. 'mlp.c_proj.weight: expected shape ...').
    """
    if not isinstance(params, Mapping):
        raise ValueError(f"{name}: expected a mapping of parameter arrays, got {type(params).__name__}")
    missing = [k for k in shapes if k not in params]
    if missing:
        raise ValueError(f"{name}: missing parameter(s) {missing}")
    for k, shape in shapes.items():
        param(k, params[k], shape, dtype, ref)
