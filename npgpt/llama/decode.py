"""One sampled token through a Llama-family model against the key/value cache: the decoding fast path.

generate.py's forward_cached runs the training forward, which works on (B, T, C) arrays of any T, splits
and merges heads and builds every layer's backward cache.  A sampled token is one position, so the same
equations fit on rows (B, C) with no caches.  The input projections are read from copies made once per
generate call (decode_weights): q, k and v side by side as one (C, (Hq + 2 Hkv) D) matrix, gate and up as
one (C, 2F), so a layer makes four weight products instead of seven, along rows BLAS streams faster, and
rotates its query and key heads in one RoPE call.  generate skips the copies (and the step) above
COPY_LIMIT_BYTES.
Every variant of the configurable decoder runs here too (norm slots, QK-norm, biases, partial / per-layer /
no RoPE, windows, softcaps, sinks, multipliers, a plain MLP, a mixture of experts), through the same kernels
as the block: a window by slicing the cached keys, a softcap or sinks through sdpa.py's pair on the one query
row, a sparse layer through the block's MoE pair on the B rows.
tests/test_llama_decode.py holds this step to forward_cached (float64, 1e-12) on random models;
tests/test_decoder_block.py in every variant.
Walkthrough: docs/llama.md ("The one-token step").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from ..layers.gelu import _gelu_forward
from ..layers.rmsnorm import _rmsnorm_forward
from ..layers.rope import _rope_forward
from ..layers.sdpa import _sdpa_forward
from ..layers.softcap import _softcap_forward
from ..layers.softmax import _softmax_forward
from ..layers.swiglu import _swiglu_forward
from .block import KVSlot, _layer_options, _moe_branch_forward, _norm_forward, layer_param_shapes, norm_slots
from .config import LlamaConfig
from .core import head_weight, layer_tables

Array = npt.NDArray[np.floating]


COPY_LIMIT_BYTES = 1 << 30  # generate makes decode_weights' copies only up to this size (1 GiB); a larger
# model sends every token through forward_cached instead, whose per-token overhead matters less there


class DecodeWeights(NamedTuple):
    """One layer's input projections laid out for a one-row product h @ W (made by decode_weights)."""

    qkv: Array  # (C, (Hq + 2 Hkv) D) [q_proj; k_proj; v_proj]^T, contiguous
    gate_up: Array  # (C, 2F) [gate_proj; up_proj]^T, contiguous; (C, F) up_proj^T for a plain MLP; (C, 0) in a
    # sparse layer, whose experts are read in place


def decode_weights(params: Mapping[str, Array], config: LlamaConfig) -> list[DecodeWeights]:
    """Per layer, q/k/v_proj and gate/up_proj (HF's (out, C) layout) stacked and transposed to (C, out) copies.

    One product per group instead of three and two, and BLAS streams a one-row product along these long rows
    faster than along the stored C-long ones (docs/llama.md).  The copies hold the five matrices again.
    """
    out = []
    mlp = ("gate", "up") if config.mlp_kind == "gated" else ("up",)
    for i in range(config.n_layer):
        p = f"model.layers.{i}."
        qkv = np.concatenate([params[p + f"self_attn.{n}_proj.weight"] for n in "qkv"]).T  # (C, (Hq+2Hkv) D)
        if config.is_moe_layer(i):
            gate_up = np.zeros((qkv.shape[0], 0), dtype=qkv.dtype)  # (C, 0) no copy of the experts
        else:
            gate_up = np.concatenate([params[p + f"mlp.{n}_proj.weight"] for n in mlp]).T  # (C, 2F) or (C, F)
        out.append(DecodeWeights(np.ascontiguousarray(qkv), np.ascontiguousarray(gate_up)))
    return out


def decode_weights_nbytes(config: LlamaConfig, dtype: npt.DTypeLike) -> int:
    """The bytes decode_weights' copies take: (Hq + 2 Hkv) D C + 2 F C numbers a layer (F C when plain)."""
    D, C, F = config.head_size, config.n_embd, config.intermediate_size
    attn = (config.n_head + 2 * config.n_kv_head) * D * C
    mlp = (2 if config.mlp_kind == "gated" else 1) * F * C
    n_dense = config.n_layer - len(config.moe_layers)  # sparse layers copy no MLP weights
    return (config.n_layer * attn + n_dense * mlp) * np.dtype(dtype).itemsize


def _decode_step(params: Mapping[str, Array], config: LlamaConfig, tokens: npt.NDArray[np.integer],
                 kv: Sequence[KVSlot], t: int, weights: Sequence[DecodeWeights]) -> Array:
    """Logits (B, V) for tokens (B,) at position t, each layer's cache kv[i] (B, Hkv, block_size, D) filled
    up to t and given this position's rotated key and value; weights from decode_weights.  The forward of
    docs/llama.md on one position; query head h reads kv head h // (Hq / Hkv).  Unchecked.
    """
    B = tokens.shape[0]
    Hq, Hkv, D, F = config.n_head, config.n_kv_head, config.head_size, config.intermediate_size
    G = Hq // Hkv  # query heads per kv head
    eps, offset = float(config.rms_norm_eps), float(config.norm_offset)
    slots = norm_slots(config)  # Llama: input_layernorm, post_attention_layernorm
    rm = config.residual_multiplier
    dtype = params["model.embed_tokens.weight"].dtype
    tables = layer_tables(config, t, 1, dtype)  # per layer (cos, sin) (1, R/2) of position t, or None
    x = params["model.embed_tokens.weight"][tokens]  # (B, C) a new array: the residual stream
    if config.embedding_multiplier != 1.0:
        x *= config.embedding_multiplier  # rounded to x's dtype, as the forward does
    for i in range(config.n_layer):
        p = f"model.layers.{i}."

        def norm(z: Array, name: str | None, p: str = p) -> Array:
            return z if name is None else _norm_forward(z, params, p + name, config)[0]

        h = norm(x, slots.attn_in)  # (B, C)
        qkv: Array = h @ weights[i].qkv  # (B, (Hq + 2 Hkv) D) the three projections in one product
        if config.attention_bias:
            for j, n in enumerate((Hq, Hkv, Hkv)):  # each bias onto its own columns
                a0 = (0, Hq, Hq + Hkv)[j] * D
                qkv[:, a0:a0 + n * D] += params[p + f"self_attn.{'qkv'[j]}_proj.bias"]
        q: Array = qkv[:, :Hq * D]  # (B, Hq D) a view
        k: Array = qkv[:, Hq * D:(Hq + Hkv) * D]  # (B, Hkv D)
        if config.qk_norm == "full":  # OLMo 2: over all heads' channels
            q, _ = _rmsnorm_forward(q, params[p + "self_attn.q_norm.weight"], eps, offset, "input")  # (B, Hq D)
            k, _ = _rmsnorm_forward(k, params[p + "self_attn.k_norm.weight"], eps, offset, "input")  # (B, Hkv D)
        heads: Array
        if config.qk_norm is None:
            heads = qkv[:, :(Hq + Hkv) * D].reshape(B, Hq + Hkv, 1, D)  # (B, Hq + Hkv, 1, D) query and key heads
        else:
            heads = np.concatenate([q, k], axis=1).reshape(B, Hq + Hkv, 1, D)  # (B, Hq + Hkv, 1, D)
        if config.qk_norm == "head":  # Qwen3, Gemma 3: each head over its D channels
            qh, _ = _rmsnorm_forward(heads[:, :Hq], params[p + "self_attn.q_norm.weight"], eps, offset, "input")
            kh, _ = _rmsnorm_forward(heads[:, Hq:], params[p + "self_attn.k_norm.weight"], eps, offset, "input")
            heads = np.concatenate([qh, kh], axis=1)  # (B, Hq + Hkv, 1, D)
        if tables[i] is not None:  # both rotated to position t at once (no RoPE in SmolLM3's NoPE layers)
            cos, sin = tables[i]  # type: ignore[misc]
            heads, _ = _rope_forward(heads, cos, sin, config.rotary_dim, config.rope_interleaved)
        kv[i].k[:, :, t] = heads[:, Hq:, 0]  # append this position's rotated key and its value
        kv[i].v[:, :, t] = qkv[:, (Hq + Hkv) * D:].reshape(B, Hkv, D)
        opts = _layer_options(config, config.layer_window(i))
        first = 0 if opts.window is None or opts.window[0] is None else max(0, t - opts.window[0])  # window
        keys, values = kv[i].k[:, :, first:t + 1], kv[i].v[:, :, first:t + 1]  # (B, Hkv, n, D) the visible ones
        y: Array
        if opts.softcap is None and not config.attention_sinks:
            qg = heads[:, :Hq].reshape(B, Hkv, G, D) * opts.scale  # (B, Hkv, G, D) the G query heads as rows
            att = qg @ keys.swapaxes(-1, -2)  # (B, Hkv, G, n) one position sees every visible key
            att, _ = _softmax_forward(att)  # (B, Hkv, G, n) rows sum to 1
            y = (att @ values).reshape(B, Hq * D)  # (B, Hkv, G, D) -> (B, Hq D) heads in order
        else:  # Gemma 2's softcap, gpt-oss's sinks: sdpa.py's pair on the one query row
            yq, _, _ = _sdpa_forward(np.ascontiguousarray(heads[:, :Hq]), keys, values,
                                     params.get(p + "self_attn.sinks"), None, opts)  # (B, Hq, 1, D)
            y = yq.reshape(B, Hq * D)  # (B, Hq D)
        a = y @ params[p + "self_attn.o_proj.weight"].T  # (B, C)
        if config.o_bias:
            a += params[p + "self_attn.o_proj.bias"]
        a = norm(a, slots.attn_out)  # (B, C) post-norm, sandwich
        if rm != 1.0:
            a *= rm  # Granite
        if config.parallel_residual:  # the MLP reads x (its own norm) or h (a shared norm) beside the attention
            h = h if slots.mlp_in is None else norm(x, slots.mlp_in)  # (B, C)
            x += a
        else:
            x += a  # (B, C) first residual add, in place
            h = norm(x, slots.mlp_in)  # (B, C)
        if config.is_moe_layer(i):  # the router and the chosen experts on the B rows, as the block runs them
            lp = {n: params[p + n] for n in layer_param_shapes(config, i)}
            m, _, _ = _moe_branch_forward(h, lp, config)  # (B, C)
            m = norm(m, slots.mlp_out)  # (B, C)
            if rm != 1.0:
                m *= rm
            x += m  # (B, C) second residual add
            continue
        gu: Array = h @ weights[i].gate_up  # (B, 2F) gate and up in one product; (B, F) up alone when plain
        if config.mlp_bias:
            if config.mlp_kind == "gated":
                gu[:, :F] += params[p + "mlp.gate_proj.bias"]
            gu[:, -F:] += params[p + "mlp.up_proj.bias"]
        act: Array
        if config.mlp_kind == "gated":
            act, _ = _swiglu_forward(gu[:, :F], gu[:, F:], config.activation)  # (B, F) act(gate) * up
        else:
            act, _ = _gelu_forward(gu, "erf" if config.activation == "gelu" else "tanh")  # (B, F)
        m = act @ params[p + "mlp.down_proj.weight"].T  # (B, C)
        if config.mlp_bias:
            m += params[p + "mlp.down_proj.bias"]
        m = norm(m, slots.mlp_out)  # (B, C)
        if rm != 1.0:
            m *= rm
        x += m  # (B, C) second residual add
    xf, _ = _norm_forward(x, params, "model.norm", config)  # (B, C)
    logits: Array = xf @ head_weight(params, config).T  # (B, V)
    if config.lm_head_bias:
        logits += params["lm_head.bias"]
    if config.logits_scaling != 1.0:
        logits /= config.logits_scaling
    if config.final_logit_softcapping is not None:
        logits, _ = _softcap_forward(logits, float(config.final_logit_softcapping))  # (B, V)
    return logits
