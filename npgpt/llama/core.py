"""The Llama family as plain functions, read top to bottom: parameter shapes, initialisation, forward, backward.

logits = rmsnorm(layers(embed_tokens[idx])) @ lm_head.T     (positions enter through RoPE inside attention)
`logits, loss, cache = llama_forward(params, config, idx, targets)`; `grads = llama_backward(cache)`.
No buffers, threads or optimizer here (the class is in model.py, generation in generate.py).
Walkthrough: docs/llama.md
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import token_ids
from ..layers.cross_entropy import CrossEntropyCache, _cross_entropy_backward, _cross_entropy_forward
from ..layers.embedding import EmbeddingCache, _embedding_backward, _embedding_forward
from ..layers.rmsnorm import RMSNormCache, _rmsnorm_backward, _rmsnorm_forward
from ..layers.rope import rope_inv_freq, rope_tables
from .block import LAYER_PARAM_NAMES, KVSlot, LlamaLayerCache, layer_param_shapes, llama_layer_backward, \
    llama_layer_forward
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


def layer_params(params: Params, i: int) -> dict[str, Array]:
    """Layer i's parameters, keyed by their names inside a layer."""
    return {name: params[f"model.layers.{i}.{name}"] for name in LAYER_PARAM_NAMES}


def head_weight(params: Params, config: LlamaConfig) -> Array:
    """The LM head's (V, C) weight: lm_head.weight, or the token embedding when tied."""
    return params["model.embed_tokens.weight" if config.tie_word_embeddings else "lm_head.weight"]


def check_inputs(config: LlamaConfig, idx: object, targets: object | None) -> None:
    """The checks of llama_forward's config, idx and targets (each error names its argument)."""
    if not isinstance(config, LlamaConfig):
        raise ValueError(f"config: expected a LlamaConfig, got {type(config).__name__}")
    idx = token_ids("idx", idx, config.vocab_size)
    B, T = idx.shape
    if not 1 <= T <= config.block_size:
        raise ValueError(f"idx: sequence length {T} must be between 1 and block_size={config.block_size}")
    if targets is not None:
        if not isinstance(targets, np.ndarray) or targets.shape != idx.shape:
            raise ValueError(f"targets: expected shape {idx.shape} (same as idx), got "
                             f"{getattr(targets, 'shape', type(targets).__name__)}")
        token_ids("targets", np.where(targets == IGNORE_INDEX, 0, targets), config.vocab_size)


def llama_forward(params: Params, config: LlamaConfig, idx: npt.NDArray[np.integer],
                  targets: npt.NDArray[np.integer] | None = None) -> tuple[Array, Array | None, LlamaCache]:
    """logits (B, T, V), mean cross-entropy over the targets that are not -100 (0-d, or None), and the cache.

    idx (B, T) ints in [0, V) with T <= block_size; targets (B, T) in [0, V) or -100.  See docs/llama.md.
    """
    check_inputs(config, idx, targets)
    return _llama_forward(params, config, idx, targets)


def _llama_forward(params: Params, config: LlamaConfig, idx: npt.NDArray[np.integer],
                   targets: npt.NDArray[np.integer] | None = None,
                   kv: list[KVSlot] | None = None, start: int = 0) -> tuple[Array, Array | None, LlamaCache]:
    """llama_forward without the argument checks.  kv (decoding, generate.py): one KVSlot per layer; idx are
    then the tokens at positions start .. start + T - 1, attending over the cached ones too."""
    B, T = idx.shape
    dtype = params["model.embed_tokens.weight"].dtype
    inv_freq = rope_inv_freq(config.head_size, config.rope_theta, config.rope_scaling)  # (D/2,) float64
    cos, sin = rope_tables(np.arange(start, start + T), inv_freq, dtype)  # (T, D/2) each, shared by every layer
    x, tok_cache = _embedding_forward(idx, params["model.embed_tokens.weight"])  # (B, T, C) no position vectors
    layer_caches = []
    for i in range(config.n_layer):
        slot = None if kv is None else kv[i]
        x, c = llama_layer_forward(x, layer_params(params, i), config, cos, sin, slot, start)  # (B, T, C)
        layer_caches.append(c)
    xf, norm_cache = _rmsnorm_forward(x, params["model.norm.weight"], float(config.rms_norm_eps), 0.0, "input")
    xf2 = xf.reshape(B * T, -1)  # (N, C)
    w_head = head_weight(params, config)  # (V, C)
    logits = (xf2 @ w_head.T).reshape(B, T, -1)  # (B, T, V) no bias
    loss, ce_cache = (None, None) if targets is None else \
        _cross_entropy_forward(logits, targets, ignore_index=IGNORE_INDEX)
    return logits, loss, LlamaCache(config, tok_cache, layer_caches, norm_cache, xf2, w_head, ce_cache)


def forward_for_runtime(params: Params, config: LlamaConfig, idx: npt.NDArray[np.integer],
                        targets: npt.NDArray[np.integer] | None, train: bool,
                        rng: np.random.Generator | None) -> tuple[Array, Array | None, LlamaCache]:
    """_llama_forward with the runtime's signature (runtime/core.py); the family has no dropout, so train and
    rng do not apply."""
    return _llama_forward(params, config, idx, targets)


def llama_grads(cache: LlamaCache, dloss: float = 1.0) -> Iterator[tuple[str, Array]]:
    """The backward, yielding (name, gradient of dloss * loss) for every parameter as soon as it is known:
    the head's and the final norm's first, the token embedding's last.  See docs/llama.md.
    """
    if cache.ce is None:
        raise ValueError("cache: the forward was run without targets, so there is no loss to differentiate")
    config = cache.config
    dlogits = _cross_entropy_backward(float(dloss), cache.ce)  # (B, T, V)
    B, T, V = dlogits.shape
    d2 = dlogits.reshape(-1, V)  # (N, V)
    dw_head = d2.T @ cache.xf  # (V, C) the head's weight gradient
    if not config.tie_word_embeddings:
        yield "lm_head.weight", dw_head
    dh: Array = (d2 @ cache.w_head).reshape(B, T, -1)  # (B, T, C)
    dx, dw_norm = _rmsnorm_backward(dh, cache.norm)  # (B, T, C)
    yield "model.norm.weight", dw_norm
    for i in reversed(range(config.n_layer)):
        dx, layer_grads = llama_layer_backward(dx, cache.layers[i])  # (B, T, C)
        for name, g in layer_grads.items():
            yield f"model.layers.{i}.{name}", g
    dwte = _embedding_backward(dx, cache.tok)  # (V, C)
    if config.tie_word_embeddings:
        dwte += dw_head  # tied: the lookup's and the head's gradients add
    yield "model.embed_tokens.weight", dwte


def _write_grads(out: Mapping[str, Array], cache: LlamaCache, dloss: float = 1.0) -> None:
    """Every gradient of llama_grads written into out (a gradient buffer's views), each as soon as it is known."""
    for name, g in llama_grads(cache, dloss):
        out[name][...] = g


def llama_backward(cache: LlamaCache, dloss: float = 1.0) -> dict[str, Array]:
    """Gradient of dloss * (the mean loss) with respect to every parameter, keyed and ordered like params."""
    grads = dict(llama_grads(cache, dloss))
    return {k: grads[k] for k in param_shapes(cache.config)}
