"""Writing golden files: every registered case's inputs, npgpt's outputs and gradients, one .npz each."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np

from .._checks import integer
from .case import sizes
from .fileformat import FORMAT, FORMAT_VERSION, TOLERANCES, is_golden_file, meta_array, tolerance_meta, write_npz
from .registry import CASES

__all__ = ["dump_cases", "case_rng"]


def case_rng(seed: int, name: str) -> np.random.Generator:
    """One stream per case, so adding a case never shifts the inputs of another."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def _check_replaceable(out_dir: Path) -> None:
    """Before anything is written: a file of a case's name in out_dir must be a golden file (a previous dump,
    which is replaced); anything else there (another program's block.npz) is never overwritten."""
    for name in CASES:
        path = out_dir / f"{name}.npz"
        if (path.exists() or path.is_symlink()) and not is_golden_file(path):
            raise ValueError(f"{path}: exists and is not an npgpt golden file; nothing was written: choose another "
                             f"--out directory, or move the file away")


def dump_cases(out_dir: str | Path, dtype: str = "float64", seed: int = 0, **shape_options: int) -> list[Path]:
    """Write one golden file per case (CASE_NAMES) into out_dir and return their paths, in that order.

    dtype: "float64" or "float32" (inputs are drawn in float64 and rounded, so both dtypes see the same
    inputs up to rounding).  seed: a non-negative integer.  shape_options: batch, seq, channels, heads, vocab,
    layers (defaults DEFAULT_SHAPES).  A file of a case's name already in out_dir must be a golden file (it is
    replaced); anything else is a ValueError before anything is written.  Layout of each file: docs/oracle.md.
    """
    from .._version import __version__

    dtype = str(np.dtype(dtype)) if isinstance(dtype, (type, np.dtype)) else dtype
    if dtype not in TOLERANCES:
        raise ValueError(f"dtype: expected 'float32' or 'float64', got {dtype!r}")
    integer("seed", seed, minimum=0)
    s = sizes(shape_options)
    out_dir = Path(out_dir)
    _check_replaceable(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, case in CASES.items():
        raw, args = case.make(case_rng(int(seed), name), s)
        stored = {k: (v.astype(dtype) if v.dtype.kind == "f" else v.astype(np.int64)) for k, v in raw.items()}
        try:
            computed = case.run(stored, args)
        except ValueError as e:
            raise ValueError(f"{name}: npgpt rejected the generated inputs: {e}") from e
        meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "case": name,
                "forward": case.forward, "backward": case.backward,
                "inputs": list(case.inputs), "grads": list(case.grads), "args": args, "dtype": dtype,
                "seed": int(seed), "sizes": s.as_dict(), "npgpt_version": __version__,
                "numpy_version": np.__version__, "tolerance": tolerance_meta(dtype, computed)}
        if any(k.startswith("final.") for k in computed):  # a training case: its optimizer
            meta["optimizer"] = "npgpt.AdamW"
        arrays: dict[str, np.ndarray] = {"meta": meta_array(meta)}
        arrays.update(stored)
        arrays.update(computed)
        path = out_dir / f"{name}.npz"
        write_npz(path, arrays)
        written.append(path)
    return written
