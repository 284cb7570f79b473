"""Oracle cases for the dense families after Llama: the softcap pair, one configurable decoder layer
(npgpt.llama.block) per block style that differs, and a tiny whole-model training run per Hugging Face family
adapter (npgpt.llama.hf_families), each in that family's block style.

A block case stores the layer's input `in.x`, its parameters `in.p.<name>` (the canonical names of
layer_param_shapes), `dout`, the output and every gradient; its meta.args holds the whole LlamaConfig
(`config`, n_layer 1) and `layer` 0, so a port can rebuild the layer, its RoPE tables (layer_tables: angles of
positions 0 .. T-1) and its window from the file alone.  A training case is llama_train's protocol on
style_config(family, ...).  Sizes: Hq = 2H query heads over Hkv = H kv heads (one in the MQA case) of size 2D,
or 4D / 8D where a partial rotary factor of 1/2 / 1/4 must leave an even number of rotated channels; the MLP is
3C wide.  Layouts and the variants' fields: docs/oracle.md ("Dense-family cases").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from ..layers.softcap import softcap_backward, softcap_forward
from ..llama import Llama, LlamaConfig, layer_param_shapes, llama_layer_backward, llama_layer_forward, param_shapes
from ..llama.core import layer_tables
from ..llama.hf_families import FAMILIES as HF_FAMILIES
from ..llama.hf_families import same_config, style_config
from .case import Arrays, Case, OracleError, Sizes, run_training
from .llama_cases import ADAMW_HPARAMS, TRAIN_STEPS

Make = Callable[[np.random.Generator, Sizes], tuple[Arrays, dict[str, Any]]]
# With a k_proj bias and partial rotary (StableLM, GPT-NeoX, Phi-2), the bias's channels that RoPE leaves alone
# add q . b to every score of a query's row, which the softmax ignores: their gradient is exactly zero, and
# computed it is rounding noise (~1e-9 in float32).  Adam's m / (sqrt(v) + eps) would turn that noise into
# steps of ~lr, so these cases take eps 1e-6: above the noise, far below the real gradients (~1e-2).
DEAD_BIAS_EPS = 1e-6
SOFTCAP = 2.0  # the softcap case's c: |x| ~ 3 reaches well into tanh's bend


def _normal(rng: np.random.Generator, *shape: int, scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    return rng.standard_normal(shape) * scale + shift


def _param(rng: np.random.Generator, name: str, shape: tuple[int, ...], config: LlamaConfig) -> np.ndarray:
    """Non-degenerate parameters: matrices N(0, 1/fan_in); biases and Gemma's (1 + w) norm weights N(0, 0.1^2);
    other norm weights 1 + N(0, 0.1^2) (the identity would hide a bug)."""
    if len(shape) == 2:
        return _normal(rng, *shape, scale=1 / math.sqrt(shape[1]))
    if name.endswith(".bias") or config.norm_offset != 0.0:
        return _normal(rng, *shape, scale=0.1)
    return _normal(rng, *shape, scale=0.1, shift=1.0)


# ---------------------------------------------------------------------------------------------- softcap

def _make_softcap(rng: np.random.Generator, s: Sizes) -> tuple[Arrays, dict[str, Any]]:
    return {"in.x": _normal(rng, s.B, s.T, s.V, scale=3.0), "dout": _normal(rng, s.B, s.T, s.V)}, {"cap": SOFTCAP}


def _run_softcap(a: Arrays, args: dict[str, Any]) -> Arrays:
    out, cache = softcap_forward(a["in.x"], args["cap"])
    return {"out": out, "grad.x": softcap_backward(a["dout"], cache)}


# ---------------------------------------------------------------------------------------------- one decoder layer

def _window(s: Sizes) -> int:
    """A sliding window that binds: W < T whenever T > 2 (query i sees keys i - W < j <= i)."""
    return max(1, (s.T + 1) // 2)


_LAYERNORM: dict[str, Any] = {"norm_kind": "layernorm", "norm_bias": True}
# block style -> the LlamaConfig fields beyond the shared shapes (head_dim: a multiple of D)
BLOCK_VARIANTS: dict[str, dict[str, Any]] = {
    "llama_biases": {"attention_bias": True, "o_bias": True, "mlp_bias": True},
    "qwen3": {"qk_norm": "head", "rope_theta": 1e6},
    "olmo2": {"norm_placement": "post", "qk_norm": "full", "rope_theta": 5e5},
    "gemma2": {"norm_offset": 1.0, "norm_placement": "sandwich", "hidden_act": "gelu_pytorch_tanh",
               "attn_logit_softcapping": 2.0, "attention_scale": 0.4, "layer_types": ("sliding_attention",),
               "sliding_window": "W"},
    "gemma3": {"norm_offset": 1.0, "norm_placement": "sandwich", "hidden_act": "gelu_pytorch_tanh",
               "qk_norm": "head", "attention_scale": 0.4, "rope_theta": 1e6, "rope_local_theta": 1e4,
               "layer_types": ("sliding_attention",), "sliding_window": "W"},
    "gpt_neox": {**_LAYERNORM, "parallel_residual": True, "partial_rotary_factor": 0.5, "attention_bias": True,
                 "o_bias": True, "mlp_bias": True, "mlp_kind": "plain", "hidden_act": "gelu", "head_dim": 4},
    "phi2": {**_LAYERNORM, "parallel_residual": True, "parallel_shared_norm": True, "partial_rotary_factor": 0.5,
             "attention_bias": True, "o_bias": True, "mlp_bias": True, "mlp_kind": "plain",
             "hidden_act": "gelu_new", "head_dim": 4},
    "falcon": {**_LAYERNORM, "parallel_residual": True, "parallel_shared_norm": True, "mlp_kind": "plain",
               "hidden_act": "gelu", "n_kv_head": 1},
    "granite": {"residual_multiplier": 0.5, "attention_scale": 0.3},
    "smollm3": {"no_rope_layers": (0,)},
}


def block_config(variant: str, s: Sizes) -> LlamaConfig:
    """The one-layer LlamaConfig of a block case (head_dim given as a multiple of D, "W" as _window)."""
    fields = dict(BLOCK_VARIANTS[variant])
    head_dim = fields.pop("head_dim", 2) * s.D
    n_kv_head = fields.pop("n_kv_head", s.H)
    if fields.get("sliding_window") == "W":
        fields["sliding_window"] = _window(s)
    return LlamaConfig(vocab_size=s.V, block_size=s.T, n_layer=1, n_head=2 * s.H, n_kv_head=n_kv_head,
                       n_embd=s.C, head_dim=head_dim, intermediate_size=3 * s.C, **fields)


def _make_block(variant: str) -> Make:
    def make(rng: np.random.Generator, s: Sizes) -> tuple[Arrays, dict[str, Any]]:
        config = block_config(variant, s)
        shapes = layer_param_shapes(config)
        arrays: Arrays = {"in.x": _normal(rng, s.B, s.T, s.C)}
        arrays.update({f"in.p.{n}": _param(rng, n, shape, config) for n, shape in shapes.items()})
        arrays["dout"] = _normal(rng, s.B, s.T, s.C)
        return arrays, {"config": config.to_dict(), "layer": 0, "param_names": list(shapes)}
    return make


def _run_block(a: Arrays, args: dict[str, Any]) -> Arrays:
    config = LlamaConfig.from_dict(args["config"])
    names = list(layer_param_shapes(config))
    if args["param_names"] != names:
        raise OracleError("meta.param_names: does not match the layer parameters of meta.config")
    i = int(args["layer"])
    x = a["in.x"]
    p = {n: a[f"in.p.{n}"] for n in names}
    for n, shape in layer_param_shapes(config).items():
        if p[n].shape != shape or p[n].dtype != x.dtype:
            raise OracleError(f"in.p.{n}: expected {x.dtype} {shape}, got {p[n].dtype} {p[n].shape}")
    tables = layer_tables(config, 0, x.shape[1], x.dtype)[i]  # (T, R/2) cos, sin of positions 0 .. T-1, or None
    cos, sin = tables if tables is not None else (None, None)
    out, cache = llama_layer_forward(x, p, config, cos, sin, window=config.layer_window(i))
    dx, g = llama_layer_backward(a["dout"], cache)
    return {"out": out, "grad.x": dx, **{f"grad.p.{n}": g[n] for n in names}}


def _block_case(variant: str, s: Sizes) -> Case:
    names = tuple(f"p.{n}" for n in layer_param_shapes(block_config(variant, s)))
    return Case(f"decoder_block_{variant}", "npgpt.llama.llama_layer_forward", "npgpt.llama.llama_layer_backward",
                ("x", *names), ("x", *names), _make_block(variant), _run_block)


# ---------------------------------------------------------------------------------------------- whole models

def _as_family_says(family: str, config: LlamaConfig) -> LlamaConfig | None:
    """The config as the family's config.json says it (written and read back), or None if it cannot say it."""
    fam = HF_FAMILIES[family]
    try:
        back = fam.config_from_hf(fam.config_to_hf(config, np.float32), "config")
    except ValueError:
        return None
    def plain(c: LlamaConfig) -> LlamaConfig:  # every layer global, written out or not (Gemma 3 with one layer)
        if c.layer_types is not None and c.sliding_window is None and "sliding_attention" not in c.layer_types:
            return replace(c, layer_types=None)
        return c
    return back if same_config(plain(back), plain(config)) else None


def train_config(family: str, s: Sizes) -> LlamaConfig:
    """style_config(family) at the oracle's sizes, as its config.json can say it, with softcaps tightened
    (attention 2, logits 3), a sliding window of _window(s) and (SmolLM3) the last layer without RoPE, so that
    each of them bends the numbers.

    Heads of size mD (m = 2, or 2 / f for a partial rotary factor f, so that 2D channels rotate at any D): an
    explicit head_dim where the family has one, else a residual width of 2mC (Falcon); and H kv heads, or
    2H where the family has no grouped-query attention (GPT-NeoX)."""
    probe = style_config(family, n_layer=1, n_head=1, n_kv_head=1, n_embd=16, block_size=8)  # for its rotary factor
    f = probe.partial_rotary_factor
    m = 2 if f == 1.0 else round(2 / f)
    shapes = {"vocab_size": s.V, "block_size": s.T, "n_layer": s.L, "n_head": 2 * s.H,
              "intermediate_size": 3 * s.C}
    config = None
    for widths in ({"n_embd": s.C, "head_dim": m * s.D, "n_kv_head": s.H}, {"n_embd": 2 * m * s.C, "n_kv_head": s.H},
                   {"n_embd": 2 * m * s.C, "n_kv_head": 2 * s.H}):
        try:
            config = _as_family_says(family, style_config(family, **shapes, **widths))
        except (ValueError, ZeroDivisionError):  # Granite's scale 1 / (C // Hq) at C < Hq
            config = None
        if config is not None:
            break
    if config is None:
        raise OracleError(f"{family}_train: the {family} family cannot say its config at these sizes")
    changes: dict[str, Any] = {}
    if config.attn_logit_softcapping is not None:
        changes["attn_logit_softcapping"] = 2.0
    if config.final_logit_softcapping is not None:
        changes["final_logit_softcapping"] = 3.0
    if config.sliding_window is not None:
        changes["sliding_window"] = _window(s)
    if config.no_rope_layers is not None:  # SmolLM3 drops RoPE in every 4th layer: here the last one
        changes["no_rope_layers"] = tuple(int(i < s.L - 1) for i in range(s.L))
    final = _as_family_says(family, replace(config, **changes))
    if final is None:
        raise OracleError(f"{family}_train: the {family} family cannot say its config at these sizes")
    return final


def _make_train(family: str) -> Make:
    def make(rng: np.random.Generator, s: Sizes) -> tuple[Arrays, dict[str, Any]]:
        config = train_config(family, s)
        shapes = param_shapes(config)
        arrays: Arrays = {f"param.{n}": _param(rng, n, shape, config) for n, shape in shapes.items()}
        arrays["idx"] = rng.integers(0, s.V, (s.B, s.T))
        targets = rng.integers(0, s.V, (s.B, s.T))
        targets[-1, -1] = -100  # one ignored target: the mean is over the others
        arrays["targets"] = targets
        adamw = {**ADAMW_HPARAMS, "steps": TRAIN_STEPS, "lr_schedule": "constant", "grad_clip": None,
                 "weight_decay_applies_to": "2-D parameters", "bias_correction": True}
        if config.attention_bias and config.partial_rotary_factor < 1.0:
            adamw["eps"] = DEAD_BIAS_EPS
        return arrays, {"family": family, "config": config.to_dict(), "param_names": list(shapes), "adamw": adamw,
                        "ignore_index": -100}
    return make


def _run_train(a: Arrays, args: dict[str, Any]) -> Arrays:
    config = LlamaConfig.from_dict(args["config"])
    names = args["param_names"]
    if names != list(param_shapes(config)):
        raise OracleError("meta.param_names: does not match the parameters of meta.config")
    model = Llama(config, dtype=a[f"param.{names[0]}"].dtype, init=False)
    return run_training(model, a, args, names)


# ---------------------------------------------------------------------------------------------- the list

# llama_train covers Llama; the mixture-of-experts families' golden files are moe_cases.py's layer cases
TRAIN_FAMILIES: tuple[str, ...] = tuple(f for f in HF_FAMILIES
                                        if f not in ("llama", "mixtral", "qwen2_moe", "qwen3_moe"))
_DEFAULT = Sizes(2, 5, 8, 2, 11, 2)  # the case records' input names do not depend on the sizes

CASES: tuple[Case, ...] = (
    Case("softcap", "npgpt.layers.softcap_forward", "npgpt.layers.softcap_backward", ("x",), ("x",),
         _make_softcap, _run_softcap),
    *(_block_case(v, _DEFAULT) for v in BLOCK_VARIANTS),
    *(Case(f"{f}_train", "npgpt.llama.llama_forward", "npgpt.llama.llama_backward", (), (), _make_train(f),
           _run_train, ("logits", "loss")) for f in TRAIN_FAMILIES),
)
