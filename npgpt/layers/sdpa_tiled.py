"""Tiled attention: sdpa's result by an online softmax over key blocks, never building a (Tq, Tk) array.

Forward q (B, Hq, Tq, D), k (B, Hkv, Tk, D), v (B, Hkv, Tk, Dv) -> out (B, Hq, Tq, Dv), lse (B, Hq, Tq), with
every option of sdpa_forward; blocks of block_q queries by block_k keys.  Backward recomputes each block's
probabilities from lse (flash-attention's backward) -> the same SdpaGrads as sdpa_backward.
Derivation: docs/derivations/sdpa_tiled.md
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from .._checks import is_int, upstream
from .sdpa import (Array, BoolArray, IntArray, SdpaGrads, SdpaOptions, Window, block_outside, check_options,
                   check_qkv, keep_scaled, reduce_to, scores_block)


class SdpaTiledCache(NamedTuple):
    q_scaled: Array  # (B, Hkv, G, Tq, D) s q grouped by kv head
    k: Array  # (B, Hkv, Tk, D)
    v: Array  # (B, Hkv, Tk, Dv)
    out: Array  # (B, Hq, Tq, Dv) for Delta
    lse: Array  # (B, Hq, Tq) to recompute each block's P = exp(S - lse)
    sinks: Array | None  # (Hq,)
    bias: Array | None  # (B or 1, Hq or 1, Tq, Tk) the caller's array, sliced per block
    opts: SdpaOptions  # masks, softcap and dropout, to recompute each block
    block_q: int
    block_k: int


def _block_size(name: str, x: Any) -> int:
    if not is_int(x) or x < 1:
        raise ValueError(f"{name}: expected a positive integer, got {x!r}")
    return int(x)


def sdpa_tiled_forward(q: Array, k: Array, v: Array, *, block_q: int = 64, block_k: int = 64, causal: bool = False,
                       scale: float | None = None, window: Window | None = None,
                       key_padding_mask: BoolArray | None = None, q_segment_ids: IntArray | None = None,
                       k_segment_ids: IntArray | None = None, sinks: Array | None = None, softcap: float | None = None,
                       bias: Array | None = None, dropout_p: float = 0.0, dropout_seed: int | None = None,
                       dropout_mask: BoolArray | None = None) -> tuple[Array, Array, SdpaTiledCache]:
    """sdpa_forward's out and lse, computed block by block with a running max m, sum and accumulator.

    q (B, Hq, Tq, D), k (B, Hkv, Tk, D), v (B, Hkv, Tk, Dv) -> out (B, Hq, Tq, Dv), lse (B, Hq, Tq), cache;
    peak extra memory O(B Hq block_q block_k).  See docs/derivations/sdpa_tiled.md.
    """
    check_qkv(q, k, v)
    bq, bk = _block_size("block_q", block_q), _block_size("block_k", block_k)
    opts = check_options(q, k, causal=causal, scale=scale, window=window, key_padding_mask=key_padding_mask,
                         q_segment_ids=q_segment_ids, k_segment_ids=k_segment_ids, sinks=sinks, softcap=softcap,
                         bias=bias, dropout_p=dropout_p, dropout_seed=dropout_seed, dropout_mask=dropout_mask)
    return _sdpa_tiled_forward(q, k, v, sinks, bias, opts, bq, bk)


def _sdpa_tiled_forward(q: Array, k: Array, v: Array, sinks: Array | None, bias: Array | None, opts: SdpaOptions,
                        block_q: int, block_k: int) -> tuple[Array, Array, SdpaTiledCache]:
    """The unchecked kernel of sdpa_tiled_forward."""
    B, Hq, Tq, D = q.shape
    Hkv, Tk, Dv = k.shape[1], k.shape[2], v.shape[3]
    q_scaled = (q * opts.scale).reshape(B, Hkv, Hq // Hkv, Tq, D)  # (B, Hkv, G, Tq, D)
    kT = np.ascontiguousarray(k.swapaxes(-1, -2))  # (B, Hkv, D, Tk)
    out = np.empty((B, Hq, Tq, Dv), dtype=q.dtype)  # (B, Hq, Tq, Dv)
    lse = np.empty((B, Hq, Tq), dtype=q.dtype)  # (B, Hq, Tq)
    # where the running max (1) and sum (2) start, per head: at the sink (exp(sink - sink) = 1; a -inf sink is no
    # sink, sum 0), or empty without sinks
    m0 = np.full(Hq, -np.inf, dtype=q.dtype) if sinks is None else sinks  # (Hq,)
    d0 = np.zeros(Hq, dtype=q.dtype) if sinks is None else (sinks > -np.inf).astype(q.dtype)  # (Hq,)
    for i0 in range(0, Tq, block_q):
        i1 = min(i0 + block_q, Tq)
        qb = q_scaled[:, :, :, i0:i1].reshape(B, Hkv, -1, D)  # (B, Hkv, G*bq, D)
        m = np.broadcast_to(m0[:, None], (B, Hq, i1 - i0)).copy()  # (B, Hq, bq) running max (1)
        denom = np.broadcast_to(d0[:, None], (B, Hq, i1 - i0)).copy()  # (B, Hq, bq) running sum of exp(S - m) (2)
        acc = np.zeros((B, Hq, i1 - i0, Dv), dtype=q.dtype)  # (B, Hq, bq, Dv) running sum of exp(S - m) v (3)
        for j0 in range(0, Tk, block_k):
            j1 = min(j0 + block_k, Tk)
            if block_outside(opts, Tq, Tk, i0, i1, j0, j1):
                continue  # causality or the window hide this whole block
            s, _ = scores_block(qb, kT[..., j0:j1], opts, bias, Hq, Tq, Tk, i0, i1, j0, j1)  # (B, Hq, bq, bk)
            m_new = np.maximum(m, s.max(axis=-1))  # (B, Hq, bq) (1)
            m_safe = m_new.copy()  # (B, Hq, bq)
            m_safe[np.isneginf(m_new)] = 0.0  # nothing seen yet: keep exp(-inf - 0) = 0, not nan
            alpha = np.exp(m - m_safe)  # (B, Hq, bq) rescales what was summed under the old max
            p = s  # reuse S's memory
            p -= m_safe[..., None]
            np.exp(p, out=p)  # (B, Hq, bq, bk) exp(S - m_new)
            denom *= alpha
            denom += p.sum(axis=-1)  # (2)
            keep = keep_scaled(opts, q.dtype, B, Hq, Tq, Tk, i0, i1, j0, j1)  # (B, Hq, bq, bk) or None
            if keep is not None:
                p *= keep  # dropout acts on the value sum only, never on denom
            acc *= alpha[..., None]
            acc += (p.reshape(B, Hkv, -1, j1 - j0) @ v[:, :, j0:j1]).reshape(B, Hq, i1 - i0, Dv)  # (3)
            m = m_new
        m[np.isneginf(m)] = 0.0  # rows that saw nothing: denom = 0
        with np.errstate(divide="ignore"):
            lse[:, :, i0:i1] = m + np.log(denom)  # (4) (B, Hq, bq) -inf exactly where denom is 0
        denom[denom == 0.0] = 1.0
        out[:, :, i0:i1] = acc / denom[..., None]  # (5) (B, Hq, bq, Dv) 0 on a row that saw nothing
    cache = SdpaTiledCache(q_scaled, k, v, out, lse, sinks, bias, opts, block_q, block_k)
    return out, lse, cache


def sdpa_tiled_backward(dout: Array, cache: SdpaTiledCache, dlse: Array | None = None) -> SdpaGrads:
    """sdpa_backward's gradients, block by block: P = exp(S - lse) recomputed, dS = P * (dP - Delta).

    dout (B, Hq, Tq, Dv), dlse (B, Hq, Tq) or None -> SdpaGrads.  See docs/derivations/sdpa_tiled.md.
    """
    upstream("dout", dout, cache.out.shape, cache.out.dtype)
    if dlse is not None:
        upstream("dlse", dlse, cache.lse.shape, cache.lse.dtype)
    return _sdpa_tiled_backward(dout, cache, dlse)


def _sdpa_tiled_backward(dout: Array, cache: SdpaTiledCache, dlse: Array | None) -> SdpaGrads:
    """The unchecked kernel of sdpa_tiled_backward."""
    q_scaled, k, v, out, lse, sinks, bias, opts, block_q, block_k = cache
    B, Hkv, G, Tq, D = q_scaled.shape
    Hq, Tk, Dv = Hkv * G, k.shape[2], v.shape[3]
    delta = np.einsum("bhtd,bhtd->bht", dout, out)  # (B, Hq, Tq) rowsum(dout * out)
    if dlse is not None:
        delta -= dlse  # dS = P * (dP - Delta + dlse)
    lse_safe = lse.copy()  # (B, Hq, Tq)
    lse_safe[np.isneginf(lse)] = 0.0  # a row that saw nothing has S = -inf everywhere: P = 0
    dsinks = None
    if sinks is not None:
        dsinks = -(np.exp(sinks[None, :, None] - lse_safe) * delta).sum(axis=(0, 2))  # (Hq,) 0 for a -inf sink
    kT = np.ascontiguousarray(k.swapaxes(-1, -2))  # (B, Hkv, D, Tk)
    vT = np.ascontiguousarray(v.swapaxes(-1, -2))  # (B, Hkv, Dv, Tk)
    dout_g = dout.reshape(B, Hkv, G, Tq, Dv)  # (B, Hkv, G, Tq, Dv)
    dq = np.empty((B, Hq, Tq, D), dtype=out.dtype)  # (B, Hq, Tq, D)
    dk = np.zeros(k.shape, dtype=out.dtype)  # (B, Hkv, Tk, D)
    dv = np.zeros(v.shape, dtype=out.dtype)  # (B, Hkv, Tk, Dv)
    dbias = None if bias is None else np.zeros(bias.shape, dtype=out.dtype)  # bias's shape
    for i0 in range(0, Tq, block_q):
        i1 = min(i0 + block_q, Tq)
        bq = i1 - i0
        qb = q_scaled[:, :, :, i0:i1].reshape(B, Hkv, -1, D)  # (B, Hkv, G*bq, D)
        db = dout_g[:, :, :, i0:i1].reshape(B, Hkv, -1, Dv)  # (B, Hkv, G*bq, Dv)
        dqb = np.zeros((B, Hkv, G * bq, D), dtype=out.dtype)  # (B, Hkv, G*bq, D)
        for j0 in range(0, Tk, block_k):
            j1 = min(j0 + block_k, Tk)
            if block_outside(opts, Tq, Tk, i0, i1, j0, j1):
                continue
            s, t = scores_block(qb, kT[..., j0:j1], opts, bias, Hq, Tq, Tk, i0, i1, j0, j1)  # (B, Hq, bq, bk)
            p = s  # reuse S's memory
            p -= lse_safe[:, :, i0:i1, None]
            np.exp(p, out=p)  # (B, Hq, bq, bk) P recomputed from the saved lse
            keep = keep_scaled(opts, out.dtype, B, Hq, Tq, Tk, i0, i1, j0, j1)  # (B, Hq, bq, bk) or None
            pd = p if keep is None else p * keep  # (B, Hq, bq, bk)
            dv[:, :, j0:j1] += pd.reshape(B, Hkv, -1, j1 - j0).swapaxes(-1, -2) @ db  # (1) (B, Hkv, bk, Dv)
            dp = (db @ vT[..., j0:j1]).reshape(B, Hq, bq, j1 - j0)  # (2) (B, Hq, bq, bk)
            if keep is not None:
                dp *= keep
            ds = dp  # reuse dP's memory
            ds -= delta[:, :, i0:i1, None]
            ds *= p  # (4) (B, Hq, bq, bk)
            if dbias is not None:
                dbias[:, :, i0:i1, j0:j1] += reduce_to(ds, (*dbias.shape[:2], bq, j1 - j0))  # (6)
            if t is not None:
                ds *= 1.0 - t * t  # (7)
            ds_g = ds.reshape(B, Hkv, -1, j1 - j0)  # (B, Hkv, G*bq, bk)
            dqb += ds_g @ k[:, :, j0:j1]  # (8) (B, Hkv, G*bq, D)
            dk[:, :, j0:j1] += ds_g.swapaxes(-1, -2) @ qb  # (9) (B, Hkv, bk, D)
        dqb *= opts.scale
        dq[:, :, i0:i1] = dqb.reshape(B, Hq, bq, D)
    return SdpaGrads(dq, dk, dv, dsinks, dbias)
