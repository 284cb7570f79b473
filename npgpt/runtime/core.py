"""Core: what the runtime needs to know of a model family, as plain functions it takes as an argument.

A family's package (npgpt/gpt2, npgpt/llama) builds one Core from its functional core; the model class
(model.py), the batch slices (data_parallel.py) and the worker processes (slice_worker.py) call only these
fields, so nothing in runtime/ names a family.  Every field is a module-level function, so a Core pickles by
reference and a worker process rebuilds it by importing the family's module.  See docs/architecture.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, Protocol

import numpy as np


class ModelConfig(Protocol):
    """What every family's config has: the shapes the runtime, training and the CLI read."""

    @property
    def vocab_size(self) -> int: ...
    @property
    def block_size(self) -> int: ...
    @property
    def n_layer(self) -> int: ...
    @property
    def n_head(self) -> int: ...
    @property
    def n_embd(self) -> int: ...
    def to_dict(self) -> dict[str, Any]: ...


class Core(NamedTuple):
    """A family's functional core, as the runtime calls it."""

    name: str  # the family's registry name ("gpt2", "llama")
    config_class: Any  # the config dataclass this core reads (with from_dict / to_dict)
    param_shapes: Callable[[Any], dict[str, tuple[int, ...]]]  # config -> every parameter's name and shape
    init_params: Callable[[Any, np.random.Generator, Mapping[str, Any]], Any]  # (config, rng, out): fill out
    check_inputs: Callable[[Any, Any, Any], None]  # (config, idx, targets): one-line ValueError on bad input
    # (params, config, idx, targets, train, rng) -> (logits (B, T, V), mean loss or None, cache)
    forward: Callable[[Any, Any, Any, Any, bool, np.random.Generator | None], tuple[Any, Any, Any]]
    write_grads: Callable[[Any, Any, float], None]  # (out, cache, dloss): every gradient of dloss * loss into out
    ignore_index: int | None  # the target value the loss skips (None: it counts every target)
    # (params, config, idx, max_new_tokens, **sampling options) -> idx with the new tokens appended
    generate: Callable[..., Any]
    # cache -> the forward's side numbers a run reports (a mixture of experts' aux loss and expert shares), or
    # None; None: the family has none
    stats: Callable[[Any], dict[str, Any] | None] | None = None
