"""One sampled token through a Llama-family model against the key/value cache: the decoding fast path.

generate.py's forward_cached runs the training forward, which works on (B, T, C) arrays of any T, splits
and merges heads and builds every layer's backward cache.  A sampled token is one position, so the same
equations fit on rows (B, C) with no caches.  The input projections are read from copies made once per
generate call (decode_weights): q, k and v side by side as one (C, (Hq + 2 Hkv) D) matrix, gate and up as
one (C, 2F), so a layer makes four weight products instead of seven, along rows BLAS streams faster, and
rotates its query and key heads in one RoPE call.  generate skips the copies (and the step) above
COPY_LIMIT_BYTES.
tests/test_llama_decode.py holds this step to forward_cached (float64, 1e-12) on random models.
Walkthrough: docs/llama.md ("The one-token step").
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from ..layers.rmsnorm import _rmsnorm_forward
from ..layers.rope import _rope_forward, rope_inv_freq, rope_tables
from ..layers.softmax import _softmax_forward
from ..layers.swiglu import _swiglu_forward
from .block import KVSlot
from .config import LlamaConfig
from .core import head_weight

Array = npt.NDArray[np.floating]


COPY_LIMIT_BYTES = 1 << 30  # generate makes decode_weights' copies only up to this size (1 GiB); a larger
# model sends every token through forward_cached instead, whose per-token overhead matters less there


def supports(config: LlamaConfig) -> bool:
    """Whether the one-token step below implements every variant this config selects (else generate sends
    each token through forward_cached, the training forward with the KV cache)."""
    plain = LlamaConfig(vocab_size=config.vocab_size, n_layer=config.n_layer, n_head=config.n_head,
                        n_kv_head=config.n_kv_head, n_embd=config.n_embd, intermediate_size=config.intermediate_size,
                        head_dim=config.head_dim, block_size=config.block_size, rms_norm_eps=config.rms_norm_eps,
                        rope_theta=config.rope_theta, rope_scaling=config.rope_scaling,
                        tie_word_embeddings=config.tie_word_embeddings, hidden_act=config.hidden_act)
    return config == plain


class DecodeWeights(NamedTuple):
    """One layer's input projections laid out for a one-row product h @ W (made by decode_weights)."""

    qkv: Array  # (C, (Hq + 2 Hkv) D) [q_proj; k_proj; v_proj]^T, contiguous
    gate_up: Array  # (C, 2F) [gate_proj; up_proj]^T, contiguous


def decode_weights(params: Mapping[str, Array], config: LlamaConfig) -> list[DecodeWeights]:
    """Per layer, q/k/v_proj and gate/up_proj (HF's (out, C) layout) stacked and transposed to (C, out) copies.

    One product per group instead of three and two, and BLAS streams a one-row product along these long rows
    faster than along the stored C-long ones (docs/llama.md).  The copies hold the five matrices again.
    """
    out = []
    for i in range(config.n_layer):
        p = f"model.layers.{i}."
        qkv = np.concatenate([params[p + f"self_attn.{n}_proj.weight"] for n in "qkv"]).T  # (C, (Hq+2Hkv) D)
        gate_up = np.concatenate([params[p + "mlp.gate_proj.weight"], params[p + "mlp.up_proj.weight"]]).T  # (C, 2F)
        out.append(DecodeWeights(np.ascontiguousarray(qkv), np.ascontiguousarray(gate_up)))
    return out


def decode_weights_nbytes(config: LlamaConfig, dtype: npt.DTypeLike) -> int:
    """The bytes decode_weights' copies take: (Hq + 2 Hkv) D C + 2 F C numbers a layer."""
    D, C, F = config.head_size, config.n_embd, config.intermediate_size
    per_layer = (config.n_head + 2 * config.n_kv_head) * D * C + 2 * F * C
    return config.n_layer * per_layer * np.dtype(dtype).itemsize


def _decode_step(params: Mapping[str, Array], config: LlamaConfig, tokens: npt.NDArray[np.integer],
                 kv: Sequence[KVSlot], t: int, weights: Sequence[DecodeWeights]) -> Array:
    """Logits (B, V) for tokens (B,) at position t, each layer's cache kv[i] (B, Hkv, block_size, D) filled
    up to t and given this position's rotated key and value; weights from decode_weights.  The forward of
    docs/llama.md on one position; query head h reads kv head h // (Hq / Hkv).  Unchecked.
    """
    B = tokens.shape[0]
    Hq, Hkv, D, F = config.n_head, config.n_kv_head, config.head_size, config.intermediate_size
    G = Hq // Hkv  # query heads per kv head
    eps = float(config.rms_norm_eps)
    scale = 1.0 / math.sqrt(D)  # Python float: float32 stays float32
    dtype = params["model.embed_tokens.weight"].dtype
    inv_freq = rope_inv_freq(D, config.rope_theta, config.rope_scaling)  # (D/2,) float64
    cos, sin = rope_tables(np.arange(t, t + 1), inv_freq, dtype)  # (1, D/2) this position's angles
    x = params["model.embed_tokens.weight"][tokens]  # (B, C) a new array: the residual stream
    for i in range(config.n_layer):
        p = f"model.layers.{i}."
        h, _ = _rmsnorm_forward(x, params[p + "input_layernorm.weight"], eps, 0.0, "input")  # (B, C)
        qkv = h @ weights[i].qkv  # (B, (Hq + 2 Hkv) D) the three projections in one product
        heads = qkv[:, :(Hq + Hkv) * D].reshape(B, Hq + Hkv, 1, D)  # (B, Hq + Hkv, 1, D) query and key heads
        qk, _ = _rope_forward(heads, cos, sin, D, False)  # (B, Hq + Hkv, 1, D) both rotated to position t at once
        kv[i].k[:, :, t] = qk[:, Hq:, 0]  # append this position's rotated key and its value
        kv[i].v[:, :, t] = qkv[:, (Hq + Hkv) * D:].reshape(B, Hkv, D)
        qg = qk[:, :Hq].reshape(B, Hkv, G, D) * scale  # (B, Hkv, G, D) the G query heads of each kv head as rows
        att = qg @ kv[i].k[:, :, :t + 1].swapaxes(-1, -2)  # (B, Hkv, G, t+1) one position sees every key
        att, _ = _softmax_forward(att)  # (B, Hkv, G, t+1) rows sum to 1
        y = (att @ kv[i].v[:, :, :t + 1]).reshape(B, Hq * D)  # (B, Hkv, G, D) -> (B, Hq D) heads in order
        x += y @ params[p + "self_attn.o_proj.weight"].T  # (B, C) first residual add, in place
        h, _ = _rmsnorm_forward(x, params[p + "post_attention_layernorm.weight"], eps, 0.0, "input")  # (B, C)
        gu = h @ weights[i].gate_up  # (B, 2F) gate and up in one product
        a, _ = _swiglu_forward(gu[:, :F], gu[:, F:], config.activation)  # (B, F) act(gate) * up
        x += a @ params[p + "mlp.down_proj.weight"].T  # (B, C) second residual add
    xf, _ = _rmsnorm_forward(x, params["model.norm.weight"], eps, 0.0, "input")  # (B, C)
    return xf @ head_weight(params, config).T  # (B, V)
