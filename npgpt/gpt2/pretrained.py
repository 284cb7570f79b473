"""Hugging Face GPT-2 checkpoints: a directory with config.json and model.safetensors.

`model = from_pretrained("path/to/gpt2")` builds a GPT from the config and copies the weights in;
`save_pretrained(model, dir)` writes a directory that transformers' GPT2LMHeadModel.from_pretrained loads.
GPT-2's Conv1D stores weights (in, out), exactly npgpt's layout, so nothing is transposed.
Accepted names, dtypes and the errors: docs/checkpoints.md
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt

from .._checks import float_dtype, is_real
from .config import GPTConfig
from .model import GPT, param_shapes
from ..io.atomic import atomic_write
from ..io.safetensors import FLOAT_NAMES, SafetensorsFile, save_safetensors

CONFIG_NAME = "config.json"
MODEL_TYPES = ("gpt2",)  # the config.json model_type values this loader reads (families.py)
WEIGHTS_NAME = "model.safetensors"
PREFIX = "transformer."  # what GPT2LMHeadModel's state_dict puts before the GPT2Model names
# activation_function values that are all the tanh approximation npgpt computes
TANH_GELUS = ("gelu_new", "gelu_pytorch_tanh", "gelu_python_tanh", "gelu_fast", "gelu_accurate")
# GPT2Config's defaults, used (as transformers does) for keys a config.json leaves out
HF_DEFAULTS: dict[str, Any] = {
    "vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12, "n_head": 12, "n_inner": None,
    "activation_function": "gelu_new", "resid_pdrop": 0.1, "embd_pdrop": 0.1, "attn_pdrop": 0.1,
    "layer_norm_epsilon": 1e-5, "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
    "add_cross_attention": False, "tie_word_embeddings": True,
}
_MASK_BUFFER = re.compile(r"h\.(\d+)\.attn\.(bias|masked_bias)")  # attention-mask buffers, not parameters


def config_from_hf(d: Mapping[str, Any], where: str = CONFIG_NAME) -> GPTConfig:
    """GPTConfig from a Hugging Face GPT-2 config dict; refuse anything npgpt's model would compute differently.

    n_positions -> block_size; dropout = resid_pdrop (npgpt has one rate, for embeddings and residual
    branches, and no attention dropout).  Keys left out take GPT2Config's defaults; n_ctx is ignored.
    """
    def bad(msg: str) -> ValueError:
        return ValueError(f"{where}: {msg}")

    if not isinstance(d, Mapping):
        raise bad(f"expected a JSON object, got {type(d).__name__}")
    c = {**HF_DEFAULTS, **d}
    if d.get("model_type", "gpt2") != "gpt2":
        raise bad(f"model_type is {d['model_type']!r}, expected 'gpt2'")
    act = c["activation_function"]
    if act not in TANH_GELUS:
        raise bad(f"activation_function {act!r} is not supported: npgpt computes the tanh GELU "
                  f"({', '.join(TANH_GELUS)})")
    eps = c["layer_norm_epsilon"]
    if not is_real(eps) or eps != 1e-5:
        raise bad(f"layer_norm_epsilon is {eps!r}; npgpt's LayerNorm uses 1e-5")
    for key, want in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                      ("add_cross_attention", False), ("tie_word_embeddings", True)):
        if c[key] is not want:
            raise bad(f"{key} is {c[key]!r}; npgpt only supports {json.dumps(want)}")
    n_embd = c["n_embd"]
    if c["n_inner"] is not None and c["n_inner"] != (4 * n_embd if isinstance(n_embd, int) else None):
        raise bad(f"n_inner is {c['n_inner']!r}; npgpt's MLP width is 4 * n_embd")
    p = c["resid_pdrop"]
    if not is_real(p):
        raise bad(f"resid_pdrop must be a number, got {p!r}")
    try:
        return GPTConfig(vocab_size=c["vocab_size"], block_size=c["n_positions"], n_layer=c["n_layer"],
                         n_head=c["n_head"], n_embd=n_embd, dropout=float(p))
    except ValueError as e:  # GPTConfig's own field names; say which HF key it came from
        msg = str(e).replace("block_size:", "n_positions:").replace("dropout:", "resid_pdrop:")
        raise bad(msg) from None


def config_to_hf(config: GPTConfig, dtype: npt.DTypeLike = np.float32) -> dict[str, Any]:
    """The config.json transformers writes for a GPT2LMHeadModel of these shapes."""
    V = config.vocab_size
    eot = 50256 if V > 50256 else None  # GPT-2's <|endoftext|>, only when the vocabulary has it
    return {
        "activation_function": "gelu_new",
        "add_cross_attention": False,
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.0,  # npgpt never drops attention weights
        "bos_token_id": eot,
        "dtype": np.dtype(dtype).name,
        "embd_pdrop": config.dropout,
        "eos_token_id": eot,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "gpt2",
        "n_ctx": config.block_size,
        "n_embd": config.n_embd,
        "n_head": config.n_head,
        "n_inner": None,
        "n_layer": config.n_layer,
        "n_positions": config.block_size,
        "reorder_and_upcast_attn": False,
        "resid_pdrop": config.dropout,
        "scale_attn_by_inverse_layer_idx": False,
        "scale_attn_weights": True,
        "tie_word_embeddings": True,
        "use_cache": True,
        "vocab_size": V,
    }


def _read_config(path: str) -> GPTConfig:
    cfg_path = os.path.join(path, CONFIG_NAME)
    try:
        with open(cfg_path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ValueError(f"{path}: no {CONFIG_NAME} (expected a Hugging Face GPT-2 directory)") from None
    try:
        d = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{cfg_path}: not valid UTF-8 JSON ({type(e).__name__})") from None
    return config_from_hf(d, cfg_path)


def _weights_path(path: str) -> str:
    w = os.path.join(path, WEIGHTS_NAME)
    if os.path.isfile(w):
        return w
    others = sorted(f for f in os.listdir(path)
                    if f.endswith((".bin", ".index.json", ".safetensors", ".h5", ".msgpack")))
    hint = f" (found {', '.join(others)}; only a single {WEIGHTS_NAME} is supported)" if others else ""
    raise ValueError(f"{path}: no {WEIGHTS_NAME}{hint}")


def _sorted_names(names: set[str], limit: int = 5) -> str:
    s = sorted(names)
    return ", ".join(repr(n) for n in s[:limit]) + (f" and {len(s) - limit} more" if len(s) > limit else "")


def from_pretrained(path: str | os.PathLike[str], dtype: npt.DTypeLike = np.float32) -> GPT:
    """A GPT (in eval mode) from a Hugging Face GPT-2 directory: config.json + model.safetensors.

    Names may carry the `transformer.` prefix; a `lm_head.weight` must equal wte (npgpt's head is tied);
    the attention-mask buffers h.N.attn.bias (1, 1, n, n) and h.N.attn.masked_bias are ignored.  Any float
    dtype (F64/F32/F16/BF16) is converted to `dtype`.  Missing, unexpected or misshapen tensors, and NaN or
    inf in a weight (a damaged file), are errors.
    """
    path = os.fspath(path)
    dtype = float_dtype("dtype", dtype)
    if not os.path.isdir(path):
        raise ValueError(f"{path}: not a directory (expected config.json + {WEIGHTS_NAME})")
    config = _read_config(path)
    weights = _weights_path(path)
    shapes = param_shapes(config)
    with SafetensorsFile(weights) as f:  # the whole header is checked here
        def bad(msg: str) -> ValueError:
            return ValueError(f"{weights}: {msg}")

        found: dict[str, str] = {}  # npgpt name -> name in the file
        lm_head: str | None = None
        unexpected: set[str] = set()
        for name in f.keys():
            key = name[len(PREFIX):] if name.startswith(PREFIX) else name
            if name == "lm_head.weight":
                lm_head = name
                continue
            m = _MASK_BUFFER.fullmatch(key)
            if m and int(m.group(1)) < config.n_layer:
                _check_buffer(f, name, m.group(2), bad)
                continue
            if key not in shapes:
                unexpected.add(name)
                continue
            if key in found:
                raise bad(f"tensor {key!r} appears twice ({found[key]!r} and {name!r})")
            found[key] = name
        if unexpected:
            raise bad(f"unexpected tensor(s) {_sorted_names(unexpected)} (not part of a GPT-2 "
                      f"with n_layer={config.n_layer})")
        missing = set(shapes) - set(found)
        if missing:
            raise bad(f"missing tensor(s) {_sorted_names(missing)}")
        for key in shapes:  # npgpt's order (wte first), so the first problem reported is predictable
            name = found[key]
            info = f.info(name)
            if info.dtype not in FLOAT_NAMES:
                raise bad(f"tensor {name!r} has dtype {info.dtype}; parameters must be F64, F32, F16 or BF16")
            if info.shape != shapes[key]:
                hint = " (transposed? GPT-2's Conv1D stores (in, out))" if info.shape == shapes[key][::-1] \
                    else ""
                raise bad(f"tensor {name!r} has shape {info.shape}, expected {shapes[key]} for "
                          f"{CONFIG_NAME}{hint}")
        if lm_head is not None:
            info = f.info(lm_head)
            if info.shape != shapes["wte.weight"] or info.dtype not in FLOAT_NAMES:
                raise bad(f"tensor 'lm_head.weight' is {info.dtype} {info.shape}, expected a float tensor "
                          f"of shape {shapes['wte.weight']} equal to wte")
            # exact comparison of the stored values (mixed float dtypes promote exactly)
            if not np.array_equal(f.get(lm_head), f.get(found["wte.weight"]), equal_nan=True):
                raise bad("tensor 'lm_head.weight' differs from 'wte.weight'; npgpt's LM head is tied to the "
                          "token embedding, so an untied checkpoint cannot be loaded")
        model = GPT(config, dtype=dtype, init=False)  # every entry is overwritten below
        for key, name in found.items():
            f.read_into(name, model.params[key])  # views into the flat buffer, filled in place
            if not np.isfinite(model.params[key]).all():  # a trained model holds none: the file was damaged
                raise bad(f"tensor {name!r} holds non-finite values (NaN or inf); the file is damaged")
    return model.eval()


def _check_buffer(f: SafetensorsFile, name: str, kind: str, bad: Callable[[str], ValueError]) -> None:
    """The causal-mask buffers carry no learned values; only check they look like what they claim to be."""
    shape = f.info(name).shape
    if kind == "bias":
        ok = len(shape) == 4 and shape[:2] == (1, 1) and shape[2] == shape[3]
        want = "(1, 1, n, n)"
    else:
        ok = math.prod(shape) == 1
        want = "a single value"
    if not ok:
        raise bad(f"tensor {name!r} has shape {shape}; as an attention-mask buffer it should be {want}")


def save_pretrained(model: GPT, path: str | os.PathLike[str]) -> None:
    """Write config.json and model.safetensors (GPT-2 names, no prefix, no lm_head: it is tied) into `path`.

    The directory is created if needed; each file is written atomically (weights first, then config).
    Tensors are stored in the model's dtype (F32 or F64), exactly as held, so a reload is bit-exact.
    """
    if not isinstance(model, GPT):
        raise ValueError(f"model: expected a GPT, got {type(model).__name__}")
    path = os.fspath(path)
    os.makedirs(path, exist_ok=True)
    save_safetensors(os.path.join(path, WEIGHTS_NAME), dict(model.params), metadata={"format": "pt"})
    text = json.dumps(config_to_hf(model.config, model.dtype), indent=2, sort_keys=True) + "\n"

    def write_config(fh: BinaryIO) -> None:
        fh.write(text.encode("utf-8"))

    atomic_write(os.path.join(path, CONFIG_NAME), write_config)
