"""Oracle cases for GPT-2: one per layer pair (embedding ... block) and `gpt_train`, a whole model's
logits, loss, every gradient and ten AdamW steps.  `CASES` lists them for the registry (registry.py).
Keys and shapes of each file: docs/oracle.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .. import layers as L
from ..gpt2 import block as B
from ..gpt2.config import GPTConfig
from ..gpt2.core import init_params, param_shapes
from ..gpt2.model import GPT
from .case import Arrays, Case, OracleError, Sizes, run_training

__all__ = ["CASES", "DROPOUT_P", "TRAIN_STEPS", "ADAMW_HPARAMS"]

DROPOUT_P = 0.25
TRAIN_STEPS = 10
ADAMW_HPARAMS: dict[str, Any] = {"lr": 1e-3, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1}


def _normal(rng: np.random.Generator, *shape: int, scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    return rng.standard_normal(shape) * scale + shift


def _linear_params(rng: np.random.Generator, c_in: int, c_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Weight ~ N(0, 1/c_in) keeps activations O(1); the bias is small but never zero."""
    return _normal(rng, c_in, c_out, scale=1.0 / math.sqrt(c_in)), _normal(rng, c_out, scale=0.1)


def _layernorm_params(rng: np.random.Generator, c: int) -> tuple[np.ndarray, np.ndarray]:
    """Weight 1 + noise, bias noise: the identity initialisation would hide a swapped dw and db."""
    return _normal(rng, c, scale=0.1, shift=1.0), _normal(rng, c, scale=0.1)


def _pair(forward: Callable[..., Any], backward: Callable[..., Any], names: tuple[str, ...],
          grads: tuple[str, ...], **kw_from_args: str) -> Callable[[Arrays, dict[str, Any]], Arrays]:
    """`run` for a pair whose forward takes the arrays `names` positionally plus keyword options from args."""
    def run(a: Arrays, args: dict[str, Any]) -> Arrays:
        kwargs = {k: args[v] for k, v in kw_from_args.items()}
        out, cache = forward(*(a[f"in.{n}"] for n in names), **kwargs)
        g = backward(a["dout"], cache)
        g = g if isinstance(g, tuple) else (g,)
        return {"out": out, **{f"grad.{n}": gi for n, gi in zip(grads, g)}}
    return run


def _make_embedding(rng: np.random.Generator, s: Sizes) -> tuple[Arrays, dict[str, Any]]:
    idx = rng.integers(0, s.V, size=(s.B, s.T))
    idx.reshape(-1)[-1] = idx.reshape(-1)[0]  # at least one row read twice: the backward must add, not assign
    return {"in.idx": idx, "in.w": _normal(rng, s.V, s.C), "dout": _normal(rng, s.B, s.T, s.C)}, {}


def _make_linear(rng: np.random.Generator, s: Sizes) -> tuple[Arrays, dict[str, Any]]:
    w, b = _linear_params(rng, s.C, 3 * s.C)
    return {"in.x": _normal(rng, s.B, s.T, s.C), "in.w": w, "in.b": b, "dout": _normal(rng, s.B, s.T, 3 * s.C)}, {}


def _make_layernorm(rng: np.random.Generator, s: Sizes) -> tuple[Arrays, dict[str, Any]]:
    x = _normal(rng, s.B, s.T, s.C, scale=2.0) + _normal(rng, s.B, s.T, 1)  # rows with their own mean
    w, b = _layernorm_params(rng, s.C)
    return {"in.x": x, "in.w": w, "in.b": b, "dout": _normal(rng, s.B, s.T, s.C)}, {"eps": 1e-5}


def _make_gelu(rng: np.random.Generator, s: Sizes) -> tuple[Arrays, dict[str, Any]]:
    return {"in.x": _normal(rng, s.B, s.T, 4 * s.C, scale=2.0), "dout": _normal(rng, s.B, s.T, 4 * s.C)}, {}


def _make_softmax(rng: np.random.Generator, s: Sizes) -> tuple[Arrays, dict[str, Any]]:
    return {"in.x": _normal(rng, s.B, s.T, s.V, scale=2.0), "dout": _normal(rng, s.B, s.T, s.V)}, {}


def _make_attention(rng: np.random.Generator, s: Sizes) -> tuple[Arrays, dict[str, Any]]:
    shape = (s.B, s.H, s.T, s.D)
    return {"in.q": _normal(rng, *shape), "in.k": _normal(rng, *shape), "in.v": _normal(rng, *shape),
            "dout": _normal(rng, *shape)}, {}


def _make_split_heads(rng: np.random.Generator, s: Sizes) -> tuple[Arrays, dict[str, Any]]:
    return {"in.x": _normal(rng, s.B, s.T, s.C), "dout": _normal(rng, s.B, s.H, s.T, s.D)}, {"n_head": s.H}


def _make_merge_heads(rng: np.random.Generator, s: Sizes) -> tuple[Arrays, dict[str, Any]]:
    return {"in.x": _normal(rng, s.B, s.H, s.T, s.D), "dout": _normal(rng, s.B, s.T, s.C)}, {}


def _make_dropout(rng: np.random.Generator, s: Sizes) -> tuple[Arrays, dict[str, Any]]:
    rng_seed = int(rng.integers(0, 2**63 - 1))
    return {"in.x": _normal(rng, s.B, s.T, s.C), "dout": _normal(rng, s.B, s.T, s.C)}, \
        {"p": DROPOUT_P, "train": True, "rng": {"kind": "numpy.random.default_rng", "seed": rng_seed}}


def _run_dropout(a: Arrays, args: dict[str, Any]) -> Arrays:
    rng = np.random.default_rng(args["rng"]["seed"])
    out, cache = L.dropout_forward(a["in.x"], args["p"], rng, args["train"])
    keep = np.zeros(a["in.x"].shape, np.uint8) if cache.scaled_mask is None else (cache.scaled_mask != 0)
    return {"keep": keep.astype(np.uint8), "out": out, "grad.x": L.dropout_backward(a["dout"], cache)}


def _make_cross_entropy(rng: np.random.Generator, s: Sizes) -> tuple[Arrays, dict[str, Any]]:
    return {"in.logits": _normal(rng, s.B, s.T, s.V, scale=2.0), "in.targets": rng.integers(0, s.V, (s.B, s.T)),
            "dout": np.asarray(rng.uniform(0.5, 2.0))}, {}


def _make_mlp(rng: np.random.Generator, s: Sizes) -> tuple[Arrays, dict[str, Any]]:
    w_fc, b_fc = _linear_params(rng, s.C, 4 * s.C)
    w_proj, b_proj = _linear_params(rng, 4 * s.C, s.C)
    return {"in.x": _normal(rng, s.B, s.T, s.C), "in.w_fc": w_fc, "in.b_fc": b_fc, "in.w_proj": w_proj,
            "in.b_proj": b_proj, "dout": _normal(rng, s.B, s.T, s.C)}, {"approximate": "tanh"}


def _make_self_attention(rng: np.random.Generator, s: Sizes) -> tuple[Arrays, dict[str, Any]]:
    w_attn, b_attn = _linear_params(rng, s.C, 3 * s.C)
    w_proj, b_proj = _linear_params(rng, s.C, s.C)
    return {"in.x": _normal(rng, s.B, s.T, s.C), "in.w_attn": w_attn, "in.b_attn": b_attn, "in.w_proj": w_proj,
            "in.b_proj": b_proj, "dout": _normal(rng, s.B, s.T, s.C)}, {"n_head": s.H}


def _block_param_arrays(rng: np.random.Generator, C: int) -> Arrays:
    p: Arrays = {}
    p["ln_1.weight"], p["ln_1.bias"] = _layernorm_params(rng, C)
    p["attn.c_attn.weight"], p["attn.c_attn.bias"] = _linear_params(rng, C, 3 * C)
    p["attn.c_proj.weight"], p["attn.c_proj.bias"] = _linear_params(rng, C, C)
    p["ln_2.weight"], p["ln_2.bias"] = _layernorm_params(rng, C)
    p["mlp.c_fc.weight"], p["mlp.c_fc.bias"] = _linear_params(rng, C, 4 * C)
    p["mlp.c_proj.weight"], p["mlp.c_proj.bias"] = _linear_params(rng, 4 * C, C)
    return {n: p[n] for n in B.BLOCK_PARAM_NAMES}


def _make_block(rng: np.random.Generator, s: Sizes) -> tuple[Arrays, dict[str, Any]]:
    x = _normal(rng, s.B, s.T, s.C)
    p = _block_param_arrays(rng, s.C)
    return {"in.x": x, **{f"in.p.{n}": a for n, a in p.items()}, "dout": _normal(rng, s.B, s.T, s.C)}, \
        {"n_head": s.H, "dropout": 0.0, "train": False}


def _run_block(a: Arrays, args: dict[str, Any]) -> Arrays:
    p = {n: a[f"in.p.{n}"] for n in B.BLOCK_PARAM_NAMES}
    out, cache = B.block_forward(a["in.x"], p, args["n_head"], args["dropout"], None, args["train"])
    dx, g = B.block_backward(a["dout"], cache)
    return {"out": out, "grad.x": dx, **{f"grad.p.{n}": g[n] for n in B.BLOCK_PARAM_NAMES}}


def _make_gpt_train(rng: np.random.Generator, s: Sizes) -> tuple[Arrays, dict[str, Any]]:
    config = GPTConfig(vocab_size=s.V, block_size=s.T, n_layer=s.L, n_head=s.H, n_embd=s.C, dropout=0.0)
    params = {k: np.zeros(shape) for k, shape in param_shapes(config).items()}
    init_params(config, rng, params)  # GPT-2's initialisation, then noise where it would be degenerate
    for name, p in params.items():
        if name.endswith(".bias"):
            p += _normal(rng, *p.shape, scale=0.02)
        elif name.endswith(("ln_1.weight", "ln_2.weight", "ln_f.weight")):
            p += _normal(rng, *p.shape, scale=0.1)
    arrays: Arrays = {f"param.{k}": v for k, v in params.items()}
    arrays["idx"] = rng.integers(0, s.V, (s.B, s.T))
    arrays["targets"] = rng.integers(0, s.V, (s.B, s.T))
    adamw = {**ADAMW_HPARAMS, "betas": list(ADAMW_HPARAMS["betas"]), "steps": TRAIN_STEPS,
             "lr_schedule": "constant", "grad_clip": None, "weight_decay_applies_to": "2-D parameters",
             "bias_correction": True}
    return arrays, {"config": config.to_dict(), "param_names": list(params), "adamw": adamw, "train": True}


def _run_gpt_train(a: Arrays, args: dict[str, Any]) -> Arrays:
    config = GPTConfig.from_dict(args["config"])
    names = args["param_names"]
    if names != list(param_shapes(config)):
        raise OracleError("meta.param_names: does not match the parameters of meta.config")
    dtype = a[f"param.{names[0]}"].dtype
    model = GPT(config, seed=0, dtype=dtype)
    return run_training(model, a, args, names)


def _gelu_case(form: str) -> Case:
    def make(rng: np.random.Generator, s: Sizes) -> tuple[Arrays, dict[str, Any]]:
        return _make_gelu(rng, s)[0], {"approximate": form}
    return Case(f"gelu_{form}", "npgpt.layers.gelu_forward", "npgpt.layers.gelu_backward", ("x",), ("x",), make,
                _pair(L.gelu_forward, L.gelu_backward, ("x",), ("x",), approximate="approximate"))


_XWB = ("x", "w", "b")
_MLP = ("x", "w_fc", "b_fc", "w_proj", "b_proj")
_SELF_ATTENTION = ("x", "w_attn", "b_attn", "w_proj", "b_proj")
_BLOCK_INPUTS = ("x", *(f"p.{n}" for n in B.BLOCK_PARAM_NAMES))

CASES: tuple[Case, ...] = (
    Case("embedding", "npgpt.layers.embedding_forward", "npgpt.layers.embedding_backward", ("idx", "w"), ("w",),
         _make_embedding, _pair(L.embedding_forward, L.embedding_backward, ("idx", "w"), ("w",))),
    Case("linear", "npgpt.layers.linear_forward", "npgpt.layers.linear_backward", _XWB, _XWB, _make_linear,
         _pair(L.linear_forward, L.linear_backward, _XWB, _XWB)),
    Case("layernorm", "npgpt.layers.layernorm_forward", "npgpt.layers.layernorm_backward", _XWB, _XWB,
         _make_layernorm, _pair(L.layernorm_forward, L.layernorm_backward, _XWB, _XWB, eps="eps")),
    _gelu_case("tanh"),
    _gelu_case("erf"),
    Case("softmax", "npgpt.layers.softmax_forward", "npgpt.layers.softmax_backward", ("x",), ("x",), _make_softmax,
         _pair(L.softmax_forward, L.softmax_backward, ("x",), ("x",))),
    Case("attention", "npgpt.layers.attention_forward", "npgpt.layers.attention_backward", ("q", "k", "v"),
         ("q", "k", "v"), _make_attention,
         _pair(L.attention_forward, L.attention_backward, ("q", "k", "v"), ("q", "k", "v"))),
    Case("split_heads", "npgpt.layers.split_heads_forward", "npgpt.layers.split_heads_backward", ("x",), ("x",),
         _make_split_heads, _pair(L.split_heads_forward, L.split_heads_backward, ("x",), ("x",), n_head="n_head")),
    Case("merge_heads", "npgpt.layers.merge_heads_forward", "npgpt.layers.merge_heads_backward", ("x",), ("x",),
         _make_merge_heads, _pair(L.merge_heads_forward, L.merge_heads_backward, ("x",), ("x",))),
    Case("dropout", "npgpt.layers.dropout_forward", "npgpt.layers.dropout_backward", ("x",), ("x",), _make_dropout,
         _run_dropout, outputs=("keep", "out")),
    Case("cross_entropy", "npgpt.layers.cross_entropy_forward", "npgpt.layers.cross_entropy_backward",
         ("logits", "targets"), ("logits",), _make_cross_entropy,
         _pair(L.cross_entropy_forward, L.cross_entropy_backward, ("logits", "targets"), ("logits",))),
    Case("mlp", "npgpt.layers.mlp_forward", "npgpt.layers.mlp_backward", _MLP, _MLP, _make_mlp,
         _pair(L.mlp_forward, L.mlp_backward, _MLP, _MLP, approximate="approximate")),
    Case("self_attention", "npgpt.layers.self_attention_forward", "npgpt.layers.self_attention_backward",
         _SELF_ATTENTION, _SELF_ATTENTION, _make_self_attention,
         _pair(L.self_attention_forward, L.self_attention_backward, _SELF_ATTENTION, _SELF_ATTENTION,
               n_head="n_head")),
    Case("block", "npgpt.layers.block_forward", "npgpt.layers.block_backward", _BLOCK_INPUTS, _BLOCK_INPUTS,
         _make_block, _run_block),
    Case("gpt_train", "npgpt.gpt_forward", "npgpt.gpt_backward", (), (), _make_gpt_train, _run_gpt_train,
         outputs=()),
)
