"""One decoder layer of the configurable decoder.  With LlamaConfig's defaults it is one Llama layer:

    x1  = x + o_proj(attn(rope(q), rope(k), v)),   q, k, v = q_proj, k_proj, v_proj of rmsnorm(x)
    out = x1 + mlp(rmsnorm(x1)),                   mlp(h) = down_proj(silu(gate_proj(h)) * up_proj(h))

with grouped-query attention (query head h reads kv head h // (Hq / Hkv)).  The families after Llama change
it through config fields (config.py), each a short commented branch here: which norms sit where (NORM_SLOTS:
OLMo 2's post-norm, Gemma 2/3's sandwich, the parallel block of GPT-NeoX, Phi-2 and Falcon), LayerNorm or
Gemma's (1 + w) RMSNorm, QK-norm, biases, partial / per-layer / no RoPE, a sliding window, the attention's
softcap, sinks and scale, Granite's residual multiplier, a plain (ungated) MLP, and a sparse mixture of
experts in the MLP slot (moe_family: Mixtral, Qwen2-MoE, Qwen3-MoE; layers/moe_grouped.py's pair).

Parameters come in a mapping keyed by HF's names inside a layer ('self_attn.q_proj.weight', ...; the canonical
names of layer_param_shapes), matrices in nn.Linear's (out, in) layout.  Forward x (B, T, C) -> out (B, T, C);
backward dout -> dx and a dict of gradients.  Walkthrough: docs/llama.md; the variants: docs/families.md.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from ..layers.attention_chunks import AttentionChunksCache, _attention_chunks_backward, _attention_chunks_forward
from ..layers.gated_mlp import GatedMLPCache, _gated_mlp_backward, _gated_mlp_forward
from ..layers.gelu import GeluCache, _gelu_backward, _gelu_forward
from ..layers.layernorm import LayerNormCache, _layernorm_backward, _layernorm_forward
from ..layers.moe import MoECache, MoESpec, _moe_backward, _moe_forward, moe_param_shapes, moe_spec
from ..layers.moe_grouped import MoEGroupedCache, _moe_grouped_backward, _moe_grouped_forward
from ..layers.merge_heads import MergeHeadsCache, _merge_heads_backward, _merge_heads_forward
from ..layers.rmsnorm import RMSNormCache, _rmsnorm_backward, _rmsnorm_forward
from ..layers.rope import RopeCache, _rope_backward, _rope_forward
from ..layers.sdpa import SdpaCache, SdpaOptions, _sdpa_backward, _sdpa_forward
from ..layers.self_attention import QUERY_CHUNK
from ..layers.split_heads import SplitHeadsCache, _split_heads_backward, _split_heads_forward
from ..layers.swiglu import SwiGLUCache, _swiglu_backward, _swiglu_forward
from .config import LlamaConfig

Array = npt.NDArray[np.floating]
NormCache = RMSNormCache | LayerNormCache

LAYER_PARAM_NAMES = (  # plain Llama's layer parameters (layer_param_shapes gives any config's)
    "input_layernorm.weight",
    "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
    "post_attention_layernorm.weight",
    "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
)


class NormSlots(NamedTuple):
    """Which norm (a parameter prefix) sits at each of the layer's four places; None = no norm there."""

    attn_in: str | None  # normalises the attention's input
    attn_out: str | None  # normalises the attention's output, before its residual add
    mlp_in: str | None  # normalises the MLP's input
    mlp_out: str | None  # normalises the MLP's output, before its residual add


def norm_slots(config: LlamaConfig) -> NormSlots:
    """HF's names for the norms at each place, by config.norm_placement / parallel_residual."""
    if config.parallel_residual:  # GPT-NeoX: two input norms; Phi-2 / Falcon-7B: one, shared (mlp_in None)
        return NormSlots("input_layernorm", None,
                         None if config.parallel_shared_norm else "post_attention_layernorm", None)
    if config.norm_placement == "post":  # OLMo 2: each branch reads the stream raw and its output is normalised
        return NormSlots(None, "post_attention_layernorm", None, "post_feedforward_layernorm")
    if config.norm_placement == "sandwich":  # Gemma 2/3: both
        return NormSlots("input_layernorm", "post_attention_layernorm", "pre_feedforward_layernorm",
                         "post_feedforward_layernorm")
    return NormSlots("input_layernorm", None, "post_attention_layernorm", None)  # Llama: pre-norm


def moe_layer_spec(config: LlamaConfig) -> MoESpec:
    """The MoESpec of the config's sparse layers (layers/moe.py): the family's router, names and flags."""
    assert config.moe_family is not None
    over = {} if config.norm_topk_prob is None else {"norm_topk_prob": config.norm_topk_prob}
    return moe_spec(config.moe_family, config.num_experts, config.num_experts_per_tok, **over)


def layer_param_shapes(config: LlamaConfig, layer: int = 0) -> dict[str, tuple[int, ...]]:
    """Every parameter's canonical name and shape of layer `layer` (HF's (out, in) layout), in order.  The
    layers differ only where a mixture of experts replaces the dense MLP (config.is_moe_layer)."""
    C, D, F = config.n_embd, config.head_size, config.intermediate_size
    Hq, Hkv = config.n_head, config.n_kv_head
    slots = norm_slots(config)
    shapes: dict[str, tuple[int, ...]] = {}

    def norm(name: str | None) -> None:
        if name is not None:
            shapes[name + ".weight"] = (C,)
            if config.norm_bias:
                shapes[name + ".bias"] = (C,)

    def linear(name: str, out: int, inp: int, bias: bool) -> None:
        shapes[name + ".weight"] = (out, inp)
        if bias:
            shapes[name + ".bias"] = (out,)

    norm(slots.attn_in)
    for n, out in (("q", Hq * D), ("k", Hkv * D), ("v", Hkv * D)):
        linear(f"self_attn.{n}_proj", out, C, config.attention_bias)
    linear("self_attn.o_proj", C, Hq * D, config.o_bias)
    if config.qk_norm is not None:
        shapes["self_attn.q_norm.weight"] = (D,) if config.qk_norm == "head" else (Hq * D,)
        shapes["self_attn.k_norm.weight"] = (D,) if config.qk_norm == "head" else (Hkv * D,)
    if config.attention_sinks:
        shapes["self_attn.sinks"] = (Hq,)
    norm(slots.attn_out)
    norm(slots.mlp_in)
    norm(slots.mlp_out)
    if config.is_moe_layer(layer):  # the router, E experts (and Qwen2-MoE's shared expert), as the files name them
        F_moe = config.moe_intermediate_size or F
        shapes.update(moe_param_shapes(moe_layer_spec(config), C, F_moe, config.shared_expert_intermediate_size))
        return shapes
    if config.mlp_kind == "gated":
        linear("mlp.gate_proj", F, C, config.mlp_bias)
    linear("mlp.up_proj", F, C, config.mlp_bias)
    linear("mlp.down_proj", C, F, config.mlp_bias)
    return shapes


class KVSlot(NamedTuple):
    """One layer's preallocated key/value cache for generation, filled up to `length` positions."""

    k: Array  # (B, Hkv, T_max, D) rotated keys
    v: Array  # (B, Hkv, T_max, D)


class AttentionBranchCache(NamedTuple):
    h: Array  # (N, C) the input of q_proj, k_proj, v_proj (for their weight gradients)
    q_norm: RMSNormCache | None  # QK-norm of the queries and keys, when config.qk_norm
    k_norm: RMSNormCache | None
    split_q: SplitHeadsCache  # (B, T, Hq D) -> (B, Hq, T, D)
    split_kv: SplitHeadsCache  # (B, T, Hkv D) -> (B, Hkv, T, D), for k and v
    rope_q: RopeCache | None  # None in a layer without RoPE
    rope_k: RopeCache | None
    attn: SdpaCache | AttentionChunksCache  # grouped-query causal attention
    merge: MergeHeadsCache
    y: Array  # (N, Hq D) merged heads: the input of o_proj
    w_q: Array  # (Hq D, C)
    w_k: Array  # (Hkv D, C)
    w_v: Array  # (Hkv D, C)
    w_o: Array  # (C, Hq D)


class MLPBranchCache(NamedTuple):
    """The MLP with biases or ungated (the plain gated MLP without biases keeps gated_mlp.py's cache)."""

    h: Array  # (N, C) the input of the first projections
    a: Array  # (N, F) the activation: down_proj's input
    act: SwiGLUCache | GeluCache  # act(gate) * up (gated), or GELU(up) (plain)
    w_gate: Array | None  # (F, C), None when plain
    w_up: Array  # (F, C)
    w_down: Array  # (C, F)


class LlamaLayerCache(NamedTuple):
    norm_1: NormCache | None  # the attention's input norm (None in post-norm)
    attention: AttentionBranchCache  # projections, QK-norm, RoPE, attention, o_proj
    norm_a: NormCache | None  # the attention's output norm (post-norm, sandwich)
    norm_2: NormCache | None  # the MLP's input norm (None in post-norm or with a shared parallel norm)
    mlp: GatedMLPCache | MLPBranchCache | MoECache | MoEGroupedCache
    norm_m: NormCache | None  # the MLP's output norm (post-norm, sandwich)
    config: LlamaConfig
    x_shape: tuple[int, ...]  # (B, T, C)
    layer: int = 0  # the layer's index (which MLP it has)
    router_logits: Array | None = None  # (N, E) a sparse layer's router logits (for the load-balancing loss)

    @property
    def attn(self) -> SdpaCache | AttentionChunksCache:
        """The attention pair's own cache: one sdpa call, or attention_chunks' calls."""
        return self.attention.attn


# ---------------------------------------------------------------------------------------------- pieces


def _norm_forward(x: Array, p: Mapping[str, Array], name: str | None,
                  config: LlamaConfig) -> tuple[Array, NormCache | None]:
    """The config's norm over the last axis with parameters name.weight (and name.bias); name None: x itself."""
    if name is None:
        return x, None
    w, eps = p[name + ".weight"], float(config.rms_norm_eps)
    if config.norm_kind == "rmsnorm":  # Llama; Gemma scales by (1 + w): norm_offset 1.0
        return _rmsnorm_forward(x, w, eps, float(config.norm_offset), "input")
    b = p[name + ".bias"] if config.norm_bias else np.zeros_like(w)  # (C,) without a bias, adding 0 is exact
    return _layernorm_forward(x, w, b, eps)


def _norm_backward(dout: Array, cache: NormCache | None, name: str | None, g: dict[str, Array]) -> Array:
    """dx of _norm_forward, its parameters' gradients written into g (a LayerNorm's db even without a bias:
    the layer keeps only its own parameters' gradients).  cache None: dout itself."""
    if cache is None or name is None:
        return dout
    if isinstance(cache, RMSNormCache):
        dx, g[name + ".weight"] = _rmsnorm_backward(dout, cache)
        return dx
    dx, g[name + ".weight"], g[name + ".bias"] = _layernorm_backward(dout, cache)
    return dx


def _linear(x2: Array, p: Mapping[str, Array], name: str) -> Array:
    """x2 (N, in) @ name.weight.T (out, in) -> (N, out), plus name.bias when the layer has one."""
    y = x2 @ p[name + ".weight"].T  # (N, out)
    b = p.get(name + ".bias")
    if b is not None:
        y += b  # (out,) broadcast over rows
    return y


@functools.lru_cache(maxsize=64)
def attention_options(D: int, scale: float | None, window: int | None, softcap: float | None) -> SdpaOptions:
    """The layer's sdpa options: causal (aligned bottom-right when keys are cached), scale (None: 1 / sqrt(D)),
    a sliding window of W keys (query i sees i - W < j <= i, HF's convention: sdpa's window (W - 1, None)),
    and the scores' softcap c tanh(s / c) (Gemma 2)."""
    return SdpaOptions(causal=True, scale=1.0 / math.sqrt(D) if scale is None else float(scale),
                       window=None if window is None else (window - 1, None), key_padding_mask=None,
                       q_segment_ids=None, k_segment_ids=None, softcap=softcap, dropout_p=0.0, dropout_seed=None,
                       dropout_mask=None)


def _layer_options(config: LlamaConfig, window: int | None) -> SdpaOptions:
    return attention_options(config.head_size, config.attention_scale, window, config.attn_logit_softcapping)


# ---------------------------------------------------------------------------------------------- attention


def _attention_forward(h: Array, p: Mapping[str, Array], config: LlamaConfig, cos: Array | None,
                       sin: Array | None, kv: KVSlot | None, start: int,
                       window: int | None) -> tuple[Array, AttentionBranchCache]:
    """h (B, T, C) -> o_proj(attention) (B, T, C): the attention branch, without its residual add."""
    B, T, C = h.shape
    Hq, Hkv, D = config.n_head, config.n_kv_head, config.head_size
    eps, offset = float(config.rms_norm_eps), float(config.norm_offset)
    h2 = h.reshape(-1, C)  # (N, C)
    q = _linear(h2, p, "self_attn.q_proj")  # (N, Hq D)
    k = _linear(h2, p, "self_attn.k_proj")  # (N, Hkv D)
    v = _linear(h2, p, "self_attn.v_proj")  # (N, Hkv D)
    q_norm = k_norm = None
    if config.qk_norm == "full":  # OLMo 2: one RMSNorm over all heads' channels, before the split
        q, q_norm = _rmsnorm_forward(q, p["self_attn.q_norm.weight"], eps, offset, "input")  # (N, Hq D)
        k, k_norm = _rmsnorm_forward(k, p["self_attn.k_norm.weight"], eps, offset, "input")  # (N, Hkv D)
    q, split_q = _split_heads_forward(q.reshape(B, T, Hq * D), Hq)  # (B, Hq, T, D) a view
    k, split_kv = _split_heads_forward(k.reshape(B, T, Hkv * D), Hkv)  # (B, Hkv, T, D)
    v, _ = _split_heads_forward(v.reshape(B, T, Hkv * D), Hkv)  # (B, Hkv, T, D)
    if config.qk_norm == "head":  # Qwen3, Gemma 3: an RMSNorm over each head's D channels, weights shared
        q, q_norm = _rmsnorm_forward(q, p["self_attn.q_norm.weight"], eps, offset, "input")  # (B, Hq, T, D)
        k, k_norm = _rmsnorm_forward(k, p["self_attn.k_norm.weight"], eps, offset, "input")  # (B, Hkv, T, D)
    rope_q = rope_k = None
    if cos is not None and sin is not None:  # positions enter here, and only here (none in a no-RoPE layer)
        R = config.rotary_dim  # the first R channels rotate (all D unless partial_rotary_factor < 1)
        q, rope_q = _rope_forward(q, cos, sin, R, config.rope_interleaved)  # (B, Hq, T, D)
        k, rope_k = _rope_forward(k, cos, sin, R, config.rope_interleaved)  # (B, Hkv, T, D)
    if kv is not None:
        kv.k[:, :, start:start + T] = k  # cache the rotated keys: they never change again
        kv.v[:, :, start:start + T] = v
        k, v = kv.k[:, :, :start + T], kv.v[:, :, :start + T]  # (B, Hkv, start + T, D)
    opts = _layer_options(config, window)
    sinks = p.get("self_attn.sinks")  # (Hq,) gpt-oss: one extra logit per head in the softmax, or None
    attn: SdpaCache | AttentionChunksCache
    if T <= QUERY_CHUNK or sinks is not None:
        a, _, attn = _sdpa_forward(q, k, v, sinks, None, opts)  # (B, Hq, T, D) GQA, causal bottom-right
    else:  # the same, without the all-masked key blocks right of each chunk of queries (attention_chunks.py)
        a, attn = _attention_chunks_forward(q, k, v, QUERY_CHUNK, opts)  # (B, Hq, T, D)
    a, merge = _merge_heads_forward(a)  # (B, T, Hq D)
    y = a.reshape(-1, Hq * D)  # (N, Hq D)
    out = _linear(y, p, "self_attn.o_proj").reshape(B, T, C)  # (B, T, C)
    return out, AttentionBranchCache(h2, q_norm, k_norm, split_q, split_kv, rope_q, rope_k, attn, merge, y,
                                     p["self_attn.q_proj.weight"], p["self_attn.k_proj.weight"],
                                     p["self_attn.v_proj.weight"], p["self_attn.o_proj.weight"])


def _attention_backward(dout: Array, c: AttentionBranchCache, config: LlamaConfig, g: dict[str, Array]) -> Array:
    """dh (B, T, C) of _attention_forward, the branch's parameter gradients written into g."""
    B, T, C = dout.shape
    d2 = dout.reshape(-1, C)  # (N, C)
    g["self_attn.o_proj.weight"] = d2.T @ c.y  # (4) (C, Hq D)
    if config.o_bias:
        g["self_attn.o_proj.bias"] = d2.sum(axis=0)  # (C,)
    da = _merge_heads_backward((d2 @ c.w_o).reshape(B, T, -1), c.merge)  # (5) (B, Hq, T, D)
    if isinstance(c.attn, AttentionChunksCache):
        dq, dk, dv = _attention_chunks_backward(da, c.attn)  # (6)-(7) by the forward's chunks of queries
    else:
        dq, dk, dv, dsinks, _ = _sdpa_backward(da, c.attn, None)  # (6)-(7) (B, Hq, T, D), (B, Hkv, T, D) x 2
        if dsinks is not None:
            g["self_attn.sinks"] = dsinks  # (Hq,)
    # a kv head's gradient sums over the Hq / Hkv query heads that read it, inside the pair
    if c.rope_q is not None and c.rope_k is not None:
        dq = _rope_backward(dq, c.rope_q)  # (8) (B, Hq, T, D) the inverse rotation
        dk = _rope_backward(dk, c.rope_k)  # (8) (B, Hkv, T, D)
    if config.qk_norm == "head" and c.q_norm is not None and c.k_norm is not None:
        dq, g["self_attn.q_norm.weight"] = _rmsnorm_backward(dq, c.q_norm)  # (B, Hq, T, D)
        dk, g["self_attn.k_norm.weight"] = _rmsnorm_backward(dk, c.k_norm)  # (B, Hkv, T, D)
    dq2 = _split_heads_backward(dq, c.split_q).reshape(B * T, -1)  # (N, Hq D)
    dk2 = _split_heads_backward(dk, c.split_kv).reshape(B * T, -1)  # (N, Hkv D)
    dv2 = _split_heads_backward(dv, c.split_kv).reshape(B * T, -1)  # (N, Hkv D)
    if config.qk_norm == "full" and c.q_norm is not None and c.k_norm is not None:
        dq2, g["self_attn.q_norm.weight"] = _rmsnorm_backward(dq2, c.q_norm)  # (N, Hq D)
        dk2, g["self_attn.k_norm.weight"] = _rmsnorm_backward(dk2, c.k_norm)  # (N, Hkv D)
    g["self_attn.q_proj.weight"] = dq2.T @ c.h  # (9) (Hq D, C)
    g["self_attn.k_proj.weight"] = dk2.T @ c.h  # (9) (Hkv D, C)
    g["self_attn.v_proj.weight"] = dv2.T @ c.h  # (9) (Hkv D, C)
    if config.attention_bias:
        for n, d in (("q", dq2), ("k", dk2), ("v", dv2)):
            g[f"self_attn.{n}_proj.bias"] = d.sum(axis=0)  # (out,)
    dh2 = dq2 @ c.w_q  # (10) (N, C) the three projections read the same h: their gradients add
    dh2 += dk2 @ c.w_k
    dh2 += dv2 @ c.w_v
    return dh2.reshape(B, T, C)


# ---------------------------------------------------------------------------------------------- MLP


MLPCache = GatedMLPCache | MLPBranchCache | MoECache | MoEGroupedCache


def _moe_branch_forward(h: Array, p: Mapping[str, Array],
                        config: LlamaConfig) -> tuple[Array, Array, MoECache | MoEGroupedCache]:
    """h (B, T, C) -> the mixture of experts' output (B, T, C) and its router logits (N, E): the grouped pair
    (moe_grouped.py), or the clear loop of moe.py with moe_impl='clear' (equal results; tests use both)."""
    forward = _moe_grouped_forward if config.moe_impl == "grouped" else _moe_forward
    return forward(h, p, moe_layer_spec(config))


def _mlp_forward(h: Array, p: Mapping[str, Array], config: LlamaConfig,
                 layer: int = 0) -> tuple[Array, MLPCache, Array | None]:
    """h (B, T, C) -> the MLP's output (B, T, C): down(act(gate) * up) (gated) or down(act(up)) (plain), or a
    sparse layer's mixture of experts; also its router logits (N, E) (None for a dense MLP)."""
    if config.is_moe_layer(layer):
        out, z, moe = _moe_branch_forward(h, p, config)  # (B, T, C), (N, E)
        return out, moe, z
    if config.mlp_kind == "gated" and not config.mlp_bias:  # Llama: gated_mlp.py's pair
        out, gc = _gated_mlp_forward(h, p["mlp.gate_proj.weight"], p["mlp.up_proj.weight"],
                                     p["mlp.down_proj.weight"], config.activation)  # (B, T, C)
        return out, gc, None
    h2 = h.reshape(-1, h.shape[-1])  # (N, C)
    up = _linear(h2, p, "mlp.up_proj")  # (N, F)
    act: SwiGLUCache | GeluCache
    if config.mlp_kind == "gated":  # with biases (Llama's mlp_bias)
        a, act = _swiglu_forward(_linear(h2, p, "mlp.gate_proj"), up, config.activation)  # (N, F)
    else:  # GPT-NeoX, Phi-2, Falcon: GELU of one projection
        a, act = _gelu_forward(up, "erf" if config.activation == "gelu" else "tanh")  # (N, F)
    out = _linear(a, p, "mlp.down_proj")  # (N, C)
    return out.reshape(h.shape), MLPBranchCache(h2, a, act, p.get("mlp.gate_proj.weight"), p["mlp.up_proj.weight"],
                                                p["mlp.down_proj.weight"]), None


def _mlp_backward(dout: Array, c: MLPCache, config: LlamaConfig, g: dict[str, Array],
                  drouter_logits: Array | None = None) -> Array:
    """dh (B, T, C) of _mlp_forward, the MLP's parameter gradients written into g; drouter_logits (N, E): the
    load-balancing loss's gradient reaching a sparse layer's router logits (or None)."""
    if isinstance(c, (MoECache, MoEGroupedCache)):
        if isinstance(c, MoEGroupedCache):
            dh, moe_grads = _moe_grouped_backward(dout, c, drouter_logits)  # (B, T, C)
        else:
            dh, moe_grads = _moe_backward(dout, c, drouter_logits)  # (B, T, C) the clear loop's
        g.update(moe_grads)
        return dh
    if isinstance(c, GatedMLPCache):
        dh, g["mlp.gate_proj.weight"], g["mlp.up_proj.weight"], g["mlp.down_proj.weight"] = \
            _gated_mlp_backward(dout, c)  # (1) (B, T, C)
        return dh
    d2 = dout.reshape(-1, dout.shape[-1])  # (N, C)
    g["mlp.down_proj.weight"] = d2.T @ c.a  # (C, F)
    da = d2 @ c.w_down  # (N, F)
    if isinstance(c.act, SwiGLUCache) and c.w_gate is not None:
        dgate, dup = _swiglu_backward(da, c.act)  # (N, F) each
        g["mlp.gate_proj.weight"] = dgate.T @ c.h  # (F, C)
        dh = dgate @ c.w_gate  # (N, C)
        dh += dup @ c.w_up  # the two projections read the same h: their gradients add
    else:
        assert isinstance(c.act, GeluCache)
        dup = _gelu_backward(da, c.act)  # (N, F)
        dh = dup @ c.w_up  # (N, C)
    g["mlp.up_proj.weight"] = dup.T @ c.h  # (F, C)
    if config.mlp_bias:
        g["mlp.down_proj.bias"] = d2.sum(axis=0)  # (C,)
        g["mlp.up_proj.bias"] = dup.sum(axis=0)  # (F,)
        if config.mlp_kind == "gated":
            g["mlp.gate_proj.bias"] = dgate.sum(axis=0)  # (F,)
    return dh.reshape(dout.shape)


# ---------------------------------------------------------------------------------------------- the layer


def llama_layer_forward(x: Array, p: Mapping[str, Array], config: LlamaConfig, cos: Array | None,
                        sin: Array | None, kv: KVSlot | None = None, start: int = 0,
                        window: int | None = None, layer: int = 0) -> tuple[Array, LlamaLayerCache]:
    """x (B, T, C) -> out (B, T, C); cos, sin the RoPE tables (rope_tables) for these T positions (None: a
    layer without RoPE); window W: a sliding-window layer (None: full causal attention).

    With kv, this layer's keys and values are written at positions start .. start + T - 1 of kv and the
    queries attend over all start + T cached positions (the KV cache: T = 1 per new token).  layer: its index
    (config.is_moe_layer(layer): a mixture of experts in the MLP slot).  Unchecked:
    the model checks its inputs.  See docs/llama.md.
    """
    slots = norm_slots(config)  # Llama: input_layernorm before attention, post_attention_layernorm before the MLP
    rm = config.residual_multiplier  # 1.0 except Granite's
    h, norm_1 = _norm_forward(x, p, slots.attn_in, config)  # (B, T, C)
    a, attn = _attention_forward(h, p, config, cos, sin, kv, start, window)  # (B, T, C)
    a, norm_a = _norm_forward(a, p, slots.attn_out, config)  # (B, T, C) post-norm, sandwich: normalised output
    if rm != 1.0:
        a *= rm  # Granite scales each branch before its residual add
    x1 = x + a  # (B, T, C) first residual add
    if config.parallel_residual:  # the MLP reads x too, beside the attention (its own norm, or the shared h)
        h, norm_2 = (h, None) if slots.mlp_in is None else _norm_forward(x, p, slots.mlp_in, config)
    else:
        h, norm_2 = _norm_forward(x1, p, slots.mlp_in, config)  # (B, T, C)
    m, mlp, router_logits = _mlp_forward(h, p, config, layer)  # (B, T, C), (N, E) or None
    m, norm_m = _norm_forward(m, p, slots.mlp_out, config)  # (B, T, C)
    if rm != 1.0:
        m *= rm
    out = x1 + m  # (B, T, C) second residual add (parallel: x + attention + MLP)
    return out, LlamaLayerCache(norm_1, attn, norm_a, norm_2, mlp, norm_m, config, x.shape, layer, router_logits)


def llama_layer_backward(dout: Array, cache: LlamaLayerCache,
                         drouter_logits: Array | None = None) -> tuple[Array, dict[str, Array]]:
    """Reverse of the forward; each residual add copies its gradient to both inputs.  dout (B, T, C);
    drouter_logits (N, E): an upstream gradient of a sparse layer's router logits (the load-balancing loss's).

    Returns dx (B, T, C) and the gradients keyed like layer_param_shapes(config).  See docs/llama.md.
    """
    c, config = cache, cache.config
    slots = norm_slots(config)
    rm = config.residual_multiplier
    g: dict[str, Array] = {}
    dm = dout if rm == 1.0 else dout * rm  # (B, T, C)
    dm = _norm_backward(dm, c.norm_m, slots.mlp_out, g)  # (B, T, C)
    dh = _mlp_backward(dm, c.mlp, config, g, drouter_logits)  # (1) (B, T, C)
    # (every gradient below is a new array, so the in-place adds never write into dout)
    dh_mlp = None  # the parallel block's gradient reaching x (or the shared norm's output) through the MLP
    if config.parallel_residual:  # x1 = x + a: dout reaches x and a unchanged; the MLP read x (or h)
        dx1 = dout
        dh_mlp = _norm_backward(dh, c.norm_2, slots.mlp_in, g)  # (B, T, C) dh itself with a shared norm
    else:
        dx1 = _norm_backward(dh, c.norm_2, slots.mlp_in, g)  # (2) (B, T, C)
        dx1 += dout  # (3) residual: straight path + MLP branch
    da = dx1 if rm == 1.0 else dx1 * rm  # (B, T, C)
    da = _norm_backward(da, c.norm_a, slots.attn_out, g)  # (B, T, C)
    dh = _attention_backward(da, c.attention, config, g)  # (4)-(10) (B, T, C)
    if dh_mlp is not None and slots.mlp_in is None:
        dh += dh_mlp  # Phi-2, Falcon-7B: one norm output fed both branches, so their gradients add
    dx = _norm_backward(dh, c.norm_1, slots.attn_in, g)  # (11) (B, T, C)
    dx += dx1  # (12) residual: straight path + attention branch
    if dh_mlp is not None and slots.mlp_in is not None:
        dx += dh_mlp  # GPT-NeoX: the MLP's own input norm read x
    return dx, {n: g[n] for n in layer_param_shapes(config, c.layer)}
