"""Hugging Face LlamaForCausalLM directories: config.json + model.safetensors (or a sharded index).

`model = from_pretrained("path/to/llama")` builds a Llama from the config and copies the weights in;
`save_pretrained(model, dir)` writes a directory that transformers' LlamaForCausalLM.from_pretrained loads.
nn.Linear's (out, in) layout is kept as is: npgpt's Llama parameters are HF's tensors, names and all.
Walkthrough: docs/llama.md
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from ..io.atomic import atomic_write
from ..io.safetensors import FLOAT_NAMES, SafetensorsFile, save_safetensors
from .config import HIDDEN_ACTS, LlamaConfig
from .core import param_shapes
from .model import Llama
from .._checks import float_dtype

CONFIG_NAME = "config.json"
MODEL_TYPES = ("llama",)  # the config.json model_type values this loader reads (families.py)
WEIGHTS_NAME = "model.safetensors"
INDEX_NAME = "model.safetensors.index.json"
# LlamaConfig's defaults, used (as transformers does) for keys a config.json leaves out
HF_DEFAULTS: dict[str, Any] = {
    "vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": None, "head_dim": None, "hidden_act": "silu",
    "max_position_embeddings": 2048, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
    "attention_bias": False, "mlp_bias": False,
}
_ROTARY_BUFFER = ".self_attn.rotary_emb.inv_freq"  # old checkpoints stored this buffer: not a parameter


def config_from_hf(d: Mapping[str, Any], where: str = CONFIG_NAME) -> LlamaConfig:
    """LlamaConfig from a HF Llama config dict; refuse what npgpt's Llama would compute differently.

    Reads the rope settings from `rope_parameters` (transformers >= 5) or `rope_theta` + `rope_scaling`.
    """
    def bad(msg: str) -> ValueError:
        return ValueError(f"{where}: {msg}")

    if not isinstance(d, Mapping):
        raise bad(f"expected a JSON object, got {type(d).__name__}")
    if d.get("model_type") != "llama":
        raise bad(f"model_type is {d.get('model_type')!r}, expected 'llama' (a LlamaForCausalLM checkpoint)")
    archs = d.get("architectures")
    if archs is not None and "LlamaForCausalLM" not in archs:
        raise bad(f"architectures is {archs!r}, expected ['LlamaForCausalLM']")
    c = {**HF_DEFAULTS, **d}
    for field in ("attention_bias", "mlp_bias"):
        if c[field]:
            raise bad(f"{field} is true: npgpt's Llama has no biases")
    if c["hidden_act"] not in HIDDEN_ACTS:
        raise bad(f"hidden_act {c['hidden_act']!r} is not supported (supported: {', '.join(HIDDEN_ACTS)})")
    rope = d.get("rope_parameters")
    field = "rope_parameters"
    if rope is None:  # transformers < 5: rope_theta at the top, rope_scaling beside it
        rope = {"rope_theta": d.get("rope_theta", 10000.0), **(d.get("rope_scaling") or {})}
        field = "rope_scaling"
    if not isinstance(rope, Mapping):
        raise bad(f"{field}: expected a JSON object, got {type(rope).__name__}")
    rope = dict(rope)
    theta = rope.pop("rope_theta", d.get("rope_theta", 10000.0))
    kind = rope.get("rope_type", rope.get("type", "default"))
    if rope.pop("partial_rotary_factor", 1.0) != 1.0:
        raise bad(f"{field}: partial_rotary_factor != 1 is not a Llama setting")
    scaling = None if kind == "default" else rope
    n_head = c["num_attention_heads"]
    head_dim = c["head_dim"]
    if head_dim is not None and isinstance(n_head, int) and n_head and head_dim * n_head == c["hidden_size"]:
        head_dim = None  # the default, written out by newer transformers
    try:
        return LlamaConfig(
            vocab_size=c["vocab_size"], block_size=c["max_position_embeddings"], n_layer=c["num_hidden_layers"],
            n_head=n_head, n_kv_head=c["num_key_value_heads"] or n_head, n_embd=c["hidden_size"],
            intermediate_size=c["intermediate_size"], head_dim=head_dim, rms_norm_eps=c["rms_norm_eps"],
            rope_theta=theta, rope_scaling=scaling, tie_word_embeddings=c["tie_word_embeddings"],
            hidden_act=c["hidden_act"])
    except ValueError as e:
        msg = str(e).replace("rope_scaling", field) if field == "rope_parameters" else str(e)
        raise bad(msg) from None


def config_to_hf(config: LlamaConfig, dtype: npt.DTypeLike = np.float32) -> dict[str, Any]:
    """The config.json transformers' LlamaForCausalLM reads back as this LlamaConfig (rope in both spellings)."""
    rope = {"rope_type": "default", "rope_theta": float(config.rope_theta), **(config.rope_scaling or {})}
    d: dict[str, Any] = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": config.vocab_size,
        "max_position_embeddings": config.block_size, "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head, "num_key_value_heads": config.n_kv_head,
        "hidden_size": config.n_embd, "intermediate_size": config.intermediate_size,
        "head_dim": config.head_size, "rms_norm_eps": float(config.rms_norm_eps),
        "rope_parameters": rope, "rope_theta": float(config.rope_theta), "rope_scaling": config.rope_scaling,
        "tie_word_embeddings": config.tie_word_embeddings, "hidden_act": config.hidden_act,
        "attention_bias": False, "mlp_bias": False, "attention_dropout": 0.0,
        "dtype": np.dtype(dtype).name, "torch_dtype": np.dtype(dtype).name,
    }
    return d


def _read_config(path: str) -> LlamaConfig:
    where = os.path.join(path, CONFIG_NAME)
    try:
        with open(where, encoding="utf-8") as f:
            d = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{path}: no {CONFIG_NAME}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e.msg} at line {e.lineno})") from None
    return config_from_hf(d, where)


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
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ValueError(f"{index}: expected JSON with a 'weight_map' object") from None
    if not isinstance(weight_map, Mapping):
        raise ValueError(f"{index}: weight_map: expected an object of tensor name -> file")
    files: dict[str, str] = {}
    for shard in sorted(set(weight_map.values())):
        shard_path = os.path.join(path, str(shard))
        if os.path.basename(str(shard)) != str(shard) or not os.path.isfile(shard_path):
            raise ValueError(f"{index}: shard {shard!r} is not a file in {path}")
        with SafetensorsFile(shard_path) as f:
            for name in f:
                if weight_map.get(name) == shard:
                    files[name] = shard_path
    listed_missing = set(weight_map) - set(files)
    if listed_missing:
        raise ValueError(f"{index}: tensor(s) {sorted(listed_missing)[:5]} are not in the shards the index names")
    return files


def from_pretrained(path: str | os.PathLike[str], dtype: npt.DTypeLike = np.float32) -> Llama:
    """A Llama (in eval mode) from a HF LlamaForCausalLM directory; any float dtype is converted to `dtype`.

    Missing, unexpected or misshapen tensors are one-line errors naming the tensor; a GPT-2 (or any other
    model_type) directory is refused by config.json's model_type.
    """
    path = os.fspath(path)
    dtype = float_dtype("dtype", dtype)
    if not os.path.isdir(path):
        raise ValueError(f"{path}: not a directory (expected {CONFIG_NAME} + {WEIGHTS_NAME})")
    config = _read_config(path)
    files = _weight_files(path)
    shapes = param_shapes(config)
    names = {n for n in files if not n.endswith(_ROTARY_BUFFER)}
    if config.tie_word_embeddings:
        names.discard("lm_head.weight")  # some tied checkpoints store the head too; the embedding is used
    unexpected, missing = names - set(shapes), set(shapes) - names
    if unexpected:
        raise ValueError(f"{path}: unexpected tensor(s) {sorted(unexpected)[:5]} (not part of a LlamaForCausalLM "
                         f"with num_hidden_layers={config.n_layer}, tie_word_embeddings={config.tie_word_embeddings})")
    if missing:
        raise ValueError(f"{path}: missing tensor(s) {sorted(missing)[:5]}")
    model = Llama(config, dtype=dtype, init=False)
    for key in shapes:
        with SafetensorsFile(files[key]) as f:
            info = f.info(key)
            if info.dtype not in FLOAT_NAMES:
                raise ValueError(f"{files[key]}: tensor {key!r} has dtype {info.dtype}; expected F64, F32, F16 or BF16")
            if info.shape != shapes[key]:
                raise ValueError(f"{files[key]}: tensor {key!r} has shape {info.shape}, expected {shapes[key]} "
                                 f"for {CONFIG_NAME}")
            f.read_into(key, model.params[key])
    return model.eval()


def save_pretrained(model: Llama, path: str | os.PathLike[str]) -> None:
    """Write config.json and model.safetensors (HF names and layout, in the model's dtype) into `path`."""
    if not isinstance(model, Llama):
        raise ValueError(f"model: expected a Llama, got {type(model).__name__}")
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    save_safetensors(os.path.join(path, WEIGHTS_NAME), dict(model.params), metadata={"format": "pt"})
    text = json.dumps(config_to_hf(model.config, model.dtype), indent=2, sort_keys=True) + "\n"
    def write(fh: BinaryIO) -> None:
        fh.write(text.encode("utf-8"))

    atomic_write(os.path.join(path, CONFIG_NAME), write)
