"""Shared pieces of the router and MoE tests: inputs drawn away from ties (a margin), and obviously-correct
references (Python loops, math only, the tie rule spelled out as a sort key) that never call npgpt."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

MARGIN = 0.02  # the finite differences move inputs by up to 2h = 2e-3: every decision has at least this slack


def min_gap(values: np.ndarray) -> float:
    """The smallest difference between two entries of any row (inf for rows of one entry)."""
    v = np.sort(values.reshape(-1, values.shape[-1]), axis=-1)
    return float(np.min(np.diff(v, axis=-1), initial=np.inf))


def draw(rng: np.random.Generator, make: Callable[[np.random.Generator], tuple], ok: Callable[..., bool],
         tries: int = 500) -> tuple:
    """make(rng) again until ok(*result): inputs whose decisions are at least a margin away from a tie."""
    for _ in range(tries):
        res = make(rng)
        if ok(*res):
            return res
    raise RuntimeError("could not draw inputs away from ties")


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def ranked(scores: list[float]) -> list[int]:
    """Indices by descending score, ties to the lower index: the documented tie rule as a sort key."""
    return sorted(range(len(scores)), key=lambda e: (-scores[e], e))


def ref_softmax_topk(z: np.ndarray, K: int, norm: bool) -> tuple[np.ndarray, np.ndarray]:
    """Row by row: softmax with math.exp and fsum, ranked, the first K, divided by their fsum if norm."""
    W, Ix = [], []
    for row in z:
        m = max(row)
        e = [math.exp(v - m) for v in row]
        s = math.fsum(e)
        p = [x / s for x in e]
        idx = ranked(p)[:K]
        w = [p[i] for i in idx]
        if norm:
            t = math.fsum(w)
            w = [x / t for x in w]
        W.append(w)
        Ix.append(idx)
    return np.array(W).reshape(z.shape[0], K), np.array(Ix, dtype=np.intp).reshape(z.shape[0], K)


def ref_topk_softmax(z: np.ndarray, K: int) -> tuple[np.ndarray, np.ndarray]:
    """Row by row: ranked logits, the first K, softmax over them with math.exp and fsum."""
    W, Ix = [], []
    for row in z:
        idx = ranked(list(row))[:K]
        m = max(row[i] for i in idx)
        e = [math.exp(row[i] - m) for i in idx]
        s = math.fsum(e)
        W.append([x / s for x in e])
        Ix.append(idx)
    return np.array(W).reshape(z.shape[0], K), np.array(Ix, dtype=np.intp).reshape(z.shape[0], K)


def ref_deepseek(z: np.ndarray, bias: np.ndarray, K: int, n_group: int, topk_group: int, norm: bool,
                 r: float) -> tuple[np.ndarray, np.ndarray]:
    """Row by row: sigmoid scores, corrected scores, group scores (sum of each group's two largest), the best
    topk_group groups (ties: lower group), the K best corrected scores among them (ties: lower expert)."""
    E = z.shape[1]
    G = E // n_group
    W, Ix = [], []
    for row in z:
        s = [sigmoid(v) for v in row]
        c = [s[e] + bias[e] for e in range(E)]
        if n_group > 1:
            gs = [sum(sorted(c[g * G:(g + 1) * G])[-2:]) for g in range(n_group)]
            groups = ranked(gs)[:topk_group]
            cand = [e for e in range(E) if e // G in groups]
        else:
            cand = list(range(E))
        idx = sorted(cand, key=lambda e: (-c[e], e))[:K]
        w = [s[i] for i in idx]
        if norm:
            t = math.fsum(w) + 1e-20
            w = [x / t for x in w]
        W.append([x * r for x in w])
        Ix.append(idx)
    return np.array(W).reshape(z.shape[0], K), np.array(Ix, dtype=np.intp).reshape(z.shape[0], K)


def deepseek_gaps(z: np.ndarray, bias: np.ndarray, n_group: int) -> float:
    """The smallest slack of DeepSeek's decisions: between corrected scores, and between group scores."""
    c = 1.0 / (1.0 + np.exp(-z)) + bias  # (N, E)
    gap = min_gap(c)
    if n_group > 1:
        g = np.sort(c.reshape(c.shape[0], n_group, -1), axis=-1)[..., -2:].sum(-1)  # (N, n_group)
        gap = min(gap, min_gap(g))
    return gap


def boundary_gap(scores: np.ndarray, k: int) -> float:
    """The smallest gap, over rows, between the k-th and (k+1)-th largest finite scores (inf if none)."""
    s = -np.sort(-scores, axis=-1)  # (N, E) descending
    if k >= s.shape[-1]:
        return float("inf")
    d = s[:, k - 1] - s[:, k]
    return float(np.min(d[np.isfinite(d)], initial=np.inf))


def deepseek_boundary_gap(z: np.ndarray, bias: np.ndarray, n_group: int, topk_group: int, K: int) -> float:
    """The slack of DeepSeek's choice as a set: at the kept groups' boundary and at the K-th expert's."""
    c = 1.0 / (1.0 + np.exp(-z)) + bias  # (N, E)
    gap = float("inf")
    if n_group > 1:
        g3 = c.reshape(c.shape[0], n_group, -1)
        gs = np.sort(g3, axis=-1)[..., -2:].sum(-1)  # (N, n_group)
        gap = boundary_gap(gs, topk_group)
        keep = np.argsort(-gs, axis=-1, kind="stable")[:, :topk_group]
        masked = np.full_like(g3, -np.inf)
        rows = np.arange(c.shape[0])[:, None]
        masked[rows, keep] = g3[rows, keep]
        c = masked.reshape(c.shape)
    return min(gap, boundary_gap(c, K))
