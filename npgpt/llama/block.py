"""One Llama decoder layer:  x1 = x + o_proj(attn(rope(q), rope(k), v));  out = x1 + mlp(rmsnorm(x1)),
with q, k, v = q_proj, k_proj, v_proj of rmsnorm(x) and grouped-query attention (Hkv kv heads, Hq query heads).

Parameters come in a mapping keyed by HF's names inside a layer ('self_attn.q_proj.weight', ...), in nn.Linear's
(out, in) layout, no biases.  Forward x (B, T, C) -> out (B, T, C); backward dout -> dx and a dict of gradients.
Walkthrough: docs/llama.md
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from ..layers.gated_mlp import GatedMLPCache, _gated_mlp_backward, _gated_mlp_forward
from ..layers.merge_heads import MergeHeadsCache, _merge_heads_backward, _merge_heads_forward
from ..layers.rmsnorm import RMSNormCache, _rmsnorm_backward, _rmsnorm_forward
from ..layers.rope import RopeCache, _rope_backward, _rope_forward
from ..layers.attention_chunks import AttentionChunksCache, _attention_chunks_backward, _attention_chunks_forward
from ..layers.sdpa import SdpaCache, SdpaOptions, _sdpa_backward, _sdpa_forward
from ..layers.self_attention import QUERY_CHUNK
from ..layers.split_heads import SplitHeadsCache, _split_heads_backward, _split_heads_forward
from .config import LlamaConfig

Array = npt.NDArray[np.floating]

LAYER_PARAM_NAMES = (
    "input_layernorm.weight",
    "self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
    "post_attention_layernorm.weight",
    "mlp.gate_proj.weight", "mlp.up_proj.weight", "mlp.down_proj.weight",
)


def layer_param_shapes(config: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """Every layer parameter's shape, keyed like LAYER_PARAM_NAMES (HF's (out, in) layout)."""
    C, D, F = config.n_embd, config.head_size, config.intermediate_size
    Hq, Hkv = config.n_head, config.n_kv_head
    shapes = [(C,), (Hq * D, C), (Hkv * D, C), (Hkv * D, C), (C, Hq * D), (C,), (F, C), (F, C), (C, F)]
    return dict(zip(LAYER_PARAM_NAMES, shapes))


class KVSlot(NamedTuple):
    """One layer's preallocated key/value cache for generation, filled up to `length` positions."""

    k: Array  # (B, Hkv, T_max, D) rotated keys
    v: Array  # (B, Hkv, T_max, D)


class LlamaLayerCache(NamedTuple):
    norm_1: RMSNormCache
    h: Array  # (N, C) rmsnorm(x): the input of q_proj, k_proj, v_proj (for their weight gradients)
    split_q: SplitHeadsCache  # (B, T, Hq D) -> (B, Hq, T, D)
    split_kv: SplitHeadsCache  # (B, T, Hkv D) -> (B, Hkv, T, D), for k and v
    rope_q: RopeCache
    rope_k: RopeCache
    attn: SdpaCache | AttentionChunksCache  # grouped-query causal attention: query head h reads kv head h // (Hq / Hkv)
    merge: MergeHeadsCache
    y: Array  # (N, Hq D) merged heads: the input of o_proj
    norm_2: RMSNormCache
    mlp: GatedMLPCache
    w_q: Array  # (Hq D, C)
    w_k: Array  # (Hkv D, C)
    w_v: Array  # (Hkv D, C)
    w_o: Array  # (C, Hq D)
    x_shape: tuple[int, ...]  # (B, T, C)


@functools.lru_cache(maxsize=16)
def _causal(D: int) -> SdpaOptions:
    """Llama's attention options: causal (aligned bottom-right when keys are cached), scale 1 / sqrt(D)."""
    return SdpaOptions(causal=True, scale=1.0 / math.sqrt(D), window=None, key_padding_mask=None,
                       q_segment_ids=None, k_segment_ids=None, softcap=None, dropout_p=0.0, dropout_seed=None,
                       dropout_mask=None)


def llama_layer_forward(x: Array, p: Mapping[str, Array], config: LlamaConfig, cos: Array, sin: Array,
                        kv: KVSlot | None = None, start: int = 0) -> tuple[Array, LlamaLayerCache]:
    """x (B, T, C) -> out (B, T, C); cos, sin the RoPE tables (rope_tables) for these T positions.

    With kv, this layer's keys and values are written at positions start .. start + T - 1 of kv and the
    queries attend over all start + T cached positions (the KV cache: T = 1 per new token).  Unchecked:
    the model checks its inputs.  See docs/llama.md.
    """
    B, T, C = x.shape
    Hq, Hkv, D = config.n_head, config.n_kv_head, config.head_size
    eps = float(config.rms_norm_eps)
    h, norm_1 = _rmsnorm_forward(x, p["input_layernorm.weight"], eps, 0.0, "input")  # (B, T, C)
    h2 = h.reshape(-1, C)  # (N, C)
    w_q, w_k, w_v = p["self_attn.q_proj.weight"], p["self_attn.k_proj.weight"], p["self_attn.v_proj.weight"]
    q, split_q = _split_heads_forward((h2 @ w_q.T).reshape(B, T, Hq * D), Hq)  # (B, Hq, T, D) a view
    k, split_kv = _split_heads_forward((h2 @ w_k.T).reshape(B, T, Hkv * D), Hkv)  # (B, Hkv, T, D)
    v, _ = _split_heads_forward((h2 @ w_v.T).reshape(B, T, Hkv * D), Hkv)  # (B, Hkv, T, D)
    q, rope_q = _rope_forward(q, cos, sin, D, False)  # (B, Hq, T, D) positions enter here, and only here
    k, rope_k = _rope_forward(k, cos, sin, D, False)  # (B, Hkv, T, D)
    if kv is not None:
        kv.k[:, :, start:start + T] = k  # cache the rotated keys: they never change again
        kv.v[:, :, start:start + T] = v
        k, v = kv.k[:, :, :start + T], kv.v[:, :, :start + T]  # (B, Hkv, start + T, D)
    attn: SdpaCache | AttentionChunksCache
    if T <= QUERY_CHUNK:
        a, _, attn = _sdpa_forward(q, k, v, None, None, _causal(D))  # (B, Hq, T, D) GQA, causal bottom-right
    else:  # the same, without the all-masked key blocks right of each chunk of queries (attention_chunks.py)
        a, attn = _attention_chunks_forward(q, k, v, QUERY_CHUNK, _causal(D))  # (B, Hq, T, D)
    a, merge = _merge_heads_forward(a)  # (B, T, Hq D)
    y = a.reshape(-1, Hq * D)  # (N, Hq D)
    x1 = x + (y @ p["self_attn.o_proj.weight"].T).reshape(B, T, C)  # (B, T, C) first residual add
    h, norm_2 = _rmsnorm_forward(x1, p["post_attention_layernorm.weight"], eps, 0.0, "input")  # (B, T, C)
    m, mlp = _gated_mlp_forward(h, p["mlp.gate_proj.weight"], p["mlp.up_proj.weight"], p["mlp.down_proj.weight"],
                                config.activation)  # (B, T, C)
    out = x1 + m  # (B, T, C) second residual add
    return out, LlamaLayerCache(norm_1, h2, split_q, split_kv, rope_q, rope_k, attn, merge, y,
                                norm_2, mlp,
                                w_q, w_k, w_v, p["self_attn.o_proj.weight"], x.shape)


def llama_layer_backward(dout: Array, cache: LlamaLayerCache) -> tuple[Array, dict[str, Array]]:
    """Reverse of the forward; each residual add copies its gradient to both inputs.  dout (B, T, C).

    Returns dx (B, T, C) and the gradients keyed like LAYER_PARAM_NAMES.  See docs/llama.md.
    """
    c = cache
    B, T, C = c.x_shape
    g: dict[str, Array] = {}
    dh, g["mlp.gate_proj.weight"], g["mlp.up_proj.weight"], g["mlp.down_proj.weight"] = \
        _gated_mlp_backward(dout, c.mlp)  # (1) (B, T, C)
    dx1, g["post_attention_layernorm.weight"] = _rmsnorm_backward(dh, c.norm_2)  # (2) (B, T, C)
    dx1 += dout  # (3) residual: straight path + MLP branch
    d2 = dx1.reshape(-1, C)  # (N, C)
    g["self_attn.o_proj.weight"] = d2.T @ c.y  # (4) (C, Hq D)
    da = _merge_heads_backward((d2 @ c.w_o).reshape(B, T, -1), c.merge)  # (5) (B, Hq, T, D)
    if isinstance(c.attn, AttentionChunksCache):
        dq, dk, dv = _attention_chunks_backward(da, c.attn)  # (6)-(7) by the forward's chunks of queries
    else:
        dq, dk, dv, _, _ = _sdpa_backward(da, c.attn, None)  # (6)-(7) (B, Hq, T, D), (B, Hkv, T, D) x 2: a kv
    # head's gradient sums over the Hq / Hkv query heads that read it, inside the pair
    dq = _rope_backward(dq, c.rope_q)  # (8) (B, Hq, T, D) the inverse rotation
    dk = _rope_backward(dk, c.rope_k)  # (8) (B, Hkv, T, D)
    dq2 = _split_heads_backward(dq, c.split_q).reshape(B * T, -1)  # (N, Hq D)
    dk2 = _split_heads_backward(dk, c.split_kv).reshape(B * T, -1)  # (N, Hkv D)
    dv2 = _split_heads_backward(dv, c.split_kv).reshape(B * T, -1)  # (N, Hkv D)
    g["self_attn.q_proj.weight"] = dq2.T @ c.h  # (9) (Hq D, C)
    g["self_attn.k_proj.weight"] = dk2.T @ c.h  # (9) (Hkv D, C)
    g["self_attn.v_proj.weight"] = dv2.T @ c.h  # (9) (Hkv D, C)
    dh2 = dq2 @ c.w_q  # (10) (N, C) the three projections read the same h: their gradients add
    dh2 += dk2 @ c.w_k
    dh2 += dv2 @ c.w_v
    dx, g["input_layernorm.weight"] = _rmsnorm_backward(dh2.reshape(B, T, C), c.norm_1)  # (11) (B, T, C)
    dx += dx1  # (12) residual: straight path + attention branch
    return dx, {n: g[n] for n in LAYER_PARAM_NAMES}
