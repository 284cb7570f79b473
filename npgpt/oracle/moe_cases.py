"""Oracle cases for mixture-of-experts layers: the three routers (a case with gradients away from ties, and a
forward-only case whose rows tie on purpose, pinning the tie rule), the MoE layer in each family's flavour
(Mixtral, Qwen2-MoE, gpt-oss, DeepSeek-V3; DeepSeek-V3's also through the grouped layer, on inputs of its own),
the load-balancing loss and the router z-loss.

Each case follows the oracle's protocol: `make(rng, sizes) -> (arrays, args)` draws float64 inputs (`in.<name>`;
the MoE layer's parameters as `in.p.<name>`, the checkpoint files' own names), `dout` (and `drouter_logits`, the
upstream gradient of the MoE layer's second output), and the JSON-able arguments; `run(arrays, args)` calls npgpt
on the stored arrays and returns the outputs and `grad.<name>`.  Every case has E = 8 experts and chooses K = 2
per token; the expert width is F = 2C (so no weight is square and a transposed one cannot pass).  Inputs with
gradients are redrawn row by row until every decision (the chosen set, DeepSeek's kept groups, gpt-oss's clamps)
has a slack of at least MARGIN, so a float32 dump makes the same choices as a float64 one.
Layout, the tie rule and each family's flags: docs/oracle.md ("Mixture-of-experts cases").
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from ..layers.load_balancing_loss import load_balancing_loss_backward, load_balancing_loss_forward
from ..layers.moe import MoESpec, moe_backward, moe_forward, moe_param_shapes, moe_spec, oss_keys, router_keys
from ..layers.moe_grouped import moe_grouped_backward, moe_grouped_forward
from ..layers.router_deepseek import router_deepseek_backward, router_deepseek_forward
from ..layers.router_softmax_topk import router_softmax_topk_backward, router_softmax_topk_forward
from ..layers.router_topk_softmax import router_topk_softmax_backward, router_topk_softmax_forward
from ..layers.router_z_loss import router_z_loss_backward, router_z_loss_forward
from .case import OracleError

Arrays = dict[str, np.ndarray]
Make = Callable[[np.random.Generator, Any], tuple[Arrays, dict[str, Any]]]

E = 8  # experts in every case (docs/oracle.md's size symbol E)
K = 2  # experts chosen per token (size symbol K)
MARGIN = 1e-3  # the least slack of any decision in a case with gradients
DEEPSEEK = {"n_group": 4, "topk_group": 2, "norm_topk_prob": True, "routed_scaling_factor": 2.5}
OSS_LIMIT = 1.0  # gpt-oss's swiglu_limit in its case (released: 7.0): small enough that the clamps act


class MoECase(NamedTuple):
    name: str
    forward: str  # qualified name of npgpt's forward
    backward: str  # "" for a tie case: forward only
    inputs: tuple[str, ...]  # array inputs: keys in.<name>
    grads: tuple[str, ...]  # differentiable inputs, in the backward's order: keys grad.<name>
    make: Make
    run: Callable[[Arrays, dict[str, Any]], Arrays]
    outputs: tuple[str, ...] = ("out",)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))  # (...)


def _gaps(v: np.ndarray) -> float:
    """The least difference between two entries of a row (inf for one entry)."""
    s = np.sort(v)
    return float(np.min(np.diff(s), initial=np.inf))


def _row_ok(router: str, z: np.ndarray, bias: np.ndarray | None) -> bool:
    """Every decision the router takes on the logits row z (E,) has a slack of at least MARGIN."""
    if router == "deepseek":
        assert bias is not None
        c = _sigmoid(z) + bias  # (E,) corrected scores: the choice
        groups = np.sort(c.reshape(DEEPSEEK["n_group"], -1), axis=-1)[:, -2:].sum(-1)  # (n_group,)
        return _gaps(c) > MARGIN and _gaps(groups) > MARGIN
    return _gaps(z) > MARGIN  # softmax is monotone: distinct logits order the probabilities alike


def _draw_rows(rng: np.random.Generator, n: int, router: str, bias: np.ndarray | None = None,
               scale: float = 1.0) -> np.ndarray:
    """n logits rows (n, E), each redrawn until _row_ok."""
    rows = []
    for _ in range(n):
        while True:
            z = rng.standard_normal(E) * scale  # (E,)
            if _row_ok(router, z, bias):
                rows.append(z)
                break
    return np.array(rows).reshape(n, E)


# ---------------------------------------------------------------------------------------------- routers

ROUTERS: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "softmax_topk": (router_softmax_topk_forward, router_softmax_topk_backward),
    "topk_softmax": (router_topk_softmax_forward, router_topk_softmax_backward),
    "deepseek": (router_deepseek_forward, router_deepseek_backward),
}


def _router_args(router: str, norm: bool) -> dict[str, Any]:
    if router == "deepseek":
        return {"router": router, "top_k": K, **DEEPSEEK}
    if router == "softmax_topk":
        return {"router": router, "top_k": K, "norm_topk_prob": norm}
    return {"router": router, "top_k": K}


def _make_router(router: str, norm: bool = True) -> Make:
    def make(rng: np.random.Generator, s: Any) -> tuple[Arrays, dict[str, Any]]:
        N = s.B * s.T
        a: Arrays = {}
        bias = None
        if router == "deepseek":
            bias = rng.standard_normal(E) * 0.1  # (E,) moves the choice, gets no gradient
        a["in.logits"] = _draw_rows(rng, N, router, bias)
        if bias is not None:
            a["in.e_score_correction_bias"] = bias
        a["dout"] = rng.standard_normal((N, K))
        return a, _router_args(router, norm)
    return make


def _tie_rows(router: str) -> np.ndarray:
    """E rows (E, E) that tie on purpose; each comment gives the indices the tie rule picks (K = 2)."""
    rows = np.full((E, E), -2.0)  # (E, E) a low floor
    if router == "deepseek":  # groups of two: (0, 1), (2, 3), (4, 5), (6, 7); bias zero
        rows[0] = 0.0  # every score and every group ties: groups 0, 1 kept, experts [0, 1]
        rows[1, :2] = 2.0  # group 0 best (2 x sigmoid(2)); groups 2 and 3 tie for second: group 2 kept,
        rows[1, 4:8] = [3.0, -3.0, 3.0, -3.0]  # ... so expert 4, not 6, beside 0: [4, 0]
        rows[2, :4] = [1.0, 2.0, 1.0, -3.0]  # groups 0, 1 kept; experts 0 and 2 tie for second: [1, 0]
        rows[3, 2:6] = [1.5, 0.5, 0.5, 1.5]  # groups 1 and 2 tie (same pair, swapped) and are kept; experts 2 and 5
        #                                      tie for first: [2, 5]
        rows[4, 6:8] = 1.0  # group 3 best; then groups 0, 1, 2 tie at the floor: group 0 kept; [6, 7]
        rows[5, [1, 3, 5, 7]] = 0.5  # four groups tie; groups 0, 1 kept; experts 1 and 3 tie with none above: [1, 3]
        rows[6] = [-0.0, 0.0, -1.0, 0.0, -0.0, 0.0, -3.0, -3.0]  # sigmoid(-0.0) = sigmoid(0.0): groups 0 and 2 tie
        #                                                          (both kept), experts 0, 1, 4, 5 tie: [0, 1]
        rows[7] = np.linspace(1.0, -1.0, E)  # no tie: [0, 1]
        return rows
    rows[0] = 0.0  # all tie: [0, 1]
    rows[1, [2, 5]] = 1.0  # two tie for first: [2, 5]
    rows[2, [1, 3, 6]] = 1.0  # three tie for first: [1, 3]
    rows[3, 4] = 2.0  # a clear first, then a tie at the boundary: [4, 2]
    rows[3, [2, 7]] = 1.0
    rows[4] = [-1.0, -1.5, -2.0, -0.0, -3.0, -1.0, 0.0, -2.5]  # -0.0 equals 0.0, lower index first: [3, 6]
    rows[5, [0, 7]] = 1.0  # the first and last tie: [0, 7]
    rows[6, [6, 7]] = 1.0  # ties among the highest indices: [6, 7]
    rows[6, 0] = 0.5
    rows[7] = np.linspace(1.0, -1.0, E)  # no tie: [0, 1]
    return rows


TIE_INDICES: dict[str, list[list[int]]] = {  # what the tie rule picks from _tie_rows (the tests read this)
    "softmax_topk": [[0, 1], [2, 5], [1, 3], [4, 2], [3, 6], [0, 7], [6, 7], [0, 1]],
    "topk_softmax": [[0, 1], [2, 5], [1, 3], [4, 2], [3, 6], [0, 7], [6, 7], [0, 1]],
    "deepseek": [[0, 1], [4, 0], [1, 0], [2, 5], [6, 7], [1, 3], [0, 1], [0, 1]],
}


def _make_router_ties(router: str) -> Make:
    def make(rng: np.random.Generator, s: Any) -> tuple[Arrays, dict[str, Any]]:
        a: Arrays = {"in.logits": _tie_rows(router)}
        if router == "deepseek":
            a["in.e_score_correction_bias"] = np.zeros(E)
        return a, _router_args(router, True)
    return make


def _call_router(a: Arrays, args: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, Any, Callable[..., Any]]:
    forward, backward = ROUTERS[args["router"]]
    if args["router"] == "deepseek":
        w, idx, cache = forward(a["in.logits"], a["in.e_score_correction_bias"], args["top_k"], args["n_group"],
                                args["topk_group"], args["norm_topk_prob"], args["routed_scaling_factor"])
    elif args["router"] == "softmax_topk":
        w, idx, cache = forward(a["in.logits"], args["top_k"], args["norm_topk_prob"])
    else:
        w, idx, cache = forward(a["in.logits"], args["top_k"])
    return w, idx.astype(np.int64), cache, backward


def _run_router(a: Arrays, args: dict[str, Any]) -> Arrays:
    w, idx, cache, backward = _call_router(a, args)
    out: Arrays = {"weights": w, "indices": idx}
    if "dout" in a:
        out["grad.logits"] = backward(a["dout"], cache)
    return out


def _router(name: str, router: str, norm: bool = True) -> MoECase:
    inputs = ("logits", "e_score_correction_bias") if router == "deepseek" else ("logits",)
    return MoECase(name, f"npgpt.layers.router_{router}_forward", f"npgpt.layers.router_{router}_backward", inputs,
                   ("logits",), _make_router(router, norm), _run_router, ("weights", "indices"))


def _router_ties(name: str, router: str) -> MoECase:
    inputs = ("logits", "e_score_correction_bias") if router == "deepseek" else ("logits",)
    return MoECase(name, f"npgpt.layers.router_{router}_forward", "", inputs, (), _make_router_ties(router),
                   _run_router, ("weights", "indices"))


# ---------------------------------------------------------------------------------------------- the MoE layer

FAMILY_OVERRIDES: dict[str, dict[str, Any]] = {  # moe_spec(family, E, K, **these): the case's flags
    "mixtral": {},
    "qwen2_moe": {},  # sigmoid-gated shared expert, norm_topk_prob False: moe_spec's defaults
    "gpt_oss": {"swiglu_limit": OSS_LIMIT},
    "deepseek_v3": {"n_group": DEEPSEEK["n_group"], "topk_group": DEEPSEEK["topk_group"]},
}


def _spec(family: str) -> MoESpec:
    return moe_spec(family, E, K, **FAMILY_OVERRIDES[family])


def _widths(family: str, C: int) -> tuple[int, int | None]:
    """(F, F_shared): experts 2C wide; Qwen2-MoE's shared expert 3C, DeepSeek's 2 shared experts 2 x 2C."""
    return 2 * C, {"qwen2_moe": 3 * C, "deepseek_v3": 4 * C}.get(family)


def _names(family: str) -> tuple[str, ...]:
    """The family's parameter names in moe_param_shapes' order (the names do not depend on the sizes)."""
    return tuple(moe_param_shapes(_spec(family), 1, 1, 1))


def _params(rng: np.random.Generator, spec: MoESpec, C: int, F: int, Fs: int | None) -> Arrays:
    """Matrices N(0, 1/fan_in) (gpt-oss's stacked ones by their input axis), biases N(0, 0.1^2), the correction
    bias N(0, 0.1^2)."""
    p: Arrays = {}
    corr = router_keys(spec)[2]
    stacked = oss_keys(spec) if spec.expert == "gpt_oss" else ()
    for name, shape in moe_param_shapes(spec, C, F, Fs).items():
        if name == corr or len(shape) == 1 or (name in stacked and len(shape) == 2):
            p[name] = rng.standard_normal(shape) * 0.1
        elif name in stacked:  # (E, in, out)
            p[name] = rng.standard_normal(shape) / np.sqrt(shape[1])
        else:  # (out, in)
            p[name] = rng.standard_normal(shape) / np.sqrt(shape[-1])
    return p


def _token_ok(spec: MoESpec, x: np.ndarray, p: Arrays) -> bool:
    """The router's decisions on token x (C,) and, for gpt-oss, every expert's clamps have slack MARGIN."""
    w, b, corr = router_keys(spec)
    z = p[w] @ x + (p[b] if b is not None else 0.0)  # (E,)
    if not _row_ok(spec.router, z, p[corr] if corr is not None else None):
        return False
    if spec.expert == "gpt_oss":
        gu, gub, _, _ = oss_keys(spec)
        pre = np.einsum("c,ecf->ef", x, p[gu]) + p[gub]  # (E, 2F) every expert, interleaved gate/up
        lim = spec.swiglu_limit
        if np.min(np.abs(pre[:, ::2] - lim)) <= MARGIN or np.min(np.abs(np.abs(pre[:, 1::2]) - lim)) <= MARGIN:
            return False
    return True


def _make_moe(family: str) -> Make:
    def make(rng: np.random.Generator, s: Any) -> tuple[Arrays, dict[str, Any]]:
        spec = _spec(family)
        F, Fs = _widths(family, s.C)
        p = _params(rng, spec, s.C, F, Fs)
        x = np.empty((s.B * s.T, s.C))  # (N, C)
        for n in range(x.shape[0]):
            while True:
                x[n] = rng.standard_normal(s.C)
                if _token_ok(spec, x[n], p):
                    break
        a: Arrays = {"in.x": x.reshape(s.B, s.T, s.C)}
        a.update({f"in.p.{k}": v for k, v in p.items()})
        a["dout"] = rng.standard_normal((s.B, s.T, s.C))
        a["drouter_logits"] = rng.standard_normal((s.B * s.T, E))
        return a, {"family": family, "spec": spec._asdict()}
    return make


def _run_moe(a: Arrays, args: dict[str, Any], grouped: bool = False) -> Arrays:
    try:
        spec = MoESpec(**args["spec"])
    except (TypeError, KeyError) as e:
        raise OracleError(f"meta.args.spec: not an MoESpec: {e}") from None
    p = {k[len("in.p."):]: v for k, v in a.items() if k.startswith("in.p.")}
    if grouped:
        out, z, gcache = moe_grouped_forward(a["in.x"], p, spec)
        dx, g = moe_grouped_backward(a["dout"], gcache, a["drouter_logits"])
    else:
        out, z, cache = moe_forward(a["in.x"], p, spec)
        dx, g = moe_backward(a["dout"], cache, a["drouter_logits"])
    return {"out": out, "router_logits": z, "grad.x": dx, **{f"grad.p.{k}": v for k, v in g.items()}}


def _moe(family: str, grouped: bool = False) -> MoECase:
    names = _names(family)
    corr = router_keys(_spec(family))[2]
    inputs = ("x", *(f"p.{n}" for n in names))
    grads = ("x", *(f"p.{n}" for n in names if n != corr))
    layer = "moe_grouped" if grouped else "moe"
    return MoECase(f"{layer}_{family}", f"npgpt.layers.{layer}_forward", f"npgpt.layers.{layer}_backward", inputs,
                   grads, _make_moe(family), functools.partial(_run_moe, grouped=grouped), ("out", "router_logits"))


# ---------------------------------------------------------------------------------------------- the losses


def _make_loss(kind: str) -> Make:
    def make(rng: np.random.Generator, s: Any) -> tuple[Arrays, dict[str, Any]]:
        a: Arrays = {"in.router_logits": _draw_rows(rng, s.L * s.B * s.T, "softmax_topk",
                                                    scale=2.0).reshape(s.L, s.B * s.T, E)}
        args: dict[str, Any] = {}
        if kind == "load_balancing":
            mask = np.ones((s.B, s.T), dtype=np.int64)  # (B, T) the last token of row 0 is padding (if not alone)
            if s.B * s.T > 1:
                mask[0, -1] = 0
            a["in.attention_mask"] = mask
            args["top_k"] = K
        a["dout"] = np.asarray(rng.standard_normal())
        return a, args
    return make


def _run_load_balancing(a: Arrays, args: dict[str, Any]) -> Arrays:
    loss, cache = load_balancing_loss_forward(a["in.router_logits"], args["top_k"], a["in.attention_mask"])
    return {"out": loss, "grad.router_logits": load_balancing_loss_backward(float(a["dout"]), cache)}


def _run_z_loss(a: Arrays, args: dict[str, Any]) -> Arrays:
    loss, cache = router_z_loss_forward(a["in.router_logits"])
    return {"out": loss, "grad.router_logits": router_z_loss_backward(float(a["dout"]), cache)}


CASES: tuple[MoECase, ...] = (
    _router("router_softmax_topk", "softmax_topk"),
    _router("router_softmax_topk_unnormalised", "softmax_topk", norm=False),
    _router_ties("router_softmax_topk_ties", "softmax_topk"),
    _router("router_topk_softmax", "topk_softmax"),
    _router_ties("router_topk_softmax_ties", "topk_softmax"),
    _router("router_deepseek", "deepseek"),
    _router_ties("router_deepseek_ties", "deepseek"),
    _moe("mixtral"),
    _moe("qwen2_moe"),
    _moe("gpt_oss"),
    _moe("deepseek_v3"),
    _moe("deepseek_v3", grouped=True),
    MoECase("load_balancing_loss", "npgpt.layers.load_balancing_loss_forward",
            "npgpt.layers.load_balancing_loss_backward", ("router_logits", "attention_mask"), ("router_logits",),
            _make_loss("load_balancing"), _run_load_balancing),
    MoECase("router_z_loss", "npgpt.layers.router_z_loss_forward", "npgpt.layers.router_z_loss_backward",
            ("router_logits",), ("router_logits",), _make_loss("z"), _run_z_loss),
)
