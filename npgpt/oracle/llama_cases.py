"""Oracle cases for the Llama family: rmsnorm, rope, swiglu/geglu, gated_mlp, repeat_kv, the cross-entropy
variants, and a whole Llama training step (logits, loss, every gradient, AdamW steps).

Each case follows the oracle's protocol: `make(rng, sizes) -> (arrays, args)` draws float64 inputs (keys
`in.<name>`), the upstream gradient `dout` and the JSON-able arguments; `run(arrays, args)` calls npgpt on the
stored arrays (float64 or float32; integer arrays arrive as int64) and returns `out` and `grad.<name>` (the
training case: `logits`, `loss`, `grad.<param>`, `train.losses`, `final.<param>`).  `CASES` lists them as
LlamaCase records for the oracle's registry.  `sizes` has B, T, C, H, D, V, L; the Llama cases use Hq = 2H
query heads and Hkv = H kv heads (GQA) of size 2D (even for RoPE at any D), and a gated MLP of width 3C: sizes
that docs/oracle.md's shape notation (a whole multiple of one symbol) can write.
Variants and tolerances: docs/oracle.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ..layers.cross_entropy import cross_entropy_backward, cross_entropy_forward
from ..layers.gated_mlp import gated_mlp_backward, gated_mlp_forward
from ..layers.repeat_kv import repeat_kv_backward, repeat_kv_forward
from ..layers.rmsnorm import rmsnorm_backward, rmsnorm_forward
from ..layers.rope import rope_backward, rope_forward
from ..layers.swiglu import swiglu_backward, swiglu_forward
from ..llama import Llama, LlamaConfig, param_shapes
from .case import OracleError, run_training

Arrays = dict[str, np.ndarray]

TRAIN_STEPS = 10
ADAMW_HPARAMS: dict[str, Any] = {"lr": 1e-3, "betas": [0.9, 0.95], "eps": 1e-8, "weight_decay": 0.1}
LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 64}


class LlamaCase(NamedTuple):
    name: str
    forward: str  # qualified name of npgpt's forward
    backward: str
    inputs: tuple[str, ...]  # array inputs: keys in.<name>
    grads: tuple[str, ...]  # differentiable inputs, in the backward's order: keys grad.<name>
    make: Callable[[np.random.Generator, Any], tuple[Arrays, dict[str, Any]]]
    run: Callable[[Arrays, dict[str, Any]], Arrays]
    outputs: tuple[str, ...] = ("out",)


def _normal(rng: np.random.Generator, *shape: int, scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    return rng.standard_normal(shape) * scale + shift


def _grads(names: tuple[str, ...], g: Any) -> Arrays:
    g = g if isinstance(g, tuple) else (g,)
    return {f"grad.{n}": gi for n, gi in zip(names, g)}


# ---------------------------------------------------------------------------------------------- rmsnorm

def _make_rmsnorm(offset: float, stats: str) -> Callable[[np.random.Generator, Any], tuple[Arrays, dict[str, Any]]]:
    def make(rng: np.random.Generator, s: Any) -> tuple[Arrays, dict[str, Any]]:
        w = _normal(rng, s.C, scale=0.1, shift=0.0 if offset else 1.0)  # Gemma's w is near 0, Llama's near 1
        return {"in.x": _normal(rng, s.B, s.T, s.C, scale=2.0), "in.w": w, "dout": _normal(rng, s.B, s.T, s.C)}, \
            {"eps": 1e-6, "offset": offset, "stats": stats}
    return make


def _run_rmsnorm(a: Arrays, args: dict[str, Any]) -> Arrays:
    out, cache = rmsnorm_forward(a["in.x"], a["in.w"], eps=args["eps"], offset=args["offset"], stats=args["stats"])
    return {"out": out, **_grads(("x", "w"), rmsnorm_backward(a["dout"], cache))}


# ---------------------------------------------------------------------------------------------- rope

def _make_rope(variant: dict[str, Any]) -> Callable[[np.random.Generator, Any], tuple[Arrays, dict[str, Any]]]:
    def make(rng: np.random.Generator, s: Any) -> tuple[Arrays, dict[str, Any]]:
        D = 2 * s.D  # even, and room for a pass-through part
        a: Arrays = {"in.x": _normal(rng, s.B, s.H, s.T, D), "dout": _normal(rng, s.B, s.H, s.T, D)}
        args: dict[str, Any] = {"theta": variant.get("theta", 10000.0),
                                "interleaved": variant.get("interleaved", False),
                                "rotary_dim": D - 2 if variant.get("partial") else D, "offset": 0,
                                "scaling": variant.get("scaling")}
        if variant.get("positions"):
            a["in.positions"] = rng.integers(0, 4000, (s.B, s.T))  # per-row position ids (left padding, packing)
        else:
            args["offset"] = 17  # a KV cache's new tokens
        return a, args
    return make


def _run_rope(a: Arrays, args: dict[str, Any]) -> Arrays:
    out, cache = rope_forward(a["in.x"], positions=a.get("in.positions"), offset=args["offset"],
                              theta=args["theta"], rotary_dim=args["rotary_dim"], interleaved=args["interleaved"],
                              scaling=args["scaling"])
    return {"out": out, "grad.x": rope_backward(a["dout"], cache)}


# ---------------------------------------------------------------------------------------------- gated units

def _make_swiglu(activation: str) -> Callable[[np.random.Generator, Any], tuple[Arrays, dict[str, Any]]]:
    def make(rng: np.random.Generator, s: Any) -> tuple[Arrays, dict[str, Any]]:
        shape = (s.B, s.T, 3 * s.C)
        return {"in.gate": _normal(rng, *shape, scale=2.0), "in.up": _normal(rng, *shape),
                "dout": _normal(rng, *shape)}, {"activation": activation}
    return make


def _run_swiglu(a: Arrays, args: dict[str, Any]) -> Arrays:
    out, cache = swiglu_forward(a["in.gate"], a["in.up"], args["activation"])
    return {"out": out, **_grads(("gate", "up"), swiglu_backward(a["dout"], cache))}


def _make_gated_mlp(rng: np.random.Generator, s: Any) -> tuple[Arrays, dict[str, Any]]:
    F = 3 * s.C
    return {"in.x": _normal(rng, s.B, s.T, s.C), "in.w_gate": _normal(rng, F, s.C, scale=1 / math.sqrt(s.C)),
            "in.w_up": _normal(rng, F, s.C, scale=1 / math.sqrt(s.C)),
            "in.w_down": _normal(rng, s.C, F, scale=1 / math.sqrt(F)), "dout": _normal(rng, s.B, s.T, s.C)}, \
        {"activation": "silu"}


def _run_gated_mlp(a: Arrays, args: dict[str, Any]) -> Arrays:
    out, cache = gated_mlp_forward(a["in.x"], a["in.w_gate"], a["in.w_up"], a["in.w_down"], args["activation"])
    return {"out": out, **_grads(("x", "w_gate", "w_up", "w_down"), gated_mlp_backward(a["dout"], cache))}


def _make_repeat_kv(rng: np.random.Generator, s: Any) -> tuple[Arrays, dict[str, Any]]:
    return {"in.x": _normal(rng, s.B, s.H, s.T, s.D), "dout": _normal(rng, s.B, 3 * s.H, s.T, s.D)}, {"n_rep": 3}


def _run_repeat_kv(a: Arrays, args: dict[str, Any]) -> Arrays:
    out, cache = repeat_kv_forward(a["in.x"], args["n_rep"])
    return {"out": out, "grad.x": repeat_kv_backward(a["dout"], cache)}


# ---------------------------------------------------------------------------------------------- cross-entropy

def _make_ce(variant: dict[str, Any]) -> Callable[[np.random.Generator, Any], tuple[Arrays, dict[str, Any]]]:
    def make(rng: np.random.Generator, s: Any) -> tuple[Arrays, dict[str, Any]]:
        targets = rng.integers(0, s.V, (s.B, s.T))
        targets[0, 0] = -100  # one ignored position at least
        targets[rng.random((s.B, s.T)) < 0.2] = -100
        args = {"ignore_index": -100, **variant}
        dout = _normal(rng, s.B, s.T) if variant.get("reduction") == "none" else np.asarray(rng.uniform(0.5, 2.0))
        return {"in.logits": _normal(rng, s.B, s.T, s.V, scale=3.0), "in.targets": targets, "dout": dout}, args
    return make


def _run_ce(a: Arrays, args: dict[str, Any]) -> Arrays:
    kw = {k: args[k] for k in ("ignore_index", "reduction", "label_smoothing", "z_loss", "softcap") if k in args}
    loss, cache = cross_entropy_forward(a["in.logits"], a["in.targets"], **kw)
    dout = a["dout"] if loss.ndim else float(a["dout"])
    return {"out": np.asarray(loss), "grad.logits": cross_entropy_backward(dout, cache)}


# ---------------------------------------------------------------------------------------------- training step

def _llama_config(s: Any) -> LlamaConfig:
    return LlamaConfig(vocab_size=s.V, block_size=s.T, n_layer=s.L, n_head=2 * s.H, n_kv_head=s.H,
                       n_embd=s.C, head_dim=2 * s.D, intermediate_size=3 * s.C,
                       rms_norm_eps=1e-5, rope_theta=10000.0, rope_scaling=dict(LLAMA3_SCALING),
                       tie_word_embeddings=False)


def _make_llama_train(rng: np.random.Generator, s: Any) -> tuple[Arrays, dict[str, Any]]:
    config = _llama_config(s)
    arrays: Arrays = {}
    for name, shape in param_shapes(config).items():  # norm weights 1 + noise: the identity would hide a bug
        arrays[f"param.{name}"] = _normal(rng, *shape, scale=0.1, shift=1.0) if len(shape) == 1 else \
            _normal(rng, *shape, scale=1 / math.sqrt(shape[1]))
    arrays["idx"] = rng.integers(0, s.V, (s.B, s.T))
    targets = rng.integers(0, s.V, (s.B, s.T))
    targets[-1, -1] = -100  # one ignored target: the mean is over the others
    arrays["targets"] = targets
    adamw = {**ADAMW_HPARAMS, "steps": TRAIN_STEPS, "lr_schedule": "constant", "grad_clip": None,
             "weight_decay_applies_to": "2-D parameters", "bias_correction": True}
    return arrays, {"config": config.to_dict(), "param_names": list(param_shapes(config)), "adamw": adamw,
                    "ignore_index": -100}


def _run_llama_train(a: Arrays, args: dict[str, Any]) -> Arrays:
    config = LlamaConfig.from_dict(args["config"])
    names = args["param_names"]
    if names != list(param_shapes(config)):
        raise OracleError("meta.param_names: does not match the parameters of meta.config")
    dtype = a[f"param.{names[0]}"].dtype
    model = Llama(config, dtype=dtype, init=False)
    return run_training(model, a, args, names)


# ---------------------------------------------------------------------------------------------- the list

def _case(name: str, layer: str, inputs: tuple[str, ...], grads: tuple[str, ...],
          make: Callable[[np.random.Generator, Any], tuple[Arrays, dict[str, Any]]],
          run: Callable[[Arrays, dict[str, Any]], Arrays]) -> LlamaCase:
    return LlamaCase(name, f"npgpt.layers.{layer}_forward", f"npgpt.layers.{layer}_backward", inputs, grads, make,
                     run)


CE_VARIANTS: dict[str, dict[str, Any]] = {
    "cross_entropy_ignore_index": {},
    "cross_entropy_sum": {"reduction": "sum"},
    "cross_entropy_none": {"reduction": "none"},
    "cross_entropy_label_smoothing": {"label_smoothing": 0.1},
    "cross_entropy_z_loss": {"z_loss": 1e-2},
    "cross_entropy_softcap": {"softcap": 2.0},
    "cross_entropy_everything": {"reduction": "none", "label_smoothing": 0.1, "z_loss": 1e-2, "softcap": 2.0},
}
ROPE_VARIANTS: dict[str, dict[str, Any]] = {
    "rope_half_split": {},
    "rope_interleaved_partial": {"interleaved": True, "partial": True},
    "rope_position_ids_llama3": {"positions": True, "scaling": LLAMA3_SCALING, "theta": 500000.0},
    "rope_linear_scaling": {"scaling": {"rope_type": "linear", "factor": 4.0}},
}

CASES: tuple[LlamaCase, ...] = (
    _case("rmsnorm", "rmsnorm", ("x", "w"), ("x", "w"), _make_rmsnorm(0.0, "input"), _run_rmsnorm),
    _case("rmsnorm_gemma", "rmsnorm", ("x", "w"), ("x", "w"), _make_rmsnorm(1.0, "input"), _run_rmsnorm),
    _case("rmsnorm_float64_stats", "rmsnorm", ("x", "w"), ("x", "w"), _make_rmsnorm(0.0, "float64"), _run_rmsnorm),
    *(_case(name, "rope", ("x", "positions") if v.get("positions") else ("x",), ("x",), _make_rope(v), _run_rope)
      for name, v in ROPE_VARIANTS.items()),
    _case("swiglu", "swiglu", ("gate", "up"), ("gate", "up"), _make_swiglu("silu"), _run_swiglu),
    _case("geglu", "swiglu", ("gate", "up"), ("gate", "up"), _make_swiglu("gelu_tanh"), _run_swiglu),
    _case("gated_mlp", "gated_mlp", ("x", "w_gate", "w_up", "w_down"), ("x", "w_gate", "w_up", "w_down"),
          _make_gated_mlp, _run_gated_mlp),
    _case("repeat_kv", "repeat_kv", ("x",), ("x",), _make_repeat_kv, _run_repeat_kv),
    *(_case(name, "cross_entropy", ("logits", "targets"), ("logits",), _make_ce(v), _run_ce)
      for name, v in CE_VARIANTS.items()),
    LlamaCase("llama_train", "npgpt.llama.llama_forward", "npgpt.llama.llama_backward", (), (), _make_llama_train,
              _run_llama_train, ("logits", "loss")),
)
