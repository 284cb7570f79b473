"""Oracle cases for the attention family: sdpa (one case per option), sdpa_tiled, merge_attention, sdpa_qkv.

Each case follows the oracle's protocol: `make(rng, sizes) -> (arrays, args)` draws float64 inputs (keys
`in.<name>`), the upstream gradients `dout` and `dlse`, and the JSON-able arguments; `run(arrays, args)`
calls npgpt on the stored arrays (float64 or float32; integer and boolean arrays arrive as int64) and returns
`out`, `lse` and `grad.<name>`.  `CASES` lists them as AttentionCase records for the oracle's registry.
Variants and tolerances: docs/oracle.md, section "Attention cases".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ..layers.merge_attention import merge_attention_backward, merge_attention_forward
from ..layers.sdpa import sdpa_backward, sdpa_forward
from ..layers.sdpa_qkv import sdpa_qkv_backward, sdpa_qkv_forward
from ..layers.sdpa_tiled import sdpa_tiled_backward, sdpa_tiled_forward

Arrays = dict[str, np.ndarray]

DROPOUT_P = 0.25
MASK_INPUTS = ("key_padding_mask", "dropout_mask")  # boolean inputs (stored as int64 0/1)
ID_INPUTS = ("q_segment_ids", "k_segment_ids")  # integer inputs


class AttentionCase(NamedTuple):
    name: str
    forward: str  # qualified name of npgpt's forward
    backward: str
    inputs: tuple[str, ...]  # array inputs: keys in.<name>
    grads: tuple[str, ...]  # differentiable inputs, in the backward's order: keys grad.<name>
    make: Callable[[np.random.Generator, Any], tuple[Arrays, dict[str, Any]]]
    run: Callable[[Arrays, dict[str, Any]], Arrays]
    outputs: tuple[str, ...] = ("out", "lse")


# Each sdpa variant: the options it exercises.  Every size is a multiple of the dump's sizes, so that
# docs/oracle.md can state each shape in its symbols: G query heads per kv head (Hkv = H, Hq = G H), the
# query and key lengths Tq = tq T, Tk = tk T, and Dv = dv D.  (MQA, Hkv = 1, and a bias broadcast over B or H
# are covered by tests/test_sdpa.py: the file layout has no symbol for a size of 1.)
VARIANTS: dict[str, dict[str, Any]] = {
    "sdpa_causal": {"causal": True},
    "sdpa_noncausal": {},
    "sdpa_gqa_kv_cache": {"causal": True, "G": 2, "tk": 2},
    "sdpa_gqa_dv": {"causal": True, "G": 2, "dv": 2},
    "sdpa_rows_before_first_key": {"causal": True, "tq": 2},
    "sdpa_key_padding": {"padding": True},
    "sdpa_segments": {"causal": True, "segments": True},
    "sdpa_window": {"causal": True, "window": [2, 0]},
    "sdpa_window_bidirectional": {"window": [1, 2]},
    "sdpa_sinks": {"causal": True, "sinks": True},
    "sdpa_softcap": {"causal": True, "softcap": 1.5, "q_scale": 3.0},
    "sdpa_bias": {"bias": True},
    "sdpa_scale": {"causal": True, "scale": 0.3},
    "sdpa_dropout": {"causal": True, "dropout": True},
    "sdpa_everything": {"causal": True, "G": 2, "tk": 2, "dv": 2, "padding": True, "segments": True,
                        "window": [3, None], "sinks": True, "softcap": 2.0, "bias": True, "scale": 0.4,
                        "dropout": True},
    "sdpa_tiled_everything": {"causal": True, "G": 2, "tk": 2, "dv": 2, "padding": True, "segments": True,
                              "window": [3, None], "sinks": True, "softcap": 2.0, "bias": True, "scale": 0.4,
                              "dropout": True, "tiled": [2, 3]},
}


def _normal(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    return rng.standard_normal(shape) * scale


def _make_sdpa(variant: dict[str, Any]) -> Callable[[np.random.Generator, Any], tuple[Arrays, dict[str, Any]]]:
    def make(rng: np.random.Generator, s: Any) -> tuple[Arrays, dict[str, Any]]:
        G = variant.get("G", 1)
        Hkv = s.H
        Hq = G * Hkv
        Tq, Tk = variant.get("tq", 1) * s.T, variant.get("tk", 1) * s.T  # Tq > Tk: early queries precede every key
        D, Dv = s.D, variant.get("dv", 1) * s.D
        a: Arrays = {"in.q": _normal(rng, s.B, Hq, Tq, D, scale=variant.get("q_scale", 1.0)),
                     "in.k": _normal(rng, s.B, Hkv, Tk, D), "in.v": _normal(rng, s.B, Hkv, Tk, Dv)}
        args: dict[str, Any] = {"causal": bool(variant.get("causal", False))}
        for key in ("window", "softcap", "scale"):
            if key in variant:
                args[key] = variant[key]
        if variant.get("sinks"):
            a["in.sinks"] = _normal(rng, Hq)
        if variant.get("bias"):
            a["in.bias"] = _normal(rng, s.B, Hq, Tq, Tk, scale=0.5)
        if variant.get("padding"):
            kp = rng.random((s.B, Tk)) < 0.7
            kp[:, -1] = True
            kp[0] = False  # batch row 0 sees no key at all: out 0, lse -inf (or the sink), zero gradients
            a["in.key_padding_mask"] = kp
        if variant.get("segments"):
            a["in.q_segment_ids"] = np.sort(rng.integers(0, 2, (s.B, Tq)), axis=1)
            a["in.k_segment_ids"] = np.sort(rng.integers(0, 2, (s.B, Tk)), axis=1)
        if variant.get("dropout"):
            a["in.dropout_mask"] = rng.random((s.B, Hq, Tq, Tk)) >= DROPOUT_P
            args["dropout_p"] = DROPOUT_P
        if "tiled" in variant:
            args["block_q"], args["block_k"] = variant["tiled"]
        a["dout"] = _normal(rng, s.B, Hq, Tq, Dv)
        a["dlse"] = _normal(rng, s.B, Hq, Tq)
        return a, args
    return make


def _options(a: Arrays, args: dict[str, Any]) -> dict[str, Any]:
    kw: dict[str, Any] = {key: args[key] for key in ("causal", "softcap", "scale", "dropout_p") if key in args}
    if "window" in args:
        kw["window"] = tuple(args["window"])
    for name in MASK_INPUTS:
        if f"in.{name}" in a:
            kw[name] = a[f"in.{name}"].astype(bool)
    for name in ID_INPUTS:
        if f"in.{name}" in a:
            kw[name] = a[f"in.{name}"]
    for name in ("sinks", "bias"):
        if f"in.{name}" in a:
            kw[name] = a[f"in.{name}"]
    return kw


def _run_sdpa(a: Arrays, args: dict[str, Any]) -> Arrays:
    kw = _options(a, args)
    if "block_q" in args:
        out, lse, cache = sdpa_tiled_forward(a["in.q"], a["in.k"], a["in.v"], block_q=args["block_q"],
                                             block_k=args["block_k"], **kw)
        g = sdpa_tiled_backward(a["dout"], cache, a["dlse"])
    else:
        out, lse, cache2 = sdpa_forward(a["in.q"], a["in.k"], a["in.v"], **kw)
        g = sdpa_backward(a["dout"], cache2, a["dlse"])
    result = {"out": out, "lse": lse, "grad.q": g.dq, "grad.k": g.dk, "grad.v": g.dv}
    if g.dsinks is not None:
        result["grad.sinks"] = g.dsinks
    if g.dbias is not None:
        result["grad.bias"] = g.dbias
    return result


def _make_merge(rng: np.random.Generator, s: Any) -> tuple[Arrays, dict[str, Any]]:
    shape = (s.B, s.H, s.T)
    lse1, lse2 = _normal(rng, *shape, scale=2.0), _normal(rng, *shape, scale=2.0)
    lse1[0, 0, 0] = -math.inf  # one split saw no key for this row
    lse1[-1, -1, -1] = lse2[-1, -1, -1] = -math.inf  # neither did: out 0, lse -inf
    return {"in.out1": _normal(rng, *shape, s.D), "in.lse1": lse1, "in.out2": _normal(rng, *shape, s.D),
            "in.lse2": lse2, "dout": _normal(rng, *shape, s.D), "dlse": _normal(rng, *shape)}, {}


def _run_merge(a: Arrays, args: dict[str, Any]) -> Arrays:
    out, lse, cache = merge_attention_forward(a["in.out1"], a["in.lse1"], a["in.out2"], a["in.lse2"])
    d1, dl1, d2, dl2 = merge_attention_backward(a["dout"], cache, a["dlse"])
    return {"out": out, "lse": lse, "grad.out1": d1, "grad.lse1": dl1, "grad.out2": d2, "grad.lse2": dl2}


def _make_qkv(rng: np.random.Generator, s: Any) -> tuple[Arrays, dict[str, Any]]:
    return {"in.qkv": _normal(rng, s.B, s.T, 3 * s.C), "dout": _normal(rng, s.B, s.T, s.C),
            "dlse": _normal(rng, s.B, s.H, s.T)}, {"n_head": s.H, "causal": True}


def _run_qkv(a: Arrays, args: dict[str, Any]) -> Arrays:
    out, lse, cache = sdpa_qkv_forward(a["in.qkv"], args["n_head"], causal=args["causal"])
    return {"out": out, "lse": lse, "grad.qkv": sdpa_qkv_backward(a["dout"], cache, a["dlse"]).dqkv}


def _sdpa_case(name: str, variant: dict[str, Any]) -> AttentionCase:
    inputs = ["q", "k", "v"]
    grads = ["q", "k", "v"]
    if variant.get("sinks"):
        inputs.append("sinks")
        grads.append("sinks")
    if variant.get("bias"):
        inputs.append("bias")
        grads.append("bias")
    if variant.get("padding"):
        inputs.append("key_padding_mask")
    if variant.get("segments"):
        inputs += ["q_segment_ids", "k_segment_ids"]
    if variant.get("dropout"):
        inputs.append("dropout_mask")
    layer = "sdpa_tiled" if "tiled" in variant else "sdpa"
    return AttentionCase(name, f"npgpt.layers.{layer}_forward", f"npgpt.layers.{layer}_backward", tuple(inputs),
                         tuple(grads), _make_sdpa(variant), _run_sdpa)


CASES: tuple[AttentionCase, ...] = (
    *(_sdpa_case(name, variant) for name, variant in VARIANTS.items()),
    AttentionCase("merge_attention", "npgpt.layers.merge_attention_forward", "npgpt.layers.merge_attention_backward",
                  ("out1", "lse1", "out2", "lse2"), ("out1", "lse1", "out2", "lse2"), _make_merge, _run_merge),
    AttentionCase("sdpa_qkv", "npgpt.layers.sdpa_qkv_forward", "npgpt.layers.sdpa_qkv_backward", ("qkv",),
                  ("qkv",), _make_qkv, _run_qkv),
)
