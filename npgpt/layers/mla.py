"""Multi-head latent attention (DeepSeek-V2/V3), the plain form:  out = o_proj(attn([q_nope, rope(q_rope)],
[k_nope, rope(k_rope)], v)), with q from a low-rank path (q_a_proj, RMSNorm, q_b_proj; or one q_proj) and
k_nope, v from one compressed latent c = RMSNorm(kv_a_proj(x)[:r]) through kv_b_proj; k_rope is one key part
shared by all heads.  Parameters keyed by HF DeepseekV3Attention's names inside a layer, nn.Linear's (out, in).
Forward x (B, T, C) -> out (B, T, C); backward dout -> dx and a dict of gradients.
Derivation: docs/derivations/mla.md
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from .._checks import float_array, integer, is_int, is_py_int, is_real, param, upstream
from .merge_heads import MergeHeadsCache, _merge_heads_backward, _merge_heads_forward
from .reductions import column_sum
from .rmsnorm import RMSNormCache, _rmsnorm_backward, _rmsnorm_forward
from .rope import RopeCache, _rope_backward, _rope_forward
from .sdpa import SdpaCache, _sdpa_backward, _sdpa_forward, causal_options
from .split_heads import SplitHeadsCache, _split_heads_backward, _split_heads_forward

Array = npt.NDArray[np.floating]

P = "self_attn."
# Every parameter the layer can have, in the order mla_backward returns their gradients (None when absent).
MLA_PARAM_NAMES = (
    P + "q_proj.weight",  # (H Dqk, C)             only when q_lora_rank is None
    P + "q_a_proj.weight", P + "q_a_proj.bias",  # (rq, C), (rq,)   when q_lora_rank = rq; bias: attention_bias
    P + "q_a_layernorm.weight",  # (rq,)
    P + "q_b_proj.weight",  # (H Dqk, rq)
    P + "kv_a_proj_with_mqa.weight", P + "kv_a_proj_with_mqa.bias",  # (r + R, C), (r + R,)
    P + "kv_a_layernorm.weight",  # (r,)
    P + "kv_b_proj.weight",  # (H (Dn + Dv), r)
    P + "o_proj.weight", P + "o_proj.bias",  # (C, H Dv), (C,)
)


def yarn_mscale(factor: float, mscale: float) -> float:
    """YaRN's 0.1 * mscale * ln(factor) + 1 (1 when factor <= 1).  See docs/derivations/mla.md."""
    return 1.0 if factor <= 1.0 else 0.1 * mscale * math.log(factor) + 1.0


def mla_softmax_scale(qk_head_dim: int, rope_scaling: Mapping[str, Any] | None = None) -> float:
    """s = qk_head_dim^-1/2, times mscale(factor, mscale_all_dim)^2 when rope_scaling (not "default") has a
    nonzero mscale_all_dim: HF's yarn_apply_mscale.  See docs/derivations/mla.md ("The softmax scale")."""
    s = float(qk_head_dim) ** -0.5
    if rope_scaling is None:
        return s
    if not isinstance(rope_scaling, Mapping):
        raise ValueError(f"rope_scaling: expected a mapping or None, got {type(rope_scaling).__name__}")
    kind = rope_scaling.get("rope_type", rope_scaling.get("type", "default"))
    m_all = rope_scaling.get("mscale_all_dim", 0)
    if kind == "default" or not m_all:
        return s
    if not is_real(m_all) or not math.isfinite(m_all):
        raise ValueError(f"rope_scaling.mscale_all_dim: expected a finite number, got {m_all!r}")
    factor: Any = rope_scaling.get("factor")
    if not is_real(factor) or not factor > 0 or not math.isfinite(factor):
        raise ValueError(f"rope_scaling.factor: expected a finite number > 0 with mscale_all_dim, got {factor!r}")
    m = yarn_mscale(float(factor), float(m_all))
    return s * m * m


@dataclass(frozen=True)
class MLAConfig:
    """The shapes of one latent-attention layer (HF DeepseekV3Config's field names where they exist)."""

    n_embd: int  # C (HF hidden_size)
    n_head: int  # H (HF num_attention_heads); every head has its own query, key and value (no GQA)
    kv_lora_rank: int  # r: width of the compressed key-value latent c
    qk_nope_head_dim: int  # Dn: per-head key/query channels without RoPE
    qk_rope_head_dim: int  # R: RoPE channels, even; the key's R channels are shared by all heads
    v_head_dim: int  # Dv: value head size (may differ from Dqk = Dn + R)
    q_lora_rank: int | None = None  # rq: width of the query latent; None = one q_proj (DeepSeek-V2-Lite)
    attention_bias: bool = False  # biases on q_a_proj, kv_a_proj_with_mqa and o_proj (never q_b/kv_b/q_proj)
    rope_interleave: bool = True  # RoPE pairs (2i, 2i+1) (DeepSeek's layout), else (i, i + R/2)
    latent_norm_eps: float = 1e-6  # eps of q_a_layernorm and kv_a_layernorm (HF: fixed 1e-6, not rms_norm_eps)
    rope_scaling: Mapping[str, Any] | None = None  # HF rope_parameters: only factor, mscale_all_dim matter here

    def __post_init__(self) -> None:
        for name in ("n_embd", "n_head", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
            value = getattr(self, name)
            if not is_py_int(value) or value < 1:
                raise ValueError(f"{name}: expected a positive integer, got {value!r}")
        if self.qk_rope_head_dim % 2:
            raise ValueError(f"qk_rope_head_dim: RoPE rotates channel pairs, so it must be even, "
                             f"got {self.qk_rope_head_dim}")
        if self.q_lora_rank is not None and (not is_py_int(self.q_lora_rank) or self.q_lora_rank < 1):
            raise ValueError(f"q_lora_rank: expected a positive integer or None, got {self.q_lora_rank!r}")
        for name in ("attention_bias", "rope_interleave"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name}: expected True or False, got {getattr(self, name)!r}")
        eps = self.latent_norm_eps
        if not is_real(eps) or not eps > 0 or not math.isfinite(eps):
            raise ValueError(f"latent_norm_eps: expected a finite positive number, got {eps!r}")
        mla_softmax_scale(self.qk_head_dim, self.rope_scaling)  # rope_scaling errors

    @property
    def qk_head_dim(self) -> int:
        """Dqk = Dn + R: the size of one query or key head."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim

    @property
    def scale(self) -> float:
        """The softmax scale s (mla_softmax_scale)."""
        return mla_softmax_scale(self.qk_head_dim, self.rope_scaling)


def mla_param_shapes(config: MLAConfig) -> dict[str, tuple[int, ...]]:
    """Every parameter this config has, keyed like MLA_PARAM_NAMES (in that order), with its shape."""
    C, H, r, R = config.n_embd, config.n_head, config.kv_lora_rank, config.qk_rope_head_dim
    Dqk, Dn, Dv, rq = config.qk_head_dim, config.qk_nope_head_dim, config.v_head_dim, config.q_lora_rank
    bias = config.attention_bias
    shapes: dict[str, tuple[int, ...] | None] = {
        P + "q_proj.weight": (H * Dqk, C) if rq is None else None,
        P + "q_a_proj.weight": None if rq is None else (rq, C),
        P + "q_a_proj.bias": (rq,) if rq is not None and bias else None,
        P + "q_a_layernorm.weight": None if rq is None else (rq,),
        P + "q_b_proj.weight": None if rq is None else (H * Dqk, rq),
        P + "kv_a_proj_with_mqa.weight": (r + R, C),
        P + "kv_a_proj_with_mqa.bias": (r + R,) if bias else None,
        P + "kv_a_layernorm.weight": (r,),
        P + "kv_b_proj.weight": (H * (Dn + Dv), r),
        P + "o_proj.weight": (C, H * Dv),
        P + "o_proj.bias": (C,) if bias else None,
    }
    return {k: s for k, s in shapes.items() if s is not None}


class MLAKVSlot(NamedTuple):
    """One layer's preallocated cache for decoding with the plain form: full per-head keys and values."""

    k: Array  # (B, H, T_max, Dqk) rotated keys [k_nope | k_rope], k_rope repeated in every head
    v: Array  # (B, H, T_max, Dv)


class MLACache(NamedTuple):
    x2: Array  # (N, C) the input: for the weight gradients of q_proj / q_a_proj and kv_a_proj_with_mqa
    q_norm: RMSNormCache | None  # q_a_layernorm's cache (None without a query latent)
    q_lat: Array | None  # (N, rq) q_a_layernorm's output: the input of q_b_proj
    kv_norm: RMSNormCache  # kv_a_layernorm's cache
    c: Array  # (N, r) the normalised latent: the input of kv_b_proj
    split_q: SplitHeadsCache  # (B, T, H Dqk) -> (B, H, T, Dqk)
    split_kv: SplitHeadsCache  # (B, T, H (Dn + Dv)) -> (B, H, T, Dn + Dv)
    rope_q: RopeCache  # on the queries' last R channels
    rope_k: RopeCache  # on the shared key part (B, 1, T, R)
    attn: SdpaCache
    merge: MergeHeadsCache
    y: Array  # (N, H Dv) merged heads: the input of o_proj
    p: Mapping[str, Array]  # the parameters (the weights for the input gradients)
    config: MLAConfig
    x_shape: tuple[int, ...]  # (B, T, C)
    cached: bool  # the forward read keys from an MLAKVSlot: decoding only, no backward


# ---------------------------------------------------------------------------------------------- checks


def check_mla_params(p: Any, config: MLAConfig, dtype: np.dtype) -> None:
    """Every parameter the config needs, of its exact shape and x's dtype, and none it does not have."""
    if not isinstance(config, MLAConfig):
        raise ValueError(f"config: expected an MLAConfig, got {type(config).__name__}")
    if not isinstance(p, Mapping):
        raise ValueError(f"p: expected a mapping of parameter arrays, got {type(p).__name__}")
    shapes = mla_param_shapes(config)
    missing = [k for k in shapes if k not in p]
    if missing:
        raise ValueError(f"p: missing parameter(s) {missing} for q_lora_rank={config.q_lora_rank}, "
                         f"attention_bias={config.attention_bias}")
    extra = [k for k in MLA_PARAM_NAMES if k in p and k not in shapes]
    if extra:
        raise ValueError(f"p: unexpected parameter(s) {extra} for q_lora_rank={config.q_lora_rank}, "
                         f"attention_bias={config.attention_bias}")
    for k, shape in shapes.items():
        param(k, p[k], shape, dtype)


def check_tables(cos: Any, sin: Any, B: int, T: int, R: int, dtype: np.dtype) -> None:
    """cos and sin: (T, R/2) or (B, 1, T, R/2), x's dtype (rope_tables of the T positions)."""
    for name, t in (("cos", cos), ("sin", sin)):
        float_array(name, t)
        if t.shape not in ((T, R // 2), (B, 1, T, R // 2)):
            raise ValueError(f"{name}: expected shape ({T}, {R // 2}) or ({B}, 1, {T}, {R // 2}) "
                             f"(qk_rope_head_dim / 2 = {R // 2}), got {t.shape}")
        if t.dtype != dtype:
            raise ValueError(f"{name}: expected dtype {dtype} (same as x), got {t.dtype}")


def check_slot(name: str, arrays: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], dtype: np.dtype,
               start: Any, T: int) -> int:
    """Check a cache slot's arrays against shapes (-1: the capacity T_max, any) and start + T <= T_max."""
    start = integer("start", start, minimum=0)
    for field, a in arrays.items():
        float_array(f"{name}.{field}", a)
        want = shapes[field]
        if a.ndim != len(want) or any(w != -1 and w != s for w, s in zip(want, a.shape)):
            shown = tuple("T_max" if w == -1 else w for w in want)
            raise ValueError(f"{name}.{field}: expected shape {shown}, got {a.shape}")
        if a.dtype != dtype:
            raise ValueError(f"{name}.{field}: expected dtype {dtype} (same as x), got {a.dtype}")
    capacity = min(a.shape[-2] for a in arrays.values())
    if start + T > capacity:
        raise ValueError(f"start: {start} + T={T} positions exceed the cache's capacity {capacity}")
    return start


# ---------------------------------------------------------------------------------------------- the pair


def mla_forward(x: Array, p: Mapping[str, Array], config: MLAConfig, cos: Array, sin: Array,
                kv: MLAKVSlot | None = None, start: int = 0) -> tuple[Array, MLACache]:
    """Latent attention, causal.  x (B, T, C), cos/sin (T, R/2) or (B, 1, T, R/2) -> out (B, T, C).

    With kv, the T new keys/values go to positions start .. start + T - 1 and the queries attend over all
    start + T (decoding; no backward then).  See docs/derivations/mla.md.
    """
    float_array("x", x, ndim=3)
    if not isinstance(config, MLAConfig):
        raise ValueError(f"config: expected an MLAConfig, got {type(config).__name__}")
    B, T, C = x.shape
    if C != config.n_embd or T < 1:
        raise ValueError(f"x: expected shape (B, T >= 1, n_embd={config.n_embd}), got {x.shape}")
    check_mla_params(p, config, x.dtype)
    check_tables(cos, sin, B, T, config.qk_rope_head_dim, x.dtype)
    if kv is not None:
        if not isinstance(kv, MLAKVSlot):
            raise ValueError(f"kv: expected an MLAKVSlot or None, got {type(kv).__name__}")
        H = config.n_head
        start = check_slot("kv", {"k": kv.k, "v": kv.v},
                           {"k": (B, H, -1, config.qk_head_dim), "v": (B, H, -1, config.v_head_dim)},
                           x.dtype, start, T)
    elif not is_int(start) or start != 0:
        raise ValueError(f"start: expected 0 without a kv cache, got {start!r}")
    return _mla_forward(x, p, config, cos, sin, kv, int(start))


def _mla_forward(x: Array, p: Mapping[str, Array], config: MLAConfig, cos: Array, sin: Array,
                 kv: MLAKVSlot | None = None, start: int = 0) -> tuple[Array, MLACache]:
    """Unchecked kernel of mla_forward (the decoder calls this)."""
    B, T, C = x.shape
    H, r, R = config.n_head, config.kv_lora_rank, config.qk_rope_head_dim
    Dn, Dv, Dqk = config.qk_nope_head_dim, config.v_head_dim, config.qk_head_dim
    eps = float(config.latent_norm_eps)
    x2 = x.reshape(-1, C)  # (N, C)
    # the query path
    q_norm = q_lat = None
    if config.q_lora_rank is None:
        q = x2 @ p[P + "q_proj.weight"].T  # (1) (N, H Dqk)
    else:
        qa = x2 @ p[P + "q_a_proj.weight"].T  # (2) (N, rq)
        if P + "q_a_proj.bias" in p:
            qa += p[P + "q_a_proj.bias"]
        q_lat, q_norm = _rmsnorm_forward(qa, p[P + "q_a_layernorm.weight"], eps, 0.0, "input")  # (3) (N, rq)
        q = q_lat @ p[P + "q_b_proj.weight"].T  # (4) (N, H Dqk)
    qh, split_q = _split_heads_forward(q.reshape(B, T, H * Dqk), H)  # (B, H, T, Dqk) a view
    q_rope, rope_q = _rope_forward(qh[..., Dn:], cos, sin, R, config.rope_interleave)  # (7) (B, H, T, R)
    q_full = np.empty((B, H, T, Dqk), dtype=x.dtype)  # (B, H, T, Dqk) [q_nope | rope(q_rope)]
    q_full[..., :Dn] = qh[..., :Dn]
    q_full[..., Dn:] = q_rope
    # the key-value path: one latent c and one shared rope key per position
    ckr = x2 @ p[P + "kv_a_proj_with_mqa.weight"].T  # (5) (N, r + R)
    if P + "kv_a_proj_with_mqa.bias" in p:
        ckr += p[P + "kv_a_proj_with_mqa.bias"]
    c, kv_norm = _rmsnorm_forward(ckr[:, :r], p[P + "kv_a_layernorm.weight"], eps, 0.0, "input")  # (6) (N, r)
    k_rope, rope_k = _rope_forward(ckr[:, r:].reshape(B, 1, T, R), cos, sin, R,
                                   config.rope_interleave)  # (7) (B, 1, T, R) shared by every head
    kvb = c @ p[P + "kv_b_proj.weight"].T  # (8) (N, H (Dn + Dv))
    kvh, split_kv = _split_heads_forward(kvb.reshape(B, T, H * (Dn + Dv)), H)  # (B, H, T, Dn + Dv) a view
    k = np.empty((B, H, T, Dqk), dtype=x.dtype)  # (9) (B, H, T, Dqk) [k_nope | k_rope]
    k[..., :Dn] = kvh[..., :Dn]
    k[..., Dn:] = k_rope  # broadcast over the H heads
    v = kvh[..., Dn:]  # (B, H, T, Dv) a view
    if kv is not None:
        kv.k[:, :, start:start + T] = k  # the plain form caches every head's full key and value
        kv.v[:, :, start:start + T] = v
        k, v = kv.k[:, :, :start + T], kv.v[:, :, :start + T]  # (B, H, start + T, Dqk), (B, H, start + T, Dv)
    a, _, attn = _sdpa_forward(q_full, k, v, None, None, causal_options(Dqk, config.scale))  # (10) (B, H, T, Dv)
    ym, merge = _merge_heads_forward(a)  # (B, T, H Dv)
    y = ym.reshape(-1, H * Dv)  # (N, H Dv)
    out = y @ p[P + "o_proj.weight"].T  # (11) (N, C)
    if P + "o_proj.bias" in p:
        out += p[P + "o_proj.bias"]
    return out.reshape(B, T, C), MLACache(x2, q_norm, q_lat, kv_norm, c, split_q, split_kv, rope_q, rope_k,
                                          attn, merge, y, p, config, x.shape, kv is not None)


def mla_backward(dout: Array, cache: MLACache) -> tuple[Array, dict[str, Array | None]]:
    """dx (B, T, C) and every parameter's gradient keyed like MLA_PARAM_NAMES (None where the config has no
    such parameter).  The shared rope key's gradient sums over the heads.  See docs/derivations/mla.md."""
    upstream("dout", dout, cache.x_shape, cache.x2.dtype)
    if cache.cached:
        raise ValueError("cache: the forward read keys from a kv cache (decoding); backward needs kv=None")
    return _mla_backward(dout, cache)


def _mla_backward(dout: Array, cache: MLACache) -> tuple[Array, dict[str, Array | None]]:
    """Unchecked kernel of mla_backward."""
    c = cache
    B, T, C = c.x_shape
    cfg, p = c.config, c.p
    H, r, R = cfg.n_head, cfg.kv_lora_rank, cfg.qk_rope_head_dim
    Dn, Dv = cfg.qk_nope_head_dim, cfg.v_head_dim
    g: dict[str, Array | None] = dict.fromkeys(MLA_PARAM_NAMES)
    d2 = dout.reshape(-1, C)  # (N, C)
    g[P + "o_proj.weight"] = d2.T @ c.y  # (12) (C, H Dv)
    if P + "o_proj.bias" in p:
        g[P + "o_proj.bias"] = column_sum(d2)  # (12) (C,)
    da = _merge_heads_backward((d2 @ p[P + "o_proj.weight"]).reshape(B, T, H * Dv), c.merge)  # (13) (B, H, T, Dv)
    dq, dk, dv, _, _ = _sdpa_backward(da, c.attn, None)  # (14) (B, H, T, Dqk), (B, H, T, Dqk), (B, H, T, Dv)
    # the key-value path
    dkvh = np.concatenate([dk[..., :Dn], dv], axis=-1)  # (15) (B, H, T, Dn + Dv)
    dkvb = _split_heads_backward(dkvh, c.split_kv).reshape(-1, H * (Dn + Dv))  # (N, H (Dn + Dv))
    g[P + "kv_b_proj.weight"] = dkvb.T @ c.c  # (16) (H (Dn + Dv), r)
    dckr = np.empty((B * T, r + R), dtype=dout.dtype)  # (N, r + R) the gradient of kv_a_proj's output
    dckr[:, :r], g[P + "kv_a_layernorm.weight"] = _rmsnorm_backward(dkvb @ p[P + "kv_b_proj.weight"],
                                                                    c.kv_norm)  # (17) (N, r)
    dk_rope = dk[..., Dn:].sum(axis=1, keepdims=True)  # (18) (B, 1, T, R) the shared key: summed over heads
    dckr[:, r:] = _rope_backward(dk_rope, c.rope_k).reshape(-1, R)  # (19) (N, R)
    g[P + "kv_a_proj_with_mqa.weight"] = dckr.T @ c.x2  # (20) (r + R, C)
    if P + "kv_a_proj_with_mqa.bias" in p:
        g[P + "kv_a_proj_with_mqa.bias"] = column_sum(dckr)  # (20) (r + R,)
    dx2 = dckr @ p[P + "kv_a_proj_with_mqa.weight"]  # (21) (N, C)
    # the query path
    dqh = dq.copy()  # (B, H, T, Dqk) the nope channels pass as they are
    dqh[..., Dn:] = _rope_backward(dq[..., Dn:], c.rope_q)  # (19) (B, H, T, R)
    dq2 = _split_heads_backward(dqh, c.split_q).reshape(-1, H * cfg.qk_head_dim)  # (N, H Dqk)
    if cfg.q_lora_rank is None:
        g[P + "q_proj.weight"] = dq2.T @ c.x2  # (22) (H Dqk, C)
        dx2 += dq2 @ p[P + "q_proj.weight"]  # (21) (N, C) the two paths read the same x
    else:
        assert c.q_lat is not None and c.q_norm is not None
        g[P + "q_b_proj.weight"] = dq2.T @ c.q_lat  # (23) (H Dqk, rq)
        dqa, g[P + "q_a_layernorm.weight"] = _rmsnorm_backward(dq2 @ p[P + "q_b_proj.weight"], c.q_norm)  # (24)
        g[P + "q_a_proj.weight"] = dqa.T @ c.x2  # (25) (rq, C)
        if P + "q_a_proj.bias" in p:
            g[P + "q_a_proj.bias"] = column_sum(dqa)  # (25) (rq,)
        dx2 += dqa @ p[P + "q_a_proj.weight"]  # (21) (N, C)
    return dx2.reshape(B, T, C), g
