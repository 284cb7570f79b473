"""Rotary position embedding (RoPE): rotate each pair of channels of q or k by the angle pos * inv_freq_i.

out_a = x_a cos - x_b sin;  out_b = x_b cos + x_a sin  for every pair (a, b) of the first rotary_dim channels;
pairs are (i, i + R/2) in the half-split layout (HF Llama, GPT-NeoX) or (2i, 2i + 1) interleaved (GPT-J, Meta).
Forward x (B, H, T, D) -> out (B, H, T, D); backward dout -> dx, the inverse rotation.
Derivation: docs/derivations/rope.md
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, is_int, real_number, upstream

Array = npt.NDArray[np.floating]

ROPE_TYPES = ("default", "linear", "llama3")  # the types rope_inv_freq computes (no seq_len, attention factor 1)
SCALING_TYPES = ("default", "linear", "dynamic", "yarn", "longrope", "llama3")  # rope_frequencies: all of HF's


class RopeCache(NamedTuple):
    cos: Array  # (T, R/2) or (B, 1, T, R/2) cos(pos * inv_freq), in x's dtype
    sin: Array  # (T, R/2) or (B, 1, T, R/2)
    rotary_dim: int  # R: channels [0, R) are rotated, [R, D) pass through
    interleaved: bool  # pair layout
    shape: tuple[int, ...]  # (B, H, T, D) to check dout against
    dtype: np.dtype


def rope_inv_freq(rotary_dim: int, theta: float = 10000.0,
                  scaling: Mapping[str, Any] | None = None) -> npt.NDArray[np.float64]:
    """inv_freq_i = theta^(-2i / R), i < R/2, in float64, optionally rescaled as HF's rope_scaling says.

    scaling: None / {"rope_type": "default"}; {"rope_type": "linear", "factor": s} (positions / s);
    {"rope_type": "llama3", "factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}.
    ("type" is accepted for "rope_type", as old HF configs write it.)  See docs/derivations/rope.md.
    """
    theta = real_number("theta", theta)
    if not theta > 1.0 or not math.isfinite(theta):
        raise ValueError(f"theta: expected a finite base > 1, got {theta}")
    R = rotary_dim
    inv_freq = 1.0 / theta ** (np.arange(0, R, 2, dtype=np.float64) / R)  # (R/2,)
    if scaling is None:
        return inv_freq
    if not isinstance(scaling, Mapping):
        raise ValueError(f"rope_scaling: expected a mapping with a 'rope_type', got {type(scaling).__name__}")
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind not in ROPE_TYPES:
        raise ValueError(f"rope_scaling: rope_type {kind!r} is not supported (supported: {', '.join(ROPE_TYPES)})")
    if kind == "default":
        return inv_freq

    def number(key: str, minimum: float = 0.0) -> float:
        if key not in scaling:
            raise ValueError(f"rope_scaling: rope_type {kind!r} needs {key!r}")
        v = real_number(f"rope_scaling.{key}", scaling[key])
        if not v > minimum or not math.isfinite(v):
            raise ValueError(f"rope_scaling.{key}: expected a finite number > {minimum:g}, got {v}")
        return v

    factor = number("factor")
    if kind == "linear":
        return inv_freq / factor  # (R/2,) pos * (inv_freq / s) = (pos / s) * inv_freq
    low, high = number("low_freq_factor"), number("high_freq_factor")
    old_ctx = number("original_max_position_embeddings")
    if not high > low:
        raise ValueError(f"rope_scaling.high_freq_factor: expected > low_freq_factor={low:g}, got {high:g}")
    wavelen = 2 * math.pi / inv_freq  # (R/2,) in positions
    smooth = (old_ctx / wavelen - low) / (high - low)  # (R/2,) 0 at the long end, 1 at the short end
    scaled = np.where(wavelen > old_ctx / low, inv_freq / factor, inv_freq)  # (R/2,) long waves slowed by s
    medium = (wavelen >= old_ctx / high) & (wavelen <= old_ctx / low)  # (R/2,) between: interpolate
    return np.where(medium, (1.0 - smooth) * scaled / factor + smooth * scaled, scaled)  # (R/2,)


def rope_frequencies(rotary_dim: int, theta: float, scaling: Mapping[str, Any] | None,
                     seq_len: int | None = None) -> tuple[npt.NDArray[np.float64], float]:
    """(inv_freq (R/2,) float64, attention_factor) for any Hugging Face rope_type, as transformers computes them.

    scaling: HF's rope_scaling / rope_parameters (None = default); seq_len: the sequence length the tables
    are for (only "dynamic" and "longrope" read it).  See docs/derivations/rope_scaling.md.
    """
    kind = "default" if not isinstance(scaling, Mapping) else scaling.get("rope_type", scaling.get("type", "default"))
    if kind in ROPE_TYPES or kind not in SCALING_TYPES:
        return rope_inv_freq(rotary_dim, theta, scaling), 1.0
    raise NotImplementedError(f"rope_scaling: rope_type {kind!r} is not implemented yet")


def rope_tables(positions: npt.NDArray[np.integer], inv_freq: npt.NDArray[np.float64],
                dtype: npt.DTypeLike, attention_factor: float = 1.0) -> tuple[Array, Array]:
    """cos and sin of positions * inv_freq, times attention_factor, (T, R/2) for (T,) or (B, 1, T, R/2) for (B, T).

    Angles in float64, then rounded once to dtype.  See docs/derivations/rope.md.
    """
    angle = positions.astype(np.float64)[..., None] * inv_freq  # (T, R/2) or (B, T, R/2)
    if angle.ndim == 3:
        angle = angle[:, None]  # (B, 1, T, R/2): broadcast over heads
    cos, sin = np.cos(angle), np.sin(angle)  # (T, R/2) or (B, 1, T, R/2) float64
    if attention_factor != 1.0:  # yarn / longrope: scales q.k by attention_factor^2 (rope_scaling.md)
        cos, sin = cos * attention_factor, sin * attention_factor
    return cos.astype(dtype), sin.astype(dtype)


def _pairs(rotary_dim: int, interleaved: bool) -> tuple[slice, slice]:
    """Channel slices of the first and second member of every rotated pair."""
    if interleaved:
        return slice(0, rotary_dim, 2), slice(1, rotary_dim, 2)
    return slice(0, rotary_dim // 2), slice(rotary_dim // 2, rotary_dim)


def rope_forward(x: Array, positions: npt.NDArray[np.integer] | None = None, offset: int = 0,
                 theta: float = 10000.0, rotary_dim: int | None = None, interleaved: bool = False,
                 scaling: Mapping[str, Any] | None = None) -> tuple[Array, RopeCache]:
    """Rotate channel pairs of x (B, H, T, D) by pos * inv_freq; positions (T,) or (B, T), else offset + t.

    rotary_dim R (even, <= D; default D) channels rotate, the rest pass through.  See docs/derivations/rope.md.
    """
    float_array("x", x, ndim=4)
    B, _, T, D = x.shape
    if rotary_dim is None:
        if D % 2:
            raise ValueError(f"x: head dim D={D} is odd; RoPE rotates channel pairs (give an even rotary_dim)")
        rotary_dim = D
    if not is_int(rotary_dim) or rotary_dim < 2 \
            or rotary_dim % 2 or rotary_dim > D:
        raise ValueError(f"rotary_dim: expected an even integer in [2, D={D}], got {rotary_dim!r}")
    if not isinstance(interleaved, bool):
        raise ValueError(f"interleaved: expected True or False, got {interleaved!r}")
    if not is_int(offset) or offset < 0:
        raise ValueError(f"offset: expected a non-negative integer, got {offset!r}")
    if positions is None:
        positions = np.arange(offset, offset + T)  # (T,)
    else:
        if offset:
            raise ValueError("offset: give either positions or an offset, not both")
        if not isinstance(positions, np.ndarray) or not np.issubdtype(positions.dtype, np.integer):
            what = getattr(positions, "dtype", positions)
            raise ValueError(f"positions: expected an integer numpy array, got {what!r}")
        if positions.shape not in ((T,), (B, T)):
            raise ValueError(f"positions: expected shape ({T},) or ({B}, {T}), got {positions.shape}")
        if positions.size and positions.min() < 0:
            raise ValueError(f"positions: expected non-negative positions, got {int(positions.min())}")
    cos, sin = rope_tables(positions, rope_inv_freq(int(rotary_dim), theta, scaling), x.dtype)
    return _rope_forward(x, cos, sin, int(rotary_dim), interleaved)


def _rope_forward(x: Array, cos: Array, sin: Array, rotary_dim: int,
                  interleaved: bool) -> tuple[Array, RopeCache]:
    """Unchecked kernel of rope_forward, with the cos/sin tables given (the model makes them once per forward)."""
    a, b = _pairs(rotary_dim, interleaved)
    xa, xb = x[..., a], x[..., b]  # (B, H, T, R/2) views: first and second member of each pair
    out = x.copy()  # (B, H, T, D) channels [R, D) pass through
    out[..., a] = xa * cos - xb * sin  # (1) (B, H, T, R/2)
    out[..., b] = xb * cos + xa * sin  # (2) (B, H, T, R/2)
    return out, RopeCache(cos, sin, rotary_dim, interleaved, x.shape, x.dtype)


def rope_backward(dout: Array, cache: RopeCache) -> Array:
    """dx = R(-angle) dout: dx_a = d_a cos + d_b sin;  dx_b = d_b cos - d_a sin.  (B, H, T, D).

    See docs/derivations/rope.md (terms 3-4).
    """
    upstream("dout", dout, cache.shape, cache.dtype)
    return _rope_backward(dout, cache)


def _rope_backward(dout: Array, cache: RopeCache) -> Array:
    """Unchecked kernel of rope_backward."""
    cos, sin, rotary_dim, interleaved, _, _ = cache
    a, b = _pairs(rotary_dim, interleaved)
    da, db = dout[..., a], dout[..., b]  # (B, H, T, R/2)
    dx = dout.copy()  # (B, H, T, D) pass-through channels: identity
    dx[..., a] = da * cos + db * sin  # (3) (B, H, T, R/2) the transpose of (1)-(2)'s rotation
    dx[..., b] = db * cos - da * sin  # (4) (B, H, T, R/2)
    return dx
