"""The GPT class: the functional core (gpt.py) with its parameters in one buffer and the batch split over cores.

`model = GPT(config)`;  `logits, loss = model.forward(idx, targets)`;  `grads = model.backward()`.
The params and grads are FlatTensors (views into one buffer each, laid out by one ParamLayout), which is
what AdamW's vectorised path takes.  With threads > 1 a model of up to SLICE_PARAMS parameters cuts each
batch into slices run in worker processes (data_parallel.py); a larger one runs the batch whole with that many
BLAS threads.  The core's names are re-exported here for code that imported them from npgpt.model.
Walkthrough: docs/model.md
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from typing import overload

import numpy as np
import numpy.typing as npt

from ._checks import float_dtype, integer
from .config import GPTConfig
from .data_parallel import SliceGroup, model_backward, model_forward
from .generate import generate
from .gpt import GPTCache, check_inputs, gpt_backward, gpt_forward, gpt_grads, init_params, param_shapes
from .layout import FlatTensors, ParamLayout
from .parallel import default_threads

__all__ = ["GPT", "GPTCache", "gpt_forward", "gpt_backward", "gpt_grads", "init_params", "param_shapes",
           "buffer_order"]

Array = npt.NDArray[np.floating]

# Above this many parameters, threads > 1 means BLAS threads on the whole batch, not batch slices: each slice
# would hold a whole copy of the gradients, and the matrix products are big enough to split well by themselves.
SLICE_PARAMS = 40_000_000


def buffer_order(shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Deprecated: ParamLayout.matrices_first(shapes).order (the layout inside GPT's buffers)."""
    return list(ParamLayout.matrices_first(shapes).order)


class GPT:
    """A GPT-2-architecture model: params in one buffer, forward/backward through the functional core.

    init=False leaves the parameters zero (for loaders that fill them).  threads > 1 splits each batch across
    that many processes (data_parallel.py; above SLICE_PARAMS parameters, BLAS threads instead); the default is
    one per core in float32 and 1 in float64, so float64 results are exactly those of the functional core.
    `layout` places params, grads and AdamW's moments in their buffers (default: ParamLayout.matrices_first).

    `logits, loss = model.forward(idx, targets)`; `grads = model.backward()`.  See docs/model.md.
    """

    def __init__(self, config: GPTConfig, seed: int = 0, dtype: npt.DTypeLike = np.float32, *,
                 init: bool = True, threads: int | None = None, layout: ParamLayout | None = None) -> None:
        if not isinstance(config, GPTConfig):
            raise ValueError(f"config: expected a GPTConfig, got {type(config).__name__}")
        dtype = float_dtype("dtype", dtype)
        self.config = config
        self.dtype = dtype
        shapes = param_shapes(config)
        if layout is None:
            layout = ParamLayout.matrices_first(shapes)
        elif not isinstance(layout, ParamLayout) or dict(layout.shapes) != shapes:
            raise ValueError("layout: expected a ParamLayout of exactly param_shapes(config)")
        self.layout = layout
        self.threads = integer("threads", threads if threads is not None else
                               (default_threads() if dtype == np.float32 else 1), minimum=1)
        # batch slices in worker processes, which read the params from a shared buffer; or one whole batch
        self._group = SliceGroup(config, layout, dtype) if self.threads > 1 and layout.size <= SLICE_PARAMS \
            else None
        # one contiguous buffer each for params and grads; the dicts hold views (AdamW runs on the buffers)
        self.params: FlatTensors = layout.zeros(dtype) if self._group is None else self._group.params
        self.grads: FlatTensors = layout.zeros(dtype)
        self.flat_params, self.flat_grads = self.params.buffer, self.grads.buffer  # (P,) each
        self.rng = np.random.default_rng(seed)  # dropout draws; seeded so runs repeat
        if init:  # from_pretrained passes init=False: it overwrites every entry anyway
            init_params(config, np.random.default_rng(seed), self.params)
        self.training = True
        self._cache: tuple[GPTCache, list[float]] | None = None  # slice 0's cache (workers keep theirs), shares
        if self._group is not None:
            weakref.finalize(self, self._group.close)

    def num_params(self) -> int:
        """Number of parameters (the tied head counted once)."""
        return int(self.flat_params.size)

    def train(self, mode: bool = True) -> GPT:
        self.training = mode
        return self

    def eval(self) -> GPT:
        return self.train(False)

    @overload
    def forward(self, idx: npt.NDArray[np.integer], targets: npt.NDArray[np.integer]) -> tuple[Array, Array]: ...
    @overload
    def forward(self, idx: npt.NDArray[np.integer], targets: None = None) -> tuple[Array, None]: ...

    def forward(self, idx: npt.NDArray[np.integer],
                targets: npt.NDArray[np.integer] | None = None) -> tuple[Array, Array | None]:
        """logits (B, T, V) and the mean loss (None without targets); keeps the cache for backward().

        With threads > 1 the batch is cut into slices run concurrently; the loss is their size-weighted mean.
        """
        check_inputs(self.config, idx, targets)  # once, with the whole batch's shapes
        self._cache = None  # the last step's activations go before this step's arrive
        # the core's _gpt_forward on the whole batch, or on one slice per core at once
        logits, loss, cache, shares = model_forward(self._group, self.threads, self.params, self.config, idx,
                                                    targets, train=self.training, rng=self.rng)
        self._cache = (cache, shares)
        return logits, loss

    __call__ = forward

    def backward(self) -> FlatTensors:
        """Gradients of the last forward's loss, written into self.grads (views of self.flat_grads)."""
        if self._cache is None:
            raise ValueError("backward: call forward(idx, targets) first")
        (cache, shares), self._cache = self._cache, None  # drop our reference: activations are freed as we go
        model_backward(self._group, self.threads, cache, shares, self.grads)  # the core's _write_grads, per slice
        return self.grads

    def generate(self, idx: npt.NDArray[np.integer], max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 rng: np.random.Generator | None = None, use_cache: bool = True) -> npt.NDArray[np.int64]:
        """Append max_new_tokens sampled tokens to idx (B, T); see npgpt.generate.generate."""
        return generate(self.params, self.config, idx, max_new_tokens, temperature=temperature, top_k=top_k,
                        top_p=top_p, rng=rng, use_cache=use_cache)
