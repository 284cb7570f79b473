"""transformers' sparse MoE blocks in float64, built from npgpt parameters: shared by tests/test_moe.py and
tests/fixtures/make_moe_fixtures.py.  Needs torch and transformers (callers importorskip them first).

Float32 islands: transformers computes some router steps in float32 whatever the model's dtype.  float64_forward()
rewrites such a method's source, replacing each float32 cast by a float64 one, and binds the result to one
module instance (the class is left alone).  The islands (transformers 5.x):
  - MixtralTopKRouter.forward: softmax(router_logits.float())
  - Qwen2MoeTopKRouter.forward, Qwen3MoeTopKRouter.forward: softmax(..., dtype=torch.float)
  - DeepseekV3TopkRouter.forward: F.linear(hidden_states.type(torch.float32), self.weight.type(torch.float32))
  - load_balancing_loss_func: float32 accumulators (torch.float32, .float())
gpt-oss's router has none.  Each rewrite asserts that it changed something, so a transformers release that drops
an island fails loudly here rather than silently comparing something else.
"""

from __future__ import annotations

import inspect
import sys
import textwrap
import types
from typing import Any

import numpy as np

from npgpt.layers.moe import MoESpec, expert_keys, oss_keys, router_keys, shared_keys

ISLANDS = ((".float()", ".double()"), ("dtype=torch.float,", "dtype=torch.float64,"),
           ("torch.float32", "torch.float64"))


def float64_source(fn: Any) -> Any:
    """fn (a function) recompiled with its float32 casts made float64, in its own module's globals."""
    src = textwrap.dedent(inspect.getsource(fn))
    new = src
    for a, b in ISLANDS:
        new = new.replace(a, b)
    assert new != src, f"{fn.__qualname__}: no float32 island found (transformers changed?)"
    ns: dict[str, Any] = {}
    exec(compile(new, f"<float64 {fn.__qualname__}>", "exec"), vars(sys.modules[fn.__module__]), ns)
    return ns[fn.__name__]


def float64_forward(module: Any) -> None:
    """Bind a float64 version of module's class forward to this instance."""
    module.forward = types.MethodType(float64_source(type(module).forward), module)


def hf_block(family: str, spec: MoESpec, params: dict[str, np.ndarray], C: int, F: int, Fs: int | None = None):
    """transformers' sparse MoE block of `family`, float64, its islands made float64, weights from params."""
    import torch
    import transformers as tr

    E, K = spec.n_experts, spec.top_k
    common = dict(hidden_size=C, num_hidden_layers=1, num_attention_heads=1, num_key_value_heads=1, vocab_size=8,
                  num_experts_per_tok=K)
    if family == "mixtral":
        from transformers.models.mixtral.modeling_mixtral import MixtralSparseMoeBlock
        cfg = tr.MixtralConfig(intermediate_size=F, num_local_experts=E, **common)
        block = MixtralSparseMoeBlock(cfg)
    elif family == "qwen2_moe":
        from transformers.models.qwen2_moe.modeling_qwen2_moe import Qwen2MoeSparseMoeBlock
        cfg = tr.Qwen2MoeConfig(moe_intermediate_size=F, shared_expert_intermediate_size=Fs, num_experts=E,
                                norm_topk_prob=spec.norm_topk_prob, **common)
        block = Qwen2MoeSparseMoeBlock(cfg)
    elif family == "qwen3_moe":
        from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock
        cfg = tr.Qwen3MoeConfig(moe_intermediate_size=F, num_experts=E, norm_topk_prob=spec.norm_topk_prob,
                                **common)
        block = Qwen3MoeSparseMoeBlock(cfg)
    elif family == "gpt_oss":
        from transformers.models.gpt_oss.modeling_gpt_oss import GptOssMLP
        cfg = tr.GptOssConfig(intermediate_size=F, num_local_experts=E, head_dim=4, **common)
        cfg.swiglu_limit = spec.swiglu_limit
        block = GptOssMLP(cfg)
    elif family == "deepseek_v3":
        from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE
        assert Fs is not None and Fs % F == 0
        cfg = tr.DeepseekV3Config(moe_intermediate_size=F, n_routed_experts=E, n_shared_experts=Fs // F,
                                  n_group=spec.n_group, topk_group=spec.topk_group,
                                  norm_topk_prob=spec.norm_topk_prob,
                                  routed_scaling_factor=spec.routed_scaling_factor, q_lora_rank=4, kv_lora_rank=4,
                                  qk_rope_head_dim=2, qk_nope_head_dim=2, v_head_dim=2, **common)
        block = DeepseekV3MoE(cfg)
    else:
        raise ValueError(family)
    block = block.double()
    router = block.router if family == "gpt_oss" else block.gate
    if family != "gpt_oss":
        float64_forward(router)
    t = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in params.items()}
    w, b, corr = router_keys(spec)
    with torch.no_grad():
        router.weight.copy_(t[w])
        if b is not None:
            router.bias.copy_(t[b])
        if corr is not None:
            router.e_score_correction_bias.copy_(t[corr])
        ex = block.experts
        if spec.expert == "gpt_oss":
            gu, gub, dn, dnb = oss_keys(spec)
            ex.gate_up_proj.copy_(t[gu])
            ex.gate_up_proj_bias.copy_(t[gub])
            ex.down_proj.copy_(t[dn])
            ex.down_proj_bias.copy_(t[dnb])
        else:
            for e in range(E):
                g, u, d = expert_keys(spec, e)
                ex.gate_up_proj[e].copy_(torch.cat([t[g], t[u]], dim=0))  # (2F, C): gate rows, then up rows
                ex.down_proj[e].copy_(t[d])
        if spec.shared != "none":
            g, u, d, sg = shared_keys(spec)
            sh = block.shared_experts if spec.shared == "plain" else block.shared_expert
            sh.gate_proj.weight.copy_(t[g])
            sh.up_proj.weight.copy_(t[u])
            sh.down_proj.weight.copy_(t[d])
            if sg is not None:
                block.shared_expert_gate.weight.copy_(t[sg])
    return block


def hf_grads(block: Any, spec: MoESpec, F: int) -> dict[str, np.ndarray]:
    """The block's parameter gradients under npgpt's names (per-expert tensors split out of the stacked ones)."""
    E = spec.n_experts
    router = block.router if spec.expert == "gpt_oss" else block.gate
    w, b, _ = router_keys(spec)
    g = {w: router.weight.grad.numpy()}
    if b is not None:
        g[b] = router.bias.grad.numpy()
    ex = block.experts
    if spec.expert == "gpt_oss":
        for k, p in zip(oss_keys(spec), (ex.gate_up_proj, ex.gate_up_proj_bias, ex.down_proj, ex.down_proj_bias)):
            g[k] = p.grad.numpy()
    else:
        for e in range(E):
            kg, ku, kd = expert_keys(spec, e)
            gu = ex.gate_up_proj.grad[e].numpy()
            g[kg], g[ku], g[kd] = gu[:F], gu[F:], ex.down_proj.grad[e].numpy()
    if spec.shared != "none":
        kg, ku, kd, ksg = shared_keys(spec)
        sh = block.shared_experts if spec.shared == "plain" else block.shared_expert
        g[kg], g[ku], g[kd] = (sh.gate_proj.weight.grad.numpy(), sh.up_proj.weight.grad.numpy(),
                               sh.down_proj.weight.grad.numpy())
        if ksg is not None:
            g[ksg] = block.shared_expert_gate.weight.grad.numpy()
    return g


def run_hf(block: Any, spec: MoESpec, F: int, x: np.ndarray, dout: np.ndarray) -> dict[str, np.ndarray]:
    """Forward and backward through the HF block: {"out", "router_logits", "dx", and every param's gradient}."""
    import torch

    xt = torch.from_numpy(x.copy()).requires_grad_(True)
    y = block(xt)
    if isinstance(y, tuple):  # GptOssMLP returns (hidden, router_scores)
        y = y[0]
    y.backward(torch.from_numpy(dout))
    router = block.router if spec.expert == "gpt_oss" else block.gate
    with torch.no_grad():
        logits = router(torch.from_numpy(x.reshape(-1, x.shape[-1])))[0]
    res = {"out": y.detach().numpy(), "router_logits": logits.numpy(), "dx": xt.grad.numpy()}
    res.update({f"d[{k}]": v for k, v in hf_grads(block, spec, F).items()})
    return res


def hf_load_balancing_loss(logits_per_layer: list[np.ndarray], E: int, K: int,
                           attention_mask: np.ndarray | None = None, float64: bool = True):
    """transformers' load_balancing_loss_func (Mixtral's copy) on float64 logits, with its float32 accumulators
    made float64 unless float64=False.  Returns (loss, [dlogits per layer]) with d loss / d logits by autograd."""
    import torch
    from transformers.models.mixtral import modeling_mixtral as mm

    fn = float64_source(mm.load_balancing_loss_func) if float64 else mm.load_balancing_loss_func
    ts = tuple(torch.from_numpy(z.copy()).requires_grad_(True) for z in logits_per_layer)
    mask = None if attention_mask is None else torch.from_numpy(attention_mask)
    loss = fn(ts, E, K, mask)
    loss.backward()
    return float(loss.detach()), [t.grad.numpy() for t in ts]
