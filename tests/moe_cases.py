"""The MoE test cases: one spec per family (and variants), tiny widths, inputs away from every kink."""

from __future__ import annotations

import numpy as np
from moe_helpers import MARGIN, boundary_gap, deepseek_boundary_gap

from npgpt.layers.moe import MoESpec, moe_init_params, moe_spec, oss_keys, router_keys

# name -> (family, spec): E, K, and the flags each family's HF config uses
CASES: dict[str, tuple[str, MoESpec]] = {
    "mixtral": ("mixtral", moe_spec("mixtral", 4, 2)),
    "qwen2_moe": ("qwen2_moe", moe_spec("qwen2_moe", 4, 2)),
    "qwen2_moe_norm": ("qwen2_moe", moe_spec("qwen2_moe", 4, 3, norm_topk_prob=True)),
    "qwen3_moe": ("qwen3_moe", moe_spec("qwen3_moe", 5, 2)),
    "gpt_oss": ("gpt_oss", moe_spec("gpt_oss", 4, 2, swiglu_limit=1.0)),
    "deepseek_v3": ("deepseek_v3", moe_spec("deepseek_v3", 8, 3, n_group=4, topk_group=2)),
    "deepseek_v3_plain": ("deepseek_v3", moe_spec("deepseek_v3", 4, 1, norm_topk_prob=False,
                                                  routed_scaling_factor=1.0)),
}


def shared_width(family: str, F: int) -> int | None:
    """Qwen2-MoE's shared expert has its own width; DeepSeek's is n_shared_experts * F (2 here)."""
    return {"qwen2_moe": F + 3, "deepseek_v3": 2 * F}.get(family)


def _ok(spec: MoESpec, x: np.ndarray, p: dict[str, np.ndarray], margin: float) -> bool:
    """Every decision of the layer has slack: the router's choice, and gpt-oss's clamps."""
    x2 = x.reshape(-1, x.shape[-1])
    w, b, corr = router_keys(spec)
    z = x2 @ p[w].T + (p[b] if b else 0.0)
    if spec.router == "deepseek":  # the layer sums over the chosen set: only its boundary matters
        if deepseek_boundary_gap(z, p[corr], spec.n_group, spec.topk_group, spec.top_k) <= margin / 2:
            return False
    elif boundary_gap(z, spec.top_k) <= margin:
        return False
    if spec.expert == "gpt_oss":
        gu, gub, _, _ = oss_keys(spec)
        pre = np.einsum("nc,ecf->enf", x2, p[gu]) + p[gub][:, None, :]  # every expert on every token
        lim = spec.swiglu_limit
        if np.min(np.abs(pre[..., ::2] - lim)) <= margin or np.min(np.abs(np.abs(pre[..., 1::2]) - lim)) <= margin:
            return False
    return True


def case_inputs(name: str, rng: np.random.Generator, lead=(2, 3), C=3, F=2, std=0.6, margin=MARGIN):
    """(spec, x, params, F_shared) for a case, redrawn until _ok: non-degenerate, away from ties and kinks by
    margin (MARGIN for finite differences; a comparison without them needs only to be safe from round-off)."""
    family, spec = CASES[name]
    Fs = shared_width(family, F)
    for _ in range(500):
        p = moe_init_params(spec, C, F, rng, F_shared=Fs, std=std)
        corr = router_keys(spec)[2]
        if corr is not None:
            p[corr] = rng.standard_normal(spec.n_experts) * 0.1
        x = rng.standard_normal((*lead, C))
        if _ok(spec, x, p, margin):
            return spec, x, p, Fs
    raise RuntimeError("no inputs away from ties")
