"""The Llama class: the functional core (core.py) around parameters in one buffer, keyed by HF's names.

`Llama(config)` has GPT's interface: `logits, loss = model.forward(idx, targets)`; `grads = model.backward()`;
params/grads are FlatTensors in one ParamLayout (so npgpt.optim.AdamW takes its vectorised path); generate().
With threads > 1 it cuts each batch into slices run in worker processes, as GPT does (data_parallel.py).
Walkthrough: docs/llama.md
"""

from __future__ import annotations

import weakref

import numpy as np
import numpy.typing as npt

from .._checks import float_dtype, integer
from ..data_parallel import SliceGroup, model_backward, model_forward
from ..layout import FlatTensors, ParamLayout
from ..model import SLICE_PARAMS
from ..parallel import default_threads
from .config import LlamaConfig
from .core import LlamaCache, check_inputs, init_params, param_shapes
from .generate import generate

Array = npt.NDArray[np.floating]


class Llama:
    """A Llama-style model: params in one buffer (keyed by HF's names), forward/backward through the core.

    The same interface as npgpt.GPT: `logits, loss = model.forward(idx, targets)`; `grads = model.backward()`;
    `model.params`, `model.flat_params`, `model.flat_grads` for npgpt.optim.AdamW; `model.generate(...)`.
    init=False leaves the parameters zero (for loaders that fill them).  threads as GPT's: batch slices in
    worker processes (BLAS threads above SLICE_PARAMS parameters); one per core in float32, 1 in float64.
    See docs/llama.md.
    """

    def __init__(self, config: LlamaConfig, seed: int = 0, dtype: npt.DTypeLike = np.float32, *,
                 init: bool = True, threads: int | None = None) -> None:
        if not isinstance(config, LlamaConfig):
            raise ValueError(f"config: expected a LlamaConfig, got {type(config).__name__}")
        dtype = float_dtype("dtype", dtype)
        self.config = config
        self.dtype = dtype
        self.layout = ParamLayout.matrices_first(param_shapes(config))  # matrices (decayed) first, then norms
        self.threads = integer("threads", threads if threads is not None else
                               (default_threads() if dtype == np.float32 else 1), minimum=1)
        # batch slices in worker processes, which read the params from a shared buffer; or one whole batch
        self._group = SliceGroup(config, self.layout, dtype) \
            if self.threads > 1 and self.layout.size <= SLICE_PARAMS else None
        self.params: FlatTensors = self.layout.zeros(dtype) if self._group is None else self._group.params
        self.grads: FlatTensors = self.layout.zeros(dtype)
        self.flat_params, self.flat_grads = self.params.buffer, self.grads.buffer  # (P,) each
        if init:
            init_params(config, np.random.default_rng(seed), self.params)
        self.rng = np.random.default_rng(seed)  # draws nothing (no dropout); the training loop checkpoints it
        self.training = True
        self._cache: tuple[LlamaCache, list[float]] | None = None  # slice 0's cache (workers keep theirs), shares
        if self._group is not None:
            weakref.finalize(self, self._group.close)

    def num_params(self) -> int:
        """Number of parameters (a tied head counted once)."""
        return int(self.flat_params.size)

    def train(self, mode: bool = True) -> Llama:
        self.training = mode  # no dropout in Llama: kept for the GPT interface
        return self

    def eval(self) -> Llama:
        return self.train(False)

    def forward(self, idx: npt.NDArray[np.integer],
                targets: npt.NDArray[np.integer] | None = None) -> tuple[Array, Array | None]:
        """logits (B, T, V) and the mean loss (None without targets); keeps the cache for backward().

        With threads > 1 the batch is cut into slices run concurrently; the loss is their mean, weighted by
        the targets each slice counts (data_parallel.slice_shares)."""
        check_inputs(self.config, idx, targets)  # once, with the whole batch's shapes
        self._cache = None  # the last step's activations go before this step's arrive
        # the core's _llama_forward on the whole batch, or on one slice per core at once
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
        """Append max_new_tokens sampled tokens to idx (B, T)."""
        return generate(self.params, self.config, idx, max_new_tokens, temperature=temperature, top_k=top_k,
                        top_p=top_p, rng=rng, use_cache=use_cache)
