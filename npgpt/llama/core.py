"""The Llama family as plain functions, read top to bottom: parameter shapes, initialisation, forward, backward.

logits = rmsnorm(layers(embed_tokens[idx])) @ lm_head.T     (positions enter through RoPE inside attention)
The later families' model-level variants are config fields: the embeddings' multiplier (Gemma's sqrt(C),
Granite's), the final norm's kind, a bias on the LM head (Phi-2), a final logit softcap (Gemma 2/3) and
Granite's logits_scaling; per-layer RoPE tables (Gemma 3's local base, SmolLM3's layers without RoPE).
With a mixture of experts (config.moe_family) and output_router_logits, the loss adds router_aux_loss_coef
times the load-balancing loss over every sparse layer's router logits, as MixtralForCausalLM does.
`logits, loss, cache = llama_forward(params, config, idx, targets)`; `grads = llama_backward(cache)`.
No buffers, threads or optimizer here (the class is in model.py, generation in generate.py).
Walkthrough: docs/llama.md
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import token_batch
from ..layers.cross_entropy import CrossEntropyCache, _cross_entropy_backward, _cross_entropy_forward
from ..layers.load_balancing_loss import LoadBalancingCache, _load_balancing_loss_backward, \
    _load_balancing_loss_forward
from ..layers.moe import MoECache
from ..layers.moe_grouped import MoEGroupedCache
from ..layers.embedding import EmbeddingCache, _embedding_backward, _embedding_forward
from ..layers.rope import rope_frequencies, rope_tables
from ..layers.softcap import SoftcapCache, _softcap_backward, _softcap_forward
from .block import KVSlot, LlamaLayerCache, NormCache, _norm_backward, _norm_forward, layer_param_shapes, \
    llama_layer_backward, llama_layer_forward
from .config import LlamaConfig

Array = npt.NDArray[np.floating]
Params = Mapping[str, Array]

IGNORE_INDEX = -100  # targets equal to this are skipped by the loss (HF's convention)


def param_shapes(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter's canonical name and shape: a HF LlamaForCausalLM state dict's for Llama (no lm_head.weight
    when tied); the variants add biases, QK-norms, sinks and their norms under the same naming."""
    V, C = config.vocab_size, config.n_embd
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (V, C)}
    for i in range(config.n_layer):  # the layers differ only in a sparse layer's MLP slot
        shapes.update({f"model.layers.{i}.{name}": shape for name, shape in layer_param_shapes(config, i).items()})
    shapes["model.norm.weight"] = (C,)
    if config.norm_bias:
        shapes["model.norm.bias"] = (C,)
    if not config.tie_word_embeddings:
        shapes["lm_head.weight"] = (V, C)
    if config.lm_head_bias:
        shapes["lm_head.bias"] = (V,)
    return shapes


def init_params(config: LlamaConfig, rng: np.random.Generator, out: Mapping[str, Array]) -> None:
    """HF's LlamaPreTrainedModel initialisation, written into `out`: every matrix ~ N(0, 0.02), norm weights
    scaling by 1 (w = 1, or 0 under Gemma's 1 + w), biases 0; attention sinks ~ N(0, 0.02) as gpt-oss's."""
    for name, p in out.items():
        if name.endswith("norm.weight"):
            p[...] = 1.0 - config.norm_offset
        elif name.endswith(".bias"):
            p[...] = 0.0
        else:
            p[...] = rng.normal(0.0, 0.02, size=p.shape)


class LlamaCache(NamedTuple):
    """Everything llama_backward needs, layer by layer."""

    config: LlamaConfig
    tok: EmbeddingCache  # token ids, for the scatter-add into embed_tokens
    layers: list[LlamaLayerCache]
    norm: NormCache
    xf: Array  # (N, C) the final norm's output: the LM head's input
    w_head: Array  # (V, C) lm_head.weight, or embed_tokens.weight when tied
    softcap: SoftcapCache | None  # the final logit softcap's, when config.final_logit_softcapping
    ce: CrossEntropyCache | None  # None when no targets were given
    aux: LoadBalancingCache | None = None  # the load-balancing loss's, when config.aux_loss_on and targets given
    aux_loss: Array | None = None  # () that loss before its coefficient (reported by training), or None


def layer_params(params: Params, i: int, config: LlamaConfig) -> dict[str, Array]:
    """Layer i's parameters, keyed by their names inside a layer."""
    return {name: params[f"model.layers.{i}.{name}"] for name in layer_param_shapes(config, i)}


def layer_tables(config: LlamaConfig, start: int, T: int, dtype: npt.DTypeLike) -> list[tuple[Array, Array] | None]:
    """Per layer, the RoPE (cos, sin) tables (T, R/2) of positions start .. start + T - 1, or None for a layer
    without RoPE (SmolLM3).  Layers share the tables of one base: rope_theta with rope_scaling, or Gemma 3's
    rope_local_theta (unscaled) in its sliding-window layers.  Angles in float64, rounded once to dtype."""
    positions = np.arange(start, start + T)  # (T,)
    R = config.rotary_dim
    made: dict[bool, tuple[Array, Array]] = {}
    out: list[tuple[Array, Array] | None] = []
    for i in range(config.n_layer):
        if not config.layer_rope(i):
            out.append(None)
            continue
        local = config.rope_local_theta is not None and config.layer_window(i) is not None
        if local not in made:
            theta = config.rope_local_theta if local and config.rope_local_theta is not None else config.rope_theta
            scaling = None if local else config.rope_scaling
            inv_freq, factor = rope_frequencies(R, theta, scaling, seq_len=start + T,
                                                max_position_embeddings=config.block_size)  # (R/2,) float64
            made[local] = rope_tables(positions, inv_freq, dtype, factor)  # (T, R/2) each
        out.append(made[local])
    return out


def head_weight(params: Params, config: LlamaConfig) -> Array:
    """The LM head's (V, C) weight: lm_head.weight, or the token embedding when tied."""
    return params["model.embed_tokens.weight" if config.tie_word_embeddings else "lm_head.weight"]


def check_inputs(config: LlamaConfig, idx: object, targets: object | None) -> None:
    """The checks of the forward's config, idx and targets (each error names its argument)."""
    if not isinstance(config, LlamaConfig):
        raise ValueError(f"config: expected a LlamaConfig, got {type(config).__name__}")
    token_batch(idx, targets, config.vocab_size, config.block_size, IGNORE_INDEX)


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
    tables = layer_tables(config, start, T, dtype)  # per layer (cos, sin) (T, R/2) each, or None; shared
    x, tok_cache = _embedding_forward(idx, params["model.embed_tokens.weight"])  # (B, T, C) no position vectors
    if config.embedding_multiplier != 1.0:
        x *= config.embedding_multiplier  # Gemma's sqrt(C), rounded to x's dtype as HF does; Granite's
    layer_caches = []
    for i in range(config.n_layer):
        slot = None if kv is None else kv[i]
        cos, sin = tables[i] or (None, None)
        x, c = llama_layer_forward(x, layer_params(params, i, config), config, cos, sin, slot, start,
                                   config.layer_window(i), i)  # (B, T, C)
        layer_caches.append(c)
    xf, norm_cache = _norm_forward(x, params, "model.norm", config)  # (B, T, C)
    assert norm_cache is not None
    xf2 = xf.reshape(B * T, -1)  # (N, C)
    w_head = head_weight(params, config)  # (V, C)
    logits2 = xf2 @ w_head.T  # (N, V)
    if config.lm_head_bias:
        logits2 += params["lm_head.bias"]  # (V,) Phi-2
    logits = logits2.reshape(B, T, -1)  # (B, T, V)
    if config.logits_scaling != 1.0:
        logits /= config.logits_scaling  # Granite divides the logits
    cap = None
    if config.final_logit_softcapping is not None:  # Gemma 2/3: c tanh(logits / c)
        logits, cap = _softcap_forward(logits, float(config.final_logit_softcapping))  # (B, T, V)
    loss, ce_cache = (None, None) if targets is None else \
        _cross_entropy_forward(logits, targets, ignore_index=IGNORE_INDEX)
    aux_cache = aux_loss = None
    if loss is not None and config.aux_loss_on:  # MixtralForCausalLM: every sparse layer's rows, no mask
        z = np.stack([c.router_logits for c in layer_caches if c.router_logits is not None])  # (L_moe, N, E)
        aux_loss, aux_cache = _load_balancing_loss_forward(z, config.num_experts_per_tok, None)  # ()
        loss = np.asarray(loss + config.router_aux_loss_coef * aux_loss)  # () coefficient 0: aux still reported
    return logits, loss, LlamaCache(config, tok_cache, layer_caches, norm_cache, xf2, w_head, cap, ce_cache,
                                    aux_cache, aux_loss)


def router_stats(cache: LlamaCache) -> dict[str, object] | None:
    """A mixture of experts' load in this forward: {"aux_loss": the load-balancing loss before its coefficient
    (None when not computed), "expert_share": (E,) each expert's share of the (token, choice) routings over
    every sparse layer, summing to 1}; None for a dense model."""
    indices = [c.mlp.indices for c in cache.layers if isinstance(c.mlp, (MoECache, MoEGroupedCache))]  # (N, K)
    if not indices:
        return None
    counts = np.bincount(np.concatenate([i.reshape(-1) for i in indices]), minlength=cache.config.num_experts)
    share = counts / counts.sum()  # (E,)
    return {"aux_loss": None if cache.aux_loss is None else float(cache.aux_loss), "expert_share": share}


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
    if cache.softcap is not None:
        dlogits = _softcap_backward(dlogits, cache.softcap)  # (B, T, V) times 1 - tanh^2
    if config.logits_scaling != 1.0:
        dlogits /= config.logits_scaling  # (B, T, V)
    B, T, V = dlogits.shape
    d2 = dlogits.reshape(-1, V)  # (N, V)
    dw_head = d2.T @ cache.xf  # (V, C) the head's weight gradient
    if not config.tie_word_embeddings:
        yield "lm_head.weight", dw_head
    if config.lm_head_bias:
        yield "lm_head.bias", d2.sum(axis=0)  # (V,)
    dh: Array = (d2 @ cache.w_head).reshape(B, T, -1)  # (B, T, C)
    norm_grads: dict[str, Array] = {}
    dx = _norm_backward(dh, cache.norm, "model.norm", norm_grads)  # (B, T, C)
    yield "model.norm.weight", norm_grads["model.norm.weight"]
    if config.norm_bias:
        yield "model.norm.bias", norm_grads["model.norm.bias"]
    dz = None  # (L_moe, N, E) the load-balancing loss's gradient at each sparse layer's router logits
    if cache.aux is not None:
        dz = _load_balancing_loss_backward(float(dloss) * config.router_aux_loss_coef, cache.aux)
    moe_index = {layer: j for j, layer in enumerate(config.moe_layers)}
    for i in reversed(range(config.n_layer)):
        dzi = None if dz is None or i not in moe_index else dz[moe_index[i]]  # (N, E) or None
        dx, layer_grads = llama_layer_backward(dx, cache.layers[i], dzi)  # (B, T, C)
        for name, g in layer_grads.items():
            yield f"model.layers.{i}.{name}", g
    if config.embedding_multiplier != 1.0:
        dx *= config.embedding_multiplier  # (B, T, C) the same rounded multiplier as the forward's
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
