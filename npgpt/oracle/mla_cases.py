"""Oracle cases for multi-head latent attention (DeepSeek-V2/V3): the plain pair with a query latent (`mla`),
with one q_proj, half-split RoPE and biases (`mla_no_q_lora`), and the absorbed form decoding kernels use
(`mla_absorbed`, forward only: its output, its absorbed weights and the latent cache it fills).

Each case follows the oracle's protocol: `make(rng, sizes) -> (arrays, args)` draws float64 inputs (`in.x` and
the parameters as `in.p.<name>`, HF's DeepseekV3Attention names), `dout` for the plain pair, and the JSON-able
arguments (the MLAConfig as a dict, the RoPE base and first position); `run(arrays, args)` calls npgpt on the
stored arrays and returns `out` and `grad.<name>` (the absorbed case: `out`, `latent`, `w_q`, `w_o`).  The
sizes are whole multiples of the dump's (Dn = D, R = 2D, Dv = 2D, r = 3D, rq = 4D), so that docs/oracle.md's
shape notation can write every shape.  Layout and variants: docs/oracle.md ("Latent attention cases").
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ..layers.mla import MLAConfig, mla_backward, mla_forward, mla_param_shapes
from ..layers.mla_absorbed import LatentSlot, mla_absorb, mla_absorbed_forward
from ..layers.rope import rope_inv_freq, rope_tables
from .case import OracleError, Sizes

Arrays = dict[str, np.ndarray]
Make = Callable[[np.random.Generator, Any], tuple[Arrays, dict[str, Any]]]

ROPE_THETA = 10000.0
OFFSET = 3  # the first position: the RoPE tables start there, as for tokens after a cached prefix
# rope_scaling of the `mla` case: only factor and mscale_all_dim matter to the layer (the softmax scale)
YARN = {"rope_type": "yarn", "factor": 4.0, "mscale": 1.0, "mscale_all_dim": 0.8,
        "original_max_position_embeddings": 64}


class MLACase(NamedTuple):
    name: str
    forward: str  # qualified name of npgpt's forward
    backward: str  # "" for the absorbed form: forward only
    inputs: tuple[str, ...]  # array inputs: keys in.<name>
    grads: tuple[str, ...]  # differentiable inputs, in the backward's order: keys grad.<name>
    make: Make
    run: Callable[[Arrays, dict[str, Any]], Arrays]
    outputs: tuple[str, ...] = ("out",)


def _config(s: Any, variant: dict[str, Any]) -> MLAConfig:
    """The case's shapes from the dump's sizes: Dn = D, R = 2D (even for any D), Dv = 2D != Dqk = 3D, r = 3D,
    rq = 4D (or one q_proj)."""
    return MLAConfig(n_embd=s.C, n_head=s.H, kv_lora_rank=3 * s.D, qk_nope_head_dim=s.D,
                     qk_rope_head_dim=2 * s.D, v_head_dim=2 * s.D,
                     q_lora_rank=4 * s.D if variant["q_lora"] else None, attention_bias=variant["bias"],
                     rope_interleave=variant["interleave"], rope_scaling=variant["rope_scaling"])


def _names(variant: dict[str, Any]) -> tuple[str, ...]:
    """The variant's parameter names (which exist depends on the flavour, not on the sizes)."""
    return tuple(mla_param_shapes(_config(Sizes(B=1, T=1, C=1, H=1, V=2, L=1), variant)))


def _normal(rng: np.random.Generator, *shape: int, scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    return rng.standard_normal(shape) * scale + shift


def _params(rng: np.random.Generator, config: MLAConfig) -> Arrays:
    """The file's conventions: matrices N(0, 1/fan_in), biases N(0, 0.1^2), norm weights 1 + N(0, 0.1^2)."""
    p: Arrays = {}
    for name, shape in mla_param_shapes(config).items():
        if name.endswith("layernorm.weight"):
            p[name] = _normal(rng, *shape, scale=0.1, shift=1.0)
        elif name.endswith(".bias"):
            p[name] = _normal(rng, *shape, scale=0.1)
        else:
            p[name] = _normal(rng, *shape, scale=1.0 / math.sqrt(shape[1]))
    return p


def _make(variant: dict[str, Any], backward: bool) -> Make:
    def make(rng: np.random.Generator, s: Any) -> tuple[Arrays, dict[str, Any]]:
        config = _config(s, variant)
        a: Arrays = {"in.x": _normal(rng, s.B, s.T, s.C)}
        a.update({f"in.p.{n}": w for n, w in _params(rng, config).items()})
        if backward:
            a["dout"] = _normal(rng, s.B, s.T, s.C)
        args = {"config": dataclasses.asdict(config), "rope_theta": ROPE_THETA, "offset": OFFSET,
                "scale": config.scale}
        return a, args
    return make


def _setup(a: Arrays, args: dict[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray], MLAConfig, float, int]:
    """x, the parameter mapping and the config from a file; OracleError when meta.args is not usable."""
    try:
        config = MLAConfig(**args["config"])
    except (TypeError, KeyError) as e:
        raise OracleError(f"meta.args.config: not an MLAConfig: {e}") from None
    if not math.isclose(config.scale, args["scale"], rel_tol=1e-15):
        raise OracleError(f"meta.args.scale: {args['scale']} is not the scale {config.scale} of meta.args.config")
    p = {n: a[f"in.p.{n}"] for n in mla_param_shapes(config) if f"in.p.{n}" in a}
    return a["in.x"], p, config, float(args["rope_theta"]), int(args["offset"])


def _tables(config: MLAConfig, theta: float, start: int, T: int, dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin (T, R/2) of positions start .. start + T - 1: plain RoPE frequencies theta^(-2i/R)."""
    return rope_tables(np.arange(start, start + T), rope_inv_freq(config.qk_rope_head_dim, theta), dtype)


def _run_mla(a: Arrays, args: dict[str, Any]) -> Arrays:
    x, p, config, theta, offset = _setup(a, args)
    cos, sin = _tables(config, theta, offset, x.shape[1], x.dtype)
    out, cache = mla_forward(x, p, config, cos, sin)
    dx, g = mla_backward(a["dout"], cache)
    return {"out": out, "grad.x": dx, **{f"grad.p.{n}": gn for n, gn in g.items() if gn is not None}}


def _run_mla_absorbed(a: Arrays, args: dict[str, Any]) -> Arrays:
    """Absorb once, then fill a latent cache as a decoder does: a prefill of the first ceil(T/2) positions in
    one call, then one token per call; out is the calls' outputs in order."""
    x, p, config, theta, offset = _setup(a, args)
    B, T, _ = x.shape
    w = mla_absorb(p, config)
    r, R = config.kv_lora_rank, config.qk_rope_head_dim
    slot = LatentSlot(np.zeros((B, 1, T, r + R), dtype=x.dtype))  # (B, 1, T, r + R)
    outs = []
    starts = [0, *range((T + 1) // 2, T)]
    for i, start in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else T
        cos, sin = _tables(config, theta, offset + start, stop - start, x.dtype)
        out, _ = mla_absorbed_forward(x[:, start:stop], w, config, cos, sin, slot, start)  # (B, stop - start, C)
        outs.append(out)
    return {"out": np.concatenate(outs, axis=1), "latent": slot.kv[:, 0], "w_q": w.w_q, "w_o": w.w_o}


VARIANTS: dict[str, dict[str, Any]] = {
    "mla": {"q_lora": True, "bias": False, "interleave": True, "rope_scaling": YARN},
    "mla_no_q_lora": {"q_lora": False, "bias": True, "interleave": False, "rope_scaling": None},
}


def _plain(name: str) -> MLACase:
    inputs = ("x", *(f"p.{n}" for n in _names(VARIANTS[name])))
    return MLACase(name, "npgpt.layers.mla_forward", "npgpt.layers.mla_backward", inputs, inputs,
                   _make(VARIANTS[name], backward=True), _run_mla)


CASES: tuple[MLACase, ...] = (
    _plain("mla"),
    _plain("mla_no_q_lora"),
    MLACase("mla_absorbed", "npgpt.layers.mla_absorbed_forward", "",
            ("x", *(f"p.{n}" for n in _names(VARIANTS["mla"]))), (), _make(VARIANTS["mla"], backward=False),
            _run_mla_absorbed, ("out", "latent", "w_q", "w_o")),
)
