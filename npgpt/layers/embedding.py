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
    return _embedding_forward(idx, w)


def _embedding_forward(
    idx: npt.NDArray[np.integer], w: npt.NDArray[np.floating]
) -> tuple[npt.NDArray[np.floating], EmbeddingCache]:
    """embedding_forward without the argument checks."""
    out = w[idx]  # (B, T, C) fancy indexing makes a copy
    return out, EmbeddingCache(idx, w.shape[0], out.shape, w.dtype)


def embedding_backward(dout: npt.NDArray[np.floating], cache: EmbeddingCache) -> npt.NDArray[np.floating]:
    """dw[v] = sum over positions (b, t) with idx[b, t] == v of dout[b, t].  (B, T, C) -> (V, C).

    See docs/derivations/embedding.md (term 1: scatter-add).
    """
    upstream("dout", dout, cache.out_shape, cache.dtype)
    return _embedding_backward(dout, cache)


def _embedding_backward(dout: npt.NDArray[np.floating], cache: EmbeddingCache) -> npt.NDArray[np.floating]:
    """embedding_backward without the argument checks."""
    rows, drows = _embedding_backward_rows(dout, cache)  # (U,), (U, C)
    dw = np.zeros((cache.vocab_size, dout.shape[-1]), dtype=dout.dtype)  # (V, C) unread rows stay zero
    dw[rows] = drows  # rows are distinct: a plain assignment
    return dw


def _embedding_backward_rows(dout: npt.NDArray[np.floating],
                             cache: EmbeddingCache) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.floating]]:
    """(1) for the rows that were read only: their ids (U,) in increasing order and gradients (U, C).

    The tied GPT adds these into the LM head's dwte (V, C) directly, without a second (V, C) array."""
    C = dout.shape[-1]
    rows, which = np.unique(cache.idx.reshape(-1), return_inverse=True)  # (U,), (N,) row of each position
    N = which.shape[0]
    from scipy.sparse import csr_matrix  # imported here: scipy.sparse takes ~0.3 s to import, and forward,
    # generation and every command that never trains do without it
    # (1) scatter-add as dW = E^T dout with E the (N, U) one-hot matrix, stored sparse: a row read twice
    # receives both gradients.  ~10x faster than np.add.at, and never builds E densely.
    onehot_t = csr_matrix((np.ones(N, dtype=dout.dtype), (which.reshape(-1), np.arange(N))), shape=(rows.size, N))
    drows = np.asarray(onehot_t @ dout.reshape(N, C))  # (U, C)
    return rows, drows
