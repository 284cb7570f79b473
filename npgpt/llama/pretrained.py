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
import weakref
from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from ..io.atomic import atomic_write
from ..io.safetensors import FLOAT_NAMES, SafetensorsFile, save_safetensors
from .._checks import float_dtype
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


def save_pretrained(model: Llama, path: str | os.PathLike[str], family: str | None = None) -> None:
    """Write config.json and model.safetensors (the family's names and layout, in the model's dtype).

    family: a name in hf_families.FAMILIES; default the family the model was loaded from, else the first
    that expresses its config (plain Llama first).  A config the family cannot say is refused, nothing written.
    """
    if not isinstance(model, Llama):
        raise ValueError(f"model: expected a Llama, got {type(model).__name__}")
    path = os.fspath(path)
    config = model.config
    loaded_name, token_ids = _FAMILY.get(model, (None, {}))
    fam = _family(config, family if family is not None else loaded_name)
    d = fam.config_to_hf(config, model.dtype)
    if fam.name == loaded_name:
        d.update(token_ids)
    try:
        back = fam.config_from_hf(json.loads(json.dumps(d)), CONFIG_NAME)
    except ValueError as e:
        raise ValueError(f"family: {fam.name} cannot express this model's config ({e})") from None
    if not same_config(back, config):
        raise ValueError(f"family: {fam.name} cannot express this model's config (field "
                         f"{_first_difference(config, back)})")
    tensors = fam.weights_to_hf(dict(model.params), config)
    text = json.dumps(d, indent=2, sort_keys=True) + "\n"
    os.makedirs(path, exist_ok=True)
    save_safetensors(os.path.join(path, WEIGHTS_NAME), {k: np.ascontiguousarray(v) for k, v in tensors.items()},
                     metadata={"format": "pt"})

    def write(fh: BinaryIO) -> None:
        fh.write(text.encode("utf-8"))

    atomic_write(os.path.join(path, CONFIG_NAME), write)
