"""Token (or position) embedding: a row lookup, out[b, t] = w[idx[b, t]].

Forward  idx (B, T) int, w (V, C) -> out (B, T, C).
Backward dout (B, T, C) -> dw (V, C): each row of w collects the gradients of every position that read it.
Derivation: docs/derivations/embedding.md
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, token_ids, upstream


class EmbeddingCache(NamedTuple):
    idx: npt.NDArray[np.integer]  # (B, T) which row each position read: all backward needs
    vocab_size: int  # V, the number of rows of dw
    out_shape: tuple[int, ...]  # (B, T, C) to check dout against
    dtype: np.dtype  # w's dtype: dw's dtype and dout's expected one


def embedding_forward(
    idx: npt.NDArray[np.integer], w: npt.NDArray[np.floating]
) -> tuple[npt.NDArray[np.floating], EmbeddingCache]:
    """out[b, t, :] = w[idx[b, t], :].  idx (B, T) ints in [0, V), w (V, C) -> out (B, T, C).

    See docs/derivations/embedding.md.
    """
    float_array("w", w, ndim=2)
    token_ids("idx", idx, w.shape[0])
    out = w[idx]  # (B, T, C) fancy indexing makes a copy
    return out, EmbeddingCache(idx, w.shape[0], out.shape, w.dtype)


def embedding_backward(dout: npt.NDArray[np.floating], cache: EmbeddingCache) -> npt.NDArray[np.floating]:
    """dw[v] = sum over positions (b, t) with idx[b, t] == v of dout[b, t].  (B, T, C) -> (V, C).

    See docs/derivations/embedding.md (term 1: scatter-add).
    """
    upstream("dout", dout, cache.out_shape, cache.dtype)
    C = dout.shape[-1]
    dw = np.zeros((cache.vocab_size, C), dtype=dout.dtype)  # (V, C)
    # (1) scatter-add: a row read twice receives both gradients, so plain assignment would be wrong
    np.add.at(dw, cache.idx.reshape(-1), dout.reshape(-1, C))
    return dw
