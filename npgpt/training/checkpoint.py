"""Training checkpoints: one .npz holding the parameters, AdamW's moments and a JSON metadata string.

Entries:
    param/<name>     every parameter, by its family's names, e.g. param/wte.weight, param/h.0.attn.c_attn.weight
    adam_m/<name>    AdamW first moment, same names and shapes
    adam_v/<name>    AdamW second moment
    metadata         0-d numpy unicode array: a JSON object with "format": "npgpt-checkpoint", "version": 1,
                     "model_family" (a npgpt.families name; absent in files from before it: "gpt2"),
                     "model_config" (that family's config fields)
                     and whatever else the writer records (npgpt.training.loop records the train config, iteration,
                     optimizer state, RNG states, tokenizer, history)

Nothing is pickled: the file loads with np.load(..., allow_pickle=False).  save_checkpoint writes a temporary
file in the same directory, fsyncs it and renames it over the target, so a crash or a failing save leaves the
previous checkpoint intact.  Every problem reading one is a one-line ValueError.
Format and guarantees: docs/training.md
"""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ..io.atomic import atomic_write
from ..families import family, family_of
from ..runtime.core import ModelConfig
from ..tokenizers.protocol import Tokenizer, tokenizer_from_dict
from .._checks import is_py_int

FORMAT_NAME = "npgpt-checkpoint"
FORMAT_VERSION = 1
GROUPS = ("param", "adam_m", "adam_v")  # the array groups, each keyed by parameter name

Array = npt.NDArray[np.floating]


@dataclass
class Checkpoint:
    """What load_checkpoint returns: the three array groups, the model config, and the whole metadata."""

    params: dict[str, Array]
    adam_m: dict[str, Array]
    adam_v: dict[str, Array]
    config: Any  # the family's config
    meta: dict[str, Any]


def save_checkpoint(path: str | os.PathLike[str], params: Mapping[str, Array], adam_m: Mapping[str, Array],
                    adam_v: Mapping[str, Array], config: ModelConfig,
                    meta: Mapping[str, Any] | None = None) -> Path:
    """Write params, AdamW moments and metadata to one .npz at path, atomically; return the path.

    meta must be JSON-serialisable (strict JSON: no NaN/inf); "format", "version" and "model_config" are
    added here.  The directory is created if missing.
    """
    path = Path(path)
    shapes = _shapes(config)
    for group, given in zip(GROUPS, (params, adam_m, adam_v)):
        _check_arrays(group, given, shapes, str(path))
    reserved = {"format", "version", "model_config", "model_family"} & set(meta or {})
    if reserved:
        raise ValueError(f"meta: keys {sorted(reserved)} are written by save_checkpoint itself")
    header = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "model_config": config.to_dict(),
              "model_family": family_of(config).name, **(meta or {})}
    try:
        text = json.dumps(header, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise ValueError(f"meta: not JSON-serialisable ({e})") from None
    arrays: dict[str, np.ndarray] = {"metadata": np.array(text)}  # numpy unicode ('<U..'), not object
    for group, d in zip(GROUPS, (params, adam_m, adam_v)):
        arrays.update({f"{group}/{k}": np.ascontiguousarray(d[k]) for k in shapes})

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]  # temp file, fsync, rename
    return path


def _shapes(config: Any) -> dict[str, tuple[int, ...]]:
    """The parameter shapes of config's family (npgpt.families)."""
    return family_of(config).core.param_shapes(config)


def load_checkpoint(path: str | os.PathLike[str], config: Any | None = None,
                    expect: Mapping[str, Any] | None = None, expect_key: str = "train_config") -> Checkpoint:
    """Read and validate a checkpoint written by save_checkpoint.

    config: when given, the stored model config must equal it (the differing fields are named).
    expect: when given, each of its items must equal the same item of meta[expect_key] (differences named).
    Raises a one-line ValueError for a missing file, a file that is not an npz (corrupt or truncated), an npz
    that is not an npgpt checkpoint, a newer format version, parameters that do not match the model config,
    and the mismatches above.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such checkpoint file")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, expected a checkpoint file")
    try:
        f = open(path, "rb")  # opened here so it is closed on every path (np.load leaks it when it fails)
    except OSError as e:
        raise ValueError(f"{path}: cannot read ({e.strerror or e})") from None
    with f:
        z = _open_npz(path, f)
        with z:
            meta = _read_metadata(path, _entry(path, z, "metadata") if "metadata" in z.files else None)
            raw = {k: _entry(path, z, k) for k in z.files if k != "metadata"}  # every entry read now
    try:
        kind = family(meta.get("model_family", "gpt2")).config_class  # absent: written before families existed
        stored = kind.from_dict(meta["model_config"])
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"{path}: invalid model_config in the metadata ({_one_line(e)})") from None
    if config is not None and stored != config:
        raise ValueError(f"{path}: checkpoint was written for a different model: "
                         f"{_differences(stored.to_dict(), config.to_dict())}")
    if expect is not None:
        have = meta.get(expect_key)
        if not isinstance(have, dict):
            raise ValueError(f"{path}: metadata has no {expect_key!r} object to compare with")
        wanted = {k: v for k, v in expect.items() if have.get(k, _MISSING) != v}
        if wanted:
            raise ValueError(f"{path}: checkpoint was written with a different configuration: "
                             f"{_differences({k: have.get(k, _MISSING) for k in wanted}, wanted)}")

    shapes = _shapes(stored)
    groups: dict[str, dict[str, Array]] = {}
    for group in GROUPS:
        prefix = group + "/"
        d = {k[len(prefix):]: a for k, a in raw.items() if k.startswith(prefix)}
        _check_arrays(group, d, shapes, str(path))
        bad = next((k for k, a in d.items() if not np.isfinite(a).all()), None)
        if bad is not None:  # training never saves a diverged state, so this file was damaged or edited
            raise ValueError(f"{path}: {group}/{bad} holds non-finite values (NaN or inf); the file is damaged")
        groups[group] = d
    extra = sorted(k for k in raw if k.split("/", 1)[0] not in GROUPS)
    if extra:
        raise ValueError(f"{path}: unexpected entries {_few(extra)}")
    return Checkpoint(groups["param"], groups["adam_m"], groups["adam_v"], stored, meta)


_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError, RuntimeError)
_ZIP_MAGIC, _NPY_MAGIC = b"PK\x03\x04", b"\x93NUMPY"


def _open_npz(path: Path, f: Any) -> Any:
    """np.load of an open file, after checking it starts like a zip archive: anything else (random bytes, a
    pickle, a text file) is "not an .npz archive", never NumPy's advice to load it with allow_pickle."""
    head = f.read(len(_NPY_MAGIC))
    f.seek(0)
    if head.startswith(_NPY_MAGIC):
        raise ValueError(f"{path}: not an npgpt checkpoint (a .npy array, not an .npz archive)")
    if not head.startswith(_ZIP_MAGIC):
        what = "an empty file" if not head else "not a zip archive"
        raise ValueError(f"{path}: not a readable .npz checkpoint ({what}; corrupt or truncated, or another kind "
                         f"of file)")
    try:
        z = np.load(f, allow_pickle=False)
    except _READ_ERRORS as e:
        raise ValueError(f"{path}: not a readable .npz checkpoint (corrupt or truncated?): {_one_line(e)}") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: not an npgpt checkpoint (not an .npz archive)")
    return z


def stored_tokenizer(path: str | os.PathLike[str], ck: Checkpoint, sampling: bool = False) -> Tokenizer:
    """The tokenizer a training checkpoint holds, checked against its model: at most vocab_size ids, and with
    sampling=True exactly vocab_size for a run trained from scratch (its vocabulary is its tokenizer's; a
    fine-tuned model may be padded past its tokenizer, and samples then draw only the tokenizer's ids)."""
    if "tokenizer" not in ck.meta:
        raise ValueError(f"{path}: the checkpoint has no tokenizer (not written by npgpt train)")
    tok = tokenizer_from_dict(ck.meta["tokenizer"])
    V = ck.config.vocab_size
    if tok.vocab_size > V:
        raise ValueError(f"{path}: its tokenizer has {tok.vocab_size} tokens but the model's vocabulary only "
                         f"{V}; the file is damaged")
    fine_tuned = isinstance(ck.meta.get("train_config"), dict) and ck.meta["train_config"].get("init_from")
    if sampling and tok.vocab_size < V and not fine_tuned:
        n = tok.vocab_size
        ids = f"id {n}" if n == V - 1 else f"ids {n} to {V - 1}"
        raise ValueError(f"{path}: its tokenizer has {n} tokens but the model's vocabulary {V}: a sample could "
                         f"draw {ids}, which no token stands for; the file was edited or is damaged")
    return tok


def is_training_checkpoint(path: str | os.PathLike[str]) -> bool:
    """True when path is an .npz whose 'metadata' entry says format npgpt-checkpoint (only that entry is read;
    False for anything unreadable).  For tools that take other .npz files (the oracle's golden cases)."""
    return peek_metadata(path) is not None


def peek_metadata(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The metadata of a training checkpoint, reading only its 'metadata' entry (no arrays); None for anything
    that is not a readable npgpt checkpoint."""
    try:
        with open(path, "rb") as f:
            if f.read(4) != _ZIP_MAGIC:
                return None
            f.seek(0)
            with np.load(f, allow_pickle=False) as z:
                if "metadata" not in z.files:
                    return None
                entry = z["metadata"]
                if entry.dtype.kind != "U" or entry.size != 1:
                    return None
                meta = json.loads(str(entry.reshape(())[()]))
    except (*_READ_ERRORS, json.JSONDecodeError):
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT_NAME else None


def _entry(path: Path, z: Any, key: str) -> np.ndarray:
    try:
        return z[key]
    except _READ_ERRORS as e:
        raise ValueError(f"{path}: entry {key!r} is unreadable (corrupt or truncated?): {_one_line(e)}") from None


def _read_metadata(path: Path, entry: np.ndarray | None) -> dict[str, Any]:
    if entry is None:
        raise ValueError(f"{path}: not an npgpt checkpoint (no 'metadata' entry)")
    if entry.dtype.kind != "U" or entry.size != 1:
        raise ValueError(f"{path}: not an npgpt checkpoint ('metadata' is not a JSON string)")
    try:
        meta = json.loads(str(entry.reshape(())[()]))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not an npgpt checkpoint ('metadata' is not valid JSON: {e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        name = meta.get("format") if isinstance(meta, dict) else None
        raise ValueError(f"{path}: not an npgpt checkpoint (format {name!r}, expected {FORMAT_NAME!r})")
    version = meta.get("version")
    if not is_py_int(version) or version < 1:
        raise ValueError(f"{path}: invalid checkpoint format version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(f"{path}: checkpoint format version {version} is newer than this npgpt reads "
                         f"(up to {FORMAT_VERSION}); upgrade npgpt")
    return meta


def _check_arrays(group: str, arrays: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]],
                  where: str) -> None:
    """Keys exactly the model's parameter names, each a float32/float64 array of the config's shape."""
    missing, extra = sorted(set(shapes) - set(arrays)), sorted(set(arrays) - set(shapes))
    if missing or extra:
        parts = ([f"missing {_few(missing)}"] if missing else []) + ([f"unexpected {_few(extra)}"] if extra else [])
        raise ValueError(f"{where}: {group} entries do not match the model config ({'; '.join(parts)})")
    for k, shape in shapes.items():
        a = arrays[k]
        if not isinstance(a, np.ndarray) or a.dtype not in (np.float32, np.float64):
            raise ValueError(f"{where}: {group}/{k}: expected a float32 or float64 array")
        if a.shape != shape:
            raise ValueError(f"{where}: {group}/{k}: shape {a.shape} does not match the model config's {shape}")


class _Missing:
    def __repr__(self) -> str:
        return "<missing>"


_MISSING = _Missing()


def _differences(have: Mapping[str, Any], want: Mapping[str, Any]) -> str:
    keys = [k for k in want if have.get(k, _MISSING) != want[k]]
    return ", ".join(f"{k} (checkpoint {have.get(k, _MISSING)!r}, requested {want[k]!r})" for k in keys)


def _few(names: list[str], n: int = 4) -> str:
    shown = ", ".join(names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    if "pickle" in text:  # NumPy's "load it with allow_pickle=True" is never the right advice for a checkpoint
        return "the archive holds an entry that is not a plain array"
    return text
