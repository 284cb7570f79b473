"""General scaled dot-product attention: out = dropout(softmax(mask(cap(s q k^T) + bias), sinks)) v, and its LSE.

Forward q (B, Hq, Tq, D), k (B, Hkv, Tk, D), v (B, Hkv, Tk, Dv) -> out (B, Hq, Tq, Dv), lse (B, Hq, Tq);
GQA/MQA (query head h reads kv head h // (Hq / Hkv)), causal aligned bottom-right, key padding, segment ids,
sliding window, sinks, tanh softcap, additive bias, custom scale, dropout; a row that sees no key gives 0.
Backward (flash-attention's form) dout (B, Hq, Tq, Dv) [, dlse (B, Hq, Tq)] -> dq, dk, dv, dsinks, dbias.
Derivation: docs/derivations/sdpa.md
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, is_int, real_number, same_dtype, upstream

Array = npt.NDArray[np.floating]
BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.integer]
Window = tuple[int | None, int | None]


class SdpaOptions(NamedTuple):
    """The checked, normalised options shared by the dense, tiled and fused-qkv pairs."""

    causal: bool  # key j visible to query i only if j <= i + Tk - Tq
    scale: float  # s, default 1 / sqrt(D)
    window: Window | None  # (left, right): j in [i + Tk - Tq - left, i + Tk - Tq + right]; None = unbounded
    key_padding_mask: BoolArray | None  # (B, Tk) True = a real key
    q_segment_ids: IntArray | None  # (B, Tq) query i sees key j only if their ids are equal
    k_segment_ids: IntArray | None  # (B, Tk)
    softcap: float | None  # c: scores become c tanh(scores / c)
    dropout_p: float  # probability of dropping an attention probability (0: off)
    dropout_seed: int | None  # the counter-based mask's seed (see dropout_keep), or None
    dropout_mask: BoolArray | None  # (B, Hq, Tq, Tk) explicit keep mask (True = keep), or None


class SdpaCache(NamedTuple):
    q_scaled: Array  # (B, Hkv, G*Tq, D) s q grouped by kv head, needed for dk
    k: Array  # (B, Hkv, Tk, D) needed for dq
    v: Array  # (B, Hkv, Tk, Dv) needed for dp
    out: Array  # (B, Hq, Tq, Dv) for Delta = rowsum(dout * out)
    lse: Array  # (B, Hq, Tq) for the sinks' probabilities
    probs: Array  # (B, Hq, Tq, Tk) P, before dropout; exactly 0 where masked
    keep: Array | None  # (B, Hq, Tq, Tk) keep mask / (1 - p) in q's dtype, or None without dropout
    tanh: Array | None  # (B, Hq, Tq, Tk) tanh(s q k^T / c) for the softcap's derivative, or None
    sinks: Array | None  # (Hq,) the sink logits, or None
    bias_shape: tuple[int, ...] | None  # (B or 1, Hq or 1, Tq, Tk) to reduce dbias to, or None
    scale: float


class SdpaGrads(NamedTuple):
    dq: Array  # (B, Hq, Tq, D)
    dk: Array  # (B, Hkv, Tk, D)
    dv: Array  # (B, Hkv, Tk, Dv)
    dsinks: Array | None  # (Hq,) when sinks were given
    dbias: Array | None  # the bias's shape, when a bias was given


# ---------------------------------------------------------------------------------------------- checks


def _bool_array(name: str, x: Any, shape: tuple[int, ...]) -> BoolArray:
    if not isinstance(x, np.ndarray) or x.dtype != np.bool_:
        what = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"{name}: expected a numpy bool array, got {what}")
    if x.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {x.shape}")
    return x


def _int_array(name: str, x: Any, shape: tuple[int, ...]) -> IntArray:
    if not isinstance(x, np.ndarray) or not np.issubdtype(x.dtype, np.integer):
        what = x.dtype if isinstance(x, np.ndarray) else type(x).__name__
        raise ValueError(f"{name}: expected a numpy integer array, got {what}")
    if x.shape != shape:
        raise ValueError(f"{name}: expected shape {shape}, got {x.shape}")
    return x


def _size_or_none(name: str, x: Any) -> int | None:
    if x is None:
        return None
    if not is_int(x) or x < 0:
        raise ValueError(f"{name}: expected a non-negative integer or None, got {x!r}")
    return int(x)


def check_qkv(q: Any, k: Any, v: Any) -> tuple[int, int, int, int, int, int, int]:
    """Check q (B, Hq, Tq, D), k (B, Hkv, Tk, D), v (B, Hkv, Tk, Dv); return (B, Hq, Hkv, Tq, Tk, D, Dv)."""
    float_array("q", q, ndim=4)
    float_array("k", k, ndim=4)
    float_array("v", v, ndim=4)
    same_dtype("q", q, k=k, v=v)
    B, Hq, Tq, D = q.shape
    Hkv, Tk = k.shape[1], k.shape[2]
    if k.shape[0] != B:
        raise ValueError(f"k: expected batch size {B} (q's), got shape {k.shape}")
    if Hkv < 1 or Hq % Hkv:
        raise ValueError(f"k: expected a number of heads dividing q's Hq = {Hq}, got shape {k.shape}")
    if k.shape[3] != D:
        raise ValueError(f"k: expected head size D = {D} (q's), got shape {k.shape}")
    if Tk < 1 or Tq < 1:
        raise ValueError(f"{'k' if Tk < 1 else 'q'}: expected at least one position, got shape "
                         f"{k.shape if Tk < 1 else q.shape}")
    if v.shape[:3] != k.shape[:3]:
        raise ValueError(f"v: expected shape ({B}, {Hkv}, {Tk}, Dv) to match k {k.shape}, got {v.shape}")
    return B, Hq, Hkv, Tq, Tk, D, v.shape[3]


def check_options(q: Array, k: Array, *, causal: Any = False, scale: Any = None, window: Any = None,
                  key_padding_mask: Any = None, q_segment_ids: Any = None, k_segment_ids: Any = None,
                  sinks: Any = None, softcap: Any = None, bias: Any = None, dropout_p: Any = 0.0,
                  dropout_seed: Any = None, dropout_mask: Any = None) -> SdpaOptions:
    """Validate every option against q (B, Hq, Tq, D) and k (B, Hkv, Tk, D); one-line ValueError naming it."""
    B, Hq, Tq, D = q.shape
    Tk = k.shape[2]
    if not isinstance(causal, (bool, np.bool_)):
        raise ValueError(f"causal: expected True or False, got {causal!r}")
    s = 1.0 / math.sqrt(D) if scale is None else real_number("scale", scale)
    if not math.isfinite(s):
        raise ValueError(f"scale: expected a finite number, got {scale!r}")
    win: Window | None = None
    if window is not None:
        if not isinstance(window, (tuple, list)) or len(window) != 2:
            raise ValueError(f"window: expected a (left, right) pair, got {window!r}")
        win = (_size_or_none("window", window[0]), _size_or_none("window", window[1]))
    if key_padding_mask is not None:
        _bool_array("key_padding_mask", key_padding_mask, (B, Tk))
    if (q_segment_ids is None) != (k_segment_ids is None):
        missing = "q_segment_ids" if q_segment_ids is None else "k_segment_ids"
        raise ValueError(f"{missing}: expected both q_segment_ids and k_segment_ids, or neither")
    if q_segment_ids is not None:
        _int_array("q_segment_ids", q_segment_ids, (B, Tq))
        _int_array("k_segment_ids", k_segment_ids, (B, Tk))
    if sinks is not None:
        float_array("sinks", sinks, ndim=1)
        same_dtype("q", q, sinks=sinks)
        if sinks.shape != (Hq,):
            raise ValueError(f"sinks: expected shape ({Hq},) (one logit per query head), got {sinks.shape}")
        bad = np.flatnonzero(np.isnan(sinks) | (sinks == np.inf))
        if bad.size:
            raise ValueError(f"sinks: expected finite logits or -inf (no sink for that head), got "
                             f"{sinks[bad[0]]} for head {bad[0]}")
    cap = None
    if softcap is not None:
        cap = real_number("softcap", softcap)
        if not cap > 0.0 or not math.isfinite(cap):
            raise ValueError(f"softcap: expected a finite number > 0, got {softcap!r}")
    if bias is not None:
        float_array("bias", bias, ndim=4)
        same_dtype("q", q, bias=bias)
        if bias.shape[0] not in (1, B) or bias.shape[1] not in (1, Hq) or bias.shape[2:] != (Tq, Tk):
            raise ValueError(f"bias: expected shape (1 or {B}, 1 or {Hq}, {Tq}, {Tk}), got {bias.shape}")
    p = real_number("dropout_p", dropout_p)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout_p: expected a drop probability in [0, 1), got {dropout_p!r}")
    if dropout_seed is not None and dropout_mask is not None:
        raise ValueError("dropout_mask: expected dropout_mask or dropout_seed, not both")
    if dropout_seed is not None and (not is_int(dropout_seed)
                                     or dropout_seed < 0):
        raise ValueError(f"dropout_seed: expected a non-negative integer or None, got {dropout_seed!r}")
    if p > 0.0 and dropout_seed is None and dropout_mask is None:
        raise ValueError("dropout_p: > 0 needs dropout_seed or dropout_mask")
    if dropout_mask is not None:
        _bool_array("dropout_mask", dropout_mask, (B, Hq, Tq, Tk))
    seed = None if dropout_seed is None or p == 0.0 else int(dropout_seed)
    return SdpaOptions(bool(causal), s, win, key_padding_mask, q_segment_ids, k_segment_ids, cap, p, seed,
                       dropout_mask)


def causal_options(D: int, scale: float | None = None) -> SdpaOptions:
    """The options of plain causal attention (GPT-2's, Llama's) for head size D, for callers of the kernels."""
    return SdpaOptions(True, 1.0 / math.sqrt(D) if scale is None else float(scale), None, None, None, None, None,
                       0.0, None, None)


# ---------------------------------------------------------------------------------------------- masks


def visible(opts: SdpaOptions, Tq: int, Tk: int, i0: int, i1: int, j0: int, j1: int) -> BoolArray | None:
    """Which keys j0..j1-1 queries i0..i1-1 may see: (B or 1, 1, i1-i0, j1-j0) bool, or None if all of them.

    Query i sits at position i + Tk - Tq of the key sequence (bottom-right alignment).
    """
    vis: BoolArray | None = None
    if (opts.causal or opts.window is not None) and not _block_inside(opts, Tq, Tk, i0, i1, j0, j1):
        pos = np.arange(i0 + Tk - Tq, i1 + Tk - Tq)[:, None]  # (bq, 1) query positions among the keys
        j = np.arange(j0, j1)[None, :]  # (1, bk)
        vis = np.ones((i1 - i0, j1 - j0), dtype=bool)  # (bq, bk)
        if opts.causal:
            vis &= j <= pos
        if opts.window is not None:
            left, right = opts.window
            if left is not None:
                vis &= j >= pos - left
            if right is not None:
                vis &= j <= pos + right
        vis = vis[None, None]  # (1, 1, bq, bk)
    if opts.key_padding_mask is not None:
        kp = opts.key_padding_mask[:, None, None, j0:j1]  # (B, 1, 1, bk)
        vis = kp if vis is None else vis & kp
    if opts.q_segment_ids is not None and opts.k_segment_ids is not None:
        same = opts.q_segment_ids[:, None, i0:i1, None] == opts.k_segment_ids[:, None, None, j0:j1]  # (B, 1, bq, bk)
        vis = same if vis is None else vis & same
    return vis


def _block_inside(opts: SdpaOptions, Tq: int, Tk: int, i0: int, i1: int, j0: int, j1: int) -> bool:
    """True when causality and the window hide none of keys j0..j1-1 from any query i0..i1-1."""
    off = Tk - Tq
    left, right = opts.window if opts.window is not None else (None, None)
    if opts.causal and j1 - 1 > i0 + off:
        return False
    if left is not None and j0 < i1 - 1 + off - left:
        return False
    return right is None or j1 - 1 <= i0 + off + right


def _splitmix64(x: npt.NDArray[Any]) -> npt.NDArray[Any]:
    """One SplitMix64 step, elementwise: the golden-ratio increment, then the finaliser (uint64, modulo 2^64)."""
    with np.errstate(over="ignore"):  # the wrap-around is the point (0-d inputs would warn)
        x = x + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def dropout_keep(seed: int, p: float, B: int, Hq: int, Tq: int, Tk: int,
                 i0: int = 0, i1: int | None = None, j0: int = 0, j1: int | None = None) -> BoolArray:
    """The counter-based dropout keep mask for rows i0..i1-1 and keys j0..j1-1: (B, Hq, bq, bk) bool.

    Entry (b, h, i, j) is kept iff u = (top 53 bits of splitmix64(index ^ splitmix64(seed))) / 2^53 >= p, so
    any block of the mask can be regenerated without the rest (the tiled pair never stores the whole (Tq, Tk)
    mask).
    """
    i1 = Tq if i1 is None else i1
    j1 = Tk if j1 is None else j1
    idx: npt.NDArray[Any] = (np.arange(B, dtype=np.uint64)[:, None, None, None] * np.uint64(Hq)
           + np.arange(Hq, dtype=np.uint64)[None, :, None, None])  # (B, Hq, 1, 1)
    idx = (idx * np.uint64(Tq) + np.arange(i0, i1, dtype=np.uint64)[:, None]) * np.uint64(Tk)  # (B, Hq, bq, 1)
    idx = idx + np.arange(j0, j1, dtype=np.uint64)  # (B, Hq, bq, bk) the flat index ((b Hq + h) Tq + i) Tk + j
    h = _splitmix64(idx ^ _splitmix64(np.full((), seed, dtype=np.uint64)))  # (B, Hq, bq, bk)
    u = (h >> np.uint64(11)).astype(np.float64)  # (B, Hq, bq, bk) 53 random bits
    keep: BoolArray = u * 2.0 ** -53 >= p  # uniform in [0, 1) against p
    return keep


def keep_scaled(opts: SdpaOptions, dtype: np.dtype, B: int, Hq: int, Tq: int, Tk: int,
                i0: int = 0, i1: int | None = None, j0: int = 0, j1: int | None = None) -> Array | None:
    """The dropout factor m / (1 - p) for a block, in dtype (B, Hq, bq, bk), or None when dropout is off."""
    i1 = Tq if i1 is None else i1
    j1 = Tk if j1 is None else j1
    if opts.dropout_mask is not None:
        m = opts.dropout_mask[:, :, i0:i1, j0:j1]  # (B, Hq, bq, bk)
    elif opts.dropout_seed is not None:
        m = dropout_keep(opts.dropout_seed, opts.dropout_p, B, Hq, Tq, Tk, i0, i1, j0, j1)  # (B, Hq, bq, bk)
    else:
        return None
    out = m.astype(dtype)  # (B, Hq, bq, bk)
    out *= 1.0 / (1.0 - opts.dropout_p)
    return out


# ---------------------------------------------------------------------------------------------- scores


def scores_block(q_scaled: Array, kT: Array, opts: SdpaOptions, bias: Array | None, Hq: int, Tq: int, Tk: int,
                 i0: int, i1: int, j0: int, j1: int) -> tuple[Array, Array | None]:
    """Masked scores for queries i0..i1 (q_scaled (B, Hkv, G*bq, D)) and keys j0..j1 (kT (B, Hkv, D, bk)).

    Returns S (B, Hq, bq, bk) with -inf where a key is not visible, and tanh (same shape) if softcapped.
    """
    B = q_scaled.shape[0]
    s = (q_scaled @ kT).reshape(B, Hq, i1 - i0, j1 - j0)  # (B, Hq, bq, bk) s q k^T
    t = None
    if opts.softcap is not None:
        t = np.tanh(s / opts.softcap)  # (B, Hq, bq, bk)
        s = t * opts.softcap  # (B, Hq, bq, bk) c tanh(s q k^T / c)
    if bias is not None:
        s += bias[:, :, i0:i1, j0:j1]  # broadcast over B and H when those axes are 1
    vis = visible(opts, Tq, Tk, i0, i1, j0, j1)  # (B or 1, 1, bq, bk) or None
    if vis is not None:
        np.copyto(s, -np.inf, where=~vis)  # exp(-inf) = 0: exactly zero weight and gradient
    return s, t


def group_q(q: Array, Hkv: int) -> Array:
    """(B, Hq, T, D) -> (B, Hkv, G*T, D): the G query heads that share a kv head stacked along the rows."""
    B, Hq, T, D = q.shape
    return q.reshape(B, Hkv, (Hq // Hkv) * T, D)  # (B, Hkv, G*T, D) a view when q is contiguous


def block_outside(opts: SdpaOptions, Tq: int, Tk: int, i0: int, i1: int, j0: int, j1: int) -> bool:
    """True when causality or the window alone hide keys j0..j1-1 from every query i0..i1-1 (skip the block)."""
    off = Tk - Tq  # query i sits at key position i + off
    right = 0 if opts.causal else None
    if opts.window is not None and opts.window[1] is not None:
        right = opts.window[1] if right is None else min(right, opts.window[1])
    if right is not None and j0 > i1 - 1 + off + right:
        return True
    left = None if opts.window is None else opts.window[0]
    return left is not None and j1 - 1 < i0 + off - left


def reduce_to(x: Array, shape: tuple[int, ...]) -> Array:
    """Sum x over the axes where `shape` has a 1 that x does not (the gradient of a broadcast)."""
    axes = tuple(a for a, (n, m) in enumerate(zip(shape, x.shape)) if n == 1 and m != 1)
    return x.sum(axis=axes, keepdims=True) if axes else x


# ---------------------------------------------------------------------------------------------- the pair


def sdpa_forward(q: Array, k: Array, v: Array, *, causal: bool = False, scale: float | None = None,
                 window: Window | None = None, key_padding_mask: BoolArray | None = None,
                 q_segment_ids: IntArray | None = None, k_segment_ids: IntArray | None = None,
                 sinks: Array | None = None, softcap: float | None = None, bias: Array | None = None,
                 dropout_p: float = 0.0, dropout_seed: int | None = None,
                 dropout_mask: BoolArray | None = None) -> tuple[Array, Array, SdpaCache]:
    """out = D(P) v with P = softmax over visible keys (and the sink) of S = cap(s q k^T) + bias; lse = log sum.

    q (B, Hq, Tq, D), k (B, Hkv, Tk, D), v (B, Hkv, Tk, Dv) -> out (B, Hq, Tq, Dv), lse (B, Hq, Tq), cache.
    See docs/derivations/sdpa.md.
    """
    check_qkv(q, k, v)
    opts = check_options(q, k, causal=causal, scale=scale, window=window, key_padding_mask=key_padding_mask,
                         q_segment_ids=q_segment_ids, k_segment_ids=k_segment_ids, sinks=sinks, softcap=softcap,
                         bias=bias, dropout_p=dropout_p, dropout_seed=dropout_seed, dropout_mask=dropout_mask)
    return _sdpa_forward(q, k, v, sinks, bias, opts)


def _sdpa_forward(q: Array, k: Array, v: Array, sinks: Array | None, bias: Array | None,
                  opts: SdpaOptions) -> tuple[Array, Array, SdpaCache]:
    """The unchecked kernel of sdpa_forward (the fused-qkv pair and the model call this)."""
    B, Hq, Tq = q.shape[:3]
    Hkv, Tk, Dv = k.shape[1], k.shape[2], v.shape[3]
    q_scaled = group_q(q * opts.scale, Hkv)  # (B, Hkv, G*Tq, D) scaling q, not the (Tq, Tk) scores
    kT = np.ascontiguousarray(k.swapaxes(-1, -2))  # (B, Hkv, D, Tk)
    s, t = scores_block(q_scaled, kT, opts, bias, Hq, Tq, Tk, 0, Tq, 0, Tk)  # (B, Hq, Tq, Tk)
    m = s.max(axis=-1)  # (B, Hq, Tq) -inf on a row that sees no key
    if sinks is not None:
        m = np.maximum(m, sinks[None, :, None])  # (B, Hq, Tq) the sink is one more logit in the row
    m[np.isneginf(m)] = 0.0  # a row with nothing to see: exp(-inf - 0) = 0, not exp(-inf + inf) = nan
    p = s  # reuse S's memory for P
    p -= m[..., None]
    np.exp(p, out=p)  # (B, Hq, Tq, Tk)
    denom = p.sum(axis=-1)  # (B, Hq, Tq) sum_j exp(S_ij - m_i)
    if sinks is not None:
        denom += np.exp(sinks[None, :, None] - m)  # (B, Hq, Tq) + exp(sink_h - m_i)
    with np.errstate(divide="ignore"):
        lse = m + np.log(denom)  # (B, Hq, Tq) -inf exactly where denom is 0
    denom[denom == 0.0] = 1.0  # 0 / 1 = 0: a fully masked row's P stays 0
    p /= denom[..., None]  # (B, Hq, Tq, Tk) P
    keep = keep_scaled(opts, q.dtype, B, Hq, Tq, Tk)  # (B, Hq, Tq, Tk) or None
    pd = p if keep is None else p * keep  # (B, Hq, Tq, Tk) dropped and rescaled P
    out = (pd.reshape(B, Hkv, -1, Tk) @ v).reshape(B, Hq, Tq, Dv)  # (B, Hq, Tq, Dv)
    cache = SdpaCache(q_scaled, k, v, out, lse, p, keep, t, sinks, None if bias is None else bias.shape, opts.scale)
    return out, lse, cache


def sdpa_backward(dout: Array, cache: SdpaCache, dlse: Array | None = None) -> SdpaGrads:
    """Delta = rowsum(dout * out) - dlse;  dS = P * (dP - Delta);  dq = s dS k;  dk = s dS^T q;  dv = P^T dout.

    dout (B, Hq, Tq, Dv), dlse (B, Hq, Tq) or None -> SdpaGrads.  See docs/derivations/sdpa.md (terms 1-9).
    """
    upstream("dout", dout, cache.out.shape, cache.out.dtype)
    if dlse is not None:
        upstream("dlse", dlse, cache.lse.shape, cache.lse.dtype)
    return _sdpa_backward(dout, cache, dlse)


def _sdpa_backward(dout: Array, cache: SdpaCache, dlse: Array | None) -> SdpaGrads:
    """The unchecked kernel of sdpa_backward."""
    q_scaled, k, v, out, lse, p, keep, t, sinks, bias_shape, scale = cache
    B, Hq, Tq, Dv = out.shape
    Hkv, Tk, D = k.shape[1], k.shape[2], k.shape[3]
    delta = np.einsum("bhtd,bhtd->bht", dout, out)  # (3) (B, Hq, Tq) rowsum(dout * out)
    if dlse is not None:
        delta -= dlse  # (4) the LSE's own upstream gradient: dS = P * (dP - Delta + dlse)
    pd = p if keep is None else p * keep  # (B, Hq, Tq, Tk)
    dout_g = dout.reshape(B, Hkv, -1, Dv)  # (B, Hkv, G*Tq, Dv)
    dv = pd.reshape(B, Hkv, -1, Tk).swapaxes(-1, -2) @ dout_g  # (1) (B, Hkv, Tk, Dv) summed over the group
    dp = (dout_g @ np.ascontiguousarray(v.swapaxes(-1, -2))).reshape(B, Hq, Tq, Tk)  # (2) (B, Hq, Tq, Tk)
    if keep is not None:
        dp *= keep  # (2) through the dropout: dP = dPd * m / (1 - p)
    ds = dp  # reuse dP's memory
    ds -= delta[..., None]
    ds *= p  # (4) (B, Hq, Tq, Tk) exactly 0 where P is 0
    dsinks = None
    if sinks is not None:
        lse_safe = np.where(np.isneginf(lse), 0.0, lse)  # (B, Hq, Tq) lse = -inf only if the sink is -inf too
        p_sink = np.exp(sinks[None, :, None] - lse_safe)  # (B, Hq, Tq) the sink's probability: 0 for a -inf sink
        dsinks = -(p_sink * delta).sum(axis=(0, 2))  # (5) (Hq,) the sink's value is 0, so its dP is 0
    dbias = None
    if bias_shape is not None:
        dbias = reduce_to(ds, bias_shape)  # (6) bias's shape
        dbias = dbias.copy() if dbias is ds else dbias  # ds changes in place below
    if t is not None:
        ds *= 1.0 - t * t  # (7) through the softcap: d(c tanh(x / c))/dx = 1 - tanh^2
    ds_g = ds.reshape(B, Hkv, -1, Tk)  # (B, Hkv, G*Tq, Tk)
    dq = (ds_g @ k).reshape(B, Hq, Tq, D)  # (8) (B, Hq, Tq, D)
    dq *= scale
    dk = ds_g.swapaxes(-1, -2) @ q_scaled  # (9) (B, Hkv, Tk, D): s inside q_scaled, summed over the group
    return SdpaGrads(dq, dk, dv, dsinks, dbias)
