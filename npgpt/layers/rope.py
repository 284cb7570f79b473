"""Rotary position embedding (RoPE): rotate each pair of channels of q or k by the angle pos * inv_freq_i.

out_a = x_a cos - x_b sin;  out_b = x_b cos + x_a sin  for every pair (a, b) of the first rotary_dim channels;
pairs are (i, i + R/2) in the half-split layout (HF Llama, GPT-NeoX) or (2i, 2i + 1) interleaved (GPT-J, Meta).
Forward x (B, H, T, D) -> out (B, H, T, D); backward dout -> dx, the transposed rotation.
Frequencies for every HF rope_type (rope_frequencies): docs/derivations/rope_scaling.md.
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
SCALING_TYPES = ("default", "linear", "dynamic", "yarn", "longrope", "llama3")  # rope_frequencies: HF's types
# Keys of a rope_scaling dict besides the common ones, per type: (required, optional), as HF's validation lists
# them.  original_max_position_embeddings, when absent, is max_position_embeddings (HF's standardize_rope_params).
_COMMON_KEYS = ("rope_type", "type", "rope_theta", "partial_rotary_factor")
_TYPE_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "default": ((), ()),
    "linear": (("factor",), ()),
    "dynamic": (("factor",), ()),
    "yarn": (("factor",), ("original_max_position_embeddings", "attention_factor", "beta_fast", "beta_slow",
                          "mscale", "mscale_all_dim", "truncate")),
    "longrope": (("short_factor", "long_factor"), ("original_max_position_embeddings", "factor", "attention_factor")),
    "llama3": (("factor", "low_freq_factor", "high_freq_factor"), ("original_max_position_embeddings",)),
}


class RopeCache(NamedTuple):
    cos: Array  # (T, R/2) or (B, 1, T, R/2) cos(pos * inv_freq), in x's dtype
    sin: Array  # (T, R/2) or (B, 1, T, R/2)
    rotary_dim: int  # R: channels [0, R) are rotated, [R, D) pass through
    interleaved: bool  # pair layout
    shape: tuple[int, ...]  # (B, H, T, D) to check dout against
    dtype: np.dtype


def _positive(name: str, value: Any) -> float:
    """A finite number > 0 as a float, else a ValueError naming it."""
    v = real_number(name, value)
    if not v > 0.0 or not math.isfinite(v):
        raise ValueError(f"{name}: expected a finite number > 0, got {v}")
    return v


def _scaling_kind(scaling: Mapping[str, Any] | None, theta: float | None) -> str:
    """The rope_type of an HF rope_scaling dict ("type" is the old spelling); its keys checked against the type's."""
    if scaling is None:
        return "default"
    if not isinstance(scaling, Mapping):
        raise ValueError(f"rope_scaling: expected a mapping with a 'rope_type', got {type(scaling).__name__}")
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind not in SCALING_TYPES:
        raise ValueError(f"rope_scaling: rope_type {kind!r} is not supported (supported: {', '.join(SCALING_TYPES)})")
    if "type" in scaling and scaling["type"] != kind:
        raise ValueError(f"rope_scaling.type: {scaling['type']!r} contradicts rope_type {kind!r}")
    if theta is not None and scaling.get("rope_theta", theta) != theta:
        raise ValueError(f"rope_scaling.rope_theta: {scaling['rope_theta']!r} contradicts theta={theta!r}")
    required, optional = _TYPE_KEYS[kind]
    for key in required:
        if key not in scaling:
            raise ValueError(f"rope_scaling: rope_type {kind!r} needs {key!r}")
    for key in scaling:
        if key not in required and key not in optional and key not in _COMMON_KEYS:
            raise ValueError(f"rope_scaling: key {key!r} is not a field of rope_type {kind!r}")
    return kind


def _frequencies(R: int, theta: float, kind: str, scaling: Mapping[str, Any], seq_len: int | None,
                 max_pos: int | None) -> tuple[npt.NDArray[np.float64], float]:
    """rope_frequencies' body for a checked kind; numbers (S1)-(S12) are docs/derivations/rope_scaling.md's."""
    exponent = np.arange(0, R, 2, dtype=np.float64) / R  # (R/2,) 2i / R
    inv_freq = 1.0 / theta ** exponent  # (R/2,) (S1) theta^(-2i/R)
    if kind == "default":
        return inv_freq, 1.0

    def number(key: str) -> float:
        return _positive(f"rope_scaling.{key}", scaling[key])

    def old_context() -> float:  # L: the pretraining context; HF fills a missing one with max_position_embeddings
        if "original_max_position_embeddings" in scaling:
            return number("original_max_position_embeddings")
        if max_pos is None:
            raise ValueError(f"rope_scaling: rope_type {kind!r} needs 'original_max_position_embeddings' "
                             "(or max_position_embeddings to stand for it)")
        return float(max_pos)

    def factor_or_ratio(old: float) -> float:  # yarn / longrope: factor None means max_position_embeddings / L
        if scaling.get("factor") is not None:
            return number("factor")
        if max_pos is None:
            raise ValueError(f"rope_scaling.factor: rope_type {kind!r} with factor None needs max_position_embeddings")
        return max_pos / old

    if kind == "linear":
        return inv_freq / number("factor"), 1.0  # (R/2,) (S2) pos * (inv_freq / s) = (pos / s) * inv_freq
    if kind == "dynamic":
        s = number("factor")
        if max_pos is None:
            raise ValueError("max_position_embeddings: rope_type 'dynamic' needs it (the length it starts from)")
        if R == 2:
            raise ValueError("rotary_dim: rope_type 'dynamic' needs rotary_dim > 2 (its exponent is R / (R - 2))")
        L = max_pos if seq_len is None else max(seq_len, max_pos)  # (S3) never below max_position_embeddings
        base = theta * (s * L / max_pos - (s - 1)) ** (R / (R - 2))  # (S4) the NTK-aware base for length L
        return 1.0 / base ** exponent, 1.0  # (R/2,)
    if kind == "llama3":
        factor = number("factor")
        low, high = number("low_freq_factor"), number("high_freq_factor")
        old_ctx = old_context()
        if not high > low:
            raise ValueError(f"rope_scaling.high_freq_factor: expected > low_freq_factor={low:g}, got {high:g}")
        wavelen = 2 * math.pi / inv_freq  # (R/2,) (S11) in positions
        smooth = (old_ctx / wavelen - low) / (high - low)  # (R/2,) 0 at the long end, 1 at the short end
        scaled = np.where(wavelen > old_ctx / low, inv_freq / factor, inv_freq)  # (R/2,) long waves slowed by s
        medium = (wavelen >= old_ctx / high) & (wavelen <= old_ctx / low)  # (R/2,) between: interpolate
        return np.where(medium, (1.0 - smooth) * scaled / factor + smooth * scaled, scaled), 1.0  # (R/2,) (S12)
    old = old_context()
    factor = factor_or_ratio(old)
    given = scaling.get("attention_factor")
    if kind == "yarn":
        return _yarn(R, theta, exponent, scaling, factor, old, given)
    # longrope: one rescale per frequency, the short set within L positions, the long set beyond  (S9)
    if given is not None:
        attention_factor = _positive("rope_scaling.attention_factor", given)
    elif factor <= 1.0:
        attention_factor = 1.0
    else:
        attention_factor = math.sqrt(1 + math.log(factor) / math.log(old))  # (S10)
    short, long = _factor_list("short_factor", scaling, R), _factor_list("long_factor", scaling, R)  # (R/2,) each
    ext = long if seq_len and seq_len > old else short  # (R/2,) HF: seq_len = max(position_ids) + 1
    return 1.0 / (ext * theta ** exponent), attention_factor  # (R/2,) (S9)


def _factor_list(key: str, scaling: Mapping[str, Any], R: int) -> npt.NDArray[np.float64]:
    """longrope's short_factor / long_factor: R/2 finite numbers > 0, as a float64 array."""
    values = scaling[key]
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple, np.ndarray)):
        raise ValueError(f"rope_scaling.{key}: expected a list of {R // 2} numbers, got {type(values).__name__}")
    if len(values) != R // 2:
        raise ValueError(f"rope_scaling.{key}: expected {R // 2} numbers (rotary_dim / 2), got {len(values)}")
    return np.array([_positive(f"rope_scaling.{key}", v) for v in values], dtype=np.float64)  # (R/2,)


def _yarn_mscale(scale: float, m: float = 1.0) -> float:
    """YaRN's magnitude correction 0.1 m ln(s) + 1 for s > 1, else 1  (S7)."""
    return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0


def _yarn(R: int, theta: float, exponent: npt.NDArray[np.float64], scaling: Mapping[str, Any], factor: float,
          old: float, given: Any) -> tuple[npt.NDArray[np.float64], float]:
    """YaRN ("NTK-by-parts" + attention temperature): inv_freq (R/2,) and the cos/sin factor.  (S5)-(S8)"""
    def optional(key: str, default: float) -> float:  # HF reads these with `or`: None and 0 mean the default
        v = scaling.get(key)
        return default if v is None or v == 0 else _positive(f"rope_scaling.{key}", v)

    if given is not None:
        attention_factor = _positive("rope_scaling.attention_factor", given)
    else:
        m, m_all = optional("mscale", 0.0), optional("mscale_all_dim", 0.0)
        if m and m_all:  # DeepSeek's: the ratio of two corrections  (S8)
            attention_factor = _yarn_mscale(factor, m) / _yarn_mscale(factor, m_all)
        else:
            attention_factor = _yarn_mscale(factor)  # (S7)
    beta_fast, beta_slow = optional("beta_fast", 32.0), optional("beta_slow", 1.0)
    if beta_fast < beta_slow:
        raise ValueError(f"rope_scaling.beta_fast: expected >= beta_slow={beta_slow:g}, got {beta_fast:g}")
    truncate = scaling.get("truncate", True)
    if not isinstance(truncate, bool):
        raise ValueError(f"rope_scaling.truncate: expected true or false, got {truncate!r}")

    def dim_of(rotations: float) -> float:  # (S5) the pair index whose wave turns `rotations` times in L positions
        return R * math.log(old / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    lo, hi = dim_of(beta_fast), dim_of(beta_slow)
    if truncate:
        lo, hi = math.floor(lo), math.ceil(hi)
    lo, hi = max(lo, 0), min(hi, R - 1)
    if lo == hi:
        hi += 0.001  # HF's guard against a zero-width ramp
    ramp = np.clip((np.arange(R // 2, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)  # (R/2,) 0: keep, 1: scale
    keep = 1.0 - ramp  # (R/2,) (S6) the share of the original frequency
    pos_freqs = theta ** exponent  # (R/2,) theta^(2i/R)
    inv_freq = 1.0 / (factor * pos_freqs) * (1.0 - keep) + 1.0 / pos_freqs * keep  # (R/2,) (S6)
    return inv_freq, float(attention_factor)


def rope_inv_freq(rotary_dim: int, theta: float = 10000.0,
                  scaling: Mapping[str, Any] | None = None) -> npt.NDArray[np.float64]:
    """inv_freq_i = theta^(-2i / R), i < R/2, in float64, optionally rescaled as HF's rope_scaling says.

    scaling: None / {"rope_type": "default"}; {"rope_type": "linear", "factor": s} (positions / s);
    {"rope_type": "llama3", "factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"}.
    ("type" is accepted for "rope_type", as old HF configs write it.)  Other types: rope_frequencies.
    """
    theta = _theta(theta)
    kind = scaling.get("rope_type", scaling.get("type")) if isinstance(scaling, Mapping) else None
    if kind in SCALING_TYPES and kind not in ROPE_TYPES:
        raise ValueError(f"rope_scaling: rope_type {kind!r} is not supported here (it needs rope_frequencies: "
                         "a sequence length or an attention factor)")
    kind = _scaling_kind(scaling, theta)
    return _frequencies(rotary_dim, theta, kind, scaling or {}, None, None)[0]


def _theta(theta: Any) -> float:
    theta = real_number("theta", theta)
    if not theta > 1.0 or not math.isfinite(theta):
        raise ValueError(f"theta: expected a finite base > 1, got {theta}")
    return theta


def rope_frequencies(rotary_dim: int, theta: float, scaling: Mapping[str, Any] | None,
                     seq_len: int | None = None, *,
                     max_position_embeddings: int | None = None) -> tuple[npt.NDArray[np.float64], float]:
    """(inv_freq (R/2,) float64, attention_factor) for any HF rope_type, as transformers' ROPE_INIT_FUNCTIONS.

    seq_len: the largest position + 1 the tables serve (dynamic, longrope read it); max_position_embeddings:
    the config's (dynamic, and yarn/longrope's defaults).  cos/sin get times attention_factor (rope_tables).
    See docs/derivations/rope_scaling.md.
    """
    if not is_int(rotary_dim) or rotary_dim < 2 or rotary_dim % 2:
        raise ValueError(f"rotary_dim: expected an even integer >= 2, got {rotary_dim!r}")
    if seq_len is not None and (not is_int(seq_len) or seq_len < 0):
        raise ValueError(f"seq_len: expected None or a non-negative integer, got {seq_len!r}")
    max_pos = max_position_embeddings
    if max_pos is not None and (not is_int(max_pos) or max_pos < 1):
        raise ValueError(f"max_position_embeddings: expected None or a positive integer, got {max_pos!r}")
    theta = _theta(theta)
    kind = _scaling_kind(scaling, theta)
    return _frequencies(int(rotary_dim), theta, kind, scaling or {}, None if seq_len is None else int(seq_len),
                        None if max_pos is None else int(max_pos))


def rope_softmax_scale(scaling: Mapping[str, Any] | None, max_position_embeddings: int | None = None) -> float:
    """The factor DeepSeek-family attention puts on its softmax scale: mscale(s, mscale_all_dim)^2 for a yarn
    scaling with mscale_all_dim set, else 1 (HF's yarn_apply_mscale; other families do not apply it).

    See docs/derivations/rope_scaling.md (S8).
    """
    kind = _scaling_kind(scaling, None)
    if kind != "yarn" or scaling is None or not scaling.get("mscale_all_dim"):
        return 1.0
    m_all = _positive("rope_scaling.mscale_all_dim", scaling["mscale_all_dim"])
    if scaling.get("factor") is not None:
        factor = _positive("rope_scaling.factor", scaling["factor"])
    elif max_position_embeddings is None or "original_max_position_embeddings" not in scaling:
        raise ValueError("rope_scaling.factor: rope_type 'yarn' with factor None needs max_position_embeddings")
    else:
        factor = max_position_embeddings / _positive("rope_scaling.original_max_position_embeddings",
                                                     scaling["original_max_position_embeddings"])
    return _yarn_mscale(factor, m_all) ** 2


def rope_tables(positions: npt.NDArray[np.integer], inv_freq: npt.NDArray[np.float64],
                dtype: npt.DTypeLike, attention_factor: float = 1.0) -> tuple[Array, Array]:
    """cos and sin of positions * inv_freq, times attention_factor, (T, R/2) for (T,) or (B, 1, T, R/2) for (B, T).

    Angles in float64, then rounded once to dtype.  See docs/derivations/rope.md, rope_scaling.md (S13).
    """
    angle = positions.astype(np.float64)[..., None] * inv_freq  # (T, R/2) or (B, T, R/2)
    if angle.ndim == 3:
        angle = angle[:, None]  # (B, 1, T, R/2): broadcast over heads
    cos, sin = np.cos(angle), np.sin(angle)  # (T, R/2) or (B, 1, T, R/2) float64
    if attention_factor != 1.0:  # (S13) yarn / longrope: q.k scaled by attention_factor^2
        cos, sin = cos * attention_factor, sin * attention_factor
    return cos.astype(dtype), sin.astype(dtype)


def _pairs(rotary_dim: int, interleaved: bool) -> tuple[slice, slice]:
    """Channel slices of the first and second member of every rotated pair."""
    if interleaved:
        return slice(0, rotary_dim, 2), slice(1, rotary_dim, 2)
    return slice(0, rotary_dim // 2), slice(rotary_dim // 2, rotary_dim)


def rope_forward(x: Array, positions: npt.NDArray[np.integer] | None = None, offset: int = 0,
                 theta: float = 10000.0, rotary_dim: int | None = None, interleaved: bool = False,
                 scaling: Mapping[str, Any] | None = None,
                 max_position_embeddings: int | None = None) -> tuple[Array, RopeCache]:
    """Rotate channel pairs of x (B, H, T, D) by pos * inv_freq; positions (T,) or (B, T), else offset + t.

    rotary_dim R (even, <= D; default D) channels rotate, the rest pass through; scaling: any HF rope_type
    (rope_frequencies, with seq_len = the largest position + 1).  See docs/derivations/rope.md.
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
    seq_len = int(positions.max()) + 1 if positions.size else 0  # HF's: max(position_ids) + 1
    inv_freq, attention_factor = rope_frequencies(int(rotary_dim), theta, scaling, seq_len,
                                                  max_position_embeddings=max_position_embeddings)  # (R/2,)
    cos, sin = rope_tables(positions, inv_freq, x.dtype, attention_factor)  # (T, R/2) or (B, 1, T, R/2)
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
