"""The Llama class: the functional core (core.py) around parameters in one buffer, keyed by HF's names.

`Llama(config)` has GPT's interface: `logits, loss = model.forward(idx, targets)`; `grads = model.backward()`;
params/grads are FlatTensors in one ParamLayout (so npgpt.optim.AdamW takes its vectorised path); generate().
Walkthrough: docs/llama.md
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from .._checks import float_dtype
from ..layout import FlatTensors, ParamLayout
from .config import LlamaConfig
from .core import LlamaCache, _llama_forward, check_inputs, init_params, llama_grads, param_shapes
from .generate import generate

Array = npt.NDArray[np.floating]


class Llama:
    """A Llama-style model: params in one buffer (keyed by HF's names), forward/backward through the core.

    The same interface as npgpt.GPT: `logits, loss = model.forward(idx, targets)`; `grads = model.backward()`;
    `model.params`, `model.flat_params`, `model.flat_grads` for npgpt.optim.AdamW; `model.generate(...)`.
    init=False leaves the parameters zero (for loaders that fill them).  See docs/llama.md.
    """

    def __init__(self, config: LlamaConfig, seed: int = 0, dtype: npt.DTypeLike = np.float32, *,
                 init: bool = True) -> None:
        if not isinstance(config, LlamaConfig):
            raise ValueError(f"config: expected a LlamaConfig, got {type(config).__name__}")
        dtype = float_dtype("dtype", dtype)
        self.config = config
        self.dtype = dtype
        self.layout = ParamLayout.matrices_first(param_shapes(config))  # matrices (decayed) first, then norms
        self.params: FlatTensors = self.layout.zeros(dtype)
        self.grads: FlatTensors = self.layout.zeros(dtype)
        self.flat_params, self.flat_grads = self.params.buffer, self.grads.buffer  # (P,) each
        if init:
            init_params(config, np.random.default_rng(seed), self.params)
        self.rng = np.random.default_rng(seed)  # draws nothing (no dropout); the training loop checkpoints it
        self.training = True
        self._cache: LlamaCache | None = None

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
        """logits (B, T, V) and the mean loss (None without targets); keeps the cache for backward()."""
        check_inputs(self.config, idx, targets)
        logits, loss, self._cache = _llama_forward(self.params, self.config, idx, targets)
        return logits, loss

    __call__ = forward

    def backward(self) -> FlatTensors:
        """Gradients of the last forward's loss, written into self.grads (views of self.flat_grads)."""
        if self._cache is None:
            raise ValueError("backward: call forward(idx, targets) first")
        cache, self._cache = self._cache, None  # drop our reference: activations are freed as we go
        for name, g in llama_grads(cache):
            self.grads[name][...] = g  # each gradient into the buffer as it is known, then dropped
        return self.grads

    def generate(self, idx: npt.NDArray[np.integer], max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 rng: np.random.Generator | None = None, use_cache: bool = True) -> npt.NDArray[np.int64]:
        """Append max_new_tokens sampled tokens to idx (B, T)."""
        return generate(self.params, self.config, idx, max_new_tokens, temperature=temperature, top_k=top_k,
                        top_p=top_p, rng=rng, use_cache=use_cache)
