"""Model: one class for every family: a functional core (a Core) around parameters in one buffer.

`model = GPT(config)` (or `Llama(config)`, ...);  `logits, loss = model.forward(idx, targets)`;
`grads = model.backward()`.  params and grads are FlatTensors (views into one buffer each, laid out by one
ParamLayout), which is what AdamW's vectorised path takes.  With threads > 1 a model of up to SLICE_PARAMS
parameters cuts each batch into slices run in worker processes (data_parallel.py); a larger one runs the batch
whole with that many BLAS threads.  A family's class only names its Core.  Walkthrough: docs/model.md
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar, overload

import numpy as np
import numpy.typing as npt

from .._checks import float_dtype, integer
from .core import Core, ModelConfig
from .data_parallel import SliceGroup, model_backward, model_forward
from .layout import FlatTensors, ParamLayout
from .memory import reuse_freed_memory
from .parallel import default_threads

Array = npt.NDArray[np.floating]
M = TypeVar("M", bound="Model")

# Above this many parameters, threads > 1 means BLAS threads on the whole batch, not batch slices: each slice
# would hold a whole copy of the gradients, and the matrix products are big enough to split well by themselves.
SLICE_PARAMS = 40_000_000


class Model:
    """A model of one family (the subclass's CORE): params in one buffer, forward/backward through the core.

    init=False leaves the parameters zero (for loaders that fill them).  threads > 1 splits each batch across
    that many processes (data_parallel.py; above SLICE_PARAMS parameters, BLAS threads instead); the default is
    one per core in float32 and 1 in float64, so float64 results are exactly those of the functional core.
    `layout` places params, grads and AdamW's moments in their buffers (default: ParamLayout.matrices_first).
    """

    CORE: ClassVar[Core]
    config: ModelConfig

    def __init__(self, config: Any, seed: int = 0, dtype: npt.DTypeLike = np.float32, *,
                 init: bool = True, threads: int | None = None, layout: ParamLayout | None = None) -> None:
        core = self.CORE
        if not isinstance(config, core.config_class):
            raise ValueError(f"config: expected a {core.config_class.__name__}, got {type(config).__name__}")
        dtype = float_dtype("dtype", dtype)
        self.config = config
        self.dtype = dtype
        shapes = core.param_shapes(config)
        if layout is None:
            layout = ParamLayout.matrices_first(shapes)  # matrices (decayed) first, then vectors
        elif not isinstance(layout, ParamLayout) or dict(layout.shapes) != shapes:
            raise ValueError("layout: expected a ParamLayout of exactly the family's param_shapes(config)")
        self.layout = layout
        self.threads = integer("threads", threads if threads is not None else
                               (default_threads() if dtype == np.float32 else 1), minimum=1)
        # Every NumPy temporary is a malloc; keeping freed blocks for reuse spares the next step ~12,000 page
        # faults (a third of a small model's step).  The model owns this, so a user's own loop is as fast as train().
        reuse_freed_memory()
        # batch slices in worker processes, which read the params from a shared buffer; or one whole batch
        self._group = SliceGroup(core, config, layout, dtype) if self.threads > 1 and layout.size <= SLICE_PARAMS \
            else None
        # one contiguous buffer each for params and grads; the dicts hold views (AdamW runs on the buffers)
        self.params: FlatTensors = layout.zeros(dtype) if self._group is None else self._group.params
        self.grads: FlatTensors = layout.zeros(dtype)
        self.flat_params, self.flat_grads = self.params.buffer, self.grads.buffer  # (P,) each
        self.rng = np.random.default_rng(seed)  # dropout draws; seeded so runs repeat
        if init:  # loaders pass init=False: they overwrite every entry anyway
            core.init_params(config, np.random.default_rng(seed), self.params)
        self.training = True
        self._cache: tuple[Any, list[float]] | None = None  # slice 0's cache (workers keep theirs), shares
        self.last_stats: dict[str, Any] | None = None  # CORE.stats of the last forward
        if self._group is not None:
            weakref.finalize(self, self._group.close)

    def num_params(self) -> int:
        """Number of parameters (a tied head counted once)."""
        return int(self.flat_params.size)

    def train(self: M, mode: bool = True) -> M:
        self.training = mode
        return self

    def eval(self: M) -> M:
        return self.train(False)

    @overload
    def forward(self, idx: npt.NDArray[np.integer], targets: npt.NDArray[np.integer]) -> tuple[Array, Array]: ...
    @overload
    def forward(self, idx: npt.NDArray[np.integer], targets: None = None) -> tuple[Array, None]: ...

    def forward(self, idx: npt.NDArray[np.integer],
                targets: npt.NDArray[np.integer] | None = None) -> tuple[Array, Array | None]:
        """logits (B, T, V) and the mean loss (None without targets); keeps the cache for backward().

        With threads > 1 the batch is cut into slices run concurrently; the loss is their mean, weighted by the
        targets each slice counts (data_parallel.slice_shares).
        """
        self.CORE.check_inputs(self.config, idx, targets)  # once, with the whole batch's shapes
        self._cache = None  # the last step's activations go before this step's arrive
        # the core's forward on the whole batch, or on one slice per core at once
        logits, loss, cache, shares = model_forward(self.CORE, self._group, self.threads, self.params, self.config,
                                                    idx, targets, train=self.training, rng=self.rng)
        self._cache = (cache, shares)
        # the family's side numbers of this forward (slice 0's when sliced), e.g. an MoE's expert load
        self.last_stats = None if self.CORE.stats is None else self.CORE.stats(cache)
        return logits, loss

    __call__ = forward

    def backward(self) -> FlatTensors:
        """Gradients of the last forward's loss, written into self.grads (views of self.flat_grads)."""
        if self._cache is None:
            raise ValueError("backward: call forward(idx, targets) first")
        (cache, shares), self._cache = self._cache, None  # drop our reference: activations are freed as we go
        model_backward(self.CORE, self._group, self.threads, cache, shares, self.grads)  # per slice
        return self.grads

    def generate(self, idx: npt.NDArray[np.integer], max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 rng: np.random.Generator | None = None, use_cache: bool = True,
                 on_token: Callable[[npt.NDArray[np.int64]], object] | None = None,
                 vocab_limit: int | None = None) -> npt.NDArray[np.int64]:
        """Append max_new_tokens sampled tokens to idx (B, T) with the family's KV-cached decoder; on_token(ids
        (B,)) sees each step's new tokens as they are drawn; only ids below vocab_limit are drawn."""
        return self.CORE.generate(self.params, self.config, idx, max_new_tokens, temperature=temperature, top_k=top_k,
                                  top_p=top_p, rng=rng, use_cache=use_cache, on_token=on_token,
                                  vocab_limit=vocab_limit)
