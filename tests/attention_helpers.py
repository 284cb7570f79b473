"""Shared pieces of the attention-family tests (test_sdpa, test_sdpa_tiled, test_merge_attention, test_sdpa_qkv).

- `attention_problems(draw)`: a hypothesis strategy drawing shapes and any combination of the options;
- `loop_sdpa(...)`: an independent reference, one (batch, head, query) at a time with math.fsum, that never
  calls npgpt;
- `joint(...)`: wraps a pair as one (out, cache) forward over [out, lse] so finite differences check the
  gradient of the LSE output too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import strategies as st


@dataclass
class Problem:
    q: np.ndarray
    k: np.ndarray
    v: np.ndarray
    opts: dict[str, Any] = field(default_factory=dict)  # keyword options except sinks and bias
    sinks: np.ndarray | None = None
    bias: np.ndarray | None = None

    def kwargs(self) -> dict[str, Any]:
        kw = dict(self.opts)
        if self.sinks is not None:
            kw["sinks"] = self.sinks
        if self.bias is not None:
            kw["bias"] = self.bias
        return kw

    def diff_inputs(self) -> tuple[list[np.ndarray], list[str]]:
        """The differentiable inputs in SdpaGrads order (q, k, v, then sinks and bias when present)."""
        arrays, names = [self.q, self.k, self.v], ["q", "k", "v"]
        if self.sinks is not None:
            arrays.append(self.sinks)
            names.append("sinks")
        if self.bias is not None:
            arrays.append(self.bias)
            names.append("bias")
        return arrays, names


@st.composite
def attention_problems(draw: Any, max_t: int = 5, dropout: bool = True, options: bool = True) -> Problem:
    """Shapes with Tq != Tk, Hq/Hkv ratios, D != Dv, one-token sequences, and any subset of the options."""
    B = draw(st.integers(1, 2), label="B")
    Hkv = draw(st.integers(1, 2), label="Hkv")
    G = draw(st.integers(1, 3), label="G")
    Tq = draw(st.integers(1, max_t), label="Tq")
    Tk = draw(st.integers(1, max_t), label="Tk")
    D = draw(st.integers(1, 3), label="D")
    Dv = draw(st.integers(1, 3), label="Dv")
    seed = draw(st.integers(0, 2**32 - 1), label="seed")
    rng = np.random.default_rng(seed)
    Hq = Hkv * G
    prob = Problem(rng.standard_normal((B, Hq, Tq, D)), rng.standard_normal((B, Hkv, Tk, D)),
                   rng.standard_normal((B, Hkv, Tk, Dv)))
    if not options:
        return prob
    o = prob.opts
    if draw(st.booleans(), label="causal"):
        o["causal"] = True
    if draw(st.booleans(), label="has_window"):
        side = st.one_of(st.none(), st.integers(0, 3))
        o["window"] = (draw(side, label="left"), draw(side, label="right"))
    if draw(st.booleans(), label="has_padding"):
        kp = rng.random((B, Tk)) < 0.7
        if draw(st.booleans(), label="one_row_all_padded"):
            kp[0] = False
        o["key_padding_mask"] = kp
    if draw(st.booleans(), label="has_segments"):
        o["q_segment_ids"] = np.sort(rng.integers(0, 3, (B, Tq)), axis=1)
        o["k_segment_ids"] = np.sort(rng.integers(0, 3, (B, Tk)), axis=1)
    if draw(st.booleans(), label="has_scale"):
        o["scale"] = draw(st.floats(0.2, 1.5), label="scale")
    if draw(st.booleans(), label="has_softcap"):
        o["softcap"] = draw(st.floats(0.5, 3.0), label="softcap")
    if draw(st.booleans(), label="has_sinks"):
        prob.sinks = rng.standard_normal(Hq)
    if draw(st.booleans(), label="has_bias"):
        prob.bias = 0.5 * rng.standard_normal((draw(st.sampled_from([1, B])), draw(st.sampled_from([1, Hq])),
                                               Tq, Tk))
    if dropout:
        kind = draw(st.sampled_from(["none", "mask", "seed"]), label="dropout")
        if kind != "none":
            o["dropout_p"] = 0.25
            if kind == "mask":
                o["dropout_mask"] = rng.random((B, Hq, Tq, Tk)) >= 0.25
            else:
                o["dropout_seed"] = int(rng.integers(0, 2**31))
    return prob


def visible_keys(opts: dict[str, Any], b: int, i: int, Tq: int, Tk: int) -> list[int]:
    """The keys query i of batch row b may see, by the rules written out one at a time."""
    pos = i + Tk - Tq
    keys = []
    for j in range(Tk):
        if opts.get("causal") and j > pos:
            continue
        window = opts.get("window")
        if window is not None:
            left, right = window
            if left is not None and j < pos - left:
                continue
            if right is not None and j > pos + right:
                continue
        kp = opts.get("key_padding_mask")
        if kp is not None and not kp[b, j]:
            continue
        qs, ks = opts.get("q_segment_ids"), opts.get("k_segment_ids")
        if qs is not None and qs[b, i] != ks[b, j]:
            continue
        keys.append(j)
    return keys


def loop_sdpa(prob: Problem, keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Reference out (B, Hq, Tq, Dv) and lse (B, Hq, Tq); keep is the (B, Hq, Tq, Tk) dropout keep mask."""
    q, k, v, o = prob.q, prob.k, prob.v, prob.opts
    B, Hq, Tq, D = q.shape
    Hkv, Tk, Dv = k.shape[1], k.shape[2], v.shape[3]
    scale = o.get("scale", 1.0 / math.sqrt(D))
    cap = o.get("softcap")
    p_drop = o.get("dropout_p", 0.0)
    out = np.zeros((B, Hq, Tq, Dv))
    lse = np.full((B, Hq, Tq), -math.inf)
    for b in range(B):
        for h in range(Hq):
            g = h // (Hq // Hkv)  # the kv head this query head reads
            for i in range(Tq):
                js = visible_keys(o, b, i, Tq, Tk)
                logits = []
                for j in js:
                    x = scale * math.fsum(q[b, h, i, d] * k[b, g, j, d] for d in range(D))
                    if cap is not None:
                        x = cap * math.tanh(x / cap)
                    if prob.bias is not None:
                        x += prob.bias[min(b, prob.bias.shape[0] - 1), min(h, prob.bias.shape[1] - 1), i, j]
                    logits.append(x)
                every = logits + ([float(prob.sinks[h])] if prob.sinks is not None else [])
                if not every:
                    continue  # nothing to attend to: out 0, lse -inf
                m = max(every)
                row_lse = m + math.log(math.fsum(math.exp(x - m) for x in every))
                lse[b, h, i] = row_lse
                for d in range(Dv):
                    terms = []
                    for j, x in zip(js, logits):
                        w = math.exp(x - row_lse)
                        if keep is not None:
                            w = w * keep[b, h, i, j] / (1.0 - p_drop)
                        terms.append(w * v[b, g, j, d])
                    out[b, h, i, d] = math.fsum(terms)
    return out, lse


def joint(forward: Any, backward: Any, kwargs: dict[str, Any], n_out: int) -> tuple[Any, Any]:
    """(f, g) over inputs [q, k, v, (sinks), (bias)] whose output is [out.ravel(), lse.ravel()] (a -inf lse
    shown as 0, a constant): finite differences then check dlse's path through the backward as well."""
    has = [name for name in ("sinks", "bias") if name in kwargs]
    base = {key: val for key, val in kwargs.items() if key not in has}

    def f(*arrays: np.ndarray) -> tuple[np.ndarray, Any]:
        kw = dict(base, **dict(zip(has, arrays[3:])))
        out, lse, cache = forward(*arrays[:3], **kw)
        shown = np.where(np.isneginf(lse), 0.0, lse)
        return np.concatenate([out.ravel(), shown.ravel()]), (cache, out.shape, lse.shape)

    def g(d: np.ndarray, packed: Any) -> tuple[np.ndarray, ...]:
        cache, out_shape, lse_shape = packed
        n = int(np.prod(out_shape))
        grads = backward(d[:n].reshape(out_shape), cache, d[n:].reshape(lse_shape))
        extra = [x for x in grads[3:] if x is not None]
        return (*grads[:3], *extra)[:n_out]

    return f, g
