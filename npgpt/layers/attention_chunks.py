"""Causal attention by query chunks: attention.py's pair run on chunks of queries, each against its visible keys.

Forward q (B, H, Tq, D), k, v (B, H, Tk, D), Tk >= Tq -> out (B, H, Tq, D), attention_forward's result (to
rounding); backward dout -> dq (B, H, Tq, D), dk, dv (B, H, Tk, D).  The Llama layer runs sdpa.py's causal
pair the same way, with grouped-query k, v (B, Hkv, Tk, D).  Queries a..b-1 see keys 0..b-1+Tk-Tq only,
so no chunk computes the all-masked block right of it: with chunks of c queries about (1 - c/Tq)/2 of the
(Tq, Tk) work is skipped (a quarter for two chunks).  Derivation: docs/derivations/attention_chunks.md
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import positive_int, upstream
from .attention import AttentionCache, _attention_backward, _attention_forward, check_qkv
from .sdpa import SdpaCache, SdpaOptions, _sdpa_backward, _sdpa_forward

Array = npt.NDArray[np.floating]


class AttentionChunksCache(NamedTuple):
    chunks: list[AttentionCache | SdpaCache]  # one per chunk of queries, in order; each holds the keys it sees
    q_shape: tuple[int, int, int, int]  # (B, H, Tq, D) for dq
    k_shape: tuple[int, int, int, int]  # (B, H, Tk, D) for dk and dv
    dtype: np.dtype


def attention_chunks_forward(q: Array, k: Array, v: Array, chunk: int) -> tuple[Array, AttentionChunksCache]:
    """out = attention_forward(q, k, v), computed `chunk` queries at a time against keys 0..e-1 only.

    q (B, H, Tq, D), k, v (B, H, Tk, D), Tk >= Tq -> out (B, H, Tq, D); chunk >= Tq is one plain call.
    See docs/derivations/attention_chunks.md.
    """
    check_qkv(q, k, v)
    return _attention_chunks_forward(q, k, v, positive_int("chunk", chunk))


def _attention_chunks_forward(q: Array, k: Array, v: Array, chunk: int,
                              opts: SdpaOptions | None = None) -> tuple[Array, AttentionChunksCache]:
    """The unchecked kernel of attention_chunks_forward (the model's self-attention calls this).  opts: causal
    SdpaOptions with no mask, window, softcap or dropout, to run sdpa.py's pair on the chunks instead
    (the Llama layer: grouped-query k, v (B, Hkv, Tk, D), opts.scale)."""
    Tq = q.shape[2]
    shift = k.shape[2] - Tq  # query i is position i + shift of the key sequence
    out = np.empty(q.shape, dtype=q.dtype)  # (B, H, Tq, D)
    chunks = []
    for a in range(0, Tq, chunk):
        b = min(a + chunk, Tq)  # queries a..b-1
        e = b + shift  # (1) the keys they can see: 0..e-1
        c: AttentionCache | SdpaCache
        if opts is None:
            y, c = _attention_forward(q[:, :, a:b], k[:, :, :e], v[:, :, :e])  # (2) (B, H, b-a, D) those rows
        else:
            y, _, c = _sdpa_forward(q[:, :, a:b], k[:, :, :e], v[:, :, :e], None, None, opts)  # (2) the same
        out[:, :, a:b] = y
        chunks.append(c)
    return out, AttentionChunksCache(chunks, q.shape, k.shape, q.dtype)


def attention_chunks_backward(dout: Array, cache: AttentionChunksCache) -> tuple[Array, Array, Array]:
    """Each chunk's attention_backward; dq is the chunks' rows side by side, dk and dv their sums.

    dout (B, H, Tq, D) -> dq (B, H, Tq, D), dk, dv (B, H, Tk, D).  See docs/derivations/attention_chunks.md.
    """
    upstream("dout", dout, cache.q_shape, cache.dtype)
    return _attention_chunks_backward(dout, cache)


def _attention_chunks_backward(dout: Array, cache: AttentionChunksCache) -> tuple[Array, Array, Array]:
    """The unchecked kernel of attention_chunks_backward."""
    dq = np.empty(cache.q_shape, dtype=cache.dtype)  # (B, H, Tq, D) every row is written once
    dk = dv = None
    b = cache.q_shape[2]
    for c in reversed(cache.chunks):  # the last chunk sees every key: its dk, dv start the sums
        if isinstance(c, AttentionCache):
            a, e = b - c.q_scaled.shape[2], c.k.shape[2]  # queries a..b-1, keys 0..e-1
            dq_c, dk_c, dv_c = _attention_backward(dout[:, :, a:b], c)  # (3) (B, H, b-a, D), (B, H, e, D) x2
        else:
            a, e = b - c.out.shape[2], c.k.shape[2]
            dq_c, dk_c, dv_c, _, _ = _sdpa_backward(dout[:, :, a:b], c, None)  # (3) (B, Hkv, e, D) for dk, dv
        dq[:, :, a:b] = dq_c
        if dk is None or dv is None:  # e == Tk
            dk, dv = dk_c, dv_c  # (B, H, Tk, D) new arrays of this call: the sums are built in them
        else:
            dk[:, :, :e] += dk_c  # (4) every chunk that sees key j adds its part of dk_j and dv_j
            dv[:, :, :e] += dv_c
        b = a
    if dk is None or dv is None:  # Tq == 0: no chunk, and no key received anything
        dk, dv = np.zeros(cache.k_shape, dtype=cache.dtype), np.zeros(cache.k_shape, dtype=cache.dtype)
    return dq, dk, dv
