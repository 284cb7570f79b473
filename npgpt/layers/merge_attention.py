"""Merge two attention results over disjoint key sets: lse = logaddexp(lse1, lse2), out = w1 out1 + w2 out2.

Forward out1, out2 (..., Dv), lse1, lse2 (...) -> out (..., Dv), lse (...), with w_i = exp(lse_i - lse): the
split-KV (flash-decoding) combine step.  Backward dout (..., Dv) [, dlse (...)] -> dout1, dlse1, dout2, dlse2.
Derivation: docs/derivations/merge_attention.md
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, same_dtype, shape_is, upstream

Array = npt.NDArray[np.floating]


class MergeAttentionCache(NamedTuple):
    out1: Array  # (..., Dv) for dlse1
    out2: Array  # (..., Dv) for dlse2
    out: Array  # (..., Dv) for dout . out
    w1: Array  # (...) exp(lse1 - lse), 0 where both are -inf
    w2: Array  # (...) exp(lse2 - lse)


def merge_attention_forward(out1: Array, lse1: Array, out2: Array,
                            lse2: Array) -> tuple[Array, Array, MergeAttentionCache]:
    """lse = log(exp(lse1) + exp(lse2));  out = exp(lse1 - lse) out1 + exp(lse2 - lse) out2.

    out1, out2 (..., Dv), lse1, lse2 (...) -> out (..., Dv), lse (...), cache.
    See docs/derivations/merge_attention.md.
    """
    float_array("out1", out1, min_ndim=1)
    same_dtype("out1", out1, lse1=float_array("lse1", lse1), out2=float_array("out2", out2),
               lse2=float_array("lse2", lse2))
    shape_is("lse1", lse1, out1.shape[:-1])
    shape_is("out2", out2, out1.shape)
    shape_is("lse2", lse2, out1.shape[:-1])
    if np.any(np.isnan(lse1)) or np.any(np.isposinf(lse1)):
        raise ValueError("lse1: expected finite values or -inf (a row that saw no key)")
    if np.any(np.isnan(lse2)) or np.any(np.isposinf(lse2)):
        raise ValueError("lse2: expected finite values or -inf (a row that saw no key)")
    return _merge_attention_forward(out1, lse1, out2, lse2)


def _merge_attention_forward(out1: Array, lse1: Array, out2: Array,
                             lse2: Array) -> tuple[Array, Array, MergeAttentionCache]:
    """The unchecked kernel of merge_attention_forward."""
    lse = np.logaddexp(lse1, lse2)  # (...) -inf only where both are -inf
    lse_safe = lse.copy()  # (...)
    lse_safe[np.isneginf(lse)] = 0.0  # both empty: w1 = w2 = exp(-inf) = 0, not nan
    w1 = np.exp(lse1 - lse_safe)  # (...) (1)
    w2 = np.exp(lse2 - lse_safe)  # (...)
    out = w1[..., None] * out1  # (..., Dv) (2)
    out += w2[..., None] * out2
    return out, lse, MergeAttentionCache(out1, out2, out, w1, w2)


def merge_attention_backward(dout: Array, cache: MergeAttentionCache,
                             dlse: Array | None = None) -> tuple[Array, Array, Array, Array]:
    """dout_i = w_i dout;  dlse_i = w_i (dout . out_i - dout . out + dlse).

    dout (..., Dv), dlse (...) or None -> dout1, dlse1, dout2, dlse2.  See docs/derivations/merge_attention.md.
    """
    upstream("dout", dout, cache.out.shape, cache.out.dtype)
    if dlse is not None:
        upstream("dlse", dlse, cache.w1.shape, cache.w1.dtype)
    return _merge_attention_backward(dout, cache, dlse)


def _merge_attention_backward(dout: Array, cache: MergeAttentionCache,
                              dlse: Array | None) -> tuple[Array, Array, Array, Array]:
    """The unchecked kernel of merge_attention_backward."""
    out1, out2, out, w1, w2 = cache
    dout1 = w1[..., None] * dout  # (3) (..., Dv)
    dout2 = w2[..., None] * dout  # (..., Dv)
    base = np.einsum("...d,...d->...", dout, out)  # (...) dout . out
    if dlse is not None:
        base -= dlse
    dlse1 = w1 * (np.einsum("...d,...d->...", dout, out1) - base)  # (4) (...)
    dlse2 = w2 * (np.einsum("...d,...d->...", dout, out2) - base)  # (...)
    return dout1, dlse1, dout2, dlse2


def merge_attention(out1: Array, lse1: Array, out2: Array, lse2: Array) -> tuple[Array, Array]:
    """(out, lse) of merge_attention_forward, for callers that do not need the backward."""
    out, lse, _ = merge_attention_forward(out1, lse1, out2, lse2)
    return out, lse
