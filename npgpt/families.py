"""The model families by name: the one place that says which families exist and what each one brings.

A Family names its package's model class (whose Core the runtime runs), the Hugging Face model_types its
loader reads, its loader and writer, and how to size it for `npgpt train --arch`.  The training loop,
checkpoints, the CLI, eval and the oracle ask this registry; nothing else outside a family's own package names
a family.  A new family is its package plus one `Family(...)` entry in FAMILIES; a new --arch preset of an
existing family is one line of ARCHS.  Guide: docs/architecture.md ("Adding a family")
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from . import gpt2, llama
from .gpt2 import pretrained as gpt2_pretrained
from .layers.registry import PAIRS, Pair
from .gpt2.config import training_config as gpt2_training_config
from .llama import pretrained as llama_pretrained
from .llama.config import training_config as llama_training_config
from .runtime.core import Core
from .runtime.model import Model
from .tokenizers import Tokenizer, has_tokenizer_files, load_tokenizer, save_tokenizer
from .tokenizers.files import MERGES_NAME, TOKENIZER_JSON, VOCAB_NAME

CONFIG_NAME = "config.json"


@dataclass(frozen=True)
class Family:
    """What the rest of npgpt needs of one model family."""

    name: str  # the registry key, stored in checkpoints as "model_family"
    model_class: type[Model]  # its Model subclass; model_class.CORE is the functional core the runtime runs
    hf_model_types: tuple[str, ...]  # config.json model_type values its loader reads
    from_pretrained: Callable[..., Model]  # (directory, dtype=np.float32) -> model in eval mode
    save_pretrained: Callable[[Any, str | os.PathLike[str]], None]  # (model, directory)
    training_config: Callable[..., Any]  # (vocab_size=, block_size=, n_layer=, ..., **preset) -> config
    pairs: tuple[Pair, ...] = ()  # the family's own composite layer pairs (its block), beside layers.PAIRS

    @property
    def core(self) -> Core:
        return self.model_class.CORE

    @property
    def config_class(self) -> Any:
        return self.core.config_class


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("gpt2", gpt2.GPT, gpt2_pretrained.MODEL_TYPES, gpt2_pretrained.from_pretrained,
           gpt2_pretrained.save_pretrained, gpt2_training_config, gpt2.PAIRS),
    Family("llama", llama.Llama, llama_pretrained.MODEL_TYPES, llama_pretrained.from_pretrained,
           llama_pretrained.save_pretrained, llama_training_config, llama.PAIRS),
)}

# `npgpt train --arch NAME`: the family it builds and the config fields it fixes beyond the shared widths
ARCHS: dict[str, tuple[str, dict[str, Any]]] = {
    "gpt2": ("gpt2", {}),
    "llama": ("llama", {}),
    "qwen3": ("llama", {"style": "qwen3"}),  # per-head QK-norm
    "gemma3": ("llama", {"style": "gemma3"}),  # (1 + w) sandwich norms, QK-norm, GeGLU, 5 sliding : 1 global
    "olmo2": ("llama", {"style": "olmo2"}),  # post-norm, QK-norm over the whole projection
    "moe": ("llama", {"style": "moe"}),  # Mixtral's block: top-k of n_experts SwiGLU experts, load-balancing loss
}


def family(name: str) -> Family:
    """The family registered as `name`; one line listing the families otherwise."""
    if name not in FAMILIES:
        raise ValueError(f"model family: expected one of {', '.join(FAMILIES)}, got {name!r}")
    return FAMILIES[name]


def family_of(obj: object) -> Family:
    """The family of a config or a model."""
    config = obj.config if isinstance(obj, Model) else obj
    for f in FAMILIES.values():
        if isinstance(config, f.config_class):
            return f
    raise ValueError(f"config: expected the config of a registered family ({', '.join(FAMILIES)}), "
                     f"got {type(config).__name__}")


def model_types() -> dict[str, Family]:
    """Every Hugging Face model_type some family reads, and that family."""
    return {t: f for f in FAMILIES.values() for t in f.hf_model_types}


def read_model_type(path: str | os.PathLike[str]) -> str:
    """config.json's model_type in a Hugging Face directory (one-line errors for a missing or bad file)."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"{p}: no such file or directory (expected a Hugging Face model directory)")
    if not p.is_dir():
        raise ValueError(f"{p}: not a directory (expected a Hugging Face model directory with {CONFIG_NAME})")
    where = p / CONFIG_NAME
    try:
        d = json.loads(where.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{p}: no {CONFIG_NAME} (expected a Hugging Face model directory)") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise ValueError(f"{where}: not valid UTF-8 JSON ({type(e).__name__})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(d).__name__}")
    t = d.get("model_type")
    if not isinstance(t, str):
        raise ValueError(f"{where}: no model_type (expected one of {', '.join(model_types())})")
    return t


def hf_family(path: str | os.PathLike[str]) -> Family:
    """The family whose loader reads the Hugging Face directory at path (by config.json's model_type)."""
    t = read_model_type(path)
    found = model_types().get(t)
    if found is None:
        raise ValueError(f"{Path(path) / CONFIG_NAME}: model_type {t!r} is not supported (supported: "
                         f"{', '.join(sorted(model_types()))})")
    return found


def from_pretrained(path: str | os.PathLike[str], dtype: npt.DTypeLike = np.float32) -> Model:
    """The model (eval mode) in a Hugging Face directory, whichever registered family its model_type names."""
    return hf_family(path).from_pretrained(path, dtype=dtype)


def save_pretrained(model: Model, path: str | os.PathLike[str]) -> None:
    """Write model as a Hugging Face directory (config.json + model.safetensors) transformers loads back."""
    if not isinstance(model, Model):
        raise ValueError(f"model: expected an npgpt model, got {type(model).__name__}")
    family_of(model).save_pretrained(model, path)


def load_dir(path: str | os.PathLike[str], dtype: npt.DTypeLike = np.float32) -> tuple[Model, Tokenizer]:
    """The model and the tokenizer of a Hugging Face directory (what --init-from and `npgpt eval DIR` read).

    A directory without tokenizer files, or a tokenizer with more ids than the model's vocabulary: one line.
    """
    p = Path(path)
    fam = hf_family(p)  # the config first: "not a model directory" before "no tokenizer"
    if not has_tokenizer_files(p):
        raise ValueError(f"{p}: no tokenizer files (expected {TOKENIZER_JSON}, or {VOCAB_NAME} + {MERGES_NAME}, "
                         f"beside {CONFIG_NAME})")
    model = fam.from_pretrained(p, dtype=dtype)
    tok = load_tokenizer(p)
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f"{p}: the tokenizer has {tok.vocab_size} ids but the model's vocabulary is "
                         f"{model.config.vocab_size}")
    return model, tok


def save_dir(model: Model, tok: Any, path: str | os.PathLike[str]) -> None:
    """save_pretrained plus the tokenizer's files (vocab.json + merges.txt + tokenizer_config.json)."""
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f"tok: {tok.vocab_size} ids do not fit the model's vocabulary of {model.config.vocab_size}")
    save_pretrained(model, path)
    save_tokenizer(tok, path, model_max_length=model.config.block_size)


def arch_config(arch: str, vocab_size: int, widths: Mapping[str, Any]) -> Any:
    """The model config `npgpt train --arch ARCH` builds: the family's training_config from the run's widths
    (block_size, n_layer, n_head, n_embd, dropout, n_kv_head, intermediate_size) and the arch's preset."""
    if arch not in ARCHS:
        raise ValueError(f"arch: expected one of {', '.join(map(repr, ARCHS))}, got {arch!r}")
    name, preset = ARCHS[arch]
    return family(name).training_config(vocab_size=vocab_size, **widths, **preset)


def build_model(config: Any, seed: int = 0, dtype: npt.DTypeLike = np.float32, **kwargs: Any) -> Model:
    """A fresh model of config's family."""
    return family_of(config).model_class(config, seed=seed, dtype=dtype, **kwargs)


def param_count(config: Any) -> int:
    """The number of parameters a model of this config has (a tied head counted once)."""
    return sum(math.prod(s) for s in family_of(config).core.param_shapes(config).values())


def all_pairs() -> tuple[Pair, ...]:
    """Every layer pair: npgpt.layers' and each family's composite blocks (the seeded-error check runs these)."""
    return PAIRS + tuple(p for f in FAMILIES.values() for p in f.pairs)
