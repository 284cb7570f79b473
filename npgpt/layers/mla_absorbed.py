"""Multi-head latent attention, the absorbed form decoding kernels use: kv_b_proj's key part folded into the
query projection and its value part into o_proj, so that attention runs on the cached latent itself -- one
shared key [c | rope(k_rope)] of size r + R per position and the value c (multi-query attention, one kv head).
Equal to mla.py's plain form (tests/test_mla_absorbed.py); forward only (its backward is the plain form's).
Forward x (B, T, C) -> out (B, T, C).  Derivation: docs/derivations/mla.md ("The absorbed form")
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, is_int
from .merge_heads import _merge_heads_forward
from .mla import P, MLAConfig, check_mla_params, check_slot, check_tables
from .rmsnorm import _rmsnorm_forward
from .rope import _rope_forward
from .sdpa import SdpaCache, _sdpa_forward, causal_options
from .split_heads import _split_heads_forward

Array = npt.NDArray[np.floating]


class MLAAbsorbedWeights(NamedTuple):
    """The layer's weights with kv_b_proj multiplied into the query and output projections (mla_absorb)."""

    q_a: Array | None  # (rq, C) q_a_proj.weight, or None without a query latent
    q_a_bias: Array | None  # (rq,)
    q_norm: Array | None  # (rq,) q_a_layernorm.weight
    w_q: Array  # (H (r + R), Cq) per head [W_uk_h^T W_qn_h ; W_qr_h]; Cq = rq, or C without a query latent
    kv_a: Array  # (r + R, C) kv_a_proj_with_mqa.weight
    kv_a_bias: Array | None  # (r + R,)
    kv_norm: Array  # (r,) kv_a_layernorm.weight
    w_o: Array  # (C, H r) per head W_o_h W_uv_h
    o_bias: Array | None  # (C,)


class LatentSlot(NamedTuple):
    """One layer's preallocated latent cache: per position only [c | rope(k_rope)], shared by every head."""

    kv: Array  # (B, 1, T_max, r + R): the key is all of it, the value its first r channels


class MLAAbsorbedCache(NamedTuple):
    attn: SdpaCache  # the multi-query attention over the latent (its probs equal the plain form's)
    q: Array  # (B, H, T, r + R) the absorbed queries [q_nope W_uk | rope(q_rope)]
    latent: Array  # (B, 1, T, r + R) this call's new cache entries


def mla_absorb(p: Mapping[str, Array], config: MLAConfig) -> MLAAbsorbedWeights:
    """Fold kv_b_proj into the query and output projections, once per model: w_q (H (r + R), Cq), w_o (C, H r).

    p keyed like mla.MLA_PARAM_NAMES (checked).  See docs/derivations/mla.md, terms (26)-(27).
    """
    if not isinstance(config, MLAConfig):
        raise ValueError(f"config: expected an MLAConfig, got {type(config).__name__}")
    w = p.get(P + "kv_a_proj_with_mqa.weight") if isinstance(p, Mapping) else None
    check_mla_params(p, config, w.dtype if isinstance(w, np.ndarray) else np.dtype(np.float64))
    return _mla_absorb(p, config)


def _mla_absorb(p: Mapping[str, Array], config: MLAConfig) -> MLAAbsorbedWeights:
    """Unchecked kernel of mla_absorb."""
    H, r, R = config.n_head, config.kv_lora_rank, config.qk_rope_head_dim
    Dn, Dv, Dqk = config.qk_nope_head_dim, config.v_head_dim, config.qk_head_dim
    lora = config.q_lora_rank is not None
    wq = p[P + "q_b_proj.weight"] if lora else p[P + "q_proj.weight"]  # (H Dqk, Cq)
    Cq = wq.shape[1]
    wq_h = wq.reshape(H, Dqk, Cq)  # (H, Dqk, Cq) rows of head h
    wkv_h = p[P + "kv_b_proj.weight"].reshape(H, Dn + Dv, r)  # (H, Dn + Dv, r)
    w_uk, w_uv = wkv_h[:, :Dn], wkv_h[:, Dn:]  # (H, Dn, r), (H, Dv, r)
    w_q = np.empty((H, r + R, Cq), dtype=wq.dtype)  # (H, r + R, Cq)
    w_q[:, :r] = w_uk.swapaxes(1, 2) @ wq_h[:, :Dn]  # (26) (H, r, Cq) W_uk_h^T W_qn_h: q_nope . k_nope = q_lat . c
    w_q[:, r:] = wq_h[:, Dn:]  # (H, R, Cq) the rope rows are kept
    C = config.n_embd
    wo_h = p[P + "o_proj.weight"].reshape(C, H, Dv).transpose(1, 0, 2)  # (H, C, Dv) W_o_h
    w_o = (wo_h @ w_uv).transpose(1, 0, 2).reshape(C, H * r)  # (27) (C, H r) blocks W_o_h W_uv_h
    return MLAAbsorbedWeights(p.get(P + "q_a_proj.weight"), p.get(P + "q_a_proj.bias"),
                              p.get(P + "q_a_layernorm.weight"), w_q.reshape(H * (r + R), Cq),
                              p[P + "kv_a_proj_with_mqa.weight"], p.get(P + "kv_a_proj_with_mqa.bias"),
                              p[P + "kv_a_layernorm.weight"], w_o, p.get(P + "o_proj.bias"))


def mla_absorbed_forward(x: Array, w: MLAAbsorbedWeights, config: MLAConfig, cos: Array, sin: Array,
                         latent: LatentSlot | None = None, start: int = 0) -> tuple[Array, MLAAbsorbedCache]:
    """Latent attention over [c | rope(k_rope)] (one kv head): x (B, T, C), cos/sin (T, R/2) -> out (B, T, C).

    w from mla_absorb.  With latent, the T new latents go to positions start .. start + T - 1 and the queries
    attend over all start + T.  See docs/derivations/mla.md ("The absorbed form").
    """
    float_array("x", x, ndim=3)
    if not isinstance(config, MLAConfig):
        raise ValueError(f"config: expected an MLAConfig, got {type(config).__name__}")
    if not isinstance(w, MLAAbsorbedWeights):
        raise ValueError(f"w: expected MLAAbsorbedWeights (from mla_absorb), got {type(w).__name__}")
    B, T, C = x.shape
    H, r, R = config.n_head, config.kv_lora_rank, config.qk_rope_head_dim
    if C != config.n_embd or T < 1:
        raise ValueError(f"x: expected shape (B, T >= 1, n_embd={config.n_embd}), got {x.shape}")
    Cq = C if config.q_lora_rank is None else config.q_lora_rank
    for name, a, shape in (("w.w_q", w.w_q, (H * (r + R), Cq)), ("w.w_o", w.w_o, (C, H * r)),
                           ("w.kv_a", w.kv_a, (r + R, C)), ("w.kv_norm", w.kv_norm, (r,))):
        float_array(name, a)
        if a.shape != shape or a.dtype != x.dtype:
            raise ValueError(f"{name}: expected a {x.dtype} array of shape {shape} (for this config), "
                             f"got {a.dtype} {a.shape}")
    check_tables(cos, sin, B, T, R, x.dtype)
    if latent is not None:
        if not isinstance(latent, LatentSlot):
            raise ValueError(f"latent: expected a LatentSlot or None, got {type(latent).__name__}")
        start = check_slot("latent", {"kv": latent.kv}, {"kv": (B, 1, -1, r + R)}, x.dtype, start, T)
    elif not is_int(start) or start != 0:
        raise ValueError(f"start: expected 0 without a latent cache, got {start!r}")
    return _mla_absorbed_forward(x, w, config, cos, sin, latent, int(start))


def _mla_absorbed_forward(x: Array, w: MLAAbsorbedWeights, config: MLAConfig, cos: Array, sin: Array,
                          latent: LatentSlot | None = None, start: int = 0) -> tuple[Array, MLAAbsorbedCache]:
    """Unchecked kernel of mla_absorbed_forward."""
    B, T, C = x.shape
    H, r, R = config.n_head, config.kv_lora_rank, config.qk_rope_head_dim
    eps = float(config.latent_norm_eps)
    x2 = x.reshape(-1, C)  # (N, C)
    u = x2  # (N, Cq) the query projection's input
    if w.q_a is not None and w.q_norm is not None:
        qa = x2 @ w.q_a.T  # (2) (N, rq)
        if w.q_a_bias is not None:
            qa += w.q_a_bias
        u, _ = _rmsnorm_forward(qa, w.q_norm, eps, 0.0, "input")  # (3) (N, rq)
    qh, _ = _split_heads_forward((u @ w.w_q.T).reshape(B, T, H * (r + R)), H)  # (28) (B, H, T, r + R) a view
    q = np.empty((B, H, T, r + R), dtype=x.dtype)  # (B, H, T, r + R) [q_lat | rope(q_rope)]
    q[..., :r] = qh[..., :r]
    q_rope, _ = _rope_forward(qh[..., r:], cos, sin, R, config.rope_interleave)  # (7) (B, H, T, R)
    q[..., r:] = q_rope
    ckr = x2 @ w.kv_a.T  # (5) (N, r + R)
    if w.kv_a_bias is not None:
        ckr += w.kv_a_bias
    new = np.empty((B, 1, T, r + R), dtype=x.dtype)  # (B, 1, T, r + R) [c | rope(k_rope)]: all that is cached
    c, _ = _rmsnorm_forward(ckr[:, :r], w.kv_norm, eps, 0.0, "input")  # (6) (N, r)
    new[:, 0, :, :r] = c.reshape(B, T, r)
    k_rope, _ = _rope_forward(ckr[:, r:].reshape(B, 1, T, R), cos, sin, R, config.rope_interleave)  # (7)
    new[..., r:] = k_rope  # (B, 1, T, R)
    kv = new
    if latent is not None:
        latent.kv[:, :, start:start + T] = new
        kv = latent.kv[:, :, :start + T]  # (B, 1, start + T, r + R)
    # (29) one kv head: key = the whole latent row, value = its first r channels (a view); s is the plain form's
    o_lat, _, attn = _sdpa_forward(q, kv, kv[..., :r], None, None, causal_options(r + R, config.scale))  # (B, H, T, r)
    y, _ = _merge_heads_forward(o_lat)  # (B, T, H r)
    out = y.reshape(-1, H * r) @ w.w_o.T  # (30) (N, C)
    if w.o_bias is not None:
        out += w.o_bias
    return out.reshape(B, T, C), MLAAbsorbedCache(attn, q, new)
