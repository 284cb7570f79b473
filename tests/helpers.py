"""Shared pieces of the layer tests.

- hypothesis strategies for small shapes (edge cases B=1, T=1, one head, D=1 included) and seeds;
- `rand(rng, *shape)` and friends: float64 test data with non-degenerate values;
- obviously-correct reference forwards (explicit Python loops, math/statistics per element), float64 only;
- purity and dtype checks shared by every layer test;
- `gradcheck(layer, ...)`: check_layer plus a record of the worst relative error seen per layer, which
  tests/conftest.py writes to $NPGPT_GRADCHECK_REPORT (JSON) at the end of the session.

The reference forwards never call npgpt, so a seeded error in a layer cannot leak into its reference.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from hypothesis import strategies as st

from npgpt.gradcheck import GradcheckError, GradcheckResult, check_layer

GRAD_TOL = 1e-6  # relative error allowed by the gradient checks (float64 gives ~1e-9)
RTOL = 1e-12  # forward vs reference: a 0.1% change of any element must fail
ATOL = 1e-12

GPT2_BLOCK_PARAM_NAMES = (
    "ln_1.weight", "ln_1.bias",
    "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias",
    "ln_2.weight", "ln_2.bias",
    "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias",
)

# ---------------------------------------------------------------------------------------------- strategies

seeds = st.integers(0, 2**32 - 1)
batch_sizes = st.integers(1, 3)  # B
seq_lens = st.integers(1, 5)  # T
n_heads = st.integers(1, 3)  # H
head_dims = st.integers(1, 4)  # D
vocab_sizes = st.integers(2, 7)  # V
widths = st.integers(1, 5)  # C, C_in, C_out, N
lead_shapes = st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple)  # the "..." of (..., C)
any_shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)  # elementwise layers (0-d: see tests)
gelu_modes = st.sampled_from(["tanh", "erf"])

# ---------------------------------------------------------------------------------------------- test data


def rand(rng: np.random.Generator, *shape: int, scale: float = 1.0) -> np.ndarray:
    """Standard normal float64 array of the given shape, times scale (shape () gives a 0-d array)."""
    x = rng.standard_normal(shape)
    x *= scale  # in place: a 0-d array stays an array
    return x


def spread_rows(rng: np.random.Generator, *shape: int, min_std: float = 0.3) -> np.ndarray:
    """Like rand, but every row along the last axis has standard deviation >= min_std (when it has >= 2
    entries), so LayerNorm's sqrt(var + eps) is far from eps and finite differences stay accurate."""
    x = rand(rng, *shape)
    rows = x.reshape(-1, shape[-1]) if x.ndim else x.reshape(1, 1)
    if rows.shape[-1] >= 2:
        for row in rows:
            while row.std() < min_std:
                row[:] = rng.standard_normal(row.shape)
    return x


def ln_weight(rng: np.random.Generator, C: int) -> np.ndarray:
    """A LayerNorm scale near 1 but not 1: 1 + 0.3 * noise."""
    return 1.0 + 0.3 * rng.standard_normal(C)


def block_params(rng: np.random.Generator, C: int, dtype: Any = np.float64) -> dict[str, np.ndarray]:
    """Non-degenerate GPT-2 block parameters keyed by GPT-2's names (hidden width 4C)."""
    p = {
        "ln_1.weight": ln_weight(rng, C), "ln_1.bias": rand(rng, C, scale=0.3),
        "attn.c_attn.weight": rand(rng, C, 3 * C, scale=0.5), "attn.c_attn.bias": rand(rng, 3 * C, scale=0.3),
        "attn.c_proj.weight": rand(rng, C, C, scale=0.5), "attn.c_proj.bias": rand(rng, C, scale=0.3),
        "ln_2.weight": ln_weight(rng, C), "ln_2.bias": rand(rng, C, scale=0.3),
        "mlp.c_fc.weight": rand(rng, C, 4 * C, scale=0.5), "mlp.c_fc.bias": rand(rng, 4 * C, scale=0.3),
        "mlp.c_proj.weight": rand(rng, 4 * C, C, scale=0.3), "mlp.c_proj.bias": rand(rng, C, scale=0.3),
    }
    return {k: v.astype(dtype) for k, v in p.items()}


def as_float32(obj: Any) -> Any:
    """float64 arrays (also inside lists, tuples and dicts) converted to float32; everything else as is."""
    if isinstance(obj, np.ndarray) and obj.dtype == np.float64:
        return obj.astype(np.float32)
    if isinstance(obj, Mapping):
        return {k: as_float32(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(as_float32(v) for v in obj)
    return obj


# ---------------------------------------------------------------------------------------------- references


def ref_embedding(idx: np.ndarray, w: np.ndarray) -> np.ndarray:
    """out[b, t, c] = w[idx[b, t], c], one element at a time."""
    B, T = idx.shape
    out = np.empty((B, T, w.shape[1]))
    for b in range(B):
        for t in range(T):
            for c in range(w.shape[1]):
                out[b, t, c] = w[int(idx[b, t]), c]
    return out


def ref_linear(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """out[..., o] = sum_i x[..., i] w[i, o] + b[o], with exactly rounded sums (math.fsum)."""
    C_in, C_out = w.shape
    rows = x.reshape(-1, C_in)
    out = np.empty((rows.shape[0], C_out))
    for n in range(rows.shape[0]):
        for o in range(C_out):
            out[n, o] = math.fsum([rows[n, i] * w[i, o] for i in range(C_in)] + [b[o]])
    return out.reshape(*x.shape[:-1], C_out)


def ref_layernorm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Per row: population mean and variance from the statistics module, then (v - mean) / sqrt(var + eps)."""
    C = x.shape[-1]
    rows = x.reshape(-1, C)
    out = np.empty(rows.shape)
    for n, row in enumerate(rows):
        vals = [float(v) for v in row]
        mean = statistics.fmean(vals)
        var = statistics.pvariance(vals, mu=mean)
        for c in range(C):
            out[n, c] = (vals[c] - mean) / math.sqrt(var + eps) * w[c] + b[c]
    return out.reshape(x.shape)


def ref_gelu(x: np.ndarray, approximate: str = "tanh") -> np.ndarray:
    """GELU per element with math.tanh (GPT-2's approximation) or math.erf (exact)."""
    out = np.empty(x.shape)
    for i, v in np.ndenumerate(x):
        v = float(v)
        if approximate == "tanh":
            out[i] = 0.5 * v * (1.0 + math.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v ** 3)))
        else:
            out[i] = 0.5 * v * (1.0 + math.erf(v / math.sqrt(2.0)))
    return out


def ref_softmax_row(vals: Sequence[float]) -> list[float]:
    """exp(v - max) / sum, with an exactly rounded sum."""
    m = max(vals)
    e = [math.exp(v - m) for v in vals]
    s = math.fsum(e)
    return [ei / s for ei in e]


def ref_softmax(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, one row at a time."""
    rows = x.reshape(-1, x.shape[-1])
    return np.array([ref_softmax_row([float(v) for v in row]) for row in rows]).reshape(x.shape)


def ref_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
    """For each query t: softmax over keys s = 0..t of q_t . k_s / sqrt(D), then sum_s p_s v_s."""
    B, H, T, D = q.shape
    out = np.empty(q.shape)
    for b in range(B):
        for h in range(H):
            for t in range(T):
                scores = [math.fsum(q[b, h, t, d] * k[b, h, s, d] for d in range(D)) / math.sqrt(D)
                          for s in range(t + 1)]
                p = ref_softmax_row(scores)
                for d in range(D):
                    out[b, h, t, d] = math.fsum(p[s] * v[b, h, s, d] for s in range(t + 1))
    return out


def ref_split_heads(x: np.ndarray, n_head: int) -> np.ndarray:
    """out[b, h, t, d] = x[b, t, h * D + d]."""
    B, T, C = x.shape
    D = C // n_head
    out = np.empty((B, n_head, T, D))
    for b in range(B):
        for h in range(n_head):
            for t in range(T):
                for d in range(D):
                    out[b, h, t, d] = x[b, t, h * D + d]
    return out


def ref_merge_heads(x: np.ndarray) -> np.ndarray:
    """out[b, t, h * D + d] = x[b, h, t, d]."""
    B, H, T, D = x.shape
    out = np.empty((B, T, H * D))
    for b in range(B):
        for h in range(H):
            for t in range(T):
                for d in range(D):
                    out[b, t, h * D + d] = x[b, h, t, d]
    return out


def ref_cross_entropy(logits: np.ndarray, targets: np.ndarray) -> float:
    """Mean over positions of -log(softmax(logits)[target]), with math.exp/math.log."""
    V = logits.shape[-1]
    rows = logits.reshape(-1, V)
    tgt = targets.reshape(-1)
    nll = []
    for row, t in zip(rows, tgt):
        m = max(float(v) for v in row)
        p_t = math.exp(float(row[int(t)]) - m) / math.fsum(math.exp(float(v) - m) for v in row)
        nll.append(-math.log(p_t))
    return math.fsum(nll) / len(nll)


def ref_mlp(x, w_fc, b_fc, w_proj, b_proj, approximate: str = "tanh") -> np.ndarray:
    """c_proj(gelu(c_fc(x))) from the references."""
    return ref_linear(ref_gelu(ref_linear(x, w_fc, b_fc), approximate), w_proj, b_proj)


def ref_self_attention(x, w_attn, b_attn, w_proj, b_proj, n_head: int) -> np.ndarray:
    """c_attn -> q | k | v -> heads -> causal attention -> merge -> c_proj, from the references."""
    C = x.shape[-1]
    qkv = ref_linear(x, w_attn, b_attn)
    q, k, v = (ref_split_heads(qkv[..., i * C:(i + 1) * C], n_head) for i in range(3))
    return ref_linear(ref_merge_heads(ref_attention(q, k, v)), w_proj, b_proj)


def ref_block(x: np.ndarray, p: Mapping[str, np.ndarray], n_head: int) -> np.ndarray:
    """x1 = x + attn(ln_1(x)); out = x1 + mlp(ln_2(x1)), from the references (no dropout)."""
    x1 = x + ref_self_attention(ref_layernorm(x, p["ln_1.weight"], p["ln_1.bias"]), p["attn.c_attn.weight"],
                                p["attn.c_attn.bias"], p["attn.c_proj.weight"], p["attn.c_proj.bias"], n_head)
    return x1 + ref_mlp(ref_layernorm(x1, p["ln_2.weight"], p["ln_2.bias"]), p["mlp.c_fc.weight"],
                        p["mlp.c_fc.bias"], p["mlp.c_proj.weight"], p["mlp.c_proj.bias"])


def assert_matches_reference(out: np.ndarray, ref: Any) -> None:
    """Tight float64 comparison: a 0.1% change of any element that is not ~0 fails."""
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, ref, rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------------------------------------- purity, dtypes


def leaves(obj: Any) -> list[np.ndarray]:
    """The arrays in a layer result: an array, or tuples/dicts of them (dicts in key order)."""
    if isinstance(obj, Mapping):
        return [a for v in obj.values() for a in leaves(v)]
    if isinstance(obj, (list, tuple)):
        return [a for v in obj for a in leaves(v)]
    return [obj]


def snapshot(obj: Any) -> Any:
    """A deep copy of every array in obj (nested lists, tuples, dicts)."""
    if isinstance(obj, np.ndarray):
        return obj.copy()
    if isinstance(obj, Mapping):
        return {k: snapshot(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [snapshot(v) for v in obj]
    return obj


def assert_unchanged(before: Any, after: Any, what: str) -> None:
    """Every array in `after` equals (values and dtype) its copy in `before`."""
    if isinstance(before, np.ndarray):
        assert after.dtype == before.dtype and np.array_equal(after, before), f"{what} was modified"
    elif isinstance(before, Mapping):
        for k in before:
            assert_unchanged(before[k], after[k], f"{what}[{k!r}]")
    elif isinstance(before, list):
        for i, (b, a) in enumerate(zip(before, after)):
            assert_unchanged(b, a, f"{what}[{i}]")


def forward_backward_pure(forward: Callable[..., Any], backward: Callable[..., Any], args: Sequence[Any],
                          rng: np.random.Generator, kwargs: Mapping[str, Any] | None = None) -> tuple[Any, Any]:
    """Run forward then backward (random dout) and assert that neither modified args or dout.

    Returns (out, grads)."""
    kwargs = dict(kwargs or {})
    args_before = snapshot(list(args))
    out, cache = forward(*args, **kwargs)
    assert_unchanged(args_before, list(args), "forward input")
    dout = rand(rng, *np.shape(out)).astype(out.dtype)
    dout_before = dout.copy()
    grads = backward(dout, cache)
    assert_unchanged(args_before, list(args), "input (after backward)")
    assert_unchanged(dout_before, dout, "dout")
    return out, grads


def assert_float32_throughout(forward: Callable[..., Any], backward: Callable[..., Any], args: Sequence[Any],
                              rng: np.random.Generator, kwargs: Mapping[str, Any] | None = None,
                              n_grads: int | None = None) -> None:
    """float32 inputs give a float32 output and float32 gradients (every one of them)."""
    out, grads = forward_backward_pure(forward, backward, as_float32(list(args)), rng, kwargs)
    assert out.dtype == np.float32, f"forward output is {out.dtype}"
    gs = leaves(grads)
    if n_grads is not None:
        assert len(gs) == n_grads
    for i, g in enumerate(gs):
        assert isinstance(g, np.ndarray) and g.dtype == np.float32, f"gradient {i} is {getattr(g, 'dtype', g)}"
        assert np.all(np.isfinite(g))


# ---------------------------------------------------------------------------------------------- gradcheck record

_worst: dict[str, dict[str, float]] = {}  # layer -> input name -> worst relative error seen
_checks: dict[str, int] = {}  # layer -> number of check_layer calls


def gradcheck(layer: str, forward: Callable[..., Any], backward: Callable[..., Any], inputs: Sequence[Any],
              names: Sequence[str], rng: np.random.Generator, **kwargs: Any) -> list[GradcheckResult]:
    """check_layer(..., tol=GRAD_TOL) with a random standard-normal dout drawn from rng; records the worst
    relative error per input under `layer`, then raises GradcheckError if any exceeds the tolerance."""
    results = check_layer(forward, backward, inputs, names=names, rng=rng, tol=GRAD_TOL,
                          raise_on_failure=False, **kwargs)
    record(layer, results)
    failed = [r for r in results if not r.error <= GRAD_TOL]
    if failed:
        raise GradcheckError(f"{layer}: gradient check failed for " + "; ".join(str(r) for r in failed)
                             + f"; tolerance {GRAD_TOL:g}")
    return results


def record(layer: str, results: Sequence[GradcheckResult]) -> None:
    """Remember the worst error per (layer, input)."""
    per_input = _worst.setdefault(layer, {})
    for r in results:
        per_input[r.name] = max(per_input.get(r.name, 0.0), r.error)
    _checks[layer] = _checks.get(layer, 0) + 1


def gradcheck_report() -> dict[str, dict[str, Any]]:
    """{layer: {"worst": e, "checks": n, "inputs": {name: e}}}, layers sorted by name."""
    return {layer: {"worst": max(per.values(), default=0.0), "checks": _checks[layer], "inputs": dict(per)}
            for layer, per in sorted(_worst.items())}


def write_gradcheck_report(path: str) -> None:
    """Write gradcheck_report() as JSON to path."""
    with open(path, "w", encoding="utf-8") as f:
        json.dump(gradcheck_report(), f, indent=2, sort_keys=True)
        f.write("\n")
