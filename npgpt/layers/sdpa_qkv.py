"""Attention on the fused (B, T, 3C) qkv layout of C and CUDA kernels (llm.c's attention_forward), over sdpa.

Forward qkv (B, T, 3C) with columns [q | k | v], each C = H * D split into heads -> out (B, T, C) with the
heads merged, lse (B, H, T); every sdpa option (causal, masks, window, sinks, softcap, bias, dropout).
Backward dout (B, T, C) [, dlse (B, H, T)] -> dqkv (B, T, 3C), dsinks, dbias.
Derivation: docs/derivations/sdpa_qkv.md
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .._checks import float_array, positive_int, upstream
from .sdpa import (Array, BoolArray, IntArray, SdpaCache, SdpaOptions, Window, _sdpa_backward, _sdpa_forward,
                   check_options)


class SdpaQkvCache(NamedTuple):
    sdpa: SdpaCache  # the core's cache (q, k, v are views into qkv)


class SdpaQkvGrads(NamedTuple):
    dqkv: Array  # (B, T, 3C)
    dsinks: Array | None  # (H,)
    dbias: Array | None  # the bias's shape


def split_qkv(qkv: Array, n_head: int) -> tuple[Array, Array, Array]:
    """(B, T, 3C) -> q, k, v (B, H, T, D) views: column (i C + h D + d) of qkv is element d of head h of i."""
    B, T, C3 = qkv.shape
    x = qkv.reshape(B, T, 3, n_head, C3 // (3 * n_head))  # (B, T, 3, H, D) view
    return x[:, :, 0].swapaxes(1, 2), x[:, :, 1].swapaxes(1, 2), x[:, :, 2].swapaxes(1, 2)  # (B, H, T, D) views


def sdpa_qkv_forward(qkv: Array, n_head: int, *, causal: bool = False, scale: float | None = None,
                     window: Window | None = None, key_padding_mask: BoolArray | None = None,
                     q_segment_ids: IntArray | None = None, k_segment_ids: IntArray | None = None,
                     sinks: Array | None = None, softcap: float | None = None, bias: Array | None = None,
                     dropout_p: float = 0.0, dropout_seed: int | None = None,
                     dropout_mask: BoolArray | None = None) -> tuple[Array, Array, SdpaQkvCache]:
    """q, k, v = split(qkv);  out = merge_heads(sdpa(q, k, v)).  qkv (B, T, 3C) -> out (B, T, C), lse (B, H, T).

    See docs/derivations/sdpa_qkv.md.
    """
    float_array("qkv", qkv, ndim=3)
    H = positive_int("n_head", n_head)
    if qkv.shape[2] % 3 or (qkv.shape[2] // 3) % H or qkv.shape[2] == 0 or qkv.shape[1] == 0:
        raise ValueError(f"qkv: expected shape (B, T >= 1, 3C) with C a multiple of n_head = {H}, got {qkv.shape}")
    q, k, _ = split_qkv(qkv, H)
    opts = check_options(q, k, causal=causal, scale=scale, window=window, key_padding_mask=key_padding_mask,
                         q_segment_ids=q_segment_ids, k_segment_ids=k_segment_ids, sinks=sinks, softcap=softcap,
                         bias=bias, dropout_p=dropout_p, dropout_seed=dropout_seed, dropout_mask=dropout_mask)
    return _sdpa_qkv_forward(qkv, H, sinks, bias, opts)


def _sdpa_qkv_forward(qkv: Array, n_head: int, sinks: Array | None, bias: Array | None,
                      opts: SdpaOptions) -> tuple[Array, Array, SdpaQkvCache]:
    """The unchecked kernel of sdpa_qkv_forward."""
    B, T, C3 = qkv.shape
    q, k, v = split_qkv(qkv, n_head)  # (B, H, T, D) views
    y, lse, cache = _sdpa_forward(q, k, v, sinks, bias, opts)  # (B, H, T, D)
    out = np.ascontiguousarray(y.swapaxes(1, 2)).reshape(B, T, C3 // 3)  # (B, T, C) heads merged
    return out, lse, SdpaQkvCache(cache)


def sdpa_qkv_backward(dout: Array, cache: SdpaQkvCache, dlse: Array | None = None) -> SdpaQkvGrads:
    """dq, dk, dv = sdpa_backward(split_heads(dout));  dqkv = [dq | dk | dv] with the heads merged.

    dout (B, T, C), dlse (B, H, T) or None -> SdpaQkvGrads.  See docs/derivations/sdpa_qkv.md.
    """
    out = cache.sdpa.out  # (B, H, T, D)
    B, H, T, D = out.shape
    upstream("dout", dout, (B, T, H * D), out.dtype)
    if dlse is not None:
        upstream("dlse", dlse, (B, H, T), out.dtype)
    return _sdpa_qkv_backward(dout, cache, dlse)


def _sdpa_qkv_backward(dout: Array, cache: SdpaQkvCache, dlse: Array | None) -> SdpaQkvGrads:
    """The unchecked kernel of sdpa_qkv_backward."""
    B, H, T, D = cache.sdpa.out.shape
    dy = dout.reshape(B, T, H, D).swapaxes(1, 2)  # (B, H, T, D) view
    g = _sdpa_backward(dy, cache.sdpa, dlse)
    dqkv = np.empty((B, T, 3, H, D), dtype=dout.dtype)  # (B, T, 3, H, D)
    for i, grad in enumerate((g.dq, g.dk, g.dv)):
        dqkv[:, :, i] = grad.swapaxes(1, 2)  # (B, T, H, D)
    return SdpaQkvGrads(dqkv.reshape(B, T, 3 * H * D), g.dsinks, g.dbias)
