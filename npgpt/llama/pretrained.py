"""Hugging Face directories of every family npgpt's decoder covers: config.json + model.safetensors (or a
sharded index), F64/F32/F16/BF16 stored.

`model = from_pretrained("path/to/qwen3")` picks the family by config.json's model_type (hf_families.py),
maps its config to a LlamaConfig (refusing every field npgpt does not implement, one line naming it), reads
and splits the tensors into npgpt's canonical names; `save_pretrained(model, dir)` writes the family's own
config.json and tensor names, which transformers loads to the same logits.
Walkthrough: docs/llama.md; the families: docs/families.md
"""

from __future__ import annotations

import json
import os
import re
import weakref
from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

import numpy as np
import numpy.typing as npt

from ..io.atomic import atomic_write
from ..io.safetensors import FLOAT_NAMES, SafetensorsFile, save_safetensors
from .._checks import float_dtype, is_py_int
from .config import LlamaConfig
from .hf_families import BUFFER_SUFFIXES, FAMILIES, TOKEN_IDS_NONE, HFFamily, family_for, family_of, same_config
from .model import Llama

CONFIG_NAME = "config.json"
# the config.json model_type values this loader reads (npgpt.families dispatches on them)
MODEL_TYPES: tuple[str, ...] = tuple(m for f in FAMILIES.values() for m in f.model_types)
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"

# a loaded model -> its family's name and the checkpoint's special token ids (written back by save_pretrained)
_FAMILY: weakref.WeakKeyDictionary[Llama, tuple[str, dict[str, Any]]] = weakref.WeakKeyDictionary()


def config_from_hf(d: Mapping[str, Any], where: str = CONFIG_NAME) -> LlamaConfig:
    """LlamaConfig from a HF config dict of any family npgpt reads; one-line refusals name the field."""
    return family_for(d, where).config_from_hf(d, where)


def config_to_hf(config: LlamaConfig, dtype: npt.DTypeLike = np.float32, family: str | None = None
                 ) -> dict[str, Any]:
    """The config.json transformers reads back as this LlamaConfig (family: its name, or the first that fits)."""
    return _family(config, family).config_to_hf(config, dtype)


def family_of_model(model: Llama) -> HFFamily:
    """The family a model was loaded from (from_pretrained), else the first that expresses its config."""
    loaded = _FAMILY.get(model)
    return FAMILIES[loaded[0]] if loaded is not None else family_of(model.config)


def _family(config: LlamaConfig, family: str | None) -> HFFamily:
    if family is None:
        return family_of(config)
    if family not in FAMILIES:
        raise ValueError(f"family: expected one of {', '.join(FAMILIES)}, got {family!r}")
    return FAMILIES[family]


def reads(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a directory whose config.json names a family this loader reads (for a package-wide
    from_pretrained that dispatches on model_type; anything unreadable is False, and the loader's own
    errors then come from whichever loader is chosen)."""
    try:
        mt = _read_json(os.fspath(path)).get("model_type")
    except (ValueError, OSError):
        return False
    return any(mt in fam.model_types for fam in FAMILIES.values())


def _read_json(path: str) -> dict[str, Any]:
    where = os.path.join(path, CONFIG_NAME)
    try:
        with open(where, encoding="utf-8") as f:
            d = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{path}: no {CONFIG_NAME}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError:
        raise ValueError(f"{where}: not UTF-8 text") from None
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(d).__name__}")
    return d


def _weight_files(path: str) -> dict[str, str]:
    """Tensor name -> the safetensors file holding it (one file, or the shards an index names)."""
    single, index = os.path.join(path, WEIGHTS_NAME), os.path.join(path, INDEX_NAME)
    if os.path.isfile(single):
        with SafetensorsFile(single) as f:
            return dict.fromkeys(f.keys(), single)
    if not os.path.isfile(index):
        raise ValueError(f"{path}: no {WEIGHTS_NAME} and no {INDEX_NAME}")
    try:
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        raise ValueError(f"{index}: expected JSON with a 'weight_map' object") from None
    if not isinstance(weight_map, Mapping):
        raise ValueError(f"{index}: weight_map: expected an object of tensor name -> file")
    files: dict[str, str] = {}
    for shard in sorted(set(map(str, weight_map.values()))):
        shard_path = os.path.join(path, shard)
        if os.path.basename(shard) != shard or not os.path.isfile(shard_path):
            raise ValueError(f"{index}: shard {shard!r} is not a file in {path}")
        with SafetensorsFile(shard_path) as f:
            for name in f:
                if weight_map.get(name) == shard:
                    files[name] = shard_path
    listed_missing = set(weight_map) - set(files)
    if listed_missing:
        raise ValueError(f"{index}: tensor(s) {sorted(listed_missing)[:5]} are not in the shards the index names")
    return files


def _read(files: Mapping[str, str], name: str) -> np.ndarray:
    """One stored tensor as a float array (BF16 widened), refusing integer dtypes and NaN/inf entries."""
    with SafetensorsFile(files[name]) as f:
        info = f.info(name)
        if info.dtype not in FLOAT_NAMES:
            raise ValueError(f"{files[name]}: tensor {name!r} has dtype {info.dtype}; expected F64, F32, F16 or BF16")
        x = f.get(name)
    if not np.isfinite(x).all():
        raise ValueError(f"{files[name]}: tensor {name!r} has NaN or infinite entries")
    return x


def _tied_head(fam: HFFamily, config: LlamaConfig, files: Mapping[str, str], names: set[str]) -> LlamaConfig:
    """tie_word_embeddings with a stored head: transformers (5.x) ties them when the two are equal and keeps
    both, untied, when they differ; so do we."""
    if not config.tie_word_embeddings:
        return config
    head_hf = fam.top.get("lm_head.weight", "lm_head.weight")
    stored = next((n for n in (head_hf, *[a for a, b in fam.aliases.items() if b == head_hf]) if n in names), None)
    if stored is None:
        return config
    embed = fam.top.get("model.embed_tokens.weight", "model.embed_tokens.weight")
    if embed in files and np.array_equal(_read(files, stored), _read(files, embed)):
        names.discard(stored)
        return config
    return replace(config, tie_word_embeddings=False)


def from_pretrained(path: str | os.PathLike[str], dtype: npt.DTypeLike = np.float32) -> Llama:
    """A Llama (in eval mode) from a Hugging Face directory of any family in hf_families.FAMILIES; the stored
    floats (F64, F32, F16, BF16) are converted to `dtype`.

    Every refusal is one line naming the file and the field or tensor: an unsupported family or config field,
    a shard index naming a missing file, missing, unexpected or misshapen tensors, NaN or infinite weights.
    """
    path = os.fspath(path)
    dtype = float_dtype("dtype", dtype)
    if not os.path.isdir(path):
        raise ValueError(f"{path}: not a directory (expected {CONFIG_NAME} + {WEIGHTS_NAME})")
    where = os.path.join(path, CONFIG_NAME)
    d = _read_json(path)
    fam = family_for(d, where)
    config = fam.config_from_hf(d, where)
    files = _weight_files(path)
    names = {n for n in files if not n.endswith(BUFFER_SUFFIXES)}
    config = _tied_head(fam, config, files, names)
    expected = fam.hf_shapes(config)
    stored_as = {n: n for n in names}
    for alias, hf in fam.aliases.items():  # e.g. GPT-NeoX's head: embed_out (on disk) or lm_head (in memory)
        if alias in names and hf in expected and hf not in names:
            stored_as[hf] = stored_as.pop(alias)
    unexpected, missing = set(stored_as) - set(expected), set(expected) - set(stored_as)
    if unexpected:
        raise ValueError(f"{path}: unexpected tensor(s) {sorted(unexpected)[:5]} (not part of a {fam.name} model "
                         f"with num_hidden_layers={config.n_layer}, tie_word_embeddings={config.tie_word_embeddings})")
    if missing:
        raise ValueError(f"{path}: missing tensor(s) {sorted(missing)[:5]}")
    for hf, shape in expected.items():
        stored = stored_as[hf]
        with SafetensorsFile(files[stored]) as f:
            info = f.info(stored)
        if info.dtype not in FLOAT_NAMES:
            raise ValueError(f"{files[stored]}: tensor {stored!r} has dtype {info.dtype}; expected F64, F32, F16 or "
                             f"BF16")
        if info.shape != shape:
            raise ValueError(f"{files[stored]}: tensor {stored!r} has shape {info.shape}, expected {shape} for "
                             f"{CONFIG_NAME}")
    model = Llama(config, dtype=dtype, init=False)
    filled = set()
    for name, x in fam.iter_weights_from_hf(lambda hf: _read(files, stored_as[hf]), set(stored_as), config):
        model.params[name][...] = x  # one stored tensor in memory at a time, besides the model
        filled.add(name)
    assert filled == set(model.params), "hf_families: the rules must cover every parameter"
    _FAMILY[model] = (fam.name, {k: d[k] for k in TOKEN_IDS_NONE if k in d})
    return model.eval()


def _first_difference(a: LlamaConfig, b: LlamaConfig) -> str:
    return next((f.name for f in fields(a) if getattr(a, f.name) != getattr(b, f.name)), "?")


STORE_DTYPES = {"float64": "F64", "float32": "F32", "float16": "F16", "bfloat16": "BF16"}  # save_pretrained's
_F16_MAX = 65504.0  # the largest finite float16
_SHARD = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")


def _store_name(dtype: npt.DTypeLike | None, model_dtype: np.dtype) -> str:
    """save_pretrained's dtype as one of STORE_DTYPES' names (None: the model's own)."""
    if dtype is None:
        return model_dtype.name
    name: str | None = dtype if isinstance(dtype, str) else None
    if name is None and not isinstance(dtype, bool):
        try:
            name = np.dtype(dtype).name
        except TypeError:
            name = None
    if name not in STORE_DTYPES:
        raise ValueError(f"dtype: expected one of {', '.join(STORE_DTYPES)}, got {dtype!r}")
    return name


def _shards(tensors: Mapping[str, np.ndarray], itemsize: int, max_bytes: int | None) -> list[list[str]]:
    """The tensors' names cut into files of at most max_bytes each (in order; a larger tensor goes alone)."""
    if max_bytes is None:
        return [list(tensors)]
    out: list[list[str]] = [[]]
    size = 0
    for name, x in tensors.items():
        n = x.size * itemsize
        if out[-1] and size + n > max_bytes:
            out.append([])
            size = 0
        out[-1].append(name)
        size += n
    return out


def save_pretrained(model: Llama, path: str | os.PathLike[str], family: str | None = None, *,
                    dtype: npt.DTypeLike | None = None, max_shard_bytes: int | None = None) -> None:
    """Write config.json and the weights (the family's names and layout) that transformers loads.

    family: a name in hf_families.FAMILIES; default the family the model was loaded from, else the first that
    expresses its config (plain Llama first).  dtype: how the weights are stored, "float64", "float32",
    "float16" or "bfloat16" (default: the model's).  max_shard_bytes: cut the weights into
    model-0000i-of-0000n.safetensors files of at most that size with a model.safetensors.index.json (default:
    one model.safetensors).  Every refusal (a config the family cannot say, float16 overflow, bad arguments)
    comes before anything is written; weight files of an earlier save in `path` are replaced.
    """
    if not isinstance(model, Llama):
        raise ValueError(f"model: expected a Llama, got {type(model).__name__}")
    if max_shard_bytes is not None and (not is_py_int(max_shard_bytes) or max_shard_bytes < 1):
        raise ValueError(f"max_shard_bytes: expected a positive integer or None, got {max_shard_bytes!r}")
    path = os.fspath(path)
    store = _store_name(dtype, model.dtype)
    config = model.config
    loaded_name, token_ids = _FAMILY.get(model, (None, {}))
    fam = _family(config, family if family is not None else loaded_name)
    d = fam.config_to_hf(config, model.dtype)
    d["dtype"] = d["torch_dtype"] = store
    if fam.name == loaded_name:
        d.update(token_ids)
    try:
        back = fam.config_from_hf(json.loads(json.dumps(d)), CONFIG_NAME)
    except ValueError as e:
        raise ValueError(f"family: {fam.name} cannot express this model's config ({e})") from None
    if not same_config(back, config):
        raise ValueError(f"family: {fam.name} cannot express this model's config (field "
                         f"{_first_difference(config, back)})")
    tensors = {k: np.ascontiguousarray(v) for k, v in fam.weights_to_hf(dict(model.params), config).items()}
    if store == "float16":
        big = next((k for k, x in tensors.items() if x.size and float(np.max(np.abs(x))) > _F16_MAX), None)
        if big is not None:
            raise ValueError(f"dtype: tensor {big!r} has values beyond float16's range (+-{_F16_MAX:g}); "
                             f"store bfloat16 or float32")
    code = STORE_DTYPES[store]
    groups = _shards(tensors, {"F64": 8, "F32": 4}.get(code, 2), max_shard_bytes)
    files = [WEIGHTS_NAME] if len(groups) == 1 and max_shard_bytes is None else \
        [f"model-{i + 1:05d}-of-{len(groups):05d}.safetensors" for i in range(len(groups))]
    os.makedirs(path, exist_ok=True)
    for file, names in zip(files, groups):
        save_safetensors(os.path.join(path, file), {k: tensors[k] for k in names}, metadata={"format": "pt"},
                         dtypes={k: code for k in names})
    for old in os.listdir(path):  # an earlier save's weights would shadow or mix with these
        if (old in (WEIGHTS_NAME, INDEX_NAME) or _SHARD.fullmatch(old)) and old not in files:
            os.remove(os.path.join(path, old))
    if files != [WEIGHTS_NAME]:
        total = sum(x.size for x in tensors.values()) * {"F64": 8, "F32": 4}.get(code, 2)
        index = {"metadata": {"total_size": total},
                 "weight_map": {k: file for file, names in zip(files, groups) for k in names}}
        index_text = json.dumps(index, indent=2, sort_keys=True) + "\n"
        atomic_write(os.path.join(path, INDEX_NAME), lambda fh: fh.write(index_text.encode("utf-8")))
    text = json.dumps(d, indent=2, sort_keys=True) + "\n"
    atomic_write(os.path.join(path, CONFIG_NAME), lambda fh: fh.write(text.encode("utf-8")))
