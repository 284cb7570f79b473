"""One pre-LayerNorm transformer block (GPT-2):  x1 = x + attn(ln_1(x));  out = x1 + mlp(ln_2(x1)).

Parameters come in a mapping keyed by GPT-2's names inside a block ('ln_1.weight', 'attn.c_attn.weight',
'mlp.c_fc.bias', ...).  Forward x (B, T, C) -> out (B, T, C); backward dout -> dx and a dict of gradients.
Derivation: docs/derivations/block.md
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, generator, head_count, is_int, param, probability, upstream
from ..layers.dropout import DropoutCache, _dropout_backward, _dropout_forward
from ..layers.layernorm import LayerNormCache, _layernorm_backward, _layernorm_forward
from ..layers.mlp import MLPCache, _mlp_backward, _mlp_forward
from ..layers.self_attention import (KVSlot, SelfAttentionCache, _self_attention_backward, _self_attention_forward,
                                     check_kv)

Array = npt.NDArray[np.floating]

BLOCK_PARAM_NAMES = (
    "ln_1.weight", "ln_1.bias",
    "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias",
    "ln_2.weight", "ln_2.bias",
    "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias",
)
BLOCK_WEIGHT_NAMES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def block_param_shapes(C: int) -> dict[str, tuple[int, ...]]:
    """The shape of every block parameter for width C, keyed and ordered like BLOCK_PARAM_NAMES (MLP width 4C).
    The one place these shapes are written: the model's param_shapes is built from it."""
    shapes = [(C,), (C,), (C, 3 * C), (3 * C,), (C, C), (C,), (C,), (C,), (C, 4 * C), (4 * C,), (4 * C, C), (C,)]
    return dict(zip(BLOCK_PARAM_NAMES, shapes))


class BlockCache(NamedTuple):
    ln_1: LayerNormCache
    attn: SelfAttentionCache
    attn_drop: DropoutCache | None  # residual dropout on the attention branch; None when dropout is off
    ln_2: LayerNormCache
    mlp: MLPCache
    mlp_drop: DropoutCache | None  # residual dropout on the MLP branch; None when dropout is off


def block_forward(x: Array, p: Mapping[str, Array], n_head: int, dropout: float = 0.0,
                  rng: np.random.Generator | None = None, train: bool = False,
                  kv: KVSlot | None = None, attention_block: int | None = None) -> tuple[Array, BlockCache]:
    """x1 = x + drop(attn(ln_1(x)));  out = x1 + drop(mlp(ln_2(x1))).  x (B, T, C) -> out (B, T, C).

    kv: the attention's key/value cache when decoding; attention_block: the tiled attention's block size, or
    None for the dense pair (see self_attention).  See docs/derivations/block.md.
    """
    float_array("x", x, ndim=3)
    missing = [n for n in BLOCK_PARAM_NAMES if n not in p]
    if missing:
        raise ValueError(f"p: missing block parameter(s) {missing}")
    for name, shape in block_param_shapes(x.shape[-1]).items():
        param(name, p[name], shape, x.dtype)  # errors name the GPT-2 parameter, e.g. 'mlp.c_proj.weight: ...'
    n_head = head_count("n_head", n_head, x.shape[-1])
    dropout = probability("dropout", dropout)
    if train and dropout > 0.0:
        generator("rng", rng)
    if kv is not None:
        check_kv("kv", kv, x, n_head)
    if attention_block is not None and (not is_int(attention_block) or attention_block < 1):
        raise ValueError(f"attention_block: expected None or a positive integer, got {attention_block!r}")
    return _block_forward(x, p, n_head, dropout, rng, train, kv, attention_block)


def _block_forward(x: Array, p: Mapping[str, Array], n_head: int, dropout: float = 0.0,
                   rng: np.random.Generator | None = None, train: bool = False,
                   kv: KVSlot | None = None, attention_block: int | None = None) -> tuple[Array, BlockCache]:
    """block_forward without the argument checks."""
    h, ln_1_cache = _layernorm_forward(x, p["ln_1.weight"], p["ln_1.bias"])  # (B, T, C)
    a, attn_cache = _self_attention_forward(h, p["attn.c_attn.weight"], p["attn.c_attn.bias"],
                                            p["attn.c_proj.weight"], p["attn.c_proj.bias"], n_head, kv,
                                            attention_block)  # (B, T, C)
    drop = train and dropout > 0.0  # off: each branch joins the stream as it is (dropout would copy)
    a, attn_drop_cache = _dropout_forward(a, dropout, rng, train) if drop else (a, None)  # (B, T, C)
    x1 = x + a  # (B, T, C) first residual add
    h, ln_2_cache = _layernorm_forward(x1, p["ln_2.weight"], p["ln_2.bias"])  # (B, T, C)
    m, mlp_cache = _mlp_forward(h, p["mlp.c_fc.weight"], p["mlp.c_fc.bias"],
                                p["mlp.c_proj.weight"], p["mlp.c_proj.bias"])  # (B, T, C)
    m, mlp_drop_cache = _dropout_forward(m, dropout, rng, train) if drop else (m, None)  # (B, T, C)
    out = x1 + m  # (B, T, C) second residual add
    return out, BlockCache(ln_1_cache, attn_cache, attn_drop_cache, ln_2_cache, mlp_cache, mlp_drop_cache)


def block_backward(dout: Array, cache: BlockCache) -> tuple[Array, dict[str, Array]]:
    """Each residual add copies its gradient to both of its inputs, so dx1 = dout + (MLP branch) and
    dx = dx1 + (attention branch).  Returns dx (B, T, C) and the gradients keyed like p.

    See docs/derivations/block.md.
    """
    upstream("dout", dout, cache.ln_1.xhat.shape, cache.ln_1.xhat.dtype)
    return _block_backward(dout, cache)


def _block_backward(dout: Array, cache: BlockCache,
                    out: Mapping[str, Array] | None = None) -> tuple[Array, dict[str, Array]]:
    """block_backward without the argument checks.  out (a model's gradient buffer, keyed like the block's
    parameters): the four weight matrices' gradients are built in its arrays and returned as them."""
    o = {} if out is None else out
    g: dict[str, Array] = {}
    dm = dout if cache.mlp_drop is None else _dropout_backward(dout, cache.mlp_drop)  # (1) (B, T, C)
    dh, g["mlp.c_fc.weight"], g["mlp.c_fc.bias"], g["mlp.c_proj.weight"], g["mlp.c_proj.bias"] = \
        _mlp_backward(dm, cache.mlp, o.get("mlp.c_fc.weight"), o.get("mlp.c_proj.weight"))  # (2) (B, T, C)
    dx1_branch, g["ln_2.weight"], g["ln_2.bias"] = _layernorm_backward(dh, cache.ln_2)  # (3) (B, T, C)
    dx1 = dout + dx1_branch  # (4) (B, T, C) residual: straight path + MLP branch
    da = dx1 if cache.attn_drop is None else _dropout_backward(dx1, cache.attn_drop)  # (5) (B, T, C)
    dh, g["attn.c_attn.weight"], g["attn.c_attn.bias"], g["attn.c_proj.weight"], g["attn.c_proj.bias"] = \
        _self_attention_backward(da, cache.attn, o.get("attn.c_attn.weight"),
                                 o.get("attn.c_proj.weight"))  # (6) (B, T, C)
    dx_branch, g["ln_1.weight"], g["ln_1.bias"] = _layernorm_backward(dh, cache.ln_1)  # (7) (B, T, C)
    dx = dx1 + dx_branch  # (8) (B, T, C) residual: straight path + attention branch
    return dx, {n: g[n] for n in BLOCK_PARAM_NAMES}
