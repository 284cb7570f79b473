"""Sparse mixture-of-experts MLP: a router picks K of E expert MLPs per token and mixes their outputs.

out[n] = sum_k w[n, k] * expert_{i[n, k]}(x[n])  (+ shared(x[n]), optionally times sigmoid(x[n] . g)).
Mixtral, Qwen2-MoE, Qwen3-MoE, gpt-oss and DeepSeek-V3, parameters keyed by the checkpoint files' own names.
Forward x (..., C), params -> out (..., C), router_logits (N, E); backward dout (+ drouter_logits) -> dx, grads.
This is the clear version (a loop over experts, index gathers); moe_grouped.py is the fast one, held equal.
Derivation: docs/derivations/moe.md
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, is_int, is_real, param_dict, upstream
from .gated_mlp import GatedMLPCache, _gated_mlp_backward, _gated_mlp_forward
from .router_deepseek import _router_deepseek_backward, _router_deepseek_forward, check_groups
from .router_softmax_topk import _router_softmax_topk_backward, _router_softmax_topk_forward
from .router_topk_softmax import _router_topk_softmax_backward, _router_topk_softmax_forward
from .swiglu import _sigmoid
from .topk import check_router_logits

Array = npt.NDArray[np.floating]
IntArray = npt.NDArray[np.intp]
Params = Mapping[str, Array]

ROUTERS = ("softmax_topk", "topk_softmax", "deepseek")
EXPERTS = ("swiglu", "gpt_oss")
SHARED = ("none", "plain", "gated")
NAMES = ("mixtral", "hf", "gpt_oss")
FAMILIES = ("mixtral", "qwen2_moe", "qwen3_moe", "gpt_oss", "deepseek_v3")


class MoESpec(NamedTuple):
    """What an MoE layer is: its router, experts, shared expert and parameter names.  moe_spec() fills one in
    for a family.  `names` picks the expert tensors' names: "mixtral" (w1 gate, w3 up, w2 down), "hf"
    (gate_proj, up_proj, down_proj) or "gpt_oss" (stacked, interleaved gate_up_proj); `prefix` is the layer's own
    name inside a decoder layer ("block_sparse_moe." for Mixtral's files, "mlp." for the others)."""

    n_experts: int  # E
    top_k: int  # K
    router: Literal["softmax_topk", "topk_softmax", "deepseek"] = "softmax_topk"
    expert: Literal["swiglu", "gpt_oss"] = "swiglu"
    shared: Literal["none", "plain", "gated"] = "none"
    names: Literal["mixtral", "hf", "gpt_oss"] = "hf"
    prefix: str = "mlp."
    norm_topk_prob: bool = True  # softmax_topk, deepseek: renormalise the chosen weights to sum 1
    router_bias: bool = False  # gpt-oss's router has a bias
    n_group: int = 1  # deepseek: expert groups
    topk_group: int = 1  # deepseek: groups kept per token
    routed_scaling_factor: float = 1.0  # deepseek: multiplies the routed weights
    swiglu_alpha: float = 1.702  # gpt-oss expert: glu = g sigmoid(alpha g)
    swiglu_limit: float = 7.0  # gpt-oss expert: gate <= limit, |up| <= limit


def moe_spec(family: str, n_experts: int, top_k: int, **overrides: Any) -> MoESpec:
    """The MoESpec of a family's sparse block; override any field with the checkpoint config's value.

    Flags as the released models use them: Qwen2-MoE norm_topk_prob=False, Qwen3-MoE True (its HF config class
    defaults to False, the released config.json files say true), DeepSeek-V3 routed_scaling_factor=2.5 with
    n_group=topk_group=1 here because groups depend on E (the released model: n_group=8, topk_group=4).
    Mixtral's router_jitter_noise (0 by default) is not implemented."""
    base: dict[str, dict[str, Any]] = {
        "mixtral": dict(names="mixtral", prefix="block_sparse_moe."),
        "qwen2_moe": dict(shared="gated", norm_topk_prob=False),
        "qwen3_moe": dict(norm_topk_prob=True),
        "gpt_oss": dict(router="topk_softmax", expert="gpt_oss", names="gpt_oss", router_bias=True),
        "deepseek_v3": dict(router="deepseek", shared="plain", n_group=1, topk_group=1, routed_scaling_factor=2.5),
    }
    if family not in base:
        raise ValueError(f"family: expected one of {', '.join(FAMILIES)}, got {family!r}")
    return MoESpec(n_experts, top_k, **{**base[family], **overrides})


def check_spec(spec: Any) -> MoESpec:
    """Validate every field of an MoESpec; each error names the field."""
    if not isinstance(spec, MoESpec):
        raise ValueError(f"spec: expected an MoESpec (see moe_spec), got {type(spec).__name__}")
    E, K = spec.n_experts, spec.top_k
    if not is_int(E) or E < 1:
        raise ValueError(f"n_experts: expected a positive integer, got {E!r}")
    if not is_int(K) or not 1 <= K <= E:
        raise ValueError(f"top_k: expected an integer in [1, n_experts={E}], got {K!r}")
    for field, allowed in (("router", ROUTERS), ("expert", EXPERTS), ("shared", SHARED), ("names", NAMES)):
        if getattr(spec, field) not in allowed:
            raise ValueError(f"{field}: expected one of {', '.join(allowed)}, got {getattr(spec, field)!r}")
    if (spec.expert == "gpt_oss") != (spec.names == "gpt_oss"):
        raise ValueError(f"names: gpt-oss experts are stored stacked (names='gpt_oss'), got names={spec.names!r} "
                         f"with expert={spec.expert!r}")
    if not isinstance(spec.prefix, str):
        raise ValueError(f"prefix: expected a string, got {spec.prefix!r}")
    for field in ("norm_topk_prob", "router_bias"):
        if not isinstance(getattr(spec, field), (bool, np.bool_)):
            raise ValueError(f"{field}: expected a bool, got {getattr(spec, field)!r}")
    for field in ("routed_scaling_factor", "swiglu_alpha", "swiglu_limit"):
        v = getattr(spec, field)
        if not is_real(v) or not np.isfinite(v):
            raise ValueError(f"{field}: expected a finite number, got {v!r}")
    if spec.router == "deepseek":
        check_groups(E, K, spec.n_group, spec.topk_group)
    elif spec.n_group != 1 or spec.topk_group != 1:
        raise ValueError(f"n_group: groups belong to the deepseek router, got n_group={spec.n_group!r} with "
                         f"router={spec.router!r}")
    return spec


# ---------------------------------------------------------------------------------------------- parameter names


def router_keys(spec: MoESpec) -> tuple[str, str | None, str | None]:
    """(gate weight, router bias or None, correction bias or None) names."""
    p = spec.prefix
    if spec.names == "gpt_oss":
        return p + "router.weight", (p + "router.bias" if spec.router_bias else None), None
    bias = p + "gate.bias" if spec.router_bias else None
    corr = p + "gate.e_score_correction_bias" if spec.router == "deepseek" else None
    return p + "gate.weight", bias, corr


def expert_keys(spec: MoESpec, e: int) -> tuple[str, str, str]:
    """A SwiGLU expert's (gate, up, down) weight names, e.g. Mixtral's experts.{e}.w1/w3/w2.weight."""
    p = f"{spec.prefix}experts.{e}."
    if spec.names == "mixtral":
        return p + "w1.weight", p + "w3.weight", p + "w2.weight"
    return p + "gate_proj.weight", p + "up_proj.weight", p + "down_proj.weight"


def oss_keys(spec: MoESpec) -> tuple[str, str, str, str]:
    """gpt-oss's stacked expert tensors: gate_up_proj (E, C, 2F), its bias (E, 2F), down_proj (E, F, C), bias (E, C)."""
    p = spec.prefix + "experts."
    return p + "gate_up_proj", p + "gate_up_proj_bias", p + "down_proj", p + "down_proj_bias"


def shared_keys(spec: MoESpec) -> tuple[str, str, str, str | None]:
    """The shared expert's (gate, up, down, sigmoid-gate or None) names."""
    p = spec.prefix + ("shared_experts." if spec.shared == "plain" else "shared_expert.")
    gate = spec.prefix + "shared_expert_gate.weight" if spec.shared == "gated" else None
    return p + "gate_proj.weight", p + "up_proj.weight", p + "down_proj.weight", gate


def moe_param_shapes(spec: MoESpec, C: int, F: int, F_shared: int | None = None) -> dict[str, tuple[int, ...]]:
    """Every parameter's name and shape, in the order the backward returns gradients (buffers last)."""
    E = spec.n_experts
    w, b, corr = router_keys(spec)
    shapes: dict[str, tuple[int, ...]] = {w: (E, C)}
    if b is not None:
        shapes[b] = (E,)
    if spec.expert == "gpt_oss":
        gu, gub, dn, dnb = oss_keys(spec)
        shapes.update({gu: (E, C, 2 * F), gub: (E, 2 * F), dn: (E, F, C), dnb: (E, C)})
    else:
        for e in range(E):
            g, u, d = expert_keys(spec, e)
            shapes.update({g: (F, C), u: (F, C), d: (C, F)})
    if spec.shared != "none":
        Fs = F if F_shared is None else F_shared
        g, u, d, sg = shared_keys(spec)
        shapes.update({g: (Fs, C), u: (Fs, C), d: (C, Fs)})
        if sg is not None:
            shapes[sg] = (1, C)
    if corr is not None:
        shapes[corr] = (E,)  # a buffer: moved by balance_bias_update, no gradient
    return shapes


def moe_init_params(spec: MoESpec, C: int, F: int, rng: np.random.Generator, F_shared: int | None = None,
                    dtype: Any = np.float64, std: float = 0.02) -> dict[str, Array]:
    """Normal(0, std) parameters of every shape in moe_param_shapes (the correction bias zero)."""
    check_spec(spec)
    corr = router_keys(spec)[2]
    return {k: (np.zeros(s) if k == corr else rng.standard_normal(s) * std).astype(dtype)
            for k, s in moe_param_shapes(spec, C, F, F_shared).items()}


def check_moe(x: Any, params: Any, spec: Any) -> tuple[int, int | None]:
    """Validate x (..., C), spec and params (every tensor's shape, experts agreeing); return (F, F_shared)."""
    float_array("x", x, min_ndim=1)
    spec = check_spec(spec)
    if not isinstance(params, Mapping):
        raise ValueError(f"params: expected a mapping of parameter arrays, got {type(params).__name__}")
    C = x.shape[-1]
    first = oss_keys(spec)[2] if spec.expert == "gpt_oss" else expert_keys(spec, 0)[0]
    if first not in params:
        raise ValueError(f"params: missing parameter(s) ['{first}']")
    float_array(first, params[first], ndim=3 if spec.expert == "gpt_oss" else 2)
    F = int(params[first].shape[1] if spec.expert == "gpt_oss" else params[first].shape[0])
    F_shared = None
    if spec.shared != "none":
        sg = shared_keys(spec)[0]
        if sg not in params:
            raise ValueError(f"params: missing parameter(s) ['{sg}']")
        float_array(sg, params[sg], ndim=2)
        F_shared = int(params[sg].shape[0])
    param_dict("params", params, moe_param_shapes(spec, C, F, F_shared), x.dtype)
    return F, F_shared


# ---------------------------------------------------------------------------------------------- router


class RouteCache(NamedTuple):
    kind: str
    inner: Any  # the router pair's cache


def _route(x2: Array, params: Params, spec: MoESpec) -> tuple[Array, Array, IntArray, RouteCache]:
    """Router logits z = x W^T (+ b) (N, E), then the router pair: weights (N, K), indices (N, K)."""
    w, b, corr = router_keys(spec)
    z = x2 @ params[w].T  # (1) (N, E)
    if b is not None:
        z += params[b]
    check_router_logits(z, spec.top_k, name="router_logits")  # NaN from x or the weights stops here
    rc: Any
    if spec.router == "softmax_topk":
        wts, idx, rc = _router_softmax_topk_forward(z, spec.top_k, bool(spec.norm_topk_prob))
    elif spec.router == "topk_softmax":
        wts, idx, rc = _router_topk_softmax_forward(z, spec.top_k)
    else:
        assert corr is not None
        wts, idx, rc = _router_deepseek_forward(z, params[corr], spec.top_k, spec.n_group, spec.topk_group,
                                                bool(spec.norm_topk_prob), float(spec.routed_scaling_factor))
    return z, wts, idx, RouteCache(spec.router, rc)


def _route_backward(dweights: Array, dz_extra: Array | None, x2: Array, params: Params, spec: MoESpec,
                    cache: RouteCache, dx: Array, grads: dict[str, Array]) -> None:
    """The router pair's backward, then the gate projection's: adds into dx (N, C), writes the gate's grads."""
    back: Any = {"softmax_topk": _router_softmax_topk_backward, "topk_softmax": _router_topk_softmax_backward,
            "deepseek": _router_deepseek_backward}[cache.kind]
    dz = back(dweights, cache.inner)  # (N, E)
    if dz_extra is not None:
        dz += dz_extra  # e.g. the auxiliary losses' gradient with respect to the router logits
    w, b, _ = router_keys(spec)
    grads[w] = dz.T @ x2  # (E, C)
    if b is not None:
        grads[b] = dz.sum(axis=0)  # (E,)
    dx += dz @ params[w]  # (N, C)


# ---------------------------------------------------------------------------------------------- experts


class OssExpertCache(NamedTuple):
    xe: Array  # (n, C) the expert's tokens
    gu: Array  # (n, 2F) gate_up pre-activations, interleaved: gate at even, up at odd columns
    h: Array  # (n, F) (up_c + 1) * glu: for ddown


def _oss_expert_forward(xe: Array, gu_w: Array, gu_b: Array, dn_w: Array, dn_b: Array, alpha: float,
                        limit: float) -> tuple[Array, OssExpertCache]:
    """gpt-oss expert: gu = x GU + b; gate, up = gu[:, ::2], gu[:, 1::2] clamped; h = (up + 1) gate sigmoid(alpha
    gate); y = h D + b.  xe (n, C) -> y (n, C)."""
    gu = xe @ gu_w  # (n, 2F)
    gu += gu_b
    gate = np.minimum(gu[:, ::2], limit)  # (n, F) clamp from above only
    up = np.clip(gu[:, 1::2], -limit, limit)  # (n, F)
    glu = gate * _sigmoid(alpha * gate)  # (n, F)
    h = (up + 1.0) * glu  # (n, F)
    y = h @ dn_w  # (n, C)
    y += dn_b
    return y, OssExpertCache(xe, gu, h)


def _oss_expert_backward(dy: Array, c: OssExpertCache, gu_w: Array, dn_w: Array, alpha: float, limit: float
                         ) -> tuple[Array, Array, Array, Array, Array]:
    """Reverse of _oss_expert_forward: dxe (n, C), dGU (C, 2F), dgu_b (2F,), dD (F, C), ddn_b (C,)."""
    graw, uraw = c.gu[:, ::2], c.gu[:, 1::2]  # (n, F) views
    gate = np.minimum(graw, limit)  # (n, F)
    up = np.clip(uraw, -limit, limit)  # (n, F)
    s = _sigmoid(alpha * gate)  # (n, F)
    ddn = c.h.T @ dy  # (F, C)
    ddn_b = dy.sum(axis=0)  # (C,)
    dh = dy @ dn_w.T  # (n, F)
    dgu = np.empty_like(c.gu)  # (n, 2F)
    dgu[:, 1::2] = dh * (gate * s) * ((uraw >= -limit) & (uraw <= limit))  # d up; clamp passes [-limit, limit]
    dgu[:, ::2] = dh * (up + 1.0) * (s + alpha * gate * s * (1.0 - s)) * (graw <= limit)  # d gate
    dgu_w = c.xe.T @ dgu  # (C, 2F)
    return dgu @ gu_w.T, dgu_w, dgu.sum(axis=0), ddn, ddn_b  # dxe (n, C)


def _expert_forward(xe: Array, e: int, params: Params, spec: MoESpec) -> tuple[Array, Any]:
    """Expert e on its tokens xe (n, C) -> (n, C)."""
    if spec.expert == "gpt_oss":
        gu, gub, dn, dnb = oss_keys(spec)
        return _oss_expert_forward(xe, params[gu][e], params[gub][e], params[dn][e], params[dnb][e],
                                   float(spec.swiglu_alpha), float(spec.swiglu_limit))
    g, u, d = expert_keys(spec, e)
    return _gated_mlp_forward(xe, params[g], params[u], params[d], "silu")


def _expert_backward(dy: Array, e: int, cache: Any, params: Params, spec: MoESpec,
                     grads: dict[str, Array]) -> Array:
    """Expert e's backward: returns dxe (n, C) and writes (or, for gpt-oss's stacked tensors, fills row e of)
    its parameter gradients."""
    if spec.expert == "gpt_oss":
        gu, gub, dn, dnb = oss_keys(spec)
        dxe, *dws = _oss_expert_backward(dy, cache, params[gu][e], params[dn][e], float(spec.swiglu_alpha),
                                         float(spec.swiglu_limit))
        for k, dw in zip((gu, gub, dn, dnb), dws):
            grads[k][e] = dw
        return dxe
    dxe, dg, du, dd = _gated_mlp_backward(dy, cache)
    g, u, d = expert_keys(spec, e)
    grads[g], grads[u], grads[d] = dg, du, dd
    return dxe


def _zero_expert_grads(params: Params, spec: MoESpec, dtype: np.dtype) -> dict[str, Array]:
    """Zero gradients for every routed-expert tensor (an expert that got no token keeps zeros)."""
    if spec.expert == "gpt_oss":
        return {k: np.zeros(params[k].shape, dtype) for k in oss_keys(spec)}
    return {k: np.zeros(params[k].shape, dtype) for e in range(spec.n_experts) for k in expert_keys(spec, e)}


# ---------------------------------------------------------------------------------------------- shared expert


class SharedCache(NamedTuple):
    mlp: GatedMLPCache
    ys: Array  # (N, C) the shared MLP's output before the sigmoid gate
    sg: Array | None  # (N, 1) sigmoid(x . gate) (Qwen2-MoE) or None


def _shared_forward(x2: Array, params: Params, spec: MoESpec) -> tuple[Array, SharedCache]:
    """The shared expert's contribution (N, C): a SwiGLU MLP on every token, times sigmoid(x g) if gated."""
    g, u, d, gate = shared_keys(spec)
    ys, mc = _gated_mlp_forward(x2, params[g], params[u], params[d], "silu")  # (N, C)
    if gate is None:
        return ys, SharedCache(mc, ys, None)
    sg = _sigmoid(x2 @ params[gate].T)  # (N, 1)
    return sg * ys, SharedCache(mc, ys, sg)  # (N, C)


def _shared_backward(dout2: Array, x2: Array, params: Params, spec: MoESpec, cache: SharedCache, dx: Array,
                     grads: dict[str, Array]) -> None:
    """Reverse of _shared_forward: adds into dx (N, C), writes the shared expert's grads."""
    g, u, d, gate = shared_keys(spec)
    dys = dout2
    if gate is not None:
        assert cache.sg is not None
        dys = dout2 * cache.sg  # (N, C)
        dpre = (dout2 * cache.ys).sum(axis=1, keepdims=True) * cache.sg * (1.0 - cache.sg)  # (N, 1)
        grads[gate] = dpre.T @ x2  # (1, C)
        dx += dpre @ params[gate]  # (N, C)
    dxs, grads[g], grads[u], grads[d] = _gated_mlp_backward(dys, cache.mlp)
    dx += dxs


# ---------------------------------------------------------------------------------------------- the layer


class ExpertSlot(NamedTuple):
    tokens: IntArray  # (n_e,) rows that chose expert e, ascending
    slots: IntArray  # (n_e,) which of their K choices it was
    y: Array  # (n_e, C) the expert's output, before the routing weight
    cache: Any  # the expert's own cache


class MoECache(NamedTuple):
    x2: Array  # (N, C) input rows
    x_shape: tuple[int, ...]
    params: Params
    spec: MoESpec
    route: RouteCache
    weights: Array  # (N, K) routing weights
    indices: IntArray  # (N, K) chosen experts
    experts: list[ExpertSlot | None]  # per expert; None if no token chose it
    shared: SharedCache | None


def moe_forward(x: Array, params: Params, spec: MoESpec) -> tuple[Array, Array, MoECache]:
    """out = sum_k w_k expert_{i_k}(x) (+ shared); also returns the router logits for the auxiliary losses.

    x (..., C) -> out (..., C), router_logits (N, E) with N = prod(...).  See docs/derivations/moe.md.
    """
    check_moe(x, params, spec)
    return _moe_forward(x, params, spec)


def _moe_forward(x: Array, params: Params, spec: MoESpec) -> tuple[Array, Array, MoECache]:
    """Unchecked kernel of moe_forward: the clear loop over experts."""
    C = x.shape[-1]
    x2 = x.reshape(-1, C)  # (N, C)
    z, weights, idx, rc = _route(x2, params, spec)  # (1)-(2) (N, E), (N, K), (N, K)
    out = np.zeros_like(x2)  # (N, C)
    experts: list[ExpertSlot | None] = []
    for e in range(spec.n_experts):
        tokens, slots = np.nonzero(idx == e)  # (n_e,) each: the rows that chose e (at most once each)
        if tokens.size == 0:
            experts.append(None)
            continue
        y, ec = _expert_forward(x2[tokens], e, params, spec)  # (3) (n_e, C)
        out[tokens] += y * weights[tokens, slots][:, None]  # (4) (n_e, C) tokens are distinct: no add.at needed
        experts.append(ExpertSlot(tokens, slots, y, ec))
    sc = None
    if spec.shared != "none":
        ys, sc = _shared_forward(x2, params, spec)  # (5) (N, C)
        out += ys
    return out.reshape(x.shape), z, MoECache(x2, x.shape, params, spec, rc, weights, idx, experts, sc)


def moe_backward(dout: Array, cache: MoECache, drouter_logits: Array | None = None
                 ) -> tuple[Array, dict[str, Array]]:
    """dx and every trainable parameter's gradient (the correction bias has none), keyed like params.

    drouter_logits (N, E), optional: an upstream gradient for the returned router logits (the aux losses').
    See docs/derivations/moe.md (terms 6-10).
    """
    upstream("dout", dout, cache.x_shape, cache.x2.dtype)
    if drouter_logits is not None:
        upstream("drouter_logits", drouter_logits, (cache.x2.shape[0], cache.spec.n_experts), cache.x2.dtype)
    return _moe_backward(dout, cache, drouter_logits)


def _grads_in_order(grads: dict[str, Array], spec: MoESpec, params: Params) -> dict[str, Array]:
    """grads in moe_param_shapes' order (a stable order for users and for tests/seeded_errors.py)."""
    corr = router_keys(spec)[2]
    return {k: grads[k] for k in params_order(spec, params) if k != corr}


def params_order(spec: MoESpec, params: Params) -> list[str]:
    """The parameter names of this layer in moe_param_shapes' order."""
    C = params[router_keys(spec)[0]].shape[1]
    F = 1  # shapes do not matter for the names
    return list(moe_param_shapes(spec, C, F))


def _moe_backward(dout: Array, cache: MoECache, drouter_logits: Array | None) -> tuple[Array, dict[str, Array]]:
    """Unchecked kernel of moe_backward."""
    x2, x_shape, params, spec, rc, weights, idx, experts, sc = cache
    dout2 = dout.reshape(x2.shape)  # (N, C)
    dx = np.zeros_like(x2)  # (N, C)
    dweights = np.zeros_like(weights)  # (N, K)
    grads = _zero_expert_grads(params, spec, x2.dtype)
    for e, slot in enumerate(experts):
        if slot is None:
            continue
        d = dout2[slot.tokens]  # (n_e, C)
        dweights[slot.tokens, slot.slots] = (d * slot.y).sum(axis=1)  # (6) (n_e,) d w = dout . y
        dy = d * weights[slot.tokens, slot.slots][:, None]  # (7) (n_e, C)
        dx[slot.tokens] += _expert_backward(dy, e, slot.cache, params, spec, grads)  # (8) (n_e, C)
    _route_backward(dweights, drouter_logits, x2, params, spec, rc, dx, grads)  # (9)
    if sc is not None:
        _shared_backward(dout2, x2, params, spec, sc, dx, grads)  # (10)
    return dx.reshape(x_shape), _grads_in_order(grads, spec, params)
