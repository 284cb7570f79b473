"""A Llama-style model chained from the layer pairs: a functional core and a small class around it.

logits = rmsnorm(layers(embed_tokens[idx])) @ lm_head.T     (positions enter through RoPE inside attention)
Functional: `logits, loss, cache = llama_forward(params, config, idx, targets)`; `grads = llama_backward(cache)`.
Class: `Llama(config)` owns params (views into one buffer, keyed by HF's names), its grads, and generate().
Walkthrough: docs/llama.md
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import token_ids
from ..flat import pack
from ..generate import check_sampling, sample_next
from ..layers.cross_entropy import CrossEntropyCache, _cross_entropy_backward, _cross_entropy_forward
from ..layers.embedding import EmbeddingCache, embedding_backward, embedding_forward
from ..layers.rmsnorm import RMSNormCache, _rmsnorm_backward, _rmsnorm_forward
from ..layers.rope import rope_inv_freq, rope_tables
from .block import (
    LAYER_PARAM_NAMES,
    KVSlot,
    LlamaLayerCache,
    layer_param_shapes,
    llama_layer_backward,
    llama_layer_forward,
)
from .config import LlamaConfig

Array = npt.NDArray[np.floating]
Params = Mapping[str, Array]

IGNORE_INDEX = -100  # targets equal to this are skipped by the loss (HF's convention)


def param_shapes(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape exactly as in a HF LlamaForCausalLM state dict (no lm_head when tied)."""
    V, C = config.vocab_size, config.n_embd
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (V, C)}
    layer = layer_param_shapes(config)
    for i in range(config.n_layer):
        shapes.update({f"model.layers.{i}.{name}": layer[name] for name in LAYER_PARAM_NAMES})
    shapes["model.norm.weight"] = (C,)
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (V, C)
    return shapes


def init_params(config: LlamaConfig, rng: np.random.Generator, out: Mapping[str, Array]) -> None:
    """HF's LlamaPreTrainedModel initialisation, written into `out`: every matrix ~ N(0, 0.02), RMSNorm weights 1."""
    for name, p in out.items():
        if name.endswith("norm.weight"):
            p[...] = 1.0
        else:
            p[...] = rng.normal(0.0, 0.02, size=p.shape)


class LlamaCache(NamedTuple):
    """Everything llama_backward needs, layer by layer."""

    config: LlamaConfig
    tok: EmbeddingCache  # token ids, for the scatter-add into embed_tokens
    layers: list[LlamaLayerCache]
    norm: RMSNormCache
    xf: Array  # (N, C) the final norm's output: the LM head's input
    w_head: Array  # (V, C) lm_head.weight, or embed_tokens.weight when tied
    ce: CrossEntropyCache | None  # None when no targets were given


def _layer_params(params: Params, i: int) -> dict[str, Array]:
    return {name: params[f"model.layers.{i}.{name}"] for name in LAYER_PARAM_NAMES}


def _head(params: Params, config: LlamaConfig) -> Array:
    return params["model.embed_tokens.weight" if config.tie_word_embeddings else "lm_head.weight"]


def llama_forward(params: Params, config: LlamaConfig, idx: npt.NDArray[np.integer],
                  targets: npt.NDArray[np.integer] | None = None) -> tuple[Array, Array | None, LlamaCache]:
    """logits (B, T, V), mean cross-entropy over the targets that are not -100 (0-d, or None), and the cache.

    idx (B, T) ints in [0, V) with T <= block_size; targets (B, T) in [0, V) or -100.  See docs/llama.md.
    """
    token_ids("idx", idx, config.vocab_size)
    B, T = idx.shape
    if not 1 <= T <= config.block_size:
        raise ValueError(f"idx: sequence length {T} must be between 1 and block_size={config.block_size}")
    if targets is not None:
        if not isinstance(targets, np.ndarray) or targets.shape != idx.shape:
            raise ValueError(f"targets: expected shape {idx.shape} (same as idx), got "
                             f"{getattr(targets, 'shape', type(targets).__name__)}")
        token_ids("targets", np.where(targets == IGNORE_INDEX, 0, targets), config.vocab_size)
    dtype = params["model.embed_tokens.weight"].dtype
    cos, sin = rope_tables(np.arange(T), rope_inv_freq(config.head_size, config.rope_theta, config.rope_scaling),
                           dtype)  # (T, D/2) each, shared by every layer
    x, tok_cache = embedding_forward(idx, params["model.embed_tokens.weight"])  # (B, T, C) no position vectors
    layer_caches = []
    for i in range(config.n_layer):
        x, c = llama_layer_forward(x, _layer_params(params, i), config, cos, sin)  # (B, T, C)
        layer_caches.append(c)
    xf, norm_cache = _rmsnorm_forward(x, params["model.norm.weight"], float(config.rms_norm_eps), 0.0, "input")
    xf2 = xf.reshape(B * T, -1)  # (N, C)
    w_head = _head(params, config)  # (V, C)
    logits = (xf2 @ w_head.T).reshape(B, T, -1)  # (B, T, V) no bias
    loss, ce_cache = (None, None) if targets is None else \
        _cross_entropy_forward(logits, targets, ignore_index=IGNORE_INDEX)
    return logits, loss, LlamaCache(config, tok_cache, layer_caches, norm_cache, xf2, w_head, ce_cache)


def llama_backward(cache: LlamaCache, dloss: float = 1.0) -> dict[str, Array]:
    """Gradient of dloss * (the mean loss) with respect to every parameter, keyed like params.

    See docs/llama.md for where each gradient comes from.
    """
    if cache.ce is None:
        raise ValueError("cache: the forward was run without targets, so there is no loss to differentiate")
    config = cache.config
    grads: dict[str, Array] = {}
    dlogits = _cross_entropy_backward(float(dloss), cache.ce)  # (B, T, V)
    B, T, V = dlogits.shape
    d2 = dlogits.reshape(-1, V)  # (N, V)
    dw_head = d2.T @ cache.xf  # (V, C)
    dh: Array = (d2 @ cache.w_head).reshape(B, T, -1)  # (B, T, C)
    dx, grads["model.norm.weight"] = _rmsnorm_backward(dh, cache.norm)
    for i in reversed(range(config.n_layer)):
        dx, layer_grads = llama_layer_backward(dx, cache.layers[i])  # (B, T, C)
        for name, g in layer_grads.items():
            grads[f"model.layers.{i}.{name}"] = g
    dwte = embedding_backward(dx, cache.tok)  # (V, C)
    if config.tie_word_embeddings:
        dwte += dw_head  # tied: the lookup's and the head's gradients add
    else:
        grads["lm_head.weight"] = dw_head
    grads["model.embed_tokens.weight"] = dwte
    return {k: grads[k] for k in param_shapes(config)}


def buffer_order(shapes: Mapping[str, tuple[int, ...]]) -> list[str]:
    """Layout inside the flat buffer: the 2-D matrices (weight-decayed by AdamW) first, then the norm weights."""
    return [k for k in shapes if len(shapes[k]) == 2] + [k for k in shapes if len(shapes[k]) != 2]


class LlamaKVCache:
    """Per-layer preallocated rotated keys and values for batch B, up to block_size positions."""

    def __init__(self, config: LlamaConfig, batch: int, dtype: np.dtype) -> None:
        shape = (batch, config.n_kv_head, config.block_size, config.head_size)
        self.slots = [KVSlot(np.zeros(shape, dtype), np.zeros(shape, dtype)) for _ in range(config.n_layer)]
        self.length = 0  # positions filled


def forward_cached(params: Params, config: LlamaConfig, idx: npt.NDArray[np.integer], kv: LlamaKVCache) -> Array:
    """Logits (B, T, V) of T new tokens at positions kv.length .. kv.length + T - 1, attending over the cache.

    Runs the same layer function as training, with the cache as the attention's extra keys and values.
    """
    T = idx.shape[1]
    start = kv.length
    if start + T > config.block_size:
        raise ValueError(f"idx: {start} cached + {T} new positions exceed block_size={config.block_size}")
    dtype = params["model.embed_tokens.weight"].dtype
    inv_freq = rope_inv_freq(config.head_size, config.rope_theta, config.rope_scaling)
    cos, sin = rope_tables(np.arange(start, start + T), inv_freq, dtype)  # (T, D/2) the new positions
    x, _ = embedding_forward(idx, params["model.embed_tokens.weight"])  # (B, T, C)
    for i in range(config.n_layer):
        x, _ = llama_layer_forward(x, _layer_params(params, i), config, cos, sin, kv.slots[i], start)  # (B, T, C)
    kv.length = start + T
    xf, _ = _rmsnorm_forward(x, params["model.norm.weight"], float(config.rms_norm_eps), 0.0, "input")  # (B, T, C)
    return xf @ _head(params, config).T  # (B, T, V)


def generate(params: Params, config: LlamaConfig, idx: npt.NDArray[np.integer], max_new_tokens: int,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             rng: np.random.Generator | None = None, use_cache: bool = True) -> npt.NDArray[np.int64]:
    """Append max_new_tokens tokens to idx (B, T); KV-cached by default (same logits as full forwards)."""
    token_ids("idx", idx, config.vocab_size)
    if idx.shape[1] < 1:
        raise ValueError("idx: expected a prompt of at least one token")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, (int, np.integer)) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens: expected a non-negative integer, got {max_new_tokens!r}")
    check_sampling(temperature, top_k, top_p)
    seq = idx.astype(np.int64)
    dtype = params["model.embed_tokens.weight"].dtype
    kv: LlamaKVCache | None = None
    for _ in range(max_new_tokens):
        window = seq[:, -config.block_size:]  # (B, <= block_size) what the model can see
        if not use_cache:
            logits, _, _ = llama_forward(params, config, window)  # (B, T, V)
        elif kv is None or kv.length != window.shape[1] - 1:
            kv = LlamaKVCache(config, seq.shape[0], dtype)  # (re)fill: first step, or the window slid
            logits = forward_cached(params, config, window, kv)
        else:
            logits = forward_cached(params, config, window[:, -1:], kv)  # one new position
        nxt = sample_next(logits[:, -1], temperature, top_k, top_p, rng)  # (B,)
        seq = np.concatenate([seq, nxt[:, None]], axis=1)
    return seq


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
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ValueError(f"dtype: expected float32 or float64, got {dtype}")
        self.config = config
        self.dtype = dtype
        shapes = param_shapes(config)
        order = buffer_order(shapes)
        self.flat_params, self.params = pack(shapes, dtype, order)
        self.flat_grads, self.grads = pack(shapes, dtype, order)
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
        logits, loss, self._cache = llama_forward(self.params, self.config, idx, targets)
        return logits, loss

    __call__ = forward

    def backward(self) -> dict[str, Array]:
        """Gradients of the last forward's loss, written into self.grads (views of self.flat_grads)."""
        if self._cache is None:
            raise ValueError("backward: call forward(idx, targets) first")
        cache, self._cache = self._cache, None
        for name, g in llama_backward(cache).items():
            self.grads[name][...] = g
        return self.grads

    def generate(self, idx: npt.NDArray[np.integer], max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, top_p: float | None = None,
                 rng: np.random.Generator | None = None, use_cache: bool = True) -> npt.NDArray[np.int64]:
        """Append max_new_tokens sampled tokens to idx (B, T)."""
        return generate(self.params, self.config, idx, max_new_tokens, temperature=temperature, top_k=top_k,
                        top_p=top_p, rng=rng, use_cache=use_cache)
