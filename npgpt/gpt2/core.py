"""GPT-2 as plain functions: the parameters, the forward from token ids to the loss, and the backward.

logits = ln_f(blocks(wte[idx] + wpe[:T])) @ wte.T        (the LM head is tied to the token embedding)
`logits, loss, cache = gpt_forward(params, config, idx, targets)`;  `grads = gpt_backward(cache)`.
Nothing here knows about threads or buffers: the GPT class (model.py) hands these functions to the runtime
(npgpt/runtime), and gpt_grads (the gradients one at a time, as the backward reaches them) is the one hook the
fast path uses.  Walkthrough: docs/model.md
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import token_batch, float_array, generator, param_dict
from .config import GPTConfig
from .block import (BLOCK_PARAM_NAMES, BLOCK_WEIGHT_NAMES, BlockCache, _block_backward, _block_forward,
                           block_param_shapes)
from ..layers.cross_entropy import CrossEntropyCache, cross_entropy_backward, cross_entropy_forward
from ..layers.dropout import DropoutCache, _dropout_backward, _dropout_forward
from ..layers.embedding import EmbeddingCache, _embedding_backward_rows, _embedding_forward
from ..layers.layernorm import LayerNormCache, _layernorm_backward, _layernorm_forward
from ..layers.self_attention import KVSlot

Array = npt.NDArray[np.floating]
Params = Mapping[str, Array]


def param_shapes(config: GPTConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape, exactly as in a GPT-2 checkpoint (the tied lm_head has no entry)."""
    V, T, C = config.vocab_size, config.block_size, config.n_embd
    shapes: dict[str, tuple[int, ...]] = {"wte.weight": (V, C), "wpe.weight": (T, C)}
    block = block_param_shapes(C)  # the block's own list of its parameters
    for i in range(config.n_layer):
        shapes.update({f"h.{i}.{name}": shape for name, shape in block.items()})
    shapes["ln_f.weight"] = (C,)
    shapes["ln_f.bias"] = (C,)
    return shapes


def init_params(config: GPTConfig, rng: np.random.Generator, out: Mapping[str, Array] | None = None,
                dtype: npt.DTypeLike = np.float32) -> dict[str, Array]:
    """GPT-2 initialisation: weights ~ N(0, 0.02), residual projections (attn.c_proj, mlp.c_proj)
    ~ N(0, 0.02 / sqrt(2 n_layer)), biases 0, LayerNorm weight 1 and bias 0.

    Written into the arrays of `out` if given, else into new `dtype` arrays; returns the dict.
    """
    params = dict(out) if out is not None else \
        {k: np.zeros(s, dtype=dtype) for k, s in param_shapes(config).items()}
    proj_std = 0.02 / math.sqrt(2 * config.n_layer)
    for name, p in params.items():
        if name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
            p[...] = 1.0
        elif name.endswith(".bias"):
            p[...] = 0.0
        else:
            std = proj_std if name.endswith("c_proj.weight") else 0.02
            p[...] = rng.normal(0.0, std, size=p.shape)
    return params


class GPTCache(NamedTuple):
    """Everything gpt_backward needs, layer by layer."""

    config: GPTConfig
    tok: EmbeddingCache  # token ids, for the scatter-add into wte
    drop: DropoutCache | None  # embedding dropout; None when it is off
    blocks: list[BlockCache]
    ln_f: LayerNormCache
    xf: Array  # (B, T, C) ln_f output: the LM head's input, needed for the head's part of dwte
    wte: Array  # (V, C) the tied weight: the head's backward needs it for dx
    ce: CrossEntropyCache | None  # None when no targets were given
    dtype: np.dtype


def gpt_forward(
    params: Params,
    config: GPTConfig,
    idx: npt.NDArray[np.integer],
    targets: npt.NDArray[np.integer] | None = None,
    *,
    train: bool = False,
    rng: np.random.Generator | None = None,
) -> tuple[Array, Array | None, GPTCache]:
    """logits (B, T, V), mean cross-entropy loss (0-d, or None without targets), and the cache.

    idx, targets (B, T) ints in [0, V) with T <= block_size.  Dropout only when train=True (drawn from rng).
    See docs/model.md.
    """
    check_inputs(config, idx, targets)
    if not isinstance(params, Mapping) or "wte.weight" not in params:
        raise ValueError("params: expected a mapping with a 'wte.weight' entry (keys as in param_shapes)")
    wte = float_array("wte.weight", params["wte.weight"])
    param_dict("params", params, param_shapes(config), wte.dtype, ref="wte.weight")
    if train and config.dropout > 0.0:
        generator("rng", rng)
    return _gpt_forward(params, config, idx, targets, train=train, rng=rng)


def check_inputs(config: GPTConfig, idx: object, targets: object | None) -> None:
    """The checks of the forward's config, idx and targets (each error names its argument)."""
    if not isinstance(config, GPTConfig):
        raise ValueError(f"config: expected a GPTConfig, got {type(config).__name__}")
    token_batch(idx, targets, config.vocab_size, config.block_size)


def _gpt_forward(params: Params, config: GPTConfig, idx: npt.NDArray[np.integer],
                 targets: npt.NDArray[np.integer] | None = None, *, train: bool = False,
                 rng: np.random.Generator | None = None,
                 kv: list[KVSlot] | None = None) -> tuple[Array, Array | None, GPTCache]:
    """gpt_forward without the argument checks.  kv (decoding, generate.py): one KVSlot per layer; idx
    are then the tokens at positions kv[0].start .. kv[0].start + T - 1."""
    B, T = idx.shape
    wte, wpe = params["wte.weight"], params["wpe.weight"]
    p_drop = config.dropout if train else 0.0
    t0 = 0 if kv is None else kv[0].start  # position of the first token of idx

    x, tok_cache = _embedding_forward(idx, wte)  # (B, T, C) a fresh copy of the rows
    x += wpe[t0:t0 + T]  # (B, T, C) learned positions, broadcast over B; in place on that copy
    x, drop_cache = _dropout_forward(x, p_drop, rng) if p_drop > 0.0 else (x, None)  # (B, T, C) off: no copy
    block_caches = []
    for i in range(config.n_layer):
        p = {name: params[f"h.{i}.{name}"] for name in BLOCK_PARAM_NAMES}
        x, c = _block_forward(x, p, config.n_head, p_drop, rng, train, None if kv is None else kv[i],
                              config.attention_block)  # (B, T, C)
        block_caches.append(c)
    xf, ln_f_cache = _layernorm_forward(x, params["ln_f.weight"], params["ln_f.bias"])  # (B, T, C)
    logits = (xf.reshape(-1, config.n_embd) @ wte.T).reshape(B, T, -1)  # (B, T, V) tied LM head, no bias
    # one 2-D product: a (B, T, C) @ (C, V) matmul runs as B products of T rows, half the speed at 124M's B4 T64
    loss, ce_cache = (None, None) if targets is None else cross_entropy_forward(logits, targets)
    cache = GPTCache(config, tok_cache, drop_cache, block_caches, ln_f_cache, xf, wte, ce_cache, wte.dtype)
    return logits, loss, cache


def forward_for_runtime(params: Params, config: GPTConfig, idx: npt.NDArray[np.integer],
                        targets: npt.NDArray[np.integer] | None, train: bool,
                        rng: np.random.Generator | None) -> tuple[Array, Array | None, GPTCache]:
    """_gpt_forward with the runtime's signature (runtime/core.py): dropout on when train, drawing from rng."""
    return _gpt_forward(params, config, idx, targets, train=train, rng=rng)


def gpt_grads(cache: GPTCache, dloss: float = 1.0,
              out: Mapping[str, Array] | None = None) -> Iterator[tuple[str, Array]]:
    """The backward, yielding (name, gradient of dloss * loss) for every parameter as soon as it is known:
    the last layer's first, wte's last.  gpt_backward collects them; the data-parallel path sums them.
    out (GPT's gradient buffer): the gradients of the weight matrices (wte's (V, C) and each block's four)
    are then built in out's arrays by their matrix products and yielded as those very arrays: no temporary
    to copy.

    See docs/model.md for where each gradient comes from.
    """
    if cache.ce is None:
        raise ValueError("cache: the forward was run without targets, so there is no loss to differentiate")
    config = cache.config
    dlogits = cross_entropy_backward(dloss, cache.ce)  # (B, T, V)
    B, T, V = dlogits.shape
    C = config.n_embd
    dlogits2 = dlogits.reshape(-1, V)  # (B*T, V)
    if out is None:
        dwte = dlogits2.T @ cache.xf.reshape(-1, C)  # (V, C) first source of dwte: the LM head
    else:
        _check_out(out, cache)
        dwte = np.matmul(dlogits2.T, cache.xf.reshape(-1, C), out=out["wte.weight"])  # (V, C) the same, in place
    dx: Array = (dlogits2 @ cache.wte).reshape(B, T, C)  # (B, T, C)
    dx, dw, db = _layernorm_backward(dx, cache.ln_f)  # (B, T, C)
    yield "ln_f.weight", dw
    yield "ln_f.bias", db
    for i in reversed(range(config.n_layer)):
        dst = None if out is None else {n: out[f"h.{i}.{n}"] for n in BLOCK_WEIGHT_NAMES}  # built in place
        dx, block_grads = _block_backward(dx, cache.blocks[i], dst)  # (B, T, C)
        for name, grad in block_grads.items():
            yield f"h.{i}.{name}", grad
    if cache.drop is not None:
        dx = _dropout_backward(dx, cache.drop)  # (B, T, C)
    dwpe = np.zeros((config.block_size, C), dtype=cache.dtype)  # (block_size, C)
    dwpe[:T] = dx.sum(axis=0)  # (T, C) every sequence in the batch used the same positions
    yield "wpe.weight", dwpe
    rows, drows = _embedding_backward_rows(dx, cache.tok)  # (U,), (U, C) second source of dwte: the lookup
    dwte[rows] += drows  # the two add, on the U rows the batch read (distinct, so the fancy += is exact)
    yield "wte.weight", dwte


def _check_out(out: object, cache: GPTCache) -> None:
    """gpt_grads's out: a mapping with an array of the right shape and dtype for every weight matrix."""
    shapes = param_shapes(cache.config)
    names = ["wte.weight"] + [f"h.{i}.{n}" for i in range(cache.config.n_layer) for n in BLOCK_WEIGHT_NAMES]
    for name in names:
        w = out.get(name) if isinstance(out, Mapping) else None
        if not isinstance(w, np.ndarray) or w.shape != shapes[name] or w.dtype != cache.dtype:
            got = f"{w.dtype} {w.shape}" if isinstance(w, np.ndarray) else type(w).__name__
            raise ValueError(f"out: expected a mapping whose {name!r} is a {cache.dtype} array of shape "
                             f"{shapes[name]}, got {got}")


def _write_grads(out: Mapping[str, Array], cache: GPTCache, dloss: float = 1.0) -> None:
    """Every gradient of gpt_grads written into out (a gradient buffer's views), each as soon as it is known."""
    for name, grad in gpt_grads(cache, dloss, out=out):
        if grad is not out[name]:  # the weight matrices' are built in out already
            out[name][...] = grad


def gpt_backward(cache: GPTCache, dloss: float = 1.0) -> dict[str, Array]:
    """Gradient of dloss * (the mean loss) with respect to every parameter, keyed and ordered like params.

    See docs/model.md for where each gradient comes from.
    """
    grads = dict(gpt_grads(cache, dloss))
    return {k: grads[k] for k in param_shapes(cache.config)}
